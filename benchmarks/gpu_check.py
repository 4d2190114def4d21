"""GPU-only checks and timings, in a few minutes on a machine with CUDA.

    python benchmarks/gpu_check.py            # on the GPU (fails if there is none)
    python benchmarks/gpu_check.py --device cpu --quick   # the same checks on the CPU (used by the tests)

Checks that the zoo, the data and the training loop work on the device and agree with the CPU, that
seeded training repeats, and prints timings measured in this run: a batched forward+backward pass
(the unit of every gradient attack) on the CPU and the device, and zoo training. Exit status 1 if any
check fails.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import advlib
from advlib.train import accuracy, predict

RESULTS: list[tuple[str, bool, str]] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    RESULTS.append((name, bool(ok), detail))
    print(f"[{'PASS' if ok else 'FAIL'}] {name}" + (f": {detail}" if detail else ""), flush=True)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def time_grad_steps(model, x, y, steps: int, repeats: int) -> float:
    """Median seconds for `steps` forward+backward passes w.r.t. the input (what PGD costs)."""
    times = []
    for _ in range(repeats):
        sync(x.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            xi = x.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(model(xi), y), xi)
        sync(x.device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="default: cuda (required)")
    ap.add_argument("--quick", action="store_true", help="fewer repeats, no zoo retraining")
    a = ap.parse_args(argv)
    if a.device is None and not torch.cuda.is_available():
        print("no CUDA device here: run with --device cpu to exercise the script on the CPU")
        return 1
    dev = torch.device(a.device or "cuda")
    cpu = torch.device("cpu")
    print(f"torch {torch.__version__}, advlib {advlib.__version__}, device {dev}", end="")
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        print(f" = {p.name}, {p.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}, "
              f"cuDNN {torch.backends.cudnn.version()}")
    else:
        print()

    test = advlib.data.load("digits", "test")
    on_dev = advlib.data.load("digits", "test", device=dev)
    check("data loads onto the device", on_dev.x.device.type == dev.type and torch.equal(on_dev.x.cpu(), test.x))

    for name in advlib.PROFILES["fast"].models:
        m_cpu, m_dev = advlib.zoo.load(name, cpu), advlib.zoo.load(name, dev)
        check(f"{name} loads on {dev.type} in eval mode",
              next(m_dev.parameters()).device.type == dev.type and not m_dev.training)
        with torch.no_grad():
            diff = (m_cpu(test.x) - m_dev(on_dev.x).cpu()).abs().max().item()
        agree = (predict(m_cpu, test.x) == predict(m_dev, on_dev.x).cpu()).float().mean().item()
        check(f"{name}: device logits match the CPU", diff < 1e-3 and agree == 1.0,
              f"max |diff| {diff:.2e}, predictions agree on {agree:.1%}")
        acc = accuracy(m_dev, on_dev.x, on_dev.y)
        check(f"{name}: accuracy on the device equals the manifest",
              abs(acc - advlib.zoo.manifest()[name]["test_accuracy"]) < 1e-4, f"{acc:.4f}")

    # The unit cost of every gradient attack: forward+backward w.r.t. the input, batched.
    steps, repeats = (10, 3) if a.quick else (40, 7)
    print(f"\n{steps} input-gradient steps on 500 test digits (median of {repeats}):")
    print(f"{'model':<12} {'cpu s':>8} {dev.type + ' s':>8} {'speed-up':>9}")
    for name in advlib.PROFILES["fast"].models:
        t_cpu = time_grad_steps(advlib.zoo.load(name, cpu), test.x, test.y, steps, repeats)
        t_dev = time_grad_steps(advlib.zoo.load(name, dev), on_dev.x, on_dev.y, steps, repeats)
        print(f"{name:<12} {t_cpu:8.3f} {t_dev:8.3f} {t_cpu / t_dev:8.1f}x")
    n = 512 if a.quick else 8192
    big = torch.rand(n, 1, 28, 28, device=dev)
    net = advlib.models.small_cnn((1, 28, 28), strides=(2, 2)).to(dev).eval()
    t_big = time_grad_steps(net, big, torch.randint(0, 10, (n,), device=dev), steps, repeats)
    print(f"MNIST-size small CNN, batch {n}: {t_big:.3f} s for {steps} steps "
          f"({steps * n / t_big:,.0f} input gradients / s)")

    # Seeded training repeats on the device; the zoo recipe reaches its accuracy there too.
    runs = []
    for _ in range(2):
        advlib.seed_everything(0)
        m = advlib.models.mlp((1, 8, 8), hidden=(64,)).to(dev)
        advlib.train.fit(m, advlib.data.load("digits", "train"), epochs=2, device=dev, progress=False)
        runs.append([p.detach().cpu() for p in m.parameters()])
    diff = max((p - q).abs().max().item() for p, q in zip(*runs))
    check("seeded training repeats on the device", diff < 1e-5, f"max weight difference {diff:.1e}")
    if not a.quick:
        for name in advlib.PROFILES["fast"].models:
            t0 = time.perf_counter()
            _, acc = advlib.zoo.train(name, device=dev, progress=False)
            sync(dev)
            ref = advlib.zoo.manifest()[name]["test_accuracy"]
            check(f"retraining {name} on {dev.type} reproduces the accuracy within 1 point", abs(acc - ref) <= 0.01,
                  f"{acc:.4f} vs shipped {ref:.4f}, {time.perf_counter() - t0:.1f} s")

    failed = [r for r in RESULTS if not r[1]]
    print(f"\n{len(RESULTS) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
