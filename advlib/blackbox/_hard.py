"""What the hard-label attacks share: the batched searches along a direction and towards the input.

A hard-label attack sees only ``blackbox.label(z, ids)``. OPT and Sign-OPT (Cheng et al., ICLR 2019
and ICLR 2020) recast the attack as the minimisation of a continuous function of a direction,

    g(theta) = min { lambda > 0 : x0 + lambda * theta / ||theta|| is adversarial }          (OPT, eq. 3)

(the point clipped to [0, 1], as the black box takes only images), found by a *fine-grained search*
(steps of 1% up or down from a guess until the decision flips) and a *binary search* to a tolerance
(OPT, Algorithm 1). Boundary and HopSkipJump need the other search: along the segment from the input
to an adversarial point, the last point that is still adversarial.

Everything here is batched: the rows of one call are (example, direction) pairs with their own
state, and every step of every search asks the black box once for all the rows still searching.
A row is charged to its example (``owner``); an example whose rows of a step would not fit its
remaining queries stops searching (its rows keep the best adversarial point they have).
"""
from __future__ import annotations

import math

import torch

from ._common import adversarial

__all__ = ["point", "affordable", "g_search", "initial_directions", "line_search", "blend_search",
           "initial_points", "unit"]

# row phases of g_search
_START, _DOWN, _UP, _BISECT, _DONE = range(5)


def unit(v: torch.Tensor) -> torch.Tensor:
    """Each row of ``v`` divided by its L2 norm."""
    return v / v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (v.dim() - 1)))


def _col(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.view(-1, *([1] * (like.dim() - 1)))


def _rows(v, k):
    return v[k] if isinstance(v, torch.Tensor) else v


def point(x0: torch.Tensor, theta: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """``clip(x0 + lam * theta, 0, 1)`` row by row (``theta`` of unit norm): the point g(theta) looks at."""
    return (x0 + _col(lam, x0) * theta).clamp(0, 1)


def affordable(log, owner: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """``active`` without the rows of the examples whose active rows all together would not fit their
    remaining queries (such an example sits this step out, all its rows at once)."""
    need = torch.bincount(owner[active], minlength=len(log))
    return active & (need <= log.remaining())[owner]


def g_search(bb, x: torch.Tensor, y: torch.Tensor, owner: torch.Tensor, theta: torch.Tensor, lam: torch.Tensor, *,
             targeted: bool, tol: float | torch.Tensor, bound: bool = False, lo: torch.Tensor | None = None,
             up: float = 1.01, down: float = 0.99, max_up: int = 30) -> torch.Tensor:
    """``g(theta_r)`` (module docstring) for each row ``r``: example ``owner[r]`` of the run, unit direction
    ``theta[r]``, first guess ``lam[r]``; all rows in one batch (OPT, Algorithm 1: fine-grained search
    then binary search to ``tol``, a number or one per row).

    * The fine-grained search queries ``lam``: if adversarial it steps down by ``down`` until it is not,
      else up by ``up`` until it is (at most ``max_up`` steps, else ``inf``); the binary search then
      halves the bracket until it is ``tol`` wide. Unlike the paper's fixed 1%, the steps double
      after each one (1%, 2%, 4%, ..., at most a factor 2): the same bracket near a good guess, a few
      queries instead of a hundred far from it.
    * ``bound``: only values below ``lam`` matter (a line search asks "is ``theta`` better than the
      current ``g``?"): a row not adversarial at ``lam`` returns ``inf`` after one query.
    * ``lo``: ``lam`` is already known to be adversarial and ``lo`` not (a bracket): bisection at once.

    Returns the upper ends of the brackets: each is a queried adversarial ``lambda`` (``inf`` where
    none was found, or where the example's queries ran out before one was).
    """
    log, m = bb.log, len(owner)
    x0, yo = x[owner], y[owner]
    lam = lam.clone().to(x.dtype)
    hi = torch.full_like(lam, math.inf)
    low = torch.zeros_like(lam)
    cand = lam.clone()
    phase = torch.full((m,), _START, dtype=torch.long, device=x.device)
    ups = torch.zeros(m, dtype=torch.long, device=x.device)
    if lo is not None:
        hi, low = lam.clone(), lo.clone().to(x.dtype)
        phase[:] = _BISECT
    while True:
        phase[(hi - low <= tol) & (phase == _BISECT)] = _DONE
        searching = phase != _DONE
        act = affordable(log, owner, searching)
        phase[searching & ~act] = _DONE  # out of queries: keep what the row has
        if not act.any():
            return hi
        r = act.nonzero().squeeze(1)
        ph = phase[r]
        c = torch.where(ph == _BISECT, (low[r] + hi[r]) / 2, cand[r])
        adv = adversarial(bb.label(point(x0[r], theta[r], c), owner[r]), yo[r], targeted)
        hi[r] = torch.where(adv, c, hi[r])
        low[r] = torch.where(adv, low[r], c)
        new = ph.clone()
        # start: adversarial -> step down; not -> step up (or give up under a bound)
        new[(ph == _START) & adv] = _DOWN
        new[(ph == _START) & ~adv] = _DONE if bound else _UP
        # down: still adversarial -> one more step down; not -> bracketed
        new[(ph == _DOWN) & ~adv] = _BISECT
        # up: adversarial -> bracketed; not -> one more step up (a limited number of them)
        new[(ph == _UP) & adv] = _BISECT
        new[(new == _UP) & (ups[r] >= max_up)] = _DONE
        phase[r] = new
        # the steps grow geometrically (1%, 2%, 4%, ... of lambda; at most half of it): a guess far
        # from g costs a few queries, not a hundred
        moves = ((new == _DOWN) | (new == _UP)) & ((ph == _DOWN) | (ph == _UP) | (ph == _START))
        grow = torch.where(moves, 2.0 ** ups[r].clamp(max=6).to(c.dtype), torch.ones_like(c))
        cand[r] = torch.where(new == _DOWN, c * (1 - (1 - down) * grow).clamp_min(0.5),
                              torch.where(new == _UP, c * (1 + (up - 1) * grow).clamp(max=2.0), cand[r]))
        ups[r] += moves


def initial_directions(bb, x: torch.Tensor, y: torch.Tensor, targeted: bool, *, gen: torch.Generator,
                       n_dirs: int = 100, tol: float = 1e-5, x_init: torch.Tensor | None = None,
                       labels: torch.Tensor | None = None, active: torch.Tensor | None = None,
                       extra: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The starting direction of OPT and Sign-OPT for each example: the best of several candidate
    directions by ``g`` (OPT, §3.1; untargeted: ``n_dirs`` random Gaussian perturbations ``x0 + u``).

    Targeted, the candidates are ``x_init - x0`` when ``x_init`` is given, else ``x_j - x0`` for the
    inputs ``x_j`` of the same batch that the black box labelled as the target (``labels``: the labels
    of the first look), and ``n_dirs`` uniform-noise images ``U[0,1]^d - x0``. ``extra = (points, mask)``
    adds one more candidate per example (advlib: the closest of :func:`closest_start`).

    Batched as a tournament: each candidate is queried once at its own length; all adversarial ones
    of an example are then queried at the middle of a shared bracket ``[lo, hi]`` (those still
    adversarial survive, and ``hi`` falls; if none is, ``lo`` rises) until one is left or the bracket
    is within 1%, then :func:`g_search` finishes the winner. Returns unit ``theta`` and ``g`` per
    example (``inf`` where no candidate was adversarial).
    """
    n, log, dev = len(x), bb.log, x.device
    active = torch.ones(n, dtype=torch.bool, device=dev) if active is None else active
    idx = active.nonzero().squeeze(1)
    owner, pts = [], []
    if not targeted:
        noise = torch.randn(len(idx), n_dirs, *x.shape[1:], device=dev, generator=gen)
        owner.append(idx.repeat_interleave(n_dirs))
        pts.append((x[idx, None] + noise).flatten(0, 1))
    elif x_init is not None:
        owner.append(idx)
        pts.append(x_init[idx])
    else:
        if labels is not None:
            i, j = (labels[None, :] == y[idx, None]).nonzero(as_tuple=True)
            owner.append(idx[i])
            pts.append(x[j])
        owner.append(idx.repeat_interleave(n_dirs))
        pts.append(torch.rand(len(idx) * n_dirs, *x.shape[1:], device=dev, generator=gen))
    if extra is not None:  # more candidates: known adversarial points (one per example where found)
        z, has = extra
        i = (has & active).nonzero().squeeze(1)
        owner.append(i)
        pts.append(z[i])
    owner, pts = torch.cat(owner), torch.cat(pts)
    order = torch.argsort(owner, stable=True)
    owner, pts = owner[order], pts[order]
    # what fits: the first remaining(e) candidates of each example
    rank = torch.arange(len(owner), device=dev) - torch.searchsorted(owner, owner)
    keep = rank < log.remaining(owner)
    owner, pts = owner[keep], pts[keep]
    delta = pts - x[owner]
    lam = delta.flatten(1).norm(dim=1)
    theta = unit(delta)
    adv = adversarial(bb.label(point(x[owner], theta, lam), owner), y[owner], targeted)
    owner, theta, lam = owner[adv], theta[adv], lam[adv]
    # the tournament
    hi = torch.full((n,), math.inf, device=dev, dtype=x.dtype).scatter_reduce(0, owner, lam, "amin")
    low = torch.zeros_like(hi)
    alive = lam <= hi[owner]  # at hi, the shortest candidate is adversarial
    first = True
    while True:
        count = torch.bincount(owner[alive], minlength=n)
        going = (count > 1) & (hi - low > 0.01 * hi) if not first else count > 0
        rows = affordable(log, owner, alive & going[owner])
        if not rows.any():
            break
        r = rows.nonzero().squeeze(1)
        c = hi[owner[r]] if first else (low + hi)[owner[r]] / 2
        a = adversarial(bb.label(point(x[owner[r]], theta[r], c), owner[r]), y[owner[r]], targeted)
        won = torch.bincount(owner[r][a], minlength=n) > 0
        asked = torch.bincount(owner[r], minlength=n) > 0
        c_e = torch.zeros_like(hi).index_put_((owner[r],), c)
        if first:
            alive[r] = a  # the rows not adversarial at hi are longer than the shortest one
        else:
            alive[r] = torch.where(won[owner[r]], a, alive[r])
            hi = torch.where(asked & won, c_e, hi)
            low = torch.where(asked & ~won, c_e, low)
        first = False
    # the winner of each example: its first row still alive
    g = torch.full((n,), math.inf, device=dev, dtype=x.dtype)
    best = torch.zeros_like(x)
    w = alive.nonzero().squeeze(1)
    if len(w):
        o = owner[w]
        firsts = torch.ones_like(o, dtype=torch.bool)
        firsts[1:] = o[1:] != o[:-1]
        w, o = w[firsts], o[firsts]
        g[o] = g_search(bb, x, y, o, theta[w], hi[o], targeted=targeted, tol=tol, lo=low[o])
        best[o] = theta[w]
    return best, g


def _held(bb, x, ids, theta, g):
    """Record in the query log that the attack now holds ``x0 + g theta`` (adversarial) for ``ids``."""
    if len(ids):
        bb.log.record(ids, point(x[ids], theta, g), torch.ones_like(ids, dtype=torch.bool))


def line_search(bb, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor, theta: torch.Tensor, g: torch.Tensor,
                grad: torch.Tensor, alpha: torch.Tensor, *, targeted: bool, tol: float | torch.Tensor, steps: int = 15
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The step ``theta - alpha * grad`` of OPT and Sign-OPT with their line search, for the examples
    ``ids`` at once (per-example ``alpha``): double ``alpha`` while ``g`` keeps falling; if the first step
    did not lower ``g``, quarter ``alpha`` until a step does (at most ``steps`` times each).
    Returns the new ``theta``, ``g`` (unchanged where no step helped) and ``alpha``."""
    best_t, best_g, alpha = theta.clone(), g.clone(), alpha.clone()
    go = torch.ones(len(ids), dtype=torch.bool, device=x.device)
    for _ in range(steps):  # doubling
        if not go.any():
            break
        k = go.nonzero().squeeze(1)
        new = unit(theta[k] - _col(alpha[k], theta) * grad[k])
        ng = g_search(bb, x, y, ids[k], new, best_g[k], targeted=targeted, tol=_rows(tol, k), bound=True)
        alpha[k] *= 2
        better = ng < best_g[k]
        best_t[k[better]], best_g[k[better]] = new[better], ng[better]
        _held(bb, x, ids[k[better]], new[better], ng[better])
        go[k[~better]] = False
    go = best_g >= g
    for _ in range(steps):  # quartering
        if not go.any():
            break
        k = go.nonzero().squeeze(1)
        alpha[k] *= 0.25
        new = unit(theta[k] - _col(alpha[k], theta) * grad[k])
        ng = g_search(bb, x, y, ids[k], new, g[k], targeted=targeted, tol=_rows(tol, k), bound=True)
        better = ng < g[k]
        best_t[k[better]], best_g[k[better]] = new[better], ng[better]
        _held(bb, x, ids[k[better]], new[better], ng[better])
        go[k[better]] = False
        if bb.log is not None:
            go &= bb.log.remaining(ids) > 0
    return best_t, best_g, alpha


def blend_search(bb, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, ids: torch.Tensor, *, targeted: bool,
                 tol: float) -> torch.Tensor:
    """For each example ``ids[k]``, the point of the segment from ``x[ids[k]]`` to the adversarial
    ``x_adv[k]`` closest to the input that is still adversarial, to ``tol`` in L2 (binary search on
    the blend ``x + t (x_adv - x)``; Brendel et al. 2018 §3, Chen et al. 2020 Algorithm 1)."""
    x0 = x[ids]
    d = (x_adv - x0).flatten(1).norm(dim=1)
    lo, hi = torch.zeros_like(d), torch.ones_like(d)
    while True:
        act = affordable(bb.log, ids, (hi - lo) * d > tol)
        if not act.any():
            break
        r = act.nonzero().squeeze(1)
        t = (lo[r] + hi[r]) / 2
        z = x0[r] + _col(t, x0) * (x_adv[r] - x0[r])
        a = adversarial(bb.label(z, ids[r]), y[ids[r]], targeted)
        hi[r] = torch.where(a, t, hi[r])
        lo[r] = torch.where(a, lo[r], t)
    return x0 + _col(hi, x0) * (x_adv - x0)


def initial_points(bb, x: torch.Tensor, y: torch.Tensor, targeted: bool, *, gen: torch.Generator, tries: int = 100,
                   x_init: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                   active: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A first adversarial point per example for Boundary and HopSkipJump (Brendel et al. 2018 §3.1):
    uniform noise ``U[0,1]^d``, redrawn (one draw per example still without one, all in one query) up
    to ``tries`` times. Targeted, ``x_init`` if given, else the closest input of the batch the black
    box labelled as the target (``labels``, from the first look), else noise of the target class.
    Returns the points (``x`` where none) and the mask of examples that have one."""
    n, dev = len(x), x.device
    out = x.clone()
    found = torch.zeros(n, dtype=torch.bool, device=dev)
    todo = torch.ones_like(found) if active is None else active.clone()
    if targeted and x_init is not None:
        idx = affordable(bb.log, torch.arange(n, device=dev), todo).nonzero().squeeze(1)
        a = adversarial(bb.label(x_init[idx], idx), y[idx], True)
        out[idx[a]], found[idx[a]] = x_init[idx[a]], True
        return out, found
    if targeted and labels is not None:
        match = (labels[None, :] == y[:, None]) & todo[:, None]
        dist = torch.cdist(x.flatten(1), x.flatten(1)).masked_fill(~match, math.inf)
        d, j = dist.min(1)
        have = d < math.inf
        out[have], found[have] = x[j[have]], True  # the black box gave these labels in the first look
        todo &= ~have
    for _ in range(tries):
        act = affordable(bb.log, torch.arange(n, device=dev), todo & ~found)
        if not act.any():
            break
        idx = act.nonzero().squeeze(1)
        z = torch.rand(len(idx), *x.shape[1:], device=dev, generator=gen)
        a = adversarial(bb.label(z, idx), y[idx], targeted)
        out[idx[a]], found[idx[a]] = z[a], True
    return out, found


def check_init(x_init, x: torch.Tensor, targeted: bool, who: str):
    """``x_init`` (starting points of the target class for a targeted attack): ``None`` or a tensor of
    the shape of ``x`` in [0, 1]."""
    if x_init is None:
        return None
    if not targeted:
        raise ValueError(f"{who}: x_init is the starting point of a targeted attack (an input of the target "
                         "class); an untargeted attack starts from random noise, leave x_init=None")
    if not isinstance(x_init, torch.Tensor) or x_init.shape != x.shape:
        raise ValueError(f"{who}: x_init must be a tensor of the shape of x {tuple(x.shape)}, "
                         f"got {tuple(getattr(x_init, 'shape', ()))}")
    if x_init.min() < 0 or x_init.max() > 1:
        raise ValueError(f"{who}: x_init must lie in [0, 1]")
    return x_init.detach().to(x.device, x.dtype)


class reserve:
    """``with reserve(log): ...`` keeps one query per example out of the run's allowance for
    :func:`confirm` at the end."""

    def __init__(self, log):
        self.log = log

    def __enter__(self):
        if self.log.allowance is not None:
            self.log.allowance -= 1
        return self.log

    def __exit__(self, *exc):
        if self.log.allowance is not None:
            self.log.allowance += 1
        return False


def confirm(bb, x: torch.Tensor, y: torch.Tensor, best: torch.Tensor, found: torch.Tensor, *, targeted: bool,
            push: float = 1e-3) -> torch.Tensor:
    """The points the attack returns: ``best`` moved ``push`` (relative) further from ``x``, where one
    more query confirms it is adversarial (else ``best`` itself).

    A binary search ends within its tolerance of the decision boundary, where the answer of the
    model can flip with the rounding of a different batch (margins ~1e-6); the pushed point keeps the
    decision whatever the batch. One query per example found (see :class:`reserve`)."""
    ids = affordable(bb.log, torch.arange(len(x), device=x.device), found).nonzero().squeeze(1)
    if not len(ids):
        return best
    z = (x[ids] + (1 + push) * (best[ids] - x[ids])).clamp(0, 1)
    a = adversarial(bb.label(z, ids), y[ids], targeted)
    out = best.clone()
    out[ids[a]] = z[a]
    bb.log.record(ids[a], z[a], a[a])
    return out



def closest_start(bb, x: torch.Tensor, y: torch.Tensor, targeted: bool, *, gen: torch.Generator, tries: int,
                  starts: int, tol_rel: float, x_init: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                  active: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``starts`` adversarial points per example (:func:`initial_points`, redrawn), each moved
    to the boundary of its segment towards ``x`` (:func:`blend_search`, to ``tol_rel`` of its length),
    all in one batch; returns the closest per example and the mask of examples that have one. With
    several starts the attack begins near the nearest of several decision regions instead of the
    first one the noise fell in (advlib's addition; the papers use one)."""
    n, dev = len(x), x.device
    cands, owners = [], []
    for _ in range(starts if (not targeted or x_init is None) else 1):
        z, f = initial_points(bb, x, y, targeted, gen=gen, tries=tries, x_init=x_init, labels=labels, active=active)
        i = f.nonzero().squeeze(1)
        cands.append(z[i])
        owners.append(i)
        if targeted and labels is not None:
            break  # the closest input of the target class is one fixed point
    owner = torch.cat(owners)
    out, found = x.clone(), torch.zeros(n, dtype=torch.bool, device=dev)
    if not len(owner):
        return out, found
    order = torch.argsort(owner, stable=True)
    owner, z = owner[order], torch.cat(cands)[order]
    far = (z - x[owner]).flatten(1).norm(dim=1)
    b = blend_search(bb, x, y, z, owner, targeted=targeted, tol=tol_rel * far)
    dist = (b - x[owner]).flatten(1).norm(dim=1)
    best = torch.full((n,), math.inf, device=dev, dtype=dist.dtype).scatter_reduce(0, owner, dist, "amin")
    win = dist == best[owner]
    out[owner[win]] = b[win]
    found[owner] = True
    return out, found
