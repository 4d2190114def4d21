"""CLEVER and randomized smoothing (advlib.verify.clever, advlib.verify.smoothing) against analytic
answers on linear models, scipy's statistics and attacks on the digits MLP."""
import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

import advlib
import advlib.verify as V
from advlib.attacks import cw_l2, lp_norm, margin
from advlib.train import fit
from advlib.verify._common import activation_floats
from advlib.verify.clever import _uniform_ball, clever, reverse_weibull_fit
from advlib.verify.smoothing import (
    ABSTAIN,
    Smoothed,
    certified_accuracy_curve,
    clopper_pearson_lower,
    gaussian_augment,
)

DUAL = {"l2": 2, "linf": 1, "l1": math.inf}


def _linear(n_classes: int, seed: int, scale: float = 1.0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, n_classes)).eval()
    with torch.no_grad():
        model[1].weight.mul_(scale)
    return model


N_DIGITS = 40  # the shared `digits` fixture (tests/conftest.py): the first 40 held-out digits; `mlp`: digits-mlp


# ----------------------------------------------------------------------------------------- CLEVER

@pytest.mark.parametrize("norm", ["l2", "linf", "l1"])
def test_clever_recovers_the_distance_to_the_decision_boundary_of_a_linear_model(norm):
    """Constant gradients: L_j = ||w_c - w_j||_q exactly, and the score is the analytic minimal
    distortion min_j (z_c - z_j) / ||w_c - w_j||_q (dual norm q) when R exceeds it."""
    model = _linear(10, seed=1)
    x = 0.3 + 0.4 * torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(2))  # inside the box
    with torch.no_grad():
        z = model(x)
    c = z.argmax(1)
    w = model[1].weight.detach()
    dist = (z.gather(1, c[:, None]) - z) / torch.linalg.vector_norm(w[c][:, None] - w[None], ord=DUAL[norm], dim=2)
    dist[torch.arange(5), c] = math.inf
    radius = 3 * dist.min(1).values.max().item()
    res = clever(model, x, norm=norm, radius=radius, n_batches=10, batch_size=32)
    assert torch.equal(res.reference, c)
    torch.testing.assert_close(res.score, dist.min(1).values, rtol=0.03, atol=0)
    want = torch.where(dist.isinf(), dist, dist.clamp(max=radius))  # capped at R, inf at the reference class
    torch.testing.assert_close(res.per_class, want, rtol=0.03, atol=0)
    # R caps the score
    small = clever(model, x, norm=norm, radius=0.5 * dist.min(1).values.min().item(), n_batches=4, batch_size=8)
    assert torch.allclose(small.score, torch.full((5,), 0.5 * dist.min(1).values.min().item()))


def test_clever_targeted_and_misclassified_reference():
    model = _linear(10, seed=1)
    x = 0.3 + 0.4 * torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        z = model(x)
    c = z.argmax(1)
    target = z.masked_fill(nn.functional.one_hot(c, 10).bool(), -math.inf).argmax(1)  # the runner-up
    full = clever(model, x, norm="l2", radius=10.0, n_batches=4, batch_size=16)
    tgt = clever(model, x, norm="l2", radius=10.0, n_batches=4, batch_size=16, target=target)
    idx = torch.arange(4)
    torch.testing.assert_close(tgt.score, full.per_class[idx, target])
    assert tgt.per_class[idx, c].isinf().all()
    assert tgt.per_class.isnan().sum() == 4 * 8  # the 8 classes not asked for are not computed
    # a reference class that is not the top class: already misclassified, score 0
    wrong = clever(model, x, (c + 1) % 10, norm="linf", radius=1.0, n_batches=4, batch_size=16)
    assert (wrong.score == 0).all()


def test_reverse_weibull_fit_finds_the_end_point():
    rng = np.random.default_rng(0)
    maxima = stats.weibull_max.rvs(4.0, loc=2.0, scale=0.5, size=200, random_state=rng)
    shape, loc, scale, p = reverse_weibull_fit(maxima)
    assert abs(loc - 2.0) < 0.06 and loc >= maxima.max()  # the largest of the 200 maxima is 1.885
    assert 2 < shape < 8 and 0.3 < scale < 0.7 and p > 0.05
    # batch maxima of uniforms on [0, 3] (domain of attraction of the reverse Weibull, shape 1)
    maxima = rng.uniform(0, 3, size=(100, 64)).max(1)
    assert abs(reverse_weibull_fit(maxima)[1] - 3.0) < 0.03
    assert reverse_weibull_fit(np.full(10, 1.5))[1] == 1.5  # nothing to fit: the common value
    with pytest.raises(ValueError, match="maxima"):
        reverse_weibull_fit([1.0])


@pytest.mark.parametrize("norm", ["l2", "linf", "l1"])
def test_uniform_ball_samples(norm):
    """Inside the ball, and uniform: in d dimensions ||delta|| / R has density d r^(d-1), mean d / (d + 1)
    (for L-inf, each coordinate is uniform on [-R, R], so |delta_i| has mean R / 2)."""
    gen = torch.Generator().manual_seed(0)
    d, r = torch.Size([1, 4, 4]), 0.7
    delta = _uniform_ball(20000, d, r, norm, gen, "cpu")
    size = lp_norm(delta, norm)
    assert delta.shape == (20000, 1, 4, 4) and (size <= r * (1 + 1e-6)).all()
    if norm == "linf":
        assert abs(delta.abs().mean().item() - r / 2) < 0.01
    else:
        assert abs(size.mean().item() / r - 16 / 17) < 0.005
        assert abs((size / r).pow(16).mean().item() - 0.5) < 0.02  # (||delta|| / R)^d is uniform on [0, 1]
        assert abs((delta > 0).float().mean().item() - 0.5) < 0.01  # symmetric


def test_clever_on_the_digits_mlp_is_below_the_cw_distortion(mlp, digits):
    """CLEVER estimates the *minimal* L2 distortion (a lower bound if the Lipschitz estimate is
    right); C&W finds an adversarial example, i.e. an upper bound on it. So the score should be
    positive, below C&W's distortion for most points, and of the same order (the paper reports
    CLEVER at roughly 0.5-1 times the C&W distortion). Here: 0.6-0.9 for every point."""
    x, y = digits
    with torch.no_grad():
        ok = mlp(x).argmax(1) == y
    x, y = x[ok][:5], y[ok][:5]
    res = clever(mlp, x, y, norm="l2", n_batches=20, batch_size=64)
    x_adv = cw_l2(mlp, x, y, steps=50, search_steps=5)
    with torch.no_grad():
        broken = mlp(x_adv).argmax(1) != y
    assert broken.float().mean() >= 0.75 and (res.score > 0).all()
    ratio = res.score[broken] / lp_norm(x_adv - x, 2)[broken]
    assert (ratio <= 1.05).float().mean() >= 0.75, ratio
    assert ratio.median() > 0.4, ratio
    # the dual norm matters: ||g||_2 <= ||g||_1 <= 8 ||g||_2 in 64 dimensions, so towards the same class
    # the L-inf score lies between the L2 score / 8 and the L2 score (up to the estimates' noise)
    target = res.per_class.argmin(1)
    linf = clever(mlp, x, y, norm="linf", n_batches=20, batch_size=64, target=target)
    l2 = res.per_class[torch.arange(len(x)), target]
    assert ((linf.score < l2) & (linf.score > l2 / 8 / 1.5)).all(), (linf.score, l2)


def test_clever_bad_inputs(mlp, digits):
    x, y = digits
    x, y = x[:2], y[:2]
    for kwargs, msg in [({"norm": "l3"}, "norm"), ({"radius": 0.0}, "radius"), ({"radius": math.inf}, "radius"),
                        ({"n_batches": 1}, "n_batches"), ({"batch_size": 0}, "batch_size"),
                        ({"target": y}, "target"), ({"target": torch.tensor([1])}, "target"),
                        ({"x_min": 1.0, "x_max": 0.0}, "x_min")]:
        with pytest.raises(ValueError, match=msg):
            clever(mlp, x, y, **kwargs)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        clever(mlp, x + 2, y)
    with pytest.raises(ValueError, match="batch"):
        clever(mlp, x[0, 0, 0], y[:1])
    with pytest.raises(ValueError, match=r"must lie in 0\.\.9"):
        clever(mlp, x, y + 10)


# --------------------------------------------------------------------------- randomized smoothing

def _binary_linear_points(sigma: float):
    """A 2-class linear model and points at known L2 distances from its hyperplane w.x + b = 0."""
    model = _linear(2, seed=0, scale=0.3)
    w = (model[1].weight[0] - model[1].weight[1]).detach()
    b = (model[1].bias[0] - model[1].bias[1]).detach()
    u = torch.full((64,), 0.5)
    on = u - (w @ u + b) / (w @ w) * w  # the projection of the grey image onto the hyperplane
    t = torch.tensor([0.6, 1.0, 1.5, 2.0]) * sigma
    t = torch.cat([t, -t])  # both sides
    x = (on + t[:, None] * w / w.norm()).view(-1, 1, 8, 8)
    assert x.min() >= 0 and x.max() <= 1
    return model, x, t.abs(), on.view(1, 1, 8, 8)


def test_certify_on_a_linear_model_gives_the_distance_to_the_hyperplane(monkeypatch):
    """For f(x) = argmax(Wx + b) with 2 classes, p_A = Phi(d / sigma) and the smoothed classifier's
    exact radius is the distance d = |w.x + b| / ||w||_2: CERTIFY must stay below it (up to its
    failure probability alpha) and, with n = 10,000, come within 15%."""
    sigma = 0.25
    model, x, dist, _ = _binary_linear_points(sigma)
    smooth = Smoothed(model, sigma)
    labels, radii = smooth.certify(x, n0=100, n=10_000, alpha=0.001)
    with torch.no_grad():
        assert torch.equal(labels, model(x).argmax(1))  # linear: the smoothed and base classifiers agree
    assert (radii <= dist).all(), (radii, dist)
    assert (radii >= 0.85 * dist).all(), (radii, dist)
    counts = smooth.counts(x, n=1000)
    assert (counts.sum(1) == 1000).all()
    with monkeypatch.context() as mp:  # pieces of 333 noisy copies, which do not divide the work
        mp.setattr(advlib.threat, "MEMORY_BUDGET", 333 * activation_floats(model, x))
        assert torch.equal(smooth.counts(x, n=1000), counts)
    p_true = torch.distributions.Normal(0.0, 1.0).cdf(dist / sigma)
    assert ((counts.max(1).values / 1000 - p_true).abs() < 0.05).all()


def test_clopper_pearson_matches_scipy_binomtest():
    for k, n, alpha in [(0, 10, 0.05), (1, 10, 0.05), (7, 10, 0.001), (10, 10, 0.001), (990, 1000, 0.001),
                        (50_000, 100_000, 0.01), (99_990, 100_000, 0.001)]:
        want = stats.binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact").low
        assert clopper_pearson_lower(k, n, alpha) == pytest.approx(want, rel=1e-9, abs=1e-12)
    # vectorised, and a one-sided bound: P(X >= k | p = lower) = alpha
    k = np.array([3, 40, 95])
    low = clopper_pearson_lower(k, 100, 0.01)
    np.testing.assert_allclose(stats.binom.sf(k - 1, 100, low), 0.01, rtol=1e-6)


def test_tiny_sigma_gives_the_base_prediction(mlp, digits):
    x, _ = digits
    smooth = Smoothed(mlp, 1e-4)
    with torch.no_grad():
        base = mlp(x).argmax(1)
    assert torch.equal(smooth.predict(x, n=100), base)
    cert = smooth.certify(x, n0=10, n=200)
    assert isinstance(cert, V.SmoothedCertificate) and cert.label is cert[0]
    labels, radii = cert  # a named pair
    assert torch.equal(labels, base)
    # all n votes agree: p_A_lower = alpha^(1/n) and the radius is sigma * Phi^-1 of that
    want = 1e-4 * stats.norm.ppf(0.001 ** (1 / 200))
    torch.testing.assert_close(radii, torch.full_like(radii, want))


def test_certified_radius_is_below_the_distance_to_an_adversarial_example_of_the_smoothed_classifier(mlp, digits):
    """Walk from each certified point along the noise-averaged gradient of the base model's margin
    and stop at the first point where the smoothed classifier confidently (PREDICT, no abstention)
    changes its label: that is an adversarial example of the smoothed classifier, so its L2
    distance bounds the true robust radius from above, and the certified radius must not exceed it."""
    x, y = digits
    x, y = x[:24], y[:24]
    sigma = 0.25
    smooth = Smoothed(mlp, sigma)
    labels, radii = smooth.certify(x, n=2000)
    grid = torch.linspace(0, 1, 21)
    curve = certified_accuracy_curve(labels, radii, y, grid)
    assert (curve[1:] <= curve[:-1]).all() and curve[0] == (labels == y).float().mean()
    assert curve[0] > 0.7  # the digits MLP survives sigma = 0.25 noise reasonably well

    ok = (labels == y) & (radii > 0)
    xs, ys, rs = x[ok], y[ok], radii[ok]
    noisy = (xs.repeat(32, 1, 1, 1) + sigma * torch.randn(32 * len(xs), *xs.shape[1:])).requires_grad_(True)
    (g,) = torch.autograd.grad(margin(mlp(noisy), ys.repeat(32), kappa=math.inf).sum(), noisy)
    g = g.view(32, *xs.shape).mean(0)
    u = -g / lp_norm(g, 2).view(-1, 1, 1, 1)
    steps = torch.linspace(0.1, 2.5, 13)
    xa = (xs[None] + steps.view(-1, 1, 1, 1, 1) * u[None]).clamp(0, 1).flatten(0, 1)  # all steps in one call
    pred = smooth.predict(xa, n=500).view(len(steps), len(xs))
    dist = lp_norm(xa - xs.repeat(len(steps), 1, 1, 1), 2).view(len(steps), len(xs))
    broken = (pred != ys) & (pred != ABSTAIN)
    first = torch.where(broken, dist, math.inf).amin(0)
    assert broken.any(0).float().mean() > 0.5  # the walk finds adversarial examples for most points
    assert (rs <= first).all(), (rs, first)


def test_abstains_when_the_classes_tie():
    model, _, _, on = _binary_linear_points(0.25)  # a point on the decision hyperplane: p_A = 1/2
    smooth = Smoothed(model, 0.25)
    assert smooth.predict(on, n=2000).item() == ABSTAIN
    labels, radii = smooth.certify(on, n=2000)
    assert labels.item() == ABSTAIN and radii.item() == 0


def test_noise_is_not_clipped_to_the_box():
    """Class 0 iff pixel 0 > 0, at a black image: unclipped Gaussian noise splits the votes 50/50;
    noise clipped to [0, 1] would leave pixel 0 >= 0 and (ties going to class 0) vote class 0 always."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2)).eval()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.zero_()
        model[1].weight[0, 0] = 1.0
    counts = Smoothed(model, 0.25).counts(torch.zeros(1, 1, 8, 8), n=2000)
    assert abs(counts[0, 0].item() - 1000) < 150


def test_certified_accuracy_curve_by_hand():
    labels = torch.tensor([0, 1, ABSTAIN, 2, 3])
    radii = torch.tensor([0.5, 0.2, 0.0, 1.0, 0.3])
    y = torch.tensor([0, 1, 2, 0, 3])
    curve = certified_accuracy_curve(labels, radii, y, [0.0, 0.2, 0.25, 0.5, 0.6])
    torch.testing.assert_close(curve, torch.tensor([0.6, 0.6, 0.4, 0.2, 0.0]))
    with pytest.raises(ValueError, match="same"):
        certified_accuracy_curve(labels, radii[:3], y, [0.0])


def test_gaussian_augment_is_unclipped_noise_and_trains(digits):
    x, y = digits
    hook = gaussian_augment(0.5)
    noisy = hook(None, x, y)
    assert abs((noisy - x).std().item() - 0.5) < 0.05 and (noisy < 0).any() and (noisy > 1).any()
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    history = fit(model, advlib.data.load("digits", "test"), epochs=1, perturb=hook, progress=False)
    assert len(history["loss"]) == 1 and math.isfinite(history["loss"][0])


def test_smoothing_bad_inputs(mlp, digits):
    x, _ = digits
    for sigma in (0, -0.1, math.inf, math.nan, "0.25"):
        with pytest.raises(ValueError, match="sigma"):
            Smoothed(mlp, sigma)
        with pytest.raises(ValueError, match="sigma"):
            gaussian_augment(sigma)
    smooth = Smoothed(mlp, 0.25)
    for kwargs, msg in [({"n0": 0}, "n0 must"), ({"n": 0}, "n must"), ({"n": 2.5}, "n must"), ({"alpha": 0.0}, "alpha"),
                        ({"alpha": 1.0}, "alpha")]:
        with pytest.raises(ValueError, match=msg):
            smooth.certify(x[:2], **kwargs)
    for kwargs, msg in [({"n": 0}, "n must"), ({"alpha": -1}, "alpha"), ({"alpha": 1.5}, "alpha")]:
        with pytest.raises(ValueError, match=msg):
            smooth.predict(x[:2], **kwargs)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        smooth.predict(x[:2] * 3)
    with pytest.raises(ValueError, match="batch"):
        smooth.certify(x[0, 0, 0])
    with pytest.raises(ValueError, match="alpha"):
        clopper_pearson_lower(3, 10, 0.0)
    with pytest.raises(ValueError, match="k <= n"):
        clopper_pearson_lower(11, 10, 0.01)
