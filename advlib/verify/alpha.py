"""α-CROWN: CROWN with the free choices of its relaxation optimised by gradient ascent on the bound.

CROWN (:mod:`advlib.verify.bounds`) bounds every unstable ReLU from below by a line of slope 0 or 1.
Any slope ``α`` in [0, 1] is sound, and the concretised bound of every row of ``C f`` is a
differentiable function of all of them. α-CROWN (Xu et al., "Fast and Complete", ICLR 2021, eq. 4-5)
maximises the lower bound over the slopes by projected gradient ascent, separately for every input
and every row. For tanh and sigmoid the free choice is where each tangent line touches the curve
(:func:`advlib.verify.relaxation`, ``alpha``).

Choices made here:

* **What is optimised.** One ``α`` per start of a walk (every intermediate layer whose bounds are walked
  back, and the output), per row of that walk, per activation it crosses and per side (lower or upper
  walk), as in auto_LiRPA / α,β-CROWN. With ``intermediate=True`` (the default) the intermediate bounds
  are optimised too. The objective is the sum of every walk's own: the output's lower bounds up (and its
  upper bounds down), and the width ``u - l`` of each intermediate walk's bounds down. A tighter
  interval gives a tighter relaxation, and for the first hidden layer walked back the optimum is the
  triangle LP's bound (the problem is concave there). The output's objective alone would stall them: its
  gradient reaches an intermediate bound only where that bound beats CROWN's, which it is intersected
  with. With ``intermediate=False`` the intermediate bounds stay CROWN's and only the last walk moves.
* **Projected steps.** ``α`` is the optimised tensor itself, put back into [0, 1] after every Adam step,
  with no clamp in the bound's computation. CROWN's start is at the ends of the interval (slope 0 or 1),
  where torch >= 2.14 gives ``clamp`` a zero gradient: a parameter read through a clamp from there never
  moves, and α-CROWN silently returns CROWN (the pitfall of auto_LiRPA on this torch).
* **Never looser than CROWN.** Optimised intermediate bounds are intersected with CROWN's, and every row
  keeps the best value of any iterate (each iterate is a sound bound, so their best is one too).
"""
from __future__ import annotations

import torch
from torch import nn

from .bounds import (
    _ACTIVATIONS,
    Bounds,
    _backward,
    _output_rows,
    _propagate_chunk,
    _rows,
    _tighten,
    initial_alpha,
)

__all__ = ["alpha_crown", "projected_step", "ALPHA_STEPS", "ALPHA_LR"]

#: Adam steps and step size of :func:`alpha_crown` (``bounds(..., method="alpha-crown")``)
ALPHA_STEPS, ALPHA_LR = 20, 0.5


def projected_step(opt: torch.optim.Optimizer, loss: torch.Tensor, boxes) -> None:
    """One step of projected gradient descent on ``loss`` with ``opt``, then each tensor of ``boxes``
    (``(tensor, lo, hi)``, ``hi`` None for no upper end) put back into its interval in place, outside the
    graph: its gradient is the true one at the ends too (a clamp inside the graph gives 0 there)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    with torch.no_grad():
        for t, lo, hi in boxes:
            t.clamp_(lo, hi)


def _parameters(nodes, pre, starts, n):
    """CROWN's choices as leaf tensors: ``params[start][act] = (alpha of the lower walk, of the upper)``
    for every walk start (``starts``: node -> (rows, both sides?)) and every activation before it."""
    params, leaves = {}, []

    def leaf(t, m, shape):
        t = t.expand(n, m, *shape).clone().requires_grad_(True)
        leaves.append(t)
        return t

    for start, (m, both) in starts.items():
        params[start] = {}
        for i, nd in enumerate(nodes[:start]):
            if not isinstance(nd.op, _ACTIVATIONS):
                continue
            l, u = pre[nd.inputs[0]]
            sides = []
            for _ in range(2 if both else 1):
                init = initial_alpha(nd.op, l[:, None], u[:, None])
                sides.append(leaf(init, m, nd.shape) if isinstance(init, torch.Tensor) else
                             tuple(leaf(t, m, nd.shape) for t in init))
            params[start][i] = (sides[0], sides[-1] if both else None)
    return params, leaves


def _pass(nodes, x0, eps, norm, x_min, x_max, A, crown_pre, rows, params, upper):
    """One α-CROWN pass: each optimised intermediate layer by its own walk with its own ``α``
    (intersected with CROWN's bounds), then the output's walk. Returns the pre-activation bounds, the
    summed width of the intermediate walks' own bounds (before the intersection: their objective), and
    the output's lower and upper bounds (upper None when ``upper`` is False)."""
    pre_of, width = {}, 0.0
    for j, (l0, u0) in crown_pre.items():  # in forward order: a walk only needs the layers before it
        if j in params:
            lo, hi = _backward(nodes, j, _rows(rows[j], nodes[j].shape, l0), pre_of, "crown", x0, eps, norm,
                               x_min, x_max, alpha=params[j])
            width = width + (hi - lo).sum()
            pre_of[j] = _tighten(l0, u0, rows[j], lo, hi)
        else:
            pre_of[j] = (l0, u0)
    last = len(nodes) - 1
    return pre_of, width, _backward(nodes, last, A, pre_of, "crown", x0, eps, norm, x_min, x_max,
                                    alpha=params[last], upper=upper)


def _alpha_chunk(nodes, x0, eps, norm, C, x_min, x_max, steps=ALPHA_STEPS, lr=ALPHA_LR, intermediate=True,
                 upper=True, certify=False, stop=False) -> Bounds:
    """α-CROWN on one piece of the batch. ``certify``: only the lower bounds matter and only their sign
    (the rows are margins): inputs that CROWN certifies or whose clean margins are not all positive are
    left at CROWN's bound, and the ascent stops once every input is certified (``stop``)."""
    x_min, x_max = (torch.as_tensor(t, dtype=x0.dtype, device=x0.device).expand_as(x0) for t in (x_min, x_max))
    rows: dict = {}
    with torch.no_grad():
        crown = _propagate_chunk(nodes, x0, eps, norm, "crown", C, None, x_min, x_max, rows)
    acts = [nd for nd in nodes if isinstance(nd.op, _ACTIVATIONS)]
    crown_pre = dict(zip((nd.inputs[0] for nd in acts), crown.pre))
    if certify:  # the inputs worth the ascent: not certified by CROWN, every clean margin positive
        with torch.no_grad():
            todo = ~crown.certified & _clean_rows(nodes, x0, C).gt(0).all(1)
        if not todo.any() or steps == 0:
            return crown
        keep = todo.nonzero().squeeze(1)
        sub = _alpha_chunk(nodes, x0[keep], eps[keep], norm, C[keep], x_min[keep], x_max[keep], steps, lr,
                           intermediate, upper=False, stop=True)
        lower = crown.lower.clone()
        lower[keep] = sub.lower
        pre = [(l.clone(), u.clone()) for l, u in crown.pre]
        for (l, u), (sl, su) in zip(pre, sub.pre):
            l[keep], u[keep] = sl, su
        return Bounds(lower, crown.upper, pre)
    last = len(nodes) - 1
    A = _output_rows(nodes, x0, C)
    starts = {j: (idx.shape[1], True) for j, idx in rows.items() if idx is not None} if intermediate else {}
    starts[last] = (A.shape[1], upper)
    params, leaves = _parameters(nodes, crown_pre, starts, len(x0))
    if not leaves:  # no activation: CROWN's bound is exact already
        return crown
    best_lo, best_hi = crown.lower, crown.upper
    best_pre = dict(crown_pre)
    opt = torch.optim.Adam(leaves, lr=lr)
    for step in range(steps + 1):
        with torch.enable_grad():
            pre_of, width, (lo, hi) = _pass(nodes, x0, eps, norm, x_min, x_max, A, crown_pre, rows, params, upper)
            loss = width + (hi.sum() - lo.sum() if upper else -lo.sum())
        with torch.no_grad():
            best_lo = torch.maximum(best_lo, lo)
            if upper:
                best_hi = torch.minimum(best_hi, hi)
            best_pre = {j: (torch.maximum(best_pre[j][0], l), torch.minimum(best_pre[j][1], u))
                        for j, (l, u) in pre_of.items()}
        if step == steps or (stop and (best_lo > 0).all()):
            break
        projected_step(opt, loss, [(t, 0, 1) for t in leaves])
    return Bounds(best_lo.detach(), best_hi.detach(), [tuple(t.detach() for t in best_pre[nd.inputs[0]])
                                                       for nd in acts])


def _clean_rows(nodes, x0, C):
    """``C f(x0)``, the network run through its traced nodes: no lower bound can exceed these rows."""
    out = [x0]
    for nd in nodes[1:]:
        out.append(out[nd.inputs[0]] + out[nd.inputs[1]] if nd.op == "add" else nd.op(out[nd.inputs[0]]))
    return (C.flatten(2) @ out[-1].flatten(1)[:, :, None]).squeeze(2)


def alpha_crown(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, eps, norm="linf",
                C: torch.Tensor | None = None, steps: int = ALPHA_STEPS, lr: float = ALPHA_LR,
                intermediate: bool = True, x_min=0.0, x_max=1.0) -> Bounds:
    """α-CROWN bounds (Xu et al. 2021, eq. 4-5) of ``C f(x')`` on the perturbation set, as :class:`Bounds`:
    CROWN's relaxation optimised by ``steps`` projected Adam steps of size ``lr`` on the sum of the lower
    bounds minus the sum of the upper ones, per input and per row; ``intermediate`` optimises the
    intermediate layers' bounds too (see the module's notes). Never looser than CROWN, and sound for every
    choice of the parameters. Arguments as :func:`advlib.verify.propagate`; ``bounds(...,
    method="alpha-crown")`` is this with the defaults."""
    from .bounds import _checked, _run, trace

    eps, norm, C, _ = _checked(model, x, y, eps, norm, "alpha-crown", C, x_min, x_max, "alpha_crown")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"alpha_crown: steps must be a non-negative integer, got {steps!r}")
    if not lr > 0:
        raise ValueError(f"alpha_crown: lr must be positive, got {lr!r}")
    return _run(trace(model, tuple(x.shape[1:])), x, eps, norm, "alpha-crown", C, None, x_min, x_max,
                options=dict(steps=steps, lr=lr, intermediate=intermediate))
