"""What every attack shares: input checks, projections onto Lp balls, losses, norms.

The calling convention of every attack in :mod:`advlib.attacks`::

    x_adv = attack(model, x, y, eps=..., ..., targeted=False)

``x`` is a batch of inputs in [0, 1] on the model's device, ``y`` the true labels (or, with
``targeted=True``, the target labels); the result has the shape of ``x``, lies in [0, 1] and in
the attack's threat model, and is detached.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..train import require_eval

__all__ = ["check_inputs", "step_size", "project", "lp_norm", "margin", "NORMS"]

NORMS = ("linf", "l2", "l1")


def check_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, who: str, eps: float | None = None,
                 steps: int | None = None, norm: str | None = None) -> int:
    """Refuse what an attack cannot sensibly do, with a message that says how to fix it.

    Returns the model's number of classes. Switches a model in train mode to eval mode (warning).
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise ValueError(f"{who}: x must be a floating-point batch N x ... (got "
                         f"{type(x).__name__} {getattr(x, 'shape', '')}); add a batch dimension with x[None]")
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or len(y) != len(x) or y.is_floating_point():
        raise ValueError(f"{who}: y must be a 1-D integer tensor with one label per input (x has {len(x)} "
                         f"inputs, y is {getattr(y, 'dtype', type(y))} {tuple(getattr(y, 'shape', ()))})")
    lo, hi = x.min().item(), x.max().item()
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(f"{who}: inputs must lie in [0, 1], found [{lo:.3g}, {hi:.3g}]; put any "
                         "normalisation inside the model (advlib.models.Normalize) and attack raw images")
    if eps is not None and (not math.isfinite(eps) or eps < 0):
        raise ValueError(f"{who}: eps must be a finite number >= 0, got {eps}")
    if steps is not None and (int(steps) != steps or steps < 0):
        raise ValueError(f"{who}: steps must be a non-negative integer, got {steps}")
    if norm is not None and norm not in NORMS:
        raise ValueError(f"{who}: norm must be one of {NORMS}, got {norm!r}")
    dev = next(model.parameters()).device
    if x.device != dev:
        raise ValueError(f"{who}: x is on {x.device} but the model is on {dev}; move one of them (x.to(device))")
    require_eval(model, who)
    with torch.no_grad():
        n_classes = model(x[:1]).shape[1]
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"{who}: labels must lie in 0..{n_classes - 1}, found {y.min().item()}..{y.max().item()}")
    return n_classes


def step_size(who: str, alpha: float | None, eps: float, steps: int) -> float:
    """The step of an iterative attack: ``alpha`` if given (checked), else Madry et al.'s
    ``2.5 * eps / steps``, enough to cross the ball and come back."""
    if alpha is None:
        return 2.5 * eps / max(steps, 1)
    if not (alpha >= 0 and math.isfinite(alpha)):
        raise ValueError(f"{who}: alpha must be >= 0 and finite, got {alpha}")
    return alpha


def _view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def lp_norm(delta: torch.Tensor, p: float | str) -> torch.Tensor:
    """Per-example norm of a batch: p in {inf, 2, 1, 0} or the names 'linf', 'l2', 'l1', 'l0'."""
    p = {"linf": math.inf, "l2": 2, "l1": 1, "l0": 0}.get(p, p)
    flat = delta.flatten(1)
    return (flat != 0).sum(1).to(flat.dtype) if p == 0 else torch.linalg.vector_norm(flat, ord=p, dim=1)


def _project_l1(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Euclidean projection onto the L1 ball (Duchi et al., 2008, Fig. 1): soft-threshold by the
    smallest theta with sum(max(|v| - theta, 0)) <= eps, found by sorting."""
    flat = delta.flatten(1)
    inside = flat.abs().sum(1) <= eps
    u = flat.abs().sort(1, descending=True).values
    css = u.cumsum(1)
    k = torch.arange(1, u.shape[1] + 1, device=u.device, dtype=u.dtype)
    rho = ((u - (css - eps) / k) > 0).to(u.dtype).cumsum(1).argmax(1)  # last index where the test holds
    theta = ((css.gather(1, rho[:, None]) - eps) / (rho[:, None] + 1)).clamp(min=0)
    out = flat.sign() * (flat.abs() - theta).clamp(min=0)
    return torch.where(inside[:, None], flat, out).view_as(delta)


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """The closest point to ``delta`` in the ``norm`` ball of radius ``eps`` (per example)."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    if norm == "l2":
        n = lp_norm(delta, 2)
        return delta * _view(torch.where(n > eps, eps / n.clamp(min=1e-12), torch.ones_like(n)), delta)
    if norm == "l1":
        return _project_l1(delta, eps)
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def margin(logits: torch.Tensor, y: torch.Tensor, targeted: bool = False, kappa: float = 0.0) -> torch.Tensor:
    """The C&W margin loss per example (Carlini & Wagner 2017, eq. 6 / f_6), to be *minimised*:
    untargeted ``max(z_y - max_{j != y} z_j, -kappa)``, targeted ``max(max_{j != t} z_j - z_t, -kappa)``."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), -torch.inf).amax(1)
    gap = (other - z_y) if targeted else (z_y - other)
    return gap.clamp(min=-kappa)
