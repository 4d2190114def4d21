"""TrojanNet detectors with almost no data (Wang, Zhang, Liu, Chen, Xiong and Wang, ECCV 2020,
"Practical Detection of Trojan Neural Networks: Data-Limited and Data-Free Cases").

**DL-TND** (data-limited, Sec. 4). With a few clean samples, for every candidate target label
``t`` and the samples ``x_i`` not of class ``t``, find with the same mask-and-pattern form as the
trigger, ``A(x; m, p) = (1 - m) * x + m * p``,

- one *universal* perturbation:      min_{m,p}   mean_i l(A(x_i; m, p), t) + lam ||m||_1
- a *per-sample* perturbation each:  min_{m_i,p_i}  l(A(x_i; m_i, p_i), t) + lam ||m_i||_1

with the C&W margin ``l(x, t) = max(max_{j != t} Z_j(x) - Z_t(x), -kappa)``. The shortcut
hypothesis: if ``t`` is a Trojan target, the trigger is the cheapest way to reach ``t`` from
*any* input, so the per-sample perturbations are the universal one again, and the model's logits
on ``A(x_i; m, p)`` and ``A(x_i; m_i, p_i)`` point the same way. The statistic of label ``t`` is the
25th percentile over ``i`` of their cosine similarity; the model is judged Trojan when the largest
statistic exceeds a threshold ``T`` (the authors preset 0.75; here it is chosen on clean models
with :func:`calibrate`), and that label is the suspected target.

**DF-TND** (data-free, Sec. 5): no data at all. From random inputs, maximise the activation of each
neuron of the penultimate layer with an L1-regularised perturbation; a Trojan network has inner
neurons tied to the trigger, and maximising them raises *one* label's logit far more than the
others. The statistic is that label's anomaly over the logit increases (:func:`high_anomaly`).

Both optimise every label (and every sample, neuron, random input) in one batch.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..threat import check_budget, check_count, frozen, margin, require_eval
from ._common import Counted, Detection, take_per_class
from .cleanse import mad_anomaly
from .poison import Trigger

__all__ = ["dl_tnd", "df_tnd", "masked_perturbations", "calibrate", "high_anomaly"]


def masked_perturbations(model: nn.Module, x: torch.Tensor, t: torch.Tensor, group: torch.Tensor, *, steps: int,
                         lam: float, kappa: float, lr: float, progress: bool = False):
    """Mask-and-pattern perturbations ``(m_g, p_g)`` toward labels ``t``, one per *group*: row ``r``
    of ``x`` is stamped with group ``group[r]``'s perturbation. Minimises, for every group ``g``,
    the mean margin loss of its rows plus ``lam * ||m_g||_1`` (Adam on ``m = (tanh a + 1) / 2``,
    ``p = (tanh b + 1) / 2``, both kept in [0, 1]); a group of one row is a per-sample perturbation,
    a group of many a universal one. Returns the masks (G x 1 x H x W), patterns (G x C x H x W) and
    the logits of the stamped rows at the end."""
    n_groups = int(group.max()) + 1
    count = torch.bincount(group, minlength=n_groups).float()
    a = torch.full((n_groups, 1, *x.shape[2:]), -2.0, device=x.device, requires_grad=True)  # m ~ 0.02
    b = torch.zeros((n_groups, *x.shape[1:]), device=x.device, requires_grad=True)
    opt = torch.optim.Adam([a, b], lr=lr)
    for _ in tqdm(range(steps), desc="masks", disable=not progress, leave=False):
        m, p = (torch.tanh(a) + 1) / 2, (torch.tanh(b) + 1) / 2
        z = model((1 - m[group]) * x + m[group] * p[group])
        obj = (margin(z, t, targeted=True, kappa=kappa) / count[group]).sum() + lam * m.sum()
        opt.zero_grad(set_to_none=True)
        obj.backward()
        opt.step()
    with torch.no_grad():
        m, p = (torch.tanh(a) + 1) / 2, (torch.tanh(b) + 1) / 2
        z = model((1 - m[group]) * x + m[group] * p[group])
    return m, p, z


def dl_tnd(model: nn.Module, data, *, per_class: int = 1, threshold: float = 0.75, steps: int = 300,
           lam: float = 0.02, kappa: float = 5.0, lr: float = 0.1, quantile: float = 0.25,
           progress: bool = False) -> Detection:
    """DL-TND (Wang et al. 2020, Sec. 4, eqs. 3-5): the data-limited TrojanNet detector.

    ``data``: clean samples, at most ``per_class`` of each class (a dataset, from which only those
    are fetched, or a tuple ``(x, y)``; see :func:`take_per_class`). For each label ``t``, the
    universal and the per-sample perturbations of the module docstring are found in one batch;
    ``per_label[t]`` is the ``quantile`` (25th percentile) of the cosine similarity of the logits
    they produce on each sample; ``score`` its maximum, ``target`` its label, ``trojan`` whether
    ``score > threshold`` (choose it on clean models: :func:`calibrate`). ``trigger`` is the
    universal perturbation of the target, ``triggers`` those of every label."""
    require_eval(model, "dl_tnd")
    for name, v in (("lam", lam), ("kappa", kappa), ("lr", lr)):
        check_budget(v, "dl_tnd", name=name, positive=name == "lr")
    check_count(steps, "dl_tnd", "steps", minimum=1)
    if not 0 <= quantile <= 1:
        raise ValueError(f"dl_tnd: quantile must be in [0, 1], got {quantile}")
    t0 = time.perf_counter()
    counted, dev = Counted(model), next(model.parameters()).device
    with torch.no_grad():  # the number of labels, from an input that is no data sample when the model has a shape
        shape = getattr(model, "in_shape", None)
        probe = (torch.zeros(1, *shape) if shape is not None else
                 data[0][:1] if isinstance(data, (tuple, list)) else torch.as_tensor(data[0][0])[None])
        k = counted(probe.to(dev)).shape[1]
    x, y = take_per_class(data, per_class, k, "dl_tnd")
    x, y = x.to(dev), y.to(dev)
    t_all, i_all = torch.meshgrid(torch.arange(k, device=dev), torch.arange(len(x), device=dev), indexing="ij")
    keep = y[i_all] != t_all
    t, i = t_all[keep], i_all[keep]  # every (label, sample not of that label) pair
    if len(torch.unique(t)) < k:
        raise ValueError("dl_tnd: every label needs at least one sample of another class; pass samples of >= 2 classes")
    n = len(t)
    with frozen(model):  # rows 0..n-1 share the universal perturbation of their label, rows n..2n-1 have their own
        group = torch.cat([t, k + torch.arange(n, device=dev)])
        m, p, z = masked_perturbations(counted, x[i].repeat(2, 1, 1, 1), t.repeat(2), group, steps=steps,
                                       lam=lam, kappa=kappa, lr=lr, progress=progress)
    cos = F.cosine_similarity(z[:n], z[n:], dim=1)
    stat = torch.stack([cos[t == c].quantile(quantile) for c in range(k)]).cpu()
    target = int(stat.argmax())
    triggers = [Trigger(m[c].expand_as(p[c]).clamp(0, 1).cpu(), p[c].clamp(0, 1).cpu(), f"DL-TND label {c}")
                for c in range(k)]
    return Detection("DL-TND", bool(stat[target] > threshold), float(stat[target]), threshold, target, stat,
                     triggers[target], triggers, counted.forwards, counted.backwards,
                     time.perf_counter() - t0, len(x))


def df_tnd(model: nn.Module, shape=None, *, n_inputs: int = 5, threshold: float = 2.0, steps: int = 200,
           lam: float = 0.01, lr: float = 0.1, seed: int = 0, progress: bool = False) -> Detection:
    """DF-TND (Wang et al. 2020, Sec. 5): the data-free TrojanNet detector.

    ``n_inputs`` uniform random inputs of ``shape`` (default: the model's ``in_shape``); for each
    of them and each neuron ``k`` of the layer before the last (the model must be an
    ``nn.Sequential`` ending in a linear layer), a mask-and-pattern perturbation maximising the
    neuron's activation minus ``lam`` times the mask's L1 norm (all neurons and inputs in one batch).
    The logit increase ``Z(x') - Z(x)`` of each label is averaged over the inputs; each label keeps
    the largest increase any neuron gives it; ``per_label`` is the MAD anomaly index of these
    (:func:`high_anomaly`), ``score`` its maximum, ``trojan`` whether it exceeds
    ``threshold``. ``trigger`` is the perturbation of the neuron that raised the target most."""
    require_eval(model, "df_tnd")
    if not isinstance(model, nn.Sequential) or not isinstance(model[-1], nn.Linear):
        raise ValueError("df_tnd: the model must be an nn.Sequential whose last layer is nn.Linear "
                         "(its input is the layer whose neurons are maximised)")
    shape = tuple(shape if shape is not None else getattr(model, "in_shape", ()))
    if len(shape) != 3:
        raise ValueError("df_tnd: pass the input shape C x H x W (the model has no in_shape)")
    check_count(n_inputs, "df_tnd", "n_inputs", minimum=1)
    check_count(steps, "df_tnd", "steps", minimum=1)
    t0 = time.perf_counter()
    dev = next(model.parameters()).device
    counted = Counted(model)
    body, head = model[:-1], model[-1]
    n_neurons, k = head.in_features, head.out_features
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand((n_inputs, *shape), generator=g).to(dev)
    x = x0.repeat_interleave(n_neurons, 0)  # row r: input r // n_neurons, neuron r % n_neurons
    neuron = torch.arange(n_neurons, device=dev).repeat(n_inputs)
    a = torch.full((len(x), 1, *shape[1:]), -2.0, device=dev, requires_grad=True)
    b = torch.zeros((len(x), *shape), device=dev, requires_grad=True)
    with frozen(model):
        opt = torch.optim.Adam([a, b], lr=lr)
        for _ in tqdm(range(steps), desc="DF-TND", disable=not progress, leave=False):
            m, p = (torch.tanh(a) + 1) / 2, (torch.tanh(b) + 1) / 2
            xs = (1 - m) * x + m * p
            counted.forwards += len(xs)
            counted.backwards += len(xs)
            h = body(xs)
            obj = -h.gather(1, neuron[:, None]).sum() + lam * m.sum()
            opt.zero_grad(set_to_none=True)
            obj.backward()
            opt.step()
    with torch.no_grad():
        m, p = (torch.tanh(a) + 1) / 2, (torch.tanh(b) + 1) / 2
        rise = counted((1 - m) * x + m * p) - counted(x)  # logit increase, rows x labels
        rise = rise.view(n_inputs, n_neurons, k).mean(0)  # neurons x labels
    best, which = rise.max(0)  # per label: the largest mean increase any neuron gives it
    index = high_anomaly(best.cpu()).float()
    target = int(index.argmax())
    rows = which[target] + n_neurons * torch.arange(n_inputs, device=dev)
    mk, pt = m[rows].mean(0), p[rows].mean(0)
    trig = Trigger(mk.expand_as(pt).clamp(0, 1).cpu(), pt.clamp(0, 1).cpu(), f"DF-TND label {target}")
    return Detection("DF-TND", bool(index[target] > threshold), float(index[target]), threshold, target, index,
                     trig, [trig], counted.forwards, counted.backwards, time.perf_counter() - t0, 0)


def high_anomaly(v) -> torch.Tensor:
    """The MAD anomaly index of *large* values (Neural Cleanse's index with the sign turned:
    ``(v_t - median) / (1.4826 MAD)``), for statistics of any sign."""
    v = torch.as_tensor(v, dtype=torch.float64)
    if v.dim() != 1 or len(v) < 2 or not torch.isfinite(v).all():
        raise ValueError("high_anomaly: need a 1-D sequence of at least 2 finite values")
    return mad_anomaly(v.max() - v)  # v.max() - v >= 0; small there is large here


def calibrate(scores, fpr: float = 0.0) -> float:
    """A detector's threshold from its scores on *clean* models only: the ``1 - fpr`` quantile (with
    ``fpr=0``, the largest clean score: no calibration model is flagged)."""
    s = torch.as_tensor(scores, dtype=torch.float64)
    if s.dim() != 1 or len(s) == 0 or not torch.isfinite(s).all():
        raise ValueError("calibrate: scores must be a non-empty 1-D sequence of finite numbers")
    if not 0 <= fpr < 1:
        raise ValueError(f"calibrate: fpr must be in [0, 1), got {fpr}")
    return float(s.quantile(1 - fpr))
