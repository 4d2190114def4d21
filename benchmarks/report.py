"""The holistic robustness report (`advlib.report.robustness_report`) on every image model of the zoo.

    python benchmarks/report.py [--points N] [--threads T] [--quick]

For each shipped image model (the 8x8 digits and the 28x28 digits entries), one report at the
capstone's settings (L-inf eps 0.1, the profile's `report_points` points, `eval_steps` white-box
steps, `report_queries` black-box queries; the Trojan population's first held-out Trojan model
with a DL-TND scan too): seconds in total and per part, and the report's numbers, next to the same
numbers from the lecture-level calls (the white-box ensemble of `advlib.defenses.evaluate` and
CROWN's `advlib.verify.certified_accuracy`), which must agree. `--quick` is the smoke run the tests
use (a few points and steps, two models).
"""
from __future__ import annotations

import argparse
import time

import torch

import advlib
from advlib import defenses, verify
from advlib.report import robustness_report


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--points", type=int, default=None, help="test points per report (default: the profile's)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    P = advlib.profile()
    n = a.points or (10 if a.quick else P.report_points)
    budget = dict(steps=3, queries=20, clever_points=1, clever_batches=3, clever_batch_size=16) if a.quick else \
        dict(steps=P.eval_steps, queries=P.report_queries)
    names = [k for k, e in advlib.zoo.ENTRIES.items() if e.shipped and e.dataset in ("digits", "digits28")]
    if a.quick:
        names = names[:2]
    print(f"{n} points, L-inf eps 0.1, {budget['steps']} white-box steps, {budget['queries']} queries, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'model':<22} {'seconds':>8}  {'white':>6} {'black':>6} {'worst':>6} {'cert':>6}  agrees  parts (s)")
    data = {d: advlib.data.load(d, "test") for d in ("digits", "digits28")}
    runs = [(name, advlib.zoo.load(name, "cpu"), data[advlib.zoo.ENTRIES[name].dataset], {}) for name in names]
    if not a.quick:
        from advlib.backdoor import calibrate, detections, population

        rec = detections()
        threshold = calibrate([rec[m.name]["DL-TND"]["score"] for m in population("calibration")])
        member = next(m for m in population("held-out") if m.trojan)
        runs.append((f"{member.name} (scan)", member.load("cpu"), data["digits28"],
                     {"trusted": data["digits28"], "trojan_threshold": threshold}))
    for name, model, ds, extra in runs:
        x, y = ds.x[:n], ds.y[:n]
        t = time.perf_counter()
        r = robustness_report(model, x, y, eps=0.1, name=name, **budget, **extra)
        seconds = time.perf_counter() - t
        ev = defenses.evaluate(model, x, y, eps=0.1, attacks=("apgd-ce", "apgd-t", "fab-t"), steps=budget["steps"],
                               seed=0, progress=False)
        agree = r.white_box == ev.robust_accuracy and r.certified == verify.certified_accuracy(model, x, y, eps=0.1)
        parts = ", ".join(f"{k} {v:.1f}" for k, v in r.seconds.items() if k != "total")
        print(f"{name:<22} {seconds:8.1f}  {r.white_box:6.1%} {r.black_box:6.1%} {r.worst_case:6.1%} "
              f"{r.certified:6.1%}  {str(agree):<6}  {parts}")


if __name__ == "__main__":
    main()
