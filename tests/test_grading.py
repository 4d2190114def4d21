"""The grader (`python -m advlib.course grade`): a class graded end to end.

The class: one student hands in every lecture's student edition answered with the hidden solutions
(`advlib.course.grading.answer_key`: 100 % expected, and no problem in any notebook); one hands in
every student edition untouched (every exercise "not attempted", and each edition runs to its end:
later cells use the library's reference where an exercise is a stub); and on lecture 01, one
student breaks one exercise, one has a cell that raises, one a cell that never ends, one deletes
the check cells, one's notebook kills its kernel, one hands in a file that is not a notebook and one
a notebook whose import fails.
All are graded in one call, two at a time, at toy size (what `grade` runs by default: the checks
do not depend on the lectures' budgets). This file is one unit of work under `--dist loadfile`.
"""
from __future__ import annotations

import copy
import csv
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from advlib.course.__main__ import SOLUTION_TAG, homework_name, main, student_edition
from advlib.course.grading import GUARD, STATUSES, _plan, answer_key, exercises, grade

ROOT = Path(__file__).resolve().parents[1]
LECTURES = sorted(ROOT.glob("lectures/[0-9][0-9]_*.md"))
SMALL = ROOT / "lectures" / "01_white_box_attacks.md"  # the lecture of the broken submissions
CELL_LIMIT = 60  # seconds a cell may run in this class (the endless cell is stopped after it)


# --- reading the exercises off a lecture ------------------------------------------------------------

def test_every_lecture_has_exercises_with_stub_check_and_solution():
    for lecture in LECTURES:
        exs = exercises(lecture)
        assert exs, lecture.name
        assert [e.number for e in exs] == list(range(1, len(exs) + 1))
        for e in exs:
            assert e.module.startswith("advlib.course.") and e.function.startswith("check_")
            assert "strict=True" in e.call and e.call.startswith("lambda check: check(")
            assert e.answer_in_check or "NotImplementedError" in e.answer
            assert e.title and e.key == f"{lecture.stem[:2]}.{e.number}"


def test_student_edition_marks_each_exercises_cells():
    nb = student_edition(SMALL)
    assert nb.metadata.advlib == {"lecture": SMALL.stem, "edition": "student"}
    marks = [c.metadata["advlib"] for c in nb.cells if "advlib" in c.metadata]
    roles = [(m["exercise"], m["role"]) for m in marks]
    assert roles == [(k, r) for k in (1, 2, 3) for r in ("answer", "check")]
    assert not any(SOLUTION_TAG in c.metadata.get("tags", []) for c in nb.cells)


def test_answer_key_replaces_every_stub_with_its_solution():
    for lecture in LECTURES:
        nb = answer_key(lecture)
        for e in exercises(lecture):
            role = "check" if e.answer_in_check else "answer"
            (cell,) = [c for c in nb.cells if c.metadata.get("advlib") == {"exercise": e.number, "role": role}]
            assert "NotImplementedError" not in cell.source and "strict=True" not in cell.source
            assert "YOUR ANSWER" not in cell.source


@pytest.mark.parametrize("text, message", [
    ("def f():\n    raise NotImplementedError\n", "followed by its solution"),
    ("y = 2\n", "the stub"),
])
def test_a_lecture_that_breaks_the_pattern_is_named(tmp_path, text, message):
    head = "---\njupyter:\n  kernelspec: {name: python3, display_name: Python 3, language: python}\n---\n\n"
    body = ("```python\nfrom advlib.course import whitebox\n```\n\n"
            f"```python\n{text}```\n\n```python\nwhitebox.check_fgsm(f)\n```\n\n")
    if message != "followed by its solution":
        body += "```python tags=[\"solution\"]\nwhitebox.check_fgsm(f, strict=True)\n```\n"
    src = tmp_path / "99_bad.md"
    src.write_text(head + body)
    with pytest.raises(ValueError, match=message):
        exercises(src)


def test_plan_reports_a_deleted_and_an_edited_check():
    nb = student_edition(SMALL)
    nb.cells = [c for c in nb.cells if c.metadata.get("advlib") != {"exercise": 2, "role": "check"}]
    check3 = next(c for c in nb.cells if c.metadata.get("advlib") == {"exercise": 3, "role": "check"})
    check3.source = "print('all good')"
    planned, exs, problems = _plan(nb, SMALL, "n0nce")
    assert [p.split(":")[0] for p in problems] == ["Exercise 2 (FGSM from scratch)", "Exercise 3 (a targeted loss)"]
    assert "deleted" in problems[0] and "edited" in problems[1]
    graders = [c for c in planned.cells if c.metadata.get("advlib", {}).get("role") == "grade"]
    assert [c.metadata["advlib"]["exercise"] for c in graders] == [1, 2, 3]  # every exercise still graded
    assert planned.cells[0].source == GUARD


def test_guard_refuses_the_network_and_keeps_loopback():
    code = GUARD + """
import socket, urllib.request
for attempt in (lambda: urllib.request.urlopen("http://example.com", timeout=5),
                lambda: socket.create_connection(("93.184.216.34", 80), timeout=5),
                lambda: socket.getaddrinfo("example.com", 80)):
    try:
        attempt()
        print("reached the network")
    except OSError as e:
        print("refused:", e)
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
c = socket.create_connection(s.getsockname(), timeout=5); print("loopback ok"); c.close(); s.close()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.count("refused:") == 3 and "reached" not in out.stdout, out.stdout + out.stderr
    assert out.stdout.count("no network while grading") == 2  # urllib goes to the dead proxy first
    assert "loopback ok" in out.stdout


def test_grade_refuses_bad_folders_clearly(tmp_path, capsys):
    with pytest.raises(NotADirectoryError, match="must be a folder"):
        grade(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no notebooks"):
        grade(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(SystemExit):
        main(["grade", str(tmp_path / "empty"), "-o", str(tmp_path / "out"), "--lecture", "99_no_such"])
    assert "unknown lecture '99_no_such'" in capsys.readouterr().err


# --- a class, graded --------------------------------------------------------------------------------------

def _cell(nb, number, role):
    return next(c for c in nb.cells if c.metadata.get("advlib") == {"exercise": number, "role": role})


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    subs = root / "submissions"
    for student in ("key", "blank"):
        (subs / student).mkdir(parents=True)
    main(["key", "--all", "-o", str(subs / "key")])
    main(["strip", "--all", "-o", str(subs / "blank")])
    key = answer_key(SMALL)
    name = homework_name(SMALL)

    def hand_in(student, nb):
        (subs / student).mkdir()
        nbformat.write(nb, subs / student / name)

    broken = copy.deepcopy(key)
    _cell(broken, 1, "answer").source = "def project_l2(delta, eps):\n    return delta.clamp(-eps, eps)\n"
    hand_in("broken", broken)
    raises = copy.deepcopy(key)
    raises.cells.insert(4, nbformat.v4.new_code_cell("raise RuntimeError('a bug of mine')"))
    hand_in("raises", raises)
    loops = copy.deepcopy(key)
    loops.cells.insert(4, nbformat.v4.new_code_cell("while True:\n    pass"))
    hand_in("loops", loops)
    no_checks = copy.deepcopy(key)
    no_checks.cells = [c for c in no_checks.cells if c.metadata.get("advlib", {}).get("role") != "check"]
    hand_in("no_checks", no_checks)
    no_import = copy.deepcopy(key)
    first = next(c for c in no_import.cells if c.cell_type == "code" and "import advlib" in c.source)
    first.source = first.source.replace("import advlib\n", "import advlib_typo\n", 1)
    hand_in("no_import", no_import)
    dies = copy.deepcopy(key)
    dies.cells.insert(4, nbformat.v4.new_code_cell("import os\nos._exit(3)"))
    hand_in("dies", dies)
    (subs / "garbage").mkdir()
    (subs / "garbage" / name).write_text("{this is not a notebook")

    out = root / "results"
    results = grade(subs, out, jobs=2, cell_timeout=CELL_LIMIT, progress=False)
    by = {(r["student"], r["lecture"]): r for r in results}
    return by, out


def _statuses(r) -> dict:
    return {k: v["status"] for k, v in r["exercises"].items()}


def _every_lecture(by, student, status):
    """``student`` handed in every lecture; each ran without a problem, every exercise ``status``."""
    for lecture in LECTURES:
        r = by[student, lecture.stem]
        assert r["status"] == "graded" and not r["problems"], (lecture.name, r["problems"])
        assert set(_statuses(r).values()) == {status}, (lecture.name, r["exercises"])
        assert len(r["exercises"]) == len(exercises(lecture))


def test_the_answer_key_scores_100_percent_in_every_lecture(graded):
    by, out = graded
    _every_lecture(by, "key", "correct")
    rows = {row["student"]: row for row in csv.DictReader(open(out / "grades.csv"))}
    assert rows["key"]["percent"] == "100" and rows["key"]["problems"] == "0"
    assert int(rows["key"]["out of"]) == sum(len(exercises(p)) for p in LECTURES)


def test_an_untouched_student_edition_runs_to_the_end_unattempted(graded):
    by, _ = graded
    _every_lecture(by, "blank", "not attempted")


def test_a_broken_exercise_fails_alone_and_its_message_gives_no_solution(graded):
    by, out = graded
    r = by["broken", SMALL.stem]
    assert _statuses(r) == {"1": "wrong", "2": "correct", "3": "correct"} and not r["problems"]
    message = r["exercises"]["1"]["message"]
    assert "Hint" in message
    solution = exercises(SMALL)[0].solution
    for line in solution.splitlines():
        if len(line.strip()) > 8:
            assert line.strip() not in message
    feedback = (out / "feedback" / "broken.md").read_text()
    assert "✗ Exercise 1 — the L2 projection: wrong" in feedback and message in feedback
    assert not any(line.strip() in feedback for line in solution.splitlines() if len(line.strip()) > 8)


def test_a_raising_cell_is_reported_and_the_rest_still_graded(graded):
    by, _ = graded
    r = by["raises", SMALL.stem]
    assert set(_statuses(r).values()) == {"correct"}
    assert any("raised RuntimeError: a bug of mine" in p for p in r["problems"]), r["problems"]


def test_an_endless_cell_is_stopped_reported_and_the_rest_still_graded(graded):
    by, _ = graded
    r = by["loops", SMALL.stem]
    assert any(f"stopped after {CELL_LIMIT} s" in p for p in r["problems"]), r["problems"]
    assert set(_statuses(r).values()) == {"correct"}


def test_deleted_checks_are_reported_and_graded_with_the_lectures_own(graded):
    by, _ = graded
    r = by["no_checks", SMALL.stem]
    assert sum("check cell was deleted" in p for p in r["problems"]) == 3
    assert set(_statuses(r).values()) == {"correct"}


def test_a_failed_import_and_a_file_that_is_no_notebook_are_reported(graded):
    by, out = graded
    r = by["no_import", SMALL.stem]
    assert "ModuleNotFoundError" in r["problems"][0] and "advlib_typo" in r["problems"][0], r["problems"]
    assert len(r["problems"]) == 6 and r["problems"][-1].startswith("… and ")  # the cascade, summed up
    # the exercises are graded all the same: the checks need only the answers (and torch, imported before)
    assert r["status"] == "graded" and set(_statuses(r).values()) == {"correct"}
    g = by["garbage", SMALL.stem]
    assert g["status"] == "unreadable" and "cannot read the notebook" in g["problems"][0]
    summary = (out / "summary.md").read_text()
    for student in ("raises", "loops", "no_checks", "no_import", "dies", "garbage"):
        assert f"- {student} / " in summary
    assert set(STATUSES) >= {v["status"] for res in by.values() for v in res["exercises"].values()}


def test_a_kernel_that_dies_is_reported_and_the_class_goes_on(graded):
    by, _ = graded
    r = by["dies", SMALL.stem]
    assert r["status"] == "kernel died" and "the kernel died in code cell" in r["problems"][-1]
    assert set(_statuses(r).values()) == {"not graded"}


def test_results_folder_holds_the_tables_feedback_and_executed_notebooks(graded):
    by, out = graded
    students = {s for s, _ in by}
    rows = list(csv.DictReader(open(out / "grades.csv")))
    assert {row["student"] for row in rows} == students
    blank_row = next(row for row in rows if row["student"] == "broken")
    assert blank_row["01.1"] == "0" and blank_row["01.2"] == "1" and blank_row["00.1"] == ""  # not handed in
    details = list(csv.DictReader(open(out / "details.csv")))
    assert {(d["student"], d["exercise"]) for d in details if d["student"] == "key"} == {
        ("key", e.key) for p in LECTURES for e in exercises(p)}
    assert {p.stem for p in (out / "feedback").iterdir()} == students
    executed = nbformat.read(out / "executed" / "key" / homework_name(SMALL), as_version=4)
    assert any(c.metadata.get("advlib", {}).get("role") == "grade" for c in executed.cells)
    assert len(json.loads((out / "results.json").read_text())) == len(by)
