"""advlib.zo from first principles: the estimators' means against the (smoothed) gradient within
their standard errors, their variance against q, ZOO's exact differences on quadratics, the query
count of one estimate, and the optimisers' update rules."""
import math

import pytest
import torch

from advlib import zo

D = 8


def _quadratic(d=D, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(d, d, generator=g, dtype=dtype)
    a = m @ m.T / d + torch.eye(d, dtype=dtype)
    b = torch.randn(d, generator=g, dtype=dtype)
    return a, b, (lambda z: 0.5 * ((z @ a) * z).sum(1) + z @ b)


def _zscores(g: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    se = g.std(0) / math.sqrt(len(g))
    return (g.mean(0) - target) / se


@pytest.mark.parametrize("kind", zo.KINDS)
@pytest.mark.parametrize("antithetic", [False, True])
def test_quadratic_estimate_is_unbiased(kind, antithetic):
    """On a quadratic the smoothed gradient is the gradient (the beta^2 term of the expansion is odd in u),
    so the mean of many estimates matches A x + b within its standard error, coordinate by coordinate."""
    a, b, f = _quadratic()
    x = torch.randn(1, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    reps = 4000
    g, _ = zo.estimate(f, x.repeat(reps, 1), q=5, beta=0.5, kind=kind, antithetic=antithetic,
                       generator=torch.Generator().manual_seed(2))
    z = _zscores(g, (x @ a + b)[0])
    assert z.abs().max() < 4.5, z


def test_gaussian_estimate_matches_the_smoothed_gradient_not_the_gradient():
    """f = sum cos(x_i): E f(x + beta u) = e^{-beta^2/2} f(x) for u ~ N(0, I), so the Gaussian estimate is
    unbiased for -e^{-beta^2/2} sin(x) and biased for the gradient -sin(x) itself."""
    def f(z):
        return torch.cos(z).sum(1)
    beta = 1.0
    x = torch.full((1, D), 1.0, dtype=torch.float64)
    reps = 20000
    g, _ = zo.estimate(f, x.repeat(reps, 1), q=4, beta=beta, kind="gaussian", antithetic=True,
                       generator=torch.Generator().manual_seed(3))
    smoothed = -math.exp(-beta ** 2 / 2) * torch.sin(x[0])
    assert _zscores(g, smoothed).abs().max() < 4.5
    assert _zscores(g, -torch.sin(x[0])).abs().min() > 10  # the bias is detected on every coordinate


@pytest.mark.parametrize("kind", zo.KINDS)
def test_variance_falls_like_one_over_q(kind):
    _, _, f = _quadratic()
    x = torch.randn(1, D, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    reps = 3000
    var = {}
    for q in (1, 4, 16):
        g, _ = zo.estimate(f, x.repeat(reps, 1), q=q, beta=1e-3, kind=kind, generator=torch.Generator().manual_seed(q))
        var[q] = g.var(0).sum().item()
    for q in (4, 16):
        assert var[q] * q / var[1] == pytest.approx(1.0, rel=0.15), var


def test_one_estimate_is_one_batched_call_with_the_stated_number_of_points():
    _, _, f = _quadratic()
    calls = []

    def counted(z):
        calls.append(len(z))
        return f(z)

    x = torch.randn(3, D, dtype=torch.float64)
    zo.estimate(counted, x, q=7)
    assert calls == [3, 21]
    calls.clear()
    zo.estimate(counted, x, q=7, antithetic=True)
    assert calls == [42]
    calls.clear()
    zo.estimate(counted, x, q=7, fx=f(x))
    assert calls == [21]


def test_rows_are_grouped_by_base_point():
    """Rows i*q .. i*q+q-1 perturb point i: a function that reads only the first coordinate of
    far-apart points tells the groups apart."""
    seen = []

    def f(z):
        seen.append(z[:, 0].clone())
        return z.sum(1)

    x = torch.tensor([[0.0, 0.0], [100.0, 0.0]], dtype=torch.float64)
    zo.estimate(f, x, q=3, beta=1e-3, fx=f(x))
    rows = seen[-1]
    assert (rows[:3].abs() < 1).all() and ((rows[3:] - 100).abs() < 1).all()


def test_coordinate_estimate_is_exact_on_a_quadratic():
    a, b, f = _quadratic()
    x = torch.randn(2, D, dtype=torch.float64)
    coords = torch.tensor([[0, 3, 5], [1, 2, 7]])
    g, h = zo.coordinate_estimate(f, x, coords, h=1e-3)
    grad = x @ a + b
    assert torch.allclose(g, grad.gather(1, coords), atol=1e-8)
    assert torch.allclose(h, torch.diagonal(a)[coords], atol=1e-5)


def test_directions():
    u = zo.directions(4, 6, (2, 3), "sphere", generator=torch.Generator().manual_seed(0))
    assert u.shape == (4, 6, 2, 3)
    assert torch.allclose(u.flatten(2).norm(dim=2), torch.ones(4, 6))
    with pytest.raises(ValueError, match="kind"):
        zo.directions(1, 1, (2,), "uniform")


def test_optimiser_rules():
    x = torch.tensor([[1.0, -2.0]])
    g = torch.tensor([[0.5, -4.0]])
    assert torch.equal(zo.ZOSGD(0.1).step(x, g), x - 0.1 * g)
    assert torch.equal(zo.ZOSignSGD(0.1).step(x, g), x - 0.1 * g.sign())
    # one Adam step moves every coordinate by lr (bias-corrected m / sqrt(v) = sign(g))
    assert torch.allclose(zo.ZOAdam(0.1).step(x, g), x - 0.1 * g.sign(), atol=1e-6)


def test_coordinate_adam_matches_adam_on_the_chosen_coordinates():
    """ZOO's coordinate-wise Adam: each coordinate keeps its own moments and step count, and the
    others do not move; on a coordinate updated every step it is torch's Adam."""
    torch.manual_seed(0)
    x0 = torch.randn(1, 4)
    p = x0.clone().requires_grad_()
    ref = torch.optim.Adam([p], lr=0.05)
    opt = zo.ZOAdam(0.05)
    x = x0.clone()
    idx = torch.tensor([[1, 3]])
    for _ in range(5):
        g = torch.randn(1, 4)
        x = opt.step(x, g.gather(1, idx), index=idx)
        p.grad = g * torch.tensor([[0.0, 1.0, 0.0, 1.0]])
        ref.step()
    assert torch.allclose(x[:, [1, 3]], p.detach()[:, [1, 3]], atol=1e-6)
    assert torch.equal(x[:, [0, 2]], x0[:, [0, 2]])


@pytest.mark.parametrize("optimizer", sorted(zo.OPTIMIZERS))
def test_minimize_decreases_a_quadratic(optimizer):
    _, _, f = _quadratic(dtype=torch.float32)
    x0 = torch.full((2, D), 2.0)
    x, values = zo.minimize(f, x0, steps=300, optimizer=optimizer, lr=0.02, q=10, beta=1e-3,
                            generator=torch.Generator().manual_seed(0))
    assert values.shape == (301, 2)
    assert (values[-1] < 0.2 * values[0]).all()


def test_bad_input():
    _, _, f = _quadratic()
    x = torch.zeros(1, D, dtype=torch.float64)
    with pytest.raises(ValueError, match="q must be"):
        zo.estimate(f, x, q=0)
    with pytest.raises(ValueError, match="beta"):
        zo.estimate(f, x, beta=0.0)
    with pytest.raises(ValueError, match="optimizer"):
        zo.minimize(f, x, steps=1, optimizer="lbfgs")
    with pytest.raises(ValueError, match="lr"):
        zo.ZOAdam(-1.0)


def test_optimisers_update_only_the_indexed_coordinates_and_adam_checks_its_rows():
    x = torch.zeros(2, 4)
    idx = torch.tensor([[0, 2], [1, 3]])
    g = torch.ones(2, 2)
    for opt in (zo.ZOSGD(0.5), zo.ZOSignSGD(0.5), zo.ZOAdam(0.5)):
        moved = opt.step(x, g, index=idx)
        assert torch.allclose(moved, torch.tensor([[-0.5, 0, -0.5, 0], [0, -0.5, 0, -0.5]]), atol=1e-6)
    adam = zo.ZOAdam(0.1)
    adam.step(torch.zeros(3, 2), torch.ones(3, 2))
    with pytest.raises(ValueError, match="rows"):
        adam.step(torch.zeros(2, 2), torch.ones(2, 2))
    out = adam.step(torch.zeros(1, 2), -torch.ones(1, 2), rows=torch.tensor([2]))
    assert adam.t[2].tolist() == [2.0, 2.0] and adam.t[0].tolist() == [1.0, 1.0]
    assert (out > 0).all()  # m = 0.9 * 0.1 - 0.1 < 0: the step is up
    with pytest.raises(ValueError, match="betas"):
        zo.ZOAdam(betas=(1.5, 0.9))
