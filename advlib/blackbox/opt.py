"""OPT (Cheng, Le, Chen, Yi, Zhang, Hsieh: "Query-efficient hard-label black-box attack: an
optimization-based approach", ICLR 2019): the hard-label attack as the minimisation of a continuous
function, the distance ``g(theta)`` to the decision boundary along a direction."""
from __future__ import annotations

import math

import torch

from ..threat import check_budget, check_count
from ._common import check_attack, first_look, generator
from ._hard import check_init, closest_start, confirm, g_search, initial_directions, line_search, point, reserve, unit

__all__ = ["opt", "g_gradient"]


def g_gradient(bb, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor, theta: torch.Tensor, g: torch.Tensor,
               u: torch.Tensor, beta: torch.Tensor, *, targeted: bool, counts: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """OPT's random-direction estimate of ``grad g(theta)`` (Cheng et al. 2019, eq. 5 / Algorithm 2)
    for the examples ``ids``, from the unit directions ``u`` (``m x q x ...``)::

        grad ~ 1/q * sum_j (g(theta + beta u_j) - g(theta)) / beta * u_j

    each ``g`` found by ``_hard.g_search`` from the current ``g`` (tolerance
    ``beta / 500``), all ``q`` searches of all examples batched. ``counts[j]``: use only the first
    ``counts[j]`` directions of example ``j``. Returns the estimate, and the smallest ``g`` met with its
    direction (OPT keeps it when it beats the step)."""
    m, q = u.shape[:2]
    ones = [1] * (theta.dim() - 1)
    counts = torch.full((m,), q, device=x.device) if counts is None else counts
    use = torch.arange(q, device=x.device)[None, :] < counts[:, None]
    new = unit((theta[:, None] + beta.view(-1, 1, *ones) * u).flatten(0, 1)).view_as(u)
    rows = use.nonzero(as_tuple=True)
    vals = torch.full((m, q), math.inf, device=x.device, dtype=x.dtype)
    vals[rows] = g_search(bb, x, y, ids[rows[0]], new[rows], g[rows[0]], targeted=targeted,
                          tol=beta[rows[0]] / 500)
    ok = vals < math.inf
    diff = torch.where(ok, (vals - g[:, None]) / beta[:, None], torch.zeros_like(vals))
    grad = (diff.view(m, q, *ones) * u).sum(1) / ok.sum(1).clamp_min(1).view(-1, *ones)
    g1, j = vals.min(1)
    return grad, g1, new[torch.arange(m, device=x.device), j]


def opt(bb, x: torch.Tensor, y: torch.Tensor, *, queries: int = 4000, targeted: bool = False, q: int = 10,
        beta: float = 1e-3, alpha: float = 0.2, n_dirs: int = 100, starts: int = 10,
        x_init: torch.Tensor | None = None, seed: int | None = 0) -> torch.Tensor:
    """The OPT attack, L2 (Cheng et al., ICLR 2019, Algorithm 2), hard label: only ``bb.label`` is used.

    The attack ``min ||delta|| s.t. label(x0 + delta) != y`` becomes the continuous problem
    ``min_theta g(theta)``, ``g(theta) = min {lambda > 0 : x0 + lambda theta/||theta|| adversarial}``
    (eq. 3), each value of ``g`` a fine-grained then binary search (Algorithm 1,
    ``_hard.g_search``). ``g`` is minimised by ``theta <- theta - alpha * grad``
    with ``g_gradient`` (``q`` random directions at distance ``beta``) and a line search on
    ``alpha`` (doubling while ``g`` falls, else quartering until it does); a direction of the estimate
    that beat the step is kept instead; ``alpha < 1e-4`` restarts ``alpha = 1`` with ``beta / 10``.
    Start: the best by ``g`` of ``n_dirs`` random Gaussian directions and (advlib's addition; ``starts=0``
    for the paper's start alone) the direction of the closest of ``starts`` uniform-noise starts moved to
    the boundary (``_hard.closest_start``; targeted: ``x_init``, else the batch's inputs of the target
    class and uniform noise).

    All examples together: every step of every search is one call of the black box for all the
    examples and directions still searching; an example never spends more than ``queries`` (its
    estimate uses fewer directions when fewer fit). Returns the best adversarial point per example
    (``x`` where none); ``bb.log`` holds the cost.
    """
    log = check_attack(bb, x, y, "opt", queries=queries)
    q, n_dirs = check_count(q, "opt", "q", 1), check_count(n_dirs, "opt", "n_dirs", 1)
    starts = check_count(starts, "opt", "starts", 0)
    beta = check_budget(beta, "opt", name="beta", positive=True)
    alpha = check_budget(alpha, "opt", name="alpha", positive=True)
    x_init = check_init(x_init, x, targeted, "opt")
    x, y = x.detach(), y.detach()
    n, dev = len(x), x.device
    labels, hit = first_look(bb, x, y, targeted)
    with reserve(log):
        gen = generator(seed, dev)
        extra = None
        if starts:
            extra = closest_start(bb, x, y, targeted, gen=gen, tries=n_dirs, starts=starts, tol_rel=1e-3,
                                  x_init=x_init, labels=labels, active=~hit)
        theta, g = initial_directions(bb, x, y, targeted, gen=gen, n_dirs=n_dirs, extra=extra, tol=beta / 500,
                                      x_init=x_init, labels=labels, active=~hit)
        found = g < math.inf
        best = torch.where(found.view(-1, *([1] * (x.dim() - 1))), point(x, theta, g), x)
        log.record(torch.arange(n, device=dev), best, found)
        alphas = torch.full((n,), alpha, device=dev, dtype=x.dtype)
        betas = torch.full((n,), beta, device=dev, dtype=x.dtype)
        done = ~found
        while True:
            fits = (log.remaining() - 20) // 16  # directions whose searches fit, with room for the line search
            go = ~done & (fits >= 1)
            if not go.any():
                break
            ids = go.nonzero().squeeze(1)
            u = unit(torch.randn(len(ids) * q, *x.shape[1:], device=dev, generator=gen)).view(len(ids), q, *x.shape[1:])
            grad, g1, t1 = g_gradient(bb, x, y, ids, theta[ids], g[ids], u, betas[ids], targeted=targeted,
                                      counts=fits[ids].clamp(max=q))
            new_t, new_g, alphas[ids] = line_search(bb, x, y, ids, theta[ids], g[ids], grad, alphas[ids],
                                                    targeted=targeted, tol=betas[ids] / 500)
            side = g1 < new_g  # a direction of the estimate beat the step: OPT moves there
            new_t[side], new_g[side] = t1[side], g1[side]
            better = new_g < g[ids]
            theta[ids[better]], g[ids[better]] = new_t[better], new_g[better]
            if better.any():
                b = ids[better]
                best[b] = point(x[b], theta[b], g[b])
                log.record(b, best[b], torch.ones_like(b, dtype=torch.bool))
            stuck = alphas < 1e-4
            alphas[stuck] = 1.0
            betas[stuck] *= 0.1
            done |= betas < 5e-4 * beta
    return confirm(bb, x, y, best, found, targeted=targeted)
