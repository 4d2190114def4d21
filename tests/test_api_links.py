"""Every library function a lecture uses is one click away: its prose links it to the API reference.

The rule, per lecture (``lectures/NN_*.md``):

* **Used**: every advlib function or class its code cells call or pass along, found statically
  (``ast``, cells in order, like the notebook's namespace) through the names the cells bind:
  ``advlib.attacks.pgd(...)`` after ``import advlib``, ``A.pgd(...)`` after ``import advlib.attacks
  as A``, ``pgd(...)`` after ``from advlib.attacks import pgd``, ``exact.lp_bound(...)`` after ``from
  advlib.verify import exact``; a name the lecture binds again (its own ``def pgd``) is its own.
  Methods of returned objects (``advlib.data.load(...).x``) are not followed, and neither are
  modules and constants (``advlib.zoo.ENTRIES``): only functions and classes.
* **Must link**: each used object appears in the lecture's Markdown as a ``{py:func}`` /
  ``{py:class}`` / ``{py:meth}`` / ``{py:mod}`` / ``{py:data}`` / ``{py:obj}`` link to one of the
  paths under which the API reference documents it (``advlib.attacks.margin`` or
  ``advlib.threat.margin``: the same object). **Exempt**: everything in ``advlib.course`` (the
  notebooks' scaffolding: environment check, ``or_reference``, exercise checks, slide figures);
  those links are welcome but not required.
* **Links resolve**: every py-role link of a lecture names a path the reference documents (a
  documented module, a name of its ``__all__``, or a documented member of such a class), so the
  book's nitpicky build cannot fail on it and no link lands on a private path.

``python tests/test_api_links.py`` prints the links still missing, lecture by lecture.
"""
from __future__ import annotations

import ast
import importlib.util
import inspect
import re
import sys
from functools import cache
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
LECTURES = sorted((ROOT / "lectures").glob("[0-9][0-9]_*.md"))
EXEMPT = ("advlib.course",)  # modules whose objects a lecture need not link
ROLE = re.compile(r"\{py:(func|class|meth|mod|data|attr|obj|exc)\}`([^`]+)`")


def _load_api():
    spec = importlib.util.spec_from_file_location("api_reference", ROOT / "book" / "_ext" / "api_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


api = _load_api()


@cache
def documented() -> dict[str, object]:
    """Dotted path -> object, for everything the API reference documents."""
    return api.api_objects()


def paths_of(obj) -> list[str]:
    return [p for p, v in documented().items() if v is obj]


# --------------------------------------------------------------------------------------- markdown
def link_targets(markdown: str) -> list[tuple[str, str]]:
    """(role, target) of every py-role link: ``{py:func}`~advlib.x.f``` and
    ``{py:func}`text <advlib.x.f>``` both name ``advlib.x.f``."""
    out = []
    for role, body in ROLE.findall(markdown):
        explicit = re.fullmatch(r"(?s).*<([^<>]+)>\s*", body)
        target = (explicit[1] if explicit else body).strip().lstrip("~!")
        out.append((role, target))
    return out


# --------------------------------------------------------------------------------------- code
def _chain(node: ast.AST) -> list[str] | None:
    """``a.b.c`` as ['a', 'b', 'c'] if the node is names and attributes only, else None."""
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(names)]


def _bound_names(stmt: ast.stmt) -> set[str]:
    """Names a top-level statement (re)binds other than by importing from advlib."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {stmt.name}
    targets = []
    if isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
    elif isinstance(stmt, (ast.For, ast.AsyncFor)):
        targets = [stmt.target]
    elif isinstance(stmt, (ast.With, ast.AsyncWith)):
        targets = [item.optional_vars for item in stmt.items if item.optional_vars is not None]
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def _imports(stmt: ast.stmt) -> dict[str, str | None]:
    """Name -> the dotted path it now stands for (None: no longer an advlib name)."""
    out = {}
    if isinstance(stmt, ast.Import):
        for a in stmt.names:
            if a.asname:
                out[a.asname] = a.name if a.name.split(".")[0] == "advlib" else None
            else:
                root = a.name.split(".")[0]
                out[root] = root if root == "advlib" else None
    elif isinstance(stmt, ast.ImportFrom):
        from_advlib = stmt.level == 0 and (stmt.module or "").split(".")[0] == "advlib"
        for a in stmt.names:
            out[a.asname or a.name] = f"{stmt.module}.{a.name}" if from_advlib else None
    return out


def _source_lines(source: str) -> str:
    """A code cell as Python: IPython magics and shell escapes become ``pass``."""
    return "\n".join("pass" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def advlib_uses(cells: list[str]) -> list[tuple[str, int, int]]:
    """(dotted advlib path, code cell number from 1, line in it) of every name chain rooted at an advlib name in the
    code cells, taking each chain whole (``advlib.train.accuracy``, not ``advlib.train``)."""
    aliases: dict[str, str] = {}
    uses = []
    for number, source in enumerate(cells, 1):
        tree = ast.parse(_source_lines(source))
        for stmt in tree.body:
            seen: set[int] = set()
            for node in ast.walk(stmt):
                if id(node) in seen or not isinstance(node, (ast.Attribute, ast.Name)):
                    continue
                if not isinstance(node.ctx, ast.Load):
                    continue
                chain = _chain(node)
                if chain is None or chain[0] not in aliases:
                    continue
                seen.update(id(n) for n in ast.walk(node))  # the whole chain, once
                uses.append((".".join([aliases[chain[0]], *chain[1:]]), number, node.lineno))
            for name in _bound_names(stmt):
                aliases.pop(name, None)
            for name, target in _imports(stmt).items():
                if target is None:
                    aliases.pop(name, None)
                else:
                    aliases[name] = target
    return uses


def _used_object(dotted: str):
    """The advlib function or class a used path names (walking back from attributes of it,
    ``advlib.data.load(...)`` gives ``advlib.data.load``), or None for modules and constants."""
    parts = dotted.split(".")
    for n in range(len(parts), 1, -1):
        try:
            obj = api.lookup(".".join(parts[:n]))
        except LookupError:
            continue
        if n < len(parts) and inspect.ismodule(obj):
            raise LookupError(dotted)  # advlib.attacks.no_such_thing
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__.startswith("advlib"):
            return obj
        return None
    raise LookupError(dotted)


# --------------------------------------------------------------------------------------- lectures
@cache
def lecture(path: Path) -> tuple[str, list[str]]:
    """(the Markdown of the lecture, its code cells' sources)."""
    nb = jupytext.read(path)
    markdown = "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    return markdown, [c.source for c in nb.cells if c.cell_type == "code"]


def missing_links(markdown: str, cells: list[str]) -> tuple[list[str], list[str]]:
    """(links to add, as ``{py:func}`advlib...``` lines with where the lecture uses the object;
    problems that a link cannot fix: names that do not exist or are not in the reference)."""
    linked = {target for _, target in link_targets(markdown)}
    todo, problems, done = [], [], set()
    for dotted, cell, line in advlib_uses(cells):
        try:
            obj = _used_object(dotted)
        except LookupError:
            problems.append(f"`{dotted}` (code cell {cell}, line {line}) does not exist")
            continue
        if obj is None or id(obj) in done:
            continue
        done.add(id(obj))
        paths = paths_of(obj)
        if not paths:
            problems.append(f"`{dotted}` (code cell {cell}) is not documented in the API reference (book/api/)")
            continue
        if any(p.startswith(EXEMPT) for p in paths) or dotted.startswith(EXEMPT):
            continue
        if not linked & set(paths):
            public = api.home(obj, documented())  # where it is described, not re-exported
            role = "class" if inspect.isclass(obj) else "func"
            todo.append(f"{{py:{role}}}`{public}`  (code cell {cell}, line {line}: `{dotted}`)")
    return todo, problems


def bad_links(markdown: str) -> list[str]:
    return [f"{{py:{role}}}`{target}`" for role, target in link_targets(markdown) if target not in documented()]


# --------------------------------------------------------------------------------------- the rule itself
SAMPLE_CELLS = [
    "import advlib\nimport advlib.attacks as A\nfrom advlib.train import predict, accuracy as acc\n"
    "from advlib.course import whitebox\nfrom advlib.verify import exact",
    "%matplotlib inline\nx = advlib.data.load('digits', 'test').x\nm = advlib.zoo.load('digits-mlp')\n"
    "x_adv = A.pgd(m, x, predict(m, x), eps=0.1, steps=5)\nattacks = {'fgsm': A.fgsm}\n"
    "print(acc(m, x_adv, None), A.NORMS, advlib.zoo.ENTRIES['digits-mlp'].arch)\n"
    "whitebox.check_fgsm(None)\nexact.lp_bound\nadvlib.course.or_reference(None, None)",
    "def predict(m, x):\n    return m(x)\npredict(None, None)\nA.margin",
]
SAMPLE_LINKS = ("{py:func}`advlib.data.load` and {py:func}`~advlib.zoo.load`, {py:func}`the attack "
                "<advlib.attacks.pgd>`, {py:func}`advlib.threat.margin`")


def test_uses_follow_the_notebooks_names():
    uses = {d for d, _, _ in advlib_uses(SAMPLE_CELLS)}
    assert {"advlib.data.load", "advlib.zoo.load", "advlib.attacks.pgd", "advlib.train.predict",
            "advlib.attacks.fgsm", "advlib.train.accuracy", "advlib.attacks.NORMS", "advlib.zoo.ENTRIES",
            "advlib.course.whitebox.check_fgsm", "advlib.verify.exact.lp_bound", "advlib.attacks.margin",
            "advlib.course.or_reference"} == uses  # the rebound `predict` of cell 2 is the lecture's own


def test_link_targets_read_every_form():
    assert [t for _, t in link_targets(SAMPLE_LINKS)] == ["advlib.data.load", "advlib.zoo.load",
                                                          "advlib.attacks.pgd", "advlib.threat.margin"]


def test_the_rule_finds_missing_links_and_exempts_the_course():
    todo, problems = missing_links(SAMPLE_LINKS, SAMPLE_CELLS)
    assert problems == []
    named = {line.split("`")[1] for line in todo}
    # linked: load x2, pgd, margin (as advlib.threat.margin); exempt: course; constants: not required
    assert named == {"advlib.train.predict", "advlib.attacks.fgsm", "advlib.train.accuracy",
                     "advlib.verify.exact.lp_bound"}, todo
    todo, problems = missing_links("", ["import advlib\nadvlib.attacks.no_such_attack(1)"])
    assert todo == [] and "advlib.attacks.no_such_attack" in problems[0] and "does not exist" in problems[0]


def test_bad_links_are_found():
    assert bad_links(SAMPLE_LINKS) == []
    assert bad_links("{py:func}`advlib.attacks.pgd.pgd` {py:func}`advlib.attacks.nope`") == [
        "{py:func}`advlib.attacks.pgd.pgd`", "{py:func}`advlib.attacks.nope`"]


# --------------------------------------------------------------------------------------- the lectures
@pytest.mark.parametrize("path", LECTURES, ids=[p.stem for p in LECTURES])
def test_lecture_links_resolve(path):
    bad = bad_links(lecture(path)[0])
    assert not bad, f"{path.name} links what the API reference does not document: {bad}"


@pytest.mark.parametrize("path", LECTURES, ids=[p.stem for p in LECTURES])
def test_lecture_links_every_advlib_function_it_uses(path):
    todo, problems = missing_links(*lecture(path))
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)
    assert not todo, f"{path.name} uses these without linking them; add to its prose:\n  " + "\n  ".join(todo)


def main() -> int:
    failed = 0
    for path in LECTURES:
        markdown, cells = lecture(path)
        todo, problems = missing_links(markdown, cells)
        bad = bad_links(markdown)
        if todo or problems or bad:
            failed += 1
            print(f"{path.name}:")
            print("".join(f"  - add {t}\n" for t in todo) + "".join(f"  - fix {p}\n" for p in problems)
                  + "".join(f"  - unresolved link {b}\n" for b in bad), end="")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
