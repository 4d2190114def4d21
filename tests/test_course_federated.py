"""Lecture 53's helpers: the loop references agree with the library's aggregation rules
(:func:`advlib.applications.krum`, :func:`advlib.applications.trimmed_mean`) and with hand-worked cases,
and the exercise checks accept right answers, reject typical wrong ones with the right hint and report a
stub as not attempted."""
import pytest
import torch

from advlib.applications import krum, trimmed_mean
from advlib.course import ExerciseError
from advlib.course import federated as ex


def stub(*args, **kwargs):
    raise NotImplementedError


def test_reference_krum_by_hand_and_against_the_library():
    # 5 updates in 1-D: 0, 1, 2, 10, 11; f = 1 -> 2 neighbours each. Scores: 0: 1+4=5, 1: 1+1=2, 2: 1+4=5,
    # 10: 1+64=65, 11: 1+81=82 -> the update 1
    U = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0]])
    assert torch.equal(ex.reference_krum(U, 1), torch.tensor([1.0]))
    g = torch.Generator().manual_seed(0)
    for n, f in [(7, 2), (12, 4), (5, 0)]:
        U = torch.randn(n, 6, generator=g)
        assert torch.equal(ex.reference_krum(U, f), krum(U, f))


def test_reference_trimmed_mean_by_hand_and_against_the_library():
    U = torch.tensor([[1.0, 10.0], [2.0, -5.0], [100.0, 0.0], [3.0, 1.0]])
    assert torch.allclose(ex.reference_trimmed_mean(U, 1), torch.tensor([2.5, 0.5]))
    U = torch.randn(9, 5, generator=torch.Generator().manual_seed(1))
    for b in range(4):
        assert torch.allclose(ex.reference_trimmed_mean(U, b), trimmed_mean(U, b), atol=1e-6)


def test_checks_accept_the_library(capsys):
    ex.check_krum(krum, strict=True)
    ex.check_trimmed_mean(trimmed_mean, strict=True)
    assert capsys.readouterr().out.count("correct") == 2


def _krum_with_self(U, f):
    d = torch.cdist(U, U).pow(2)
    return U[d.sort(1).values[:, : len(U) - f - 2].sum(1).argmin()]


def _krum_unsquared(U, f):
    d = torch.cdist(U, U)
    d.fill_diagonal_(float("inf"))
    return U[d.topk(len(U) - f - 2, dim=1, largest=False).values.sum(1).argmin()]


@pytest.mark.parametrize("wrong, hint", [
    (lambda U, f: U.mean(0), "one of the updates itself"),
    (lambda U, f: U.median(0).values, "one of the updates itself"),
    (_krum_with_self, "to itself"),
    (_krum_unsquared, "squared"),
    (lambda U, f: U[0], "smallest Krum score|itself|squared|nearest"),
    (lambda U, f: U, "shape"),
])
def test_krum_check_rejects_wrong_answers(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        ex.check_krum(wrong)


@pytest.mark.parametrize("wrong, hint", [
    (lambda U, b: U.mean(0), "plain mean"),
    (lambda U, b: U.sort(0).values[b:].mean(0), "largest"),
    (lambda U, b: U[U.norm(dim=1).argsort()[b:len(U) - b]].mean(0), "per coordinate"),
    (lambda U, b: U.sort(1).values[:, b:U.shape[1] - b].mean(1), "shape"),
    (lambda U, b: U.sort(0).values[b:len(U) - b].mean(0) + 0.01, "differ"),
])
def test_trimmed_mean_check_rejects_wrong_answers(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        ex.check_trimmed_mean(wrong)


def test_in_place_sorting_is_caught():
    def in_place(U, b):
        U.copy_(U.sort(0).values)
        return U[b:len(U) - b].mean(0)

    with pytest.raises(ExerciseError, match="in place"):
        ex.check_trimmed_mean(in_place)


def test_stubs_are_not_attempted_unless_strict(capsys):
    ex.check_krum(stub)
    ex.check_trimmed_mean(stub)
    assert capsys.readouterr().out.count("not attempted") == 2
    with pytest.raises(ExerciseError, match="stub"):
        ex.check_krum(stub, strict=True)
