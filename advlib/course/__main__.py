"""``python -m advlib.course check`` (the environment check) and the homework copies:
``python -m advlib.course strip LECTURE.md [-o OUT.ipynb | -o DIR]`` (one lecture without its solutions)
and ``python -m advlib.course strip --all -o DIR`` (the student edition of every lecture)."""
from __future__ import annotations

import argparse
from pathlib import Path

SOLUTION_TAG = "solution"
# the lectures of the repository this package is installed from (``pip install -e .``)
LECTURES = Path(__file__).resolve().parents[2] / "lectures"
LECTURE_GLOB = "[0-9][0-9]_*.md"


def homework_name(src: str | Path) -> str:
    """The file name of a lecture's student edition: ``01_white_box_attacks_homework.ipynb``."""
    return Path(src).stem + "_homework.ipynb"


def strip(src: str | Path, out: str | Path | None = None) -> Path:
    """Write ``src`` (a lecture, .md or .ipynb) without its cells tagged ``solution``, outputs cleared.

    ``out`` is a file (``.ipynb``, or ``.md`` for MyST) or an existing folder; by default the copy
    is written next to ``src`` as ``NAME_homework.ipynb``. The exercise checks stay: run on the
    unattempted stubs they say "not attempted yet".
    """
    import jupytext

    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"no such lecture: {src}")
    nb = jupytext.read(src)
    nb.cells = [c for c in nb.cells if SOLUTION_TAG not in c.get("metadata", {}).get("tags", [])]
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    if out is None:
        out = src.with_name(homework_name(src))
    else:
        out = Path(out)
        if out.is_dir():
            out = out / homework_name(src)
    if out.resolve() == src.resolve():
        raise ValueError(f"the homework copy would overwrite the lecture itself: {src}")
    jupytext.write(nb, out, fmt="md:myst" if out.suffix == ".md" else "ipynb")
    return out


def lectures(folder: str | Path = LECTURES) -> list[Path]:
    """The lectures (``NN_*.md``) of ``folder``, in course order; an error if it holds none."""
    folder = Path(folder)
    found = sorted(folder.glob(LECTURE_GLOB))
    if not found:
        raise FileNotFoundError(f"no lectures ({LECTURE_GLOB}) in {folder}: pass --lectures DIR")
    return found


def strip_all(out_dir: str | Path, folder: str | Path = LECTURES) -> list[Path]:
    """Write the student edition of every lecture of ``folder`` into ``out_dir`` (created if needed),
    one ``NAME_homework.ipynb`` per lecture; returns their paths in course order."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--all writes one notebook per lecture: {out_dir} must be a folder")
    todo = lectures(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [strip(src, out_dir) for src in todo]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m advlib.course")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("check", help="check the environment: versions, device, profile, shipped models")
    s = sub.add_parser("strip", help="write homework copies of lectures without their solution cells",
                       description="Write a lecture without its solution cells (outputs cleared): "
                                   "`strip LECTURE.md [-o OUT]`, or every lecture with `strip --all -o DIR`.")
    s.add_argument("lecture", nargs="?", help="the lecture (.md or .ipynb)")
    s.add_argument("--all", action="store_true", help="every lecture, one NAME_homework.ipynb each into -o DIR")
    s.add_argument("-o", "--out", help="output file or folder (a folder with --all)")
    s.add_argument("--lectures", default=str(LECTURES), help="where --all finds the lectures (default: %(default)s)")
    a = p.parse_args(argv)
    if a.cmd == "check":
        from . import check_environment

        check_environment()
        return
    if a.all == bool(a.lecture):
        s.error("give either one LECTURE or --all")
    if a.all and not a.out:
        s.error("--all needs -o DIR, the folder for the student editions")
    try:
        written = strip_all(a.out, a.lectures) if a.all else [strip(a.lecture, a.out)]
    except (OSError, ValueError) as e:
        s.error(str(e))
    for path in written:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
