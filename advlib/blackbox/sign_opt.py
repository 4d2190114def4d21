"""Sign-OPT (Cheng, Singh, Chen, Chen, Liu, Hsieh: "Sign-OPT: A query-efficient hard-label
adversarial attack", ICLR 2020): OPT's ``g(theta)`` minimised with a sign-gradient that costs ONE
query per direction."""
from __future__ import annotations

import math

import torch

from ..threat import check_budget, check_count
from ._common import adversarial, check_attack, first_look, generator
from ._hard import check_init, closest_start, confirm, initial_directions, line_search, point, reserve, unit

__all__ = ["sign_opt", "sign_gradient"]


def sign_gradient(bb, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor, theta: torch.Tensor, g: torch.Tensor,
                  u: torch.Tensor, h: torch.Tensor, *, targeted: bool, counts: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """Sign-OPT's estimate (Cheng et al. 2020, eq. 4 / Algorithm 1) of ``grad g(theta)`` for the
    examples ``ids``, from the ``K`` unit directions ``u`` (``m x K x ...``)::

        sign(g(theta + h u) - g(theta)) = +1 if x0 + g(theta) (theta + h u)/||theta + h u|| is NOT adversarial, else -1
        grad ~ 1/K * sum_k sign_k * u_k

    one query per direction (the perturbed direction is looked at only at the current ``g``), all
    directions of all examples in one call. ``counts[j]``: use only the first ``counts[j]`` directions
    of example ``j`` (what its remaining queries allow)."""
    m, k = u.shape[:2]
    ones = [1] * (theta.dim() - 1)
    counts = torch.full((m,), k, device=x.device) if counts is None else counts
    use = torch.arange(k, device=x.device)[None, :] < counts[:, None]
    new = unit((theta[:, None] + h.view(-1, 1, *ones) * u).flatten(0, 1)).view_as(u)
    rows = use.nonzero(as_tuple=True)
    owner = ids[rows[0]]
    adv = adversarial(bb.label(point(x[owner], new[rows], g[rows[0]]), owner), y[owner], targeted)
    sign = torch.zeros(m, k, device=x.device, dtype=x.dtype)
    sign[rows] = torch.where(adv, -1.0, 1.0).to(x.dtype)
    return (sign.view(m, k, *ones) * u).sum(1) / counts.clamp_min(1).view(-1, *ones)


def sign_opt(bb, x: torch.Tensor, y: torch.Tensor, *, queries: int = 4000, targeted: bool = False, k: int = 200,
             h: float = 1e-3, alpha: float = 0.2, n_dirs: int = 100, starts: int = 10,
             x_init: torch.Tensor | None = None, seed: int | None = 0) -> torch.Tensor:
    """The Sign-OPT attack, L2 (Cheng et al., ICLR 2020, Algorithm 1), hard label: only
    ``bb.label`` is used.

    Minimise OPT's ``g(theta)`` (:func:`advlib.blackbox.opt`; the distance to the decision boundary
    along ``theta``) by ``theta <- theta - alpha * grad`` with ``sign_gradient`` from ``k`` random
    directions (``h``: their length) and OPT's line search on ``alpha`` (doubling while ``g`` falls, else
    quartering until it does). ``alpha < 1e-4`` restarts ``alpha = 1`` with ``h / 10`` (the authors' rule).
    Start: the best by ``g`` of ``n_dirs`` random Gaussian directions and (advlib's addition; ``starts=0``
    for the paper's start alone) the direction of the closest of ``starts`` uniform-noise starts moved to
    the boundary (``_hard.closest_start``, ``_hard.initial_directions``; targeted: ``x_init``, else the
    batch's inputs of the target class and uniform noise).

    All examples together: each iteration asks the black box once for all ``k`` directions of all
    active examples, and once per step of the batched searches. An example never spends more than
    ``queries``: its estimate uses fewer directions when fewer fit (it stops with fewer than 30 left).
    Returns the best adversarial point found per example (``x`` where none); ``bb.log`` holds the cost.
    """
    log = check_attack(bb, x, y, "sign_opt", queries=queries)
    k, n_dirs = check_count(k, "sign_opt", "k", 1), check_count(n_dirs, "sign_opt", "n_dirs", 1)
    starts = check_count(starts, "sign_opt", "starts", 0)
    h = check_budget(h, "sign_opt", name="h", positive=True)
    alpha = check_budget(alpha, "sign_opt", name="alpha", positive=True)
    x_init = check_init(x_init, x, targeted, "sign_opt")
    x, y = x.detach(), y.detach()
    n, dev, tol = len(x), x.device, h / 500
    labels, hit = first_look(bb, x, y, targeted)
    with reserve(log):
        gen = generator(seed, dev)
        all_ids = torch.arange(n, device=dev)
        extra = None
        if starts:
            extra = closest_start(bb, x, y, targeted, gen=gen, tries=n_dirs, starts=starts, tol_rel=1e-3,
                                  x_init=x_init, labels=labels, active=~hit)
        theta, g = initial_directions(bb, x, y, targeted, gen=gen, n_dirs=n_dirs, extra=extra, tol=tol, x_init=x_init,
                                      labels=labels, active=~hit)
        found = g < math.inf
        best = torch.where(found.view(-1, *([1] * (x.dim() - 1))), point(x, theta, g), x)
        log.record(all_ids, best, found)
        alphas = torch.full((n,), alpha, device=dev, dtype=x.dtype)
        hs = torch.full((n,), h, device=dev, dtype=x.dtype)
        done = ~found
        while True:
            room = log.remaining() - 20  # what the estimate may use; the rest is for the line search
            go = ~done & (room >= min(k, 10))
            if not go.any():
                break
            ids = go.nonzero().squeeze(1)
            u = unit(torch.randn(len(ids) * k, *x.shape[1:], device=dev, generator=gen)).view(len(ids), k, *x.shape[1:])
            grad = sign_gradient(bb, x, y, ids, theta[ids], g[ids], u, hs[ids], targeted=targeted,
                                 counts=room[ids].clamp(max=k))
            new_t, new_g, alphas[ids] = line_search(bb, x, y, ids, theta[ids], g[ids], grad, alphas[ids],
                                                    targeted=targeted, tol=hs[ids] / 500)
            better = new_g < g[ids]
            theta[ids], g[ids] = new_t, new_g
            if better.any():
                b = ids[better]
                best[b] = point(x[b], theta[b], g[b])
                log.record(b, best[b], torch.ones_like(b, dtype=torch.bool))
            stuck = alphas < 1e-4
            alphas[stuck] = 1.0
            hs[stuck] *= 0.1
            done |= hs < 1e-8
    return confirm(bb, x, y, best, found, targeted=targeted)
