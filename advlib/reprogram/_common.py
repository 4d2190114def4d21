"""What every reprogramming method shares: the reprogrammed model and the batch checks."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..blackbox import BlackBox
from ..threat import check_labels, require_eval
from .mapping import MAPPINGS, LabelMap, frequency_mapping, one_to_one, random_many_to_one
from .program import Program

__all__ = ["Reprogrammed", "initial_mapping", "check_target"]


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

    def source_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        if self.box is not None:
            with torch.no_grad():
                return self.box.scores(self.program(x).detach())
        return F.softmax(self.source(self.program(x)), -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mapping(self.source_probabilities(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        return torch.cat([self(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Top-1 accuracy on the target task (through a black box these are counted queries)."""
        return (self.predict(x) == y.to(x.device)).float().mean().item()


def check_target(source, program: Program, x: torch.Tensor, y: torch.Tensor, who: str) -> None:
    """Targets ``x`` of the program's target shape with one label each; a white-box source in eval mode."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or tuple(x.shape[1:]) != program.target_shape:
        raise ValueError(f"{who}: x must be a float batch N x {program.target_shape} (the program's target shape), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{who}: x contains NaN or infinite values; remove or repair them first")
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
        inp = program(x)
        probs = source.scores(inp) if isinstance(source, BlackBox) else F.softmax(source(inp), -1)
    k_s = probs.shape[1]
    if kind == "frequency":
        return frequency_mapping(probs, y, n_target, m)
    if kind == "random":
        return random_many_to_one(k_s, n_target, m, seed=seed)
    return one_to_one(k_s, n_target, seed=seed)
