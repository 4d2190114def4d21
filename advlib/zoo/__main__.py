"""``python -m advlib.zoo list | train NAME [--out DIR] | check``.

``torchrun --nproc_per_node=N -m advlib.zoo train NAME --out DIR`` trains data-parallel (NCCL on
GPUs, gloo on CPUs; see :func:`advlib.train.fit`); the first process writes the checkpoint."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed

from . import ENTRIES, cache_dir, load, manifest, save, train, weights_dir


def _list() -> None:
    shipped = manifest()
    print(f"{'name':<20} {'ver':>3} {'data':<14} {'arch':<7} {'test acc':>8}  where")
    for e in ENTRIES.values():
        rec = shipped.get(e.name)
        acc = f"{rec['test_accuracy']:.4f}" if rec else "-"
        where = ("shipped " + rec["file"]) if (e.shipped and rec) else (
            "cached" if (cache_dir() / e.filename).exists() else "trains on first load")
        print(f"{e.name:<20} {e.version:>3} {e.dataset:<14} {e.arch:<7} {acc:>8}  {where}")


def _train(name: str, out: str | None, device: str | None) -> None:
    e = ENTRIES.get(name)
    if e is None:
        sys.exit(f"unknown zoo entry {name!r}; known: {', '.join(ENTRIES)}")
    t0 = time.perf_counter()
    from ..train import distributed, init_distributed
    if device is None and "WORLD_SIZE" in os.environ:  # under torchrun: data-parallel training
        device = init_distributed()
    model, acc = train(name, device=device)
    if distributed() and torch.distributed.get_rank() > 0:
        return  # the first process writes the checkpoint
    if out is not None:
        path = Path(out) / e.filename
    elif e.shipped:
        path = weights_dir() / e.filename
    else:
        path = cache_dir() / e.filename
    record = save(model, name, path, acc)
    before = manifest().get(name)
    if e.shipped and out is None:  # the maintainer's path: refresh the shipped checkpoint and manifest
        m = manifest()
        m[name] = record
        (weights_dir() / "manifest.json").write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")
    print(f"{name} v{e.version}: test accuracy {acc:.4f} in {time.perf_counter() - t0:.1f} s -> {path}")
    if before is not None:
        print(f"shipped checkpoint's test accuracy: {before['test_accuracy']:.4f} "
              f"(difference {100 * (acc - before['test_accuracy']):+.2f} points)")
    print(json.dumps({"name": name, **record}))


def _check() -> None:
    from .. import data
    from ..train import accuracy

    bad = 0
    for name, rec in manifest().items():
        e = ENTRIES[name]
        te = data.load(e.dataset, "test")
        acc = accuracy(load(name, "cpu"), te.x, te.y)
        ok = abs(acc - rec["test_accuracy"]) < 1e-4
        bad += not ok
        verdict = "ok" if ok else "MISMATCH"
        print(f"{name}: sha256 ok, test accuracy {acc:.4f} (manifest {rec['test_accuracy']:.4f}) {verdict}")
    sys.exit(1 if bad else 0)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m advlib.zoo", description="The advlib model zoo.")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list the zoo entries")
    t = sub.add_parser("train", help="train an entry from scratch with its seeded recipe")
    t.add_argument("name")
    t.add_argument("--out", help="folder to write to (default: the package for shipped entries, "
                                 "the cache for the others; the manifest changes only in the default case)")
    t.add_argument("--device", help="cpu, cuda, mps (default: advlib.device())")
    sub.add_parser("check", help="load every shipped checkpoint and compare its accuracy with the manifest")
    a = p.parse_args(argv)
    if a.cmd == "list":
        _list()
    elif a.cmd == "train":
        _train(a.name, a.out, a.device)
    else:
        _check()


if __name__ == "__main__":
    main()
