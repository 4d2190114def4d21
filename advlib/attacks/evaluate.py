"""Shared evaluation: robust accuracy, attack success, distortion in every norm, accuracy vs eps."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..train import predict
from ._common import lp_norm

__all__ = ["robust_accuracy", "success_rate", "distortion", "accuracy_vs_eps"]


def robust_accuracy(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of attacked inputs still classified as their true label."""
    return (predict(model, x_adv) == y.to(x_adv.device)).float().mean().item()


def success_rate(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
                 targeted: bool = False) -> float:
    """Among the inputs the model gets right (untargeted) or every input (targeted, ``y`` = targets):
    the fraction the attack flips to a wrong label (to the target)."""
    pred_adv = predict(model, x_adv)
    if targeted:
        return (pred_adv == y).float().mean().item()
    ok = predict(model, x) == y
    return (pred_adv[ok] != y[ok]).float().mean().item() if ok.any() else float("nan")


def distortion(x: torch.Tensor, x_adv: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, float]:
    """Median L0, L1, L2 and L-inf distortion of ``x_adv - x`` (over ``mask`` if given, e.g. the
    successful examples). L0 counts entries that changed by more than 1e-6."""
    delta = (x_adv - x).detach()
    if mask is not None:
        delta = delta[mask]
    if len(delta) == 0:
        return {k: float("nan") for k in ("l0", "l1", "l2", "linf")}
    out = {p: lp_norm(delta, p).median().item() for p in ("l1", "l2", "linf")}
    out["l0"] = lp_norm(torch.where(delta.abs() > 1e-6, delta, 0), 0).median().item()
    return {k: out[k] for k in ("l0", "l1", "l2", "linf")}


def accuracy_vs_eps(model: nn.Module, attack: Callable[..., torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                    eps_grid: Sequence[float], progress: bool = True, **kwargs) -> list[float]:
    """Robust accuracy of ``model`` under ``attack(model, x, y, eps=eps, **kwargs)`` for each eps."""
    return [robust_accuracy(model, attack(model, x, y, eps=eps, **kwargs) if eps > 0 else x, y)
            for eps in tqdm(eps_grid, desc="eps", disable=not progress, leave=False)]
