"""Grading the student editions that come back: ``python -m advlib.course grade SUBMISSIONS -o RESULTS``.

What a lecture's exercises are is read from the lecture itself (``lectures/NN_*.md``), never from
the submission: each exercise is a cell to fill in, a check cell and a hidden solution cell
(:func:`exercises`). A submission is executed top to bottom in a kernel of its own, with a time
limit per cell and per notebook, no network (see :data:`GUARD`) and the lecture's folder untouched
(it runs in a scratch folder); right after each exercise's check cell (or where it would have been,
when a student deleted it) the grader runs the lecture's *own* check, strict, on a fresh copy of
the check's module, and records one of :data:`STATUSES`. A cell that raises, loops past the limit
or kills its kernel is reported and does not stop the rest of the notebook, or of the class: every
submission runs in its own process, ``jobs`` at a time.

This is a guard for honest mistakes, not a sandbox: a submission runs with the grader's rights. To
grade untrusted code, run the grader in a container without a network (``docker run --network
none``).

The results folder holds ``grades.csv`` (student x exercise, 1 = correct), ``details.csv`` (one row
per student and exercise: status and the check's message), ``summary.md``, ``feedback/STUDENT.md``
(what each student gets back: the checks' hints, never the solution) and ``executed/`` (every
submission as it ran).
"""
from __future__ import annotations

import ast
import copy
import csv
import importlib.util
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .__main__ import SOLUTION_TAG

__all__ = ["Exercise", "STATUSES", "exercises", "answer_key", "grade", "grade_here", "GUARD"]

CHECK = re.compile(r"\.check_\w+\(")
HEADING = re.compile(r"^#+\s*Exercise\s+(\d+)\s*[—–:-]+\s*(.+?)\s*$", re.M)
MARK = "@@advlib-grade@@"
MAX_CELL_ERRORS = 5  # a failed import makes every later cell raise: the first few say enough
#: what the grader can say about one exercise of one submission
STATUSES = {
    "correct": "the lecture's check passes",
    "wrong": "the check fails: its message says how, with a hint",
    "not attempted": "the answer is still the stub (it raises NotImplementedError)",
    "missing": "a name the check needs is not defined (the answer cell was deleted or renamed)",
    "error": "the answer raised an exception other than the check's",
    "not graded": "the notebook stopped before this exercise (time limit, or the kernel died)",
}

#: the first cell of every graded notebook: no network for the submission (sockets to anything but
#: this machine are refused, and proxies point nowhere for subprocesses such as pip)
GUARD = r'''
import os as _os, socket as _socket
_os.environ.update(ADVLIB_OFFLINE="1", http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
                   HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", no_proxy="", NO_PROXY="")
_LOCAL = {"localhost", "127.0.0.1", "::1", "0.0.0.0", ""}
def _refuse(what):
    raise OSError(f"no network while grading: {what} refused (the course runs offline)")
_getaddrinfo, _connect, _connect_ex = _socket.getaddrinfo, _socket.socket.connect, _socket.socket.connect_ex
def _guard_getaddrinfo(host, *a, **k):
    return _getaddrinfo(host, *a, **k) if str(host or "") in _LOCAL else _refuse(f"looking up {host!r}")
def _remote(self, address):
    return self.family in (_socket.AF_INET, _socket.AF_INET6) and str(address[0]) not in _LOCAL
def _guard_connect(self, address):
    return _refuse(f"connecting to {address!r}") if _remote(self, address) else _connect(self, address)
def _guard_connect_ex(self, address):
    return _refuse(f"connecting to {address!r}") if _remote(self, address) else _connect_ex(self, address)
_socket.getaddrinfo, _socket.socket.connect, _socket.socket.connect_ex = \
    _guard_getaddrinfo, _guard_connect, _guard_connect_ex
del _os
'''


@dataclass(frozen=True)
class Exercise:
    """One exercise of a lecture, as the lecture's source has it."""

    lecture: str        #: the lecture's file stem, e.g. ``01_white_box_attacks``
    number: int         #: 1, 2, ... within the lecture
    title: str          #: from its ``### Exercise N — title`` heading
    check: str          #: the check cell's source
    answer: str         #: the source of the cell the learner fills in (the stub)
    answer_in_check: bool  #: the learner's answer is written into the check cell itself
    solution: str       #: the hidden solution cell's source
    module: str         #: where the check function lives, e.g. ``advlib.course.whitebox``
    function: str       #: the check function, e.g. ``check_project_l2``
    call: str           #: ``lambda check: check(..., strict=True)``: how the grader calls it

    @property
    def key(self) -> str:
        """``01.2``: the lecture's number and the exercise's, the column of ``grades.csv``."""
        return f"{self.lecture[:2]}.{self.number}"


def _is_check(cell) -> bool:
    return cell.cell_type == "code" and bool(CHECK.search(cell.source)) and "strict=True" not in cell.source


def _is_solution(cell) -> bool:
    return SOLUTION_TAG in cell.get("metadata", {}).get("tags", [])


def _aliases(cells) -> dict[str, str]:
    """``{alias: module}`` for every ``from advlib.course import X [as Y]`` of the lecture's code."""
    out = {}
    for c in cells:
        if c.cell_type != "code":
            continue
        try:
            tree = ast.parse(c.source)
        except SyntaxError:  # IPython magics: not an import of the checks
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "advlib.course":
                out.update({a.asname or a.name: f"advlib.course.{a.name}" for a in node.names})
    return out


class _Strict(ast.NodeTransformer):
    """``alias.check_x(args)`` -> ``check(args, strict=True)``, remembering ``alias`` and ``check_x``."""

    found: list[tuple[str, str]]

    def visit_Call(self, node):
        self.generic_visit(node)
        f = node.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.attr.startswith("check_"):
            self.found.append((f.value.id, f.attr))
            node.func = ast.Name("check", ast.Load())
            node.keywords = [k for k in node.keywords if k.arg != "strict"] + [
                ast.keyword("strict", ast.Constant(True))]
        return node


def _check_call(source: str, aliases: dict[str, str], where: str) -> tuple[str, str, str]:
    """(module, function, ``lambda check: ...``) of the one check call in a check cell's source."""
    calls = [s for s in ast.parse(source).body if CHECK.search(ast.unparse(s))]
    if len(calls) != 1 or not isinstance(calls[0], ast.Expr):
        raise ValueError(f"{where}: a check cell must hold exactly one `module.check_...(...)` call statement")
    t = _Strict()
    t.found = []
    body = t.visit(copy.deepcopy(calls[0].value))
    (alias, function), = t.found
    if alias not in aliases:
        raise ValueError(f"{where}: `{alias}.{function}` is not from an `from advlib.course import ...` of the lecture")
    return aliases[alias], function, ast.unparse(ast.Lambda(ast.arguments([], [ast.arg("check")], None, [], [],
                                                                           None, []), body))


def exercises(lecture: str | Path) -> list[Exercise]:
    """The exercises of a lecture (.md or .ipynb with its solutions), in order: every check cell
    (a ``module.check_...(...)`` call without ``strict=True``) with the cell before it (the stub) or,
    where the check cell says ``YOUR ANSWER``, the check cell itself as the answer, and the hidden
    solution cell after it. A lecture that breaks the pattern raises a ``ValueError`` saying where."""
    import jupytext

    lecture = Path(lecture)
    nb = jupytext.read(lecture)
    aliases, out, title = _aliases(nb.cells), [], {}
    for i, c in enumerate(nb.cells):
        if c.cell_type == "markdown":
            title.update({int(n): t for n, t in HEADING.findall(c.source)})
        if not _is_check(c):
            continue
        k = len(out) + 1
        where = f"{lecture.name}, exercise {k}"
        if i + 1 >= len(nb.cells) or not _is_solution(nb.cells[i + 1]):
            raise ValueError(f"{where}: the check cell must be followed by its solution cell (tag {SOLUTION_TAG!r})")
        in_check = "YOUR ANSWER" in c.source
        if not in_check and "NotImplementedError" not in nb.cells[i - 1].source:
            raise ValueError(f"{where}: the cell before the check must be the stub (it raises NotImplementedError)")
        module, function, call = _check_call(c.source, aliases, where)
        out.append(Exercise(lecture.stem, k, title.get(k, function), c.source,
                            c.source if in_check else nb.cells[i - 1].source, in_check,
                            nb.cells[i + 1].source, module, function, call))
    return out


def _without_strict(source: str) -> str:
    """A solution cell's answer: its source without the statement that runs the strict check."""
    tree = ast.parse(source)
    lines = source.splitlines()
    drop = set()
    for s in tree.body:
        if "strict=True" in ast.get_source_segment(source, s):
            drop |= set(range(s.lineno - 1, s.end_lineno))
    return "\n".join(line for i, line in enumerate(lines) if i not in drop).strip() + "\n"


def answer_key(lecture: str | Path):
    """The student edition of ``lecture`` with every exercise answered by its hidden solution: what
    a perfect submission looks like (``python -m advlib.course key``), to try the grader on."""
    from .__main__ import student_edition

    nb = student_edition(lecture)
    for ex in exercises(lecture):
        role = "check" if ex.answer_in_check else "answer"
        cell = next(c for c in nb.cells if c.metadata.get("advlib") == {"exercise": ex.number, "role": role})
        answer = _without_strict(ex.solution)
        if ex.answer_in_check:  # the answer's assignments, then the cell's own (non-strict) check
            answer += "\n".join(s for s in ex.check.splitlines() if CHECK.search(s)) + "\n"
        cell.source = answer.strip()
    return nb


# --- inside the kernel --------------------------------------------------------------------------------

def _fresh(module: str):
    """A private copy of a check module, loaded from its file: what the submission did to the
    imported one (a patched check) does not reach it."""
    spec = importlib.util.find_spec(module)
    name = f"{module}__graded_{secrets.token_hex(4)}"
    copy_spec = importlib.util.spec_from_file_location(name, spec.origin)
    mod = importlib.util.module_from_spec(copy_spec)
    mod.__package__ = module.rpartition(".")[0]
    sys.modules[name] = mod  # dataclasses look their module up while the class is made
    try:
        copy_spec.loader.exec_module(mod)
    finally:
        del sys.modules[name]
    return mod


def grade_here(nonce: str, number: int, module: str, function: str, call) -> dict:
    """Run one exercise's check (the grader's cell calls this in the submission's kernel); print
    the verdict as one marked line and return it."""
    from .exercises import ExerciseError, NotAttempted

    try:
        call(getattr(_fresh(module), function))
        status, message = "correct", ""
    except NotAttempted as e:
        status, message = "not attempted", str(e)
    except ExerciseError as e:
        status, message = "wrong", str(e)
    except NameError as e:
        status, message = "missing", f"{e}: run the cell that defines it, and keep the exercise's names"
    except Exception as e:  # noqa: BLE001 - whatever the answer raised is the student's to see
        status, message = "error", f"the answer raised {type(e).__name__}: {e}"
    verdict = {"exercise": number, "status": status, "message": message}
    print(f"{MARK}{nonce}{json.dumps(verdict)}")
    return verdict


# --- one submission, in its own process ----------------------------------------------------------------

def _find(cells, ex: Exercise, role: str) -> int | None:
    """The index of the submission's cell for ``ex`` in ``role``: by the metadata the student edition
    gave it, else (a cell copied into a new one) by its content."""
    for i, c in enumerate(cells):
        if c.get("metadata", {}).get("advlib") == {"exercise": ex.number, "role": role}:
            return i
    if role == "check":
        for i, c in enumerate(cells):
            if _is_check(c) and f".{ex.function}(" in c.source:
                return i
    return None


def _plan(nb, lecture: Path, nonce: str):
    """The notebook to run: the guard, the submission's cells (outputs dropped), and a grading cell
    after each exercise's check; and the problems seen before running (deleted or edited checks)."""
    import nbformat

    exs = exercises(lecture)
    cells = [c for c in nb.cells if c.cell_type in ("code", "markdown", "raw")]
    for c in cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    after, problems = {}, []
    for ex in exs:
        at = _find(cells, ex, "check")
        if at is None:
            problems.append(f"Exercise {ex.number} ({ex.title}): its check cell was deleted; "
                            "graded with the lecture's check")
            at = _find(cells, ex, "answer")
        elif _normal(ex.check, only_check=True) not in _normal(cells[at].source):
            problems.append(f"Exercise {ex.number} ({ex.title}): its check cell was edited; "
                            "graded with the lecture's check")
        after.setdefault(len(cells) - 1 if at is None else at, []).append(ex)
    plan = [nbformat.v4.new_code_cell(GUARD, metadata={"advlib": {"role": "guard"}})]
    for i, c in enumerate(cells):
        plan.append(c)
        for ex in after.get(i, []):
            src = (f"__import__('advlib.course.grading', fromlist=['grade_here']).grade_here("
                   f"{nonce!r}, {ex.number}, {ex.module!r}, {ex.function!r}, {ex.call})")
            plan.append(nbformat.v4.new_code_cell(src, metadata={"advlib": {"role": "grade", "exercise": ex.number}}))
    nb.cells = plan
    return nb, exs, problems


def _normal(source: str, only_check: bool = False) -> str:
    """Source without blanks or comments (an edit check that ignores formatting)."""
    lines = [re.sub(r"#.*$", "", line).replace(" ", "") for line in source.splitlines()]
    if only_check:
        lines = [line for line in lines if CHECK.search(line)]
    return "\n".join(line for line in lines if line)


def _error_of(cell) -> str | None:
    for o in cell.get("outputs", []):
        if o.get("output_type") == "error":
            return f"{o.get('ename')}: {o.get('evalue')}"[:300]
    return None


def _verdict_error(err: str) -> bool:
    """An exercise's own check cell raised its verdict (a wrong answer): the exercise's column says
    so; it is not a problem of the notebook."""
    return err.startswith(("ExerciseError:", "NotAttempted:"))


def _verdict(cell, nonce: str) -> dict | None:
    text = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")
    marks = [line for line in text.splitlines() if line.startswith(MARK + nonce)]
    return json.loads(marks[-1][len(MARK + nonce):]) if marks else None


def _run_one(job: dict) -> dict:
    """Grade one submission (in a process of its own: see :func:`grade`); the result as a dict."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    path, lecture, out = Path(job["path"]), Path(job["lecture"]), Path(job["executed"])
    result = {"student": job["student"], "notebook": path.name, "lecture": lecture.stem, "status": "graded",
              "problems": [], "exercises": {}, "seconds": 0.0}
    t0 = time.monotonic()
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as e:  # noqa: BLE001 - not JSON, not a notebook, unreadable file
        result.update(status="unreadable", problems=[f"cannot read the notebook: {type(e).__name__}: {e}"[:300]])
        return result
    nonce = secrets.token_hex(8)
    nb, exs, result["problems"] = _plan(nb, lecture, nonce)
    result["exercises"] = {str(ex.number): {"status": "not graded", "message": ""} for ex in exs}
    with tempfile.TemporaryDirectory(prefix="advlib-grade-") as scratch:
        client = NotebookClient(nb, timeout=job["cell_timeout"], startup_timeout=120, allow_errors=True,
                                interrupt_on_timeout=True, kernel_name="python3",
                                resources={"metadata": {"path": scratch}})
        code_no = cell_errors = 0
        try:
            with client.setup_kernel():
                for i, cell in enumerate(nb.cells):
                    role = cell.get("metadata", {}).get("advlib", {}).get("role")  # guard, grade, answer, check
                    code_no += cell.cell_type == "code" and role not in ("guard", "grade")
                    left = job["timeout"] - (time.monotonic() - t0)
                    if left <= 0:
                        result["status"] = "timed out"
                        result["problems"].append(f"the notebook's time limit ({job['timeout']:.0f} s) was reached "
                                                  f"before code cell {code_no}; the rest was not run")
                        break
                    client.timeout = int(max(1, min(job["cell_timeout"], left)))
                    started = time.monotonic()
                    client.execute_cell(cell, i)
                    if cell.cell_type != "code":
                        continue
                    if role == "grade":
                        if (v := _verdict(cell, nonce)) is not None:
                            result["exercises"][str(v["exercise"])] = {"status": v["status"], "message": v["message"]}
                    elif (err := _error_of(cell)) is not None and not (role == "check" and _verdict_error(err)):
                        timed_out = time.monotonic() - started >= client.timeout - 0.5
                        what = (f"was stopped after {client.timeout} s (the time limit of a cell)" if timed_out
                                else f"raised {err}")
                        cell_errors += 1
                        if cell_errors <= MAX_CELL_ERRORS:
                            result["problems"].append(f"code cell {code_no} {what}")
            if cell_errors > MAX_CELL_ERRORS:
                result["problems"].append(f"… and {cell_errors - MAX_CELL_ERRORS} more code cells raised (often "
                                          "because of the first: a name it should have defined)")
        except DeadKernelError:
            result["status"] = "kernel died"
            result["problems"].append(f"the kernel died in code cell {code_no} (a crash, or the code exited); "
                                      "the rest was not run")
        except CellTimeoutError:
            result["status"] = "timed out"
            result["problems"].append(f"code cell {code_no} could not be interrupted after {client.timeout} s")
        except Exception as e:  # noqa: BLE001 - the kernel did not start, ...: report, never stop the class
            result["status"] = "failed"
            result["problems"].append(f"grading stopped: {type(e).__name__}: {e}"[:300])
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)
    result["seconds"] = round(time.monotonic() - t0, 1)
    return result


def _child(job: dict, env: dict, limit: float) -> dict:
    """Run :func:`_run_one` in a fresh Python process, killed (with its kernel, which watches its
    parent) when it outlives ``limit`` seconds."""
    with tempfile.TemporaryDirectory() as d:
        spec, res = Path(d) / "job.json", Path(d) / "result.json"
        spec.write_text(json.dumps(job))
        try:
            proc = subprocess.run([sys.executable, "-m", "advlib.course.grading", str(spec), str(res)], env=env,
                                  capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            proc = None
        if res.is_file():
            return json.loads(res.read_text())
    base = {"student": job["student"], "notebook": Path(job["path"]).name, "lecture": Path(job["lecture"]).stem,
            "exercises": {}, "seconds": limit}
    if proc is None:
        return base | {"status": "timed out", "problems": [f"killed after {limit:.0f} s"]}
    tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
    return base | {"status": "failed", "problems": [f"the grader's process failed: {tail}"[:300]]}


# --- the class ------------------------------------------------------------------------------------------

def _submissions(folder: Path) -> list[tuple[str, Path]]:
    """(student, notebook) pairs: ``folder/STUDENT/*.ipynb`` (any depth) or ``folder/STUDENT.ipynb``."""
    out = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            out += [(p.name, nb) for nb in sorted(p.rglob("*.ipynb")) if ".ipynb_checkpoints" not in nb.parts]
        elif p.suffix == ".ipynb":
            out.append((p.stem, p))
    return out


def _lecture_of(path: Path, lectures: list[Path], default: Path | None) -> Path | None:
    """The lecture a submission answers: its student edition's metadata, else its file name
    (``01_white_box_attacks_homework.ipynb``), else ``default``."""
    by_stem = {p.stem: p for p in lectures}
    try:
        stem = json.loads(path.read_text()).get("metadata", {}).get("advlib", {}).get("lecture")
    except (OSError, ValueError, AttributeError):
        stem = None
    if stem in by_stem:
        return by_stem[stem]
    for s, p in by_stem.items():
        if path.stem == s or path.stem.startswith(s + "_"):
            return p
    return default


def grade(submissions: str | Path, out: str | Path, *, lectures: str | Path | None = None,
          lecture: str | None = None, jobs: int | None = None, timeout: float = 1200,
          cell_timeout: float = 300, size: str = "toy", profile: str = "fast", progress: bool = True) -> list[dict]:
    """Grade every submitted notebook under ``submissions`` (one subfolder or one ``.ipynb`` per
    student) and write the results folder ``out`` (see the module's docstring); returns one dict per
    notebook.

    Each notebook runs in its own kernel and process, ``jobs`` at a time (default: one per core), at
    most ``cell_timeout`` seconds a cell and ``timeout`` a notebook, with ``ADVLIB_PROFILE=profile``
    and ``ADVLIB_SIZE=size``: ``toy`` by default, since the checks test answers on their own inputs
    and do not depend on the lecture's budgets. ``lecture`` names the lecture of submissions whose
    own metadata and file name do not tell.
    """
    from tqdm.auto import tqdm

    from .__main__ import LECTURES
    from .__main__ import lectures as find_lectures

    submissions, out = Path(submissions), Path(out)
    if not submissions.is_dir():
        raise NotADirectoryError(f"submissions must be a folder (one subfolder or .ipynb per student): {submissions}")
    known = find_lectures(lectures or LECTURES)
    default = None
    if lecture is not None:
        default = next((p for p in known if p.stem == lecture or p.stem.startswith(lecture)), None)
        if default is None:
            raise ValueError(f"unknown lecture {lecture!r}; the lectures are {[p.stem for p in known]}")
    found = _submissions(submissions)
    if not found:
        raise FileNotFoundError(f"no notebooks (.ipynb) in {submissions}")
    env = dict(os.environ, ADVLIB_PROFILE=profile, ADVLIB_SIZE=size, ADVLIB_OFFLINE="1", MPLBACKEND="Agg",
               OMP_NUM_THREADS="1", PYDEVD_DISABLE_FILE_VALIDATION="1")
    jobs = max(1, jobs or os.cpu_count() or 1)
    results: list[dict] = []

    def one(item):
        student, path = item
        lec = _lecture_of(path, known, default)
        try:
            json.loads(path.read_text())
        except (OSError, ValueError) as e:
            return {"student": student, "notebook": path.name, "lecture": lec.stem if lec else "?",
                    "status": "unreadable", "exercises": {}, "seconds": 0.0,
                    "problems": [f"cannot read the notebook (not a notebook's JSON): {e}"[:300]]}
        if lec is None:
            return {"student": student, "notebook": path.name, "lecture": "?", "status": "unknown lecture",
                    "exercises": {}, "seconds": 0.0,
                    "problems": ["cannot tell which lecture this notebook answers: keep the student edition's "
                                 "file name, or pass --lecture"]}
        job = {"student": student, "path": str(path.resolve()), "lecture": str(lec.resolve()),
               "executed": str((out / "executed" / student / path.name).resolve()),
               "timeout": timeout, "cell_timeout": cell_timeout}
        return _child(job, env, timeout + 120)

    with ThreadPoolExecutor(jobs) as pool:
        for r in tqdm(pool.map(one, found), total=len(found), desc="grading", disable=not progress):
            results.append(r)
    _write(results, out, known)
    return results


def _write(results: list[dict], out: Path, known: list[Path]) -> None:
    """grades.csv, details.csv, summary.md and feedback/STUDENT.md."""
    out.mkdir(parents=True, exist_ok=True)
    lectures = {p.stem: p for p in known}
    catalogue = {stem: exercises(lectures[stem]) for stem in sorted({r["lecture"] for r in results} & set(lectures))}
    columns = [ex for exs in catalogue.values() for ex in exs]
    students = sorted({r["student"] for r in results})
    verdict = {(r["student"], r["lecture"], int(k)): v for r in results for k, v in r["exercises"].items()}
    ungraded = {"status": "not graded", "message": ""}
    handed_in = {(r["student"], r["lecture"]) for r in results}

    with open(out / "grades.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student"] + [ex.key for ex in columns] + ["score", "out of", "percent", "problems"])
        for s in students:
            row = [int(verdict.get((s, ex.lecture, ex.number), {}).get("status") == "correct")
                   if (s, ex.lecture) in handed_in else "" for ex in columns]  # blank: not handed in
            score, n = sum(v for v in row if v != ""), sum(v != "" for v in row)
            problems = sum(len(r["problems"]) for r in results if r["student"] == s)
            w.writerow([s] + row + [score, n, f"{100 * score / n:.0f}" if n else "", problems])

    with open(out / "details.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", "notebook", "lecture", "exercise", "title", "status", "message"])
        for r in results:
            for ex in catalogue.get(r["lecture"], []):
                v = r["exercises"].get(str(ex.number), ungraded)
                w.writerow([r["student"], r["notebook"], r["lecture"], ex.key, ex.title, v["status"],
                            v.get("message", "")])

    fb = out / "feedback"
    fb.mkdir(exist_ok=True)
    for s in students:
        lines = [f"# Feedback for {s}", ""]
        for r in (r for r in results if r["student"] == s):
            exs = catalogue.get(r["lecture"], [])
            got = [r["exercises"].get(str(ex.number), ungraded) for ex in exs]
            ok = sum(v["status"] == "correct" for v in got)
            lines += [f"## {r['notebook']} ({r['lecture']}): {ok} of {len(exs)} correct", ""]
            for ex, v in zip(exs, got):
                mark = "✓" if v["status"] == "correct" else "✗"
                lines.append(f"- {mark} Exercise {ex.number} — {ex.title}: {v['status']}"
                             + (f". {v['message']}" if v.get("message") and v["status"] != "correct" else ""))
            if r["problems"]:
                lines += ["", "Problems:"] + [f"- {p}" for p in r["problems"]]
            lines.append("")
        (fb / f"{s}.md").write_text("\n".join(lines))

    total = sum(1 for s in students for ex in columns if (s, ex.lecture) in handed_in)
    correct = sum(v["status"] == "correct" for v in verdict.values())
    lines = ["# Grading summary", "",
             f"{len(results)} notebook(s) from {len(students)} student(s); {correct} of {total} exercises correct"
             + (f" ({100 * correct / total:.0f} %)." if total else "."), "",
             "| exercise | title | correct | wrong | not attempted | other |", "|---|---|---|---|---|---|"]
    for ex in columns:
        vs = [verdict.get((s, ex.lecture, ex.number), {}).get("status", "not graded") for s in students
              if (s, ex.lecture) in handed_in]
        c = {k: vs.count(k) for k in ("correct", "wrong", "not attempted")}
        lines.append(f"| {ex.key} | {ex.title} | {c['correct']} | {c['wrong']} | {c['not attempted']} | "
                     f"{len(vs) - sum(c.values())} |")
    troubled = [r for r in results if r["problems"]]
    if troubled:
        lines += ["", "## Notebooks with problems", ""]
        lines += [f"- {r['student']} / {r['notebook']} ({r['status']}): " + "; ".join(r["problems"]) for r in troubled]
    seconds = [r["seconds"] for r in results]
    median = sorted(seconds)[len(seconds) // 2]
    lines += ["", f"Time per notebook: median {median:.0f} s, longest {max(seconds):.0f} s."]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":  # the child process of grade(): python -m advlib.course.grading JOB.json RESULT.json
    _job = json.loads(Path(sys.argv[1]).read_text())
    Path(sys.argv[2]).write_text(json.dumps(_run_one(_job), default=str))
