"""Lecture 52's helpers: the reference answers agree with the library (:func:`advlib.applications.td_score`,
the adaptive objective of :func:`advlib.applications.sequence_pgd`), and the exercise checks accept right
answers, reject typical wrong ones with the right hint and report a stub as not attempted."""
import pytest
import torch
import torch.nn.functional as F

from advlib.applications import Tagger, td_score
from advlib.course import ExerciseError
from advlib.course import sequences as ex


def stub(*args, **kwargs):
    raise NotImplementedError


def _tagger(seed=0):
    torch.manual_seed(seed)
    return Tagger(n_classes=3, channels=4, hidden=6).eval()


def test_reference_td_score_is_the_librarys():
    model = _tagger()
    x = torch.rand(7, 1, 30, generator=torch.Generator().manual_seed(0))
    for k in (1, 9, 15, 29):
        assert torch.equal(ex.reference_td_score(model, x, k), td_score(model, x, k))


def test_reference_td_score_by_hand():
    class Fixed(torch.nn.Module):  # whole series: all class 0; a prefix of length 4: steps 1 and 3 read class 1
        def forward(self, x):
            out = torch.zeros(len(x), 2, x.shape[-1])
            out[:, 0] = 1
            if x.shape[-1] == 4:
                out[:, 1, [1, 3]] = 2
            return out

    assert torch.equal(ex.reference_td_score(Fixed().eval(), torch.zeros(2, 1, 10), 4), torch.full((2,), 0.5))
    assert torch.equal(td_score(Fixed().eval(), torch.zeros(2, 1, 10), 4), torch.full((2,), 0.5))


def test_reference_adaptive_loss_is_cross_entropy_on_whole_and_prefixes():
    model = _tagger(1)
    g = torch.Generator().manual_seed(1)
    x, t = torch.rand(3, 1, 20, generator=g), torch.randint(3, (3, 20), generator=g)
    want = F.cross_entropy(model(x), t) + F.cross_entropy(model(x[..., :5]), t[:, :5]) \
        + F.cross_entropy(model(x[..., :12]), t[:, :12])
    assert torch.allclose(ex.reference_adaptive_loss(model, x, t, (5, 12)), want, atol=1e-6)
    assert torch.allclose(ex.reference_adaptive_loss(model, x, t, ()), F.cross_entropy(model(x), t), atol=1e-6)


def test_td_check_accepts_the_library_and_a_loop(capsys):
    ex.check_td_score(lambda m, x, k: td_score(m, x, k), strict=True)
    ex.check_td_score(ex.reference_td_score, strict=True)
    assert capsys.readouterr().out.count("correct") == 2


@pytest.mark.parametrize("wrong, hint", [
    (lambda m, x, k: (m(x).argmax(1)[:, :k] != m(x[..., :k]).argmax(1)).float().sum(1), "fraction"),
    (lambda m, x, k: (m(x).argmax(1)[:, :k] == m(x[..., :k]).argmax(1)).float().mean(1), "agreement"),
    (lambda m, x, k: (m(x).argmax(1)[:, :k] != m(x).argmax(1)[:, :k]).float().mean(1), "alone"),
    (lambda m, x, k: td_score(m, x, k)[:1], "one score per series"),
    (lambda m, x, k: td_score(m, x, k) + 0.1, "differ"),
])
def test_td_check_rejects_wrong_answers(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        ex.check_td_score(wrong)


def test_adaptive_check_accepts_and_rejects(capsys):
    def right(m, x, t, prefixes):
        return F.cross_entropy(m(x), t) + sum(F.cross_entropy(m(x[..., :k]), t[:, :k]) for k in prefixes)

    ex.check_adaptive_loss(right, strict=True)
    assert "correct" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="whole series' loss only"):
        ex.check_adaptive_loss(lambda m, x, t, p: F.cross_entropy(m(x), t))
    with pytest.raises(ExerciseError, match="on its own"):
        ex.check_adaptive_loss(lambda m, x, t, p: F.cross_entropy(m(x), t)
                               + sum(F.cross_entropy(m(x)[..., :k], t[:, :k]) for k in p))
    with pytest.raises(ExerciseError, match="no gradient"):
        ex.check_adaptive_loss(lambda m, x, t, p: right(m, x, t, p).detach())
    with pytest.raises(ExerciseError, match="scalar"):
        ex.check_adaptive_loss(lambda m, x, t, p: F.cross_entropy(m(x), t, reduction="none"))


def test_stubs_are_not_attempted_unless_strict(capsys):
    ex.check_td_score(stub)
    ex.check_adaptive_loss(stub)
    assert capsys.readouterr().out.count("not attempted") == 2
    with pytest.raises(ExerciseError, match="stub"):
        ex.check_td_score(stub, strict=True)
