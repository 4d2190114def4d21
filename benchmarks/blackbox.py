"""Black-box attacks: batched estimation, each attack's cost, and ART at equal counted query budgets.

    python benchmarks/blackbox.py [--points 50] [--art-points N] [--budgets 4000 8000 14000] [--repeats 5]
                                  [--no-art] [--quick]

1. **Batched vs one direction at a time.** A q-direction ZO estimate of the C&W loss through the
   black box: :func:`advlib.zo.estimate` (one call of q+1 queries) against a Python loop that asks
   the black box for one direction at a time, on the 28x28 digits MLP and CNN: queries per second,
   median of interleaved repeats, and the ratio.
2. **advlib's black-box attacks**: success, mean queries to the first success, median L2 (hard label:
   at each budget, from one run via ``QueryLog.distortion_at``) and seconds per point, on the first
   ``--points`` test digits the CNN classifies correctly, untargeted.
3. **ART** (SignOPTAttack, HopSkipJump, BoundaryAttack, ZooAttack; untargeted — ART's Boundary and
   SignOPT default to targeted) on the same model and points. ART's own query counts are unreliable
   (REFERENCES.md), so a counter inside the model records every input ART evaluates, stops the
   attack once a point has had the largest budget, and the distortion at a budget ``B`` is the
   smallest L2 of an adversarial input among the first ``B`` queries: the best ART could have
   returned with ``B`` queries (an optimistic reading of ART). ART runs one point at a time, as it
   does; seconds per point are ART's time until the largest budget. ART's Sign-OPT takes tens of
   seconds per point at 14k queries on 2 CPU cores: ``--art-points`` runs ART (and advlib again, for
   the ratios) on fewer points.

Timings are measured here and now, never asserted (tests/test_benchmarks.py only checks that the
script runs; tests/test_blackbox_*.py assert the distortions and counts).
"""
from __future__ import annotations

import argparse
import functools
import math
import statistics
import time
import warnings

import torch
from torch import nn

import advlib
from advlib import zo
from advlib.blackbox import BlackBox, cw_loss

warnings.filterwarnings("ignore")


# ----------------------------------------------------------------------------- 1. estimation
def estimation(model, x, y, q, repeats):
    """Queries per second of one q-direction estimate at each point of ``x``: batched and looped."""
    def loss(z, owner):
        return cw_loss(bb.scores(z.clamp(0, 1)), y[owner], False)

    bb = BlackBox(model)

    def batched():
        zo.estimate(lambda z: loss(z, torch.arange(len(x)).repeat_interleave(len(z) // len(x))), x, q=q)

    def looped():
        for i in range(len(x)):
            xi, yi = x[i:i + 1], torch.tensor([i])
            fx = loss(xi, yi)
            g = torch.zeros_like(xi)
            for _ in range(q):
                u = zo.directions(1, 1, xi.shape[1:])[:, 0]
                g += (loss(xi + 1e-3 * u, yi) - fx).view(-1, 1, 1, 1) / 1e-3 * u
    queries = len(x) * (q + 1)
    times = {"batched": [], "loop": []}
    for _ in range(repeats):
        for name, fn in (("batched", batched), ("loop", looped)):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {k: queries / statistics.median(v) for k, v in times.items()}


# ----------------------------------------------------------------------------- 2. advlib attacks
def advlib_attacks(budget):
    from advlib.blackbox.boundary import boundary
    from advlib.blackbox.hsja import hop_skip_jump
    from advlib.blackbox.opt import opt
    from advlib.blackbox.sign_opt import sign_opt

    hard = {"Sign-OPT": sign_opt, "OPT": opt, "HopSkipJump": hop_skip_jump, "Boundary": boundary}
    return {name: functools.partial(fn, queries=budget) for name, fn in hard.items()}


def soft_attacks(budget):
    from advlib.blackbox.autozoom import autozoom
    from advlib.blackbox.zoo_attack import zoo_attack

    return {"ZOO": functools.partial(zoo_attack, queries=budget),
            "AutoZOOM": functools.partial(autozoom, queries=budget)}


def run_advlib(model, x, y, budgets, attacks, output):
    rows = {}
    for name, attack in attacks.items():
        bb = BlackBox(model, output=output)
        t = time.perf_counter()
        attack(bb, x, y)
        dt = time.perf_counter() - t
        log = bb.log
        rows[name] = {"success": log.success.float().mean().item(),
                      "to_success": log.first_success[log.success].float().mean().item() if log.success.any()
                      else math.nan,
                      "l2": {b: log.distortion_at(b).median().item() for b in budgets},
                      "queries": log.queries.float().mean().item(), "seconds": dt / len(x)}
    return rows


# ----------------------------------------------------------------------------- 3. ART
class StopQueries(Exception):
    pass


class Stream(nn.Module):
    """Counts every input evaluated for the current point; records its L2 to the point and whether it
    is adversarial; stops the attack past ``limit`` queries."""

    def __init__(self, model, limit):
        super().__init__()
        self.model, self.limit = model, limit
        self.reset(None, None)

    def reset(self, x0, y0):
        self.x0, self.y0, self.dist, self.adv = x0, y0, [], []

    def forward(self, z):
        z = z.float()  # ART's Sign-OPT hands over float64
        out = self.model(z)
        if self.x0 is not None:
            self.dist.append((z - self.x0).flatten(1).norm(dim=1).detach())
            self.adv.append((out.argmax(1) != self.y0).detach())
            if sum(len(d) for d in self.dist) >= self.limit:
                raise StopQueries
        return out

    def best_within(self, budget):
        d, a = torch.cat(self.dist)[:budget], torch.cat(self.adv)[:budget]
        return d[a].min().item() if a.any() else math.inf

    def first_success(self):
        a = torch.cat(self.adv) if self.adv else torch.zeros(0, dtype=torch.bool)
        return int(a.nonzero()[0]) + 1 if a.any() else None

    @property
    def count(self):
        return sum(len(d) for d in self.dist)


def art_attacks(clf, budget):
    from art.attacks.evasion import BoundaryAttack, HopSkipJump, SignOPTAttack, ZooAttack

    big = 10 ** 6  # iterations: the stream stops ART at the budget
    return {
        "Sign-OPT": SignOPTAttack(clf, targeted=False, query_limit=10 * budget, max_iter=big, verbose=False),
        "HopSkipJump": HopSkipJump(clf, targeted=False, max_iter=big, verbose=False),
        "Boundary": BoundaryAttack(clf, targeted=False, max_iter=big, verbose=False),
        "ZOO": ZooAttack(clf, targeted=False, max_iter=big, verbose=False),
    }


def run_art(model, x, y, budgets, names):
    from art.estimators.classification import PyTorchClassifier

    stream = Stream(model, max(budgets)).eval()
    clf = PyTorchClassifier(stream, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=10,
                            clip_values=(0.0, 1.0), device_type="cpu")
    attacks = art_attacks(clf, max(budgets))
    rows = {}
    for name in names:
        l2 = {b: [] for b in budgets}
        firsts, seconds, counted = [], 0.0, []
        for i in range(len(x)):
            stream.reset(x[i:i + 1], y[i:i + 1])
            t = time.perf_counter()
            try:
                attacks[name].generate(x[i:i + 1].numpy(), y=y[i:i + 1].numpy())
            except StopQueries:
                pass
            seconds += time.perf_counter() - t
            counted.append(stream.count)
            for b in budgets:
                l2[b].append(stream.best_within(b))
            firsts.append(stream.first_success())
        ok = [f for f in firsts if f is not None]
        rows[name] = {"success": len(ok) / len(x), "to_success": statistics.mean(ok) if ok else math.nan,
                      "l2": {b: statistics.median(v) for b, v in l2.items()},
                      "queries": statistics.mean(counted), "seconds": seconds / len(x)}
        table(f"   ART {name} done", {name: rows[name]}, budgets)  # printed as it goes: ART is slow
    return rows


def table(title, rows, budgets):
    print(f"\n{title}")
    head = " ".join(f"{'L2@' + format(b / 1000, 'g') + 'k':>8}" for b in budgets)
    print(f"{'attack':<16} {'success':>8} {'to 1st':>8} {head} {'queries':>9} {'s/point':>8}")
    for name, r in rows.items():
        l2 = " ".join(f"{r['l2'][b]:>8.3f}" for b in budgets)
        print(f"{name:<16} {r['success']:>8.1%} {r['to_success']:>8.0f} {l2} {r['queries']:>9.0f} {r['seconds']:>8.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", type=int, default=50)
    ap.add_argument("--budgets", type=int, nargs="+", default=[4000, 8000, 14000])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-art", action="store_true", help="skip the ART comparison (slow: one point at a time)")
    ap.add_argument("--art-points", type=int, default=None,
                    help="run ART (and the advlib rows it is compared with) on the first N of the points only")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 3 points, budgets 300 / 600")
    args = ap.parse_args()
    if args.quick:
        args.points, args.budgets, args.repeats = 3, [300, 600], 1
    torch.set_num_threads(args.threads)
    advlib.seed_everything(0)
    test = advlib.data.load("digits28", "test")
    models = {name: advlib.zoo.load(name, "cpu") for name in ("digits28-mlp", "digits28-cnn")}
    cnn = models["digits28-cnn"]
    ok = advlib.train.predict(cnn, test.x) == test.y
    x, y = test.x[ok][:args.points], test.y[ok][:args.points]
    print(f"{torch.get_num_threads()} threads, torch {torch.__version__}; {len(x)} points of digits28 that "
          f"digits28-cnn classifies correctly; budgets {args.budgets}")

    print("\n1. one q-direction estimate per point (10 points), queries per second")
    print(f"{'model':<14} {'q':>4} {'batched':>10} {'loop':>10} {'batched / loop':>15}")
    for name, model in models.items():
        for q in ((10,) if args.quick else (50, 200)):
            r = estimation(model, x[:10] if len(x) >= 10 else x, y[:10], q, args.repeats)
            print(f"{name:<14} {q:>4} {r['batched']:>10.0f} {r['loop']:>10.0f} {r['batched'] / r['loop']:>14.1f}x")

    hard = run_advlib(cnn, x, y, args.budgets, advlib_attacks(max(args.budgets)), "label")
    table("2. advlib, hard label, digits28-cnn, untargeted", hard, args.budgets)
    soft = run_advlib(cnn, x, y, args.budgets, soft_attacks(max(args.budgets)), "scores")
    table("   advlib, soft label (C&W objective), untargeted", soft, args.budgets)
    if args.no_art:
        return
    try:
        import art  # noqa: F401
    except ImportError:
        print("\nART is not installed: skipping the comparison")
        return
    names = ["Sign-OPT", "HopSkipJump", "Boundary", "ZOO"]
    if args.art_points is not None and args.art_points < len(x):
        x, y = x[:args.art_points], y[:args.art_points]
        hard = run_advlib(cnn, x, y, args.budgets, advlib_attacks(max(args.budgets)), "label")
        soft = run_advlib(cnn, x, y, args.budgets, soft_attacks(max(args.budgets)), "scores")
        table(f"   advlib on the {len(x)} points ART runs on", {**hard, **soft}, args.budgets)
    ref = run_art(cnn, x, y, args.budgets, names)
    table("3. ART, same model and points, queries counted inside the model", ref, args.budgets)
    print("\nadvlib / ART at equal counted budgets (median L2 ratio; < 1: advlib closer) and ART s / advlib s")
    for name in names:
        ours = hard.get(name) or soft.get(name)
        ratios = " ".join(f"{ours['l2'][b] / ref[name]['l2'][b]:>8.2f}" if math.isfinite(ref[name]["l2"][b])
                          else f"{'-':>8}" for b in args.budgets)
        print(f"{name:<16} L2 {ratios}   speed-up {ref[name]['seconds'] / ours['seconds']:>6.1f}x")


if __name__ == "__main__":
    main()
