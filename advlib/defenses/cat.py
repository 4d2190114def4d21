"""CAT (Cheng et al., 2020): customised adversarial training, a radius and a label per sample."""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ..threat import check_budget, check_count, parse_norm
from ..train import Recipe, distributed, register_recipe, soft_cross_entropy
from .recipes import pgd_in_eval

__all__ = ["cat_training", "CatState"]


class CatState:
    """Every training sample's radius ``eps_i`` (indexed by its position in the training set),
    and the mean radius after each batch."""

    def __init__(self):
        self.eps = torch.zeros(0)
        self.history: list[float] = []

    def grow(self, n: int) -> None:
        if n > len(self.eps):
            self.eps = torch.cat([self.eps, torch.zeros(n - len(self.eps))])


@register_recipe("cat")
def cat_training(eps_max: float, eta: float | None = None, c: float | None = None, steps: int = 10,
                 norm: str = "linf") -> Recipe:
    """Customised adversarial training (Cheng et al., 2020, the CAT-CE variant) as a
    :class:`advlib.train.Recipe`:

        min_theta sum_i max_{||delta_i|| <= eps_i} CE(f(x_i + delta_i), y~_i),
        y~_i = (1 - c eps_i) y_i + c eps_i Dirichlet(1).

    Every sample starts at ``eps_i = 0``. Each time it is drawn, ``delta_i`` is found by ``steps``
    of PGD inside its own radius; if ``x_i + delta_i`` is still classified as ``y_i`` its radius
    grows by ``eta`` (at most ``eps_max``), otherwise it shrinks by ``eta`` (at least 0): the model
    is pushed as far as each sample allows. Its training label is smoothed toward a random
    distribution in proportion to its radius ("less confident further from x_i"). ``eta`` defaults to
    ``eps_max / 10``; ``c`` to ``0.3 / eps_max`` (a smoothing of 0.3 at the largest radius, about the
    paper's CIFAR-10 choice ``c = 10`` at 8/255). ``fit`` passes the samples' indices; the radii
    are in ``recipe.state.eps`` (kept the same in every process under ``torchrun``)."""
    eps_max = check_budget(eps_max, "cat_training", name="eps_max", positive=True)
    eta = eps_max / 10 if eta is None else check_budget(eta, "cat_training", name="eta", positive=True)
    c = 0.3 / eps_max if c is None else check_budget(c, "cat_training", name="c")
    if c * eps_max > 1:
        raise ValueError(f"cat_training: c * eps_max = {c * eps_max:.3g} > 1 would give negative label weights; "
                         f"choose c <= {1 / eps_max:.3g}")
    steps = check_count(steps, "cat_training", "steps", 1)
    norm = parse_norm(norm, "cat_training")
    state = CatState()

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, progress: float, index: torch.Tensor) -> torch.Tensor:
        n = torch.tensor(int(index.max()) + 1)
        if distributed():  # every process keeps a table of the same length
            dist.all_reduce(n, op=dist.ReduceOp.MAX)
        state.grow(int(n))
        eps_i = state.eps[index.cpu()].to(x.device)
        logits = model(pgd_in_eval(model, x, y, eps=eps_i, steps=steps, norm=norm))
        k = logits.shape[1]
        smooth = (c * eps_i)[:, None]
        u = torch.distributions.Dirichlet(torch.ones(len(x), k, device=x.device)).sample()
        value = soft_cross_entropy(logits, (1 - smooth) * torch.nn.functional.one_hot(y, k) + smooth * u)
        with torch.no_grad():
            kept = logits.argmax(1) == y
            new = torch.where(kept, eps_i + eta, eps_i - eta).clamp(0, eps_max)
        change = torch.zeros_like(state.eps)
        change[index.cpu()] = (new - eps_i).cpu()
        if distributed():  # every process applies every process's updates
            dist.all_reduce(change)
        state.eps = (state.eps + change).clamp(0, eps_max)
        state.history.append(state.eps.mean().item())
        return value

    return Recipe("cat", loss=loss, state=state)
