"""Tests of ``advlib.data``: the bundled data sets, the downloadable ones (on small files written in
the real formats into a temporary cache), the offline behaviour and the command line.

No test touches the network or the real ``datasets/cache``: every test runs with
``ADVLIB_OFFLINE=1``, ``ADVLIB_DATA`` inside ``tmp_path`` and a network probe that fails the test
if anything calls it (tests that need the probe replace it).
"""
import gzip
import hashlib
import io
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch
import torchvision

import advlib.data as data
from advlib.data import DatasetUnavailable, downloads, registry
from advlib.data.__main__ import main

REPO = Path(__file__).resolve().parents[1]
REAL_HOST_REACHABLE = downloads.host_reachable

#: sha256 of registry.digits_split's test indices (int64 bytes), computed once: the split must not drift
DIGITS_TEST_SHA256 = "3d6044a53baef57e3ea391518b9bed72be9a8dc7833ff07d1177e9c4cc26004b"

DOWNLOADABLE = [("mnist", "MNIST", "MNIST"), ("fashion-mnist", "FashionMNIST", "FashionMNIST"),
                ("cifar10", "CIFAR10", "cifar-10-batches-py")]  # our name, torchvision class, cache folder


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """Offline, with a throw-away default cache folder, and no network probe unless a test allows it."""
    monkeypatch.setenv("ADVLIB_OFFLINE", "1")
    monkeypatch.setenv("ADVLIB_DATA", str(tmp_path / "default-cache"))

    def no_probe(host, port=443, timeout=3.0):
        pytest.fail(f"a test probed the network ({host}:{port})")

    monkeypatch.setattr(downloads, "host_reachable", no_probe)


# === bundled: digits ==========================================================================
@pytest.fixture(scope="module")
def sklearn_digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target


@pytest.mark.parametrize("split, n", [("train", 1297), ("test", 500)])
def test_digits_shape_dtype_range(split, n):
    ds = data.load("digits", split)
    assert ds.x.shape == (n, 1, 8, 8) and ds.x.dtype == torch.float32
    assert ds.y.shape == (n,) and ds.y.dtype == torch.int64
    assert ds.x.min() == 0 and ds.x.max() == 1  # pixels 0..16 scaled by 1/16
    assert ds.classes == [str(c) for c in range(10)] and ds.n_classes == 10
    assert set(ds.y.tolist()) == set(range(10))
    assert ds.name == "digits" and ds.split == split


def test_digits_split_disjoint_stratified_fixed(sklearn_digits):
    images, y = sklearn_digits
    train, test = registry.digits_split(y)
    assert (len(train), len(test)) == (1297, 500)
    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.union1d(train, test), np.arange(len(y)))
    for c in range(10):
        proportional = (y == c).sum() * 500 / len(y)
        assert abs((y[test] == c).sum() - proportional) <= 1, c
    assert hashlib.sha256(test.astype(np.int64).tobytes()).hexdigest() == DIGITS_TEST_SHA256
    # and load() returns exactly those images, in that order
    for split, idx in (("train", train), ("test", test)):
        ds = data.load("digits", split)
        np.testing.assert_array_equal(ds.x.numpy()[:, 0], (images[idx] / 16).astype(np.float32))
        np.testing.assert_array_equal(ds.y.numpy(), y[idx])


@pytest.mark.parametrize("split", ["train", "test"])
def test_digits28_is_digits_at_mnist_shape(split):
    small, big = data.load("digits", split), data.load("digits28", split)
    assert big.x.shape == (len(small), 1, 28, 28) and big.x.dtype == torch.float32
    assert torch.equal(big.y, small.y) and big.classes == small.classes
    border = torch.ones(28, 28, dtype=torch.bool)
    border[4:24, 4:24] = False
    assert (big.x[:, 0][:, border] == 0).all()  # empty 4-pixel frame, like MNIST
    assert (big.x[:, :, 4:24, 4:24].amax(dim=(1, 2, 3)) > 0).all()  # every digit has ink inside
    assert big.x.min() >= 0 and big.x.max() <= 1


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no GPU"))])
def test_load_device(device):
    ds = data.load("digits", "test", device=device)
    assert ds.x.device.type == device and ds.y.device.type == device


def test_unknown_name_and_bad_split():
    with pytest.raises(ValueError, match="unknown data set 'mnsit'") as e:
        data.load("mnsit")
    for name in ("digits", "digits28", "gunpoint", "mnist", "fashion-mnist", "cifar10"):
        assert name in str(e.value)
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        data.load("digits", "validation")


# === bundled: series ==========================================================================
@pytest.mark.parametrize("name, channels, length, n_classes, sizes", [
    ("gunpoint", 1, 150, 2, (50, 150)),
    ("coffee", 1, 286, 2, (28, 28)),
    ("basic-motions", 6, 100, 4, (40, 40)),
])
def test_series(name, channels, length, n_classes, sizes):
    for split, n in zip(("train", "test"), sizes):
        ds = data.load(name, split)
        assert ds.x.shape == (n, channels, length) and ds.x.dtype == torch.float32
        assert ds.y.dtype == torch.int64 and set(ds.y.tolist()) == set(range(n_classes))
        assert ds.n_classes == n_classes and torch.isfinite(ds.x).all()


@pytest.mark.parametrize("spec", [s for s in data.catalogue() if s.offline], ids=lambda s: s.name)
def test_bundled_specs_describe_their_data(spec):
    for split, n in zip(("train", "test"), spec.sizes):
        ds = data.load(spec.name, split)
        assert tuple(ds.x.shape) == (n, *spec.shape) and ds.n_classes == spec.n_classes


# === downloadable: small files in the real formats ==============================================
def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file as MNIST ships it: magic 0x0000080d (unsigned bytes, d dimensions), d big-endian
    int32 sizes, the bytes; gzipped (mtime 0: same bytes, same md5), plus the unpacked copy that
    torchvision leaves next to it."""
    raw = (0x0800 | array.ndim).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    raw += array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw, mtime=0))
    path.with_suffix("").write_bytes(raw)


def make_idx_files(root: Path, folder: str, sizes=(7, 5), seed=0):
    """Fake MNIST-format files in ``root/folder/raw``: ``({split: (images, labels)}, {path: md5})``."""
    rng = np.random.default_rng(seed)
    arrays, table = {}, {}
    for split, prefix, n in (("train", "train", sizes[0]), ("test", "t10k", sizes[1])):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        images[0, 0, :2] = 0, 255  # the extremes, to check the scaling to [0, 1]
        labels = rng.integers(0, 10, n).astype(np.uint8)
        arrays[split] = images, labels
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            relative = f"{folder}/raw/{prefix}-{kind}-ubyte.gz"
            write_idx(root / relative, array)
            table[relative] = md5(root / relative)
    return arrays, table


class Py2Pickler(pickle._Pickler):
    """Pickles as Python 2 did for the CIFAR-10 batches: strings as (SHORT_)BINSTRING opcodes.

    (Python 3 at protocol 2 writes ``bytes`` as calls to ``_codecs.encode``, which the real files
    do not contain.)"""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        raw = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + len(raw).to_bytes(4, "little") + raw)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    # numpy 2 calls the array rebuilder numpy._core.multiarray._reconstruct; the CIFAR files say numpy.core
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


CIFAR_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def make_cifar_files(root: Path, sizes=(3, 2, 2, 1, 2), n_test=4, seed=1):
    """Fake CIFAR-10 python batches in ``root/cifar-10-batches-py``, pickled as the real ones are.

    Returns ``({split: (data N x 3072, labels)}, {path: md5})``."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    files = [(f"data_batch_{i}", n) for i, n in enumerate(sizes, 1)] + [("test_batch", n_test)]
    parts = {"train": [], "test": []}
    for filename, n in files:
        pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        batch = {b"batch_label": filename.encode(), b"labels": labels, b"data": pixels,
                 b"filenames": [f"img_{k}.png".encode() for k in range(n)]}
        (folder / filename).write_bytes(py2_pickle(batch))
        parts["test" if filename == "test_batch" else "train"].append((pixels, labels))
    meta = {b"num_cases_per_batch": 10000, b"label_names": CIFAR_NAMES, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(py2_pickle(meta))
    arrays = {split: (np.concatenate([p for p, _ in batches]), np.concatenate([lab for _, lab in batches]))
              for split, batches in parts.items()}
    table = {f"cifar-10-batches-py/{f}": md5(folder / f) for f, _ in files + [("batches.meta", 0)]}
    return arrays, table


def use_torchvision_checksums(monkeypatch, table):
    """Put our md5s into torchvision's own tables (our checksums are read from them at call time)."""
    tv = torchvision.datasets
    for cls, folder in ((tv.MNIST, "MNIST"), (tv.FashionMNIST, "FashionMNIST")):
        if f"{folder}/raw/train-images-idx3-ubyte.gz" in table:
            monkeypatch.setattr(cls, "resources", [(f, table[f"{folder}/raw/{f}"]) for f, _ in cls.resources])
    if "cifar-10-batches-py/test_batch" in table:
        cifar = tv.CIFAR10
        md5s = {path.split("/")[-1]: value for path, value in table.items()}
        monkeypatch.setattr(cifar, "train_list", [[f, md5s[f]] for f, _ in cifar.train_list])
        monkeypatch.setattr(cifar, "test_list", [[f, md5s[f]] for f, _ in cifar.test_list])
        monkeypatch.setattr(cifar, "meta", {**cifar.meta, "md5": md5s["batches.meta"]})


def test_checksums_come_from_torchvision():
    tv = torchvision.datasets
    assert downloads.MNIST.checksums() == {f"MNIST/raw/{f}": m for f, m in tv.MNIST.resources}
    assert downloads.FASHION_MNIST.checksums() == {f"FashionMNIST/raw/{f}": m for f, m in tv.FashionMNIST.resources}
    cifar = downloads.CIFAR10.checksums()
    assert len(cifar) == 7 and cifar["cifar-10-batches-py/batches.meta"] == tv.CIFAR10.meta["md5"]
    for f, m in tv.CIFAR10.train_list + tv.CIFAR10.test_list:
        assert cifar[f"cifar-10-batches-py/{f}"] == m


@pytest.mark.parametrize("split", ["train", "test"])
def test_mnist_round_trip(monkeypatch, tmp_path, split):
    arrays, table = make_idx_files(tmp_path, "MNIST")
    use_torchvision_checksums(monkeypatch, table)
    ds = data.load("mnist", split, root=tmp_path)
    images, labels = arrays[split]
    assert ds.x.shape == (len(labels), 1, 28, 28) and ds.x.dtype == torch.float32 and ds.y.dtype == torch.int64
    np.testing.assert_array_equal(ds.x.numpy(), images[:, None].astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.y.numpy(), labels)
    assert ds.x.min() == 0 and ds.x.max() == 1
    assert ds.classes == [str(d) for d in range(10)]
    # torchvision's own reader agrees on the same files
    tv = torchvision.datasets.MNIST(str(tmp_path), train=split == "train", download=False)
    np.testing.assert_array_equal(tv.data.numpy(), images)
    np.testing.assert_array_equal(tv.targets.numpy(), labels)


def test_fashion_mnist_round_trip(monkeypatch, tmp_path):
    arrays, table = make_idx_files(tmp_path, "FashionMNIST", seed=3)
    monkeypatch.setattr(downloads.SOURCES["fashion-mnist"], "checksums", lambda: table)
    ds = data.load("fashion-mnist", "train", root=tmp_path)
    images, labels = arrays["train"]
    np.testing.assert_array_equal((ds.x.numpy()[:, 0] * 255).round().astype(np.uint8), images)
    np.testing.assert_array_equal(ds.y.numpy(), labels)
    assert ds.classes == torchvision.datasets.FashionMNIST.classes


@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar10_round_trip(monkeypatch, tmp_path, split):
    arrays, table = make_cifar_files(tmp_path)
    use_torchvision_checksums(monkeypatch, table)
    ds = data.load("cifar10", split, root=tmp_path)
    pixels, labels = arrays[split]
    assert ds.x.shape == (len(labels), 3, 32, 32) and ds.x.dtype == torch.float32 and ds.y.dtype == torch.int64
    np.testing.assert_array_equal((ds.x.numpy() * 255).round().astype(np.uint8).reshape(-1, 3072), pixels)
    np.testing.assert_array_equal(ds.y.numpy(), labels)
    # a row is 1024 red, 1024 green, 1024 blue values, each 32 x 32 row-major
    assert ds.x[1, 1, 5, 7] * 255 == pytest.approx(pixels[1, 1024 + 32 * 5 + 7])
    assert ds.classes == [n.decode() for n in CIFAR_NAMES]
    # torchvision's own (unrestricted) reader agrees: same images (it stores H x W x C), labels, names
    tv = torchvision.datasets.CIFAR10(str(tmp_path), train=split == "train", download=False)
    np.testing.assert_array_equal((ds.x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8), tv.data)
    assert ds.y.tolist() == tv.targets and ds.classes == tv.classes


def test_fake_cifar_batches_look_like_the_real_ones(tmp_path):
    make_cifar_files(tmp_path)
    raw = (tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    assert raw.startswith(b"\x80\x02}") and b"cnumpy.core.multiarray\n_reconstruct\n" in raw
    assert b"_codecs" not in raw


def test_corrupted_file_is_named(monkeypatch, tmp_path):
    _, table = make_idx_files(tmp_path, "MNIST")
    use_torchvision_checksums(monkeypatch, table)
    bad = tmp_path / "MNIST/raw/train-images-idx3-ubyte.gz"
    raw = bytearray(bad.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad.write_bytes(bytes(raw))
    with pytest.raises(DatasetUnavailable) as e:
        data.load("mnist", "train", root=tmp_path)
    message = str(e.value)
    assert str(bad) in message and "corrupted" in message
    assert "Delete it" in message and "python -m advlib.data fetch mnist" in message
    assert len(data.load("mnist", "test", root=tmp_path)) == 5  # the test split reads other files


def test_wrong_idx_magic_number_is_refused(monkeypatch, tmp_path):
    _, table = make_idx_files(tmp_path, "MNIST")
    images = tmp_path / "MNIST/raw/t10k-images-idx3-ubyte.gz"
    write_idx(images, np.zeros(5, np.uint8))  # a labels file (magic 0x801) where images belong
    table["MNIST/raw/t10k-images-idx3-ubyte.gz"] = md5(images)
    monkeypatch.setattr(downloads.SOURCES["mnist"], "checksums", lambda: table)
    with pytest.raises(DatasetUnavailable, match="magic number 0x00000801, expected 0x00000803"):
        data.load("mnist", "test", root=tmp_path)


class RunsShell:
    """Unpickling this runs a shell command (the classic pickle attack)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(py2_pickle({b"data": RunsShell(marker), b"labels": []}))
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load \w+\.system"):
        downloads.restricted_load(evil)
    assert not marker.exists()
    for gadget in (eval, getattr, subprocess.Popen):
        evil.write_bytes(pickle.dumps(gadget))
        with pytest.raises(pickle.UnpicklingError, match="refusing"):
            downloads.restricted_load(evil)


def test_restricted_unpickler_loads_numpy_arrays(tmp_path):
    array = np.arange(12, dtype=np.int16).reshape(3, 4)
    path = tmp_path / "a.pkl"
    for protocol in (3, 4):  # as Python 3 pickles them (protocol 2: see the CIFAR tests)
        path.write_bytes(pickle.dumps({b"a": array, b"n": [1, 2.5, None]}, protocol=protocol))
        loaded = downloads.restricted_load(path)
        np.testing.assert_array_equal(loaded[b"a"], array)
        assert loaded[b"n"] == [1, 2.5, None]


def test_malicious_cifar_batch_is_refused(monkeypatch, tmp_path):
    _, table = make_cifar_files(tmp_path)
    marker = tmp_path / "pwned"
    batch = tmp_path / "cifar-10-batches-py/test_batch"
    batch.write_bytes(py2_pickle({b"data": RunsShell(marker), b"labels": [0]}))
    table["cifar-10-batches-py/test_batch"] = md5(batch)  # even with a matching checksum
    monkeypatch.setattr(downloads.SOURCES["cifar10"], "checksums", lambda: table)
    with pytest.raises(DatasetUnavailable, match="cannot be read") as e:
        data.load("cifar10", "test", root=tmp_path)
    assert isinstance(e.value.__cause__, pickle.UnpicklingError) and "system" in str(e.value)
    assert not marker.exists()


# === offline behaviour ========================================================================
def assert_helpful(message: str, name: str, folder: Path):
    assert repr(name) in message and str(folder) in message
    assert f"python -m advlib.data fetch {name}" in message


@pytest.mark.parametrize("name, _, folder", DOWNLOADABLE)
def test_missing_files_with_offline_env(tmp_path, name, _, folder):
    with pytest.raises(DatasetUnavailable) as e:
        data.load(name, "test", root=tmp_path)
    assert_helpful(str(e.value), name, tmp_path / folder)
    assert "ADVLIB_OFFLINE=1" in str(e.value) and "--root" in str(e.value)
    assert not any(tmp_path.iterdir())  # nothing written


def test_missing_files_in_default_cache():
    cache = Path(os.environ["ADVLIB_DATA"])
    with pytest.raises(DatasetUnavailable) as e:
        data.load("mnist")
    message = str(e.value)
    assert_helpful(message, "mnist", cache / "MNIST")
    assert "fetch mnist  (then copy" in message and "ADVLIB_DATA" in message and "'digits'" in message


@pytest.mark.parametrize("name, tv_name, folder", DOWNLOADABLE)
def test_missing_files_when_probe_says_offline(monkeypatch, tmp_path, name, tv_name, folder):
    monkeypatch.delenv("ADVLIB_OFFLINE")
    probed = []
    monkeypatch.setattr(downloads, "host_reachable", lambda host, port=443, timeout=3.0: probed.append(host) or False)
    with pytest.raises(DatasetUnavailable) as e:
        data.load(name, "train", root=tmp_path)
    cls = getattr(torchvision.datasets, tv_name)
    host = urlsplit(cls.mirrors[0] if hasattr(cls, "mirrors") else cls.url).hostname
    assert probed == [host]
    assert_helpful(str(e.value), name, tmp_path / folder)
    assert f"no connection to {host}" in str(e.value)


def test_download_false_neither_probes_nor_downloads(monkeypatch, tmp_path):
    monkeypatch.delenv("ADVLIB_OFFLINE")
    with pytest.raises(DatasetUnavailable, match="download=False"):
        data.load("cifar10", root=tmp_path, download=False)


@pytest.mark.parametrize("name, tv_name, folder", DOWNLOADABLE)
@pytest.mark.parametrize("error", [URLError("no route to host"), OSError("network unreachable"),
                                   RuntimeError("Error downloading train-images-idx3-ubyte.gz")])
def test_download_failure_is_wrapped(monkeypatch, tmp_path, name, tv_name, folder, error):
    monkeypatch.delenv("ADVLIB_OFFLINE")
    monkeypatch.setattr(downloads, "host_reachable", lambda *args, **kwargs: True)
    real = getattr(torchvision.datasets, tv_name)

    def refuse(self, root, train=True, transform=None, target_transform=None, download=False):
        if download:
            raise error

    monkeypatch.setattr(torchvision.datasets, tv_name, type("Broken", (real,), {"__init__": refuse}))
    with pytest.raises(DatasetUnavailable) as e:
        data.load(name, root=tmp_path)
    assert e.value.__cause__ is error
    assert_helpful(str(e.value), name, tmp_path / folder)
    assert "the download failed" in str(e.value) and str(error) in str(e.value)


def test_download_true_goes_through_torchvision(monkeypatch, tmp_path):
    _, table = make_idx_files(tmp_path / "scratch", "MNIST")  # same seed: same bytes as the "download"
    use_torchvision_checksums(monkeypatch, table)
    calls = []

    class FakeMNIST(torchvision.datasets.MNIST):
        def __init__(self, root, train=True, download=False):
            calls.append((root, train, download))
            make_idx_files(Path(root), "MNIST")

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    ds = data.load("mnist", "test", root=tmp_path / "cache", download=True)  # ADVLIB_OFFLINE is set: no probe
    assert calls == [(str(tmp_path / "cache"), True, True)] and len(ds) == 5
    data.load("mnist", "train", root=tmp_path / "cache")  # now cached: no second download
    assert len(calls) == 1


def test_host_reachable_opens_a_tcp_connection():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert REAL_HOST_REACHABLE("127.0.0.1", port, timeout=1)
    assert not REAL_HOST_REACHABLE("127.0.0.1", port, timeout=1)


# === command line =============================================================================
def cli_rows(out: str) -> dict[str, str]:
    return {line.split()[0]: line for line in out.splitlines() if line.strip()}


def test_cli_list(monkeypatch, capsys):
    assert main(["list"]) == 0
    rows = cli_rows(capsys.readouterr().out)
    for spec in data.catalogue():
        assert spec.name in rows
    assert rows["digits"].endswith("offline") and rows["gunpoint"].endswith("offline")
    assert rows["mnist"].endswith("needs download") and "1x28x28" in rows["mnist"] and "60,000" in rows["mnist"]
    assert rows["cifar10"].endswith("needs download") and "3x32x32" in rows["cifar10"]
    make_idx_files(Path(os.environ["ADVLIB_DATA"]), "MNIST")
    assert main(["list"]) == 0
    assert cli_rows(capsys.readouterr().out)["mnist"].endswith("cached")


def test_cli_fetch_offline(capsys):
    assert main(["fetch", "mnist"]) != 0
    out, err = capsys.readouterr()
    assert_helpful(err, "mnist", Path(os.environ["ADVLIB_DATA"]) / "MNIST")
    assert "Traceback" not in out + err


def test_cli_fetch_bundled_and_unknown(capsys):
    assert main(["fetch", "digits", "gunpoint"]) == 0
    assert capsys.readouterr().out.count("ships with its package") == 2
    assert main(["fetch", "nope"]) != 0
    assert "unknown data set 'nope'" in capsys.readouterr().err


def test_cli_fetch_verifies_the_cache(monkeypatch, capsys):
    cache = Path(os.environ["ADVLIB_DATA"])
    _, table = make_idx_files(cache, "MNIST")
    use_torchvision_checksums(monkeypatch, table)
    assert main(["fetch", "mnist"]) == 0
    assert "mnist: 4 files verified" in capsys.readouterr().out
    (cache / "MNIST/raw/t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    assert main(["fetch", "mnist"]) != 0
    assert "t10k-labels-idx1-ubyte.gz is corrupted" in capsys.readouterr().err


def test_cli_fetch_offline_in_a_subprocess(tmp_path):
    env = {**os.environ, "ADVLIB_OFFLINE": "1", "ADVLIB_DATA": str(tmp_path)}
    run = subprocess.run([sys.executable, "-m", "advlib.data", "fetch", "mnist"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    assert_helpful(run.stderr, "mnist", tmp_path / "MNIST")
