"""The transfer attack: craft on a white-box surrogate, spend one query per example on the victim.

Papernot, McDaniel & Goodfellow (2016), "Transferability in machine learning": adversarial examples
made for one model often fool another trained for the same task. The attacker trains (or downloads)
a surrogate on the same data, attacks it with full gradients, and submits the result to the black
box; the only cost in queries is the submission, one per example.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..attacks import pgd
from ..threat import check_budget
from ._box import BlackBox
from ._common import adversarial, check_attack

__all__ = ["transfer"]


def transfer(surrogate: nn.Module, blackbox: BlackBox, x: torch.Tensor, y: torch.Tensor, *, eps, norm: str = "linf",
             steps: int = 20, targeted: bool = False, attack: Callable[..., torch.Tensor] | None = None,
             **attack_kwargs) -> torch.Tensor:
    """Examples made by ``attack(surrogate, x, y, eps=eps, norm=norm, steps=steps, targeted=targeted,
    **attack_kwargs)`` (default :func:`advlib.attacks.pgd`), submitted to ``blackbox`` once each.

    Returns them; ``blackbox.log`` records one query per example and which of them fool the victim
    (the transfer success). Nothing about the victim is used but those answers.
    """
    if not isinstance(surrogate, nn.Module):
        raise ValueError(f"transfer: surrogate must be a white-box torch.nn.Module, got {type(surrogate).__name__}")
    check_budget(eps, "transfer", len(x))
    log = check_attack(blackbox, x, y, "transfer", queries=1, norm=norm)
    x_adv = (attack or pgd)(surrogate, x, y, eps=eps, norm=norm, steps=steps, targeted=targeted, **attack_kwargs)
    ids = torch.arange(len(x), device=log.queries.device)
    log.record(ids, x_adv, adversarial(blackbox.label(x_adv, ids), y, targeted))
    return x_adv
