"""What the verification methods share beyond the threat-model core (:mod:`advlib.threat`)."""
from __future__ import annotations

import torch
from torch import nn


def activation_floats(model: nn.Module, x: torch.Tensor) -> int:
    """The floats one input of ``x`` occupies in a forward pass of ``model``: the input and the output
    of every leaf layer (what autograd keeps for a backward pass). Measured once with forward hooks
    on ``x[:1]``; the ``per_item`` of :func:`advlib.threat.chunks` for batched forward passes."""
    total = [x[:1].numel()]

    def count(module, inputs, output):
        if isinstance(output, torch.Tensor):
            total[0] += output.numel()

    hooks = [m.register_forward_hook(count) for m in model.modules() if next(m.children(), None) is None]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in hooks:
            h.remove()
    return total[0]
