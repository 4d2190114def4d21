"""Parts 1b / 4b (Trojans) in one run: what each detector costs per model, in seconds and in model
queries and gradients, and what batching buys.

    python benchmarks/backdoor.py [--models 4] [--repeats 3] [--quick]

For ``--models`` members of the held-out population (half clean, half Trojan), each detector at
its defaults (one clean sample per class; DL-TND with the threshold calibrated on the recorded
calibration models) runs in interleaved rounds (every round runs every
detector on every model, so a drift of the machine's load hits all alike): the median seconds per
model, the inputs passed forward and the input gradients taken (counted by
:class:`advlib.backdoor.Counted`), and the verdict. ``DL-TND (label loop)`` is the same DL-TND
optimisation run one candidate label at a time (the plain loop of the authors' code), against the
batched version that optimises all labels and samples in one batch: the ratio is what batching
buys. Neural Cleanse has a reference implementation in ART only for Keras models (not installed
here): none is compared. Timings are measured here and now, never asserted; tests run ``--quick``.
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

import advlib
from advlib.backdoor import calibrate, detections, df_tnd, dl_tnd, neural_cleanse, population, take_per_class
from advlib.backdoor.tnd import masked_perturbations
from advlib.threat import frozen

warnings.filterwarnings("ignore")


def dl_tnd_label_loop(model, data, steps: int = 300, lam: float = 0.02, kappa: float = 5.0, lr: float = 0.1):
    """DL-TND's optimisation, one label at a time (universal + per-sample perturbations of that label)."""
    x, y = take_per_class(data, 1, 10, "loop")
    with frozen(model):
        for c in range(10):
            xs = x[y != c]
            n = len(xs)
            group = torch.cat([torch.zeros(n, dtype=torch.long), 1 + torch.arange(n)])
            masked_perturbations(model, xs.repeat(2, 1, 1, 1), torch.full((2 * n,), c), group, steps=steps,
                                 lam=lam, kappa=kappa, lr=lr)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 models, 1 repeat, short budgets")
    a = ap.parse_args()
    torch.set_num_threads(2)
    if a.quick:
        a.models, a.repeats = 2, 1
    steps = 10 if a.quick else 300
    dataset = advlib.profile().backdoor_dataset
    te = advlib.data.load(dataset, "test")
    held = population("held-out", dataset)
    clean, trojan = [m for m in held if not m.trojan], [m for m in held if m.trojan]
    members = [m for pair in zip(clean, trojan) for m in pair][:a.models]
    models = {m.name: m.load("cpu") for m in members}
    record = detections(dataset)  # DL-TND's threshold from the calibration models, as in lecture 32
    threshold = calibrate([record[m.name]["DL-TND"]["score"] for m in population("calibration", dataset)])
    detectors = {
        "DL-TND": lambda model: dl_tnd(model, te, steps=steps, threshold=threshold),
        "Neural Cleanse": lambda model: neural_cleanse(model, te, steps=steps),
        "DF-TND": lambda model: df_tnd(model, steps=min(steps, 200)),
    }
    seconds = {(d, m): [] for d in [*detectors, "DL-TND (label loop)"] for m in models}
    last = {}
    for _ in range(a.repeats):
        for m, model in models.items():
            for d, run in detectors.items():
                t0 = time.perf_counter()
                last[d, m] = run(model)
                seconds[d, m].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            dl_tnd_label_loop(model, te, steps=steps)
            seconds["DL-TND (label loop)", m].append(time.perf_counter() - t0)
    print(f"{len(models)} held-out models of {dataset}, {a.repeats} interleaved rounds, {steps} steps, "
          f"{torch.get_num_threads()} threads, device cpu")
    print(f"{'detector':<20} {'model':<34} {'s/model':>8} {'forwards':>10} {'gradients':>10}  verdict")
    truth = {m.name: m for m in members}
    for d in [*detectors, "DL-TND (label loop)"]:
        for m in models:
            s = statistics.median(seconds[d, m])
            if (d, m) in last:
                r = last[d, m]
                verdict = (f"Trojan -> {r.target}" if r.trojan else "clean") + \
                          f" (truth: {'Trojan -> ' + str(truth[m].target) if truth[m].trojan else 'clean'})"
                print(f"{d:<20} {m:<34} {s:8.2f} {r.forwards:10d} {r.backwards:10d}  {verdict}")
            else:
                ratio = s / statistics.median(seconds["DL-TND", m])
                print(f"{d:<20} {m:<34} {s:8.2f} {'':>10} {'':>10}  {ratio:.1f}x the batched DL-TND's time")
    print(f"(DL-TND's threshold {threshold:.4f}: the largest recorded score of the calibration models; "
          "Neural Cleanse's and DF-TND's: 2)")


if __name__ == "__main__":
    main()
