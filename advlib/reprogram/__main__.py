"""``python -m advlib.reprogram records [--out FILE] [--seeds 0 1 2]``: run the lecture's protocol
(:data:`advlib.reprogram.experiments.PROTOCOL`) and write the records the lecture checks against."""
from __future__ import annotations

import argparse
import time

from .experiments import SEEDS, run_records, summary


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m advlib.reprogram")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("records", help="run every experiment of the reprogramming tables and record the results")
    p.add_argument("--out", default=None, help="JSON file (default: the package's records.json)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows = run_records(args.out, seeds=args.seeds)
    for name, shots in sorted({(r["task"], r["shots"]) for r in rows}, key=lambda k: (k[0], k[1] or 99)):
        print(f"\n{name}, {shots or 'all'} per class")
        for s in summary(rows, name, shots):
            extra = f"  {s['queries']:.0f} queries" if "queries" in s else ""
            print(f"  {s['method']:<20} {s['mapping']:<11} {s['loss']:<6} {s['q']!s:<3} "
                  f"{100 * s['mean']:5.1f} +- {100 * s['std']:4.1f}{extra}")
    print(f"{len(rows)} rows in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
