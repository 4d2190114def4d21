"""The GPU check script runs end to end (on the CPU here) and reports its checks."""
import subprocess
import sys


def test_gpu_check_runs_on_cpu():
    out = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--quick"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 failed" in out.stdout and "input gradients / s" in out.stdout


def test_gpu_check_without_cuda_says_so():
    import torch

    if torch.cuda.is_available():
        return
    out = subprocess.run([sys.executable, "benchmarks/gpu_check.py"], capture_output=True, text=True)
    assert out.returncode == 1 and "--device cpu" in out.stdout


def test_attack_benchmark_runs_and_agrees():
    out = subprocess.run([sys.executable, "benchmarks/attacks.py", "--quick", "--device", "cpu"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [ln.split() for ln in out.stdout.splitlines() if ln.startswith("digits-")]
    libs = {r[1] for r in rows}
    assert {"plain", "advlib", "torchattacks", "foolbox", "ART"} <= libs
