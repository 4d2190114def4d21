"""advlib's attacks against a plain PyTorch loop and the reference libraries, in one run.

    python benchmarks/attacks.py [--n 500] [--repeats 5] [--device cpu|cuda] [--quick]

For each zoo model of the fast profile: PGD-L-inf at equal budgets (eps, steps, step size, one
random start) in advlib, a plain hand-written loop (the lower bound: one forward and one backward
pass per step), torchattacks, foolbox and ART: median time over repeats, the ratio to the plain
loop, and robust accuracy. Then C&W-L2 against foolbox's (and torchattacks' c=1 C&W) and EAD
against torchattacks' EADEN on 100 digits: median time of interleaved runs and its ratio to the
reference, success rate, median L0 / L1 / L2, and the work each does, counted (forward calls,
inputs evaluated, inputs back-propagated: deterministic, unlike the time). Timings are measured
here and now, never asserted (the tests only check that this script runs; tests/test_attacks_opt.py
asserts the work counts and distortions).
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torch.nn.functional as F

import advlib
import advlib.attacks as A

warnings.filterwarnings("ignore")


def plain_pgd(model, x, y, eps, alpha, steps):
    """The textbook loop: the baseline every PGD implementation is measured against."""
    delta = ((x + (torch.rand_like(x) * 2 - 1) * eps).clamp(0, 1) - x)
    for _ in range(steps):
        delta.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x + delta), y), delta)
        delta = (delta.detach() + alpha * g.sign()).clamp(-eps, eps)
        delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def pgd_runners(model, eps, alpha, steps):
    """name -> function(x, y) -> x_adv, each at the same budget; reference libraries if installed."""
    runners = {
        "plain loop": lambda x, y: plain_pgd(model, x, y, eps, alpha, steps),
        "advlib": lambda x, y: A.pgd(model, x, y, eps=eps, alpha=alpha, steps=steps),
    }
    try:
        import torchattacks

        atk = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
        runners["torchattacks"] = lambda x, y: atk(x, y)
    except ImportError:
        pass
    try:
        import foolbox

        fmodel = foolbox.PyTorchModel(model, bounds=(0, 1))
        fb = foolbox.attacks.LinfPGD(abs_stepsize=alpha, steps=steps, random_start=True)
        runners["foolbox"] = lambda x, y: fb(fmodel, x, y, epsilons=eps)[1]
    except ImportError:
        pass
    try:
        from art.attacks.evasion import ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier

        on_gpu = next(model.parameters()).is_cuda
        clf = PyTorchClassifier(model, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=10,
                                clip_values=(0.0, 1.0), device_type="gpu" if on_gpu else "cpu")
        art = ProjectedGradientDescent(clf, eps=eps, eps_step=alpha, max_iter=steps, num_random_init=1,
                                       batch_size=100_000, verbose=False)
        runners["ART"] = lambda x, y: torch.as_tensor(art.generate(x.cpu().numpy(), y.cpu().numpy())).to(x.device)
    except ImportError:
        pass
    return runners


def timed(runners, x, y, repeats):
    """Median seconds and last output of each runner. The runners take turns within every repeat,
    so a drift of the machine's speed (other load, clocks) hits them all alike."""
    for fn in runners.values():
        fn(x, y)  # warm-up: first-call allocations and lazy imports are not what we measure
    times, outs = {k: [] for k in runners}, {}
    for r in range(repeats):
        for k, fn in runners.items():
            torch.manual_seed(r)
            if x.is_cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            outs[k] = fn(x, y)
            if x.is_cuda:
                torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t0)
    return {k: (statistics.median(v), outs[k]) for k, v in times.items()}


def bench_pgd(models, x, y, eps, steps, repeats):
    alpha = 2.5 * eps / steps
    print(f"\nPGD-Linf, eps={eps}, {steps} steps of {alpha:.4g}, 1 random start, {len(x)} points, "
          f"median of {repeats} interleaved runs")
    print(f"{'model':<12} {'library':<13} {'time s':>8} {'x plain':>8} {'robust acc':>11}")
    for name, model in models.items():
        results = timed(pgd_runners(model, eps, alpha, steps), x, y, repeats)
        base = results["plain loop"][0]
        for lib, (t, x_adv) in results.items():
            assert (x_adv - x).abs().max() <= eps + 1e-5
            print(f"{name:<12} {lib:<13} {t:8.3f} {t / base:8.2f} {A.robust_accuracy(model, x_adv, y):11.1%}")


class Counted(torch.nn.Module):
    """A model that counts its work: forward calls, inputs evaluated forward, and inputs whose
    logits were back-propagated (each backward pass through the logits of a forward call)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.calls = self.inputs = self.backward_inputs = 0

    def forward(self, x):
        out, n = self.model(x), len(x)
        self.calls, self.inputs = self.calls + 1, self.inputs + n
        if out.requires_grad:
            out.register_hook(lambda g: self._backward(n))
        return out

    def _backward(self, n: int) -> None:
        self.backward_inputs += n


def opt_runners(model, steps):
    """attack -> {library: function(x, y) -> x_adv} for the minimum-distance attacks, advlib first
    and the reference it is compared with second. Shared budget: ``steps`` per binary-search round,
    9 rounds, kappa 0; EAD: beta 1e-2, lr 0.01 in both. The rest at each library's defaults
    (advlib: initial c 1, C&W lr 0.05; foolbox C&W: c 1e-3, lr 0.01; EADEN: c 1e-3), with the
    early abort of each."""
    import foolbox
    import torchattacks

    fmodel = foolbox.PyTorchModel(model, bounds=(0, 1))
    fb_cw = foolbox.attacks.L2CarliniWagnerAttack(steps=steps)
    ta_ead = torchattacks.EADEN(model, kappa=0, lr=0.01, binary_search_steps=9, max_iterations=steps, beta=1e-2)
    # torchattacks' C&W has no search on c (c=1) and cannot move pixels at exactly 0 or 1
    ta_cw = torchattacks.CW(model, c=1, steps=steps, lr=0.01)
    return {
        "C&W-L2": {"advlib": lambda x, y: A.cw_l2(model, x, y, steps=steps),
                   "foolbox": lambda x, y: fb_cw(fmodel, x, y, epsilons=None)[0],
                   "torchattacks(c=1)": lambda x, y: ta_cw(x, y)},
        "EAD-EN": {"advlib": lambda x, y: A.ead(model, x, y, steps=steps),
                   "torchattacks": lambda x, y: ta_ead(x, y)},
    }


def bench_opt(models, x, y, steps, repeats):
    """One interleaved timing run of the minimum-distance attacks, then one counted run each: time
    and its ratio to the reference library (the second of each attack), success, median L0 / L1 / L2
    of the successes, and the model's work (forward calls, inputs evaluated, inputs back-propagated)."""
    print(f"\nC&W-L2 and EAD, {steps} steps per binary-search round, 9 rounds, {len(x)} points (correctly "
          f"classified only), median time of {repeats} interleaved runs")
    print(f"{'model':<12} {'attack':<8} {'library':<18} {'time s':>7} {'x ref':>6} {'success':>8} {'med L0':>7} "
          f"{'med L1':>7} {'med L2':>7} {'fwd calls':>10} {'inputs':>8} {'bwd inputs':>11}")
    for name, model in models.items():
        ok = advlib.train.predict(model, x) == y
        xs, ys = x[ok], y[ok]
        groups = opt_runners(model, steps)
        flat = {(attack, lib): fn for attack, libs in groups.items() for lib, fn in libs.items()}
        results = timed(flat, xs, ys, repeats)
        for attack, libs in groups.items():
            ref = results[attack, list(libs)[1]][0]
            for lib in libs:
                t, _ = results[attack, lib]
                counted = Counted(model).eval()
                torch.manual_seed(0)
                x_adv = opt_runners(counted, steps)[attack][lib](xs, ys)
                # an unchanged input is a failure (foolbox returns a blank image where it fails, and
                # counts it as a success when the blank image happens to be misclassified)
                changed = (x_adv - xs).flatten(1).abs().sum(1) > 0
                blank = x_adv.flatten(1).abs().sum(1) == 0
                success = (advlib.train.predict(model, x_adv) != ys) & changed & ~blank
                d = A.distortion(xs, x_adv, success)
                print(f"{name:<12} {attack:<8} {lib:<18} {t:7.2f} {t / ref:6.2f} {success.float().mean():8.1%} "
                      f"{d['l0']:7.0f} {d['l1']:7.3f} {d['l2']:7.3f} {counted.calls:10d} {counted.inputs:8d} "
                      f"{counted.backward_inputs:11d}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500, help="test points (default: all 500 digits)")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--device", default=None)
    ap.add_argument("--quick", action="store_true", help="a smoke run: 64 points, 1 repeat, 5 steps")
    a = ap.parse_args(argv)
    if a.quick:
        a.n, a.repeats, a.steps = 64, 1, 5
    dev = torch.device(a.device) if a.device else advlib.device()
    test = advlib.data.load("digits", "test", device=dev)
    x, y = test.x[: a.n], test.y[: a.n]
    models = {m: advlib.zoo.load(m, dev) for m in advlib.PROFILES["fast"].models}
    print(f"advlib {advlib.__version__}, torch {torch.__version__}, device {dev}, "
          f"{torch.get_num_threads()} threads")
    bench_pgd(models, x, y, eps=0.1, steps=a.steps, repeats=a.repeats)
    bench_opt(models, x[: min(a.n, 100)], y[: min(a.n, 100)], steps=10 if a.quick else 100,
              repeats=1 if a.quick else 3)


if __name__ == "__main__":
    main()
