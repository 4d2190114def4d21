"""What every Trojan detector shares: its few trusted samples, its verdict, and its cost."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..threat import check_batch, check_count, check_labels
from .poison import Trigger

__all__ = ["Detection", "take_per_class", "Counted"]


@dataclass
class Detection:
    """A detector's answer about one model.

    ``trojan`` is the verdict (``score > threshold``); ``target`` the suspected target label (the
    label with the most suspicious statistic, reported whatever the verdict); ``per_label`` the
    statistic of every candidate label; ``trigger`` the trigger recovered for ``target`` (for
    inspection, next to the true one); ``triggers`` those of every label. ``forwards`` and
    ``backwards`` count the inputs passed through the model and the inputs whose gradient was
    taken: the detector's cost in model queries and gradients."""

    method: str
    trojan: bool
    score: float
    threshold: float
    target: int
    per_label: torch.Tensor
    trigger: Trigger
    triggers: list[Trigger] = field(repr=False, default_factory=list)
    forwards: int = 0
    backwards: int = 0
    seconds: float = 0.0
    samples: int = 0  # clean samples the detector used

    def __str__(self) -> str:
        verdict = f"Trojan, target {self.target}" if self.trojan else "clean"
        return (f"{self.method}: {verdict} (score {self.score:.3g} vs threshold {self.threshold:.3g}; "
                f"{self.samples} samples, {self.forwards} forwards, {self.backwards} gradients, {self.seconds:.1f} s)")


def take_per_class(data, per_class: int, n_classes: int, who: str) -> tuple[torch.Tensor, torch.Tensor]:
    """At most ``per_class`` clean samples of each class, and never more: the data limit of a
    data-limited detector.

    ``data`` is a tuple ``(x, y)`` of tensors (it must already respect the limit: an error says how
    many a class has too many), or a dataset: then only the labels are read (its ``.y``, when it has
    one) and exactly the chosen items are fetched, the first ``per_class`` of each class in order."""
    per_class = check_count(per_class, who, "per_class", minimum=1)
    if isinstance(data, (tuple, list)):
        x, y = data
        check_batch(x, who)
        check_labels(y, len(x), n_classes, who)
        counts = torch.bincount(y.cpu(), minlength=n_classes)
        if counts.max() > per_class:
            raise ValueError(f"{who}: the data-limited setting allows {per_class} sample(s) per class, but class "
                             f"{int(counts.argmax())} has {int(counts.max())}; pass advlib.backdoor.take_per_class("
                             f"dataset, {per_class}, {n_classes}, ...) or a smaller set")
        return x, y
    labels = getattr(data, "y", None)
    if labels is None:
        labels = torch.stack([torch.as_tensor(data[i][1]) for i in range(len(data))])
    labels = torch.as_tensor(labels).cpu()
    chosen = torch.cat([(labels == c).nonzero().flatten()[:per_class] for c in range(n_classes)]).sort().values
    if len(chosen) == 0:
        raise ValueError(f"{who}: the data has no sample of any of the {n_classes} classes")
    items = [data[int(i)] for i in chosen]
    x = torch.stack([torch.as_tensor(it[0]) for it in items])
    y = torch.stack([torch.as_tensor(it[1]) for it in items]).long()
    check_batch(x, who)
    return x, y


class Counted(nn.Module):
    """A model wrapper that counts the inputs of its forward passes and of the gradients taken
    through it (one backward of a batch counts its rows): how a detector's cost is measured."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.forwards, self.backwards = model, 0, 0
        self.in_shape = getattr(model, "in_shape", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += len(x)
        if x.requires_grad:
            n = len(x)

            def count(g):
                self.backwards += n
                return g
            x.register_hook(count)
        return self.model(x)
