"""A population of clean and Trojan models, for judging Trojan detectors on models they never saw.

Every member is the same small CNN trained on the same training split (the digits at MNIST's
28x28 in the fast profile, MNIST in the full one) with its own seed; a Trojan member was trained on
a BadNets-poisoned copy (10 % of the inputs stamped and relabelled to its target) with a trigger
drawn from its seed: a 3x3 or 4x4 patch, checker / solid / random binary, anywhere in the image,
any target. The splits keep the evaluation honest:

- ``"calibration"``: clean models only; a detector's threshold is chosen on them;
- ``"development"``: Trojan models for designing a detector (its statistic and budgets);
- ``"held-out"``: clean and Trojan models used only to report how detectors judge them.

``python -m advlib.backdoor population`` trains the population of a data set (seeded) and writes
safetensors with a manifest; the digits population ships inside the package, others are cached.
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .. import data as _data
from ..models import build
from ..runtime import device as _default_device
from ..runtime import seed_everything
from ..train import fit
from .poison import Trigger, backdoor_metrics, patch_trigger, poison

__all__ = ["Member", "MEMBERS", "SPLITS", "population", "train_member", "population_dir", "ARCH", "DETECTORS",
           "detect", "detections"]

#: the members' architecture (arguments of :func:`advlib.models.build`, ``in_shape`` from the data)
ARCH = {"arch": "cnn", "channels": (8, 16), "strides": (2, 2), "hidden": 32}
#: training recipe of every member
RECIPE = {"epochs": 40, "lr": 2e-3, "batch_size": 64, "weight_decay": 1e-4, "rate": 0.1}
#: split -> (first seed, number of clean members, number of Trojan members)
SPLITS = {"calibration": (1000, 10, 0), "development": (2000, 0, 6), "held-out": (3000, 12, 12)}


@dataclass(frozen=True)
class Member:
    """One model of the population: its seed, whether (and how) it was poisoned."""

    name: str
    split: str
    seed: int
    trojan: bool
    dataset: str = "digits28"

    @property
    def target(self) -> int | None:
        return int(torch.randint(10, (1,), generator=self._rng(1)).item()) if self.trojan else None

    @property
    def trigger(self) -> Trigger | None:
        """The trigger drawn from the member's seed (``None`` for a clean member)."""
        if not self.trojan:
            return None
        g = self._rng(2)
        shape = _shape(self.dataset)
        size = int(torch.randint(3, 5, (1,), generator=g))
        r, c = (int(torch.randint(0, shape[-2] - size + 1, (1,), generator=g)),
                int(torch.randint(0, shape[-1] - size + 1, (1,), generator=g)))
        kind = ["checker", "solid", "random"][int(torch.randint(3, (1,), generator=g))]
        if kind == "random":
            tile = (torch.rand(size, size, generator=g) > 0.5).float()
            tile[0, 0] = 1.0  # never an all-black patch
            return patch_trigger(shape, size, (r, c), tile, name="random")
        return patch_trigger(shape, size, (r, c), kind)

    def _rng(self, stream: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 10 + stream)

    @property
    def filename(self) -> str:
        return f"{self.name}.safetensors"

    def load(self, device=None) -> nn.Module:
        """The member's model in eval mode on ``device`` (default :func:`advlib.device`)."""
        path = population_dir(self.dataset) / self.filename
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; make the population with: "
                                    f"python -m advlib.backdoor population --dataset {self.dataset}")
        state = load_file(str(path))
        model = _build(self.dataset, state["0.mean"].flatten().tolist(), state["0.std"].flatten().tolist())
        model.load_state_dict(state)
        return model.to(device if device is not None else _default_device()).eval()


@functools.cache
def _shape(dataset: str) -> tuple[int, ...]:
    return tuple(_data.load(dataset, "test").x.shape[1:])


def _build(dataset: str, mean, std) -> nn.Sequential:
    shape = _shape(dataset)
    kw = {k: v for k, v in ARCH.items() if k != "arch"}
    return build(ARCH["arch"], in_shape=shape, mean=mean, std=std, **kw)


def _members(dataset: str) -> list[Member]:
    out = []
    for split, (s0, n_clean, n_trojan) in SPLITS.items():
        for i in range(n_clean + n_trojan):
            trojan = i >= n_clean
            out.append(Member(f"{dataset}-{split}-{'trojan' if trojan else 'clean'}-{i:02d}", split, s0 + i,
                              trojan, dataset))
    return out


MEMBERS: list[Member] = _members("digits28")


def population_dir(dataset: str = "digits28") -> Path:
    """Where a population's weights live: inside the package for the digits, else the zoo cache."""
    if dataset == "digits28":
        return Path(__file__).resolve().parent / "weights"
    env = os.environ.get("ADVLIB_ZOO")
    return (Path(env).expanduser() if env else _data.cache_dir() / "zoo") / f"population-{dataset}"


def population(split: str = "held-out", dataset: str = "digits28", limit: int | None = None) -> list[Member]:
    """The members of a split (``"calibration"``, ``"development"``, ``"held-out"`` or ``"all"``);
    with ``limit``, only the first ``limit`` clean and ``limit`` Trojan members of each split (the
    profiles' ``population_limit``: a toy-size run trains and judges a few)."""
    if split != "all" and split not in SPLITS:
        raise ValueError(f"population: split must be one of {sorted(SPLITS)} or 'all', got {split!r}")
    if limit is not None and (int(limit) != limit or limit < 1):
        raise ValueError(f"population: limit must be a positive integer or None, got {limit!r}")
    members = MEMBERS if dataset == "digits28" else _members(dataset)
    out, seen = [], {}
    for m in members:
        key = (m.split, m.trojan)
        seen[key] = seen.get(key, 0) + 1
        if split in ("all", m.split) and (limit is None or seen[key] <= limit):
            out.append(m)
    return out


def train_member(m: Member, *, device=None, progress: bool = False) -> tuple[nn.Module, dict]:
    """Train one member from its seed; returns the model and its clean accuracy / ASR on the test split."""
    dev = torch.device(device) if device is not None else _default_device()
    seed_everything(m.seed)
    tr, te = _data.load(m.dataset, "train"), _data.load(m.dataset, "test")
    dims = [0] + list(range(2, tr.x.dim()))
    model = _build(m.dataset, tr.x.mean(dims).tolist(), tr.x.std(dims).tolist()).to(dev)
    train_set = poison(tr, m.trigger, target=m.target, rate=RECIPE["rate"], seed=m.seed).dataset if m.trojan else tr
    fit(model, train_set, epochs=RECIPE["epochs"], lr=RECIPE["lr"], batch_size=RECIPE["batch_size"],
        weight_decay=RECIPE["weight_decay"], seed=m.seed, device=dev, progress=progress)
    probe = m.trigger if m.trojan else patch_trigger(tuple(tr.x.shape[1:]), 3)
    metrics = backdoor_metrics(model, te, probe, m.target if m.trojan else 0)
    return model, metrics


def write(members: list[Member], out: Path | None = None, progress: bool = True) -> dict:
    """Train ``members`` and write their safetensors and a manifest (clean accuracy, ASR) to ``out``."""
    from tqdm.auto import tqdm

    out = Path(out) if out is not None else population_dir(members[0].dataset)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "manifest.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    for m in tqdm(members, desc="population", disable=not progress):
        model, metrics = train_member(m)
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(out / m.filename), metadata={"name": m.name, "seed": str(m.seed),
                                                          "trojan": str(m.trojan), "torch": torch.__version__})
        record[m.name] = {"split": m.split, "seed": m.seed, "trojan": m.trojan, "target": m.target,
                          "trigger": m.trigger.name if m.trojan else None,
                          "clean": round(metrics["clean"], 4), "asr": round(metrics["asr"], 4)}
        path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return record


def _detectors() -> dict:
    from .cleanse import neural_cleanse
    from .tnd import df_tnd, dl_tnd
    return {"DL-TND": lambda m, d: dl_tnd(m, d), "Neural Cleanse": lambda m, d: neural_cleanse(m, d),
            "DF-TND": lambda m, d: df_tnd(m)}


#: the detectors the population is judged with, at their default settings (one clean sample per class)
DETECTORS = ("DL-TND", "Neural Cleanse", "DF-TND")


def detect(members: list[Member], out: Path | None = None, progress: bool = True) -> dict:
    """Run every detector of :data:`DETECTORS` at its defaults on every member, with the first
    clean test sample of each class, and write their statistics and costs to ``detections.json``
    next to the weights (what a lecture reads instead of spending minutes re-running them)."""
    from tqdm.auto import tqdm

    out = Path(out) if out is not None else population_dir(members[0].dataset)
    path = out / "detections.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    te = _data.load(members[0].dataset, "test")
    run = _detectors()
    for m in tqdm(members, desc="detect", disable=not progress):
        model = m.load("cpu")
        record[m.name] = {}
        for name in DETECTORS:
            d = run[name](model, te)
            record[m.name][name] = {"score": d.score, "target": d.target, "per_label": d.per_label.tolist(),
                                    "seconds": round(d.seconds, 3), "forwards": d.forwards,
                                    "backwards": d.backwards, "samples": d.samples}
        path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return record


def detections(dataset: str = "digits28") -> dict:
    """The recorded detector results of a population (``python -m advlib.backdoor detect`` writes
    them): member name -> detector -> score, target, per-label statistics, seconds, forwards,
    backwards, samples."""
    path = population_dir(dataset) / "detections.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; make it with: "
                                f"python -m advlib.backdoor detect --dataset {dataset}")
    return json.loads(path.read_text())
