"""Model sanitisation with a few trusted samples: mode-connectivity repair and its baselines.

**Mode-connectivity repair** (Zhao, Chen, Das, Natesan Ramamurthy, Lin, ICLR 2020, "Bridging mode
connectivity in loss landscapes and adversarial robustness"; the curve and its training from
Garipov et al. 2018, "Loss surfaces, mode connectivity, and fast ensembling of DNNs"). Two
models of one architecture, ``w1`` (the suspect) and ``w2`` (a second suspect, or the suspect
fine-tuned on the trusted data), are joined in weight space by the quadratic Bézier curve

    phi_theta(t) = (1 - t)^2 w1 + 2 t (1 - t) theta + t^2 w2,      0 <= t <= 1        (1)

whose endpoints stay fixed; only the control point ``theta`` is trained, on the trusted data, to
minimise the loss averaged along the curve

    L(theta) = E_{t ~ U[0, 1]} CE(phi_theta(t))                                      (2)

(the lecture's two formulas; numbered here) by SGD with one ``t`` drawn per mini-batch. The
curve's interior is shaped by the trusted data alone: the clean task, which they exercise, is kept
there, the backdoor, which they never exercise, need not be. A model on the curve
(:meth:`Path.model`) is the repaired model, at a ``t`` the defender chooses from the trusted data
only (:func:`choose_t`).

**Baselines** (the lecture's table, Zhao et al. Table 2): :func:`fine_tune`; :func:`fine_prune`
(Liu, Dolan-Gavitt, Garg 2018, "Fine-pruning: defending against backdooring attacks on deep neural
networks"); :func:`train_scratch`; :func:`noisy_model` (an endpoint moved by as much as the repair
moved it, in a random direction). None of them modifies its input model.
"""
from __future__ import annotations

import copy
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.utils import prune as torch_prune
from tqdm.auto import tqdm

from ..threat import check_batch, check_budget, check_count, check_labels
from .poison import Trigger, backdoor_metrics

__all__ = ["bezier", "Path", "connect", "choose_t", "sanitise", "Repair", "fine_tune", "fine_prune", "channel_activity",
           "train_scratch", "noisy_model", "weight_distance"]


# ------------------------------------------------------------------------------------------ the curve
def bezier(w1, theta, w2, t: float):
    """The quadratic Bézier curve ``(1 - t)^2 w1 + 2 t (1 - t) theta + t^2 w2`` (eq. (1) above; Zhao
    et al. 2020, Garipov et al. 2018), of tensors or of parameter dicts (name -> tensor, the same
    names in all three).
    ``t = 0`` gives ``w1`` and ``t = 1`` gives ``w2`` exactly."""
    t = _check_t(t, "bezier")
    if isinstance(w1, dict):
        if not (w1.keys() == theta.keys() == w2.keys()):
            raise ValueError("bezier: w1, theta and w2 must hold the same parameter names")
        return {k: bezier(w1[k], theta[k], w2[k], t) for k in w1}
    return (1 - t) ** 2 * w1 + 2 * t * (1 - t) * theta + t ** 2 * w2


def _check_t(t, who: str, name: str = "t") -> float:
    if isinstance(t, torch.Tensor) and t.dim() == 0:
        t = t.item()
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= 1:
        raise ValueError(f"{who}: {name} must be a number in [0, 1] (0: the first endpoint, 1: the second), "
                         f"got {t!r}")
    return float(t)


def _refuse_batch_norm(model: nn.Module, who: str) -> None:
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            raise ValueError(f"{who}: the model has a batch-norm layer ({name or 'the model'}: {type(m).__name__}); "
                             "its running statistics belong to one set of weights and would be wrong at every "
                             "other point of the path, and recomputing them per t is not supported here. Use a "
                             "model without batch norm (e.g. advlib.models.build('cnn', ...))")


def _check_pair(model1: nn.Module, model2: nn.Module, who: str) -> None:
    """Two models of one architecture: same class, same parameter names and shapes, same buffers."""
    for i, m in enumerate((model1, model2), 1):
        if not isinstance(m, nn.Module):
            raise ValueError(f"{who}: model{i} must be a torch.nn.Module, got {type(m).__name__}")
        _refuse_batch_norm(m, who)
    shapes = [{k: tuple(p.shape) for k, p in m.named_parameters()} for m in (model1, model2)]
    layers = [[type(m) for m in model.modules()] for model in (model1, model2)]
    if shapes[0] != shapes[1] or layers[0] != layers[1]:
        diff = sorted(set(shapes[0].items()) ^ set(shapes[1].items()))[:3]
        raise ValueError(f"{who}: the two models must have the same architecture (same layers, parameter names "
                         f"and shapes); they differ{' in ' + str(diff) if diff else ' in their layers'}. "
                         "Connect two models built by the same advlib.models.build(...) call")
    b1, b2 = dict(model1.named_buffers()), dict(model2.named_buffers())
    if b1.keys() != b2.keys() or any(not torch.equal(b1[k], b2[k].to(b1[k].device)) for k in b1):
        raise ValueError(f"{who}: the two models have different buffers (e.g. input normalisation); a path "
                         "between them is only defined when their buffers agree")
    devices = {p.device for m in (model1, model2) for p in m.parameters()}
    if len(devices) > 1:
        raise ValueError(f"{who}: the models are on different devices {sorted(map(str, devices))}; move both "
                         "to one device first")


def _xy(data, who: str, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The trusted data as tensors ``(x, y)`` (from a dataset of ``(x, y)`` or a tuple)."""
    if data is None:
        raise ValueError(f"{who}: no trusted data given; pass a dataset of (x, y) or a tuple (x, y)")
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise ValueError(f"{who}: trusted data as a tuple must be (x, y), got {len(data)} entries")
        x, y = data
    else:
        if len(data) == 0:
            raise ValueError(f"{who}: the trusted set is empty; the repair needs at least a few labelled samples")
        x, y = data[:]
    if isinstance(x, torch.Tensor) and len(x) == 0:
        raise ValueError(f"{who}: the trusted set is empty; the repair needs at least a few labelled samples")
    check_batch(x, who)
    check_labels(y, len(x), None, who)
    if device is not None:
        x, y = x.to(device), y.to(device)
    return x, y


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class Path(nn.Module):
    """A quadratic Bézier path ``phi_theta(t)`` (eq. (1)) between two models of one architecture.

    The endpoints ``w1``, ``w2`` are frozen copies of the two models' parameters; the control point
    ``theta`` (trainable, the attribute ``theta``) starts at their midpoint ``(w1 + w2) / 2``, where the path is
    the straight line. ``path(x, t)`` is the forward pass of the model at ``phi_theta(t)``, computed
    with :func:`torch.func.functional_call` so that the loss back-propagates into ``theta``;
    :meth:`model` returns an ordinary module (eval mode) with the weights ``phi_theta(t)``. Buffers
    (e.g. the input normalisation) must agree between the two models and are shared; batch norm is
    refused (its statistics would be those of one endpoint). The input models are never modified."""

    def __init__(self, model1: nn.Module, model2: nn.Module):
        super().__init__()
        _check_pair(model1, model2, "Path")
        self.names = [k for k, _ in model1.named_parameters()]
        p1, p2 = dict(model1.named_parameters()), dict(model2.named_parameters())
        template = copy.deepcopy(model1).eval()
        for p in template.parameters():
            p.requires_grad_(False)
        object.__setattr__(self, "_template", template)  # not a submodule: its weights are not the path's
        for i, k in enumerate(self.names):
            self.register_buffer(f"w1_{i}", p1[k].detach().clone())
            self.register_buffer(f"w2_{i}", p2[k].detach().clone())
        self.theta = nn.ParameterList(
            nn.Parameter((p1[k].detach() + p2[k].detach()) / 2) for k in self.names)
        self.in_shape = getattr(model1, "in_shape", None)

    def _end(self, which: int) -> dict[str, torch.Tensor]:
        return {k: getattr(self, f"w{which}_{i}") for i, k in enumerate(self.names)}

    @property
    def w1(self) -> dict[str, torch.Tensor]:
        """The first endpoint's parameters (name -> tensor)."""
        return self._end(1)

    @property
    def w2(self) -> dict[str, torch.Tensor]:
        """The second endpoint's parameters (name -> tensor)."""
        return self._end(2)

    def weights(self, t: float) -> dict[str, torch.Tensor]:
        """The parameters ``phi_theta(t)`` (name -> tensor; differentiable in ``theta``)."""
        t = _check_t(t, "Path.weights")
        return bezier(self.w1, dict(zip(self.names, self.theta)), self.w2, t)

    def forward(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """Logits of the model at ``phi_theta(t)`` on ``x``; gradients flow into ``theta``."""
        template = self._template.to(x.device)
        buffers = dict(template.named_buffers())
        return functional_call(template, {**self.weights(t), **buffers}, (x,))

    @torch.no_grad()
    def model(self, t: float) -> nn.Module:
        """An ordinary model (a copy of the architecture, eval mode) with the weights ``phi_theta(t)``."""
        weights = self.weights(t)
        m = copy.deepcopy(self._template)
        dev = self.theta[0].device
        m.to(dev)
        for k, p in m.named_parameters():
            p.copy_(weights[k])
            p.requires_grad_(True)
        return m.eval()

    @torch.no_grad()
    def curve(self, data, ts=None) -> dict[str, torch.Tensor]:
        """Accuracy and mean cross-entropy on ``data`` (e.g. the trusted set) at each ``t`` of ``ts``:
        ``{"t", "accuracy", "loss"}``, what :func:`choose_t` reads."""
        ts = torch.linspace(0, 1, 61, dtype=torch.float64) if ts is None else torch.as_tensor(ts, dtype=torch.float64)
        x, y = _xy(data, "Path.curve", self.theta[0].device)
        acc, loss = [], []
        for t in ts.tolist():
            logits = self(x, _check_t(t, "Path.curve"))
            acc.append((logits.argmax(1) == y).float().mean().item())
            loss.append(F.cross_entropy(logits, y).item())
        return {"t": ts, "accuracy": torch.tensor(acc), "loss": torch.tensor(loss)}

    @torch.no_grad()
    def evaluate(self, test, trigger: Trigger, target, ts=None) -> dict[str, torch.Tensor]:
        """Clean accuracy and attack success rate (:func:`advlib.backdoor.backdoor_metrics`) of the
        model at each ``t`` of ``ts`` (default: 61 points on [0, 1], as Zhao et al. evaluate the
        curve): ``{"t", "clean", "asr"}``. For the *evaluator*, who knows the trigger; the defender
        chooses ``t`` without it (:func:`choose_t`)."""
        ts = torch.linspace(0, 1, 61, dtype=torch.float64) if ts is None else torch.as_tensor(ts, dtype=torch.float64)
        clean, asr = [], []
        for t in ts.tolist():
            r = backdoor_metrics(self.model(_check_t(t, "Path.evaluate")), test, trigger, target)
            clean.append(r["clean"])
            asr.append(r["asr"])
        return {"t": ts, "clean": torch.tensor(clean), "asr": torch.tensor(asr)}


def connect(model1: nn.Module, model2: nn.Module, trusted, *, epochs: int = 100, lr: float = 0.01,
            momentum: float = 0.9, weight_decay: float = 1e-4, batch_size: int = 32, seed: int = 0,
            progress: bool = False) -> Path:
    """Train the control point of the Bézier path between ``model1`` and ``model2`` on the trusted
    data, minimising eq. (2) (Zhao et al. 2020; the training of Garipov et al. 2018): per
    mini-batch one ``t ~ U[0, 1]``, the cross-entropy of the model at ``phi_theta(t)``, one SGD step
    on ``theta`` (momentum ``momentum``, weight decay ``weight_decay``; the defaults are the paper's:
    lr 0.01, momentum 0.9, weight decay 1e-4). The endpoints stay fixed. Returns the trained
    :class:`Path` (the input models are not modified)."""
    epochs = check_count(epochs, "connect", "epochs", minimum=1)
    batch_size = check_count(batch_size, "connect", "batch_size", minimum=1)
    lr = check_budget(lr, "connect", name="lr", positive=True)
    path = Path(model1, model2)
    x, y = _xy(trusted, "connect", _device(model1))
    opt = torch.optim.SGD(path.theta.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    path._template.train()  # dropout, if any, as in training
    for _ in tqdm(range(epochs), desc="connect", disable=not progress, leave=False):
        order = torch.randperm(len(x), generator=gen).to(x.device)
        for i in range(0, len(x), batch_size):
            batch = order[i:i + batch_size]
            t = torch.rand((), generator=gen).item()
            loss = F.cross_entropy(path(x[batch], t), y[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    path._template.eval()
    return path


def choose_t(path: Path, trusted, *, prior: float = 0.9, tolerance: float = 0.02, ts=None) -> float:
    """The defender's choice of ``t`` on a trained path, from the trusted data only.

    The trusted data contain no trigger, so they cannot say where along the path the backdoor is
    gone; they can only say where the clean task is kept. The rule therefore takes the side of the
    backdoor from a prior and the accuracy from the data: the largest ``t <= prior`` (on the grid
    ``ts``, 61 points by default) whose trusted-set accuracy is within ``tolerance`` of the best
    accuracy along the path. The prior says where the suspect's weights have faded enough: with the
    suspect at ``t = 0`` and its fine-tuned copy at ``t = 1``, near the fine-tuned end (default 0.9,
    set on the development split of the population, where 0.8 left the attack success rate close to
    5 %; the lecture's table uses t = 0.1 of its own, longer paths); with a suspect at each end, the
    middle (``prior=0.5``). The accuracy guard moves ``t`` back toward the suspect when the far end
    of the path is broken (e.g. a fine-tuning that diverged)."""
    prior = _check_t(prior, "choose_t", "prior")
    tolerance = check_budget(tolerance, "choose_t", name="tolerance")
    curve = path.curve(trusted, ts)
    t, acc = curve["t"], curve["accuracy"]
    allowed = t <= prior + 1e-6
    if not allowed.any():
        raise ValueError(f"choose_t: no point of the grid ts lies at or below prior = {prior}; include smaller t")
    ok = allowed & (acc >= acc.max() - tolerance - 1e-6)
    if not ok.any():  # the whole allowed part is worse than the tolerance: take its most accurate point
        return float(t[allowed][acc[allowed].argmax()])
    return float(t[ok].max())


class Repair(NamedTuple):
    """What :func:`sanitise` returns: the repaired model, the trained path, and the chosen ``t``."""

    model: nn.Module
    path: Path
    t: float


def sanitise(suspect: nn.Module, trusted, *, other: nn.Module | None = None, epochs: int = 100, lr: float = 0.01,
             weight_decay: float = 0.01, fine_tune_epochs: int = 100, fine_tune_lr: float = 0.01,
             fine_tune_weight_decay: float = 0.3, batch_size: int = 32, t: float | None = None,
             prior: float | None = None, tolerance: float = 0.02, seed: int = 0, progress: bool = False) -> Repair:
    """Mode-connectivity repair of a suspect model with a few trusted samples (Zhao et al. 2020), in
    one call:

    1. ``w1`` = the suspect; ``w2`` = ``other`` (a second suspect model of the same architecture)
       if given, else the suspect fine-tuned on the trusted data (:func:`fine_tune` with
       ``fine_tune_epochs``, ``fine_tune_lr``, ``fine_tune_weight_decay``);
    2. train the control point of the Bézier path between them on the trusted data (:func:`connect`
       with ``epochs``, ``lr``, ``weight_decay``);
    3. choose ``t`` from the trusted data (:func:`choose_t`; ``prior`` defaults to 0.9 with a
       fine-tuned end, 0.5 between two suspects), or take the given ``t``;
    4. return :class:`Repair` ``(model, path, t)``, ``model`` = the path's model at ``t``.

    The defaults were set on the development split of the Trojan population (28x28 digits CNNs,
    trusted sets of 20 and 50 samples, two seeds; never on the held-out models): SGD at the paper's
    learning rate 0.01 throughout (0.05 diverged on some of these models), and a large weight decay
    (0.3) for the fine-tuned end, which removes what the trusted data do not support (the backdoor);
    the path brings back part of the clean accuracy that this costs. Neither input model is
    modified."""
    x, y = _xy(trusted, "sanitise", _device(suspect))
    if other is None:
        other = fine_tune(suspect, (x, y), epochs=fine_tune_epochs, lr=fine_tune_lr,
                          weight_decay=fine_tune_weight_decay, batch_size=batch_size, seed=seed, progress=progress)
        prior = 0.9 if prior is None else prior
    else:
        prior = 0.5 if prior is None else prior
    path = connect(suspect, other, (x, y), epochs=epochs, lr=lr, weight_decay=weight_decay,
                   batch_size=batch_size, seed=seed, progress=progress)
    t = choose_t(path, (x, y), prior=prior, tolerance=tolerance) if t is None else _check_t(t, "sanitise")
    return Repair(path.model(t), path, t)


# ------------------------------------------------------------------------------------------ baselines
def _sgd_fit(model: nn.Module, x, y, *, epochs: int, lr: float, batch_size: int, weight_decay: float,
             momentum: float, seed: int, progress: bool, desc: str) -> nn.Module:
    """Plain SGD with momentum on cross-entropy (the optimiser of :func:`connect`), in place."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in tqdm(range(epochs), desc=desc, disable=not progress, leave=False):
        order = torch.randperm(len(x), generator=gen).to(x.device)
        for i in range(0, len(x), batch_size):
            batch = order[i:i + batch_size]
            loss = F.cross_entropy(model(x[batch]), y[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def _check_train_args(who, epochs, lr, batch_size):
    return (check_count(epochs, who, "epochs", minimum=1), check_budget(lr, who, name="lr", positive=True),
            check_count(batch_size, who, "batch_size", minimum=1))


def fine_tune(model: nn.Module, trusted, *, epochs: int = 100, lr: float = 0.01, momentum: float = 0.9,
              weight_decay: float = 0.3, batch_size: int = 32, seed: int = 0, progress: bool = False) -> nn.Module:
    """Fine-tuning baseline: a copy of ``model`` trained further on the trusted data by SGD with
    momentum (the defaults are those of :func:`sanitise`'s fine-tuned end, so the baseline is the
    path's end ``t = 1``). The input model is not modified."""
    epochs, lr, batch_size = _check_train_args("fine_tune", epochs, lr, batch_size)
    x, y = _xy(trusted, "fine_tune", _device(model))
    return _sgd_fit(copy.deepcopy(model), x, y, epochs=epochs, lr=lr, batch_size=batch_size, momentum=momentum,
                    weight_decay=weight_decay, seed=seed, progress=progress, desc="fine-tune")


def _prune_layer(model: nn.Module) -> tuple[str, nn.Module]:
    """The layer Fine-Pruning prunes: the last convolution, else the last hidden linear layer."""
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if convs:
        return convs[-1]
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if len(linears) < 2:
        raise ValueError("fine_prune: the model has no convolution and no hidden linear layer to prune")
    return linears[-2]


@torch.no_grad()
def channel_activity(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean activation (after ReLU) of each output channel (or unit) of ``layer`` on ``x``: what
    Fine-Pruning ranks channels by."""
    seen = []
    hook = layer.register_forward_hook(lambda m, inp, out: seen.append(out.relu()))
    try:
        model.eval()(x)
    finally:
        hook.remove()
    out = seen[0]
    return out.transpose(0, 1).flatten(1).mean(1)


def fine_prune(model: nn.Module, trusted, *, prune_ratio: float = 0.5, epochs: int = 100, lr: float = 0.01,
               momentum: float = 0.9, weight_decay: float = 0.3, batch_size: int = 32, seed: int = 0,
               progress: bool = False) -> nn.Module:
    """Fine-Pruning (Liu, Dolan-Gavitt, Garg 2018, "Fine-pruning: defending against backdooring
    attacks on deep neural networks"): the pruning defense, then fine-tuning. Prune the
    ``round(prune_ratio * C)`` channels of the last convolutional layer (the last hidden layer of an
    MLP) with the smallest mean activation on the trusted data (a fixed ratio here, where the paper
    prunes until the clean validation accuracy drops), then fine-tune (:func:`fine_tune`'s
    settings). The pruned channels are zero-masked (weights and bias), and the mask holds during the
    fine-tuning, so they end exactly zero. The input model is not modified; the pruned channel
    indices are in ``.pruned`` of the returned model."""
    epochs, lr, batch_size = _check_train_args("fine_prune", epochs, lr, batch_size)
    ratio = check_budget(prune_ratio, "fine_prune", name="prune_ratio")
    if ratio >= 1:
        raise ValueError(f"fine_prune: prune_ratio must be in [0, 1) (the fraction of channels removed), got {ratio}")
    x, y = _xy(trusted, "fine_prune", _device(model))
    pruned = copy.deepcopy(model).eval()
    _, layer = _prune_layer(pruned)
    activity = channel_activity(pruned, layer, x)
    k = int(round(ratio * len(activity)))
    off = activity.argsort()[:k]
    keep = torch.ones_like(activity)
    keep[off] = 0
    shape = (-1,) + (1,) * (layer.weight.dim() - 1)
    torch_prune.custom_from_mask(layer, "weight", keep.reshape(shape).expand_as(layer.weight).clone())
    if layer.bias is not None:
        torch_prune.custom_from_mask(layer, "bias", keep.clone())
    _sgd_fit(pruned, x, y, epochs=epochs, lr=lr, batch_size=batch_size, momentum=momentum,
             weight_decay=weight_decay, seed=seed, progress=progress, desc="fine-prune")
    torch_prune.remove(layer, "weight")
    if layer.bias is not None:
        torch_prune.remove(layer, "bias")
    pruned.pruned = off.sort().values.cpu()
    return pruned.eval()


def train_scratch(arch_like: nn.Module, trusted, *, epochs: int = 100, lr: float = 0.01, momentum: float = 0.9,
                  weight_decay: float = 1e-4, batch_size: int = 32, seed: int = 0,
                  progress: bool = False) -> nn.Module:
    """Training from scratch: the architecture of ``arch_like`` with fresh (seeded) initial weights,
    trained only on the trusted data by SGD with momentum at the paper's learning rate and weight
    decay (0.01, 1e-4: a fresh model has no backdoor to decay away). ``arch_like`` is not modified."""
    epochs, lr, batch_size = _check_train_args("train_scratch", epochs, lr, batch_size)
    x, y = _xy(trusted, "train_scratch", _device(arch_like))
    fresh = copy.deepcopy(arch_like)
    torch.manual_seed(seed)
    for m in fresh.modules():
        if m is not fresh and hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return _sgd_fit(fresh, x, y, epochs=epochs, lr=lr, batch_size=batch_size, momentum=momentum,
                    weight_decay=weight_decay, seed=seed, progress=progress, desc="from scratch")


def weight_distance(model1: nn.Module, model2: nn.Module) -> float:
    """The L2 distance between two models' parameter vectors."""
    p2 = dict(model2.named_parameters())
    return math.sqrt(sum(((p - p2[k].to(p)) ** 2).sum().item() for k, p in model1.named_parameters()))


@torch.no_grad()
def noisy_model(model: nn.Module, distance: float, seed: int = 0) -> nn.Module:
    """The noisy-model baseline (Zhao et al. 2020, Table 2, "noisy model (t = 0 / t = 1)"): a copy
    of ``model`` with Gaussian noise added to its parameters, scaled so that the noise vector has L2
    norm exactly ``distance`` (the distance from that endpoint to the repaired model: a move as large
    as the repair's, in a random direction). The input model is not modified."""
    distance = check_budget(distance, "noisy_model", name="distance")
    noisy = copy.deepcopy(model).eval()
    gen = torch.Generator().manual_seed(seed)
    params = list(noisy.parameters())
    noise = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params]
    norm = math.sqrt(sum((n ** 2).sum().item() for n in noise))
    for p, n in zip(params, noise):
        p.add_((n * (distance / norm)).to(p))
    return noisy
