"""Measure how long every lecture takes to execute, and record it for the book's landing page.

    python book/timings.py [--profile fast|full] [--size standard|toy] [--jobs N] [LECTURE ...]

Each lecture runs top to bottom in a fresh kernel, with the lectures' folder as working directory
(as nbval and the book run them), ``--jobs`` at a time with ``cores / jobs`` threads each. The wall
time of each, with the machine it ran on (CPU count, device, torch), is written into
``book/timings.json`` under ``PROFILE/SIZE``, replacing that run's earlier record; the landing page
(``book/intro.md``, through ``book/_ext/lecture_timings.py``) shows every recorded run as a column.
A lecture that fails is recorded as failed, not timed. Run it on a quiet machine: the numbers are
the point.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "book" / "timings.json"


def machine() -> dict:
    import torch

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    return {"cpus": os.cpu_count(), "device": torch.cuda.get_device_name(0) if dev == "cuda" else "CPU only",
            "torch": torch.__version__, "python": platform.python_version(), "system": platform.platform(terse=True)}


def run(lecture: Path, threads: int) -> tuple[str, float | None, str]:
    """(lecture stem, seconds or None, the error if it failed)."""
    import jupytext
    from nbclient import NotebookClient

    nb = jupytext.read(lecture)
    t0 = time.perf_counter()
    try:
        NotebookClient(nb, timeout=3600, kernel_name="python3",
                       resources={"metadata": {"path": str(lecture.parent)}}).execute(
            env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    except Exception as e:  # noqa: BLE001 - recorded, and the run goes on
        return lecture.stem, None, f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:200]}"
    return lecture.stem, round(time.perf_counter() - t0, 1), ""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profile", default="fast")
    p.add_argument("--size", default="standard")
    p.add_argument("--jobs", type=int, default=1, help="lectures at once (default: %(default)s)")
    p.add_argument("--label", help="the column's heading (default: from the profile, size and machine)")
    p.add_argument("lectures", nargs="*", help="lecture files (default: every lectures/NN_*.md)")
    a = p.parse_args(argv)
    os.environ.update(ADVLIB_PROFILE=a.profile, ADVLIB_SIZE=a.size, MPLBACKEND="Agg",
                      ADVLIB_OFFLINE=os.environ.get("ADVLIB_OFFLINE", "1"))
    todo = [Path(x).resolve() for x in a.lectures] or sorted((ROOT / "lectures").glob("[0-9][0-9]_*.md"))
    threads = max(1, (os.cpu_count() or 1) // a.jobs)
    info = machine()
    seconds, failed = {}, {}
    with ThreadPoolExecutor(a.jobs) as pool:
        for stem, s, err in pool.map(lambda lec: run(lec, threads), todo):
            print(f"{stem:<36} {'FAILED: ' + err if s is None else f'{s:7.1f} s'}", flush=True)
            (failed.__setitem__(stem, err) if s is None else seconds.__setitem__(stem, s))
    record = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    key = f"{a.profile}/{a.size}"
    old = record.get(key, {})
    where = f"{info['cpus']} CPU cores" if info["device"] == "CPU only" else info["device"]
    record[key] = {
        "label": a.label or f"{a.profile}{'' if a.size == 'standard' else ', ' + a.size + ' size'} ({where})",
        "date": datetime.date.today().isoformat(), "machine": info, "jobs": a.jobs, "threads": threads,
        "seconds": {**old.get("seconds", {}), **seconds}, "failed": failed}
    RECORD.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"recorded {len(seconds)} lecture(s) under {key!r} in {RECORD}"
          + (f"; {len(failed)} failed" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
