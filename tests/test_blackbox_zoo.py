"""ZOO and AutoZOOM (Part 2, soft-label L2 attacks), from first principles: the calling and box
conventions, the query accounting (per iteration, per example, in total), the returned inputs
checked on the model itself, and issue 9's requirement — on the 28x28 digits CNN, targeted,
AutoZOOM needs at least 90% fewer mean queries to a first success than ZOO, at a success rate no
lower."""
import pytest
import torch

import advlib
from advlib.blackbox import BlackBox
from advlib.blackbox.autozoom import autozoom, bilinear_decoder
from advlib.blackbox.zoo_attack import zoo_attack

N_DIGITS28 = 10
ATTACKS = {"zoo": zoo_attack, "autozoom": autozoom}


@pytest.fixture(scope="module")
def cnn28(zoo_model):
    return zoo_model("digits28-cnn")


def targets(y, seed=0):
    """One random target != y per point (seeded)."""
    g = torch.Generator().manual_seed(seed)
    return (y + torch.randint(1, 10, (len(y),), generator=g)) % 10


def predict(model, x):
    return advlib.train.predict(model, x)


@pytest.mark.parametrize("name", ATTACKS)
def test_conventions_and_query_accounting(name, cnn28, digits28):
    x, y = digits28[0][:3], digits28[1][:3]
    x0 = x.clone()
    bb = BlackBox(cnn28, "scores")
    allowance = 700  # not a whole number of ZOO iterations (257 queries each)
    x_adv = ATTACKS[name](bb, x, y, queries=allowance)
    log = bb.log
    assert torch.equal(x, x0), "the attack changed its input"
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (log.queries <= allowance).all(), log.queries
    assert bb.queries == int(log.queries.sum())
    ok = log.success
    assert ((log.first_success >= 1) & (log.first_success <= log.queries))[ok].all()
    assert (log.first_success[~ok] == -1).all()
    # what it returns is adversarial on the model itself where the log says success, and x elsewhere
    assert (predict(cnn28, x_adv)[ok] != y[ok]).all()
    assert torch.equal(x_adv[~ok], x[~ok])
    d = (x_adv - x).flatten(1).norm(dim=1)
    assert torch.allclose(d[ok], log.best[ok], atol=1e-5), (d, log.best)
    # seeded: the same call gives the same result
    bb2 = BlackBox(cnn28, "scores")
    assert torch.equal(ATTACKS[name](bb2, x, y, queries=allowance), x_adv)
    assert torch.equal(bb2.log.queries, log.queries)


def test_zoo_cost_per_iteration(cnn28, digits28):
    """1 query for the first look, then 2 * coords + 1 per iteration; an example whose next iteration
    would not fit spends one last query on its iterate."""
    x, y = digits28[0][:2], digits28[1][:2]
    for coords, allowance in ((128, 700), (16, 200)):
        bb = BlackBox(cnn28, "scores")
        zoo_attack(bb, x, targets(y), queries=allowance, targeted=True, coords=coords)
        per = 2 * coords + 1
        full = (allowance - 1) // per
        want = 1 + full * per + (1 if allowance - 1 - full * per >= 1 else 0)
        assert (bb.log.queries == want).all(), (bb.log.queries, want)


def test_autozoom_exploration_then_exploitation(cnn28, digits28):
    """q = 1 before the first success (2 queries per iteration: F(z) and one direction), q = q_after
    from the iteration that finds it: the first success comes at an even count, and after it every
    iteration costs q_after + 1."""
    x, y = digits28[0][:4], digits28[1][:4]
    q_after = 4
    bb = BlackBox(cnn28, "scores")
    autozoom(bb, x, y, queries=600, q_after=q_after)
    log = bb.log
    ok = log.success
    assert ok.sum() >= 3, log
    fs, total = log.first_success[ok], log.queries[ok]
    assert (fs % 2 == 0).all(), fs
    # the success iteration then pays q_after directions, every later one q_after + 1, a last look maybe 1
    assert torch.isin((total - fs - q_after) % (q_after + 1), torch.tensor([0, 1])).all(), (fs, total)


def test_already_adversarial_costs_one_query(cnn28, digits28):
    x, y = digits28[0][:3], digits28[1][:3]
    wrong = (y + 1) % 10  # untargeted against a wrong "true" label: the clean input already wins
    for attack in ATTACKS.values():
        bb = BlackBox(cnn28, "scores")
        x_adv = attack(bb, x, wrong, queries=500)
        assert torch.equal(x_adv, x)
        assert (bb.log.queries == 1).all() and (bb.log.first_success == 1).all() and (bb.log.best == 0).all()


def test_decoder_attack_space(cnn28, digits28):
    """AutoZOOM with an explicit decoder (the AE variant's interface) is the same attack: the bilinear
    decoder given by hand reproduces the default; a decoder of the wrong shape is refused."""
    x, y = digits28[0][:2], digits28[1][:2]
    bb = BlackBox(cnn28, "scores")
    a = autozoom(bb, x, y, queries=300)
    b = autozoom(BlackBox(cnn28, "scores"), x, y, queries=300, decoder=bilinear_decoder((14, 14), (28, 28)),
                 latent_shape=(1, 14, 14))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="decoder must map"):
        autozoom(BlackBox(cnn28, "scores"), x, y, queries=300, decoder=bilinear_decoder((14, 14), (20, 20)),
                 latent_shape=(1, 14, 14))


def test_bad_calls(cnn28, digits28):
    x, y = digits28[0][:2], digits28[1][:2]
    for attack in ATTACKS.values():
        with pytest.raises(ValueError, match="black box, not a model"):
            attack(cnn28, x, y, queries=100)
        with pytest.raises(ValueError, match="score-based"):
            attack(BlackBox(cnn28, "label"), x, y, queries=100)
        with pytest.raises(ValueError, match="c must"):
            attack(BlackBox(cnn28, "scores"), x, y, queries=100, c=0.0)
        with pytest.raises(ValueError, match="queries"):
            attack(BlackBox(cnn28, "scores"), x, y, queries=0)
    with pytest.raises(ValueError, match="coords"):
        zoo_attack(BlackBox(cnn28, "scores"), x, y, queries=100, coords=785)
    with pytest.raises(ValueError, match="reduced"):
        autozoom(BlackBox(cnn28, "scores"), x, y, queries=100, reduced=(30, 14))


def test_untargeted_sanity(cnn28, digits28):
    """Untargeted, both attacks break most of a few digits within a small allowance, with an L2 far
    below the image's own norm."""
    x, y = digits28[0][:4], digits28[1][:4]
    for attack, allowance in ((autozoom, 1000), (zoo_attack, 20_000)):
        bb = BlackBox(cnn28, "scores")
        x_adv = attack(bb, x, y, queries=allowance)
        ok = bb.log.success
        assert ok.sum() >= 3, (attack.__name__, bb.log)
        assert (predict(cnn28, x_adv)[ok] != y[ok]).all()
        assert (bb.log.best[ok] < 0.5 * x[ok].flatten(1).norm(dim=1)).all()


def test_autozoom_needs_90_percent_fewer_queries_than_zoo(cnn28, digits28):
    """Issue 9: targeted (one random target != y per point), AutoZOOM's mean queries to a first success
    is at least 90% below ZOO's, at a success rate no lower. AutoZOOM gets a fifteenth of ZOO's
    allowance, which can only lower its success rate. Measured when written (10 points): ZOO 5/10
    successes at 30,000 queries, mean 18,095 to first success; AutoZOOM 10/10 at 2,000, mean 267:
    a 98.5% reduction (with targets drawn from seed 1: ZOO 7/10, 20,305; AutoZOOM 10/10, 244; 98.8%)."""
    x, y = digits28
    t = targets(y)
    bb_zoo, bb_az = BlackBox(cnn28, "scores"), BlackBox(cnn28, "scores")
    x_zoo = zoo_attack(bb_zoo, x, t, queries=30_000, targeted=True)
    x_az = autozoom(bb_az, x, t, queries=2_000, targeted=True)
    zoo, az = bb_zoo.log, bb_az.log
    assert zoo.success.any(), zoo
    for log, xa in ((zoo, x_zoo), (az, x_az)):
        assert (predict(cnn28, xa)[log.success] == t[log.success]).all()
    assert az.success.float().mean() >= zoo.success.float().mean(), (az, zoo)
    mean_zoo = zoo.first_success[zoo.success].float().mean()
    mean_az = az.first_success[az.success].float().mean()
    reduction = 1 - mean_az / mean_zoo
    assert reduction >= 0.9, (float(mean_zoo), float(mean_az))
