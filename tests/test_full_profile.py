"""The full profile (MNIST at 28x28, the ``mnist-*`` zoo entries), exercised end to end at toy size.

An instructor with a GPU runs ``ADVLIB_PROFILE=full``; this file runs the same code paths on a CPU:

1. it writes tiny MNIST and Fashion-MNIST caches in the real IDX format (``toy_datasets.py``) with an
   md5 table for ``$ADVLIB_CHECKSUMS`` (they are not torchvision's files, and verification stays on);
2. it trains the zoo entries the full profile names, once per session, with the project's own
   command ``python -m advlib.zoo train NAME`` into a temporary zoo cache;
3. it executes every lecture top to bottom with ``ADVLIB_PROFILE=full ADVLIB_SIZE=toy`` (the full
   profile's data set, models, image size and radii; capped budgets), from its MyST source.

A lecture that would crash on 28x28 inputs or on a missing ``mnist-*`` entry fails here. So does
one that quietly trains a zoo entry itself, or that runs in another profile than the one asked for.
"""
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import numpy as np
import pytest
import torch
import torchvision
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

import advlib
from advlib import data, zoo
from advlib.data import DatasetUnavailable, downloads
from advlib.data.__main__ import main as data_cli
from advlib.profiles import SIZES
from advlib.train import accuracy

sys.path.insert(0, str(Path(__file__).resolve().parent))
import toy_datasets  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LECTURES = sorted(REPO.glob("lectures/[0-9][0-9]_*.md"))
FULL_TOY = advlib.profile("full", "toy")
ZOO_NAMES = list(dict.fromkeys([*FULL_TOY.models, *FULL_TOY.robust_models.values(), *FULL_TOY.blackbox_models,
                                 *FULL_TOY.defense_models.values(), FULL_TOY.reprogram_source]))
#: the clean test accuracy each on-demand entry must reach on the toy MNIST (500 test digits). The
#: defenses train at MNIST's eps 0.3 on 1,297 toy images: PGD training (ramped) reaches 0.59 there
#: (10 epochs are ~110 steps), far from what 60,000 real MNIST images give; the floor checks it learns.
FLOOR = {"mnist-cnn": 0.9, "mnist-mlp": 0.9, "mnist-mlp-pgd": 0.85, "mnist-mlp-ibp": 0.8,
         "mnist-cnn-pgd": 0.5, "mnist-cnn-trades": 0.85, "mnist-cnn-sprout": 0.85, "mnist-cnn-cat": 0.85}


# === the profile at toy size ====================================================================
def test_toy_size_caps_budgets_and_keeps_what_runs():
    full, toy = advlib.PROFILES["full"], advlib.profile("full", "toy")
    assert (toy.name, toy.size, full.size) == ("full", "toy", "standard")
    for f in ("dataset", "models", "robust_models", "series", "eps_grid", "seed", "blackbox_dataset", "blackbox_models",
              "query_budgets", "defense_models", "defense_eps", "backdoor_dataset", "trusted_sizes"):
        assert getattr(toy, f) == getattr(full, f), f
    for f, cap in SIZES["toy"].items():
        assert getattr(toy, f) == min(cap, getattr(full, f)) < getattr(full, f), f
    assert "Profile 'full' (toy size)" in str(toy)
    for f in ("n_eval", "attack_steps", "smoothing_samples", "robust_models", "size"):
        assert f in str(toy)


def test_size_from_the_environment_and_bad_sizes(monkeypatch):
    monkeypatch.setenv("ADVLIB_PROFILE", "full")
    monkeypatch.setenv("ADVLIB_SIZE", "toy")
    assert advlib.profile() == FULL_TOY
    assert advlib.profile(size="standard") == advlib.PROFILES["full"]  # an explicit size wins
    assert advlib.profile("fast").n_eval == SIZES["toy"]["n_eval"]  # any profile can be made toy
    monkeypatch.setenv("ADVLIB_SIZE", "huge")
    with pytest.raises(ValueError, match=r"unknown size 'huge' \(from ADVLIB_SIZE\).*\['standard', 'toy'\]"):
        advlib.profile()
    monkeypatch.delenv("ADVLIB_SIZE")
    assert advlib.profile() == advlib.PROFILES["full"]


@pytest.mark.parametrize("name", sorted(advlib.PROFILES))
def test_every_model_a_profile_names_is_in_the_zoo_on_its_data(name):
    p = advlib.PROFILES[name]
    assert set(p.robust_models) == {"pgd", "ibp"}
    for model in (*p.models, *p.robust_models.values()):
        assert zoo.ENTRIES[model].dataset == p.dataset, model
    for model in p.blackbox_models:
        assert zoo.ENTRIES[model].dataset == p.blackbox_dataset, model
    assert zoo.ENTRIES[p.reprogram_source].dataset == p.dataset  # Part 3's image source, on the profile's data
    assert zoo.ENTRIES[p.series_source].arch == "cnn1d" and zoo.ENTRIES[p.series_source].shipped  # offline anywhere
    for recipe, model in p.robust_models.items():
        e, mlp = zoo.ENTRIES[model], zoo.ENTRIES[p.models[-1]]
        assert e.robust == recipe and (e.arch, e.arch_kwargs) == (mlp.arch, mlp.arch_kwargs)


# === the toy files: real formats, verified ========================================================
@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    """A cache folder with the toy MNIST and Fashion-MNIST, and the md5 table that vouches for them."""
    root = tmp_path_factory.mktemp("toy-data")
    return root, toy_datasets.write_toy_cache(root)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("ADVLIB_OFFLINE", "1")
    monkeypatch.setenv("ADVLIB_DATA", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("ADVLIB_CHECKSUMS", raising=False)


@pytest.mark.parametrize("name, tv_class, n", [("mnist", "MNIST", (1297, 500)),
                                               ("fashion-mnist", "FashionMNIST", toy_datasets.FASHION_SIZES)])
def test_toy_files_are_read_like_the_real_ones(toy_data, offline, monkeypatch, name, tv_class, n):
    root, table = toy_data
    monkeypatch.setenv("ADVLIB_CHECKSUMS", str(table))
    for split, size in zip(("train", "test"), n):
        ds = data.load(name, split, root=root)
        assert ds.x.shape == (size, 1, 28, 28) and ds.x.dtype == torch.float32 and ds.y.dtype == torch.int64
        assert ds.x.min() == 0 and ds.x.max() == 1 and sorted(set(ds.y.tolist())) == list(range(10))
        # torchvision's own reader (of the unpacked copies) sees the same images and labels
        tv = getattr(torchvision.datasets, tv_class)(str(root), train=split == "train", download=False)
        np.testing.assert_array_equal((ds.x[:, 0].numpy() * 255).round().astype(np.uint8), tv.data.numpy())
        np.testing.assert_array_equal(ds.y.numpy(), tv.targets.numpy())
        assert ds.classes == ([str(c) for c in range(10)] if name == "mnist" else tv.classes)
    mnist = data.load("mnist", "test", root=root)
    digits = data.load("digits28", "test")
    assert torch.equal(mnist.y, digits.y) and (mnist.x - digits.x).abs().max() <= 0.5 / 255 + 1e-6  # real digits


def test_toy_files_are_not_torchvisions_and_are_refused_without_a_table(toy_data, offline):
    root, _ = toy_data
    with pytest.raises(DatasetUnavailable, match="corrupted.*md5 from torchvision.datasets.MNIST"):
        data.load("mnist", "test", root=root)


def test_a_table_vouches_only_for_the_bytes_it_lists(toy_data, offline, monkeypatch, tmp_path):
    root, table = toy_data
    copy = tmp_path / "cache"
    for f in (root / "MNIST/raw").glob("*.gz"):
        (copy / "MNIST/raw").mkdir(parents=True, exist_ok=True)
        (copy / "MNIST/raw" / f.name).write_bytes(f.read_bytes())
    monkeypatch.setenv("ADVLIB_CHECKSUMS", str(table))
    assert len(data.load("mnist", "test", root=copy)) == 500
    bad = copy / "MNIST/raw/t10k-labels-idx1-ubyte.gz"
    raw = bytearray(bad.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad.write_bytes(bytes(raw))
    with pytest.raises(DatasetUnavailable, match=f"{bad} is corrupted.*md5 from ADVLIB_CHECKSUMS={table}"):
        data.load("mnist", "test", root=copy)
    # a table with absolute paths, as `md5sum /abs/path/*.gz` writes it, works too; one that vouches
    # for a broken file gets it past the md5 check, but not past the reader
    absolute = tmp_path / "absolute.md5"
    absolute.write_text("".join(f"{hashlib.md5(f.read_bytes()).hexdigest()} *{f.resolve()}\n"
                                for f in (copy / "MNIST/raw").glob("*.gz")))
    monkeypatch.setenv("ADVLIB_CHECKSUMS", str(absolute))
    with pytest.raises(DatasetUnavailable, match="cannot be read"):
        data.load("mnist", "test", root=copy)
    assert len(data.load("mnist", "train", root=copy)) == 1297


def test_a_bad_table_is_named(offline, monkeypatch, tmp_path):
    monkeypatch.setenv("ADVLIB_CHECKSUMS", str(tmp_path / "nope.md5"))
    with pytest.raises(DatasetUnavailable, match="nope.md5: no such file.*unset ADVLIB_CHECKSUMS"):
        downloads.local_checksums()
    (tmp_path / "bad.md5").write_text("# fine\n\nabc123  MNIST/raw/x.gz\n")
    monkeypatch.setenv("ADVLIB_CHECKSUMS", str(tmp_path / "bad.md5"))
    with pytest.raises(DatasetUnavailable, match=r"bad.md5, line 3: expected '<md5>  <path>'"):
        downloads.local_checksums()


def test_the_list_command_says_which_table_vouches(toy_data, offline, monkeypatch, capsys):
    root, table = toy_data
    monkeypatch.setenv("ADVLIB_CHECKSUMS", str(table))
    assert data_cli(["list", "--root", str(root)]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert rows["mnist"].endswith("cached, md5 from $ADVLIB_CHECKSUMS")
    assert rows["fashion-mnist"].endswith("cached, md5 from $ADVLIB_CHECKSUMS")
    assert rows["cifar10"].endswith("needs download")


# === the zoo entries of the full profile, trained once by the project's command =================
@pytest.fixture(scope="module")
def full_toy_env(toy_data, tmp_path_factory):
    """The environment of a full-profile toy run, with its zoo entries trained (once) into its cache."""
    root, table = toy_data
    env = {"ADVLIB_PROFILE": "full", "ADVLIB_SIZE": "toy", "ADVLIB_DATA": str(root),
           "ADVLIB_ZOO": str(tmp_path_factory.mktemp("toy-zoo")), "ADVLIB_CHECKSUMS": str(table),
           "ADVLIB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    for name in ZOO_NAMES:
        run = subprocess.run([sys.executable, "-m", "advlib.zoo", "train", name], cwd=REPO,
                             env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, f"python -m advlib.zoo train {name} failed:\n{run.stderr[-3000:]}"
    # the Trojan population of the full profile (MNIST), as few members as the toy size uses, and
    # the detectors' records of it: the project's own commands, as an instructor runs them
    limit = str(FULL_TOY.population_limit)
    for command in ("population", "detect"):
        run = subprocess.run([sys.executable, "-m", "advlib.backdoor", command, "--dataset", FULL_TOY.backdoor_dataset,
                              "--limit", limit], cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True,
                             timeout=900)
        assert run.returncode == 0, f"python -m advlib.backdoor {command} failed:\n{run.stderr[-3000:]}"
    return env


def test_full_profile_entries_are_trained_into_the_cache(full_toy_env, monkeypatch):
    for k, v in full_toy_env.items():
        monkeypatch.setenv(k, v)
    cache = Path(full_toy_env["ADVLIB_ZOO"])
    assert sorted(p.name for p in cache.iterdir() if p.is_file()) == sorted(zoo.ENTRIES[n].filename for n in ZOO_NAMES)
    members = advlib.backdoor.population("all", FULL_TOY.backdoor_dataset, FULL_TOY.population_limit)
    assert sorted(p.name for p in (cache / f"population-{FULL_TOY.backdoor_dataset}").glob("*.safetensors")) == \
        sorted(m.filename for m in members)
    test = data.load("mnist", "test")
    for name in ZOO_NAMES:
        model = zoo.load(name, "cpu", train_if_missing=False)
        assert accuracy(model, test.x, test.y) >= FLOOR[name], name


# === every lecture, full profile, toy size ======================================================
CHECK_CELL = """
import json as _json
print("FULL-TOY-CHECK " + _json.dumps({"profile": P.name, "size": P.size, "dataset": P.dataset}))
"""


def execute(path: Path, timeout: int = 600, allow_errors: bool = False) -> nbformat.NotebookNode:
    """Run a lecture's MyST source top to bottom in a fresh kernel, from lectures/ (as nbval does);
    with ``allow_errors`` a failing cell keeps its error output and the next cells still run."""
    nb = jupytext.read(path)
    nb.cells.append(nbformat.v4.new_code_cell(CHECK_CELL))
    NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=allow_errors,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


def errors(nb: nbformat.NotebookNode) -> list[tuple[str, str, str, str]]:
    """``(cell source, ename, evalue, traceback)`` of every cell that raised."""
    ansi = re.compile(r"\x1b\[[0-9;]*m")
    return [(c.source, o.ename, o.evalue, ansi.sub("", "\n".join(o.traceback)))
            for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]


#: lecture-side failures this test found in the full profile, reported and not fixed yet (a claim
#: the lecture asserts does not hold there): {lecture: (a line of the failing cell, the assertion's
#: message as a regular expression)}. The rest of such a lecture still runs and must not fail; the
#: lecture must fail with exactly that AssertionError in that cell, and once it runs through, this
#: test fails until its entry is removed.
KNOWN: dict[str, tuple[str, str]] = {
    # lecture stem -> (a snippet of the cell, a regex of its AssertionError): a lecture-side failure in
    # the full profile that is known and waits for its lecture to change; empty when every lecture runs
}


@pytest.mark.parametrize("path", LECTURES, ids=lambda p: p.stem)
def test_lecture_runs_in_the_full_profile_at_toy_size(path, full_toy_env, monkeypatch):
    for k, v in full_toy_env.items():
        monkeypatch.setenv(k, v)  # the kernel inherits the environment
    cache = Path(full_toy_env["ADVLIB_ZOO"])
    before = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    nb = execute(path, allow_errors=True)
    failed = errors(nb)
    after = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert after == before, "the lecture trained or rewrote a zoo entry: the session fixture trains them once"
    check = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    assert "FULL-TOY-CHECK " in check, "\n\n".join(tb for *_, tb in failed[:3])
    assert json.loads(check.split("FULL-TOY-CHECK ", 1)[1]) == {"profile": "full", "size": "toy", "dataset": "mnist"}
    known = KNOWN.get(path.stem)
    if known is None:
        assert not failed, "\n\n".join(tb for *_, tb in failed[:3])
    elif not failed:
        pytest.fail(f"{path.name} now runs through in the full profile: remove it from KNOWN")
    else:
        cell, message = known
        unexpected = [tb for source, ename, evalue, tb in failed
                      if not (ename == "AssertionError" and cell in source and re.fullmatch(message, evalue))]
        assert not unexpected, "\n\n".join(unexpected[:3])
        pytest.xfail(f"known lecture-side failure in the full profile (see KNOWN): {failed[0][2]}")


def test_full_profile_offline_without_files_fails_at_once_with_what_to_do(offline, monkeypatch, tmp_path):
    monkeypatch.setenv("ADVLIB_PROFILE", "full")
    monkeypatch.setenv("ADVLIB_ZOO", str(tmp_path / "zoo"))
    with pytest.raises(CellExecutionError) as e:
        execute(REPO / "lectures/00_introduction.md")
    message = str(e.value)
    assert "DatasetUnavailable" in message and "'mnist'" in message
    assert "python -m advlib.data fetch mnist" in message and str(tmp_path / "empty-cache") in message
    assert not (tmp_path / "zoo").exists()  # it failed before training anything
