"""Training-phase attacks: triggers, poisoned training sets, and what a backdoor achieves.

A trigger is a mask ``m`` and a pattern ``p`` with the shape of one input; stamping it is

    x' = (1 - m) * x + m * p                      (BadNets: m is 0/1 on a patch; blended: m = alpha)

the form in which Neural Cleanse and DL-TND reverse-engineer triggers, so a recovered trigger
and a true one compare directly. Poisoning (Gu et al. 2017, "BadNets"; Chen et al. 2017,
"Targeted backdoor attacks ... using data poisoning" for blended patterns) stamps a chosen
fraction of the training set and relabels it: *all-to-one* (every poisoned input gets the target
label) or *all-to-all* (label y becomes y + 1 mod K). Two contrasts without a trigger or without
relabelling: :func:`label_flip` (random wrong labels) and :func:`clean_label` (Turner et al. 2019:
target-class images made hard by a PGD perturbation, then stamped, labels untouched).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..data.registry import ArrayDataset
from ..threat import check_batch, check_budget, check_labels
from ..train import predict

__all__ = ["Trigger", "patch_trigger", "blend_trigger", "Poisoned", "poison", "label_flip", "clean_label",
           "target_labels", "attack_success_rate", "backdoor_metrics"]


@dataclass(frozen=True)
class Trigger:
    """A trigger ``(mask, pattern)``, each of the shape of one input (C x H x W), values in [0, 1]."""

    mask: torch.Tensor
    pattern: torch.Tensor
    name: str = "trigger"

    def __post_init__(self):
        if self.mask.shape != self.pattern.shape or self.mask.dim() != 3:
            raise ValueError(f"Trigger: mask and pattern must both be C x H x W; got {tuple(self.mask.shape)} "
                             f"and {tuple(self.pattern.shape)}")
        for what, v in (("mask", self.mask), ("pattern", self.pattern)):
            if not torch.isfinite(v).all() or v.min() < 0 or v.max() > 1:
                raise ValueError(f"Trigger: {what} must be finite with values in [0, 1]")

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Stamp the trigger on a batch: ``(1 - m) * x + m * p``."""
        if x.shape[1:] != self.mask.shape:
            raise ValueError(f"Trigger {self.name!r} is for inputs of shape {tuple(self.mask.shape)}, "
                             f"got a batch of {tuple(x.shape[1:])}")
        m, p = self.mask.to(x), self.pattern.to(x)
        return (1 - m) * x + m * p

    @property
    def l1(self) -> float:
        """The mask's L1 norm (Neural Cleanse's size of a trigger)."""
        return self.mask.abs().sum().item()

    def to(self, device) -> Trigger:
        return Trigger(self.mask.to(device), self.pattern.to(device), self.name)


def _corner(position, size: int, h: int, w: int) -> tuple[int, int]:
    named = {"bottom-right": (h - size, w - size), "bottom-left": (h - size, 0), "top-right": (0, w - size),
             "top-left": (0, 0)}
    if isinstance(position, str):
        if position not in named:
            raise ValueError(f"patch_trigger: position must be one of {sorted(named)} or (row, col), got {position!r}")
        return named[position]
    r, c = (int(v) for v in position)
    if not (0 <= r <= h - size and 0 <= c <= w - size):
        raise ValueError(f"patch_trigger: a {size}x{size} patch at (row, col) = ({r}, {c}) does not fit in "
                         f"{h}x{w}; use 0 <= row <= {h - size} and 0 <= col <= {w - size}")
    return r, c


def patch_trigger(shape=(1, 8, 8), size: int = 2, position="bottom-right", pattern="checker",
                  value: float = 1.0, name: str | None = None) -> Trigger:
    """A BadNets patch: a ``size`` x ``size`` square at ``position`` (a corner's name or the
    ``(row, col)`` of its top-left pixel), filled with ``pattern``: ``"solid"`` (all ``value``),
    ``"checker"`` (``value`` on alternate pixels, 0 between), or a ``size x size`` tensor in [0, 1]."""
    c, h, w = shape
    if int(size) != size or not 1 <= size <= min(h, w):
        raise ValueError(f"patch_trigger: size must be an integer in 1..{min(h, w)}, got {size!r}")
    r0, c0 = _corner(position, size, h, w)
    if isinstance(pattern, torch.Tensor):
        if pattern.shape[-2:] != (size, size):
            raise ValueError(f"patch_trigger: a tensor pattern must be {size}x{size}, got {tuple(pattern.shape)}")
        tile = pattern.float().expand(c, size, size)
    elif pattern == "solid":
        tile = torch.full((c, size, size), float(value))
    elif pattern == "checker":
        i = torch.arange(size)
        tile = (((i[:, None] + i[None, :]) % 2 == 0).float() * float(value)).expand(c, size, size)
    else:
        raise ValueError(f"patch_trigger: pattern must be 'solid', 'checker' or a tensor, got {pattern!r}")
    mask, pat = torch.zeros(shape), torch.zeros(shape)
    mask[:, r0:r0 + size, c0:c0 + size] = 1
    pat[:, r0:r0 + size, c0:c0 + size] = tile
    name = name or (pattern if isinstance(pattern, str) else "custom")
    return Trigger(mask, pat, f"{name} {size}x{size} patch at ({r0}, {c0})")


def blend_trigger(pattern: torch.Tensor, alpha: float = 0.2) -> Trigger:
    """A blended trigger (Chen et al. 2017): ``x' = (1 - alpha) x + alpha p`` over the whole input."""
    alpha = check_budget(alpha, "blend_trigger", name="alpha", positive=True)
    if alpha > 1:
        raise ValueError(f"blend_trigger: alpha must be in (0, 1], got {alpha}")
    pattern = pattern.float()
    return Trigger(torch.full_like(pattern, alpha), pattern, f"blended pattern (alpha {alpha:g})")


def target_labels(y: torch.Tensor, target: int | str, n_classes: int) -> torch.Tensor:
    """The labels a backdoor wants for inputs of labels ``y``: ``target`` (all-to-one) or
    ``(y + 1) mod K`` for ``target="all-to-all"``."""
    if target == "all-to-all":
        return (y + 1) % n_classes
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < n_classes:
        raise ValueError(f"target must be a class in 0..{n_classes - 1} or 'all-to-all', got {target!r}")
    return torch.full_like(y, target)


@dataclass
class Poisoned:
    """A poisoned training set: the data, which entries were changed, and how."""

    dataset: ArrayDataset
    index: torch.Tensor  # positions of the poisoned entries, sorted
    trigger: Trigger | None
    target: int | str | None

    @property
    def rate(self) -> float:
        return len(self.index) / len(self.dataset)


def _choose(n_total: int, eligible: torch.Tensor, rate: float, who: str, seed: int, what: str) -> torch.Tensor:
    rate = check_budget(rate, who, name="rate")
    k = int(round(rate * n_total))
    if rate > 1 or k > len(eligible):
        raise ValueError(f"{who}: rate {rate:g} asks for {k} poisoned entries but only {len(eligible)} are "
                         f"eligible ({what}); lower the rate")
    g = torch.Generator().manual_seed(seed)
    return eligible[torch.randperm(len(eligible), generator=g)[:k]].sort().values


def _check_set(ds, who: str) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = ds[:]
    check_batch(x, who)
    check_labels(y, len(x), None, who)
    return x, y


def _copy(ds, x, y, what: str) -> ArrayDataset:
    classes = getattr(ds, "classes", [str(c) for c in range(int(y.max()) + 1)])
    return ArrayDataset(x, y, name=f"{getattr(ds, 'name', 'data')}+{what}", split=getattr(ds, "split", "train"),
                        classes=classes)


def poison(dataset, trigger: Trigger, *, target: int | str = 0, rate: float = 0.1, seed: int = 0) -> Poisoned:
    """BadNets poisoning: stamp ``trigger`` on ``round(rate * N)`` training inputs chosen at random
    among those whose label the backdoor changes, and give them the backdoor's label
    (:func:`target_labels`). Exactly those labels change; every other entry is untouched."""
    x, y = _check_set(dataset, "poison")
    k = int(getattr(dataset, "n_classes", int(y.max()) + 1))
    wanted = target_labels(y, target, k)
    idx = _choose(len(x), (wanted != y).nonzero().flatten(), rate, "poison", seed,
                  "inputs whose label the backdoor changes")
    x, y = x.clone(), y.clone()
    x[idx] = trigger.to(x.device).apply(x[idx])
    y[idx] = wanted[idx]
    return Poisoned(_copy(dataset, x, y, "poison"), idx, trigger, target)


def label_flip(dataset, *, rate: float = 0.1, seed: int = 0) -> Poisoned:
    """Label flipping: ``round(rate * N)`` entries get a wrong label drawn uniformly from the others.
    No trigger: the contrast that shows what a trigger adds (it degrades clean accuracy instead)."""
    x, y = _check_set(dataset, "label_flip")
    k = int(getattr(dataset, "n_classes", int(y.max()) + 1))
    idx = _choose(len(x), torch.arange(len(x)), rate, "label_flip", seed, "all inputs")
    g = torch.Generator().manual_seed(seed + 1)
    shift = torch.randint(1, k, (len(idx),), generator=g).to(y.device)
    y = y.clone()
    y[idx] = (y[idx] + shift) % k
    return Poisoned(_copy(dataset, x.clone(), y, "label-flip"), idx, None, None)


def clean_label(dataset, trigger: Trigger, model: nn.Module, *, target: int, rate: float = 0.1,
                eps: float = 0.1, steps: int = 20, seed: int = 0) -> Poisoned:
    """Clean-label poisoning (Turner et al. 2019, "Label-consistent backdoor attacks"): take
    ``round(rate * N)`` inputs *of the target class*, push each away from its own (correct) label with
    an L-inf PGD attack of radius ``eps`` against ``model`` (so that the features no longer explain the
    label and the trigger must), stamp the trigger, and keep the labels: every label stays correct."""
    from ..attacks import pgd

    x, y = _check_set(dataset, "clean_label")
    if isinstance(target, bool) or not isinstance(target, int):
        raise ValueError(f"clean_label: target must be one class (an int), got {target!r}")
    idx = _choose(len(x), (y == target).nonzero().flatten(), rate, "clean_label", seed,
                  f"inputs of the target class {target}")
    x = x.clone()
    dev = next(model.parameters()).device
    if len(idx):
        hard = pgd(model, x[idx].to(dev), y[idx].to(dev), eps=eps, steps=steps)
        x[idx] = trigger.to(dev).apply(hard).to(x.device)
    return Poisoned(_copy(dataset, x, y.clone(), "clean-label"), idx, trigger, target)


def attack_success_rate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, trigger: Trigger,
                        target: int | str) -> float:
    """ASR: the fraction of triggered inputs whose label the backdoor changes (inputs already of the
    target label are left out) that the model assigns to the backdoor's label."""
    check_batch(x, "attack_success_rate")
    k = int(model(x[:1].to(next(model.parameters()).device)).shape[1])
    wanted = target_labels(y, target, k)
    keep = wanted != y
    if not keep.any():
        raise ValueError("attack_success_rate: no input of a label other than the target")
    pred = predict(model, trigger.to(x.device).apply(x[keep])).cpu()
    return (pred == wanted[keep].cpu()).float().mean().item()


def backdoor_metrics(model: nn.Module, test, trigger: Trigger, target: int | str) -> dict[str, float]:
    """``{"clean": clean accuracy, "asr": attack success rate}`` on a test set of ``(x, y)``."""
    x, y = test[:]
    acc = (predict(model, x).cpu() == y.cpu()).float().mean().item()
    return {"clean": acc, "asr": attack_success_rate(model, x, y, trigger, target)}
