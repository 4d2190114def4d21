"""What the attacks share beyond the threat-model core (:mod:`advlib.threat`): the step size.

The calling convention of every attack in :mod:`advlib.attacks`::

    x_adv = attack(model, x, y, eps=..., ..., targeted=False)

``x`` is a batch of inputs in [0, 1] on the model's device, ``y`` the true labels (or, with
``targeted=True``, the target labels); the result has the shape of ``x``, lies in [0, 1] and in
the attack's threat model, and is detached.
"""
from __future__ import annotations

import torch

from ..threat import NORMS, check_budget, check_inputs, lp_norm, margin, project

__all__ = ["check_inputs", "step_size", "project", "lp_norm", "margin", "NORMS"]


def step_size(who: str, alpha: float | None, eps, steps: int):
    """The step of an iterative attack: ``alpha`` if given (checked), else ``2.5 * eps / steps``, the
    default of Madry's lab's ``robustness`` library (Engstrom et al., 2019): a total path of 2.5 eps,
    longer than the ball's width 2 eps, so a run can cross the ball (per example if ``eps`` is)."""
    if alpha is None:
        return 2.5 * eps / max(steps, 1)
    return check_budget(alpha, who, name="alpha")


def _view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))
