"""What every reprogramming method shares: the reprogrammed model and the batch checks."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..blackbox import BlackBox
from ..threat import check_batch, check_labels, require_eval
from .mapping import MAPPINGS, LabelMap, frequency_mapping, one_to_one, random_many_to_one
from .program import Program

__all__ = ["Reprogrammed", "initial_mapping", "check_target", "source_probabilities", "record_epoch"]


def source_probabilities(source, inputs: torch.Tensor) -> torch.Tensor:
    """The source model's probabilities on ``inputs``: ``softmax(model(.))`` for a white box, the answers
    of a :class:`~advlib.blackbox.BlackBox` (counted queries, no autograd) otherwise."""
    if isinstance(source, BlackBox):
        with torch.no_grad():
            return source.scores(inputs.detach())
    return F.softmax(source(inputs), -1)


def record_epoch(rep: Reprogrammed, monitor, **values) -> None:
    """Append this epoch's ``values`` and whatever ``monitor(rep)`` returns to ``rep.history``."""
    for k, v in values.items():
        rep.history.setdefault(k, []).append(v)
    if monitor is not None:
        with torch.no_grad():
            for k, v in monitor(rep).items():
                rep.history.setdefault(k, []).append(v)


class Reprogrammed(nn.Module):
    """The target-task classifier ``x -> h(F(program(x)))``: target probabilities ``N x K_t``.

    ``source`` is the frozen model (white box: ``softmax(model(.))``) or a
    :class:`~advlib.blackbox.BlackBox` answering with scores (every input a counted query). Only
    ``program.W`` is trained; ``history`` holds what the training recorded per epoch.
    """

    def __init__(self, source, program: Program, mapping: LabelMap):
        super().__init__()
        if not isinstance(source, (nn.Module, BlackBox)):
            raise ValueError("Reprogrammed: source must be a torch.nn.Module or a BlackBox, got "
                             f"{type(source).__name__}")
        self.program, self.mapping = program, mapping
        if isinstance(source, BlackBox):
            self.box, self.source = source, None
        else:
            self.box, self.source = None, source
        self.history: dict[str, list] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        source = self.box if self.box is not None else self.source
        return self.mapping(source_probabilities(source, self.program(x)))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        return torch.cat([self(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Top-1 accuracy on the target task (through a black box these are counted queries)."""
        return (self.predict(x) == y.to(x.device)).float().mean().item()


def check_target(source, program: Program, x: torch.Tensor, y: torch.Tensor, who: str) -> None:
    """Targets ``x`` of the program's target shape with one label each; a white-box source in eval mode."""
    check_batch(x, who, x_min=None, x_max=None)  # a non-empty float batch of finite values (series need no box)
    if tuple(x.shape[1:]) != program.target_shape:
        raise ValueError(f"{who}: x must be a batch N x {program.target_shape} (the program's target shape), got "
                         f"{tuple(x.shape)}")
    check_labels(y, len(x), None, who)
    if isinstance(source, nn.Module):
        require_eval(source, who)
        p = next(source.parameters(), None)
        if p is not None and (p.device != x.device or program.W.device != x.device):
            raise ValueError(f"{who}: the model is on {p.device}, the program on {program.W.device} and x on "
                             f"{x.device}; move them to one device (program.to(device), x.to(device))")


def initial_mapping(source, program: Program, x: torch.Tensor, y: torch.Tensor, n_target: int | None = None, *,
                    kind: str = "frequency", m: int | None = None, seed: int = 0) -> LabelMap:
    """The label mapping before training: ``"frequency"`` (from the source model's predictions on the
    training inputs with the initial program: ``N`` queries through a black box), ``"random"``
    many-to-one or ``"one-to-one"``."""
    if kind not in MAPPINGS:
        raise ValueError(f"initial_mapping: kind must be one of {MAPPINGS}, got {kind!r}")
    n_target = int(y.max()) + 1 if n_target is None else n_target
    with torch.no_grad():
        probs = source_probabilities(source, program(x))
    k_s = probs.shape[1]
    if kind == "frequency":
        return frequency_mapping(probs, y, n_target, m)
    if kind == "random":
        return random_many_to_one(k_s, n_target, m, seed=seed)
    return one_to_one(k_s, n_target, seed=seed)
