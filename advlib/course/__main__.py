"""``python -m advlib.course check`` (the environment check), the homework copies and their grading:

* ``strip LECTURE.md [-o OUT.ipynb | -o DIR]``: one lecture without its solutions;
  ``strip --all -o DIR``: the student edition of every lecture, ready to hand out;
* ``grade SUBMISSIONS -o RESULTS``: grade a class's submissions (see :mod:`advlib.course.grading`);
* ``key --all -o DIR``: the student editions answered with the hidden solutions, to try the grader on.
"""
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


def student_edition(src: str | Path):
    """The notebook of ``src`` (a lecture, .md or .ipynb) without its cells tagged ``solution``,
    outputs cleared. Its metadata names the lecture (``advlib.lecture``), and each exercise's stub
    and check cell carry ``advlib: {exercise: N, role: "answer" | "check"}``, by which the grader
    finds them again in a submission (Jupyter keeps cell metadata through edits and copies)."""
    import jupytext

    from .grading import exercises

    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"no such lecture: {src}")
    nb = jupytext.read(src)
    exs = exercises(src)
    nb.cells = [c for c in nb.cells if SOLUTION_TAG not in c.get("metadata", {}).get("tags", [])]
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    for ex in exs:  # an answer written into the check cell itself: that cell is the check
        for role, source in ((("answer", ex.answer),) if not ex.answer_in_check else ()) + (("check", ex.check),):
            cell = next(c for c in nb.cells if c.source == source and "advlib" not in c.metadata)
            cell.metadata["advlib"] = {"exercise": ex.number, "role": role}
    nb.metadata["advlib"] = {"lecture": src.stem, "edition": "student"}
    return nb


def _write(nb, src: Path, out: str | Path | None) -> Path:
    import jupytext

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


def strip(src: str | Path, out: str | Path | None = None) -> Path:
    """Write the :func:`student_edition` of ``src`` (a lecture, .md or .ipynb): no solution cells,
    outputs cleared. ``out`` is a file (``.ipynb``, or ``.md`` for MyST) or an existing folder; by
    default the copy is written next to ``src`` as ``NAME_homework.ipynb``. The exercise checks
    stay: run on the unattempted stubs they say "not attempted yet"."""
    return _write(student_edition(src), Path(src), out)


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


def key_all(out_dir: str | Path, folder: str | Path = LECTURES) -> list[Path]:
    """Write every lecture's :func:`~advlib.course.grading.answer_key` (the student edition answered
    with the hidden solutions) into ``out_dir``, under the student edition's file names."""
    from .grading import answer_key

    out_dir = Path(out_dir)
    todo = lectures(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [_write(answer_key(src), src, out_dir) for src in todo]


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
    k = sub.add_parser("key", help="write the student editions answered with the solutions (to try the grader on)")
    k.add_argument("--all", action="store_true", required=True, help="every lecture, into -o DIR")
    k.add_argument("-o", "--out", required=True, help="the folder to write into")
    k.add_argument("--lectures", default=str(LECTURES), help="where the lectures are (default: %(default)s)")
    g = sub.add_parser("grade", help="grade a folder of submissions (one subfolder or .ipynb per student)",
                       description="Execute every submitted notebook in its own kernel (time limits, no "
                                   "network), run the lectures' own checks, and write grades.csv, details.csv, "
                                   "summary.md and feedback/STUDENT.md into -o RESULTS.")
    g.add_argument("submissions", help="folder: SUBMISSIONS/STUDENT/*.ipynb or SUBMISSIONS/STUDENT.ipynb")
    g.add_argument("-o", "--out", required=True, help="the results folder (created)")
    g.add_argument("--jobs", type=int, default=None, help="notebooks graded at once (default: one per core)")
    g.add_argument("--timeout", type=float, default=1200, help="seconds a notebook may run (default: %(default)s)")
    g.add_argument("--cell-timeout", type=float, default=300, help="seconds a cell may run (default: %(default)s)")
    g.add_argument("--size", choices=["toy", "standard"], default="toy",
                   help="ADVLIB_SIZE of the kernels (default: %(default)s; the checks do not depend on it)")
    g.add_argument("--profile", default="fast", help="ADVLIB_PROFILE of the kernels (default: %(default)s)")
    g.add_argument("--lecture", help="the lecture of notebooks whose metadata and file name do not say")
    g.add_argument("--lectures", default=str(LECTURES), help="where the lectures are (default: %(default)s)")
    a = p.parse_args(argv)
    if a.cmd == "check":
        from . import check_environment

        check_environment()
        return
    if a.cmd == "grade":
        from .grading import grade

        try:
            results = grade(a.submissions, a.out, lectures=a.lectures, lecture=a.lecture, jobs=a.jobs,
                            timeout=a.timeout, cell_timeout=a.cell_timeout, size=a.size, profile=a.profile)
        except (OSError, ValueError) as e:
            g.error(str(e))
        print((Path(a.out) / "summary.md").read_text())
        print(f"graded {len(results)} notebook(s): see {a.out}/grades.csv and {a.out}/feedback/")
        return
    if a.cmd == "key":
        try:
            written = key_all(a.out, a.lectures)
        except (OSError, ValueError) as e:
            k.error(str(e))
        for path in written:
            print(f"wrote {path}")
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
