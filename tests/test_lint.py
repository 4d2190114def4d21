"""The library, tests, benchmarks and book scripts pass the linter (configured in pyproject.toml)."""
import subprocess
import sys


def test_ruff_is_clean():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "advlib", "tests", "benchmarks", "book",
                          "conftest.py"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
