"""Lecture 20's helpers: the reference answers agree with the formulas and with the library
(:class:`advlib.reprogram.Program`, :func:`advlib.reprogram.focal_loss`, :func:`advlib.reprogram.wasserstein_1d`),
and the exercise checks accept right answers, reject typical wrong ones with the right hint and report a
stub as not attempted."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import wasserstein_distance

from advlib.course import ExerciseError
from advlib.course import reprogramming as ex
from advlib.reprogram import Program, focal_loss, wasserstein_1d


def stub(*args, **kwargs):
    raise NotImplementedError


# ------------------------------------------------------------------------------------------ references
def test_reference_program_transform_is_the_librarys_program():
    g = torch.Generator().manual_seed(0)
    for source, target, mask in (((1, 8, 8), (1, 5, 6), "outside"), ((1, 8, 8), (1, 3, 3), "all"),
                                 ((3, 7, 10), (3, 2, 5), torch.rand(3, 7, 10, generator=g))):
        prog = Program(source, target, form="tanh", mask=mask, init=2.0, seed=3)
        t = torch.rand(4, *target, generator=g)
        with torch.no_grad():
            assert torch.allclose(ex.reference_program_transform(t, prog.W, prog.mask), prog(t), atol=1e-6)
    # by hand: a 1x1 target in a 1x3 x 3 canvas, W = 0 -> the target in the middle of grey
    t = torch.tensor([[[[0.9]]]])
    out = ex.reference_program_transform(t, torch.zeros(1, 3, 3), torch.ones(1, 3, 3))
    assert out[0, 0, 1, 1] == pytest.approx(0.9) and (out.flatten().sort().values[:8] == 0.5).all()
    big = ex.reference_program_transform(torch.ones(1, 1, 1, 1), torch.full((1, 3, 3), 10.0), torch.ones(1, 3, 3))
    assert big.max() == 1.0  # clipped


def test_reference_focal_loss_is_the_librarys_and_ce_at_gamma_0():
    g = torch.Generator().manual_seed(1)
    p = torch.softmax(torch.randn(20, 5, generator=g, dtype=torch.float64), 1)
    y = torch.randint(5, (20,), generator=g)
    for gamma, omega in ((0.0, 1.0), (2.0, 1.0), (4.0, 0.5)):
        assert torch.allclose(ex.reference_focal_loss(p, y, gamma, omega), focal_loss(p, y, gamma, omega))
    assert torch.allclose(ex.reference_focal_loss(p, y, 0.0), F.nll_loss(p.log(), y, reduction="none"))
    pt = torch.tensor([[0.5, 0.5]])  # by hand: -(1 - 0.5)^2 log 0.5 = 0.25 log 2
    assert float(ex.reference_focal_loss(pt, torch.tensor([0]))) == pytest.approx(0.25 * np.log(2))


def test_reference_wasserstein_is_the_librarys_and_scipys():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(100, generator=g), 1 + torch.rand(100, generator=g)
    want = wasserstein_distance(a.numpy(), b.numpy())
    assert float(ex.reference_wasserstein_1d(a, b)) == pytest.approx(want, rel=1e-6)
    assert float(wasserstein_1d(a[:, None], b[:, None])[0]) == pytest.approx(want, rel=1e-5)
    assert float(ex.reference_wasserstein_1d(a, a.flip(0))) == 0.0
    assert float(ex.reference_wasserstein_1d(torch.tensor([0.0, 1]), torch.tensor([3.0, 1]))) == pytest.approx(1.5)


def test_checks_report_a_stub_and_fail_it_when_strict(capsys):
    for check in (ex.check_program_transform, ex.check_focal_loss, ex.check_wasserstein_1d):
        check(stub)
        assert "not attempted yet" in capsys.readouterr().out
        with pytest.raises(ExerciseError, match="stub"):
            check(stub, strict=True)


# ------------------------------------------------------------------------------------------ exercise 1
def _transform(kind):
    def program_transform(t, W, M):
        n, c, h, w = t.shape
        H, Wd = W.shape[1:]
        top, left = (H - h) // 2, (Wd - w) // 2
        if kind == "off_centre":
            top, left = H - h - top, Wd - w - left
        fill = 0.0 if kind == "zero_pad" else 0.5
        pad = F.pad(t, (left, Wd - w - left, top, H - h - top), value=fill)
        program = {"no_half": torch.tanh(W * M), "no_mask": torch.tanh(W) / 2,
                   "mask_outside_tanh": M * torch.tanh(W) / 2}.get(kind, torch.tanh(W * M) / 2)
        out = pad + program
        if kind == "no_clip":
            return out
        if kind == "in_place":
            W.mul_(M)
        if kind == "shape":
            return out.clamp(0, 1)[0]
        if kind == "sigmoid":
            return (pad + torch.sigmoid(W * M) - 0.5).clamp(0, 1)
        return out.clamp(0, 1)
    return program_transform


def test_check_program_transform_accepts_the_reference_and_a_padding_answer(capsys):
    ex.check_program_transform(ex.reference_program_transform, strict=True)
    ex.check_program_transform(_transform("right"), strict=True)
    assert capsys.readouterr().out.count("correct") == 2


@pytest.mark.parametrize("kind, hint", [("no_clip", "clipped"), ("no_half", r"tanh\(W \* M\) / 2"),
                                        ("zero_pad", "mid-grey"), ("no_mask", "mask is missing"),
                                        ("mask_outside_tanh", "inside the tanh"), ("off_centre", "centred"),
                                        ("in_place", "in place"), ("shape", "expected a tensor of shape"),
                                        ("sigmoid", "not the program's output")])
def test_check_program_transform_rejects_wrong_answers_with_the_right_hint(kind, hint):
    with pytest.raises(ExerciseError, match=hint):
        ex.check_program_transform(_transform(kind))


# ------------------------------------------------------------------------------------------ exercise 2
def _focal(kind):
    def focal(p, y, gamma=2.0, omega=1.0):
        pt = p.gather(1, y[:, None])[:, 0]
        if kind == "no_omega":
            return -(1 - pt) ** gamma * pt.log()
        if kind == "ce":
            return -omega * pt.log()
        if kind == "pt_gamma":
            return -omega * pt ** gamma * pt.log()
        if kind == "log_one_minus":
            return -omega * (1 - pt) ** gamma * (1 - pt).log()
        if kind == "sign":
            return omega * (1 - pt) ** gamma * pt.log()
        if kind == "mean":
            return (-omega * (1 - pt) ** gamma * pt.log()).mean()
        if kind == "max_prob":
            pm = p.max(1).values
            return -omega * (1 - pm) ** gamma * pm.log()
        if kind == "in_place":
            p.clamp_(min=0.05)
        if kind == "column":
            return (-omega * (1 - pt) ** gamma * pt.log())[:, None]
        if kind == "off":
            return -omega * (1 - pt) ** (gamma + 1) * pt.log()
        return -omega * (1 - pt) ** gamma * torch.log(pt)
    return focal


def test_check_focal_loss_accepts_the_reference_the_library_and_a_gather(capsys):
    ex.check_focal_loss(ex.reference_focal_loss, strict=True)
    ex.check_focal_loss(focal_loss, strict=True)
    ex.check_focal_loss(_focal("right"), strict=True)
    assert capsys.readouterr().out.count("correct") == 3


@pytest.mark.parametrize("kind, hint", [("no_omega", "omega is missing"), ("ce", "cross-entropy"),
                                        ("pt_gamma", r"not p_t\^gamma"), ("log_one_minus", "log is of p_t"),
                                        ("sign", "sign"), ("mean", "batch's mean"), ("max_prob", "true"),
                                        ("in_place", "in place"), ("column", "one per example"),
                                        ("off", "Hint: p_t")])
def test_check_focal_loss_rejects_wrong_answers_with_the_right_hint(kind, hint):
    with pytest.raises(ExerciseError, match=hint):
        ex.check_focal_loss(_focal(kind))


# ------------------------------------------------------------------------------------------ exercise 3
def _w1(kind):
    def w1(a, b):
        sa, sb = a.sort().values, b.sort().values
        if kind == "numpy":
            return float(np.mean(np.abs(np.sort(a.numpy()) - np.sort(b.numpy()))))
        if kind == "unsorted":
            return (a - b).abs().mean()
        if kind == "squared":
            return (sa - sb).pow(2).mean()
        if kind == "w2":
            return (sa - sb).pow(2).mean().sqrt()
        if kind == "sum":
            return (sa - sb).abs().sum()
        if kind == "max":
            return (sa - sb).abs().max()
        if kind == "means":
            return (a.mean() - b.mean()).abs()
        if kind == "one_sorted":
            return (sa - b).abs().mean()
        if kind == "descending":
            return (sa - sb.flip(0)).abs().mean()
        if kind == "in_place":
            a.copy_(sa)
            return (a - sb).abs().mean()
        if kind == "vector":
            return (sa - sb).abs()
        if kind == "off":
            return (sa - sb).abs().mean() * 1.1
        return (sa - sb).abs().mean()
    return w1


def test_check_wasserstein_accepts_the_reference_torch_numpy_and_scipy(capsys):
    ex.check_wasserstein_1d(ex.reference_wasserstein_1d, strict=True)
    ex.check_wasserstein_1d(_w1("right"), strict=True)
    ex.check_wasserstein_1d(_w1("numpy"), strict=True)
    ex.check_wasserstein_1d(lambda a, b: wasserstein_distance(a.numpy(), b.numpy()), strict=True)
    assert capsys.readouterr().out.count("correct") == 4


@pytest.mark.parametrize("kind, hint", [("unsorted", "order given"), ("squared", "squared"), ("w2", "W_2"),
                                        ("sum", "sum of the differences"), ("max", "largest difference"),
                                        ("means", "difference of the means"), ("one_sorted", "only a is sorted"),
                                        ("descending", "descending"), ("in_place", "in place"),
                                        ("vector", "one number"), ("off", "Hint: sort")])
def test_check_wasserstein_rejects_wrong_answers_with_the_right_hint(kind, hint):
    with pytest.raises(ExerciseError, match=hint):
        ex.check_wasserstein_1d(_w1(kind))
