"""Tiny MNIST and Fashion-MNIST caches in the real file formats, for running the full profile in CI.

:func:`write_toy_cache` writes, into a cache folder laid out as torchvision lays out its downloads,

* ``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``: scikit-learn's real handwritten
  digits at the MNIST shape (``digits28``: upsampled to 20x20 and centred in 28x28, as MNIST centres
  its digits), the fixed digits split (1,297 training and 500 test images), pixels as ``uint8``;
* ``FashionMNIST/raw/`` (the same four names): drawn silhouettes of the ten Fashion-MNIST classes
  (T-shirt, trouser, ..., ankle boot), jittered in position, width, brightness and texture;

each gzipped (mtime 0: the same bytes every time) next to the unpacked copy torchvision keeps, and
an ``md5sum``-format table of the ``.gz`` files for ``$ADVLIB_CHECKSUMS``: these are not
torchvision's files, so ``advlib.data`` verifies them against that table instead of refusing them.
"""
from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

import advlib.data

__all__ = ["FASHION_SIZES", "digits_as_mnist", "fashion_silhouettes", "write_idx", "write_toy_cache"]

#: training and test images of the toy Fashion-MNIST (balanced over the ten classes)
FASHION_SIZES = (600, 200)


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file as MNIST ships it: magic ``0x0000080d`` (unsigned bytes, ``d`` dimensions), ``d``
    big-endian int32 sizes, the bytes; gzipped, plus the unpacked copy torchvision leaves next to it."""
    raw = (0x0800 | array.ndim).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    raw += np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw, mtime=0))
    path.with_suffix("").write_bytes(raw)


def digits_as_mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The bundled digits at 28x28 as MNIST stores them: ``uint8`` images N x 28 x 28 and labels."""
    ds = advlib.data.load("digits28", split)
    return (ds.x[:, 0].numpy() * 255).round().astype(np.uint8), ds.y.numpy().astype(np.uint8)


def _silhouette(label: int, rng: np.random.Generator) -> np.ndarray:
    """A boolean 28x28 mask of one garment of class ``label`` (Fashion-MNIST's order), jittered."""
    dy, dx = rng.uniform(-1.5, 1.5, 2)
    rows, cols = np.mgrid[0:28, 0:28].astype(float)
    r, c = rows - dy, (cols - 13.5 - dx) / rng.uniform(0.85, 1.1)  # c: signed distance from the middle
    a = np.abs(c)

    def box(top, bottom, half):
        return (r >= top) & (r <= bottom) & (a <= half)

    shapes = {
        0: lambda: box(6, 24, 6) | box(6, 11, 11),  # T-shirt/top: torso, short sleeves
        1: lambda: box(3, 25, 7) & ~((r > 9) & (a < 1.2)),  # trouser: two legs
        2: lambda: box(5, 23, 6.5) | (box(5, 21, 11) & (a > 8)),  # pullover: long sleeves
        3: lambda: (r >= 3) & (r <= 26) & (a <= 3 + 0.35 * (r - 3)),  # dress: widening to the hem
        4: lambda: (box(3, 26, 7) | (box(3, 22, 11.5) & (a > 8.5))) & (a > 0.7),  # coat: long, open front
        5: lambda: (box(17, 20, 11) & ~((r > 17.5) & (r < 19.5) & (a % 4 < 2))) | box(21, 22, 12),  # sandal
        6: lambda: (box(4, 24, 6.5) | (box(4, 20, 10.5) & (a > 8))) & ~((r < 10 - 2 * a) & (a < 3)),  # shirt
        7: lambda: (r >= 13 + 0.25 * (c + 11)) & (r <= 22) & (a <= 11.5),  # sneaker: low, higher at the heel
        8: lambda: box(10, 24, 9) | (((r - 10) ** 2 + c**2 >= 16) & ((r - 10) ** 2 + c**2 <= 36) & (r <= 10)),  # bag
        9: lambda: ((r >= 4) & (r <= 22) & (c >= -8) & (c <= -1)) | ((r >= 15) & (r <= 22) & (c >= -8) & (c <= 10)),
    }
    return shapes[label]()


def fashion_silhouettes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` toy Fashion-MNIST images (``uint8`` N x 28 x 28, balanced classes in random order) and labels."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
    images = np.empty((n, 28, 28), np.uint8)
    for i, label in enumerate(labels):
        mask = _silhouette(int(label), rng).astype(float)
        texture = 1 + 0.25 * gaussian_filter(rng.normal(size=(28, 28)), 1.0)
        image = gaussian_filter(mask * texture * rng.uniform(0.5, 1.0), 0.6)
        images[i] = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    return images, labels


def write_toy_cache(root: Path) -> Path:
    """Write the toy MNIST and Fashion-MNIST into the cache folder ``root``; returns the md5 table."""
    root = Path(root)
    arrays = {
        "MNIST": {split: digits_as_mnist(split) for split in ("train", "test")},
        "FashionMNIST": {"train": fashion_silhouettes(FASHION_SIZES[0], seed=0),
                         "test": fashion_silhouettes(FASHION_SIZES[1], seed=1)},
    }
    lines = []
    for folder, splits in arrays.items():
        for split, (images, labels) in splits.items():
            prefix = "train" if split == "train" else "t10k"
            for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
                relative = f"{folder}/raw/{prefix}-{kind}-ubyte.gz"
                write_idx(root / relative, array)
                lines.append(f"{hashlib.md5((root / relative).read_bytes()).hexdigest()}  {relative}")
    table = root / "toy-files.md5"
    table.write_text("# toy MNIST and Fashion-MNIST written by tests/toy_datasets.py\n" + "\n".join(lines) + "\n")
    return table
