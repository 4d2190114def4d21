"""The soft-label L-inf attacks (NES, Bandits-TD, ZO-signSGD, Square) against first principles,
white-box PGD at the same radius, and the Square attacks of torchattacks and ART at equal query
budgets on the same points, on the 28x28 digits CNN."""
import math

import numpy as np
import pytest
import torch

from advlib.attacks import pgd
from advlib.blackbox import BlackBox
from advlib.blackbox.bandits import _eg_step, bandits
from advlib.blackbox.nes import nes
from advlib.blackbox.signsgd import zo_signsgd
from advlib.blackbox.square import p_schedule, square
from advlib.train import predict

N_DIGITS28 = 20
#: attack, its parameters in these tests, and the queries one of its steps costs an example
ATTACKS = {"nes": (nes, {"samples": 20}, 41), "bandits": (bandits, {}, 3), "zo_signsgd": (zo_signsgd, {}, 11),
           "square": (square, {}, 1)}


@pytest.fixture(scope="module")
def cnn28(zoo_model):
    return zoo_model("digits28-cnn")


def _run(name, model, x, y, **kw):
    fn, params, _ = ATTACKS[name]
    bb = BlackBox(model, "scores")
    x_adv = fn(bb, x, y, **{**params, **kw})
    return bb, x_adv


@pytest.mark.parametrize("name", ATTACKS)
def test_first_principles(name, cnn28, digits28):
    """In the ball and the box; never past the allowance (an odd number); every query charged; a
    success stops the example at once (its queries are its first success) and is adversarial on the
    model itself; a failure spent its allowance (it stopped only when no step fitted)."""
    x, y = digits28
    eps, queries, cost = 0.07 if name == "square" else 0.12, 487, ATTACKS[name][2]  # both outcomes occur
    bb, x_adv = _run(name, cnn28, x, y, eps=eps, queries=queries)
    log = bb.log
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert x_adv.min() >= 0 and x_adv.max() <= 1 and (x_adv - x).abs().max() <= eps + 1e-6
    assert (log.queries <= queries).all() and bb.queries == int(log.queries.sum())
    ok = log.success
    assert 0 < ok.sum() < len(x), "eps/queries should give both outcomes here"
    assert (log.queries[ok] == log.first_success[ok]).all()
    assert (predict(cnn28, x_adv[ok]) != y[ok]).all()
    assert (log.queries[~ok] > queries - cost).all()
    assert math.isfinite(log.distortion_at(queries)[ok].max().item())


@pytest.mark.parametrize("name", ATTACKS)
def test_seeded_already_adversarial_and_bad_input(name, cnn28, digits28):
    x, y = digits28[0][:4], digits28[1][:4]
    fn, params, _ = ATTACKS[name]
    a = _run(name, cnn28, x, y, eps=0.1, queries=200, seed=3)[1]
    b = _run(name, cnn28, x, y, eps=0.1, queries=200, seed=3)[1]
    assert torch.equal(a, b)
    # targeted at the label the model already gives: one query each (the first look), x unchanged
    bb, x_adv = _run(name, cnn28, x, y, eps=0.1, queries=200, targeted=True)
    assert bb.log.queries.tolist() == [1] * 4 and torch.equal(x_adv, x) and bb.log.success.all()
    with pytest.raises(ValueError, match="score-based"):
        fn(BlackBox(cnn28, "label"), x, y, eps=0.1, queries=100)
    with pytest.raises(ValueError, match="eps"):
        fn(BlackBox(cnn28, "scores"), x, y, eps=0.0, queries=100)
    with pytest.raises(ValueError, match="black box"):
        fn(cnn28, x, y, eps=0.1, queries=100)


@pytest.mark.parametrize("name", ATTACKS)
def test_targeted(name, cnn28, digits28):
    """Targeted runs (target y + 1) reach their target, checked on the model, for a quarter of the
    points at least (measured on 20 points at eps 0.2, 4000 queries: NES 55 %, Bandits 95 %,
    ZO-signSGD 70 %, Square 100 %; white-box PGD 100 %)."""
    x, y = digits28[0][:12], digits28[1][:12]
    t = (y + 1) % 10
    bb, x_adv = _run(name, cnn28, x, t, eps=0.2, queries=3000, targeted=True)
    ok = bb.log.success
    assert ok.float().mean() >= 0.25
    assert (predict(cnn28, x_adv[ok]) == t[ok]).all()


def test_strength_against_white_box_pgd(cnn28, digits28):
    """At eps = 0.2 untargeted, each attack's success within 4000 queries is that of white-box PGD
    (50 steps) on the same points, to one point in twenty (measured: all 100 %, as PGD)."""
    x, y = digits28
    eps = 0.2
    white = (predict(cnn28, pgd(cnn28, x, y, eps=eps, steps=50)) != y).float().mean().item()
    for name in ATTACKS:
        bb, _ = _run(name, cnn28, x, y, eps=eps, queries=4000)
        rate = bb.log.success.float().mean().item()
        assert rate >= white - 0.05, (name, rate, white)


def test_square_against_torchattacks_and_art(cnn28, digits28_test):
    """At equal query budgets on the same 100 points, advlib's Square fools no fewer digits than
    torchattacks.Square and ART's SquareAttack, to three points in a hundred (means over two seeds; one run of ART).
    Measured at eps 0.1, 300 queries, seeds 0-2: advlib 66 / 68 / 69 %, torchattacks 62 / 59 / 53 %,
    ART 64 / 64 / 67 %; at 1000 queries 83-88 % for all three."""
    torchattacks = pytest.importorskip("torchattacks")
    evasion = pytest.importorskip("art.attacks.evasion")
    from art.estimators.classification import PyTorchClassifier
    ok = predict(cnn28, digits28_test.x) == digits28_test.y
    x, y = digits28_test.x[ok][:100], digits28_test.y[ok][:100]
    eps, queries, seeds = 0.1, 300, (0, 1)
    clf = PyTorchClassifier(cnn28, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                            clip_values=(0.0, 1.0))
    rates = {"advlib": [], "torchattacks": [], "art": []}
    for seed in seeds:
        bb, _ = _run("square", cnn28, x, y, eps=eps, queries=queries, seed=seed)
        rates["advlib"].append(bb.log.success.float().mean().item())
        # both references query the start once and then once per iteration: queries - 1 iterations
        ta = torchattacks.Square(cnn28, norm="Linf", eps=eps, n_queries=queries - 1, p_init=0.8, seed=seed)
        rates["torchattacks"].append((predict(cnn28, ta(x, y)) != y).float().mean().item())
        if seed == seeds[0]:  # ART is the slow one (6 s a run here): one run
            np.random.seed(seed)  # ART draws from numpy's global stream
            x_art = evasion.SquareAttack(clf, norm=np.inf, max_iter=queries - 1, eps=eps, p_init=0.8, nb_restarts=1,
                                         verbose=False).generate(x.numpy(), y=y.numpy())
            rates["art"].append((predict(cnn28, torch.as_tensor(x_art)) != y).float().mean().item())
    ours = np.mean(rates["advlib"])
    for who in ("torchattacks", "art"):
        assert ours >= np.mean(rates[who]) - 0.03, rates


def test_square_l2(cnn28, digits28_test):
    """The L2 version (Algorithm 3): in the L2 ball and the box, within the allowance, stops at the
    first success, adversarial on the model; and on 100 points at eps 2, 300 queries, it fools no
    fewer digits than torchattacks' L2 Square, to three points in a hundred (means over two seeds;
    measured: advlib 63 / 61 %, torchattacks 59 / 60 %)."""
    torchattacks = pytest.importorskip("torchattacks")
    ok = predict(cnn28, digits28_test.x) == digits28_test.y
    x, y = digits28_test.x[ok][:100], digits28_test.y[ok][:100]
    eps, queries = 2.0, 300
    ours, theirs = [], []
    for seed in (0, 1):
        bb, x_adv = _run("square", cnn28, x, y, eps=eps, queries=queries, norm="l2", seed=seed)
        log = bb.log
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        assert ((x_adv - x).flatten(1).norm(dim=1) <= eps * (1 + 1e-5)).all()
        assert (log.queries <= queries).all() and bb.queries == int(log.queries.sum())
        s = log.success
        assert 0 < s.sum() < len(x)
        assert (log.queries[s] == log.first_success[s]).all() and (log.queries[~s] == queries).all()
        assert (predict(cnn28, x_adv[s]) != y[s]).all()
        ours.append(s.float().mean().item())
        ta = torchattacks.Square(cnn28, norm="L2", eps=eps, n_queries=queries - 1, p_init=0.8, seed=seed)
        theirs.append((predict(cnn28, ta(x, y)) != y).float().mean().item())
    assert np.mean(ours) >= np.mean(theirs) - 0.03, (ours, theirs)


def test_square_schedule_and_bandits_prior_update():
    # p halves after iterations 10, 50, 200, ... of a 10 000-query run, rescaled to the budget
    assert p_schedule(0.8, 0, 10_000) == 0.8 and p_schedule(0.8, 10, 10_000) == 0.8
    assert p_schedule(0.8, 11, 10_000) == 0.4 and p_schedule(0.8, 51, 10_000) == 0.2
    assert p_schedule(0.8, 9_999, 10_000) == 0.8 / 512 and p_schedule(0.8, 6, 1_000) == 0.2
    # exponentiated gradients: stays in (-1, 1), moves v the way of g, and is the closed form
    v, g = torch.tensor([-0.5, 0.0, 0.9]), torch.tensor([1.0, -2.0, 50.0])
    out = _eg_step(v, g, 0.5)
    p = (v + 1) / 2
    want = 2 * p * torch.exp(0.5 * g) / (p * torch.exp(0.5 * g) + (1 - p) * torch.exp(-0.5 * g)) - 1
    assert torch.allclose(out, want, atol=1e-6) and (out.abs() <= 1).all()
    assert ((out - v).sign() == g.sign()).all()
