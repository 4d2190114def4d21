"""TRADES (Zhang et al., 2019): trade robustness against accuracy with a KL regulariser."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks.pgd import _step
from ..threat import check_budget, check_count, clip_box, parse_norm, project
from ..train import Recipe, register_recipe

__all__ = ["trades_training", "trades_loss"]


def _kl(logits_clean: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    """``KL(f(x) || f(x'))`` per example, on softmax probabilities."""
    p = F.log_softmax(logits_clean, 1)
    return (p.exp() * (p - F.log_softmax(logits_adv, 1))).sum(1)


def trades_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, beta: float,
                steps: int = 10, norm: str = "linf", alpha: float | None = None) -> torch.Tensor:
    """The TRADES objective (Zhang et al., 2019, eq. 5) on one batch:

        CE(f(x), y) + beta * max_{||x' - x|| <= eps} KL(f(x) || f(x')),

    the inner maximum by ``steps`` of projected (sign, for L-inf) gradient ascent on the KL from
    ``x + 0.001 N(0, I)``, the paper's start, with the model in eval mode and ``f(x)`` held fixed.
    ``beta = 0`` is standard training; larger ``beta`` buys robustness with clean accuracy."""
    alpha = 2.5 * eps / steps if alpha is None else alpha
    was_training = model.training
    model.eval()
    with torch.no_grad():
        target = model(x)
    delta = clip_box(x, project(0.001 * torch.randn_like(x), eps, norm))
    for _ in range(steps):
        delta.requires_grad_(True)
        (g,) = torch.autograd.grad(_kl(target, model(x + delta)).sum(), delta)
        delta = clip_box(x, project(delta.detach() + alpha * _step(g, norm, x + delta.detach()), eps, norm))
    model.train(was_training)
    logits = model(x)
    return F.cross_entropy(logits, y) + beta * _kl(logits, model(x + delta)).mean()


@register_recipe("trades")
def trades_training(eps: float, beta: float = 6.0, steps: int = 10, norm: str = "linf") -> Recipe:
    """TRADES as a :class:`advlib.train.Recipe`: the loss of :func:`trades_loss` (``beta`` = 6 is the
    paper's CIFAR-10 / MNIST choice, ``1 / lambda`` in its notation)."""
    eps = check_budget(eps, "trades_training")
    steps = check_count(steps, "trades_training", "steps", 1)
    norm = parse_norm(norm, "trades_training")
    if not beta >= 0:
        raise ValueError(f"trades_training: beta must be >= 0 (0 is standard training), got {beta}")

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, progress: float) -> torch.Tensor:
        return trades_loss(model, x, y, eps=eps, beta=beta, steps=steps, norm=norm)

    return Recipe("trades", loss=loss)
