"""The experiments behind the lecture's tables, one function per row, and their shipped records.

:func:`experiment` runs one method on one target task (one seed, one training-set size) and returns its
rows; :func:`run_records` runs the whole protocol (:data:`PROTOCOL`) and writes ``records.json`` next to
this file (``python -m advlib.reprogram records``); :func:`records` reads it and :func:`summary` gives
mean and spread over seeds. The lecture runs seed 0 of the main rows live and checks them against the
records.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from .. import zoo
from ..blackbox import BlackBox
from ..runtime import device as _default_device
from ..train import accuracy
from ._common import initial_mapping
from .ar import ar
from .bar import bar
from .baselines import classical, linear_probe, scratch
from .program import Program
from .tasks import TASKS, task

__all__ = ["SETTINGS", "PROTOCOL", "experiment", "run_records", "records", "summary", "records_path"]

#: the training settings of every run (V2S: Adam lr 0.05, batches of 32; BAR: beta 0.1, ZO-Adam)
SETTINGS = {"epochs": 200, "lr": 0.05, "batch_size": 32, "beta": 0.1, "mask": "all",
            "scratch_epochs": 200, "scratch_lr": 2e-3, "scratch_batch_size": 16}

#: (task, shots per class or None for the whole training split, method, options); each for seeds 0, 1, 2
PROTOCOL: list[tuple[str, int | None, str, dict]] = (
    [(t, 10, m, o) for t in TASKS for m, o in [
        ("scratch", {}), ("linear-probe", {}), ("classical", {}), ("ar", {}), ("ar", {"mapping": "random"}),
        ("ar", {"mapping": "one-to-one"}), ("ar", {"loss": "focal"}), ("bar", {"q": 1}), ("bar", {"q": 5}),
        ("bar", {"q": 10})]]
    + [(t, 5, m, o) for t in TASKS for m, o in [("scratch", {}), ("classical", {}), ("ar", {}), ("bar", {"q": 5})]]
    + [(t, None, m, o) for t in ("gunpoint", "coffee") for m, o in [
        ("scratch", {}), ("linear-probe", {}), ("classical", {}), ("ar", {}), ("bar", {"q": 5})]])
SEEDS = (0, 1, 2)


def records_path() -> Path:
    return Path(__file__).resolve().parent / "records.json"


def experiment(name: str, method: str, *, shots: int | None = 10, seed: int = 0, mapping: str = "frequency",
               loss: str = "ce", q: int = 5, epochs: int | None = None, image_source: str = "digits-cnn",
               series_source: str = "mnist1d-cnn",
               device=None) -> list[dict]:
    """One method on one target task: ``"scratch"``, ``"linear-probe"``, ``"classical"`` (one row per
    classical classifier), ``"ar"`` (V2S on series) or ``"bar"`` (``q`` directions). Each row: task,
    shots, seed, method, its options, test accuracy, queries (BAR) and seconds."""
    dev = torch.device(device) if device is not None else _default_device()
    t = task(name, shots=shots, seed=seed, image_source=image_source, series_source=series_source, device=dev)
    model = zoo.load(t.source, device=dev)
    x, y, xt, yt = t.train.x, t.train.y, t.test.x, t.test.y
    program = Program(model.in_shape, x.shape[1:], form=t.form, mask=SETTINGS["mask"], seed=seed).to(dev)
    base = {"task": name, "shots": shots, "seed": seed, "method": method, "source": t.source}
    s = dict(SETTINGS) if epochs is None else dict(SETTINGS, epochs=epochs, scratch_epochs=epochs)
    t0 = time.perf_counter()
    if method == "classical":
        return [dict(base, method=k, accuracy=v, seconds=time.perf_counter() - t0)
                for k, v in classical(t.train, t.test).items()]
    if method == "scratch":
        m = scratch(t.source, program.place(x), y, t.n_classes, epochs=s["scratch_epochs"], lr=s["scratch_lr"],
                    batch_size=s["scratch_batch_size"], seed=seed)
        return [dict(base, accuracy=accuracy(m, program.place(xt), yt), seconds=time.perf_counter() - t0)]
    if method == "linear-probe":
        return [dict(base, accuracy=linear_probe(model, program.place(x), y, program.place(xt), yt),
                     seconds=time.perf_counter() - t0)]
    opts = {"mapping": mapping, "loss": loss}
    if method == "ar":
        labels = initial_mapping(model, program, x, y, t.n_classes, kind=mapping, seed=seed)
        rep = ar(model, program, labels, x, y, epochs=s["epochs"], lr=s["lr"], batch_size=s["batch_size"],
                 loss=loss, seed=seed)
        return [dict(base, **opts, accuracy=rep.accuracy(xt, yt), seconds=time.perf_counter() - t0)]
    if method == "bar":
        box = BlackBox(model, "scores", bounds=(0.0, 1.0) if t.form == "tanh" else None)
        labels = initial_mapping(box, program, x, y, t.n_classes, kind=mapping, seed=seed)
        rep = bar(box, program, labels, x, y, epochs=s["epochs"], lr=s["lr"], batch_size=s["batch_size"], q=q,
                  beta=s["beta"], loss=loss, seed=seed)
        used = box.queries  # the initial mapping's and the training's; the test queries below are not training
        seconds = time.perf_counter() - t0
        return [dict(base, **opts, q=q, accuracy=rep.accuracy(xt, yt), queries=used, seconds=seconds)]
    raise ValueError(f"experiment: method must be scratch, linear-probe, classical, ar or bar, got {method!r}")


def run_records(path: Path | None = None, *, seeds=SEEDS, protocol=None, progress: bool = True) -> list[dict]:
    """Run the protocol for every seed and write the rows (JSON) to ``path`` (default: the package's)."""
    from tqdm.auto import tqdm

    jobs = [(t, shots, m, o, s) for t, shots, m, o in (protocol or PROTOCOL) for s in seeds]
    rows = []
    for t, shots, m, o, s in tqdm(jobs, desc="records", disable=not progress):
        rows += experiment(t, m, shots=shots, seed=s, **o)
    out = Path(path) if path is not None else records_path()
    out.write_text(json.dumps({"settings": SETTINGS, "torch": torch.__version__, "rows": rows}, indent=1))
    return rows


def records(path: Path | None = None) -> list[dict]:
    """The shipped rows (:func:`run_records`)."""
    p = Path(path) if path is not None else records_path()
    if not p.exists():
        raise FileNotFoundError(f"{p} is missing; make it with: python -m advlib.reprogram records")
    return json.loads(p.read_text())["rows"]


def _key(r: dict) -> tuple:
    return (r["method"], r.get("mapping", ""), r.get("loss", ""), r.get("q", ""))


def summary(rows: list[dict], name: str, shots: int | None) -> list[dict]:
    """Per method and options on task ``name`` at ``shots``: mean and standard deviation of the test
    accuracy over seeds, the number of seeds, and the mean queries (BAR)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["task"] == name and r["shots"] == shots:
            groups.setdefault(_key(r), []).append(r)
    out = []
    for key, rs in groups.items():
        acc = np.array([r["accuracy"] for r in rs])
        row = {"method": key[0], "mapping": key[1], "loss": key[2], "q": key[3], "mean": float(acc.mean()),
               "std": float(acc.std()), "seeds": len(rs)}
        if "queries" in rs[0]:
            row["queries"] = float(np.mean([r["queries"] for r in rs]))
        out.append(row)
    return out
