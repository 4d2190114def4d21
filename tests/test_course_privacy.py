"""Lecture 51's helpers: the reference answers agree with the formulas and with the library
(:func:`advlib.applications.extract_blackbox`, :func:`advlib.applications.roc`, SciPy's Mann-Whitney
statistic), and the exercise checks accept right answers, reject typical wrong ones with the right hint
and report a stub as not attempted."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu, rankdata
from torch import nn

from advlib.applications import bit_error, extract, extract_blackbox, make_watermark, roc
from advlib.blackbox import BlackBox
from advlib.course import ExerciseError
from advlib.course import privacy as ex
from advlib.models import build


def stub(*args, **kwargs):
    raise NotImplementedError


# ------------------------------------------------------------------------------------------ references
def _small_model(seed=0, in_shape=(1, 4, 4), n_classes=5):
    torch.manual_seed(seed)
    return build("mlp", in_shape=in_shape, hidden=(16,), n_classes=n_classes).eval()


def test_reference_read_bits_is_the_librarys_black_box_readout():
    model = _small_model()
    wm = make_watermark((1, 4, 4), n_bits=6, n_keys=3, n_classes=5, seed=4)
    calls = []

    def logp(x, c):
        calls.append(len(x))
        with torch.no_grad():
            return torch.log_softmax(model(x.float()), 1).gather(1, c[:, None])[:, 0]

    got = ex.reference_read_bits(logp, wm.keys, wm.classes, wm.coords, 1e-3)
    assert sum(calls) == 2 * 6 * 3  # 2N queries per key
    library, spent = extract_blackbox(BlackBox(model, "scores"), wm)
    assert spent == 2 * 6 * 3 and torch.equal(got.float(), library)
    assert torch.equal(got.float(), extract(model, wm))  # the signs of the exact mean gradient


def test_reference_read_bits_by_hand():
    # log p_c(x) = x . G[c]: the key of class 0 has gradient (1, -2, 3, 0), that of class 1 (-3, 1, 1, 0)
    G = torch.tensor([[1.0, -2.0, 3.0, 0.0], [-3.0, 1.0, 1.0, 0.0]], dtype=torch.float64)

    def logp(x, c):
        return (x.flatten(1) * G[c]).sum(1)

    keys = torch.full((2, 1, 2, 2), 0.5, dtype=torch.float64)
    bits = ex.reference_read_bits(logp, keys, torch.tensor([0, 1]), torch.tensor([0, 1, 2]), 1e-2)
    assert bits.tolist() == [-1.0, -1.0, 1.0]  # means -1, -0.5, 2


def test_reference_steal_linear_recovers_a_softmax_regression_exactly():
    g = torch.Generator().manual_seed(0)
    W, b = torch.randn(4, 6, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    rows = []

    def query(x):
        rows.append(len(x))
        assert x.min() >= 0 and x.max() <= 1
        return torch.softmax(x.flatten(1) @ W.T + b, 1)

    W_hat, b_hat = ex.reference_steal_linear(query, (1, 2, 3))
    assert sum(rows) == 7  # d + 1
    assert torch.allclose(W_hat - W_hat[:1], W - W[:1], atol=1e-10)  # up to the shift the softmax ignores
    assert torch.allclose(b_hat - b_hat[:1], b - b[:1], atol=1e-10)
    x = torch.rand(50, 6, generator=g, dtype=torch.float64)
    assert torch.allclose(torch.softmax(x @ W_hat.T + b_hat, 1), query(x), atol=1e-12)


def test_reference_steal_linear_through_a_black_box():
    torch.manual_seed(1)
    victim = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    victim.in_shape = (1, 4, 4)
    box = BlackBox(victim, "scores")
    W, b = ex.reference_steal_linear(lambda x: box.scores(x.float()).double(), (1, 4, 4))
    assert box.queries == 17
    x = torch.rand(100, 1, 4, 4)
    with torch.no_grad():
        mine = torch.softmax(x.flatten(1).double() @ W.T + b, 1)
        assert torch.allclose(mine, victim(x).softmax(1).double(), atol=1e-5)


def test_reference_auc_is_mann_whitney_and_the_librarys():
    g = torch.Generator().manual_seed(2)
    for a, b in ((torch.randn(40, generator=g), torch.randn(25, generator=g) + 0.5),
                 (torch.randint(4, (30,), generator=g).float(), torch.randint(4, (20,), generator=g).float())):
        u = mannwhitneyu(a.numpy(), b.numpy(), alternative="two-sided").statistic  # U of the first sample
        assert ex.reference_auc(a, b) == pytest.approx(u / (len(a) * len(b)), abs=1e-12)
        assert ex.reference_auc(a, b) == pytest.approx(roc(a, b)["auc"], abs=1e-12)
    # by hand: members [3, 1, 2, 2] vs non-members [2, 0, 1]: wins 3 + 1 + 2 + 2 = 8, ties 0 + 1 + 1 + 1 = 3
    assert ex.reference_auc(torch.tensor([3.0, 1, 2, 2]), torch.tensor([2.0, 0, 1])) == pytest.approx(9.5 / 12)
    assert ex.reference_auc(torch.ones(3), torch.ones(5)) == 0.5


def test_checks_report_a_stub_and_fail_it_when_strict(capsys):
    for check in (ex.check_read_bits, ex.check_steal_linear, ex.check_auc):
        check(stub)
        assert "not attempted yet" in capsys.readouterr().out
        with pytest.raises(ExerciseError, match="stub"):
            check(stub, strict=True)


# ------------------------------------------------------------------------------------------ exercise 1
def _read_bits(kind):
    def read_bits(logp, keys, classes, coords, h):
        n, n_bits = len(keys), len(coords)
        if kind == "in_place":
            keys.add_(0.0 * keys + 1e-3)
        flat = keys.reshape(n, -1)
        step = torch.zeros(n_bits, flat.shape[1], dtype=keys.dtype)
        step[torch.arange(n_bits), coords] = h
        c = classes
        if kind == "class_zero":
            c = torch.zeros_like(classes)
        plus = logp((flat[:, None] + step).reshape(-1, *keys.shape[1:]), c.repeat_interleave(n_bits)).reshape(n, n_bits)
        if kind == "one_sided":
            g = (plus - logp(keys, c)[:, None]) / h
        else:
            minus = logp((flat[:, None] - step).reshape(-1, *keys.shape[1:]),
                         c.repeat_interleave(n_bits)).reshape(n, n_bits)
            g = (plus - minus) / (2 * h)
        if kind == "extra_fx":
            logp(keys, c)
        if kind == "flipped":
            g = -g
        if kind == "per_key":
            return torch.sign(g)
        if kind == "values":
            return g.mean(0)
        if kind == "majority":
            return torch.sign(torch.sign(g).sum(0))
        if kind == "shape":
            return torch.sign(g.mean(0))[None]
        if kind == "random":
            return torch.ones(n_bits)
        return torch.sign(g.mean(0))
    return read_bits


def test_check_read_bits_accepts_the_reference_and_a_batched_answer(capsys):
    ex.check_read_bits(ex.reference_read_bits, strict=True)
    ex.check_read_bits(_read_bits("right"), strict=True)
    assert capsys.readouterr().out.count("correct") == 2


@pytest.mark.parametrize("kind, hint", [("per_key", "one row per key"), ("values", "their signs"),
                                        ("one_sided", "one-sided"), ("extra_fx", "need no log p"),
                                        ("flipped", "flipped"), ("majority", "majority vote"),
                                        ("class_zero", "own class"), ("in_place", "in place"),
                                        ("shape", "expected 4 bits"), ("random", "expected the bits")])
def test_check_read_bits_rejects_wrong_answers_with_the_right_hint(kind, hint):
    with pytest.raises(ExerciseError, match=hint):
        ex.check_read_bits(_read_bits(kind))


def test_check_read_bits_names_a_badly_shaped_query():
    def flat_queries(logp, keys, classes, coords, h):
        return logp(keys.reshape(len(keys), -1), classes)

    with pytest.raises(ExerciseError, match=r"batch of shape \(n, 1, 2, 3\)"):
        ex.check_read_bits(flat_queries)


# ------------------------------------------------------------------------------------------ exercise 2
def _steal(kind):
    def steal(query, shape):
        d = math.prod(shape)
        if kind == "least_squares":  # d + 1 random points and a linear solve of log p: also exact
            g = torch.Generator().manual_seed(0)
            x = torch.rand(d + 1, d, generator=g, dtype=torch.float64)
            logp = query(x.reshape(d + 1, *shape)).log()
            A = torch.cat([x, torch.ones(d + 1, 1, dtype=torch.float64)], 1)
            sol = torch.linalg.solve(A, logp)  # (d + 1) x K
            return sol[:-1].T, sol[-1]
        n = 2 * d + 1 if kind == "too_many" else d + 1
        x = torch.zeros(n, d, dtype=torch.float64)
        x[1:d + 1] = torch.eye(d)
        if kind == "out_of_range":
            x[1:d + 1] = -torch.eye(d)
        if kind == "flat":
            p = query(x)
        else:
            p = query(x.reshape(n, *shape))
        logp = p.log() if kind != "probabilities" else p
        b = logp[0]
        W = (logp[1:d + 1] - b).T
        if kind == "transposed":
            return W.T, b
        if kind == "no_bias":
            return W, torch.zeros_like(b)
        if kind == "half_step":
            return 2 * W, b
        return W, b
    return steal


def test_check_steal_linear_accepts_the_reference_and_a_linear_solve(capsys):
    ex.check_steal_linear(ex.reference_steal_linear, strict=True)
    ex.check_steal_linear(_steal("right"), strict=True)
    ex.check_steal_linear(_steal("least_squares"), strict=True)
    assert capsys.readouterr().out.count("correct") == 3


@pytest.mark.parametrize("kind, hint", [("too_many", r"d \+ 1 = 7 suffice"), ("transposed", "K x d"),
                                        ("no_bias", "intercept is missing"), ("probabilities", "take log p first"),
                                        ("out_of_range", r"only inputs in \[0.0, 1.0\]"),
                                        ("flat", "batch of shape"), ("half_step", "b is right, W is not")])
def test_check_steal_linear_rejects_wrong_answers_with_the_right_hint(kind, hint):
    with pytest.raises(ExerciseError, match=hint):
        ex.check_steal_linear(_steal(kind))


def test_check_steal_linear_names_a_wrong_return_value():
    with pytest.raises(ExerciseError, match=r"return the pair \(W, b\)"):
        ex.check_steal_linear(lambda query, shape: torch.zeros(3, 6))
    with pytest.raises(ExerciseError, match="differs from the victim's answers"):
        ex.check_steal_linear(lambda query, shape: (torch.randn(3, math.prod(shape)), torch.randn(3)))


# ------------------------------------------------------------------------------------------ exercise 3
def _auc(kind):
    def auc(members, nonmembers):
        a, b = members.double()[:, None], nonmembers.double()[None, :]
        wins, ties = (a > b).double().sum(), (a == b).double().sum()
        n, m = len(members), len(nonmembers)
        if kind == "ranks":  # the rank-sum form of the same statistic, average ranks for ties
            r = rankdata(np.concatenate([members.numpy(), nonmembers.numpy()]))
            return float((r[:n].sum() - n * (n + 1) / 2) / (n * m))
        if kind == "ties_zero":
            return float(wins / (n * m))
        if kind == "ties_one":
            return float((wins + ties) / (n * m))
        if kind == "reversed":
            return float(1 - (wins + 0.5 * ties) / (n * m))
        if kind == "n_squared":
            return float((wins + 0.5 * ties) / (n * n))
        if kind == "count":
            return float(wins + 0.5 * ties)
        if kind == "advantage":
            return roc(members, nonmembers)["advantage"]
        if kind == "in_place":
            members[:] = members.sort().values
        if kind == "vector":
            return (a > b).double().mean(1)
        return (wins + 0.5 * ties) / (n * m)
    return auc


def test_check_auc_accepts_the_reference_and_other_correct_forms(capsys):
    ex.check_auc(ex.reference_auc, strict=True)
    ex.check_auc(_auc("right"), strict=True)
    ex.check_auc(_auc("ranks"), strict=True)
    ex.check_auc(lambda a, b: roc(a, b)["auc"], strict=True)
    assert capsys.readouterr().out.count("correct") == 4


@pytest.mark.parametrize("kind, hint", [("ties_zero", "ties count zero"), ("ties_one", "ties count one"),
                                        ("reversed", "non-member outscores"), ("n_squared", "divided by n"),
                                        ("count", "the count U"), ("advantage", "membership advantage"),
                                        ("in_place", "in place"), ("vector", "return one number")])
def test_check_auc_rejects_wrong_answers_with_the_right_hint(kind, hint):
    with pytest.raises(ExerciseError, match=hint):
        ex.check_auc(_auc(kind))


def test_bit_error_of_the_reference_readout_is_zero_on_a_model_read_exactly():
    # the lecture's use: the reference readout through a black box gives the white-box bits
    model = _small_model(seed=3)
    wm = make_watermark((1, 4, 4), n_bits=8, n_keys=2, n_classes=5, seed=1)
    box = BlackBox(model, "scores")
    bits = ex.reference_read_bits(lambda x, c: box.scores(x).clamp_min(1e-30).log().gather(1, c[:, None])[:, 0],
                                  wm.keys, wm.classes, wm.coords, 1e-3)
    assert box.queries == 2 * 8 * 2
    assert bit_error(bits, wm) == bit_error(extract(model, wm), wm)
