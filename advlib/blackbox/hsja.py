"""HopSkipJump (Chen, Jordan, Wainwright: "HopSkipJumpAttack: a query-efficient decision-based
attack", IEEE S&P 2020), L2: binary search to the boundary, a Monte-Carlo estimate of the gradient
direction there from decisions alone, and a geometric search for the step size."""
from __future__ import annotations

import math

import torch

from ..threat import check_budget, check_count
from ._common import adversarial, check_attack, first_look, generator
from ._hard import blend_search, check_init, closest_start, confirm, reserve, unit

__all__ = ["hop_skip_jump", "boundary_direction"]


def _col(t, like):
    return t.view(-1, *([1] * (like.dim() - 1)))


def boundary_direction(bb, x_b: torch.Tensor, y: torch.Tensor, ids: torch.Tensor, delta: torch.Tensor,
                       u: torch.Tensor, counts: torch.Tensor, *, targeted: bool) -> torch.Tensor:
    """HopSkipJump's estimate of the direction of the gradient at the boundary points ``x_b``
    (Chen et al. 2020, eq. 9 and 16, with the baseline of eq. 16): for unit directions ``u_b``
    (``m x B x ...``, the first ``counts[j]`` of example ``j``),

        phi_b = +1 if clip(x_b + delta u_b) is adversarial, else -1
        v = sum_b (phi_b - mean phi) (x'_b - x_b) / delta,   returned normalised

    (``x'_b`` the clipped perturbed point; ``phi`` unbaselined when all ``phi_b`` agree). All directions
    of all examples in one call."""
    m, k = u.shape[:2]
    ones = [1] * (x_b.dim() - 1)
    use = torch.arange(k, device=x_b.device)[None, :] < counts[:, None]
    rows = use.nonzero(as_tuple=True)
    pert = (x_b[rows[0]] + _col(delta[rows[0]], x_b) * u[rows]).clamp(0, 1)
    owner = ids[rows[0]]
    phi = torch.zeros(m, k, device=x_b.device, dtype=x_b.dtype)
    phi[rows] = torch.where(adversarial(bb.label(pert, owner), y[owner], targeted), 1.0, -1.0).to(x_b.dtype)
    mean = phi.sum(1) / counts.clamp_min(1)
    agree = mean.abs() == 1
    phi = torch.where(use & ~agree[:, None], phi - mean[:, None], phi)
    rv = torch.zeros_like(u)
    rv[rows] = (pert - x_b[rows[0]]) / _col(delta[rows[0]], x_b)
    return unit((phi.view(m, k, *ones) * rv).sum(1))


def hop_skip_jump(bb, x: torch.Tensor, y: torch.Tensor, *, queries: int = 4000, targeted: bool = False,
                  gamma: float = 1.0, init_evals: int = 100, max_evals: int = 10_000, tries: int = 100,
                  starts: int = 10, x_init: torch.Tensor | None = None, seed: int | None = 0) -> torch.Tensor:
    """HopSkipJumpAttack, L2 (Chen et al. 2020, Algorithm 2), hard label: only ``bb.label`` is used.

    Start adversarial (uniform noise, ``_hard.initial_points``; targeted: ``x_init``
    or the closest input of the batch labelled as the target) and search the segment towards ``x``
    to the boundary (``_hard.blend_search``, to ``theta = gamma / d^{3/2}`` of the blend, §4.1); advlib
    keeps the closest of ``starts`` such starts (``_hard.closest_start``; the paper: one). Iteration
    ``t``: estimate the gradient direction at the boundary point with ``boundary_direction`` from
    ``min(init_evals * sqrt(t), max_evals)`` directions at radius
    ``delta = sqrt(d) * theta * dist`` (eq. 17; ``0.1`` at ``t = 1``); step ``x_b + eps * v`` with
    ``eps = dist / sqrt(t)``, halved until the point is adversarial (the geometric search, §4.2); then
    search the segment towards ``x`` to the boundary again.

    All examples together: one call of the black box for all directions of all examples, one per
    halving and one per step of the binary search. An example's estimate uses fewer directions when
    fewer fit (it stops with fewer than 50 left). Returns the best adversarial point per example (``x``
    where none was found)."""
    log = check_attack(bb, x, y, "hop_skip_jump", queries=queries)
    gamma = check_budget(gamma, "hop_skip_jump", name="gamma", positive=True)
    init_evals = check_count(init_evals, "hop_skip_jump", "init_evals", 1)
    max_evals = check_count(max_evals, "hop_skip_jump", "max_evals", 1)
    tries = check_count(tries, "hop_skip_jump", "tries", 1)
    starts = check_count(starts, "hop_skip_jump", "starts", 1)
    x_init = check_init(x_init, x, targeted, "hop_skip_jump")
    x, y = x.detach(), y.detach()
    n, dev, d = len(x), x.device, x[0].numel()
    theta = gamma / d ** 1.5
    labels, hit = first_look(bb, x, y, targeted)
    with reserve(log):
        gen = generator(seed, dev)
        x_b, found = closest_start(bb, x, y, targeted, gen=gen, tries=tries, starts=starts, tol_rel=theta,
                                   x_init=x_init, labels=labels, active=~hit)
        best = x.clone()
        ids = found.nonzero().squeeze(1)

        def to_boundary(ids, z):
            far = (z - x[ids]).flatten(1).norm(dim=1)
            return blend_search(bb, x, y, z, ids, targeted=targeted, tol=theta * far)

        best[ids] = x_b[ids]
        log.record(ids, best[ids], torch.ones_like(ids, dtype=torch.bool))
        t = torch.zeros(n, dtype=torch.long, device=dev)
        while True:
            room = log.remaining() - 40  # what the estimate may use; the rest for the two searches
            go = found & (room >= 10)
            if not go.any():
                break
            ids = go.nonzero().squeeze(1)
            t[ids] += 1
            dist = (x_b[ids] - x[ids]).flatten(1).norm(dim=1)
            delta = torch.where(t[ids] == 1, torch.full_like(dist, 0.1), math.sqrt(d) * theta * dist)
            evals = (init_evals * t[ids].double().sqrt()).long().clamp(max=max_evals)
            counts = torch.minimum(evals, room[ids])
            k = int(counts.max())
            u = unit(torch.randn(len(ids) * k, *x.shape[1:], device=dev, generator=gen)).view(len(ids), k, *x.shape[1:])
            v = boundary_direction(bb, x_b[ids], y, ids, delta, u, counts, targeted=targeted)
            # geometric search: halve eps until x_b + eps v is adversarial
            eps = dist / t[ids].double().sqrt().to(dist.dtype)
            step = x_b[ids].clone()
            todo = torch.ones(len(ids), dtype=torch.bool, device=dev)
            ok = torch.zeros_like(todo)
            for _ in range(30):
                r = todo & (log.remaining(ids) > 0)
                if not r.any():
                    break
                r = r.nonzero().squeeze(1)
                z = (x_b[ids[r]] + _col(eps[r], x) * v[r]).clamp(0, 1)
                a = adversarial(bb.label(z, ids[r]), y[ids[r]], targeted)
                step[r[a]], ok[r[a]], todo[r[a]] = z[a], True, False
                eps[r[~a]] /= 2
            moved = ids[ok]
            if len(moved):
                x_b[moved] = to_boundary(moved, step[ok])
                dist_new, dist_best = ((z - x[moved]).flatten(1).norm(dim=1) for z in (x_b[moved], best[moved]))
                closer = dist_new < dist_best
                b = moved[closer]
                best[b] = x_b[b]
                log.record(b, best[b], torch.ones_like(b, dtype=torch.bool))
    return confirm(bb, x, y, best, found, targeted=targeted)
