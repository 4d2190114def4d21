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



def test_verify_benchmark_runs():
    out = subprocess.run([sys.executable, "benchmarks/verify.py", "--quick"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [ln.split() for ln in out.stdout.splitlines() if ln.strip()]
    methods, zoo = ("ibp", "fastlin", "crown"), ("digits-mlp", "digits-mlp-pgd", "digits-mlp-ibp", "digits-cnn")
    timed = {(r[0], r[2]) for r in rows if r[0] in zoo and r[1] in ("0.01", "0.05")}
    assert {(m, k) for m in ("digits-mlp", "digits-cnn") for k in (*methods, "dense")} <= timed
    assert "auto_LiRPA (REFERENCES.md" in out.stdout and "not installed" in out.stdout and "max |diff|" in out.stdout
    tightness = {(r[0], r[3]) for r in rows if r[0] in zoo and r[1].endswith("%")}
    radii = {(r[0], r[1]) for r in rows if r[0] in zoo and r[1] in methods and len(r) == 5}
    assert {(m, k) for m in zoo for k in methods} <= tightness & radii
    complete = {r[0] for r in rows if r[0] in zoo and len(r) >= 12 and r[2].endswith("%") and r[4].endswith("%")}
    assert complete == {"digits-mlp", "digits-mlp-pgd", "digits-mlp-ibp"} and "auto_LiRPA alpha" in out.stdout
    oracle = {(r[0], r[1]): r[-1] for r in rows if r[0] in ("tiny", "small")}
    for family in ("tiny", "small"):
        assert {(family, k) for k in ("LP(crown", "LP-all", "MILP")} <= oracle.keys()
        assert all(oracle[family, k] == "0" for k in methods), out.stdout  # no bound above the exact minimum


def test_blackbox_benchmark_runs():
    out = subprocess.run([sys.executable, "benchmarks/blackbox.py", "--quick", "--threads", "1"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    names = ("Sign-OPT", "HopSkipJump", "Boundary", "ZOO")
    assert all(f"\n{n}" in out.stdout for n in (*names, "OPT", "AutoZOOM"))
    assert "3. ART" in out.stdout and "batched / loop" in out.stdout and "speed-up" in out.stdout


def test_defenses_benchmark_runs():
    out = subprocess.run([sys.executable, "benchmarks/defenses.py", "--quick"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [ln.split() for ln in out.stdout.splitlines() if ln.strip()]
    assert {"standard", "pgd", "trades", "sprout", "cat"} <= {r[0] for r in rows if len(r) == 4}
    assert "torchrun 2 x 1 thread" in out.stdout and "1 process x 2 threads" in out.stdout
    evals = {(r[0], r[1]) for r in rows if r[0].startswith("digits-")}
    assert {("digits-mlp", "advlib"), ("digits-mlp", "torchattacks"), ("digits-cnn-pgd", "advlib")} <= evals


def test_backdoor_benchmark_runs():
    out = subprocess.run([sys.executable, "benchmarks/backdoor.py", "--quick"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [ln.split() for ln in out.stdout.splitlines() if ln.startswith(("DL-TND", "Neural", "DF-TND"))]
    detectors = {" ".join(r[:2]) if r[0] == "Neural" else r[0] for r in rows}
    assert {"DL-TND", "Neural Cleanse", "DF-TND"} <= detectors
    assert any("the batched DL-TND's time" in ln for ln in out.stdout.splitlines())


def test_reprogram_benchmark_runs():
    out = subprocess.run([sys.executable, "benchmarks/reprogram.py", "--quick"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    step = [ln for ln in lines if ln.startswith("BAR step")]
    assert step and all("(batched) =" in ln for ln in step)
    for ln in step:  # the batched estimate and the loop make the same queries
        counts = ln.split("queries per step")[1].replace("(batched)", "").replace("(loop)", "").split("=")
        assert int(counts[0]) == int(counts[1]) > 0
    assert any(ln.startswith("AR epoch") for ln in lines)
    dtw = [ln for ln in lines if ln.startswith("1-NN DTW")]
    assert dtw and ("pyts not installed" in dtw[0] or dtw[0].split("accuracy")[1].split()[0]
                    == dtw[0].split("vs")[-1].split()[0])


def test_applications_benchmark_runs():
    out = subprocess.run([sys.executable, "benchmarks/applications.py", "--quick"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    for name in ("StrAttack", "CEM PN"):  # one batch or one example at a time: the same optimisation
        row = next(ln for ln in lines if ln.startswith(name))
        assert float(row.split("max |difference|")[1]) < 1e-4, row
    read = next(ln for ln in lines if ln.startswith("Watermark read"))
    counts = read.split("queries")[1].split("same bits")[0].replace("(batched)", "").replace("(loop)", "").split("=")
    assert int(counts[0]) == int(counts[1]) > 0 and read.endswith("same bits True"), read
    assert any(ln.startswith("Copycat") and "agreement" in ln for ln in lines)


def test_federated_sequences_benchmark_runs():
    out = subprocess.run([sys.executable, "benchmarks/federated_sequences.py", "--quick"], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    for name in ("Krum", "Trimmed mean", "Bulyan"):  # vectorised and looped: the same rule
        row = next(ln for ln in lines if ln.startswith(name))
        assert float(row.split("max |difference|")[1]) < 1e-5, row
    row = next(ln for ln in lines if ln.startswith("Sequence PGD"))
    batched, loop = (float(v.split()[0]) for v in row.split("reached")[1].split("vs"))
    assert abs(batched - loop) < 0.1, row


def test_report_benchmark_runs_and_agrees():
    out = subprocess.run([sys.executable, "benchmarks/report.py", "--quick"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [ln for ln in out.stdout.splitlines() if ln.startswith("digits")]
    assert len(rows) == 2 and all(" True " in ln for ln in rows), out.stdout  # the report = the lecture-level calls
