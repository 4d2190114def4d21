"""What the black-box attacks share: the checks of a call, the first look at the inputs, the loss.

The calling convention of every attack in :mod:`advlib.blackbox` is the white-box one with a
:class:`~advlib.blackbox.BlackBox` in place of the model::

    x_adv = attack(blackbox, x, y, *, queries=..., targeted=False, ...)

``queries`` is what each example may spend (the attack never spends more); afterwards
``blackbox.log`` (a :class:`~advlib.blackbox.QueryLog`) holds, per example, the queries used in total
and until the first success, and the best distortion reached within any query budget.
"""
from __future__ import annotations

import torch
from torch import nn

from ..threat import check_batch, check_count, check_labels, margin
from ._box import BlackBox, QueryLog

__all__ = ["check_attack", "first_look", "adversarial", "cw_loss", "charged", "generator"]


def check_attack(blackbox, x, y, who: str, *, queries: int, scores: bool = False, norm: str = "l2") -> QueryLog:
    """Check an attack's call and open its run: ``blackbox`` is a :class:`BlackBox` (of the scores kind
    when ``scores``), ``x`` a batch in [0, 1], ``y`` one integer label per input, ``queries`` a
    positive count. Returns the run's :class:`QueryLog`."""
    if isinstance(blackbox, nn.Module):
        raise ValueError(f"{who} attacks a black box, not a model: wrap it first, "
                         f"advlib.blackbox.BlackBox(model, output={'scores' if scores else 'label'!r})")
    if not isinstance(blackbox, BlackBox):
        raise ValueError(f"{who}: the first argument must be an advlib.blackbox.BlackBox, "
                         f"got {type(blackbox).__name__}")
    if scores and blackbox.output != "scores":
        raise ValueError(f"{who} is a score-based attack: it needs BlackBox(model, output='scores'), "
                         "not a hard-label box")
    check_batch(x, who)
    check_labels(y, len(x), blackbox.n_classes, who)
    check_count(queries, who, "queries", 1)
    return blackbox.start(x, norm=norm, queries=queries)


def first_look(blackbox: BlackBox, x: torch.Tensor, y: torch.Tensor, targeted: bool,
               scores: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Query the clean inputs once each (charged to them), check the labels against the number of
    classes, and record the inputs already adversarial (distortion 0). Returns the answers
    (probabilities when ``scores``, else labels) and that mask."""
    ids = torch.arange(len(x), device=blackbox.log.queries.device)
    out = blackbox.scores(x, ids) if scores else blackbox.label(x, ids)
    check_labels(y, len(x), blackbox.n_classes, "the attack")
    hit = adversarial(out.argmax(1) if scores else out, y, targeted)
    blackbox.log.record(ids, x, hit)
    return out, hit


def adversarial(labels: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Whether predictions ``labels`` are a success: the target reached, or the true label left."""
    return labels == y if targeted else labels != y


def cw_loss(probs: torch.Tensor, y: torch.Tensor, targeted: bool, kappa: float = 0.0) -> torch.Tensor:
    """The C&W loss of ZOO on log-probabilities (Chen et al. 2017, eq. 4 and 5):
    ``max(log p_y - max_{j != y} log p_j, -kappa)`` untargeted, ``max(max_{j != t} log p_j - log p_t, -kappa)``
    targeted; ``<= 0`` exactly at success (:func:`advlib.threat.margin` on ``log p``)."""
    return margin(probs.clamp_min(1e-30).log(), y, targeted, kappa)


def charged(blackbox: BlackBox, ids: torch.Tensor, fn, scores: bool = True):
    """``f(z)`` for :mod:`advlib.zo`: queries the rows of ``z`` (grouped by example, ``len(z) / len(ids)``
    consecutive rows per example ``ids[k]``), charges each to its example, and returns
    ``fn(answers, owner)`` (``owner[r]``: the example of row ``r``)."""
    def f(z: torch.Tensor) -> torch.Tensor:
        owner = ids.repeat_interleave(len(z) // len(ids))
        return fn(blackbox.scores(z, owner) if scores else blackbox.label(z, owner), owner)
    return f


def generator(seed: int | None, device) -> torch.Generator:
    """The random stream of an attack: seeded (the same call gives the same result) unless ``seed`` is None."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed) if seed is not None else gen.seed()
    return gen
