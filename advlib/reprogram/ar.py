"""AR: white-box adversarial reprogramming (Elsayed, Goodfellow & Sohl-Dickstein 2019; the white-box
arm of BAR's tables, Tsai et al. 2020): Adam on the program ``W`` through the frozen source model,
minimising the target loss of the mapped probabilities, ``min_W E L(h(F(X~(W))), y)``."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from tqdm.auto import trange

from ..threat import check_budget, check_count, frozen
from ._common import Reprogrammed, check_target, record_epoch
from .losses import target_loss
from .mapping import LabelMap
from .program import Program

__all__ = ["ar"]


def ar(model: nn.Module, program: Program, mapping: LabelMap, x: torch.Tensor, y: torch.Tensor, *,
       epochs: int = 200, lr: float = 0.05, batch_size: int = 32, loss: str = "ce", gamma: float = 2.0,
       seed: int = 0, monitor: Callable[[Reprogrammed], dict] | None = None, progress: bool = False) -> Reprogrammed:
    """Train ``program`` on the target data ``(x, y)`` through the frozen white-box ``model``.

    Mini-batches of ``batch_size`` in a seeded order, Adam at ``lr`` (V2S uses 0.05 and batches of 32),
    ``loss`` "ce" or "focal" (``gamma``). The model's parameters are never updated nor given gradients.
    ``history``: per epoch the mean training loss, and whatever ``monitor(reprogrammed)`` returns (e.g.
    test accuracy, the alignment SWD).
    """
    check_target(model, program, x, y, "ar")
    epochs, batch_size = check_count(epochs, "ar", "epochs", 1), check_count(batch_size, "ar", "batch_size", 1)
    lr = check_budget(lr, "ar", name="lr", positive=True)
    rep = Reprogrammed(model, program, mapping)
    opt = torch.optim.Adam([program.W], lr)
    g = torch.Generator().manual_seed(seed)
    with frozen(model):
        for _ in trange(epochs, desc="AR", disable=not progress, leave=False):
            total = 0.0
            for idx in torch.randperm(len(x), generator=g).to(x.device).split(batch_size):
                obj = target_loss(rep(x[idx]), y[idx], loss, gamma)
                opt.zero_grad(set_to_none=True)
                obj.backward()
                opt.step()
                total += obj.item() * len(idx)
            record_epoch(rep, monitor, loss=total / len(x))
    return rep
