"""SPROUT (Cheng et al., 2021): self-progressing robust training, free of attack generation."""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ..threat import check_budget
from ..train import Recipe, distributed, register_recipe, soft_cross_entropy

__all__ = ["sprout_training", "sprout_labels", "SproutState"]


def sprout_labels(y_mix: torch.Tensor, beta: torch.Tensor, alpha: float) -> torch.Tensor:
    """Dirichlet label smoothing (Cheng et al., 2021): ``(1 - alpha) y_mix + alpha u`` with one
    ``u ~ Dirichlet(beta)`` per row, drawn with the reparameterisation gradient so that the loss
    can be differentiated in ``beta``. Rows of ``y_mix`` are distributions, so are the results."""
    u = torch.distributions.Dirichlet(beta.expand(len(y_mix), -1)).rsample()
    return (1 - alpha) * y_mix + alpha * u


class SproutState:
    """The learned Dirichlet parameter ``beta`` (one concentration per class, drawn on the first
    batch once the number of classes is known) and its history."""

    def __init__(self, seed: int):
        self.seed = seed
        self.beta: torch.Tensor | None = None
        self.history: list[torch.Tensor] = []
        self.last_grad: torch.Tensor | None = None

    def start(self, n_classes: int) -> None:
        # "Initial beta: random initialization" (Algorithm 1): uniform in [0.5, 1.5]
        self.beta = 0.5 + torch.rand(n_classes, generator=torch.Generator().manual_seed(self.seed))
        self.history = [self.beta.clone()]


@register_recipe("sprout")
def sprout_training(sigma: float = 0.1, alpha: float = 0.1, mixup: float = 1.0, beta_lr: float = 0.1,
                    beta_min: float = 0.01, seed: int = 0) -> Recipe:
    """SPROUT (Cheng et al., 2021, Algorithm 1) as a :class:`advlib.train.Recipe`. For each mini-batch:

    1. Gaussian augmentation ``X <- X + N(0, sigma^2 I)`` (clipped to [0, 1]);
    2. mixup with a random partner, ``lambda ~ Beta(mixup, mixup)`` per batch (Zhang et al., 2018):
       ``X_mix = lambda X + (1 - lambda) X'``, ``Y_mix = lambda Y + (1 - lambda) Y'``;
    3. Dirichlet label smoothing ``Y~ = (1 - alpha) Y_mix + alpha u``, ``u ~ Dirichlet(beta)`` drawn
       per example with the reparameterisation gradient (the slides' form of Algorithm 1's
       ``Dirichlet(alpha Y_mix + (1 - alpha) beta)`` step);
    4. ``theta`` descends the cross-entropy ``L(X_mix, Y~)`` (by :func:`advlib.train.fit`), while
       ``beta`` *ascends* it: ``beta <- beta + beta_lr * grad_beta L``, kept ``>= beta_min``: the
       labels become as hard for the model as the smoothing allows ("self-progressing").

    No attack is generated: the cost per batch is one forward and one backward pass. The recipe's
    ``state`` holds ``beta`` and its history (one entry per batch); under ``torchrun`` the gradient
    of ``beta`` is averaged over the processes, so every process keeps the same ``beta``."""
    sigma = check_budget(sigma, "sprout_training", name="sigma")
    if not 0 <= alpha <= 1 or not mixup > 0 or not beta_lr >= 0 or not beta_min > 0:
        raise ValueError(f"sprout_training: need 0 <= alpha <= 1, mixup > 0, beta_lr >= 0 and beta_min > 0; "
                         f"got {alpha}, {mixup}, {beta_lr}, {beta_min}")
    state = SproutState(seed)

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, progress: float) -> torch.Tensor:
        x = (x + sigma * torch.randn_like(x)).clamp(0, 1)
        lam = torch.distributions.Beta(mixup, mixup).sample().item()
        partner = torch.randperm(len(x), device=x.device)
        logits = model(lam * x + (1 - lam) * x[partner])
        k = logits.shape[1]
        if state.beta is None or len(state.beta) != k:
            state.start(k)
        one_hot = torch.nn.functional.one_hot(y, k).to(x.dtype)
        y_mix = lam * one_hot + (1 - lam) * one_hot[partner]
        beta = state.beta.detach().to(x.device).clone().requires_grad_(True)
        value = soft_cross_entropy(logits, sprout_labels(y_mix, beta, alpha))
        (g,) = torch.autograd.grad(value, beta, retain_graph=True)
        if distributed():
            dist.all_reduce(g)
            g /= dist.get_world_size()
        state.last_grad = g.detach().cpu()
        state.beta = (state.beta + beta_lr * state.last_grad).clamp_min(beta_min)
        state.history.append(state.beta.clone())
        return value

    return Recipe("sprout", loss=loss, state=state)
