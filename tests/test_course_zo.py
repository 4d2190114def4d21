"""Lecture 10's helpers: the closed-form smoothed gradients agree with Monte Carlo, and the exercise
checks accept right answers, reject typical wrong ones with the right hint and report a stub as
not attempted."""
import math

import pytest
import torch

from advlib import zo
from advlib.course import ExerciseError
from advlib.course import zo as ex


def stub(*args):
    raise NotImplementedError


# ------------------------------------------------------------------------------------------ closed forms
@pytest.mark.parametrize("kind", zo.KINDS)
def test_cosine_smoothing_is_the_monte_carlo_mean(kind):
    """E f(x + beta w) by sampling w (Gaussian, or uniform in the ball: a sphere direction times
    radius U^(1/d)) against the closed form, and its gradient against the mean of zo.estimate."""
    d, beta, n = 5, 0.8, 400_000
    fun = ex.CosineSum(torch.linspace(1.0, 3.0, d))
    x = torch.linspace(-1.0, 1.0, d, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    w = zo.directions(1, n, (d,), kind, generator=gen)[0].double()
    if kind == "sphere":
        w = w * torch.rand(n, 1, generator=gen, dtype=torch.float64) ** (1 / d)
    vals = fun(x + beta * w)
    closed = (torch.cos(fun.a * x) * ex.smoothing_factor(fun.a * beta, d, kind)).sum()
    assert abs(vals.mean() - closed) < 5 * vals.std() / math.sqrt(n)
    assert not torch.allclose(fun.smoothed_grad(x, beta, kind), fun.grad(x), rtol=1e-2)  # there is a bias
    g, _ = zo.estimate(fun, x.expand(2000, d).clone(), q=50, beta=beta, kind=kind, antithetic=True, generator=gen)
    z = (g.mean(0) - fun.smoothed_grad(x, beta, kind)) / (g.std(0) / math.sqrt(len(g)))
    assert z.abs().max() < 5


def test_smoothing_factor_small_radius_expansion():
    t, d = torch.tensor([1e-3, 1e-2]), 20
    assert torch.allclose(1 - ex.smoothing_factor(t, d, "gaussian"), t.double() ** 2 / 2, rtol=1e-3)
    assert torch.allclose(1 - ex.smoothing_factor(t, d, "sphere"), t.double() ** 2 / (2 * (d + 2)), rtol=1e-3)
    assert torch.allclose(ex.smoothing_factor(torch.tensor([2.0]), 2, "sphere"),  # 2 J_1(t) / t in the plane
                          torch.tensor([2 * 0.5767248077568734 / 2.0], dtype=torch.float64))


def test_quadratic_has_no_bias_and_the_closed_form_variance():
    d = 12
    quad = ex.Quadratic(torch.linspace(0.5, 2.0, d))
    x = torch.linspace(-1.0, 1.0, d, dtype=torch.float64)
    for kind in zo.KINDS:
        assert torch.equal(quad.smoothed_grad(x, 3.0, kind), quad.grad(x))
    g, _ = zo.estimate(quad, x.expand(20_000, d).clone(), q=1, beta=0.3, kind="sphere", antithetic=True,
                       generator=torch.Generator().manual_seed(1))
    mse = ((g - quad.grad(x)) ** 2).sum(1).mean() / (quad.grad(x) ** 2).sum()
    assert abs(mse / (d - 1) - 1) < 0.05


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="positive"):
        ex.Quadratic([1.0, -1.0])
    with pytest.raises(ValueError, match="kind"):
        ex.smoothing_factor(1.0, 3, "uniform")
    with pytest.raises(ValueError, match="non-empty"):
        ex.CosineSum([])


def test_loglog_slope():
    x = [1, 10, 100]
    assert ex.loglog_slope(x, [3 * v ** -1.0 for v in x]) == pytest.approx(-1.0)
    assert ex.loglog_slope(x, [2 * v ** 0.5 for v in x]) == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------ exercise 1
def _forward(phi_d=True, per_q=True, unit=True, batched=True, own_rng=False, sign=1.0):
    def forward_estimate(f, x, q, beta, generator):
        d = x.numel()
        u = torch.randn(q, d, dtype=x.dtype) if own_rng else torch.randn(q, d, generator=generator, dtype=x.dtype)
        if unit:
            u = u / u.norm(dim=1, keepdim=True)
        fx = f(x[None])[0]
        fu = f(x[None] + beta * u) if batched else torch.stack([f((x + beta * v)[None])[0] for v in u])
        g = sign * ((fu - fx)[:, None] * u).sum(0) / beta
        return g * (d if phi_d else 1) / (q if per_q else 1)
    return forward_estimate


def _central(f, x, q, beta, generator):  # the antithetic form: 2q queries and no f(x)
    u = torch.randn(q, x.numel(), generator=generator, dtype=x.dtype)
    u = u / u.norm(dim=1, keepdim=True)
    both = f(torch.cat([x + beta * u, x - beta * u]))
    return x.numel() / (2 * beta * q) * ((both[:q] - both[q:])[:, None] * u).sum(0)


def test_forward_estimate_check(capsys):
    ex.check_forward_estimate(_forward(), strict=True)
    ex.check_forward_estimate(lambda f, x, q, beta, generator:
                              zo.estimate(f, x[None], q=q, beta=beta, generator=generator)[0][0], strict=True)
    ex.check_forward_estimate(stub)
    assert "not attempted" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="stub"):
        ex.check_forward_estimate(stub, strict=True)
    with pytest.raises(ExerciseError, match="factor d"):
        ex.check_forward_estimate(_forward(phi_d=False))
    with pytest.raises(ExerciseError, match="divided by q"):
        ex.check_forward_estimate(_forward(per_q=False))
    with pytest.raises(ExerciseError, match="unit sphere"):  # Gaussian directions
        ex.check_forward_estimate(_forward(unit=False))
    with pytest.raises(ExerciseError, match="one batch"):
        ex.check_forward_estimate(_forward(batched=False))
    with pytest.raises(ExerciseError, match="generator"):
        ex.check_forward_estimate(_forward(own_rng=True))
    with pytest.raises(ExerciseError, match="wrong sign"):
        ex.check_forward_estimate(_forward(sign=-1.0))
    with pytest.raises(ExerciseError, match="q \\+ 1"):
        ex.check_forward_estimate(_central)
    with pytest.raises(ExerciseError, match="shape"):
        ex.check_forward_estimate(lambda f, x, q, beta, generator: _forward()(f, x, q, beta, generator)[None])
    with pytest.raises(ExerciseError, match="batch of points"):  # f called on a single vector
        ex.check_forward_estimate(lambda f, x, q, beta, generator: f(x) * x)


def test_forward_estimate_check_sees_a_fixed_direction():
    """Directions reused across calls pass the replay but not the statistics."""
    def fixed(f, x, q, beta, generator):
        u = torch.randn(q, x.numel(), generator=torch.Generator().manual_seed(5), dtype=x.dtype)
        u = u / u.norm(dim=1, keepdim=True)
        return x.numel() / (beta * q) * ((f(x[None] + beta * u) - f(x[None])[0])[:, None] * u).sum(0)
    with pytest.raises(ExerciseError, match="standard errors"):
        ex.check_forward_estimate(fixed)


# ------------------------------------------------------------------------------------------ exercise 2
def test_mse_prediction_check(capsys):
    ex.check_mse_prediction(lambda mse, b2, q, qn: b2 + (mse - b2) * q / qn, strict=True)
    ex.check_mse_prediction(stub)
    assert "not attempted" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="stub"):
        ex.check_mse_prediction(stub, strict=True)
    with pytest.raises(ExerciseError, match="standard deviation"):
        ex.check_mse_prediction(lambda mse, b2, q, qn: mse * math.sqrt(q / qn))
    with pytest.raises(ExerciseError, match="falls"):
        ex.check_mse_prediction(lambda mse, b2, q, qn: mse * qn / q)
    with pytest.raises(ExerciseError, match="bias stays"):  # right on the quadratic, wrong with a bias
        ex.check_mse_prediction(lambda mse, b2, q, qn: mse * q / qn)
    with pytest.raises(ExerciseError, match="a number"):
        ex.check_mse_prediction(lambda mse, b2, q, qn: "half")
