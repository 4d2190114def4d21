"""Neural Cleanse (Wang, Yao, Shan, Li, Viswanath, Zheng and Zhao, IEEE S&P 2019, "Neural Cleanse:
Identifying and Mitigating Backdoor Attacks in Neural Networks"): the baseline Trojan detector.

A backdoor is a shortcut: a *small* change of any input (the trigger) sends it to the target label.
So for every candidate label ``t`` Neural Cleanse reverse-engineers the smallest trigger that
sends clean inputs to ``t`` (Sec. IV-C, eq. 2-3),

    A(x, m_t, p_t) = (1 - m_t) * x + m_t * p_t
    min_{m_t, p_t}  E_x CE(f(A(x, m_t, p_t)), t) + lambda_t * ||m_t||_1,

with a mask ``m_t`` of one value per pixel (1 x H x W, shared by the colour channels as in the
paper) and a pattern ``p_t`` (C x H x W), both in [0, 1] through ``m = (tanh(a) + 1) / 2``, and
then asks whether one label needs a much smaller mask than the others: the MAD anomaly index
(Sec. IV-B) of the K mask norms, flagged above 2.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..threat import check_budget, check_count, check_input_shape, check_model_input, chunks, frozen, require_eval
from ._common import Counted, Detection, take_per_class
from .poison import Trigger

__all__ = ["neural_cleanse", "mad_anomaly", "cost_schedule", "MAD_CONSISTENCY"]

MAD_CONSISTENCY = 1.4826  # MAD * 1.4826 estimates the standard deviation of normal data


def mad_anomaly(l1) -> torch.Tensor:
    """The anomaly index of Neural Cleanse (Sec. IV-B) of each of K mask norms ``l1``:

        index_t = (median(l1) - l1_t) / (1.4826 * MAD),   MAD = median(|l1 - median(l1)|).

    Signed so that only *small* masks are suspicious: labels below the median get a positive
    index, labels above it a negative one (never flagged). The median of an even number of values
    is the mean of the middle two. When MAD is 0 the index is +inf below the median, -inf above it
    and 0 on it."""
    l1 = torch.as_tensor(l1, dtype=torch.float64)
    if l1.dim() != 1 or len(l1) < 2 or not torch.isfinite(l1).all() or (l1 < 0).any():
        raise ValueError("mad_anomaly: l1 must be a 1-D sequence of at least 2 finite, non-negative mask "
                         f"norms (one per label), got {l1.tolist() if l1.numel() <= 20 else tuple(l1.shape)}")
    med = l1.quantile(0.5)
    mad = (l1 - med).abs().quantile(0.5)
    below = med - l1
    if mad == 0:
        return torch.where(below == 0, 0.0, torch.sign(below) * torch.inf)
    return below / (MAD_CONSISTENCY * mad)


def cost_schedule(cost: torch.Tensor, succeeded: torch.Tensor, above: torch.Tensor, below: torch.Tensor, *,
                  patience: int, up: float, down: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of Neural Cleanse's dynamic weight ``lambda_t`` of the mask norm, for every label at
    once: ``above`` / ``below`` count the consecutive steps on which the attack success of label
    ``t`` reached the success level (``succeeded``) or did not. After ``patience`` successful steps
    in a row ``lambda_t`` is multiplied by ``up`` (the trigger works: make it smaller), after
    ``patience`` failing steps in a row it is divided by ``down`` (let the mask grow); the counter
    restarts. Returns the new ``(cost, above, below)``."""
    above = torch.where(succeeded, above + 1, 0)
    below = torch.where(succeeded, 0, below + 1)
    raise_, lower = above >= patience, below >= patience
    cost = torch.where(raise_, cost * up, torch.where(lower, cost / down, cost))
    return cost, torch.where(raise_, 0, above), torch.where(lower, 0, below)


def _probe(model: nn.Module, data) -> torch.Tensor:
    """One input on which to ask the model for its number of classes, without fetching data items
    from a dataset (its recorded ``in_shape`` or its ``.x``; else its first item)."""
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise ValueError(f"neural_cleanse: data must be a dataset or a tuple (x, y), got a "
                             f"{type(data).__name__} of {len(data)} items")
        x = data[0]
    elif getattr(model, "in_shape", None) is not None:
        p = next(model.parameters(), None)
        return torch.zeros((1, *model.in_shape), device=None if p is None else p.device)
    elif getattr(data, "x", None) is not None:
        x = data.x
    else:
        x = torch.as_tensor(data[0][0])[None]
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or len(x) == 0 or not x.is_floating_point():
        raise ValueError("neural_cleanse: the inputs must be a non-empty floating-point batch N x C x H x W, got "
                         f"{type(x).__name__} {tuple(getattr(x, 'shape', ()))}")
    p = next(model.parameters(), None)
    return x[:1].to(x.device if p is None else p.device)


def neural_cleanse(model: nn.Module, data, *, per_class: int = 1, steps: int = 300, lr: float = 0.1,
                   init_cost: float = 1e-3, success: float = 0.99, patience: int = 10, cost_up: float = 1.5,
                   cost_down: float = 1.5 ** 1.5, threshold: float = 2.0, seed: int = 0,
                   progress: bool = False) -> Detection:
    """Neural Cleanse (Wang et al., S&P 2019): reverse-engineer a minimal trigger for every label,
    flag the model when one label's mask is an outlier on the small side.

    **Data.** The clean samples come through :func:`advlib.backdoor._common.take_per_class`: at
    most ``per_class`` of each class (a dataset: exactly those items are fetched; a tuple
    ``(x, y)``: it must respect the limit). The paper uses a clean training subset; here NC runs in
    the same *data-limited* setting as DL-TND, one sample per class by default (5 or 10 are
    allowed), which is harder for it. Every label's trigger is optimised on *all* the samples
    (those of label ``t`` included), stamped toward ``t``.

    **Reverse engineering** (Sec. IV-C, eq. 2-3), all K labels in one batch of K x N stamped
    inputs: ``m_t = (tanh(a_t) + 1) / 2`` (1 x H x W, one value per pixel for all channels) and
    ``p_t = (tanh(b_t) + 1) / 2`` (C x H x W), drawn at random (``seed``) and optimised by Adam
    (``lr``) for ``steps`` full-batch steps on ``mean_x CE(f(A(x, m_t, p_t)), t) + lambda_t
    ||m_t||_1``. ``lambda_t`` starts at ``init_cost`` and follows the paper's dynamic schedule
    (:func:`cost_schedule`: times ``cost_up`` after ``patience`` steps in a row with attack success
    ``>= success`` on the samples, divided by ``cost_down`` after ``patience`` steps below). Each
    label keeps its *best* trigger: the smallest-L1 mask that reached the success level (a label
    that never reached it keeps its last one). The paper counts ``patience`` in epochs over a
    training set; here every step sees all the samples, so a step is an epoch. The default budget
    (300 steps) takes about 1-2 s per digits CNN on one CPU core at ``per_class=1``.

    **Verdict** (Sec. IV-B): ``per_label`` holds the anomaly indices :func:`mad_anomaly` of the K
    mask norms (1 x H x W masks, so the norm counts pixels, not channels); ``score`` is their
    maximum, ``trojan = score > threshold`` (2 in the paper), ``target`` the argmax; ``trigger``
    and ``triggers`` are the recovered triggers with the mask expanded to C x H x W (``Trigger.apply``
    works on inputs; note ``Trigger.l1`` then counts each channel). ``forwards`` / ``backwards``
    count every input through the model (one probe for K, then ``steps * K * N``) and every input
    gradient (``steps * K * N``). The model's parameters are not changed (their ``requires_grad``
    flags are restored)."""
    who = "neural_cleanse"
    if not isinstance(model, nn.Module):
        raise ValueError(f"{who}: model must be a torch.nn.Module, got {type(model).__name__}")
    steps = check_count(steps, who, "steps", minimum=1)
    patience = check_count(patience, who, "patience", minimum=1)
    lr = check_budget(lr, who, name="lr", positive=True)
    init_cost = check_budget(init_cost, who, name="init_cost", positive=True)
    threshold = check_budget(threshold, who, name="threshold")
    success = check_budget(success, who, name="success", positive=True)
    if success > 1:
        raise ValueError(f"{who}: success is an attack-success level in (0, 1], got {success}")
    cost_up, cost_down = (check_budget(v, who, name=n, positive=True) for v, n in ((cost_up, "cost_up"),
                                                                                 (cost_down, "cost_down")))
    if cost_up <= 1 or cost_down <= 1:
        raise ValueError(f"{who}: cost_up and cost_down must be > 1 (factors that raise and lower lambda), "
                         f"got {cost_up} and {cost_down}")
    require_eval(model, who)
    start = time.perf_counter()
    counted = Counted(model).eval()
    k = check_model_input(counted, _probe(model, data), who)  # the number of labels, in one counted forward
    x, y = take_per_class(data, per_class, k, who)
    p0 = next(model.parameters(), None)
    dev = x.device if p0 is None else p0.device
    x, y = x.to(dev), y.to(dev)
    check_input_shape(model, x, who)
    n, (c, h, w) = len(x), x.shape[1:]

    g = torch.Generator().manual_seed(int(seed))
    a = (torch.rand((k, 1, h, w), generator=g) * 2 - 1).to(dev).requires_grad_()  # m in ~[0.12, 0.88]
    b = (torch.rand((k, c, h, w), generator=g) * 2 - 1).to(dev).requires_grad_()
    opt = torch.optim.Adam([a, b], lr=lr)
    labels = torch.arange(k, device=dev)
    cost = torch.full((k,), init_cost, device=dev)
    above = torch.zeros(k, dtype=torch.long, device=dev)
    below = torch.zeros_like(above)
    best_m, best_p = torch.zeros((k, 1, h, w), device=dev), torch.zeros((k, c, h, w), device=dev)
    best_l1 = torch.full((k,), torch.inf, device=dev)

    with frozen(model):
        for _ in tqdm(range(steps), desc=who, disable=not progress, leave=False):
            opt.zero_grad()
            hits = []
            for sl in chunks(k, n * c * h * w):
                m, p = (torch.tanh(a[sl]) + 1) / 2, (torch.tanh(b[sl]) + 1) / 2
                stamped = (1 - m[:, None]) * x[None] + (m * p)[:, None]  # labels x N x C x H x W
                logits = counted(stamped.flatten(0, 1)).view(len(m), n, -1)
                ce = F.cross_entropy(logits.flatten(0, 1), labels[sl].repeat_interleave(n), reduction="none")
                l1 = m.flatten(1).sum(1)
                (ce.view(len(m), n).mean(1) + cost[sl] * l1).sum().backward()
                with torch.no_grad():
                    rate = (logits.argmax(2) == labels[sl, None]).float().mean(1)
                    better = (rate >= success) & (l1 < best_l1[sl])
                    best_m[sl][better], best_p[sl][better], best_l1[sl][better] = m[better], p[better], l1[better]
                    hits.append(rate >= success)
            opt.step()
            cost, above, below = cost_schedule(cost, torch.cat(hits), above, below, patience=patience,
                                               up=cost_up, down=cost_down)

    with torch.no_grad():
        never = torch.isinf(best_l1)
        best_m[never], best_p[never] = (torch.tanh(a[never]) + 1) / 2, (torch.tanh(b[never]) + 1) / 2
    triggers = [Trigger(best_m[t].expand(c, h, w).clone(), best_p[t].clone(), f"Neural Cleanse trigger for label {t}")
                for t in range(k)]
    index = mad_anomaly(best_m.flatten(1).sum(1).cpu()).float()
    target = int(index.argmax())
    return Detection("Neural Cleanse", bool(index[target] > threshold), float(index[target]), threshold, target,
                     index, triggers[target], triggers, counted.forwards, counted.backwards,
                     time.perf_counter() - start, n)
