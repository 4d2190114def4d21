"""Robust-training recipes, registered by name in :data:`advlib.train.RECIPES`."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import pgd
from ..threat import check_budget, check_count
from ..train import Recipe, register_recipe
from ..verify import ibp_loss

__all__ = ["pgd_training", "ibp_training"]


def pgd_in_eval(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **pgd_args) -> torch.Tensor:
    """:func:`advlib.attacks.pgd` on a model in training, run in eval mode (batch-norm statistics and
    dropout untouched by the attack) and the model's mode restored: the inner maximum of every
    adversarial-training recipe."""
    was_training = model.training
    model.eval()
    x_adv = pgd(model, x, y, **pgd_args)
    model.train(was_training)
    return x_adv


@register_recipe("pgd")
def pgd_training(eps: float, steps: int = 10, norm: str = "linf", ramp: float = 0.0) -> Recipe:
    """Adversarial training (Madry et al., 2018, eq. 2.1): minimise the loss on PGD examples,
    ``min_theta E max_{||delta|| <= eps} CE(f(x + delta), y)``, the inner maximum approximated by
    ``steps`` of PGD with random start and Madry's step ``2.5 eps / steps``. The model is attacked
    in eval mode (batch-norm statistics untouched) and trained in train mode. ``ramp > 0`` grows the
    radius linearly from 0 to ``eps`` over that fraction of training (a warm-up that keeps large
    radii, e.g. 0.3 on MNIST, from stalling training at chance in its first epochs)."""
    eps = check_budget(eps, "pgd_training")
    steps = check_count(steps, "pgd_training", "steps", 1)
    if not 0 <= ramp <= 1:
        raise ValueError(f"pgd_training: ramp is a fraction of training in [0, 1], got {ramp}")

    def attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, radius: float) -> torch.Tensor:
        return pgd_in_eval(model, x, y, eps=radius, steps=steps, norm=norm) if radius > 0 else x

    if ramp == 0:
        return Recipe("pgd", perturb=lambda model, x, y: attack(model, x, y, eps))

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, progress: float) -> torch.Tensor:
        return F.cross_entropy(model(attack(model, x, y, eps * min(progress / ramp, 1.0))), y)

    return Recipe("pgd", loss=loss)


@register_recipe("ibp")
def ibp_training(eps: float, warmup: float = 0.1, ramp: float = 0.5, kappa_end: float = 0.5) -> Recipe:
    """Certified training with interval bounds (Gowal et al., 2018, eq. 12 and its schedule): a clean
    warm-up for the first ``warmup`` of training, then over the next ``ramp`` the radius grows
    linearly from 0 to ``eps`` while the weight ``kappa`` of the clean loss falls from 1 to
    ``kappa_end``; the loss is :func:`advlib.verify.ibp_loss`."""
    eps = check_budget(eps, "ibp_training")

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, progress: float) -> torch.Tensor:
        t = min(max((progress - warmup) / ramp, 0.0), 1.0)
        return ibp_loss(model, x, y, eps=eps * t, kappa=1.0 - (1.0 - kappa_end) * t)

    return Recipe("ibp", loss=loss)
