"""Checks of lecture 13 (hard-label attacks: OPT, Sign-OPT, Boundary, HopSkipJump)."""
from __future__ import annotations

import math

import torch

from .exercises import ExerciseError, attempt

__all__ = ["check_g_bisection", "check_sign_gradient", "g_bisection"]


def check_g_bisection(bisect, *, strict: bool = False) -> None:
    """``bisect(is_adv, lo, hi, tol)`` must halve, for every row at once, the brackets ``[lo, hi]``
    (``lo`` not adversarial, ``hi`` adversarial) until each is at most ``tol`` wide, asking the oracle
    ``is_adv(lam)`` (one ``lambda`` per row, one answer per row) once per step for all rows, and return
    the adversarial ends ``hi`` (the binary search of OPT's g(theta), Cheng et al. 2019, Algorithm 1)."""

    def check():
        g = torch.Generator().manual_seed(5)
        m, tol = 16, 1e-4
        lo = torch.rand(m, generator=g)
        hi = lo + 0.1 + 3 * torch.rand(m, generator=g)
        b = lo + (hi - lo) * torch.rand(m, generator=g)  # the true boundary of each row
        calls = []

        def is_adv(lam):
            if not isinstance(lam, torch.Tensor) or lam.shape != (m,):
                raise ExerciseError(f"call is_adv with one lambda per row, a tensor of shape ({m},), got "
                                    f"{getattr(lam, 'shape', type(lam).__name__)}. Hint: ask for all rows at once.")
            calls.append(lam.clone())
            return lam >= b

        got = bisect(is_adv, lo.clone(), hi.clone(), tol)
        if not isinstance(got, torch.Tensor) or got.shape != (m,):
            raise ExerciseError(f"expected one lambda per row, a tensor of shape ({m},), got "
                                f"{getattr(got, 'shape', type(got).__name__)}")
        steps = math.ceil(math.log2(float((hi - lo).max()) / tol))
        if (got < b).any():
            raise ExerciseError("some returned lambdas are not adversarial (below the boundary): return the "
                                "upper ends hi of the brackets, the side that is known to be adversarial.")
        if (got - b > tol + 1e-7).any():
            raise ExerciseError(f"the brackets are not narrowed to tol: the worst is {float((got - b).max()):.2g} "
                                f"above the boundary (tol = {tol}). Hint: loop while hi - lo > tol.")
        if len(calls) > steps + 1:
            raise ExerciseError(f"the oracle was called {len(calls)} times; {steps} steps of bisection suffice for "
                                "all rows together. Hint: one call per step with the midpoints of every row.")

    attempt(check, title="binary search of g(theta)", strict=strict)


def check_sign_gradient(sign_grad, *, strict: bool = False) -> None:
    """``sign_grad(is_adv, x0, theta, g, u, h)`` must return Sign-OPT's estimate (Cheng et al. 2020,
    eq. 4) ``1/K sum_k s_k u_k`` with ``s_k = -1`` if ``x0 + g (theta + h u_k) / ||theta + h u_k||`` is
    adversarial (``g`` fell along ``u_k``) and ``+1`` otherwise, asking the oracle ``is_adv`` once for
    all ``K`` points (``K x d``): one query per direction."""

    def check():
        gen = torch.Generator().manual_seed(6)
        d, k, h = 20, 64, 1e-2
        w = torch.rand(d, generator=gen) + 0.5
        x0 = torch.zeros(d)
        c = 1.0  # adversarial iff w.z > c; g(theta) = c / (w.theta)

        def g_of(t):
            t = t / t.norm(dim=-1, keepdim=True)
            return c / (t @ w)

        theta = torch.rand(d, generator=gen) + 0.1
        theta = theta / theta.norm()
        g = float(g_of(theta))
        u = torch.randn(k, d, generator=gen)
        u = u / u.norm(dim=1, keepdim=True)
        calls = []

        def is_adv(z):
            if not isinstance(z, torch.Tensor) or z.shape != (k, d):
                raise ExerciseError(f"call is_adv once with all K = {k} points, a tensor of shape ({k}, {d}), got "
                                    f"{getattr(z, 'shape', type(z).__name__)}")
            calls.append(z)
            return z @ w > c

        got = sign_grad(is_adv, x0.clone(), theta.clone(), g, u.clone(), h)
        if not isinstance(got, torch.Tensor) or got.shape != (d,):
            raise ExerciseError(f"expected an estimate of the shape of theta ({d},), got "
                                f"{getattr(got, 'shape', type(got).__name__)}")
        if len(calls) != 1:
            raise ExerciseError(f"the oracle was called {len(calls)} times: Sign-OPT asks once per direction, all "
                                "K directions in one call.")
        signs = torch.sign(g_of(theta + h * u) - g)
        want = (signs[:, None] * u).mean(0)
        if torch.allclose(got, want, atol=1e-5):
            return
        if torch.allclose(got, -want, atol=1e-5):
            raise ExerciseError("wrong sign: an adversarial point means g(theta + h u) < g(theta), so s = -1 there.")
        if torch.allclose(got, want * k, atol=1e-4):
            raise ExerciseError("the estimate is K times too large: average over the directions (divide by K).")
        raise ExerciseError("the estimate differs from 1/K sum s_k u_k. Hint: the point of direction k is x0 + g * "
                            "(theta + h u_k) / ||theta + h u_k|| (normalise the perturbed direction).")

    attempt(check, title="Sign-OPT's one-query sign gradient", strict=strict)


def g_bisection(is_adv, lo: torch.Tensor, hi: torch.Tensor, tol: float) -> torch.Tensor:
    """The reference answer of the first exercise: per row, halve ``[lo, hi]`` (``hi`` adversarial)
    until it is ``tol`` wide, one oracle call per step for the rows still searching; returns ``hi``."""
    lo, hi = lo.clone(), hi.clone()
    while (hi - lo > tol).any():
        mid = (lo + hi) / 2
        open_ = hi - lo > tol
        adv = is_adv(mid)
        hi = torch.where(open_ & adv, mid, hi)
        lo = torch.where(open_ & ~adv, mid, lo)
    return hi
