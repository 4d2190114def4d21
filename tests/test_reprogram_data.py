"""Part 3's new data, model and zoo entry: MNIST-1D generated offline (sizes, balance, determinism, the
caller's random state left alone), the breast-cancer split (sizes, stratified, disjoint, raw rows of
scikit-learn's table), the 1-D CNN for any series length, the shipped ``mnist1d-cnn`` checkpoint with
its recorded accuracy, and the black box's ``bounds`` for series."""
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import advlib
from advlib import zoo
from advlib.blackbox import BlackBox
from advlib.data import registry
from advlib.models import build
from advlib.train import accuracy


@pytest.fixture(scope="module")
def mnist1d():
    return {split: advlib.data.load("mnist1d", split) for split in ("train", "test")}


@pytest.fixture(scope="module")
def breast():
    return {split: advlib.data.load("breast-cancer", split) for split in ("train", "test")}


@pytest.fixture(scope="module")
def source():
    return zoo.load("mnist1d-cnn", "cpu")


# ------------------------------------------------------------------------------------------ MNIST-1D
def test_mnist1d_shapes_sizes_and_balanced_classes(mnist1d):
    spec = registry.SPECS["mnist1d"]
    assert spec.kind == "series" and spec.shape == (1, 320) and spec.n_classes == 10 and spec.offline
    counts = []
    for split, n in zip(("train", "test"), spec.sizes):
        ds = mnist1d[split]
        assert ds.x.shape == (n, 1, 320) and ds.x.dtype == torch.float32 and ds.y.dtype == torch.int64
        assert ds.classes == [str(c) for c in range(10)] and torch.isfinite(ds.x).all()
        c = torch.bincount(ds.y, minlength=10)
        assert len(c) == 10 and (c - n / 10).abs().max() <= 0.15 * n / 10  # each class near a tenth
        counts.append(c)
    assert spec.sizes == (4000, 1000)
    assert (counts[0] + counts[1]).tolist() == [500] * 10  # the generator makes 500 of each, then splits
    both = torch.cat([mnist1d["train"].x, mnist1d["test"].x])
    # standardised as a whole (not in [0, 1]: a series box needs bounds=None)
    assert abs(both.mean().item()) < 1e-3 and abs(both.std().item() - 1) < 1e-3 and both.min() < 0 and both.max() > 1
    # the train and test series are different series
    assert not (torch.cdist(mnist1d["test"].x[:50, 0], mnist1d["train"].x[:, 0]) < 1e-6).any()


def test_mnist1d_generation_is_deterministic_and_leaves_numpys_random_state(mnist1d):
    np.random.seed(1234)
    want = np.random.rand(3)  # what the caller's next draws are, undisturbed
    np.random.seed(1234)
    again = registry._mnist1d.__wrapped__()  # generate anew, past the cache (the package seeds numpy itself)
    assert np.array_equal(np.random.rand(3), want)
    for key, split in (("x", "train"), ("x_test", "test")):
        assert np.array_equal(np.asarray(again[key], dtype=np.float32)[:, None], mnist1d[split].x.numpy())
    assert np.array_equal(again["y"], mnist1d["train"].y.numpy()) and np.array_equal(again["y_test"],
                                                                                       mnist1d["test"].y.numpy())


def test_a_loaded_mnist1d_split_is_the_callers_own():
    """The generated set is cached; changing one load in place (relabelling, poisoning) must not reach the next."""
    first = advlib.data.load("mnist1d", "test")
    x0, y0 = first.x[:5].clone(), first.y[:5].clone()
    first.x[:5] += 100.0
    first.y[:5] = (first.y[:5] + 1) % 10
    second = advlib.data.load("mnist1d", "test")
    assert torch.equal(second.x[:5], x0) and torch.equal(second.y[:5], y0)


# ------------------------------------------------------------------------------------------ breast cancer
def test_breast_cancer_split_is_stratified_disjoint_and_raw(breast):
    from sklearn.datasets import load_breast_cancer

    full = load_breast_cancer()
    x, y = full.data.astype(np.float32), full.target
    assert len({r.tobytes() for r in x}) == len(x)  # no duplicate rows: rows identify the points
    label = {r.tobytes(): int(c) for r, c in zip(x, y)}
    spec = registry.SPECS["breast-cancer"]
    assert spec.kind == "table" and spec.shape == (30,) and spec.sizes == (398, 171) and spec.offline
    rows = {}
    for split, n in zip(("train", "test"), spec.sizes):
        ds = breast[split]
        assert ds.x.shape == (n, 30) and ds.x.dtype == torch.float32 and ds.classes == list(full.target_names)
        rows[split] = [r.tobytes() for r in ds.x.numpy()]
        assert all(label[r] == int(c) for r, c in zip(rows[split], ds.y))  # raw scikit-learn rows, their labels
    assert not set(rows["train"]) & set(rows["test"])  # disjoint ...
    assert len(rows["train"]) + len(rows["test"]) == len(x) and set(rows["train"]) | set(rows["test"]) == set(label)
    # ... and stratified: 30 % of each class held out
    per_class = np.bincount(y)
    assert breast["test"].y.bincount().tolist() == [int(round(0.3 * c)) for c in per_class] == [64, 107]
    assert breast["train"].y.bincount().tolist() == (per_class - [64, 107]).tolist()
    # the split is fixed: the same indices every time, and a different seed gives another split
    a, b = registry.stratified_split(y, 0.3, 0), registry.stratified_split(y, 0.3, 0)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(registry.stratified_split(y, 0.3, 1)[1], a[1])
    assert np.array_equal(x[a[1]], breast["test"].x.numpy())


# ------------------------------------------------------------------------------------------ cnn1d
@pytest.mark.parametrize("in_shape", [(1, 320), (1, 150), (1, 7), (3, 57)])
def test_cnn1d_builds_for_any_length(in_shape):
    torch.manual_seed(0)
    model = build("cnn1d", in_shape=in_shape, channels=(4, 8), kernel=5, n_classes=6).eval()
    assert model.in_shape == in_shape
    out = model(torch.randn(5, *in_shape))
    assert out.shape == (5, 6) and torch.isfinite(out).all()
    assert sum(isinstance(m, torch.nn.Conv1d) for m in model) == 2


def test_cnn1d_normalises_per_channel_and_has_the_shipped_size():
    mean, std = [1.0, -2.0, 0.5], [2.0, 0.5, 4.0]
    model = build("cnn1d", in_shape=(3, 20), mean=mean, std=std)
    x = torch.randn(2, 3, 20)
    want = (x - torch.tensor(mean)[:, None]) / torch.tensor(std)[:, None]
    assert torch.allclose(model[0](x), want)
    default = build("cnn1d")
    assert default.in_shape == (1, 320) and default(torch.rand(2, 1, 320)).shape == (2, 10)
    # 3 conv layers (kernel 5, 1 -> 16 -> 32 -> 64) and the 64-64-10 head, weights and biases
    by_hand = (1 * 16 + 16 * 32 + 32 * 64) * 5 + 16 + 32 + 64 + 64 * 64 + 64 + 64 * 10 + 10
    assert sum(p.numel() for p in default.parameters()) == by_hand
    assert sum(v.numel() for v in default.state_dict().values()) == zoo.manifest()["mnist1d-cnn"]["parameters"]
    with pytest.raises(ValueError, match="positive std"):
        build("cnn1d", in_shape=(1, 20), mean=[0.0], std=[0.0])


# ------------------------------------------------------------------------------------------ the zoo entry
def test_mnist1d_cnn_loads_with_its_recorded_accuracy(source, mnist1d):
    rec = zoo.manifest()["mnist1d-cnn"]
    assert zoo.sha256(zoo.weights_dir() / rec["file"]) == rec["sha256"]
    assert rec["recipe"]["dataset"] == "mnist1d" and rec["recipe"]["arch"] == "cnn1d"
    assert not source.training and source.in_shape == (1, 320)
    test = mnist1d["test"]
    assert source(test.x[:3]).shape == (3, 10)
    acc = accuracy(source, test.x, test.y)
    assert acc == pytest.approx(rec["test_accuracy"], abs=1e-3)
    assert acc > 0.9  # a useful source model, far above chance


def test_a_tampered_mnist1d_cnn_is_refused(tmp_path, monkeypatch):
    rec = zoo.manifest()["mnist1d-cnn"]
    (tmp_path / "w").mkdir()
    for name in ("manifest.json", rec["file"]):
        shutil.copy(zoo.weights_dir() / name, tmp_path / "w" / name)
    monkeypatch.setattr(zoo, "weights_dir", lambda: tmp_path / "w")
    path = tmp_path / "w" / rec["file"]
    assert zoo.load("mnist1d-cnn", "cpu").in_shape == (1, 320)  # the copy loads
    state = load_file(str(path))
    key = next(k for k in state if k.endswith("weight"))
    state[key].view(-1)[0] += 1.0
    save_file(state, str(path), metadata={"name": "mnist1d-cnn", "version": "1", "arch": "cnn1d",
                                          "arch_kwargs": json.dumps(rec["recipe"]["arch_kwargs"])})
    with pytest.raises(ValueError, match="SHA-256"):
        zoo.load("mnist1d-cnn", "cpu")


# ------------------------------------------------------------------------------------------ BlackBox bounds
def test_black_box_bounds_for_series(source, mnist1d):
    x = mnist1d["test"].x[:20]
    assert x.min() < 0 and x.max() > 1
    box = BlackBox(source, "scores", bounds=None)
    p = box(x)
    assert torch.allclose(p, torch.softmax(source(x), 1), atol=1e-6) and box.queries == 20
    bad = x.clone()
    bad[3, 0, 7] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        box(bad)
    bad[3, 0, 7] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        box(bad)
    assert box.queries == 20  # refused inputs are not queries
    with pytest.raises(ValueError, match="must lie in"):
        BlackBox(source)(x)  # the default box is for images in [0, 1]
    wide = BlackBox(source, bounds=(-10.0, 10.0))
    assert torch.allclose(wide(x), p)
    with pytest.raises(ValueError):
        wide(x * 10)
    for bounds in ((1.0, 0.0), (0.0,)):
        with pytest.raises(ValueError, match="bounds"):
            BlackBox(source, bounds=bounds)
