"""MNIST, Fashion-MNIST and CIFAR-10: fetched through torchvision, verified, read by our own readers.

The files live in torchvision's layout under the cache folder (:func:`~advlib.data.registry.cache_dir`
or the ``root`` given to :func:`~advlib.data.load`)::

    MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
    FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
    cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}

Three rules:

* **Downloads go through torchvision only** (``torchvision.datasets.MNIST(root, download=True)`` and
  friends), which fetches the files and checks their md5 itself.
* **Every load verifies the md5 of the files it reads** against torchvision's own table
  (``MNIST.resources``, ``CIFAR10.train_list`` ...), looked up at call time, never copied here.
  Files that are *not* torchvision's (placed by hand: a subset, toy files written by a test) are
  verified against a table the user names explicitly: ``ADVLIB_CHECKSUMS=PATH``, a file in
  ``md5sum`` format (see :func:`local_checksums`). Nothing skips verification.
* **The readers never run code from a file**: IDX files are parsed with ``gzip`` and
  ``numpy.frombuffer``; CIFAR-10's pickled batches go through :class:`RestrictedUnpickler`, which
  builds numpy arrays and plain Python data and refuses everything else.

When the files are missing and cannot be downloaded, :class:`DatasetUnavailable` says so at once,
with the cache path and the command that fetches them.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import socket
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from .registry import DatasetUnavailable, Spec, cache_dir, register

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray

__all__ = ["CHECKSUMS_ENV", "CifarSource", "IdxSource", "RestrictedUnpickler", "SOURCES", "TorchvisionSource",
           "host_reachable", "local_checksums", "offline_reason", "read_idx", "restricted_load"]


# --- is the network there? --------------------------------------------------------------------
def host_reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def offline_reason(url: str) -> str | None:
    """Why ``url`` cannot be downloaded from here, or ``None`` when its host answers.

    ``ADVLIB_OFFLINE=1`` counts as offline without probing (tests and air-gapped machines use it).
    """
    flag = os.environ.get("ADVLIB_OFFLINE", "")
    if flag not in ("", "0"):
        return f"ADVLIB_OFFLINE={flag} is set"
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if not host_reachable(parts.hostname, port):
        return f"no connection to {parts.hostname}"
    return None


# --- checksums of files placed by hand ----------------------------------------------------------
#: the variable that names a local md5 table (``md5sum`` format) for files that are not torchvision's
CHECKSUMS_ENV = "ADVLIB_CHECKSUMS"


def local_checksums() -> tuple[Path | None, dict[str, str]]:
    """The md5 table named by ``$ADVLIB_CHECKSUMS``: ``(its path, {file: md5})``, or ``(None, {})``.

    The file is what ``md5sum`` prints, one ``<md5>  <path>`` line per file (``<md5> *<path>`` is
    read too; blank lines and ``#`` comments are skipped); a path is relative to the cache folder,
    as in ``MNIST/raw/train-images-idx3-ubyte.gz``, or absolute. Make one for files you placed by
    hand with ``cd "$ADVLIB_DATA" && md5sum MNIST/raw/*.gz > mine.md5``. Every file it lists is
    verified against it instead of torchvision's table; every other file still against torchvision's.
    """
    env = os.environ.get(CHECKSUMS_ENV, "")
    if not env:
        return None, {}
    path = Path(env).expanduser()
    if not path.is_file():
        raise DatasetUnavailable(f"{CHECKSUMS_ENV}={env}: no such file (it should name an md5 table written "
                                 f"by md5sum; unset {CHECKSUMS_ENV} to verify against torchvision's checksums)")
    table = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        digest, _, name = line.strip().partition(" ")
        name = name.strip().removeprefix("*").removeprefix("./")
        if len(digest) != 32 or not name or any(c not in "0123456789abcdef" for c in digest.lower()):
            raise DatasetUnavailable(f"{path}, line {number}: expected '<md5>  <path>' as md5sum writes it, "
                                     f"got {line!r}")
        table[name] = digest.lower()
    return path, table


# --- the readers ------------------------------------------------------------------------------
IDX_IMAGES, IDX_LABELS = 0x00000803, 0x00000801  # magic numbers: unsigned bytes, 3-D and 1-D


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file (the MNIST format) as a ``uint8`` array, read straight from its ``.gz``.

    The header is a big-endian int32 magic number (``0x0000 08 0d``: type 08 = unsigned byte,
    ``d`` dimensions), then ``d`` big-endian int32 sizes; the pixels or labels follow.
    """
    with gzip.open(path, "rb") as f:
        data = f.read()
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise ValueError(f"{path}: magic number {found:#010x}, expected {magic:#010x}: not this kind of IDX file")
    ndim = magic & 0xFF
    offset = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    if len(data) - offset != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape}, but {len(data) - offset} bytes follow it")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays, and refuses every other global.

    A pickle may name any importable function and call it while it loads (``os.system`` is the
    classic), so plain ``pickle.load`` on a downloaded file runs whatever the file asks for. The
    CIFAR-10 batches are Python 2 pickles of dicts holding byte strings, lists of ints and one
    ``uint8`` array; rebuilding that array needs only the globals below. Anything else raises
    :class:`pickle.UnpicklingError` before it is called.
    """

    SAFE_GLOBALS = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,  # as numpy 1 (and CIFAR) names it
        ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,  # as numpy 2 names it
        ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
        ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    }

    def find_class(self, module: str, name: str):
        try:
            return self.SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: this reader only rebuilds numpy arrays and plain data"
            ) from None


def restricted_load(path: Path):
    """Load a pickle file with :class:`RestrictedUnpickler` (Python 2 strings come back as ``bytes``)."""
    with open(path, "rb") as f:
        return RestrictedUnpickler(f, encoding="bytes").load()


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch: ``uint8`` images N x 3 x 32 x 32 and ``int64`` labels."""
    batch = restricted_load(path)
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{path}: not a CIFAR-10 batch (expected a dict with b'data' and b'labels')")
    data, labels = batch[b"data"], np.asarray(batch[b"labels"], dtype=np.int64)
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.shape == (len(labels), 3072)):
        raise ValueError(f"{path}: b'data' should be uint8 of shape ({len(labels)}, 3072)")
    return data.reshape(-1, 3, 32, 32), labels  # each row: 1024 red, 1024 green, 1024 blue, row-major


# --- the sources ------------------------------------------------------------------------------
@dataclass
class TorchvisionSource:
    """Where one downloadable data set comes from, which files it has, and how to read them.

    Subclasses say which files a split reads (:meth:`split_files`), their md5 (:meth:`checksums`,
    from torchvision's class attributes) and how to parse them (:meth:`parse`).
    """

    name: str  # our name, e.g. "mnist"
    torchvision_class: str  # in torchvision.datasets, e.g. "MNIST"
    folder: str  # torchvision's folder under the cache, e.g. "MNIST"
    description: str  # for messages, e.g. "MNIST, 60,000 + 10,000 28x28 handwritten digits"

    def dataset_class(self):
        """The torchvision class that downloads this data set (looked up at call time)."""
        import torchvision.datasets

        return getattr(torchvision.datasets, self.torchvision_class)

    def url(self) -> str:
        """The first address torchvision downloads from (its host is what we probe)."""
        raise NotImplementedError

    def checksums(self) -> dict[str, str]:
        """``{path relative to the cache folder: md5}`` of every file we read."""
        raise NotImplementedError

    def split_files(self, split: str) -> list[str]:
        """The files (relative paths) that ``split`` reads."""
        raise NotImplementedError

    def parse(self, split: str, root: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Read the (verified) files of ``split``: float32 inputs in [0, 1], int64 labels, class names."""
        raise NotImplementedError

    # --- the same for every source ---
    def read(self, split: str, root: Path, download: bool | None = None):
        """The reader of the :class:`Spec`: download if needed and allowed, verify, parse."""
        root = Path(root)
        files = self.split_files(split)
        if self.missing(root, files):
            self.download(root, download)
        self.verify(root, files)
        try:
            return self.parse(split, root)
        except (ValueError, pickle.UnpicklingError, EOFError, OSError, zlib.error) as e:
            raise DatasetUnavailable(f"{self.name!r}: a file in {root / self.folder} cannot be read ({e}). "
                                     f"Delete it and run:  {self.fetch_command(root)}") from e

    def fetch(self, root: Path) -> list[str]:
        """Make sure every file is in ``root`` (downloading if the host answers) and verify them all."""
        root = Path(root)
        files = list(self.checksums())
        if self.missing(root, files):
            self.download(root, None)
        self.verify(root, files)
        return files

    def missing(self, root: Path, files: list[str] | None = None) -> list[str]:
        """Which of ``files`` (default: all) are not in ``root``."""
        return [f for f in (files if files is not None else self.checksums()) if not (Path(root) / f).is_file()]

    def download(self, root: Path, download: bool | None) -> None:
        """Download through torchvision (``download=None``: only if the host answers; ``False``: never)."""
        if download is False:
            raise self.unavailable(root, "download=False")
        if download is None and (why := offline_reason(self.url())):
            raise self.unavailable(root, why)
        try:
            self.dataset_class()(str(root), train=True, download=True)  # fetches both splits, checks md5
        except Exception as e:
            raise self.unavailable(root, f"the download failed: {type(e).__name__}: {e}") from e
        if missing := self.missing(root):
            raise self.unavailable(root, f"the download did not produce {missing[0]}")

    def expected_md5(self, root: Path, file: str) -> tuple[str, str]:
        """The md5 that ``file`` must have, and where that number comes from (for messages): the
        table of ``$ADVLIB_CHECKSUMS`` when it lists the file, else torchvision's."""
        local_path, local = local_checksums()
        for key in (file, str(Path(root).resolve() / file)):
            if key in local:
                return local[key], f"{CHECKSUMS_ENV}={local_path}"
        return self.checksums()[file], f"torchvision.datasets.{self.torchvision_class}"

    def hand_placed(self, root: Path) -> list[str]:
        """This data set's files whose md5 comes from ``$ADVLIB_CHECKSUMS`` rather than torchvision."""
        return [f for f in self.checksums() if self.expected_md5(root, f)[1].startswith(CHECKSUMS_ENV)]

    def verify(self, root: Path, files: list[str]) -> None:
        """Check the md5 of ``files``; a mismatch raises :class:`DatasetUnavailable` naming the file."""
        for f in files:
            path = Path(root) / f
            expected, source = self.expected_md5(root, f)
            digest = hashlib.md5(usedforsecurity=False)
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
            if digest.hexdigest() != expected:
                raise DatasetUnavailable(
                    f"{path} is corrupted: its md5 is {digest.hexdigest()}, expected {expected} ({self.name!r}, "
                    f"md5 from {source}). Delete it and run:  {self.fetch_command(root)}")

    def fetch_command(self, root: Path) -> str:
        """The shell command that fetches this data set into ``root``."""
        extra = "" if Path(root) == cache_dir() else f" --root {root}"
        return f"python -m advlib.data fetch {self.name}{extra}"

    def unavailable(self, root: Path, why: str) -> DatasetUnavailable:
        """The error for 'not in the cache and not downloadable here', with what to do about it."""
        return DatasetUnavailable(
            f"{self.name!r} ({self.description}) is not in the cache folder {Path(root) / self.folder} and cannot "
            f"be downloaded here ({why}). On a machine with internet run:  {self.fetch_command(root)}  "
            f"(then copy {root} to this machine, or point ADVLIB_DATA at it). Offline, the default profile "
            f"needs no download: ADVLIB_PROFILE=fast uses the bundled 'digits'.")


@dataclass
class IdxSource(TorchvisionSource):
    """MNIST and Fashion-MNIST: four gzipped IDX files in ``<folder>/raw``."""

    classes: tuple[str, ...] = ()

    def url(self) -> str:
        return self.dataset_class().mirrors[0]

    def checksums(self) -> dict[str, str]:
        return {f"{self.folder}/raw/{filename}": md5 for filename, md5 in self.dataset_class().resources}

    def split_files(self, split: str) -> list[str]:
        prefix = "train" if split == "train" else "t10k"
        return [f"{self.folder}/raw/{prefix}-images-idx3-ubyte.gz", f"{self.folder}/raw/{prefix}-labels-idx1-ubyte.gz"]

    def parse(self, split: str, root: Path):
        images_file, labels_file = self.split_files(split)
        images = read_idx(root / images_file, IDX_IMAGES)
        labels = read_idx(root / labels_file, IDX_LABELS)
        x = images[:, None].astype(np.float32) / 255  # N x 1 x 28 x 28 in [0, 1]
        return x, labels.astype(np.int64), list(self.classes)


@dataclass
class CifarSource(TorchvisionSource):
    """CIFAR-10: five training batches, one test batch and ``batches.meta``, pickled by Python 2."""

    def url(self) -> str:
        return self.dataset_class().url

    def checksums(self) -> dict[str, str]:
        cls = self.dataset_class()
        table = {f"{self.folder}/{filename}": md5 for filename, md5 in cls.train_list + cls.test_list}
        table[f"{self.folder}/{cls.meta['filename']}"] = cls.meta["md5"]
        return table

    def split_files(self, split: str) -> list[str]:
        cls = self.dataset_class()
        batches = cls.train_list if split == "train" else cls.test_list
        return [f"{self.folder}/{filename}" for filename, _ in batches] + [f"{self.folder}/{cls.meta['filename']}"]

    def parse(self, split: str, root: Path):
        *batch_files, meta_file = self.split_files(split)
        images, labels = zip(*(read_cifar_batch(root / f) for f in batch_files))
        x = np.concatenate(images).astype(np.float32) / 255  # N x 3 x 32 x 32 in [0, 1]
        classes = [name.decode() for name in restricted_load(root / meta_file)[b"label_names"]]
        return x, np.concatenate(labels), classes


MNIST = IdxSource("mnist", "MNIST", "MNIST", "MNIST, 60,000 + 10,000 28x28 handwritten digits",
                  classes=tuple(str(d) for d in range(10)))
FASHION_MNIST = IdxSource("fashion-mnist", "FashionMNIST", "FashionMNIST",
                          "Fashion-MNIST, 60,000 + 10,000 28x28 greyscale photos of clothes",
                          classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                   "Sneaker", "Bag", "Ankle boot"))
CIFAR10 = CifarSource("cifar10", "CIFAR10", "cifar-10-batches-py",
                      "CIFAR-10, 50,000 + 10,000 32x32 colour photos in 10 classes")

#: the downloadable data sets by name (tests replace a source's ``checksums`` here)
SOURCES: dict[str, TorchvisionSource] = {s.name: s for s in (MNIST, FASHION_MNIST, CIFAR10)}

register(Spec("mnist", "MNIST handwritten digits", "image", (1, 28, 28), 10, (60000, 10000),
              "torchvision.datasets.MNIST (LeCun, Cortes and Burges)", "CC BY-SA 3.0", False, MNIST.read,
              "downloaded: 4 IDX .gz files, ~11 MB; pixels 0..255 scaled to [0, 1]"))
register(Spec("fashion-mnist", "Fashion-MNIST: Zalando article images", "image", (1, 28, 28), 10,
              (60000, 10000), "torchvision.datasets.FashionMNIST (Zalando Research)", "MIT", False,
              FASHION_MNIST.read, "downloaded: 4 IDX .gz files, ~30 MB; pixels 0..255 scaled to [0, 1]"))
register(Spec("cifar10", "CIFAR-10 tiny colour images", "image", (3, 32, 32), 10, (50000, 10000),
              "torchvision.datasets.CIFAR10 (Krizhevsky, 2009)", "no licence stated; cite Krizhevsky (2009)",
              False, CIFAR10.read, "downloaded: a 163 MB archive of pickled batches; pixels scaled to [0, 1]"))
