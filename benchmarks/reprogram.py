"""Part 3 (reprogramming) in one run: what batching buys BAR, and our DTW against the reference's.

    python benchmarks/reprogram.py [--repeats 3] [--quick]

* **BAR step**: one zeroth-order step on a mini-batch of ``B`` GunPoint series through the black box
  (``advlib.reprogram.bar``'s ``q + 1`` patterns on all ``B`` targets in one call of the box), against
  the plain loop that queries the box once per pattern: the same queries, the median seconds per step
  of each, in interleaved rounds (a drift of the machine's load hits both alike), and their ratio.
* **AR epoch**: an epoch of white-box reprogramming (``advlib.reprogram.ar``) against the same Adam
  steps written as a plain PyTorch loop (the library's overhead, should be ~1x).
* **1-NN DTW**: ``advlib.reprogram.baselines.dtw`` (all pairs along anti-diagonals, in torch) against
  pyts' DTW (the reference library installed here; numba-compiled, one pair at a time) on GunPoint:
  the seconds of each (pyts' first call includes its compilation, reported apart) and whether the
  1-NN accuracies agree.

Timings are measured here and now, never asserted; tests run ``--quick``.
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

import advlib
from advlib.blackbox import BlackBox
from advlib.reprogram import Program, ar, initial_mapping, target_loss, task
from advlib.reprogram.bar import batch_loss
from advlib.reprogram.baselines import dtw
from advlib.zo import estimate

warnings.filterwarnings("ignore")


def bar_step_loop(box, program, mapping, xb, yb, w, free, q, beta):
    """One BAR estimate with one box call per pattern (the plain loop)."""
    W0 = program.W.detach().flatten()

    def loss_of(wv):
        W = W0.clone()
        W[free] = wv
        p = mapping(box.scores(program(xb, W.view(1, *program.source_shape))[0]))
        return target_loss(p, yb)

    f0 = loss_of(w)
    d = len(free)
    g = torch.zeros_like(w)
    for _ in range(q):
        u = torch.randn(d)
        u = u / u.norm()
        g += (loss_of(w + beta * u) - f0) / beta * u
    return d / q * g


def bar_step_batched(box, program, mapping, xb, yb, w, free, q, beta):
    """One BAR estimate as advlib.reprogram.bar makes it: all q + 1 patterns in one call of the box."""
    f = batch_loss(box, program, mapping, xb, yb, program.W.detach().flatten(), free)
    return estimate(f, w[None], q=q, beta=beta, kind="sphere")[0][0]


def ar_epoch_plain(model, program, mapping, x, y, opt, batch_size):
    for idx in torch.randperm(len(x)).split(batch_size):
        p = F.softmax(model(program(x[idx])), 1) @ mapping.H
        loss = F.nll_loss(p.clamp_min(1e-12).log(), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, small sizes")
    a = ap.parse_args()
    torch.set_num_threads(2)
    if a.quick:
        a.repeats = 1
    P = advlib.profile()
    t = task("gunpoint", series_source=P.series_source)
    model = advlib.zoo.load(t.source, device="cpu")
    x, y = t.train.x, t.train.y
    program = Program(model.in_shape, x.shape[1:], form="additive", mask="all")
    mapping = initial_mapping(model, program, x, y, t.n_classes)
    free = program.free
    w = program.W.detach().flatten()[free].clone()
    xb, yb = x[:32], y[:32]
    steps = 2 if a.quick else 10
    print(f"GunPoint into {t.source}: {len(free)} free coordinates, mini-batch {len(xb)}, "
          f"{torch.get_num_threads()} threads, device cpu, {a.repeats} interleaved rounds")
    for q in ((5,) if a.quick else (1, 5, 10)):
        times = {"batched": [], "loop": []}
        queries = {}
        for _ in range(a.repeats):
            for name, fn in (("batched", bar_step_batched), ("loop", bar_step_loop)):
                box = BlackBox(model, "scores", bounds=None)
                fn(box, program, mapping, xb, yb, w, free, q, 0.1)  # warm-up
                box.queries = 0
                t0 = time.perf_counter()
                for _ in range(steps):
                    fn(box, program, mapping, xb, yb, w, free, q, 0.1)
                times[name].append((time.perf_counter() - t0) / steps)
                queries[name] = box.queries // steps
        b, lo = statistics.median(times["batched"]), statistics.median(times["loop"])
        print(f"BAR step q={q:<2}  batched {1e3 * b:7.1f} ms  loop {1e3 * lo:7.1f} ms  ({lo / b:.1f}x)  "
              f"queries per step {queries['batched']} (batched) = {queries['loop']} (loop)")

    epochs = 2 if a.quick else 10
    times = {"advlib.reprogram.ar": [], "plain loop": []}
    for rnd in range(a.repeats + 1):  # round 0 warms both up (the first backward passes of a shape are slow)
        p1 = Program(model.in_shape, x.shape[1:], form="additive", mask="all")
        t0 = time.perf_counter()
        ar(model, p1, mapping, x, y, epochs=epochs)
        if rnd:
            times["advlib.reprogram.ar"].append((time.perf_counter() - t0) / epochs)
        p2 = Program(model.in_shape, x.shape[1:], form="additive", mask="all")
        opt = torch.optim.Adam([p2.W], 0.05)
        for q_ in model.parameters():
            q_.requires_grad_(False)
        t0 = time.perf_counter()
        for _ in range(epochs):
            ar_epoch_plain(model, p2, mapping, x, y, opt, 32)
        if rnd:
            times["plain loop"].append((time.perf_counter() - t0) / epochs)
        for q_ in model.parameters():
            q_.requires_grad_(True)
    r, pl = statistics.median(times["advlib.reprogram.ar"]), statistics.median(times["plain loop"])
    print(f"AR epoch ({len(x)} series)  advlib {1e3 * r:7.1f} ms  plain loop {1e3 * pl:7.1f} ms  ({r / pl:.2f}x)")

    n_test = 10 if a.quick else 150
    xt, yt = t.test.x[:n_test], t.test.y[:n_test]
    dtw(xt[:2].flatten(1), x[:2].flatten(1))  # warm-up
    ours = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        d = dtw(xt.flatten(1), x.flatten(1))
        ours.append(time.perf_counter() - t0)
    acc_ours = (y[d.argmin(1)] == yt).float().mean().item()
    try:
        from pyts.classification import KNeighborsClassifier
    except ImportError:
        print(f"1-NN DTW on {n_test} test series: advlib {statistics.median(ours):.2f} s (pyts not installed)")
        return
    xn, yn, xtn = x.flatten(1).numpy(), y.numpy(), xt.flatten(1).numpy()
    t0 = time.perf_counter()
    KNeighborsClassifier(n_neighbors=1, metric="dtw").fit(xn[:2], yn[:2]).predict(xtn[:1])
    compile_s = time.perf_counter() - t0
    theirs = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        pred = KNeighborsClassifier(n_neighbors=1, metric="dtw").fit(xn, yn).predict(xtn)
        theirs.append(time.perf_counter() - t0)
    acc_pyts = float(np.mean(pred == yt.numpy()))
    o, th = statistics.median(ours), statistics.median(theirs)
    print(f"1-NN DTW on {n_test} test x {len(x)} training series: advlib {o:.2f} s, pyts {th:.2f} s "
          f"({th / o:.1f}x; pyts' first call {compile_s:.1f} s incl. compilation); accuracy "
          f"{acc_ours:.4f} (advlib) vs {acc_pyts:.4f} (pyts)")


if __name__ == "__main__":
    main()
