"""``python -m advlib.course check`` (the environment check) and
``python -m advlib.course strip LECTURE.md [-o OUT.ipynb]`` (a homework copy without solutions)."""
from __future__ import annotations

import argparse
from pathlib import Path

SOLUTION_TAG = "solution"


def strip(src: str | Path, out: str | Path | None = None) -> Path:
    """Write ``src`` (a lecture, .md or .ipynb) without its cells tagged ``solution``, outputs cleared."""
    import jupytext

    src = Path(src)
    nb = jupytext.read(src)
    nb.cells = [c for c in nb.cells if SOLUTION_TAG not in c.get("metadata", {}).get("tags", [])]
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    out = Path(out) if out else src.with_name(src.stem + "_homework.ipynb")
    jupytext.write(nb, out, fmt="md:myst" if out.suffix == ".md" else "ipynb")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m advlib.course")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("check", help="check the environment: versions, device, profile, shipped models")
    s = sub.add_parser("strip", help="write a homework copy of a lecture without its solution cells")
    s.add_argument("lecture")
    s.add_argument("-o", "--out")
    a = p.parse_args(argv)
    if a.cmd == "check":
        from . import check_environment

        check_environment()
    else:
        print(f"wrote {strip(a.lecture, a.out)}")


if __name__ == "__main__":
    main()
