"""Lecture 32's helpers: the reference answers agree with the formulas and with the library
(:mod:`advlib.backdoor.cleanse`, :mod:`advlib.backdoor.repair`, DL-TND's ``torch.quantile``), and the
exercise checks accept right answers, reject typical wrong ones with the right hint and report a stub
as not attempted."""
import numpy as np
import pytest
import torch

from advlib.backdoor.cleanse import mad_anomaly
from advlib.backdoor.repair import bezier
from advlib.course import ExerciseError
from advlib.course import trojans as ex


def stub(*args, **kwargs):
    raise NotImplementedError


# ------------------------------------------------------------------------------------------ references
def test_reference_statistic_by_hand_and_torch_quantile():
    cos = torch.tensor([0.9, 0.8, 0.1, 0.5, 0.6, 0.7, 0.2])
    labels = torch.tensor([0, 1, 0, 0, 1, 0, 1])
    got = ex.reference_shortcut_statistic(cos, labels, 2)
    # label 0: sorted 0.1 0.5 0.7 0.9, position 0.75 -> 0.1 + 0.75 * 0.4; label 1: 0.2 0.6 0.8, position 0.5 -> 0.4
    assert torch.allclose(got, torch.tensor([0.4, 0.4], dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    cos, labels = torch.rand(90, generator=g), torch.randperm(90, generator=g) % 10
    for q in (0.0, 0.25, 0.5, 1.0):
        want = torch.stack([cos[labels == c].quantile(q) for c in range(10)]).double()  # what dl_tnd computes
        assert torch.allclose(ex.reference_shortcut_statistic(cos, labels, 10, q), want, atol=1e-6)


def test_reference_anomaly_index_is_mad_anomaly():
    g = torch.Generator().manual_seed(1)
    for k in (2, 7, 10, 43):
        l1 = torch.rand(k, generator=g) * 50
        assert torch.allclose(ex.reference_anomaly_index(l1), mad_anomaly(l1), atol=1e-9)
    l1 = torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0])  # median 3, MAD 1
    assert torch.allclose(ex.reference_anomaly_index(l1), torch.tensor([2, 1, 0, -1, -97.0]).double() / 1.4826)
    assert np.isclose(float(ex.reference_anomaly_index(torch.tensor([1.0, 2, 4, 8]))[0]),
                      (3 - 1) / (1.4826 * 1.5))  # even K: median 3, deviations 2 1 1 5 -> MAD 1.5


def test_reference_bezier_point_is_the_librarys_curve():
    g = torch.Generator().manual_seed(2)
    w1, th, w2 = (torch.randn(3, 4, generator=g) for _ in range(3))
    for t in (0.0, 0.2, 0.5, 1.0):
        assert torch.allclose(ex.reference_bezier_point(w1, th, w2, t), bezier(w1, th, w2, t))
    assert torch.equal(ex.reference_bezier_point(w1, th, w2, 0.0), w1)
    assert torch.allclose(ex.reference_bezier_point(w1, th, w2, 0.5), (w1 + 2 * th + w2) / 4)


def test_checks_report_a_stub_and_fail_it_when_strict(capsys):
    for check in (ex.check_shortcut_statistic, ex.check_anomaly_index, ex.check_bezier_point):
        check(stub)
        assert "not attempted yet" in capsys.readouterr().out
        with pytest.raises(ExerciseError, match="stub"):
            check(stub, strict=True)


# ------------------------------------------------------------------------------------------ exercise 1
def _statistic(kind):
    def shortcut_statistic(cos, labels, n_labels, q=0.25):
        groups = [cos[labels == c] for c in range(n_labels)]
        if kind == "numpy":
            return [float(np.percentile(v.numpy(), 100 * q)) for v in groups]
        if kind == "mean":
            return torch.stack([v.mean() for v in groups])
        if kind == "median":
            return torch.stack([v.median() if len(v) % 2 else v.quantile(0.5) for v in groups])
        if kind == "fixed_q":
            return torch.stack([v.quantile(0.25) for v in groups])
        if kind == "upper":
            return torch.stack([v.quantile(1 - q) for v in groups])
        if kind == "min":
            return torch.stack([v.min() for v in groups])
        if kind == "pooled":
            return cos.quantile(q).repeat(n_labels)
        if kind == "nearest":
            return torch.stack([v.quantile(q, interpolation="lower") for v in groups])
        if kind == "close":
            return torch.stack([v.quantile(q) + 0.01 for v in groups])
        if kind == "in_place":
            cos.clamp_(0, 1)
        return torch.stack([v.quantile(q) for v in groups])
    return shortcut_statistic


def test_check_statistic_accepts_the_reference_torch_and_numpy(capsys):
    ex.check_shortcut_statistic(ex.reference_shortcut_statistic, strict=True)
    ex.check_shortcut_statistic(_statistic("right"), strict=True)
    ex.check_shortcut_statistic(_statistic("numpy"), strict=True)
    assert capsys.readouterr().out.count("correct") == 3


@pytest.mark.parametrize("kind, hint", [("mean", "mean of each label"), ("fixed_q", "argument q"),
                                        ("median", "median"), ("upper", "0.75-quantile"), ("min", "minimum"),
                                        ("pooled", "same value"), ("nearest", "'lower' interpolation"),
                                        ("close", "close, but"), ("in_place", "in place")])
def test_check_statistic_rejects_wrong_answers_with_the_right_hint(kind, hint):
    with pytest.raises(ExerciseError, match=hint):
        ex.check_shortcut_statistic(_statistic(kind))


# ------------------------------------------------------------------------------------------ exercise 2
def _anomaly(kind):
    def anomaly_index(l1):
        med = l1.median() if kind == "torch_median" else l1.quantile(0.5)
        dev = (l1 - med).abs()
        mad = dev.median() if kind == "torch_median" else dev.quantile(0.5)
        index = (med - l1) / (1.4826 * mad)
        if kind == "unsigned":
            return index.abs()
        if kind == "reversed":
            return -index
        if kind == "no_constant":
            return (med - l1) / mad
        if kind == "z_score":
            return (l1.mean() - l1) / l1.std()
        if kind == "in_place":
            l1.sub_(med)
        return index
    return anomaly_index


def test_check_anomaly_index_accepts_the_reference_and_the_librarys(capsys):
    ex.check_anomaly_index(ex.reference_anomaly_index, strict=True)
    ex.check_anomaly_index(mad_anomaly, strict=True)
    ex.check_anomaly_index(_anomaly("right"), strict=True)
    assert capsys.readouterr().out.count("correct") == 3


@pytest.mark.parametrize("kind, hint", [("unsigned", "never negative"), ("reversed", "sign is reversed"),
                                        ("no_constant", "consistency constant"), ("torch_median", "lower"),
                                        ("z_score", "z-score"), ("in_place", "in place")])
def test_check_anomaly_index_rejects_wrong_answers_with_the_right_hint(kind, hint):
    with pytest.raises(ExerciseError, match=hint):
        ex.check_anomaly_index(_anomaly(kind))


# ------------------------------------------------------------------------------------------ exercise 3
def _bezier(kind):
    def bezier_point(w1, theta, w2, t):
        if kind == "linear":
            return (1 - t) * w1 + t * w2
        if kind == "swapped":
            return (1 - t) ** 2 * w2 + 2 * t * (1 - t) * theta + t ** 2 * w1
        if kind == "no_two":
            return (1 - t) ** 2 * w1 + t * (1 - t) * theta + t ** 2 * w2
        if kind == "in_place":
            return w1.mul_((1 - t) ** 2).add_(2 * t * (1 - t) * theta + t ** 2 * w2)
        if kind == "cubic":
            return (1 - t) ** 3 * w1 + 3 * t * (1 - t) * theta + t ** 3 * w2
        return (1 - t) ** 2 * w1 + 2 * t * (1 - t) * theta + t ** 2 * w2
    return bezier_point


def test_check_bezier_accepts_the_reference_and_the_librarys(capsys):
    ex.check_bezier_point(ex.reference_bezier_point, strict=True)
    ex.check_bezier_point(bezier, strict=True)
    ex.check_bezier_point(_bezier("right"), strict=True)
    assert capsys.readouterr().out.count("correct") == 3


@pytest.mark.parametrize("kind, hint", [("linear", "straight line"), ("swapped", "swapped"), ("no_two", "factor 2"),
                                        ("in_place", "in place"), ("cubic", "not the quadratic")])
def test_check_bezier_rejects_wrong_answers_with_the_right_hint(kind, hint):
    with pytest.raises(ExerciseError, match=hint):
        ex.check_bezier_point(_bezier(kind))
