"""V2S: Voice2Series (Yang, Tsai & Chen 2021, Algorithm 1): reprogram a frozen 1-D source model of
another domain for univariate time series.

``H(x) = Pad(x) + M * theta`` (the series inside the source input, an additive program), the
many-to-one label mapping, ``L(theta) = -1/n sum log P(y | f_S(H(x)))`` and Adam (lr 0.05, batches of 32).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ._common import Reprogrammed, initial_mapping
from .ar import ar
from .program import Program

__all__ = ["v2s"]


def v2s(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, n_target: int | None = None, mask="all",
        placement: str = "center", mapping: str = "frequency", m: int | None = None, epochs: int = 200,
        lr: float = 0.05, batch_size: int = 32, loss: str = "ce", gamma: float = 2.0, seed: int = 0,
        monitor: Callable[[Reprogrammed], dict] | None = None, progress: bool = False) -> Reprogrammed:
    """V2S on the series ``x`` (``N x C x L``, ``L`` at most the source length ``model.in_shape``) with
    labels ``y``: an additive :class:`Program` (``mask`` "all": the program adds over the series too, or
    "outside": only around it), the ``mapping`` ("frequency", "random" many-to-one, "one-to-one";
    ``m`` source labels per target label) and :func:`~advlib.reprogram.ar`'s training loop."""
    source_shape = getattr(model, "in_shape", None)
    if source_shape is None or len(source_shape) != 2:
        raise ValueError("v2s: the source model must be a 1-D model with in_shape C x L (advlib.models.build('cnn1d', "
                         "...), e.g. advlib.zoo.load('mnist1d-cnn'))")
    program = Program(source_shape, x.shape[1:], form="additive", placement=placement, mask=mask,
                      seed=seed).to(x.device)
    labels = initial_mapping(model, program, x, y, n_target, kind=mapping, m=m, seed=seed)
    return ar(model, program, labels, x, y, epochs=epochs, lr=lr, batch_size=batch_size, loss=loss, gamma=gamma,
              seed=seed, monitor=monitor, progress=progress)
