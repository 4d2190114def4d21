"""``python -m advlib.backdoor population [--dataset digits28] [--split all] [--out DIR]``: train the
clean and Trojan population (seeded) and write its safetensors and manifest;
``python -m advlib.backdoor detect [...]``: run the detectors on it and record their results."""
from __future__ import annotations

import argparse
import time

from .population import detect, population, write


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m advlib.backdoor")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("population", help="train the population of clean and Trojan models")
    p.add_argument("--dataset", default="digits28")
    p.add_argument("--split", default="all")
    p.add_argument("--out", default=None, help="folder (default: the package for the digits, else the cache)")
    p.add_argument("--limit", type=int, default=None, help="only the first N clean and N Trojan models of each split")
    q = sub.add_parser("detect", help="run the Trojan detectors on the population and record their results")
    q.add_argument("--dataset", default="digits28")
    q.add_argument("--split", default="all")
    q.add_argument("--out", default=None)
    q.add_argument("--limit", type=int, default=None)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.command == "detect":
        record = detect(population(args.split, args.dataset, args.limit), args.out)
        print(f"{len(record)} models judged in {time.perf_counter() - t0:.0f} s")
        return
    record = write(population(args.split, args.dataset, args.limit), args.out)
    rows = [r for r in record.values() if args.split in ("all", r["split"])]
    for r in sorted(rows, key=lambda r: (r["split"], r["seed"])):
        kind = "Trojan" if r["trojan"] else "clean"
        print(f"{r['split']:<12} seed {r['seed']}  {kind:<6} target {r['target']!s:>4}  "
              f"clean {r['clean']:.3f}  asr {r['asr']:.3f}  {r['trigger'] or ''}")
    print(f"{len(rows)} models in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
