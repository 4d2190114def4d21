"""The homework copy runs: every lecture's student edition (`python -m advlib.course strip`: solutions
removed, checks kept, outputs cleared) executes top to bottom with its exercises unattempted, and
each exercise check says "not attempted yet".

The student editions are written to a temporary folder (never next to the lectures, where nbval
would collect them as notebooks of their own) and executed with the lectures' folder as working
directory, like nbval runs the lectures, with a kernel from the current environment. They run in
the normal `make test`: under `--dist loadfile` this file is one unit of work for one worker.
"""
from __future__ import annotations

import re
from pathlib import Path

import ipykernel.kernelspec
import jupytext
import nbformat
import pytest
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

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


# --- the student editions run --------------------------------------------------------------------------

class _CurrentEnv(KernelSpecManager):
    """"python3" is this interpreter's ipykernel, whatever kernelspecs the user has installed."""

    def get_kernel_spec(self, kernel_name):
        if kernel_name == "python3":
            return self.kernel_spec_class(resource_dir=ipykernel.kernelspec.RESOURCES,
                                          **ipykernel.kernelspec.get_kernel_dict())
        return super().get_kernel_spec(kernel_name)


def _where(nb) -> str:
    """The first cell that raised: its number among the code cells, the error and its traceback's end."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    for i, c in enumerate(code, 1):
        for o in c.get("outputs", []):
            if o.output_type == "error":
                trace = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(o.get("traceback", [])))
                tail = "\n".join(trace.splitlines()[-20:])
                return f"code cell {i} of {len(code)} raised {o.ename}: {o.evalue}\n{tail}"
    return "no cell output records the error"


@pytest.mark.parametrize("lecture", LECTURES, ids=lambda p: p.stem)
def test_student_edition_runs_to_the_end(lecture, tmp_path):
    nb = nbformat.read(strip(lecture, tmp_path), as_version=4)
    assert not any(SOLUTION_TAG in c.metadata.get("tags", []) for c in nb.cells)
    km = KernelManager(kernel_name="python3", kernel_spec_manager=_CurrentEnv())
    client = NotebookClient(nb, km=km, timeout=600, startup_timeout=120,
                            resources={"metadata": {"path": str(lecture.parent)}})
    try:
        client.execute()
        stopped = None
    except CellExecutionError:
        stopped = _where(nb)
    if stopped:  # outside the except block: the kernel's traceback is in the message, not nbclient's
        pytest.fail(f"{lecture.name}: the student edition stops: {stopped}", pytrace=False)
    checks = [c for c in nb.cells if _is_check(c)]
    assert checks, f"{lecture.name} has no exercise checks"
    for c in checks:
        printed = "".join(o.get("text", "") for o in c.outputs if o.output_type == "stream")
        assert NOT_ATTEMPTED in printed, f"{lecture.name}: the check `{c.source.strip()}` printed {printed!r}"
