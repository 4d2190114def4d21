"""The targeted Fast Adaptive Boundary attack, FAB-T (Croce & Hein, ICML 2020, "Minimally distorted
adversarial examples with a fast adaptive boundary attack", Algorithms 1 and 2).

FAB looks for the adversarial point *closest* to ``x_orig``. At the current iterate ``x`` it
linearises the decision boundary between the true class ``y`` and the target ``t``,

    g(z) = f_t(z) - f_y(z)  ~  g(x) + w.(z - x) = 0,     w = grad g(x),

projects both ``x`` and ``x_orig`` onto that hyperplane intersected with the box [0, 1]
(:func:`project_boundary`), and moves to a convex combination of the two projections, overshooting
by ``eta = 1.05``::

    d   = proj(x)      - x,        d0 = proj(x_orig) - x_orig,
    a   = min(||d|| / (||d|| + ||d0||), alpha_max),                 alpha_max = 0.1
    x  <- clip_[0,1]( (1 - a)(x + eta d) + a (x_orig + eta d0) ).

The weight ``a`` on the original keeps the iterate near ``x_orig``. When the new iterate is
adversarial it is kept if it is the closest so far, and the search steps back towards the
original, ``x <- (1 - beta) x_orig + beta x`` with ``beta = 0.9``, to look for a closer one.

The projection (derived here; the paper solves it with its own algorithm). For ``d = z - x`` the
problem is ``min ||d||_p`` s.t. ``w.d = c`` (``c = -(w.x + b)``) and ``-x <= d <= 1 - x``. Flip
the signs so that ``c >= 0``; coordinate ``i`` moves in the direction ``sign(w_i)`` and can move at
most ``room_i`` (``1 - x_i`` upwards, ``x_i`` downwards). Both norms give the same form,

    d_i(s) = sign(w_i) min(s a_i, room_i),      h(s) = w.d(s) = sum_i |w_i| min(s a_i, room_i),

with ``a_i = 1`` for L-inf (``s`` is the norm: a coordinate moves by ``s`` unless the box stops it)
and ``a_i = |w_i|`` for L2 (``s`` is the Lagrange multiplier: the KKT conditions of the convex
problem give ``d = clip_box(s w)``). ``h`` is continuous, non-decreasing and piecewise linear in
``s`` with breakpoints ``s_i = room_i / a_i``, and concave (a sum of minima of lines), so the
smallest ``s`` with ``h(s) = c`` is found exactly, for all examples at once, by Newton's method on
``h`` from ``s = 0`` (:func:`project_boundary`; a bisection on ``s`` would converge too, only
slower). No smaller norm is feasible (for L-inf: a smaller ``s`` bounds ``w.d`` by ``h(s) < c``;
for L2 it is the KKT point of a convex problem). When even ``h(max s_i) < c`` the hyperplane misses
the box; the result is then the box corner that gets closest to it (``s = max s_i``).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..threat import check_budget, check_count, check_inputs, chunks, lp_norm, parse_norm
from .apgd import _generator, top_targets

__all__ = ["fab_targeted", "project_boundary"]


def project_boundary(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, norm: str = "linf") -> torch.Tensor:
    """The closest point to ``x`` (L-inf or L2) on the hyperplane ``w.z + b = 0`` within the box
    ``[0, 1]``, per example (``x``, ``w``: ``N x ...``; ``b``: ``N``); where the hyperplane misses
    the box, the box point closest to it in the direction of ``w``. Exact (up to rounding): Newton's
    method on the concave piecewise-linear ``h`` of the module docstring, started at ``s = 0``. Each
    step solves the line of ``h``'s current segment, ``G + s K = c`` (``G``: the saturated
    coordinates' ``w.d``, ``K``: the free ones' slope); the line lies above ``h`` (concavity), so the
    iterates rise to the smallest solution without passing it, and stop, exact, once a step crosses
    no breakpoint: at most one step per coordinate, two or three in practice."""
    norm = parse_norm(norm, "project_boundary", ("linf", "l2"))
    shape = x.shape
    xf, wf = x.flatten(1), w.flatten(1).to(x.dtype)
    c = -((wf * xf).sum(1) + b.to(x.dtype))
    wf = wf * c.sign().masked_fill(c == 0, 1)[:, None]  # flip the signs so that w.d = |c| is wanted
    c = c.abs()
    aw = wf.abs()
    room = torch.where(wf > 0, 1 - xf, xf).clamp_min(0)  # how far each coordinate can move along sign(w)
    rate = aw if norm == "l2" else torch.ones_like(aw)
    sat = aw * room  # w.d of a saturated coordinate
    slope = aw * rate  # dh/ds of a free one
    # breakpoints (a coordinate with w_i = 0 adds nothing: put it at 0 with the saturated ones)
    s_i = room / rate.clamp_min(1e-30) * aw.sign()
    sat_all = sat.sum(1)
    s = torch.zeros_like(c)
    for _ in range(xf.shape[1] + 1):
        free = (s_i - s[:, None]).sign().clamp_min(0)  # 1 where s_i > s (float masks: faster than bool here)
        k = (slope * free).sum(1)
        g = sat_all - (sat * free).sum(1)
        s_next = torch.where(k > 0, (c - g) / k.clamp_min(1e-30), s)  # k = 0: everything saturated
        crossed = ((s_next[:, None] - s_i) * free).amax() > 0  # did a free coordinate saturate on the way?
        s = s_next
        if not crossed:
            break
    d = wf.sign() * torch.minimum(s[:, None] * rate, room)
    return (xf + d).clamp(0, 1).view(shape)


def _norm(v: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example norm (``abs().amax`` is much faster than ``vector_norm(ord=inf)`` on the CPU)."""
    flat = v.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def _linearise(model, x, y, t):
    """``g = f_t - f_y`` at ``x`` and its gradient (one forward and one backward pass)."""
    xg = x.detach().requires_grad_(True)
    z = model(xg)
    g = z.gather(1, t[:, None]).squeeze(1) - z.gather(1, y[:, None]).squeeze(1)
    (w,) = torch.autograd.grad(g.sum(), xg)
    return g.detach(), w


def _start(x0, radius, norm, gen):
    shape = (len(x0), *([1] * (x0.dim() - 1)))
    u = torch.rand(x0.shape, generator=gen, device=x0.device, dtype=x0.dtype) * 2 - 1
    if norm == "l2":
        u = torch.randn(x0.shape, generator=gen, device=x0.device, dtype=x0.dtype)
        u = u / lp_norm(u, "l2").clamp_min(1e-12).view(shape)
    return (x0 + radius * u).clamp(0, 1)


def _run(model, x0, y, t, x_start, eps, norm, steps, eta, alpha_max, beta):
    """One FAB run towards the targets ``t``: per example, the closest adversarial iterate found and
    its distance (``inf`` if none). With ``eps`` an example stops once it has one within ``eps``."""
    n, dev = len(x0), x0.device
    view = (-1, *([1] * (x0.dim() - 1)))
    best_x, best_d = x0.clone(), torch.full((n,), math.inf, device=dev, dtype=x0.dtype)
    ids, xo, yo, to, x = torch.arange(n, device=dev), x0, y, t, x_start
    for _ in range(steps):
        g, w = _linearise(model, x, yo, to)
        b = g - (w * x).flatten(1).sum(1)
        both = torch.cat([x, xo])  # the iterate and the original onto the same hyperplane, in one call
        d, d0 = (project_boundary(both, torch.cat([w, w]), torch.cat([b, b]), norm) - both).chunk(2)
        nd, nd0 = _norm(d, norm), _norm(d0, norm)
        a = torch.where(nd + nd0 > 0, nd / (nd + nd0).clamp_min(1e-30), torch.zeros_like(nd)).clamp(max=alpha_max)
        x = ((1 - a.view(view)) * (x + eta * d) + a.view(view) * (xo + eta * d0)).clamp(0, 1)
        with torch.no_grad():
            adv = model(x).argmax(1) != yo
        dist = _norm(x - xo, norm)
        closer = adv & (dist < best_d[ids])
        best_x[ids[closer]], best_d[ids[closer]] = x[closer], dist[closer]
        x = torch.where(adv.view(view), (1 - beta) * xo + beta * x, x)
        if eps is not None:  # an example with an adversarial point inside the ball is done
            keep = best_d[ids] > eps
            if not keep.all():
                ids, xo, yo, to, x = ids[keep], xo[keep], yo[keep], to[keep], x[keep]
                if len(ids) == 0:
                    break
    return best_x, best_d


def fab_targeted(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps, norm: str = "linf",
                 steps: int = 100, n_targets: int = 9, restarts: int = 1, seed: int | None = 0,
                 eta: float = 1.05, alpha_max: float = 0.1, beta: float = 0.9) -> torch.Tensor:
    """FAB-T (Croce & Hein, ICML 2020, Algorithm 1 with the targeted boundary of Algorithm 2 /
    AutoAttack's FAB-T): for each of the ``n_targets`` classes with the highest clean logits after
    the true one, ``steps`` FAB iterations (one forward and one backward pass each, all examples in
    one batch) on the linearised boundary ``f_t - f_y = 0``; ``eta`` (overshoot), ``alpha_max``
    (largest weight of the original) and ``beta`` (backward step after a success) as in the paper.

    ``eps`` (a number): a success is an adversarial point within distance ``eps`` (L-inf or L2);
    each target runs only on the examples without one yet, and an example stops at its first. The
    result is that point, or ``x`` itself where none was found, so it always lies in the ball and
    [0, 1]. ``eps=None``: minimal distortion, every target on every example; the result is the
    closest adversarial point found (``x`` itself where none). Restart 0 starts at ``x``; further
    ``restarts`` start at random points at distance up to ``eps / 2`` (drawn with ``seed``), in the
    same batch.
    """
    classes = check_inputs(model, x, y, who="fab_targeted", steps=steps, norm=norm)
    norm = parse_norm(norm, "fab_targeted", ("linf", "l2"))
    if eps is not None:
        eps = check_budget(eps, "fab_targeted", positive=True)
    steps = check_count(steps, "fab_targeted", "steps", 1)
    n_targets = check_count(n_targets, "fab_targeted", "n_targets", 1)
    restarts = check_count(restarts, "fab_targeted", "restarts", 1)
    if n_targets > classes - 1:
        raise ValueError(f"fab_targeted: n_targets={n_targets}, but a model with {classes} classes has only "
                         f"{classes - 1} other classes to target")
    if restarts > 1 and eps is None:
        raise ValueError("fab_targeted: random restarts are drawn within eps / 2; give eps or use restarts=1")
    for name, v, hi in (("eta", eta, math.inf), ("alpha_max", alpha_max, 1.0), ("beta", beta, 1.0)):
        if not 0 < float(v) <= hi:
            raise ValueError(f"fab_targeted: {name} must lie in (0, {hi}], got {v!r}")
    x, y = x.detach(), y.detach()
    gen = _generator(seed, x.device)
    targets = top_targets(model, x, y, n_targets)
    best_x, best_d = x.clone(), torch.full((len(x),), math.inf, device=x.device, dtype=x.dtype)
    for k in range(n_targets):
        rows = (best_d > eps).nonzero().squeeze(1) if eps is not None else torch.arange(len(x), device=x.device)
        for s in chunks(len(rows), restarts * x[0].numel() * 16):
            r = rows[s]
            x0 = x[r].repeat(restarts, *([1] * (x.dim() - 1)))
            start = x0.clone()
            if restarts > 1:
                start[len(r):] = _start(x0[len(r):], eps / 2, norm, gen)
            bx, bd = _run(model, x0, y[r].repeat(restarts), targets[r, k].repeat(restarts), start, eps, norm,
                          steps, eta, alpha_max, beta)
            bx, bd = bx.view(restarts, len(r), *x.shape[1:]), bd.view(restarts, len(r))
            pick = bd.argmin(0)
            ar = torch.arange(len(r), device=x.device)
            bx, bd = bx[pick, ar], bd[pick, ar]
            closer = bd < best_d[r]
            best_x[r[closer]], best_d[r[closer]] = bx[closer], bd[closer]
    if eps is not None:
        best_x = torch.where((best_d <= eps).view(-1, *([1] * (x.dim() - 1))), best_x, x)
    return best_x.detach()

