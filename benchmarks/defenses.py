"""Part 4a (defenses) in one run: the cost of robust training, data parallelism, and the evaluation
against the reference library.

    python benchmarks/defenses.py [--section train|torchrun|eval|all] [--points 500] [--repeats 3]
                                  [--steps 10] [--quick]

``train``: seconds per epoch of each recipe (standard, PGD-10, TRADES-10, SPROUT, CAT-10) on
digits-cnn's architecture and the digits training split, interleaved rounds; the ratio to plain
training, and that ratio over the k + 1 forward/backward passes of k-step PGD training.

``torchrun``: PGD-10 training in one process (2 threads) against two gloo processes under
``torchrun --standalone --nproc_per_node=2`` (1 thread each), interleaved; each run times its own
training loop (not torchrun's start-up).

``eval``: ``advlib.defenses.evaluate`` (APGD-CE, APGD-T, FAB-T, Square) against torchattacks'
``AutoAttack(version="standard")`` on the same zoo models and the same test points, L-inf eps 0.1,
at the same budget: ``--steps`` iterations per APGD run and per FAB target (torchattacks' standard
version runs 10, the paper 100; ``--steps 100`` sets both libraries to it) and 5000 Square queries.
Per model: the median wall-clock time of interleaved repeats (the libraries take turns in every
repeat, so a drift of the machine's load hits both alike), the ratio advlib / torchattacks, the
robust accuracy of each and their gap in points, and where advlib's time went (seconds per attack,
from the Evaluation). Models: digits-mlp, digits-cnn, digits-mlp-pgd, and the digits-cnn defenses
whose weights are shipped. Timings are measured here and now, never asserted; the tests check
that this script runs (``--quick``) and tests/test_defenses_evaluate.py asserts the agreement.
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

import advlib
from advlib.defenses.evaluate import evaluate

warnings.filterwarnings("ignore")

MODELS = ("digits-mlp", "digits-cnn", "digits-mlp-pgd", "digits-cnn-pgd", "digits-cnn-trades", "digits-cnn-sprout",
          "digits-cnn-cat")


def shipped(name: str) -> bool:
    """Whether the zoo ships ``name``'s weights (the defenses appear as they are trained)."""
    return name in advlib.zoo.manifest() and any(advlib.zoo.weights_dir().glob(f"{name}-v*.safetensors"))


def autoattack(model, eps: float, steps: int, queries: int):
    """torchattacks' standard AutoAttack with ``steps`` per APGD / APGD-T / FAB-T and ``queries`` for
    Square (its defaults: 10 and 5000), as a function ``(x, y) -> x_adv``; None if not installed."""
    try:
        import torchattacks
    except ImportError:
        return None
    aa = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0)
    for atk in aa._autoattack.attacks:
        if hasattr(atk, "steps"):
            atk.steps = steps
        if hasattr(atk, "n_queries"):
            atk.n_queries = queries
    return lambda x, y: aa(x, y)


def _sync(x):
    if x.is_cuda:
        torch.cuda.synchronize()


def bench_evaluate(args) -> None:
    """advlib.defenses.evaluate vs torchattacks' AutoAttack: time, ratio, robust accuracy, gap."""
    dev = torch.device(args.device) if args.device else advlib.device()
    test = advlib.data.load("digits", "test", device=dev)
    x, y = test.x[: args.points], test.y[: args.points]
    eps, steps, queries = 0.1, args.steps, args.queries
    print(f"\nEvaluation: advlib.defenses.evaluate vs torchattacks.AutoAttack(standard), Linf eps={eps}, "
          f"{len(x)} points, {steps} steps per APGD run / FAB target, {queries} Square queries, median of "
          f"{args.repeats} interleaved runs")
    print(f"{'model':<18} {'library':<13} {'time s':>8} {'x ta':>6} {'clean':>7} {'robust':>7} {'gap pts':>8}   "
          "advlib seconds per attack")
    for name in (m for m in MODELS if shipped(m)):
        model = advlib.zoo.load(name, dev, train_if_missing=False).eval()
        runners = {"advlib": lambda x, y, m=model: evaluate(m, x, y, eps=eps, steps=steps, square_queries=queries,
                                                            progress=False)}
        ta = autoattack(model, eps, steps, queries)
        if ta is not None:
            runners["torchattacks"] = ta
        times, outs = {k: [] for k in runners}, {}
        for _ in range(args.repeats):
            for k, fn in runners.items():
                _sync(x)
                t0 = time.perf_counter()
                outs[k] = fn(x, y)
                _sync(x)
                times[k].append(time.perf_counter() - t0)
        ev = outs["advlib"]
        robust = {"advlib": ev.robust_accuracy}
        if "torchattacks" in outs:
            robust["torchattacks"] = (advlib.train.predict(model, outs["torchattacks"]) == y).float().mean().item()
        ref = statistics.median(times["torchattacks"]) if "torchattacks" in times else None
        for k in runners:
            t = statistics.median(times[k])
            ratio = f"{t / ref:6.2f}" if ref else f"{'-':>6}"
            gap = f"{100 * (robust[k] - robust.get('torchattacks', robust[k])):+8.1f}" if k == "advlib" else f"{'':8}"
            split = "  ".join(f"{a} {r.seconds:.2f}" for a, r in ev.per_attack.items()) if k == "advlib" else ""
            print(f"{name:<18} {k:<13} {t:8.2f} {ratio} {ev.clean_accuracy:7.1%} {robust[k]:7.1%} {gap}   {split}",
                  flush=True)
        if ev.masking:
            print(f"{'':<18} note: {ev.note}")
    if not any(shipped(m) for m in MODELS):
        print("no shipped digits models found in advlib/zoo/weights")


# ---------------------------------------------------------------------------------------- training cost
def _cnn(train):
    from advlib.models import build
    dims = [0] + list(range(2, train.x.dim()))
    return build("cnn", in_shape=tuple(train.x.shape[1:]), channels=(16, 32), strides=(1, 2), n_classes=10,
                 mean=train.x.mean(dims).tolist(), std=train.x.std(dims).tolist())


def bench_train(args) -> None:
    """Seconds per epoch of each recipe on digits-cnn's architecture (the whole digits training
    split, batch 64), interleaved repeats, against plain training and against the k + 1 passes of
    k-step PGD training (k = 10: ten attack steps of one forward and one backward pass, plus the
    training step's own)."""
    from advlib.train import fit, recipe
    train = advlib.data.load("digits", "train")
    k = 3 if args.quick else 10
    methods = {"standard": None, "pgd": ("pgd", {"eps": 0.1, "steps": k}),
               "trades": ("trades", {"eps": 0.1, "steps": k}), "sprout": ("sprout", {}),
               "cat": ("cat", {"eps_max": 0.1, "steps": k})}
    repeats = 1 if args.quick else args.repeats
    times = {m: [] for m in methods}
    warm = torch.utils.data.TensorDataset(*train[:128])
    for spec in methods.values():  # untimed warm-up: the first calls pay for allocations and kernel choices
        fit(_cnn(train), warm, epochs=1, batch_size=64, recipe=recipe(spec[0], **spec[1]) if spec else None,
            progress=False)
    for _ in range(repeats):  # interleaved: every method once per round
        for m, spec in methods.items():
            model = _cnn(train)
            r = recipe(spec[0], **spec[1]) if spec else None
            t0 = time.perf_counter()
            fit(model, train, epochs=1, lr=2e-3, batch_size=64, recipe=r, progress=False)
            times[m].append(time.perf_counter() - t0)
    base = statistics.median(times["standard"])
    print(f"\nTraining cost: seconds per epoch, {len(train)} digits, batch 64, k = {k} attack steps, "
          f"median of {repeats} interleaved rounds")
    print(f"{'recipe':<10} {'s/epoch':>8} {'x plain':>8} {'x (k+1)':>8}")
    for m in methods:
        t = statistics.median(times[m])
        print(f"{m:<10} {t:8.3f} {t / base:8.2f} {t / base / (k + 1):8.2f}")
    print("(x (k+1): the ratio to plain training over the k + 1 forward/backward passes of k-step PGD training; "
          "about 1 means the recipe costs what its passes cost)")


# ---------------------------------------------------------------------------------------- one process vs torchrun
TORCHRUN_SCRIPT = r'''
import sys, time, torch, advlib
from advlib.models import build
from advlib.train import fit, init_distributed, recipe
import torch.distributed as dist
dev = init_distributed()
train = advlib.data.load("digits", "train")
dims = [0, 2, 3]
model = build("cnn", in_shape=(1, 8, 8), channels=(16, 32), strides=(1, 2), n_classes=10,
              mean=train.x.mean(dims).tolist(), std=train.x.std(dims).tolist())
epochs = int(sys.argv[1])
t0 = time.perf_counter()
h = fit(model, train, epochs=epochs, lr=2e-3, batch_size=64, recipe=recipe("pgd", eps=0.1, steps=10), progress=False)
if not dist.is_initialized() or dist.get_rank() == 0:
    print(f"RESULT {time.perf_counter() - t0:.3f} {h['loss'][-1]:.4f}")
'''


def bench_torchrun(args) -> None:
    """PGD-10 training of digits-cnn's architecture in one process (2 threads) and data-parallel in
    two gloo processes under ``torchrun`` (1 thread each), interleaved; the start-up of torchrun is
    not counted (the script times its own training loop)."""
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path
    epochs = 1 if args.quick else 3
    repeats = 1 if args.quick else 2
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "ddp_bench.py"
        script.write_text(TORCHRUN_SCRIPT)
        torchrun = str(Path(sys.executable).with_name("torchrun"))
        runs = {"1 process x 2 threads": ([sys.executable, str(script), str(epochs)], "2"),
                "torchrun 2 x 1 thread": ([torchrun, "--standalone", "--nproc_per_node=2", str(script), str(epochs)],
                                          "1")}
        out = {k: [] for k in runs}
        for _ in range(repeats):
            for name, (cmd, threads) in runs.items():
                env = {**os.environ, "OMP_NUM_THREADS": threads,
                       "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
                res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
                if res.returncode != 0:
                    raise SystemExit(f"{name} failed:\n{res.stderr[-2000:]}")
                line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")][0].split()
                out[name].append((float(line[1]), float(line[2])))
    print(f"\nData parallel: PGD-10 training, {epochs} epochs of the digits, median of {repeats} interleaved runs")
    one = statistics.median(t for t, _ in out["1 process x 2 threads"])
    for name, rows in out.items():
        t = statistics.median(r[0] for r in rows)
        print(f"{name:<24} {t:8.2f} s  x{one / t:5.2f} speed-up  final loss {rows[-1][1]:.4f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--section", choices=("eval", "train", "torchrun", "all"), default="all",
                    help="which benchmarks to run")
    ap.add_argument("--points", type=int, default=500, help="test points (default: all 500 digits)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10,
                    help="steps per APGD run and FAB target in both libraries (torchattacks' standard: 10)")
    ap.add_argument("--queries", type=int, default=5000, help="Square queries per point in both libraries")
    ap.add_argument("--device", default=None)
    ap.add_argument("--quick", action="store_true", help="a smoke run: 64 points, 1 repeat, 5 steps, 100 queries")
    a = ap.parse_args(argv)
    if a.quick:
        a.points, a.repeats, a.steps, a.queries = 64, 1, 5, 100
    print(f"advlib {advlib.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    if a.section in ("train", "all"):
        bench_train(a)
    if a.section in ("torchrun", "all"):
        bench_torchrun(a)
    if a.section in ("eval", "all"):
        bench_evaluate(a)


if __name__ == "__main__":
    main()
