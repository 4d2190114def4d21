"""The model zoo: shipped checkpoints load offline, fast, safely, and are reproducible."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import advlib
from advlib import zoo
from advlib.train import accuracy

FLOOR = {"digits-cnn": 0.97, "digits-mlp": 0.95, "digits-mlp-pgd": 0.95, "digits-mlp-ibp": 0.95}


@pytest.fixture(scope="module")
def test_split():
    return advlib.data.load("digits", "test")


@pytest.mark.parametrize("name", sorted(FLOOR))
def test_shipped_model_loads_in_eval_mode_with_its_accuracy(name, test_split):
    model = zoo.load(name, "cpu")
    assert not model.training
    assert next(model.parameters()).device.type == "cpu"
    acc = accuracy(model, test_split.x, test_split.y)
    assert acc >= FLOOR[name]
    assert acc == pytest.approx(zoo.manifest()[name]["test_accuracy"], abs=1e-4)


def test_manifest_matches_the_shipped_files():
    m = zoo.manifest()
    assert set(m) == {e.name for e in zoo.entries() if e.shipped}
    for name, rec in m.items():
        path = zoo.weights_dir() / rec["file"]
        assert zoo.sha256(path) == rec["sha256"]
        assert rec["recipe"] == json.loads(json.dumps(zoo.ENTRIES[name].recipe()))  # the recipe that made it


@pytest.mark.parametrize("name", sorted(FLOOR))
def test_retraining_reproduces_the_accuracy_within_one_point(name):
    model, acc = zoo.train(name, device="cpu", progress=False)
    assert abs(acc - zoo.manifest()[name]["test_accuracy"]) <= 0.01


def test_train_command_writes_a_loadable_checkpoint(tmp_path):
    out = subprocess.run([sys.executable, "-m", "advlib.zoo", "train", "digits-mlp", "--out", str(tmp_path)],
                         capture_output=True, text=True, check=True)
    assert "test accuracy" in out.stdout
    path = tmp_path / "digits-mlp-v1.safetensors"
    state = load_file(str(path))
    shipped = load_file(str(zoo.weights_dir() / "digits-mlp-v1.safetensors"))
    assert state.keys() == shipped.keys()
    assert json.loads(out.stdout.strip().splitlines()[-1])["test_accuracy"] >= FLOOR["digits-mlp"]


def test_corrupted_checkpoint_is_refused(tmp_path, monkeypatch):
    shutil.copytree(zoo.weights_dir(), tmp_path / "w")
    monkeypatch.setattr(zoo, "weights_dir", lambda: tmp_path / "w")
    path = tmp_path / "w" / "digits-mlp-v1.safetensors"
    state = load_file(str(path))
    state["2.weight"][0, 0] += 1.0  # a tampered weight, saved as a perfectly valid file
    save_file(state, str(path), metadata={"name": "digits-mlp", "version": "1", "arch": "mlp",
                                          "arch_kwargs": json.dumps({"in_shape": [1, 8, 8]})})
    with pytest.raises(ValueError, match="SHA-256"):
        zoo.load("digits-mlp", "cpu")
    path.unlink()
    with pytest.raises(FileNotFoundError, match="python -m advlib.zoo train digits-mlp"):
        zoo.load("digits-mlp", "cpu")


def test_unknown_entry_lists_the_zoo():
    with pytest.raises(ValueError, match="digits-cnn"):
        zoo.load("imagenet-vit")


def test_on_demand_entry_trains_once_then_loads_from_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVLIB_ZOO", str(tmp_path))
    quick = zoo.Entry("digits-tiny", 1, "digits", "mlp", {"in_shape": (1, 8, 8), "hidden": (16,)}, epochs=2)
    monkeypatch.setitem(zoo.ENTRIES, quick.name, quick)
    first = zoo.load("digits-tiny", "cpu", progress=False)
    assert (tmp_path / "digits-tiny-v1.safetensors").exists()
    monkeypatch.setattr(zoo, "train", lambda *a, **k: pytest.fail("a cached entry must not be retrained"))
    second = zoo.load("digits-tiny", "cpu")
    assert all(torch.equal(p, q) for p, q in zip(first.parameters(), second.parameters()))


def test_full_profile_entry_offline_fails_with_the_data_message(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVLIB_ZOO", str(tmp_path / "zoo"))
    monkeypatch.setenv("ADVLIB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("ADVLIB_OFFLINE", "1")
    with pytest.raises(advlib.data.DatasetUnavailable, match="python -m advlib.data fetch mnist"):
        zoo.load("mnist-cnn", "cpu")
    with pytest.raises(FileNotFoundError, match="python -m advlib.zoo train mnist-cnn"):
        zoo.load("mnist-cnn", "cpu", train_if_missing=False)


def test_loading_never_unpickles():
    src = "\n".join(p.read_text() for p in Path(zoo.__file__).parent.glob("*.py"))
    assert "pickle" not in src.replace("unpickles", "") and "torch.load" not in src


def test_list_and_check_commands():
    out = subprocess.run([sys.executable, "-m", "advlib.zoo", "list"], capture_output=True, text=True, check=True)
    assert "digits-cnn" in out.stdout and "shipped" in out.stdout and "cifar10-resnet" in out.stdout
    out = subprocess.run([sys.executable, "-m", "advlib.zoo", "check"], capture_output=True, text=True)
    verdicts = [ln.endswith(") ok") for ln in out.stdout.splitlines()]
    assert out.returncode == 0 and verdicts == [True] * len(zoo.manifest())


@pytest.mark.parametrize("name", ["mnist1d-cnn", "cifar10-resnet"])
def test_a_saved_checkpoint_reads_back_with_its_classes(name, tmp_path):
    """The reader takes the number of classes from the last top-level layer: right past ten layers
    (mnist1d-cnn's head is layer 11) and with blocks whose keys are not numbers (ResNet)."""
    e = zoo.ENTRIES[name]
    model = advlib.models.build(e.arch, n_classes=7, **e.arch_kwargs).eval()
    path = tmp_path / e.filename
    zoo.save(model, name, path, 0.0)
    back = zoo._read(path, e).eval()
    x = torch.rand(2, *model.in_shape)
    with torch.no_grad():
        assert back(x).shape == (2, 7)
        assert torch.equal(back(x), model(x))
