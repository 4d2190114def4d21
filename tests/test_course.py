"""Exercise checks accept right answers, reject wrong ones, and the homework tool strips solutions."""
import math

import pytest
import torch

from advlib.course import ExerciseError, check_environment, intro
from advlib.course.__main__ import strip


def right_norm(delta, p):
    flat = delta.flatten(1)
    return (flat != 0).sum(1).float() if p == 0 else torch.linalg.vector_norm(flat, ord=p, dim=1)


def stub(*args):
    raise NotImplementedError


def test_lp_norm_check(capsys):
    intro.check_lp_norms(right_norm, strict=True)
    intro.check_lp_norms(stub)
    assert "not attempted" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="stub"):
        intro.check_lp_norms(stub, strict=True)
    with pytest.raises(ExerciseError, match="L1"):  # L1 computed as L2
        intro.check_lp_norms(lambda d, p: right_norm(d, 2 if p == 1 else p))
    with pytest.raises(ExerciseError, match="shape"):  # a norm of the whole batch, not per example
        intro.check_lp_norms(lambda d, p: torch.linalg.vector_norm(d.flatten(), ord=p if p else 2))
    with pytest.raises(ExerciseError, match="L0"):  # counting pixels above a threshold is not L0
        intro.check_lp_norms(lambda d, p: (d.flatten(1).abs() > 0.5).sum(1).float() if p == 0 else right_norm(d, p))


def test_projection_check():
    intro.check_project_linf(lambda x, x0, e: torch.min(torch.max(x, x0 - e), x0 + e).clamp(0, 1), strict=True)
    with pytest.raises(ExerciseError, match=r"\[0, 1\]"):  # forgets the valid range
        intro.check_project_linf(lambda x, x0, e: torch.min(torch.max(x, x0 - e), x0 + e))
    with pytest.raises(ExerciseError, match="moved"):  # forgets the ball
        intro.check_project_linf(lambda x, x0, e: x.clamp(0, 1))
    with pytest.raises(ExerciseError, match="closest"):  # inside both sets, but not a projection
        intro.check_project_linf(lambda x, x0, e: x0)


def test_threat_quiz_check():
    reach = {1: "data", 2: "inference", 3: "inference", 4: "data", 5: "inference", 6: "model"}
    knowledge = {2: "white-box", 3: "query", 5: "transfer"}
    intro.check_threats(reach, knowledge, strict=True)
    with pytest.raises(ExerciseError, match="scenario 6"):
        intro.check_threats({**reach, 6: "inference"}, knowledge)
    with pytest.raises(ExerciseError, match="scenario 5"):
        intro.check_threats(reach, {**knowledge, 5: "query"})
    with pytest.raises(ExerciseError):
        intro.check_threats(None, None, strict=True)
    assert set(intro.SCENARIOS) == set(reach)


def test_environment_check_reports_and_loads_the_zoo(capsys):
    info = check_environment()
    assert info["profile"] == "fast" and "digits-cnn" in info["shipped models"]
    assert "device" in capsys.readouterr().out


def test_taxonomy_figure_draws_and_marks_the_parts_being_written():
    fig = intro.threat_taxonomy()
    assert len(fig.axes) == 2
    texts = [t.get_text() for t in fig.axes[0].texts]
    unwritten = [p for p in intro.PARTS if not intro.is_written(p)]
    assert any("being written" in t for t in texts) == bool(unwritten)


def test_course_map_is_computed_from_modules_and_lectures(tmp_path):
    for name in ("00_introduction.md", "01_a.md", "03_c.md", "04_p.md", "40_d.md", "notes.md"):
        (tmp_path / name).write_text("")
    evasion, training, verification = (next(p for p in intro.PARTS if p.topic == t)
                                       for t in ("Evasion attacks", "Training-phase attacks", "Verification"))
    assert intro.lectures_of(evasion, tmp_path) == ["01_a", "03_c"]  # 00 is the introduction, not part 1
    assert intro.lectures_of(training, tmp_path) == ["04_p"]  # Part 1's training-phase block is lecture 04
    assert intro.lectures_of(verification, tmp_path) == ["40_d"]
    assert intro.is_written(evasion, tmp_path) and intro.is_written(verification, tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not intro.is_written(evasion, empty)  # the module alone is not the part
    assert intro.is_written(evasion, tmp_path / "missing")  # no lectures folder (installed package): module only
    assert not intro.is_written(intro.Part(9, "t", "c", "advlib.no_such_module"), tmp_path)
    assert not intro.exists("advlib.no_such_package.sub") and intro.exists("advlib.attacks")
    table = intro.parts_table(empty).splitlines()
    assert len(table) == 2 + len(intro.PARTS) and all("being written" in row for row in table[2:])
    table = intro.parts_table(tmp_path).splitlines()[2:]
    for part, row in zip(intro.PARTS, table):
        assert ("being written" in row) == (not intro.is_written(part, tmp_path)), row
    assert "being written" not in table[0] and "`01_a`, `03_c`" in table[0]
    assert ("being written" in table[1]) == (not intro.exists(training.module))


def test_strip_removes_solutions(tmp_path):
    import jupytext

    src = "lectures/00_introduction.md"
    full = jupytext.read(src)
    out = strip(src, tmp_path / "hw.ipynb")
    hw = jupytext.read(out)
    n_solutions = sum("solution" in c.metadata.get("tags", []) for c in full.cells)
    assert n_solutions >= 3
    assert len(hw.cells) == len(full.cells) - n_solutions
    assert not any("strict=True" in c.source for c in hw.cells)
    assert any("raise NotImplementedError" in c.source for c in hw.cells)


def test_math_inf_is_accepted_as_p():
    assert torch.allclose(right_norm(torch.ones(2, 3), math.inf), torch.ones(2))
