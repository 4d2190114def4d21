"""The homework copies: `python -m advlib.course strip` writes every lecture's student edition
(solutions removed, checks kept, outputs cleared), and `or_reference` lets an edition whose
exercises are stubs run to its end.

That every student edition does run to its end, each exercise "not attempted", is tested by the
grader on an untouched class (tests/test_grading.py), which executes them all.
"""
from __future__ import annotations

import re
from pathlib import Path

import jupytext
import nbformat
import pytest

from advlib.course import or_reference
from advlib.course.__main__ import SOLUTION_TAG, main, strip, strip_all

ROOT = Path(__file__).resolve().parents[1]
LECTURES = sorted(ROOT.glob("lectures/[0-9][0-9]_*.md"))
NOT_ATTEMPTED = "not attempted yet"


def _is_check(cell) -> bool:
    """An exercise check run on the learner's answer (the strict one lives in the solution cell)."""
    return cell.cell_type == "code" and bool(re.search(r"\.check_\w+\(", cell.source)) \
        and "strict=True" not in cell.source


# --- or_reference: what later cells call in place of an unattempted exercise -------------------------

def _reference(x, scale=1):
    """The reference answer."""
    return ("reference", x * scale)


def _stub(x, scale=1):
    raise NotImplementedError


def test_or_reference_uses_the_answer_when_there_is_one(capsys):
    fn = or_reference(lambda x, scale=1: ("answer", x * scale), _reference, title="Exercise 1")
    assert fn(2, scale=3) == ("answer", 6)
    assert capsys.readouterr().out == ""


def test_or_reference_stands_in_for_a_stub_and_says_so_once(capsys):
    fn = or_reference(_stub, _reference, title="Exercise 2")
    assert fn(2, scale=3) == ("reference", 6)
    first = capsys.readouterr().out
    assert "Exercise 2" in first and NOT_ATTEMPTED in first
    assert fn(5) == ("reference", 5)
    assert capsys.readouterr().out == ""  # told once, not at every call
    assert fn.__name__ == "_reference" and fn.__doc__ == _reference.__doc__


def test_or_reference_does_not_hide_a_wrong_answer():
    def broken(x, scale=1):
        raise ValueError("a bug in the learner's answer")

    with pytest.raises(ValueError, match="a bug"):
        or_reference(broken, _reference, title="Exercise 3")(1)


def test_or_reference_each_wrapper_tells_on_its_own(capsys):
    a, b = (or_reference(_stub, _reference, title=t) for t in ("Exercise 1", "Exercise 2"))
    a(1), b(1)
    out = capsys.readouterr().out
    assert "Exercise 1" in out and "Exercise 2" in out


# --- strip --all ---------------------------------------------------------------------------------------

def test_strip_all_writes_one_student_edition_per_lecture(tmp_path, capsys):
    main(["strip", "--all", "-o", str(tmp_path / "hw")])
    written = sorted((tmp_path / "hw").iterdir())
    assert [p.name for p in written] == [f"{p.stem}_homework.ipynb" for p in LECTURES]
    assert capsys.readouterr().out.count("wrote ") == len(LECTURES)
    for lecture, out in zip(LECTURES, written):
        full, hw = jupytext.read(lecture), nbformat.read(out, as_version=4)
        kept = [c for c in full.cells if SOLUTION_TAG not in c.metadata.get("tags", [])]
        assert [c.source for c in hw.cells] == [c.source for c in kept]
        assert sum(map(_is_check, hw.cells)) == sum(map(_is_check, full.cells)) > 0
        assert not any(c.get("outputs") for c in hw.cells)
        assert hw.metadata.kernelspec.name == "python3"


def test_strip_one_lecture_into_a_folder(tmp_path):
    assert strip(LECTURES[0], tmp_path) == tmp_path / f"{LECTURES[0].stem}_homework.ipynb"


@pytest.mark.parametrize("argv, message", [
    (["strip"], "either one LECTURE or --all"),
    (["strip", "--all"], "needs -o DIR"),
    (["strip", "--all", "-o", "x", "lectures/00_introduction.md"], "either one LECTURE or --all"),
    (["strip", "no_such_lecture.md"], "no such lecture"),
])
def test_strip_refuses_bad_arguments_clearly(argv, message, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert message in capsys.readouterr().err


def test_strip_all_refuses_a_file_or_an_empty_folder(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(NotADirectoryError, match="must be a folder"):
        strip_all(tmp_path / "f")
    with pytest.raises(FileNotFoundError, match="no lectures"):
        strip_all(tmp_path / "out", folder=tmp_path)


def test_strip_does_not_overwrite_the_lecture(tmp_path):
    src = tmp_path / "00_x.md"
    src.write_text(LECTURES[0].read_text())
    with pytest.raises(ValueError, match="overwrite"):
        strip(src, src)
