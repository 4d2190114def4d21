"""The lectures as text: one source of truth, kept in step with its generated notebooks.

(The lectures themselves are executed by nbval: `pytest` collects lectures/*.ipynb.)
"""
import re
from pathlib import Path

import jupytext
import pytest

LECTURES = sorted(Path(__file__).resolve().parents[1].glob("lectures/[0-9][0-9]_*.md"))


def _cells(nb):
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", []))) for c in nb.cells]


def test_there_are_lectures():
    assert LECTURES and LECTURES[0].name == "00_introduction.md"


@pytest.mark.parametrize("path", LECTURES, ids=lambda p: p.name)
def test_lecture_is_a_myst_notebook_in_canonical_form(path):
    text = path.read_text()
    header = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert header and "format_name: myst" in header.group(1), "MyST notebooks need the jupytext header"
    nb = jupytext.reads(text, "md:myst")
    assert any(c.cell_type == "code" for c in nb.cells)
    # writing it back gives the same cells: nothing is lost or reinterpreted by jupytext
    again = jupytext.reads(jupytext.writes(nb, "md:myst"), "md:myst")
    assert _cells(again) == _cells(nb)


@pytest.mark.parametrize("path", LECTURES, ids=lambda p: p.name)
def test_generated_notebook_has_not_drifted(path):
    ipynb = path.with_suffix(".ipynb")
    if not ipynb.exists():
        pytest.skip(f"{ipynb.name} not generated yet (jupytext --sync lectures/*.md writes it)")
    assert _cells(jupytext.read(ipynb)) == _cells(jupytext.read(path)), (
        f"{ipynb.name} and {path.name} differ: run `jupytext --sync {path}` (the newer file wins)")


@pytest.mark.parametrize("path", LECTURES, ids=lambda p: p.name)
def test_every_exercise_check_has_a_strict_hidden_solution(path):
    cells = jupytext.read(path).cells
    checks = [c for c in cells if c.cell_type == "code" and re.search(r"\.check_\w+\(", c.source)
              and "strict=True" not in c.source]
    solutions = [c for c in cells if "solution" in c.metadata.get("tags", [])]
    assert len(solutions) == len(checks) > 0
    for s in solutions:
        assert "strict=True" in s.source
        assert s.metadata.get("jupyter", {}).get("source_hidden") is True
        assert "hide-cell" in s.metadata["tags"] or "hide-input" in s.metadata["tags"]


@pytest.mark.parametrize("path", LECTURES, ids=lambda p: p.name)
def test_lecture_reads_sizes_from_the_profile(path):
    code = "\n".join(c.source for c in jupytext.read(path).cells if c.cell_type == "code")
    assert "advlib.profile()" in code
    assert not re.search(r"load\(\s*['\"](mnist|cifar10|fashion-mnist)['\"]", code), "use P.dataset"
