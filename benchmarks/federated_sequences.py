"""Part 6b in one run: what vectorising buys the robust aggregation rules, and what batching buys the
sequence attack.

    python benchmarks/federated_sequences.py [--repeats 3] [--quick]

* **Aggregation rules**: ``advlib.applications.krum``, ``bulyan`` and ``trimmed_mean`` (one pairwise
  distance matrix, ``topk`` and a sort per coordinate on the device) on ``n`` updates the size of the
  lecture's MLP (101,770 weights), against the loops of their definitions (the exercise references of
  :mod:`advlib.course.federated`, and a loop Bulyan written from its Algorithm 1): median seconds of
  interleaved rounds, the ratio, and the largest difference of the results (they must agree).
* **Sequence PGD**: ``advlib.applications.sequence_pgd`` on ``N`` series in one batch against the same
  call made once per series: seconds, ratio, and the target step accuracy of each (the random starts
  differ, so the perturbations are not identical; the strength must be).

Timings are measured here and now, never asserted; tests run ``--quick``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from advlib.applications import bulyan, krum, segment_series, sequence_pgd, step_accuracy, train_tagger, trimmed_mean
from advlib.course.federated import reference_krum, reference_trimmed_mean


def interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds of each function over ``repeats`` rounds after one warm-up round, the functions run
    in turn in every round; and its last result."""
    times, results = {k: [] for k in fns}, {}
    for rnd in range(repeats + 1):
        for k, fn in fns.items():
            t = time.perf_counter()
            results[k] = fn()
            if rnd:
                times[k].append(time.perf_counter() - t)
    return {k: (statistics.median(v), results[k]) for k, v in times.items()}


def bulyan_loop(U: torch.Tensor, f: int) -> torch.Tensor:
    """Bulyan (El Mhamdi et al. 2018, Algorithm 1) with loops: Krum on the candidates left, one pick at a
    time (at least one neighbour); then per coordinate the mean of the beta values closest to the median."""
    rest, chosen = list(range(len(U))), []
    for _ in range(len(U) - 2 * f):
        k = max(len(rest) - f - 2, 1)
        scores = []
        for i in rest:
            d = sorted(float(((U[i] - U[j]) ** 2).sum()) for j in rest if j != i)
            scores.append(sum(d[:k]))
        chosen.append(rest.pop(min(range(len(rest)), key=scores.__getitem__)) if len(rest) > 1 else rest.pop())
    S = U[chosen]
    beta = len(S) - 2 * f
    out = torch.empty(U.shape[1], dtype=U.dtype)
    med = S.median(0).values
    for j in range(U.shape[1]):
        order = sorted(range(len(S)), key=lambda i: abs(float(S[i, j] - med[j])))
        out[j] = S[order[:beta], j].mean()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="small sizes (the test's)")
    args = ap.parse_args()
    torch.manual_seed(0)
    n, d = (11, 2_000) if args.quick else (30, 101_770)
    U = torch.randn(n, d)
    f = 2
    print(f"aggregation of {n} updates of {d:,} weights, f = {f}; {args.repeats} interleaved rounds")
    rules = {"Krum": (lambda: krum(U, f), lambda: reference_krum(U, f)),
             "Trimmed mean": (lambda: trimmed_mean(U, f), lambda: reference_trimmed_mean(U, f))}
    d_bulyan = d if args.quick else 5_000  # the per-coordinate loop is slow: fewer weights for Bulyan
    Ub = U[:, :d_bulyan]
    rules[f"Bulyan ({d_bulyan:,} weights)"] = (lambda: bulyan(Ub, f), lambda: bulyan_loop(Ub, f))
    for name, (ours, loop) in rules.items():
        r = interleaved({"vectorised": ours, "loop": loop}, args.repeats)
        (t_v, a), (t_l, b) = r["vectorised"], r["loop"]
        print(f"{name}: vectorised {t_v:.4f} s, loop {t_l:.4f} s, ratio {t_l / t_v:.1f}x, "
              f"max |difference| {float((a.double() - b.double()).abs().max()):.2e}")

    n_series, steps = (8, 5) if args.quick else (64, 40)
    x, y = segment_series(60 if args.quick else 300, seed=0)
    tagger = train_tagger(x, y, epochs=2 if args.quick else 15, seed=0)
    xt, yt = segment_series(n_series, seed=1)
    target = yt.roll(1, 0)
    r = interleaved({"batched": lambda: sequence_pgd(tagger, xt, target, eps=0.2, steps=steps),
                     "loop": lambda: torch.cat([sequence_pgd(tagger, xt[i:i + 1], target[i:i + 1], eps=0.2,
                                                             steps=steps) for i in range(n_series)])},
                     args.repeats)
    (t_b, xb), (t_l, xl) = r["batched"], r["loop"]
    print(f"Sequence PGD ({n_series} series, {steps} steps): batched {t_b:.3f} s, loop {t_l:.3f} s, "
          f"ratio {t_l / t_b:.1f}x; target steps reached {float(step_accuracy(tagger, xb, target).mean()):.3f} "
          f"(batched) vs {float(step_accuracy(tagger, xl, target).mean()):.3f} (loop)")


if __name__ == "__main__":
    main()
