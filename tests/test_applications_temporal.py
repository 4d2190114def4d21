"""advlib.applications.temporal from first principles: the generated series (shapes, range, at most
``segments`` labelled pieces, each class's sine at (2 + 3c)/64 cycles a step by its FFT peak,
seeded); the tagger's shape and its non-causality; TD's score against a hand loop, zero for a
pointwise labeller (whose prefix labels are its whole-series labels), at most 1/k for a labeller
that sees one step ahead, a fraction k the same as its int; sequence PGD in the L-inf ball and
[0, 1], raising the target's step accuracy, with clear errors; and the adaptive attack's prefix
carrying the target better than the plain attack's."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advlib.applications.temporal import Tagger, segment_series, sequence_pgd, step_accuracy, td_score, train_tagger

L = 64


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tagger():
    """A Tagger trained for 8 epochs on 300 series of length 64 (~0.89 held-out step accuracy)."""
    x, y = segment_series(300, L, seed=0)
    model = train_tagger(x, y, epochs=8, lr=1e-2, seed=0)
    assert not model.training
    return model


@pytest.fixture(scope="module")
def held_out():
    return segment_series(32, L, seed=1)


def runs(labels):
    """The number of constant pieces of a label sequence."""
    labels = labels.tolist()
    return 1 + sum(a != b for a, b in zip(labels[:-1], labels[1:]))


# ------------------------------------------------------------------------------ the series
@pytest.mark.parametrize("n,length,k,segments", [(20, 96, 4, 3), (7, 40, 6, 5), (5, 16, 1, 2), (10, 64, 3, 1)])
def test_segment_series_shapes_and_pieces(n, length, k, segments):
    x, y = segment_series(n, length, k, segments=segments, seed=3)
    assert x.shape == (n, 1, length) and x.dtype == torch.float32
    assert y.shape == (n, length) and y.dtype == torch.long
    assert x.min() >= 0 and x.max() <= 1
    assert y.min() >= 0 and y.max() < k
    for i in range(n):
        assert runs(y[i]) <= segments
        # the cuts lie in [length // 8, length - length // 8): the first and last pieces are long enough
        first = next(t for t in range(length) if y[i, t] != y[i, 0]) if runs(y[i]) > 1 else length
        last = next(t for t in range(length) if y[i, length - 1 - t] != y[i, -1]) if runs(y[i]) > 1 else length
        assert first >= length // 8 and last >= length // 8


def test_segment_series_seeded():
    a, b = segment_series(6, 50, seed=4), segment_series(6, 50, seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = segment_series(6, 50, seed=5)
    assert not torch.equal(a[0], c[0])
    # several pieces do occur
    assert max(runs(r) for r in segment_series(30, 96, segments=3, seed=0)[1]) == 3


def test_segment_series_class_frequency():
    """One noise-free piece of 1024 steps: 16 (2 + 3c) whole periods, so the FFT peaks exactly there."""
    n, length = 24, 1024
    x, y = segment_series(n, length, 4, segments=1, noise=0.0, amplitude=(0.25, 0.25), seed=0)
    assert set(y[:, 0].tolist()) == {0, 1, 2, 3}
    for i in range(n):
        c = int(y[i, 0])
        assert (y[i] == c).all()
        s = x[i, 0].double() - 0.5
        # amplitude 0.25, no clamping (c = 2 has period 8: its samples can miss the crest by pi/8)
        assert 0.25 * math.cos(math.pi / 8) - 1e-6 < s.abs().max() <= 0.25 + 1e-6
        peak = int(torch.fft.rfft(s).abs().argmax())
        assert peak / length == pytest.approx((2 + 3 * c) / 64)
        # and the series is a pure tone: fit a sin/cos pair at that frequency by least squares
        t = torch.arange(length, dtype=torch.float64)
        basis = torch.stack([torch.sin(2 * math.pi * peak * t / length), torch.cos(2 * math.pi * peak * t / length)], 1)
        coef = torch.linalg.lstsq(basis, s[:, None]).solution
        assert (basis @ coef - s[:, None]).abs().max() < 1e-4  # float32 phases at t ~ 1000
        assert coef.norm() == pytest.approx(0.25, abs=1e-5)


def test_segment_series_noise():
    x0, _ = segment_series(8, 512, segments=1, noise=0.0, seed=2)
    x1, _ = segment_series(8, 512, segments=1, noise=0.05, seed=2)
    # the same pieces (the noise is drawn after them), plus N(0, 0.05^2) (nothing clamped at amplitude 0.3)
    diff = x1 - x0
    assert diff.std().item() == pytest.approx(0.05, rel=0.1) and abs(diff.mean().item()) < 0.01


# ------------------------------------------------------------------------------ the tagger
@pytest.mark.parametrize("length", [1, 7, 64, 101])
@pytest.mark.parametrize("k", [4, 3])
def test_tagger_shape(length, k):
    torch.manual_seed(0)
    model = Tagger(k).eval()
    with torch.no_grad():
        assert model(torch.rand(3, 1, length)).shape == (3, k, length)


@pytest.mark.parametrize("length,early_steps", [(8, 1), (40, 37)])
def test_tagger_is_non_causal(length, early_steps):
    """Changing the last step changes the logits of steps the convolution (kernel 5: two steps
    either side) cannot see from there: the backward GRU carries it (and its memory of a random
    init fades, ~1e-3 after 8 steps)."""
    torch.manual_seed(0)
    model = Tagger().eval()
    x = torch.rand(2, 1, length)
    late, early = x.clone(), x.clone()
    late[..., -1] = 1 - late[..., -1]
    early[..., 0] = 1 - early[..., 0]
    with torch.no_grad():
        out, out_late, out_early = model(x), model(late), model(early)
    assert (out_late[..., :early_steps] - out[..., :early_steps]).abs().max() > 1e-4
    assert (out_early[..., -early_steps:] - out[..., -early_steps:]).abs().max() > 1e-4  # and forwards


def test_tagger_learns(tagger, held_out):
    x, y = held_out
    assert step_accuracy(tagger, x, y).mean() > 0.8
    # step_accuracy by hand
    with torch.no_grad():
        pred = tagger(x).argmax(1)
    hand = torch.tensor([sum(int(pred[i, t] == y[i, t]) for t in range(L)) / L for i in range(len(x))])
    assert torch.allclose(step_accuracy(tagger, x, y), hand)


# ------------------------------------------------------------------------------ TD score
def test_td_score_of_a_pointwise_labeller_is_zero():
    """A 1x1 convolution labels each step by its own value: a prefix's labels are the whole series'."""
    torch.manual_seed(0)
    model = nn.Conv1d(1, 4, 1).eval()
    x = torch.rand(10, 1, L)
    assert (model(x).argmax(1) != model(x).argmax(1)[:, :1]).any()  # not a constant labeller
    for k in (1, 5, 32, L - 1, 0.5):
        assert torch.equal(td_score(model, x, k), torch.zeros(10))


def test_td_score_of_a_one_step_lookahead_labeller():
    """Kernel 3, padding 1: only the prefix's last step sees a different input (zero padding), so
    at most one of the k labels can change."""
    torch.manual_seed(1)
    model = nn.Conv1d(1, 4, 3, padding=1).eval()
    x = torch.rand(50, 1, L)
    for k in (4, 20):
        td = td_score(model, x, k)
        assert ((td == 0) | torch.isclose(td, torch.tensor(1 / k))).all() and (td > 0).any()


def hand_td(model, x, k):
    out = []
    for i in range(len(x)):
        with torch.no_grad():
            whole = model(x[i:i + 1]).argmax(1)[0]
            prefix = model(x[i:i + 1, :, :k]).argmax(1)[0]
        out.append(sum(int(prefix[t] != whole[t]) for t in range(k)) / k)
    return torch.tensor(out)


def test_td_score_matches_a_loop(tagger, held_out):
    x, y = held_out
    adv = sequence_pgd(tagger, x[:16], (y[:16] + 1) % 4, eps=0.15, steps=10)
    X = torch.cat([x, adv])
    for k in (8, 20, 48):
        td = td_score(tagger, X, k)
        assert td.shape == (len(X),)
        assert torch.allclose(td, hand_td(tagger, X, k))
        assert (td > 0).any()  # the comparison is not all zeros
    torch.manual_seed(3)
    fresh = Tagger().eval()
    assert torch.allclose(td_score(fresh, X, 16), hand_td(fresh, X, 16))


def test_td_score_probabilities(tagger, held_out):
    """``kind="probabilities"``: the mean over the first k steps of the total-variation distance
    1/2 sum_c |p_c(prefix) - p_c(whole)|, by a loop over series, steps and classes."""
    x, y = held_out
    X = torch.cat([x[:8], sequence_pgd(tagger, x[:8], (y[:8] + 1) % 4, eps=0.15, steps=10)])
    k = 20
    with torch.no_grad():
        whole = [tagger(X[i:i + 1])[0].softmax(0) for i in range(len(X))]
        prefix = [tagger(X[i:i + 1, :, :k])[0].softmax(0) for i in range(len(X))]
    hand = torch.tensor([sum(0.5 * sum(abs(float(prefix[i][c, t]) - float(whole[i][c, t])) for c in range(4))
                             for t in range(k)) / k for i in range(len(X))])
    tv = td_score(tagger, X, k, kind="probabilities")
    assert torch.allclose(tv, hand, atol=1e-5) and (tv > 1e-3).all() and (tv <= 1).all()
    # a series whose labels change gets a larger distance than ...
    labels = td_score(tagger, X, k)
    assert tv[labels > 0].min() > 0
    # ... and a pointwise labeller none at all
    torch.manual_seed(0)
    pointwise = nn.Conv1d(1, 4, 1).eval()
    assert torch.allclose(td_score(pointwise, X, k, kind="probabilities"), torch.zeros(len(X)), atol=1e-7)
    with pytest.raises(ValueError, match="kind must be 'labels' or 'probabilities', got 'tv'"):
        td_score(tagger, X, k, kind="tv")


def test_td_score_fraction_and_errors(tagger, held_out):
    x, _ = held_out
    assert torch.equal(td_score(tagger, x, 0.5), td_score(tagger, x, 32))
    assert torch.equal(td_score(tagger, x, 0.25), td_score(tagger, x, 16))
    assert torch.equal(td_score(tagger, x, 0.3), td_score(tagger, x, 19))  # round(19.2)
    for k in (L, L + 5, 0, -3, 0.001, 0.999, 1.0):
        with pytest.raises(ValueError, match=f"prefix must be shorter than the series \\(1 <= k < {L}\\)"):
            td_score(tagger, x, k)
    td_score(tagger, x, 1)
    td_score(tagger, x, L - 1)


# ------------------------------------------------------------------------------ sequence PGD
@pytest.mark.parametrize("eps", [0.03, 0.2])
def test_sequence_pgd_stays_in_the_ball(tagger, held_out, eps):
    x, y = held_out
    x = x[:8].clone()
    x[0, 0, :10], x[1, 0, :10] = 0.0, 1.0  # inputs on the box's faces
    target = torch.zeros_like(y[:8])
    for prefixes in ((), (16, 40)):
        adv = sequence_pgd(tagger, x, target, eps=eps, steps=8, alpha=eps, prefixes=prefixes)
        assert adv.shape == x.shape and not adv.requires_grad
        assert (adv - x).abs().max() <= eps + 1e-6
        assert adv.min() >= 0 and adv.max() <= 1
        assert (adv - x).abs().max() > eps / 2  # it did move


def test_sequence_pgd_raises_the_target_accuracy(tagger, held_out):
    x, y = held_out
    x, target = x[:16], (y[:16] + 1) % 4
    clean = step_accuracy(tagger, x, target).mean()
    weak = sequence_pgd(tagger, x, target, eps=0.05, steps=20)
    strong = sequence_pgd(tagger, x, target, eps=0.2, steps=20)
    acc_weak, acc_strong = step_accuracy(tagger, weak, target).mean(), step_accuracy(tagger, strong, target).mean()
    assert clean < 0.15 and acc_weak > clean + 0.05 and acc_strong > 0.6 and acc_strong > acc_weak
    # the target's loss went down
    with torch.no_grad():
        assert F.cross_entropy(tagger(strong), target) < F.cross_entropy(tagger(x), target) - 1
    # seeded random start
    assert torch.equal(weak, sequence_pgd(tagger, x, target, eps=0.05, steps=20))
    assert not torch.equal(weak, sequence_pgd(tagger, x, target, eps=0.05, steps=20, seed=1))


def test_sequence_pgd_errors(tagger, held_out):
    x, y = held_out
    x, y = x[:4], y[:4]
    with pytest.raises(ValueError, match=r"target must hold one label per step, shape \(4, 64\); got \(4, 63\)"):
        sequence_pgd(tagger, x, y[:, :-1], eps=0.1, steps=1)
    with pytest.raises(ValueError, match=r"target .* got \(3, 64\)"):
        sequence_pgd(tagger, x, y[:3], eps=0.1, steps=1)
    with pytest.raises(ValueError, match=r"target .* got \(256,\)"):
        sequence_pgd(tagger, x, y.flatten(), eps=0.1, steps=1)
    for k in (0, L + 1, -2):
        with pytest.raises(ValueError, match=f"every prefix length must be in 1..{L}, got {k}"):
            sequence_pgd(tagger, x, y, eps=0.1, steps=1, prefixes=(10, k))
    sequence_pgd(tagger, x, y, eps=0.1, steps=1, prefixes=(1, L))
    with pytest.raises(ValueError, match="eps"):
        sequence_pgd(tagger, x, y, eps=0.0, steps=1)
    with pytest.raises(ValueError, match="steps"):
        sequence_pgd(tagger, x, y, eps=0.1, steps=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]|range|outside"):
        sequence_pgd(tagger, x * 3, y, eps=0.1, steps=1)
    # a model in train mode: a warning that says so, and the model is switched to eval mode
    torch.manual_seed(0)
    model = Tagger().train()
    with pytest.warns(UserWarning, match="sequence_pgd got a model in train mode"):
        sequence_pgd(model, x, y, eps=0.1, steps=1)
    assert not model.training
    model.train()
    with pytest.warns(UserWarning, match="td_score got a model in train mode"):
        td_score(model, x, 10)
    assert not model.training


@pytest.mark.parametrize("prefixes", [(), (16,), (16, 40)])
def test_sequence_pgd_matches_a_hand_loop(tagger, held_out, prefixes):
    """A few signed steps on the documented loss, the mean of the cross-entropies of the whole series
    and of every truncated prefix ``x'_{1:k}`` (the sum gives the same signs), each projected on the
    L-inf ball and [0, 1]. The random start is read off a run with a negligible step (1e-12, below
    float32's resolution at these values)."""
    x, y = held_out
    x, target = x[:6], (y[:6] + 2) % 4
    eps, alpha, steps = 0.1, 0.04, 4
    start = sequence_pgd(tagger, x, target, eps=eps, steps=1, alpha=1e-12, seed=3)
    assert (start - x).abs().max() <= eps + 1e-6 and (start - x).abs().max() > eps / 2
    adv = start.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        losses = [F.cross_entropy(tagger(adv), target)]
        losses += [F.cross_entropy(tagger(adv[..., :k]), target[:, :k]) for k in prefixes]
        (grad,) = torch.autograd.grad(sum(losses) / len(losses), adv)
        with torch.no_grad():
            adv = torch.min(torch.max(adv - alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
    out = sequence_pgd(tagger, x, target, eps=eps, steps=steps, alpha=alpha, prefixes=prefixes, seed=3)
    assert torch.allclose(out, adv, atol=1e-6)
    if prefixes:  # the prefixes' loss does change the steps
        assert not torch.allclose(out, sequence_pgd(tagger, x, target, eps=eps, steps=steps, alpha=alpha, seed=3))


def test_adaptive_attack_carries_the_target_into_the_prefix(tagger, held_out):
    """``prefixes=(k,)`` adds the prefix's loss. The tagger's context is short (kernel 5, then a GRU
    whose memory fades), so cutting the series only changes labels near the cut and the plain attack's
    prefix already carries much of the target; the adaptive attack's gain is small on the prefix as a
    whole (~+0.02-0.03 in agreement) and concentrated in its last steps (~+0.08). Robust comparisons:
    the prefix's cross-entropy to the target (what the adaptive attack minimises) is lower, the
    agreement on the prefix's last 8 steps is higher, and on the whole prefix it is not lower."""
    x, y = held_out
    target = (y + 1) % 4
    k = 32
    plain = sequence_pgd(tagger, x, target, eps=0.1, steps=20)
    adaptive = sequence_pgd(tagger, x, target, eps=0.1, steps=20, prefixes=(k,))

    def on_prefix(adv):
        with torch.no_grad():
            logits = tagger(adv[..., :k])
        agree = (logits.argmax(1) == target[:, :k]).float()
        return F.cross_entropy(logits, target[:, :k]).item(), agree.mean().item(), agree[:, -8:].mean().item()

    (ce_plain, all_plain, tail_plain), (ce_adapt, all_adapt, tail_adapt) = on_prefix(plain), on_prefix(adaptive)
    assert ce_adapt < ce_plain
    assert tail_adapt > tail_plain + 0.02
    assert all_adapt >= all_plain
    # both still attack the whole series about as well
    whole_plain = step_accuracy(tagger, plain, target).mean()
    whole_adapt = step_accuracy(tagger, adaptive, target).mean()
    assert whole_adapt > whole_plain - 0.05 and whole_plain > step_accuracy(tagger, x, target).mean() + 0.2
