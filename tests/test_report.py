"""The holistic robustness report (`advlib.report`): its numbers are the library's own evaluations of
the same model on the same points, its bounds are ordered as theorems say, it runs on every image
model of the zoo, and its HTML page loads nothing from anywhere."""
from __future__ import annotations

import re

import pytest
import torch

import advlib
from advlib import blackbox, defenses, verify
from advlib.report import Comparison, RobustnessReport, compare, robustness_report
from advlib.train import predict

N_DIGITS = 40
SMALL = dict(steps=10, queries=100, clever_points=3, clever_batches=5, clever_batch_size=32)


@pytest.fixture(scope="module")
def mlp_report(zoo_model, digits):
    x, y = digits
    return robustness_report(zoo_model("digits-mlp-pgd"), x, y, eps=0.1, name="pgd", **SMALL)


def test_numbers_are_the_lecture_level_evaluations(mlp_report, zoo_model, digits):
    x, y = digits
    m = zoo_model("digits-mlp-pgd")
    r = mlp_report
    ev = defenses.evaluate(m, x, y, eps=0.1, attacks=("apgd-ce", "apgd-t", "fab-t"), steps=10, seed=0,
                           progress=False)
    assert r.white_box == ev.robust_accuracy and r.clean == ev.clean_accuracy
    box = blackbox.BlackBox(m, output="scores")
    x_bb = blackbox.square(box, x, y, eps=0.1, queries=100, seed=0)
    robust_bb = (predict(m, x_bb) == y) & (predict(m, x) == y)
    assert r.black_box == robust_bb.float().mean().item()
    assert r.worst_case == (robust_bb & ev.robust).float().mean().item()
    assert r.certified == verify.certified_accuracy(m, x, y, eps=0.1, method="crown")
    points = torch.nonzero(predict(m, x) == y).flatten()[:3]
    torch.testing.assert_close(r.radius, verify.certified_radius(m, x[points], y[points], method="crown"))
    torch.testing.assert_close(r.clever, verify.clever(m, x[points], y[points], norm="linf", n_batches=5,
                                                       batch_size=32, seed=0).score)
    assert r.queries_to_success == box.log.summary()["mean_queries_to_success"] or r.black_box == 1


def test_bounds_are_ordered(mlp_report):
    r = mlp_report
    assert r.certified <= r.worst_case <= min(r.white_box, r.black_box) <= r.clean
    assert all(0 <= v <= 1 for v in (r.clean, r.white_box, r.black_box, r.worst_case, r.certified))
    assert set(r.seconds) >= {"white box", "black box", "certificate", "CLEVER", "total"}


def test_renders_as_text_table_figure_and_offline_html(mlp_report, tmp_path):
    r = mlp_report
    text = str(r)
    for lens in ("penetration testing", "certificate"):
        assert lens in text
    assert f"{r.worst_case:.1%}" in text and f"{r.certified:.1%}" in text
    page = r.to_html(tmp_path / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "<table" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)  # no asset from a host
    assert "@import" not in page and "<script" not in page
    fig = r.figure()
    assert len(fig.axes) == 2 and fig.axes[0].get_xlim() == (0, 112)


def test_compare_lines_models_up(mlp_report, zoo_model, digits, tmp_path):
    x, y = digits
    other = robustness_report(zoo_model("digits-mlp"), x, y, eps=0.1, name="standard", **SMALL)
    c = compare([other, mlp_report])
    assert isinstance(c, Comparison)
    rows = c.rows()
    assert rows[0] == ["lens", "measurement", "standard", "pgd"]
    worst = next(row for row in rows if row[1] == "worst case")
    assert worst[2:] == [f"{other.worst_case:.1%}", f"{mlp_report.worst_case:.1%}"]
    page = c.to_html(tmp_path / "all.html").read_text()
    assert page.count("<svg") == 3  # the comparison and each report
    with pytest.raises(ValueError, match="non-empty list of RobustnessReport"):
        compare([])


def test_trojan_scan_flags_a_trojan_model_and_not_its_clean_sibling(digits28_test):
    from advlib.backdoor import calibrate, detections, population

    record = detections()
    members = population("held-out")
    threshold = calibrate([record[m.name]["DL-TND"]["score"] for m in population("calibration")])
    trojan = next(m for m in members if m.trojan and record[m.name]["DL-TND"]["score"] > threshold)
    clean = next(m for m in members if not m.trojan and record[m.name]["DL-TND"]["score"] <= threshold)
    x, y = digits28_test.x[:10], digits28_test.y[:10]
    got = {}
    for m in (trojan, clean):
        r = robustness_report(m.load("cpu"), x, y, eps=0.1, trusted=digits28_test, trojan_threshold=threshold,
                              name=m.name, steps=2, queries=10, clever_points=0)
        got[m.trojan] = r.trojan
        assert r.clever.numel() == 0 and "Trojan scan" in str(r)
    assert got[True]["flagged"] and not got[False]["flagged"]
    assert got[True]["target"] == trojan.target


SHIPPED_IMAGE_MODELS = [n for n, e in advlib.zoo.ENTRIES.items() if e.shipped and e.dataset in ("digits", "digits28")]


@pytest.mark.parametrize("name", SHIPPED_IMAGE_MODELS)
def test_runs_on_every_image_model_of_the_zoo(name, zoo_model, digits, digits28_test):
    entry = advlib.zoo.ENTRIES[name]
    x, y = digits if entry.dataset == "digits" else (digits28_test.x[:10], digits28_test.y[:10])
    r = robustness_report(zoo_model(name), x[:10], y[:10], eps=0.05, name=name, steps=3, queries=20,
                          clever_points=1, clever_batches=3, clever_batch_size=16)
    assert isinstance(r, RobustnessReport) and r.certified is not None  # every zoo MLP and CNN is boundable
    assert r.certified <= r.worst_case <= r.clean


def test_bad_input_is_refused_clearly(zoo_model, digits):
    x, y = digits
    m = zoo_model("digits-mlp")
    with pytest.raises(ValueError, match=r"inputs must lie in \[0.0, 1.0\]"):
        robustness_report(m, x * 3 - 1, y, eps=0.1)
    with pytest.raises(ValueError, match="eps"):
        robustness_report(m, x, y, eps=0)
    with pytest.raises(ValueError, match="norm"):
        robustness_report(m, x, y, eps=0.1, norm="l1")
    with pytest.raises(ValueError, match="torch.nn.Module"):
        robustness_report(lambda t: t, x, y, eps=0.1)
    with pytest.raises(ValueError):
        robustness_report(m, x, y[:-1], eps=0.1)
