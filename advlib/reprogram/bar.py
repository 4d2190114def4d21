"""BAR: black-box adversarial reprogramming (Tsai, Chen & Ho 2020, Algorithm 1, eqs. 4-5).

The objective of AR, ``L(W) = E L(h(F(X~(W))), y)``, but ``F`` is a black box that answers only with
scores: the gradient is the random-direction ZO estimate over the ``d`` free coordinates of ``W``::

    g = d / (q beta) * sum_j [L(W + beta u_j) - L(W)] u_j,   u_j uniform on the unit sphere

and ``W <- W - alpha g`` (or ZO-Adam). Every loss value on a mini-batch of ``B`` targets costs ``B``
queries, so one step costs ``(q + 1) B``; the black box counts them. (The authors' released code trains
with white-box gradients and leaves this path commented out; here the box has no gradient to give.)
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import trange

from ..blackbox import BlackBox
from ..threat import check_budget, check_count
from ..zo import OPTIMIZERS, estimate
from ._common import Reprogrammed, check_target, record_epoch
from .losses import target_loss
from .mapping import LabelMap
from .program import Program

__all__ = ["bar", "batch_loss"]


def batch_loss(box: BlackBox, program: Program, mapping: LabelMap, xb: torch.Tensor, yb: torch.Tensor,
               W0: torch.Tensor, free: torch.Tensor, loss: str = "ce", gamma: float = 2.0):
    """``f(ws)``: the mini-batch loss of ``m`` programs at once, ``ws`` holding their free coordinates
    (``m x d``; the others stay those of the flat ``W0``): one call of the box on ``m * B`` inputs."""

    def f(ws: torch.Tensor) -> torch.Tensor:
        W = W0.expand(len(ws), -1).clone()
        W[:, free] = ws
        inputs = program(xb, W.view(len(ws), *program.source_shape)).flatten(0, 1)
        return target_loss(mapping(box.scores(inputs)).view(len(ws), len(xb), -1), yb, loss, gamma)

    return f


def bar(box: BlackBox, program: Program, mapping: LabelMap, x: torch.Tensor, y: torch.Tensor, *,
        epochs: int = 200, lr: float = 0.05, batch_size: int = 32, q: int = 5, beta: float = 0.1,
        loss: str = "ce", gamma: float = 2.0, optimizer: str = "adam", seed: int = 0,
        monitor: Callable[[Reprogrammed], dict] | None = None, progress: bool = False) -> Reprogrammed:
    """Train ``program`` on ``(x, y)`` through the score-only ``box`` with ZO estimates (module docstring).

    ``q`` directions per estimate at smoothing radius ``beta`` (BAR: 0.1), ``optimizer`` "adam" (ZO-Adam),
    "sgd" or "sign" at ``lr``. ``history``: per epoch the mean training loss, the queries used so far
    (``box.queries`` counts every query, the initial mapping's too), and ``monitor(reprogrammed)``.
    """
    if not isinstance(box, BlackBox):
        raise ValueError("bar: the source must be a BlackBox (advlib.blackbox.BlackBox(model, 'scores')); "
                         "with the model's gradients, use advlib.reprogram.ar")
    if box.output != "scores":
        raise ValueError("bar: BAR needs the box's probabilities: BlackBox(model, output='scores')")
    check_target(box, program, x, y, "bar")
    epochs, batch_size = check_count(epochs, "bar", "epochs", 1), check_count(batch_size, "bar", "batch_size", 1)
    q = check_count(q, "bar", "q", 1)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"bar: optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
    opt = OPTIMIZERS[optimizer](check_budget(lr, "bar", name="lr", positive=True))
    rep = Reprogrammed(box, program, mapping)
    free = program.free
    W0 = program.W.detach().flatten()
    w = W0[free].clone()[None]  # the free coordinates: 1 x d
    g = torch.Generator().manual_seed(seed)
    zg = torch.Generator(device=x.device).manual_seed(seed)
    for _ in trange(epochs, desc="BAR", disable=not progress, leave=False):
        total = 0.0
        for idx in torch.randperm(len(x), generator=g).to(x.device).split(batch_size):
            f = batch_loss(box, program, mapping, x[idx], y[idx], W0, free, loss, gamma)
            with torch.no_grad():
                grad, fw = estimate(f, w, q=q, beta=beta, kind="sphere", generator=zg)
                w = opt.step(w, grad)
            total += fw.item() * len(idx)
        with torch.no_grad():
            program.W.view(-1)[free] = w[0]
        record_epoch(rep, monitor, loss=total / len(x), queries=box.queries)
    return rep
