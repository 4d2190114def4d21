"""The white-box core (FGSM, PGD, projections, margin, evaluation) against first principles, a
hand-written PGD loop and torchattacks at equal budgets, on the shipped digits models."""
import copy
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import advlib
from advlib import attacks as A
from advlib.train import predict

N = N_DIGITS = 200  # test points of the strength checks (the shared `digits` fixture reads N_DIGITS)
TOL = {"linf": 1e-6, "l2": 1e-5, "l1": 1e-5}



def _in_threat_model(x_adv, x, eps, norm):
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (A.lp_norm(x_adv - x, norm) <= eps * (1 + 1e-5) + TOL[norm]).all()


# ---------------------------------------------------------------------------------------- projections

def _l1_projection_by_bisection(v: np.ndarray, eps: float) -> np.ndarray:
    """Exact Euclidean projection onto the L1 ball, computed another way than advlib's sort: the
    KKT conditions give sign(v) * max(|v| - theta, 0) with theta >= 0 solving
    sum(max(|v| - theta, 0)) = eps (or theta = 0 inside); find theta by bisection in float64."""
    a = np.abs(v)
    if a.sum() <= eps:
        return v.copy()
    lo, hi = 0.0, a.max()
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.maximum(a - mid, 0).sum() > eps else (lo, mid)
    return np.sign(v) * np.maximum(a - (lo + hi) / 2, 0)


vectors = st.integers(1, 7).flatmap(lambda d: st.lists(
    st.lists(st.floats(-3, 3, allow_nan=False, width=32), min_size=d, max_size=d), min_size=1, max_size=3))


@settings(max_examples=60, deadline=None)
@given(v=vectors, eps=st.floats(0, 4), norm=st.sampled_from(A.NORMS), seed=st.integers(0, 2**16))
def test_project_is_the_closest_point_of_the_ball(v, eps, norm, seed):
    delta = torch.tensor(v, dtype=torch.float64)
    p = A.project(delta, eps, norm)
    assert p.shape == delta.shape
    assert (A.lp_norm(p, norm) <= eps + 1e-9).all(), "outside the ball"
    assert torch.allclose(A.project(p, eps, norm), p, atol=1e-9), "not idempotent"
    inside = A.lp_norm(delta, norm) <= eps
    assert torch.equal(p[inside], delta[inside]), "moved a point that was already inside"
    # no point of the ball is closer (sampled points of the ball, scaled onto it)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(64, *delta.shape[1:], generator=g, dtype=torch.float64)
    z = z / A.lp_norm(z, norm).clamp(min=1e-12)[:, None] * eps * torch.rand(64, 1, generator=g, dtype=torch.float64)
    for i in range(len(delta)):
        assert ((z - delta[i]).norm(dim=1) >= (p[i] - delta[i]).norm() - 1e-9).all()
    if norm == "l1":
        want = np.stack([_l1_projection_by_bisection(row, eps) for row in delta.numpy()])
        np.testing.assert_allclose(p.numpy(), want, atol=1e-7)


def test_l1_projection_on_image_batches_matches_bisection():
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(8, 1, 8, 8, generator=g, dtype=torch.float64) * 0.3
    for eps in (0.0, 0.5, 2.0, 100.0):
        want = np.stack([_l1_projection_by_bisection(r, eps) for r in delta.flatten(1).numpy()])
        np.testing.assert_allclose(A.project(delta, eps, "l1").flatten(1).numpy(), want, atol=1e-7)


def test_project_rejects_an_unknown_norm():
    with pytest.raises(ValueError, match="norm must be one of"):
        A.project(torch.zeros(2, 3), 1.0, "l3")


# ---------------------------------------------------------------------------------------- margin

def test_margin_matches_its_definition():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 7, generator=g) * 3
    y = torch.randint(0, 7, (50,), generator=g)
    for kappa in (0.0, 1.5):
        untargeted, targeted = A.margin(logits, y, kappa=kappa), A.margin(logits, y, targeted=True, kappa=kappa)
        for i in range(50):
            z, t = logits[i].tolist(), y[i].item()
            best_other = max(z[j] for j in range(7) if j != t)
            assert untargeted[i].item() == pytest.approx(max(z[t] - best_other, -kappa), abs=1e-6)
            assert targeted[i].item() == pytest.approx(max(best_other - z[t], -kappa), abs=1e-6)
    # without the clamp, below zero exactly when the label is (untargeted: not) the arg-max
    assert torch.equal(A.margin(logits, y, kappa=math.inf) < 0, logits.argmax(1) != y)
    assert torch.equal(A.margin(logits, y, targeted=True, kappa=math.inf) < 0, logits.argmax(1) == y)


# ---------------------------------------------------------------------------------------- attacks

ATTACKS = {
    "fgsm": (lambda m, x, y: A.fgsm(m, x, y, eps=0.1), 0.1, "linf"),
    "pgd-linf": (lambda m, x, y: A.pgd(m, x, y, eps=0.1, steps=5), 0.1, "linf"),
    "pgd-linf-cw-cosine": (lambda m, x, y: A.pgd(m, x, y, eps=0.1, steps=5, loss="cw", schedule="cosine"), 0.1,
                           "linf"),
    "pgd-l2": (lambda m, x, y: A.pgd(m, x, y, eps=0.8, steps=5, norm="l2", restarts=2), 0.8, "l2"),
    "pgd-l2-big-step": (lambda m, x, y: A.pgd(m, x, y, eps=0.5, alpha=2.0, steps=3, norm="l2"), 0.5, "l2"),
    "pgd-l1": (lambda m, x, y: A.pgd(m, x, y, eps=2.0, steps=5, norm="l1"), 2.0, "l1"),
    "pgd-l1-targeted": (lambda m, x, y: A.pgd(m, x, (y + 1) % 10, eps=2.0, steps=5, norm="l1", targeted=True), 2.0,
                        "l1"),
}


@pytest.mark.parametrize("name", ATTACKS)
def test_attacks_stay_in_their_ball_and_in_the_box(name, models, digits):
    attack, eps, norm = ATTACKS[name]
    x, y = digits[0][:64], digits[1][:64]
    torch.manual_seed(0)
    _in_threat_model(attack(models["digits-mlp"], x, y), x, eps, norm)


def test_fgsm_is_one_pgd_step_from_the_clean_point(models, digits):
    x, y = digits
    for m in models.values():
        for targeted, loss in ((False, "ce"), (True, "ce"), (False, "cw")):
            yy = (y + 3) % 10 if targeted else y
            a = A.fgsm(m, x, yy, eps=0.07, targeted=targeted, loss=loss)
            b = A.pgd(m, x, yy, eps=0.07, alpha=0.07, steps=1, random_start=False, targeted=targeted, loss=loss)
            assert torch.equal(a, b)


def test_targeted_pgd_reaches_the_target_on_most_points(models, digits):
    x, y = digits
    target = (y + 1 + torch.arange(len(y)) % 9) % 10  # every wrong label, in turn
    torch.manual_seed(0)
    for m in models.values():
        x_adv = A.pgd(m, x, target, eps=0.3, steps=20, targeted=True)
        assert A.success_rate(m, x, x_adv, target, targeted=True) >= 0.9
        _in_threat_model(x_adv, x, 0.3, "linf")


def _plain_pgd(model, x, y, eps, alpha, steps, norm):
    """PGD as in Madry et al., written out: random start in the ball, gradient step (sign / unit L2),
    projection onto the ball, clip to the image box."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    if norm == "linf":
        delta = (torch.rand_like(x) * 2 - 1) * eps
    else:
        delta = torch.randn_like(x)
        r = torch.rand(len(x)) ** (1 / x[0].numel())
        delta = delta / delta.flatten(1).norm(dim=1).view(shape) * eps * r.view(shape)
    delta = (x + delta).clamp(0, 1) - x
    for _ in range(steps):
        delta.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x + delta), y), delta)
        if norm == "linf":
            delta = (delta + alpha * g.sign()).clamp(-eps, eps)
        else:
            delta = delta + alpha * g / g.flatten(1).norm(dim=1).clamp(min=1e-12).view(shape)
            n = delta.flatten(1).norm(dim=1).view(shape)
            delta = delta * torch.where(n > eps, eps / n, torch.ones_like(n))
        delta = ((x + delta).clamp(0, 1) - x).detach()
    return x + delta


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", ["digits-cnn", "digits-mlp"])
def test_pgd_is_as_strong_as_torchattacks_and_a_plain_loop(name, norm, models, digits):
    import torchattacks

    model, (x, y) = models[name], digits
    eps, steps = 0.1, 40
    alpha = 2.5 * eps / steps
    torch.manual_seed(0)
    ours = A.robust_accuracy(model, A.pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, norm=norm), y)
    cls = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
    torch.manual_seed(0)
    theirs = A.robust_accuracy(model, cls(model, eps=eps, alpha=alpha, steps=steps, random_start=True)(x, y), y)
    torch.manual_seed(0)
    plain = A.robust_accuracy(model, _plain_pgd(model, x, y, eps, alpha, steps, norm), y)
    print(f"{name} {norm}: advlib {ours:.3f}, torchattacks {theirs:.3f}, plain loop {plain:.3f}")
    assert ours <= theirs + 0.005 and ours <= plain + 0.005
    assert ours < advlib.train.accuracy(model, x, y)  # it is an attack at all


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5), ("l1", 1.0)])
def test_restarts_never_hurt(norm, eps, models, digits):
    x, y = digits
    for m in models.values():
        fooled = {}
        for r in (1, 3):
            torch.manual_seed(0)
            fooled[r] = predict(m, A.pgd(m, x, y, eps=eps, steps=5, norm=norm, restarts=r)) != y
        assert not (fooled[1] & ~fooled[3]).any(), "a point fooled with 1 run is not fooled with 3"
        assert fooled[3].sum() >= fooled[1].sum()


@pytest.mark.parametrize("random_start", [False, True])
def test_l1_pgd_does_not_stall_on_pixels_at_the_box(random_start, models, digits):
    """The L1 step moves the coordinate with the largest gradient; on the digits that is often a
    pixel at 0 or 1 that the gradient pushes out of [0, 1], where the step would be clipped away
    for ever. With a ball that contains the whole box nothing should survive 20 steps."""
    x, y = digits
    for m in models.values():
        torch.manual_seed(0)
        x_adv = A.pgd(m, x, y, eps=float(x[0].numel()), steps=20, norm="l1", random_start=random_start)
        assert A.robust_accuracy(m, x_adv, y) <= 0.02
        torch.manual_seed(0)
        assert A.robust_accuracy(m, A.pgd(m, x, y, eps=4.0, steps=20, norm="l1"), y) <= 0.2


class _HigherLossWhenRight(torch.nn.Module):
    """Label 0 is right for inputs >= 0.5 with a *higher* cross-entropy (1.03) than where it is
    wrong (0.80, label 1 wins): the run with the highest loss is not the one that fools the model."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        left, right = torch.tensor([0.0, 0.2, -9.0]), torch.tensor([0.0, -0.1, -0.1])
        return torch.where(x[:, :1] < 0.5, left, right) + 0 * self.unused


def test_restarts_keep_a_run_that_fools_the_model_over_a_higher_loss():
    model, x, y = _HigherLossWhenRight().eval(), torch.full((200, 1), 0.5), torch.zeros(200, dtype=torch.long)
    fooled = {}
    for r in (1, 8):
        torch.manual_seed(0)  # steps=0: each run is its random start, half of them land left of 0.5
        fooled[r] = predict(model, A.pgd(model, x, y, eps=0.5, steps=0, restarts=r)) != y
    assert 0.3 < fooled[1].float().mean() < 0.7
    assert not (fooled[1] & ~fooled[8]).any() and fooled[8].float().mean() > 0.95


def test_accuracy_vs_eps_is_non_increasing_for_pgd(models, digits):
    P = advlib.profile()
    x, y = digits
    torch.manual_seed(0)
    acc = A.accuracy_vs_eps(models["digits-mlp"], A.pgd, x, y, P.eps_grid, progress=False, steps=10)
    assert len(acc) == len(P.eps_grid) and acc[0] == advlib.train.accuracy(models["digits-mlp"], x, y)
    assert all(b <= a for a, b in zip(acc, acc[1:])), acc


def test_attacks_work_at_the_mnist_shape():
    te = advlib.data.load("digits28", "test")
    x, y = te.x[:32], te.y[:32]
    torch.manual_seed(0)
    model = advlib.models.small_cnn((1, 28, 28), strides=(2, 2)).eval()
    for norm, eps in (("linf", 0.1), ("l2", 1.0), ("l1", 5.0)):
        x_adv = A.pgd(model, x, y, eps=eps, steps=3, norm=norm)
        _in_threat_model(x_adv, x, eps, norm)
        with torch.no_grad():
            assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)
    _in_threat_model(A.fgsm(model, x, y, eps=0.1), x, 0.1, "linf")


# ---------------------------------------------------------------------------------------- errors

def test_clear_errors(models, digits):
    m, x, y = models["digits-mlp"], digits[0][:8], digits[1][:8]
    with pytest.raises(ValueError, match="normalisation"):
        A.pgd(m, (x - 0.5) / 0.25, y, eps=0.1, steps=1)
    with pytest.raises(ValueError, match="normalisation"):
        A.fgsm(m, x * 2, y, eps=0.1)
    with pytest.raises(ValueError, match="eps must be"):
        A.pgd(m, x, y, eps=-0.1, steps=1)
    with pytest.raises(ValueError, match="eps must be"):
        A.fgsm(m, x, y, eps=math.nan)
    with pytest.raises(ValueError, match="steps must be"):
        A.pgd(m, x, y, eps=0.1, steps=-1)
    with pytest.raises(ValueError, match="y must be a 1-D integer"):
        A.pgd(m, x, y[:, None], eps=0.1, steps=1)
    with pytest.raises(ValueError, match="y must be a 1-D integer"):
        A.pgd(m, x, y[:4], eps=0.1, steps=1)
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.9"):
        A.pgd(m, x, y + 10, eps=0.1, steps=1)
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.9"):
        A.fgsm(m, x, y - 20, eps=0.1)
    with pytest.raises(ValueError, match="norm must be one of"):
        A.pgd(m, x, y, eps=0.1, steps=1, norm="l3")
    with pytest.raises(ValueError, match="loss must be"):
        A.pgd(m, x, y, eps=0.1, steps=1, loss="hinge")
    with pytest.raises(ValueError, match="loss must be"):
        A.fgsm(m, x, y, eps=0.1, loss="hinge")
    with pytest.raises(ValueError, match="x is on cpu but the model is on meta"):
        A.pgd(copy.deepcopy(m).to("meta"), x, y, eps=0.1, steps=1)


def test_a_model_in_train_mode_is_switched_to_eval_with_a_warning(models, digits):
    m = copy.deepcopy(models["digits-mlp"]).train()
    x, y = digits[0][:8], digits[1][:8]
    with pytest.warns(UserWarning, match="train mode"):
        A.pgd(m, x, y, eps=0.1, steps=1)
    assert not m.training
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        A.fgsm(m, x, y, eps=0.1)  # now in eval mode: silent
