"""Hard-label attacks (advlib.blackbox: Boundary, OPT, Sign-OPT, HopSkipJump): the search of
g(theta) from first principles (a linear model where it is known in closed form, a brute-force grid
on the CNN), the query accounting (never past the allowance, every model evaluation counted, one call
of the black box per step for all examples), and the issue's requirements on the 28x28 digits CNN:
Sign-OPT below OPT at every budget and within 2x of white-box C&W-L2, and no weaker than ART's
attacks at equal counted queries."""
import math

import numpy as np
import pytest
import torch
from torch import nn

import advlib
from advlib.blackbox import BlackBox, QueryBudgetExceeded
from advlib.blackbox._hard import blend_search, g_search, point, unit
from advlib.blackbox.boundary import boundary
from advlib.blackbox.hsja import hop_skip_jump
from advlib.blackbox.opt import opt
from advlib.blackbox.sign_opt import sign_opt

N_DIGITS28 = 12
ATTACKS = {"boundary": boundary, "opt": opt, "sign_opt": sign_opt, "hop_skip_jump": hop_skip_jump}


class Counter(nn.Module):
    """The model, counting the inputs it evaluates (``rows``) and the calls (``calls``)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.rows, self.calls = model, 0, 0
        self.in_shape = getattr(model, "in_shape", None)
        self.eval()

    def forward(self, z):
        self.rows += len(z)
        self.calls += 1
        return self.model(z)


class ArtCounter(nn.Module):
    """The model for ART, with our own count of the queries about one input ``x0`` (label ``y0``): the
    smallest L2 of an adversarial query within the first ``b`` queries (``distortion_at``, the
    measure advlib's QueryLog gives), raising :class:`QueryBudgetExceeded` past ``budget``."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def start(self, x0, y0, budget):
        self.x0, self.y0, self.budget, self.n, self.trace = x0, y0, budget, 0, []

    def forward(self, z):
        z = z.float()  # ART's Boundary attack sends float64
        take = min(len(z), self.budget - self.n)
        out = self.model(z)
        with torch.no_grad():
            adv = out[:take].argmax(1) != self.y0
            d = (z[:take] - self.x0).flatten(1).norm(dim=1)
            self.trace.append(torch.where(adv, d, torch.full_like(d, math.inf)))
        self.n += take
        if take < len(z):
            raise QueryBudgetExceeded("ART ran out of its budget")
        return out

    def distortion_at(self, b):
        t = torch.cat(self.trace)[:b] if self.trace else torch.zeros(0)
        return t.min().item() if len(t) else math.inf


def art_attack(name, classifier, budget):
    from art.attacks.evasion import BoundaryAttack, HopSkipJump, SignOPTAttack
    if name == "sign_opt":
        return SignOPTAttack(classifier, targeted=False, max_iter=100_000, query_limit=budget + 10_000,
                             verbose=False)
    if name == "boundary":
        return BoundaryAttack(classifier, targeted=False, max_iter=100_000, verbose=False)
    return HopSkipJump(classifier, targeted=False, norm=2, max_iter=100_000, verbose=False)


def art_distortions(model, x, y, name, budgets):
    """ART's attack ``name`` on each point alone (ART attacks one image at a time), stopped by our own
    counter after ``max(budgets)`` queries; per budget, the points' best adversarial L2 in that many."""
    from art.estimators.classification import PyTorchClassifier
    counter = ArtCounter(model)
    clf = PyTorchClassifier(counter, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=10,
                            clip_values=(0.0, 1.0), device_type="cpu")
    out = {b: [] for b in budgets}
    for i in range(len(x)):
        counter.start(x[i:i + 1], y[i], max(budgets))
        torch.manual_seed(i)
        np.random.seed(i)  # ART draws its directions with numpy
        try:
            art_attack(name, clf, max(budgets)).generate(x[i:i + 1].numpy(), y=None)
        except QueryBudgetExceeded:
            pass
        for b in budgets:
            out[b].append(counter.distortion_at(b))
    return {b: torch.tensor(v) for b, v in out.items()}


# ------------------------------------------------------------------ g(theta) from first principles
def linear_box(d=16):
    """A linear two-class model on [0, 1]^d: label 1 iff w.x + b > 0."""
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(d, 2)
    with torch.no_grad():
        w = torch.rand(d, generator=g) + 0.5
        lin.weight.zero_()
        lin.weight[1] = w
        lin.bias.zero_()
        lin.bias[1] = -(0.5 * w.sum() + 0.4)  # w.x0 + b = -0.4 at x0 = 0.5
    model = nn.Sequential(nn.Flatten(), lin).eval()
    return model, w


def test_g_search_is_the_distance_to_a_linear_boundary():
    """On a linear model g(theta) = -(w.x0 + b) / (w.theta) (no clipping near x0 = 0.5): the search
    finds it to its tolerance from a guess above or below, or from a bracket; under a bound it gives
    up after one query where g is larger."""
    model, w = linear_box()
    bb = BlackBox(model, output="label")
    g = torch.Generator().manual_seed(1)
    n, k, tol = 3, 4, 1e-5
    x = torch.full((n, 16), 0.5)
    y = torch.zeros(n, dtype=torch.long)
    owner = torch.arange(n).repeat_interleave(k)
    theta = unit(torch.rand(n * k, 16, generator=g) + 0.2)  # w.theta > 0: the ray reaches the boundary
    truth = 0.4 / (theta @ w)
    assert truth.max() < 0.5  # the rays stay inside the box (no clipping)
    bb.start(x)
    for guess in (truth * 1.3, truth * 0.8):
        got = g_search(bb, x, y, owner, theta, guess, targeted=False, tol=tol)
        assert (got >= truth - 1e-6).all() and (got - truth).abs().max() <= tol + 1e-6
    got = g_search(bb, x, y, owner, theta, truth * 1.2, targeted=False, tol=tol, lo=truth * 0.5)
    assert (got - truth).abs().max() <= tol + 1e-6
    before = bb.log.queries.clone()
    got = g_search(bb, x, y, owner, theta, truth * 0.9, targeted=False, tol=tol, bound=True)
    assert torch.isinf(got).all() and ((bb.log.queries - before) == k).all()
    # the answers are adversarial on the model itself
    assert (model(point(x[owner], theta, got.where(got.isfinite(), truth * 1.3))).argmax(1) == 1).all()


def test_g_search_stays_within_the_allowance():
    model, w = linear_box()
    bb = BlackBox(model, output="label")
    x = torch.full((2, 16), 0.5)
    y = torch.zeros(2, dtype=torch.long)
    theta = unit(torch.ones(6, 16))
    owner = torch.tensor([0, 0, 0, 1, 1, 1])
    bb.start(x, queries=10)
    got = g_search(bb, x, y, owner, theta, torch.full((6,), 1e-4), targeted=False, tol=1e-6)
    assert (bb.log.queries <= 10).all() and bb.queries == bb.log.queries.sum()
    assert torch.isinf(got).all()  # 3 rows of growing steps from 1e-4 cannot reach g = 0.1 in 10 queries


def test_g_search_matches_a_brute_force_grid_on_the_cnn(zoo_model, digits28):
    """Along the directions from three digits towards other digits, the first adversarial point of a
    fine grid (the model asked directly) and the search's g agree to the grid step."""
    model = zoo_model("digits28-cnn")
    x, y = digits28[0][:3], digits28[1][:3]
    owner = torch.arange(3).repeat_interleave(2)
    other = [[j for j in range(3, len(digits28[1])) if digits28[1][j] != y[i]][:2] for i in range(3)]
    theta = unit(digits28[0][torch.tensor(other).flatten()] - x[owner])
    step = 0.01
    lams = torch.arange(1, 1501) * step
    with torch.no_grad():
        pts = point(x[owner].repeat_interleave(len(lams), 0), theta.repeat_interleave(len(lams), 0), lams.repeat(6))
        adv = (model(pts).argmax(1) != y[owner].repeat_interleave(len(lams))).view(6, -1)
    assert adv.any(1).all()
    first = lams[adv.float().argmax(1)]
    bb = BlackBox(model, output="label")
    bb.start(x)
    got = g_search(bb, x, y, owner, theta, first * 1.02, targeted=False, tol=1e-4)
    assert ((got - first).abs() <= step + 1e-4).all(), (got, first)
    with torch.no_grad():
        assert (model(point(x[owner], theta, got)).argmax(1) != y[owner]).all()
        assert (model(point(x[owner], theta, got - step)).argmax(1) == y[owner]).all()


def test_blend_search_finds_the_boundary_of_the_segment():
    model, w = linear_box()
    bb = BlackBox(model, output="label")
    x = torch.full((2, 16), 0.5)
    y = torch.zeros(2, dtype=torch.long)
    far = torch.ones(2, 16)
    bb.start(x)
    got = blend_search(bb, x, y, far, torch.arange(2), targeted=False, tol=1e-5)
    t = 0.4 / (0.5 * w.sum())  # w.(x + t (1 - x)) + b = 0
    want = x + t * (far - x)
    assert ((got - want).flatten(1).norm(dim=1) <= 1e-5 + 1e-6).all()
    assert (model(got).argmax(1) == 1).all()


# ------------------------------------------------------------------ the attacks' accounting
@pytest.fixture(scope="module")
def runs(zoo_model, digits28):
    """Each attack once on six digits, 800 queries each, on a counted model."""
    x, y = digits28[0][:6], digits28[1][:6]
    out = {}
    for name, attack in ATTACKS.items():
        counter = Counter(zoo_model("digits28-cnn"))
        bb = BlackBox(counter, output="label")
        x_adv = attack(bb, x, y, queries=800)
        out[name] = (bb, counter, x_adv)
    return x, y, out


@pytest.mark.parametrize("name", list(ATTACKS))
def test_results_are_adversarial_and_the_queries_counted(runs, zoo_model, name):
    x, y, out = runs
    bb, counter, x_adv = out[name]
    log = bb.log
    assert x_adv.shape == x.shape and x_adv.min() >= 0 and x_adv.max() <= 1
    assert log.success.all()
    with torch.no_grad():
        model = zoo_model("digits28-cnn")
        assert (model(x_adv).argmax(1) != y).all()  # on the model itself, in one batch ...
        assert all(model(x_adv[i:i + 1]).argmax(1) != y[i] for i in range(len(x)))  # ... and one at a time
    assert (log.queries <= 800).all() and (log.queries >= 700).all()  # the allowance used, never exceeded
    assert bb.queries == log.queries.sum() == counter.rows  # every model evaluation is a counted query
    l2 = (x_adv - x).flatten(1).norm(dim=1)
    assert torch.allclose(l2, log.best, rtol=2e-3)  # the returned point is the best one (pushed by 1e-3)
    curve = torch.stack([log.distortion_at(b) for b in (150, 300, 500, 800)])
    assert (curve[1:] <= curve[:-1]).all() and torch.equal(curve[-1], log.best)
    assert (curve[0] > curve[-1]).any()  # the attack made progress


def test_every_step_asks_once_for_all_examples(zoo_model, digits28):
    """Batched across examples: four digits together take far fewer calls of the black box than the
    four one by one (each call of the batch answers all the examples still searching)."""
    x, y = digits28[0][:4], digits28[1][:4]
    for name, attack in ATTACKS.items():
        together = Counter(zoo_model("digits28-cnn"))
        attack(BlackBox(together, output="label"), x, y, queries=150)
        alone = 0
        for i in range(len(x)):
            c = Counter(zoo_model("digits28-cnn"))
            attack(BlackBox(c, output="label"), x[i:i + 1], y[i:i + 1], queries=150)
            alone += c.calls
        print(name, together.calls, alone)
        assert together.calls < 0.4 * alone, (name, together.calls, alone)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_targeted_starts_from_an_input_of_the_target_class(zoo_model, digits28, name):
    x, y = digits28
    keep = torch.tensor([int((y == c).nonzero()[0]) for c in y.unique()[:4]])
    x, y = x[keep], y[keep]
    t = y.roll(1)  # each target is the label of another input of the batch
    model = zoo_model("digits28-cnn")
    bb = BlackBox(model, output="label")
    x_adv = ATTACKS[name](bb, x, t, queries=500, targeted=True)
    assert bb.log.success.all() and (bb.log.queries <= 500).all()
    with torch.no_grad():
        assert (model(x_adv).argmax(1) == t).all()
    assert ((x_adv - x).flatten(1).norm(dim=1) < (x.roll(1, 0) - x).flatten(1).norm(dim=1)).all()
    bb2 = BlackBox(model, output="label")  # a given starting point of the target class instead
    x_adv = ATTACKS[name](bb2, x, t, queries=300, targeted=True, x_init=x.roll(1, 0))
    with torch.no_grad():
        assert (model(x_adv).argmax(1) == t).all()


@pytest.mark.parametrize("name", list(ATTACKS))
def test_bad_calls_are_refused(zoo_model, digits28, name):
    model = zoo_model("digits28-cnn")
    x, y = digits28[0][:2], digits28[1][:2]
    with pytest.raises(ValueError, match="black box"):
        ATTACKS[name](model, x, y, queries=100)
    with pytest.raises(ValueError, match="x_init"):
        ATTACKS[name](BlackBox(model, output="label"), x, y, queries=100, x_init=x)
    with pytest.raises(ValueError, match="queries"):
        ATTACKS[name](BlackBox(model, output="label"), x, y, queries=0)


# ------------------------------------------------------------------ the requirements
def test_sign_opt_beats_opt_and_is_within_2x_of_cw(zoo_model, digits28):
    """On the digits CNN, untargeted: Sign-OPT's median L2 is below OPT's at 4k, 8k and 14k queries (one
    run each, read off the query log), and within 2x of white-box C&W-L2 at 14k (ten points: two
    runs of 140k queries)."""
    x, y = digits28[0][:10], digits28[1][:10]
    model = zoo_model("digits28-cnn")
    medians = {}
    for name, attack in (("sign_opt", sign_opt), ("opt", opt)):
        bb = BlackBox(model, output="label")
        attack(bb, x, y, queries=14_000)
        medians[name] = [bb.log.distortion_at(b).median().item() for b in (4000, 8000, 14_000)]
    x_cw = advlib.attacks.cw_l2(model, x, y)
    with torch.no_grad():
        assert (model(x_cw).argmax(1) != y).all()
    cw = (x_cw - x).flatten(1).norm(dim=1).median().item()
    print(medians, cw)
    assert all(s < o for s, o in zip(medians["sign_opt"], medians["opt"])), medians
    assert medians["sign_opt"][-1] <= 2 * cw, (medians, cw)


@pytest.mark.parametrize("name", ["sign_opt", "boundary", "hop_skip_jump"])
def test_no_weaker_than_art_at_equal_counted_queries(zoo_model, digits28, name):
    """ART's SignOPT, Boundary and HopSkipJump (untargeted) on the same ten points, each stopped by our
    own counter after 2000 queries and scored by the best adversarial query it made within them
    (generous to ART: it need not hold that point); advlib's attack, scored by its query log, reaches a
    median L2 no larger. (2000 queries keep ART's one-image-at-a-time runs to about 25 s; the larger
    budgets are measured by hand, see the lecture and the issue's closing note.)"""
    pytest.importorskip("art")
    x, y = digits28[0][:10], digits28[1][:10]
    model = zoo_model("digits28-cnn")
    bb = BlackBox(model, output="label")
    ATTACKS[name](bb, x, y, queries=2000)
    ours = bb.log.distortion_at(2000).median().item()
    theirs = art_distortions(model, x, y, name, [2000])[2000].median().item()
    print(name, ours, theirs)
    assert ours <= theirs, (ours, theirs)


# ------------------------------------------------------------------ lecture 13's exercise checks
def test_exercise_checks_accept_the_answers_and_reject_wrong_ones():
    from advlib.course import ExerciseError, hard_label
    hard_label.check_g_bisection(hard_label.g_bisection, strict=True)

    def returns_lo(is_adv, lo, hi, tol):
        while (hi - lo > tol).any():
            mid = (lo + hi) / 2
            a = is_adv(mid)
            hi, lo = torch.where(a, mid, hi), torch.where(a, lo, mid)
        return lo

    def row_by_row(is_adv, lo, hi, tol):
        lo, hi = lo.clone(), hi.clone()
        for r in range(len(lo)):
            while hi[r] - lo[r] > tol:
                lam = hi.clone()
                lam[r] = (lo[r] + hi[r]) / 2
                if is_adv(lam)[r]:
                    hi[r] = lam[r]
                else:
                    lo[r] = lam[r]
        return hi

    for wrong in (returns_lo, row_by_row, lambda is_adv, lo, hi, tol: hi):
        with pytest.raises(ExerciseError):
            hard_label.check_g_bisection(wrong, strict=True)

    def sign_grad(is_adv, x0, theta, g, u, h):
        new = theta + h * u
        new = new / new.norm(dim=1, keepdim=True)
        return (torch.where(is_adv(x0 + g * new), -1.0, 1.0)[:, None] * u).mean(0)

    hard_label.check_sign_gradient(sign_grad, strict=True)
    flipped = lambda *a: -sign_grad(*a)  # noqa: E731
    unnormalised = lambda is_adv, x0, theta, g, u, h: (  # noqa: E731
        torch.where(is_adv(x0 + g * (theta + h * u)), -1.0, 1.0)[:, None] * u).mean(0)
    for wrong in (flipped, unnormalised):
        with pytest.raises(ExerciseError):
            hard_label.check_sign_gradient(wrong, strict=True)
