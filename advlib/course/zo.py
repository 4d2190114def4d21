"""Helpers of lecture 10 (zeroth-order optimisation): test functions whose gradient *and* smoothed
gradient are known in closed form, a log-log slope, and the exercise checks.

The random-direction estimates of :mod:`advlib.zo` are unbiased for the gradient of a smoothed
function (Nesterov & Spokoiny 2017, eq. 21 and Lemma 3; Flaxman et al. 2005, Lemma 1):

* Gaussian directions: ``f_beta(x) = E f(x + beta u)``, ``u ~ N(0, I)``;
* sphere directions (with the factor ``d``): ``f_beta(x) = E f(x + beta v)``, ``v`` uniform in the unit *ball*.

For ``f(x) = sum_i cos(a_i x_i)`` both are closed forms: ``E cos(a_i (x_i + beta w_i)) = cos(a_i x_i)
E cos(a_i beta w_i)`` (the sine term is odd in ``w_i``), and ``E cos(t w_1)`` is the characteristic
function of one coordinate: ``exp(-t^2 / 2)`` for a Gaussian, ``0F1(; d/2 + 1; -t^2 / 4)`` for the
uniform distribution on the ball of ``R^d`` (a Bessel function, ``Gamma(d/2+1) (2/t)^(d/2) J_{d/2}(t)``).
For a quadratic both smoothings only add a constant, so the smoothed gradient *is* the gradient.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import hyp0f1

from .. import zo
from .exercises import ExerciseError, attempt

__all__ = ["Quadratic", "CosineSum", "smoothing_factor", "loglog_slope", "check_forward_estimate",
           "check_mse_prediction"]


def _kind(kind: str, who: str) -> str:
    if kind not in zo.KINDS:
        raise ValueError(f"{who}: kind must be one of {zo.KINDS}, got {kind!r}")
    return kind


def smoothing_factor(t, d: int, kind: str) -> torch.Tensor:
    """``E cos(t w_1)`` for ``w ~ N(0, I_d)`` (``kind="gaussian"``: ``exp(-t^2/2)``) or ``w`` uniform in
    the unit ball of ``R^d`` (``kind="sphere"``: ``0F1(; d/2+1; -t^2/4)``): the factor by which
    smoothing with radius ``beta`` shrinks a cosine of frequency ``a`` (``t = a beta``)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    if _kind(kind, "smoothing_factor") == "gaussian":
        return torch.exp(-t ** 2 / 2)
    return torch.from_numpy(np.asarray(hyp0f1(d / 2 + 1, -(t.numpy() ** 2) / 4), dtype=np.float64))


class Quadratic:
    """``f(x) = 1/2 sum_i h_i x_i^2`` on rows of ``x`` (``m x d`` -> ``m``), float64. Directions of
    both kinds are rotation invariant, so a diagonal quadratic loses no generality. Smoothing adds
    ``beta^2/2 sum h_i`` (Gaussian) or ``beta^2/(2(d+2)) sum h_i`` (ball): the smoothed gradient is
    the gradient, and the random-direction estimates are unbiased for ``grad f`` itself."""

    def __init__(self, h):
        self.h = torch.as_tensor(h, dtype=torch.float64).flatten()
        if len(self.h) == 0 or (self.h <= 0).any():
            raise ValueError("Quadratic: h must be a non-empty vector of positive curvatures")
        self.d = len(self.h)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.h * x.flatten(1) ** 2).sum(1)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return self.h * x

    def smoothed_grad(self, x: torch.Tensor, beta: float, kind: str) -> torch.Tensor:
        _kind(kind, "Quadratic.smoothed_grad")
        return self.grad(x)


class CosineSum:
    """``f(x) = sum_i cos(a_i x_i)`` on rows of ``x`` (``m x d`` -> ``m``), float64, with its gradient
    ``-a_i sin(a_i x_i)`` and the gradient of its smoothed version, that gradient times
    :func:`smoothing_factor` ``(a_i beta)``: the bias ``grad f_beta - grad f`` in closed form."""

    def __init__(self, a):
        self.a = torch.as_tensor(a, dtype=torch.float64).flatten()
        if len(self.a) == 0:
            raise ValueError("CosineSum: a must be a non-empty vector of frequencies")
        self.d = len(self.a)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cos(self.a * x.flatten(1)).sum(1)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return -self.a * torch.sin(self.a * x)

    def smoothed_grad(self, x: torch.Tensor, beta: float, kind: str) -> torch.Tensor:
        return self.grad(x) * smoothing_factor(self.a * beta, self.d, kind)


def loglog_slope(x, y) -> float:
    """The least-squares slope of ``log y`` against ``log x``: ``y ~ x^slope``."""
    return float(np.polyfit(np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float)), 1)[0])


# ------------------------------------------------------------------------------------------ exercise 1
class _Recorder:
    """A black-box ``f`` that keeps every batch it is asked."""

    def __init__(self, f):
        self.f, self.calls = f, []

    def __call__(self, x):
        if not isinstance(x, torch.Tensor) or x.dim() != 2:
            raise ExerciseError(f"f takes a batch of points, an m x d tensor; it got "
                                f"{getattr(x, 'shape', type(x).__name__)}. Hint: f(x[None]) for the single point x.")
        self.calls.append(x.detach().clone())
        return self.f(x)


def check_forward_estimate(forward_estimate, *, strict: bool = False) -> None:
    """``forward_estimate(f, x, q, beta, generator)`` must return, for one point ``x`` (a vector of
    length ``d``), the forward random-direction estimate with ``q`` directions ``u_j`` uniform on the
    unit sphere, ``d / (beta q) sum_j (f(x + beta u_j) - f(x)) u_j`` (Liu et al. 2020, eq. 3), asking
    ``f`` (a batch ``m x d`` -> ``m`` values) for the ``q`` points in one call and for ``f(x)`` once.

    The check replays the answer's own queries (so it knows the directions it drew), then compares
    the mean of many answers on a quadratic with the gradient and with the mean of
    :func:`advlib.zo.estimate`, within their standard errors."""

    def check():
        d, q, beta = 8, 5, 0.05
        quad = Quadratic(torch.linspace(0.5, 2.0, d))
        x = torch.linspace(-1.0, 1.0, d, dtype=torch.float64)
        f = _Recorder(quad)
        got = forward_estimate(f, x.clone(), q, beta, torch.Generator().manual_seed(0))
        if not isinstance(got, torch.Tensor) or got.shape != (d,):
            raise ExerciseError(f"expected one gradient estimate of the shape of x, ({d},), got "
                                f"{getattr(got, 'shape', type(got).__name__)}")
        rows = torch.cat(f.calls) if f.calls else torch.empty(0, d, dtype=torch.float64)
        if len(f.calls) > 2:
            raise ExerciseError(f"f was called {len(f.calls)} times: ask it for all q points x + beta u_j in one "
                                "batch (one call), plus one call for f(x) if you like.")
        if len(rows) != q + 1:
            raise ExerciseError(f"f was asked {len(rows)} points; the forward estimate costs q + 1 = {q + 1} queries "
                                "(f(x) once, and one per direction).")
        dist = (rows - x).norm(dim=1)
        at_x = dist < 1e-12
        if at_x.sum() != 1:
            raise ExerciseError("the forward form needs f(x) itself, asked once: f(x[None]).")
        if not torch.allclose(dist[~at_x], torch.full_like(dist[~at_x], beta), rtol=1e-5):
            raise ExerciseError(f"the query points lie at distances {dist[~at_x][:3].tolist()}... from x; with "
                                f"directions on the unit sphere they must all lie at beta = {beta}. Hint: draw "
                                "u = torch.randn(q, d, generator=generator) and divide each row by its norm.")
        u = (rows[~at_x] - x) / beta
        want = d / (beta * q) * ((quad(rows[~at_x]) - quad(x[None]))[:, None] * u).sum(0)
        if not torch.allclose(got, want, rtol=1e-6, atol=1e-9):
            if torch.allclose(got * d, want, rtol=1e-6):
                raise ExerciseError("your estimate is d times too small: sphere directions need the factor d "
                                    "(E[u u^T] = I / d for u uniform on the unit sphere).")
            if torch.allclose(got, want * q, rtol=1e-6) or torch.allclose(got * q, want, rtol=1e-6):
                raise ExerciseError("average over the q directions: the sum is divided by q, once.")
            if torch.allclose(got, -want, rtol=1e-6):
                raise ExerciseError("wrong sign: it is f(x + beta u) - f(x), the change along u.")
            raise ExerciseError("with the directions you drew, the estimate should be "
                                f"{want[:3].tolist()}..., got {got[:3].tolist()}... "
                                "Hint: d / (beta q) * sum_j (f(x + beta u_j) - f(x)) u_j.")
        again = forward_estimate(quad, x.clone(), q, beta, torch.Generator().manual_seed(0))
        if not torch.allclose(again, got):
            raise ExerciseError("two calls with equally seeded generators gave different estimates: draw the "
                                "directions with the generator you are given (torch.randn(..., generator=generator)).")
        # statistics: the mean of many answers against grad f (= the smoothed gradient on a quadratic)
        # and against the library's estimate, both within a few standard errors
        reps = 600
        gen = torch.Generator().manual_seed(1)
        mine = torch.stack([forward_estimate(quad, x.clone(), q, beta, gen) for _ in range(reps)])
        lib, _ = zo.estimate(quad, x.expand(reps, d).clone(), q=q, beta=beta, kind="sphere",
                             generator=torch.Generator().manual_seed(2))
        se_mine = mine.std(0) / math.sqrt(reps)
        se_lib = lib.std(0) / math.sqrt(reps)
        z_grad = ((mine.mean(0) - quad.grad(x)) / se_mine).abs().max().item()
        z_lib = ((mine.mean(0) - lib.mean(0)) / (se_mine ** 2 + se_lib ** 2).sqrt()).abs().max().item()
        if z_grad > 5 or z_lib > 5:
            raise ExerciseError(f"over {reps} estimates the mean is {z_grad:.1f} standard errors from the gradient "
                                f"and {z_lib:.1f} from advlib.zo.estimate's mean: draw fresh directions in every "
                                "call, uniformly on the sphere.")

    attempt(check, title="forward random-direction estimate", strict=strict)


# ------------------------------------------------------------------------------------------ exercise 2
def _measured_mse(fun, x, q: int, beta: float, reps: int, seed: int, antithetic: bool) -> float:
    g, _ = zo.estimate(fun, x.expand(reps, -1).clone(), q=q, beta=beta, kind="sphere", antithetic=antithetic,
                       generator=torch.Generator().manual_seed(seed))
    return ((g - fun.grad(x)) ** 2).sum(1).mean().item()


def check_mse_prediction(predict_mse, *, strict: bool = False) -> None:
    """``predict_mse(mse, bias_sq, q, q_new)`` gets the mean squared error ``E||g - grad f||^2`` of an
    estimate averaged over ``q`` directions and its squared bias ``||E g - grad f||^2``, and must
    predict the MSE with ``q_new`` directions. The check measures both with :func:`advlib.zo.estimate`
    (sphere directions): on a quadratic (no bias, antithetic form) and on a cosine sum at a large
    ``beta`` (bias from :class:`CosineSum`), and accepts predictions within 12 % of the measurement."""

    def check():
        d = 10
        x = torch.linspace(-1.0, 1.0, d, dtype=torch.float64)
        cases = [(Quadratic(torch.linspace(0.5, 2.0, d)), 0.01, True), (CosineSum(torch.linspace(1.0, 3.0, d)),
                                                                       1.5, False)]
        for k, (fun, beta, anti) in enumerate(cases):
            bias_sq = ((fun.smoothed_grad(x, beta, "sphere") - fun.grad(x)) ** 2).sum().item()
            mse4 = _measured_mse(fun, x, 4, beta, 6000, 10 + k, anti)
            for q_new in (8, 2, 32):
                want = _measured_mse(fun, x, q_new, beta, 6000, 20 + k + q_new, anti)
                got = predict_mse(mse4, bias_sq, 4, q_new)
                try:
                    got = float(got)
                except (TypeError, ValueError):
                    raise ExerciseError(f"expected a number (the predicted MSE), got {type(got).__name__}") from None
                if abs(got - want) <= 0.12 * want:
                    continue
                where = ("a quadratic (no bias)" if k == 0
                         else f"a cosine sum at beta = {beta} (squared bias {bias_sq:.3g})")
                hint = ""
                if abs(got - mse4 * math.sqrt(4 / q_new)) <= 0.02 * want:
                    hint = " Hint: the *standard deviation* falls like 1/sqrt(q); the MSE is a squared error."
                elif abs(got - mse4 * q_new / 4) <= 0.02 * want:
                    hint = " Hint: more directions average the noise away; the MSE falls."
                elif k == 1 and abs(got - mse4 * 4 / q_new) <= 0.05 * want:
                    hint = (" Hint: MSE = bias^2 + variance, and only the variance (of an average of q independent "
                            "terms) falls like 1/q; the bias stays.")
                raise ExerciseError(f"on {where}, MSE = {mse4:.4g} at q = 4: you predict {got:.4g} at q = {q_new}, "
                                    f"measured {want:.4g}.{hint}")

    attempt(check, title="MSE against q", strict=strict)
