"""Checks and measurements of lecture 11 (soft-label attacks: ZOO and AutoZOOM)."""
from __future__ import annotations

import math

import torch

from .exercises import ExerciseError, attempt

__all__ = ["check_sphere_estimate", "initial_distortion", "distortion_curve", "queries_to_reach", "table_row"]


def check_sphere_estimate(sphere_estimate, *, strict: bool = False) -> None:
    """``sphere_estimate(f, x, q, beta, generator)`` must return AutoZOOM's random gradient estimate
    at each row of ``x`` (``n x d``): ``q`` directions ``u_j`` uniform on the unit sphere,
    ``g = d / (q beta) * sum_j (f(x + beta u_j) - f(x)) u_j`` (Tu et al. 2019), with all
    ``n * (q + 1)`` points queried in at most two calls of ``f``."""

    def check():
        d, n = 12, 4000
        g = torch.Generator().manual_seed(7)
        a = torch.randn(d, generator=g)
        calls = []

        def f(z):  # linear: the forward difference is exact, so E g = a for a correct estimate
            calls.append(len(z))
            return z @ a

        x = torch.rand(n, d, generator=g)
        est = {}
        for q in (1, 10):
            calls.clear()
            got = sphere_estimate(f, x.clone(), q, 1e-3, torch.Generator().manual_seed(q))
            if not isinstance(got, torch.Tensor) or got.shape != x.shape:
                raise ExerciseError(f"expected one estimate per row, shape {tuple(x.shape)}, got "
                                    f"{getattr(got, 'shape', type(got).__name__)}")
            if len(calls) > 2 or sum(calls) != n * (q + 1):
                raise ExerciseError(f"for q={q} expected n*(q+1) = {n * (q + 1)} points in at most two calls of f "
                                    f"(f(x) and all directions at once); got calls of sizes {calls}. Hint: stack "
                                    "the n*q points x + beta*u into one batch.")
            est[q] = got
        mean, se = est[1].mean(0), est[1].std(0) / math.sqrt(n)
        if torch.allclose(mean * d, a, atol=0.15 * a.abs().max()):
            raise ExerciseError(f"the estimate is about 1/d = 1/{d} of the gradient: on the sphere E[u u^T] = I/d, "
                                "so the estimate is scaled by d.")
        if torch.allclose(-mean, a, atol=0.15 * a.abs().max()):
            raise ExerciseError("wrong sign: the difference is f(x + beta u) - f(x), not the other way round.")
        if ((mean - a).abs() > 5 * se + 1e-3).any():
            raise ExerciseError(f"on f(x) = a.x the estimates average to {mean[:3].tolist()}..., not the gradient "
                                f"{a[:3].tolist()}... Hint: u must be uniform on the unit sphere (a Gaussian "
                                "divided by its norm), the difference divided by beta, times d / q.")
        ratio = (est[10] - a).pow(2).sum(1).mean() / (est[1] - a).pow(2).sum(1).mean()
        if not 0.05 < ratio < 0.2:
            raise ExerciseError(f"averaging q = 10 directions should cut the mean squared error about 10-fold; "
                                f"here it changed by a factor {float(ratio):.2f}. Hint: average over the q "
                                "directions of each point, with fresh directions for each one.")

    attempt(check, title="the q-direction sphere estimate", strict=strict)


def initial_distortion(log) -> torch.Tensor:
    """Per example, the L2 distortion of the first adversarial iterate (``nan`` where none): the
    distortion at the query count of the first success."""
    out = torch.full(log.first_success.shape, math.nan)
    for i, s in enumerate(log.first_success.tolist()):
        if s >= 0:
            out[i] = float(log.distortion_at(s)[i])
    return out


def distortion_curve(log, budgets) -> torch.Tensor:
    """``len(budgets) x n``: the best distortion within each budget (``inf`` where none yet)."""
    return torch.stack([log.distortion_at(int(b)).cpu() for b in budgets])


def queries_to_reach(curve: torch.Tensor, budgets, target: float) -> torch.Tensor:
    """Per example, the first budget of the grid at which the best distortion is at most ``target``
    (``nan`` where it never is)."""
    reached = curve <= target
    b = torch.as_tensor(list(budgets), dtype=torch.float)
    first = reached.float().argmax(0)
    return torch.where(reached.any(0), b[first], torch.full_like(b[first], math.nan))


def table_row(log, d: int, curve: torch.Tensor, budgets, target: float, reference_queries: float | None) -> dict:
    """The columns of the lecture's ZOO / AutoZOOM table for one attack run (``d`` pixels per input)."""
    ok = log.success.cpu()
    fs = log.first_success.cpu()[ok].float()
    mean_q = fs.mean().item() if ok.any() else math.nan
    reach = queries_to_reach(curve, budgets, target)
    return {"success": ok.float().mean().item(), "queries": mean_q,
            "reduction": (1 - mean_q / reference_queries) if reference_queries else math.nan,
            "per_pixel_l2": (initial_distortion(log)[ok] / d).mean().item() if ok.any() else math.nan,
            "reached": (~reach.isnan()).float().mean().item(),
            "queries_to_target": reach[~reach.isnan()].mean().item() if (~reach.isnan()).any() else math.nan}
