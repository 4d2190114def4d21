"""The model zoo: named, versioned checkpoints that this project trains with its own command.

``advlib.zoo.load("digits-cnn")`` returns the model in eval mode on :func:`advlib.device`.
Default-profile entries ship inside the package as safetensors (with their SHA-256 and test
accuracy in ``weights/manifest.json``); full-profile entries are trained on first use and cached.
Retrain any entry with ``python -m advlib.zoo train NAME`` (seeded, reproducible). Loading never
unpickles: a ``.pt`` / ``.pkl`` file can run arbitrary code when it is loaded, a safetensors file
holds nothing but tensors and text.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .. import data as _data
from ..models import build
from ..runtime import device as _default_device
from ..runtime import seed_everything
from ..train import accuracy, fit, random_crop_flip, random_shift, recipe

__all__ = ["Entry", "ENTRIES", "load", "train", "save", "entries", "weights_dir", "cache_dir", "manifest"]


@dataclass(frozen=True)
class Entry:
    """A zoo entry: the architecture, the data, and the whole training recipe."""

    name: str
    version: int
    dataset: str
    arch: str
    arch_kwargs: dict = field(default_factory=dict)
    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    optimizer: str = "adam"
    augment: str = ""  # "", "shift" (1-pixel shifts) or "crop-flip" (CIFAR)
    robust: str = ""  # a training recipe of advlib.train.RECIPES ("pgd", "ibp", ...), "" for standard training
    robust_kwargs: dict = field(default_factory=dict)  # its parameters, e.g. {"eps": 0.1}
    seed: int = 0
    shipped: bool = False
    description: str = ""

    @property
    def filename(self) -> str:
        return f"{self.name}-v{self.version}.safetensors"

    def recipe(self) -> dict:
        d = asdict(self)
        for k in ("name", "version", "shipped", "description"):
            d.pop(k)
        return d


ENTRIES: dict[str, Entry] = {e.name: e for e in [
    Entry("digits-mlp", 1, "digits", "mlp", {"in_shape": (1, 8, 8), "hidden": (100, 100)},
          epochs=40, lr=2e-3, batch_size=64, weight_decay=1e-4, shipped=True,
          description="MLP 64-100-100-10 (ReLU) on the 8x8 digits"),
    Entry("digits-cnn", 1, "digits", "cnn", {"in_shape": (1, 8, 8), "channels": (16, 32), "strides": (1, 2)},
          epochs=60, lr=2e-3, batch_size=64, weight_decay=1e-4, augment="shift", shipped=True,
          description="2 conv + 2 dense layers (ReLU) on the 8x8 digits, trained with 1-pixel shifts"),
    Entry("digits-mlp-pgd", 1, "digits", "mlp", {"in_shape": (1, 8, 8), "hidden": (100, 100)},
          epochs=40, lr=2e-3, batch_size=64, weight_decay=1e-4, shipped=True,
          robust="pgd", robust_kwargs={"eps": 0.1},
          description="digits-mlp trained on PGD-10 examples (L-inf, eps 0.1; Madry et al. 2018)"),
    Entry("digits-mlp-ibp", 1, "digits", "mlp", {"in_shape": (1, 8, 8), "hidden": (100, 100)},
          epochs=60, lr=2e-3, batch_size=64, weight_decay=0.0, shipped=True,
          robust="ibp", robust_kwargs={"eps": 0.1},
          description="digits-mlp trained with the IBP loss (L-inf, eps ramped to 0.1; Gowal et al. 2018)"),
    Entry("digits28-cnn", 1, "digits28", "cnn", {"in_shape": (1, 28, 28), "channels": (16, 32), "strides": (2, 2)},
          epochs=30, lr=2e-3, batch_size=64, weight_decay=1e-4, augment="shift", shipped=True,
          description="the small MNIST CNN on the digits upsampled to 28x28 (Part 2's victim)"),
    Entry("digits28-mlp", 1, "digits28", "mlp", {"in_shape": (1, 28, 28), "hidden": (256, 256)},
          epochs=30, lr=1e-3, batch_size=64, weight_decay=1e-4, shipped=True,
          description="MLP 784-256-256-10 on the digits upsampled to 28x28 (Part 2's transfer surrogate)"),
    # Part 4: the defenses of the robust-training lecture, all on digits-cnn's architecture, L-inf eps 0.1
    Entry("digits-cnn-pgd", 1, "digits", "cnn", {"in_shape": (1, 8, 8), "channels": (16, 32), "strides": (1, 2)},
          epochs=60, lr=2e-3, batch_size=64, weight_decay=1e-4, shipped=True,
          robust="pgd", robust_kwargs={"eps": 0.1},
          description="digits-cnn trained on PGD-10 examples (L-inf, eps 0.1; Madry et al. 2018)"),
    Entry("digits-cnn-trades", 1, "digits", "cnn", {"in_shape": (1, 8, 8), "channels": (16, 32), "strides": (1, 2)},
          epochs=60, lr=2e-3, batch_size=64, weight_decay=1e-4, shipped=True,
          robust="trades", robust_kwargs={"eps": 0.1, "beta": 6.0},
          description="digits-cnn trained with TRADES (L-inf, eps 0.1, beta 6; Zhang et al. 2019)"),
    Entry("digits-cnn-sprout", 1, "digits", "cnn", {"in_shape": (1, 8, 8), "channels": (16, 32), "strides": (1, 2)},
          epochs=60, lr=2e-3, batch_size=64, weight_decay=1e-4, shipped=True,
          robust="sprout", robust_kwargs={"sigma": 0.2, "alpha": 0.3},
          description="digits-cnn trained with SPROUT (Gaussian sigma 0.2, mixup, Dirichlet smoothing 0.3; "
                      "Cheng et al. 2021)"),
    Entry("digits-cnn-cat", 1, "digits", "cnn", {"in_shape": (1, 8, 8), "channels": (16, 32), "strides": (1, 2)},
          epochs=60, lr=2e-3, batch_size=64, weight_decay=1e-4, shipped=True,
          robust="cat", robust_kwargs={"eps_max": 0.1},
          description="digits-cnn trained with CAT (per-sample eps up to 0.1, smoothed labels; Cheng et al. 2020)"),
    # Part 3 (reprogramming): the frozen 1-D source model of V2S, on a domain that generates offline
    Entry("mnist1d-cnn", 1, "mnist1d", "cnn1d", {"in_shape": (1, 320), "channels": (16, 32, 64), "kernel": 5},
          epochs=60, lr=3e-3, batch_size=64, weight_decay=1e-4, shipped=True,
          description="1-D CNN (3 conv layers at stride 2, global average pooling) on MNIST-1D at length 320 "
                      "(Part 3's source model for time series)"),
    Entry("mnist-mlp", 1, "mnist", "mlp", {"in_shape": (1, 28, 28), "hidden": (256, 256)},
          epochs=10, lr=1e-3, batch_size=128, description="MLP 784-256-256-10 on MNIST"),
    Entry("mnist-mlp-pgd", 1, "mnist", "mlp", {"in_shape": (1, 28, 28), "hidden": (256, 256)},
          epochs=20, lr=1e-3, batch_size=128, robust="pgd", robust_kwargs={"eps": 0.1},
          description="mnist-mlp trained on PGD-10 examples (L-inf, eps 0.1; Madry et al. 2018)"),
    Entry("mnist-mlp-ibp", 1, "mnist", "mlp", {"in_shape": (1, 28, 28), "hidden": (256, 256)},
          epochs=30, lr=1e-3, batch_size=128, robust="ibp", robust_kwargs={"eps": 0.1},
          description="mnist-mlp trained with the IBP loss (L-inf, eps ramped to 0.1; Gowal et al. 2018)"),
    Entry("mnist-cnn", 1, "mnist", "cnn", {"in_shape": (1, 28, 28), "channels": (16, 32), "strides": (2, 2)},
          epochs=10, lr=1e-3, batch_size=128, description="the 'small' certified-training CNN on MNIST"),
    Entry("mnist-cnn-pgd", 1, "mnist", "cnn", {"in_shape": (1, 28, 28), "channels": (16, 32), "strides": (2, 2)},
          epochs=10, lr=1e-3, batch_size=128, robust="pgd", robust_kwargs={"eps": 0.3, "steps": 10, "ramp": 0.3},
          description="mnist-cnn trained on PGD-10 examples (L-inf, eps ramped to 0.3; Madry et al. 2018)"),
    Entry("mnist-cnn-trades", 1, "mnist", "cnn", {"in_shape": (1, 28, 28), "channels": (16, 32), "strides": (2, 2)},
          epochs=10, lr=1e-3, batch_size=128, robust="trades", robust_kwargs={"eps": 0.3, "beta": 6.0},
          description="mnist-cnn trained with TRADES (L-inf, eps 0.3, beta 6; Zhang et al. 2019)"),
    Entry("mnist-cnn-sprout", 1, "mnist", "cnn", {"in_shape": (1, 28, 28), "channels": (16, 32), "strides": (2, 2)},
          epochs=10, lr=1e-3, batch_size=128, robust="sprout", robust_kwargs={"sigma": 0.3, "alpha": 0.3},
          description="mnist-cnn trained with SPROUT (Gaussian sigma 0.3, mixup, Dirichlet smoothing 0.3)"),
    Entry("mnist-cnn-cat", 1, "mnist", "cnn", {"in_shape": (1, 28, 28), "channels": (16, 32), "strides": (2, 2)},
          epochs=10, lr=1e-3, batch_size=128, robust="cat", robust_kwargs={"eps_max": 0.3},
          description="mnist-cnn trained with CAT (per-sample eps up to 0.3, smoothed labels; Cheng et al. 2020)"),
    Entry("fashion-mnist-cnn", 1, "fashion-mnist", "cnn",
          {"in_shape": (1, 28, 28), "channels": (16, 32), "strides": (2, 2)},
          epochs=15, lr=1e-3, batch_size=128, description="the same small CNN on Fashion-MNIST"),
    Entry("cifar10-resnet", 1, "cifar10", "resnet", {"in_shape": (3, 32, 32), "blocks_per_stage": 3},
          epochs=40, lr=0.1, batch_size=128, weight_decay=5e-4, optimizer="sgd", augment="crop-flip",
          description="ResNet-20 on CIFAR-10 (random crops and flips)"),
    # CIFAR-10 defenses at the literature's L-inf eps 8/255, with crops and flips (PGD training through its
    # loss hook, which the ramp selects, so that the augmentation hook stays free)
    Entry("cifar10-resnet-pgd", 1, "cifar10", "resnet", {"in_shape": (3, 32, 32), "blocks_per_stage": 3},
          epochs=40, lr=0.1, batch_size=128, weight_decay=5e-4, optimizer="sgd", augment="crop-flip",
          robust="pgd", robust_kwargs={"eps": 8 / 255, "steps": 7, "ramp": 0.1},
          description="cifar10-resnet trained on PGD-7 examples (L-inf, eps 8/255; Madry et al. 2018)"),
    Entry("cifar10-resnet-trades", 1, "cifar10", "resnet", {"in_shape": (3, 32, 32), "blocks_per_stage": 3},
          epochs=40, lr=0.1, batch_size=128, weight_decay=5e-4, optimizer="sgd", augment="crop-flip",
          robust="trades", robust_kwargs={"eps": 8 / 255, "beta": 6.0, "steps": 10},
          description="cifar10-resnet trained with TRADES (L-inf, eps 8/255, beta 6; Zhang et al. 2019)"),
]}


_AUGMENT = {"": None, "shift": random_shift, "crop-flip": random_crop_flip}


def entries() -> list[Entry]:
    return list(ENTRIES.values())


def weights_dir() -> Path:
    """Where the shipped checkpoints and their manifest live (inside the package)."""
    return Path(__file__).resolve().parent / "weights"


def cache_dir() -> Path:
    """Where on-demand entries are cached: ``$ADVLIB_ZOO``, else ``zoo/`` in the data cache."""
    env = os.environ.get("ADVLIB_ZOO")
    return Path(env).expanduser() if env else _data.cache_dir() / "zoo"


def manifest() -> dict:
    """Name -> version, file, SHA-256, test accuracy, ... of every shipped checkpoint."""
    path = weights_dir() / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _entry(name: str) -> Entry:
    if name not in ENTRIES:
        raise ValueError(f"unknown zoo entry {name!r}; known: {', '.join(ENTRIES)} "
                         "(python -m advlib.zoo list shows them)")
    return ENTRIES[name]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def train(name: str, *, device=None, progress: bool = True) -> tuple[nn.Module, float]:
    """Train a zoo entry from scratch with its recipe; returns the model (eval mode) and its
    held-out accuracy. Seeded: the same machine and library versions give the same weights."""
    e = _entry(name)
    dev = torch.device(device) if device is not None else _default_device()
    seed_everything(e.seed)
    tr, te = _data.load(e.dataset, "train"), _data.load(e.dataset, "test")
    dims = [0] + list(range(2, tr.x.dim()))
    model = build(e.arch, n_classes=tr.n_classes, mean=tr.x.mean(dims).tolist(),
                  std=tr.x.std(dims).tolist(), **e.arch_kwargs).to(dev)
    r = recipe(e.robust, **e.robust_kwargs) if e.robust else None
    if r is not None and r.perturb is not None and e.augment:
        raise ValueError(f"{name}: a recipe has either an augmentation or adversarial training, not both")
    fit(model, tr, te, epochs=e.epochs, lr=e.lr, batch_size=e.batch_size, weight_decay=e.weight_decay,
        optimizer=e.optimizer, perturb=_AUGMENT[e.augment], recipe=r, seed=e.seed, device=dev, progress=progress)
    return model, accuracy(model, te.x, te.y)


def save(model: nn.Module, name: str, path: Path, test_accuracy: float) -> dict:
    """Write ``model`` as safetensors with its recipe in the metadata; returns the manifest record."""
    e = _entry(name)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"name": e.name, "version": str(e.version), "arch": e.arch,
            "arch_kwargs": json.dumps(e.arch_kwargs), "recipe": json.dumps(e.recipe()),
            "test_accuracy": f"{test_accuracy:.4f}", "torch": torch.__version__}
    save_file(state, str(path), metadata=meta)
    return {"version": e.version, "file": path.name, "sha256": sha256(path),
            "test_accuracy": round(test_accuracy, 4),
            "parameters": sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k),
            "bytes": path.stat().st_size, "torch": torch.__version__,
            "trained": datetime.date.today().isoformat(), "recipe": e.recipe()}


def _read(path: Path, e: Entry) -> nn.Module:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("name") != e.name or meta.get("version") != str(e.version):
        raise ValueError(f"{path} holds {meta.get('name')!r} v{meta.get('version')}, not {e.name!r} v{e.version}")
    state = load_file(str(path))
    # the classes are the outputs of the last top-level layer with weights (the Sequential's index, numerically:
    # "11.weight" comes after "9.weight"; keys inside a block, "4.body.0.weight", share their block's index)
    last = max((k for k in state if k.endswith("weight")), key=lambda k: int(k.split(".")[0]))
    n_classes = state[last].shape[0]
    mean, std = state["0.mean"].flatten().tolist(), state["0.std"].flatten().tolist()
    model = build(meta["arch"], n_classes=n_classes, mean=mean, std=std, **json.loads(meta["arch_kwargs"]))
    model.load_state_dict(state, strict=True)
    return model


def load(name: str, device=None, *, train_if_missing: bool = True, progress: bool = True) -> nn.Module:
    """The zoo model ``name`` in eval mode on ``device`` (default :func:`advlib.device`).

    Shipped entries load from the package, offline, after their SHA-256 is checked. Other entries
    load from :func:`cache_dir`; when missing they are trained there first (which needs their
    data set, so offline it fails with the data set's message).
    """
    e = _entry(name)
    dev = torch.device(device) if device is not None else _default_device()
    if e.shipped:
        path, record = weights_dir() / e.filename, manifest().get(name)
        if not path.exists() or record is None:
            raise FileNotFoundError(f"the shipped checkpoint {path} (or its manifest record) is missing; "
                                    f"reinstall advlib or rebuild it with: python -m advlib.zoo train {name}")
        if sha256(path) != record["sha256"]:
            raise ValueError(f"{path} does not match its SHA-256 in the manifest: the file is corrupted or "
                             f"was replaced; rebuild it with: python -m advlib.zoo train {name}")
    else:
        path = cache_dir() / e.filename
        if not path.exists():
            if not train_if_missing:
                raise FileNotFoundError(f"{name} is not cached at {path}; train it with: "
                                        f"python -m advlib.zoo train {name}")
            model, acc = train(name, device=dev, progress=progress)
            save(model, name, path, acc)
    return _read(path, e).to(dev).eval()
