"""Exact and LP-relaxed verification of tiny ReLU networks: the oracles the bound engine is tested against.

Both functions answer "how low can ``c . f(x)`` go for every input ``x`` in the perturbation set?", where
``f`` is a feed-forward ReLU network and ``c`` a vector of logit weights (``e_y - e_j`` gives a margin):

* :func:`lp_bound` solves the **triangle** (Ehlers 2017, "planet") linear relaxation, the tightest convex
  relaxation of a single ReLU given its pre-activation bounds ``l <= zhat <= u``. It is the LP that Wong &
  Kolter (2018) bound through its dual, and that Salman et al. (2019, "A convex relaxation barrier") show
  every layer-wise linear bound (IBP, Fast-Lin, CROWN, DeepPoly) is at most as tight as, given the same
  intermediate bounds. Hence, for bounds computed from the same ``pre``:
  ``fastlin <= lp`` and ``crown <= lp``; and ``lp <= exact`` whenever ``pre`` is valid.
* :func:`milp_bound` solves the **exact** problem as a mixed-integer LP with one binary per unstable ReLU
  (the big-M encoding of Cheng et al. 2017, Lomuscio & Maganti 2017, Tjeng, Xiao & Tedrake 2019). Its big-M
  constants only need *valid* pre-activation bounds (interval arithmetic is enough); tight bounds only make
  the solver faster. It also returns the minimising input, so the answer can be replayed through the model.

:func:`lp_all_bounds` gives the tightest layer-wise pre-activation bounds of the triangle relaxation, and
:func:`interval_bounds` the loosest (interval arithmetic).

All of this is meant for networks of a handful of neurons (the MILP's time grows exponentially with the
number of unstable ReLUs). The functions handle ``nn.Sequential`` stacks of ReLUs and affine layers
(:class:`advlib.models.Normalize`, ``nn.Flatten``, ``nn.Linear``, ``nn.Conv2d``, eval-mode batch norm,
average pooling, ``nn.Identity`` / ``nn.Dropout``), which are rewritten as
``x -> W_L relu(... relu(W_1 x + b_1) ...) + b_L`` in float64 (:func:`affine_relu_form`).

Input sets (``x0`` the clean input, every ``x`` also kept in ``[x_min, x_max]``):

* ``norm="linf"``: ``|x - x0|_inf <= eps``; intersected with the box it is again a box (variable bounds);
* ``norm="l1"``: ``|x - x0|_1 <= eps``, LP-representable with auxiliary variables
  ``t >= x - x0``, ``t >= x0 - x``, ``sum(t) <= eps``;
* ``norm="l2"`` is a second-order cone, not a polyhedron: both functions raise ``ValueError``.

Conventions, as in :func:`advlib.verify.propagate` (the data positional, everything else by keyword):

* the single-sample functions ``lp_bound(model, x0, c, *, eps, norm="linf", pre=None, ...)`` and
  ``milp_bound(model, x0, c, *, eps, norm="linf", pre=None, ...)`` take ``x0`` *without* a batch
  dimension (e.g. ``C x H x W``), a vector ``c`` of length K (the number of logits) and pre-activation
  bounds ``pre`` as a list, one ``(l, u)`` pair per ReLU in forward order, each holding that ReLU's input
  bounds for this one sample (any shape with the right number of elements, e.g. ``(h,)`` or ``(1, h)``);
* the batched ``lp_bounds(model, x, y=None, *, eps, norm="linf", C=None, pre=None, ...)`` and
  :func:`milp_bounds` take a batch ``x``, the labels ``y`` (for the margins ``z_y - z_j``) or an
  ``N x M x K`` matrix ``C``, and ``pre`` in the engine's format (each ``l`` / ``u`` shaped ``N x ...``),
  and return ``N x M`` tensors like ``propagate(...).lower``.
"""
from __future__ import annotations

import copy
import math
from typing import NamedTuple

import numpy as np
import torch
from scipy.optimize import Bounds, LinearConstraint, linprog, milp
from torch import nn

from ..models import Normalize
from ..threat import check_batch, check_budget, check_labels, dual_order, parse_norm
from .bounds import margin_matrix

__all__ = ["affine_relu_form", "interval_bounds", "lp_all_bounds", "lp_bound", "milp_bound", "lp_bounds", "milp_bounds",
           "MILPResult", "random_relu_mlp"]

# Layers that are affine maps (in eval mode); their matrix is read off by evaluating them on a basis.
_AFFINE = (Normalize, nn.Flatten, nn.Unflatten, nn.Linear, nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d,
           nn.AvgPool1d, nn.AvgPool2d, nn.Identity, nn.Dropout)
_NONLINEAR = (nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.GELU, nn.Softplus, nn.MaxPool1d, nn.MaxPool2d)


# ----------------------------------------------------------------------------------------------------------
# The network as a list of affine maps with ReLUs in between
# ----------------------------------------------------------------------------------------------------------
def _modules(model: nn.Module):
    """The leaf layers of a (possibly nested) ``nn.Sequential``, in order."""
    if isinstance(model, nn.Sequential):
        for m in model:
            yield from _modules(m)
    else:
        yield model


def _affine_matrix(layer: nn.Module, shape: tuple[int, ...]):
    """``(W, b, out_shape)`` of an affine layer on inputs of ``shape`` (flattened): ``W = f(e_i) - f(0)``."""
    n = math.prod(shape)
    layer = copy.deepcopy(layer).double().eval()
    with torch.no_grad():
        b = layer(torch.zeros(1, *shape, dtype=torch.float64))
        out = layer(torch.eye(n, dtype=torch.float64).reshape(n, *shape))
    out_shape = tuple(out.shape[1:])
    b = b.reshape(-1)
    return (out.reshape(n, -1) - b).T.numpy(), b.numpy(), out_shape


def affine_relu_form(model: nn.Module, in_shape) -> list[tuple[np.ndarray, np.ndarray]]:
    """Rewrite a Sequential ReLU network as ``[(W_1, b_1), ..., (W_L, b_L)]`` (float64 numpy).

    The network computes ``f(x) = W_L relu(... relu(W_1 x + b_1) ...) + b_L`` on the flattened input:
    consecutive affine layers are multiplied together, so ``len(result) == number of ReLUs + 1`` and
    ``W_k x + b_k`` is the input of the k-th ReLU (the pre-activation that ``pre[k-1]`` bounds).
    """
    shape = tuple(int(s) for s in in_shape)
    width = math.prod(shape)
    W, b = np.eye(width), np.zeros(width)
    layers = []
    for m in _modules(model):
        if isinstance(m, nn.ReLU):
            layers.append((W, b))
            W, b = np.eye(W.shape[0]), np.zeros(W.shape[0])
        elif isinstance(m, _AFFINE):
            Wm, bm, shape = _affine_matrix(m, shape)
            W, b = Wm @ W, Wm @ b + bm
        elif isinstance(m, _NONLINEAR):
            raise NotImplementedError(f"the exact oracles handle ReLU networks only, got {m!r}")
        else:
            raise NotImplementedError(f"unsupported layer {m!r}: the oracles know affine layers and ReLU")
    layers.append((W, b))
    return layers


def _layers(model, shape) -> list[tuple[np.ndarray, np.ndarray]]:
    """``model`` is an ``nn.Module`` or already its :func:`affine_relu_form` (a list of ``(W, b)``)."""
    return affine_relu_form(model, shape) if isinstance(model, nn.Module) else model


def _forward(layers, x: np.ndarray) -> np.ndarray:
    """Evaluate the affine/ReLU form on a flattened input (float64)."""
    for W, b in layers[:-1]:
        x = np.maximum(W @ x + b, 0.0)
    W, b = layers[-1]
    return W @ x + b


# ----------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------
def _np(t) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().double().numpy()
    return np.asarray(t, dtype=np.float64)


def _box(x0: np.ndarray, eps: float, x_min, x_max) -> tuple[np.ndarray, np.ndarray]:
    """``[x0 - eps, x0 + eps] ∩ [x_min, x_max]`` (it contains the L-inf, L1 and L2 balls)."""
    lo = -np.inf if x_min is None else np.broadcast_to(_np(x_min), x0.shape)
    hi = np.inf if x_max is None else np.broadcast_to(_np(x_max), x0.shape)
    lo, hi = np.maximum(x0 - eps, lo).ravel(), np.minimum(x0 + eps, hi).ravel()
    if (lo > hi).any():
        raise ValueError("empty input set: x0 is farther than eps from the box [x_min, x_max]")
    return lo, hi


def _not_lp(norm: str):
    if norm == "l2":
        raise ValueError("the L2 ball is a second-order cone, not a polyhedron, so it is not LP/MILP-"
                         "representable; use norm='linf' or 'l1' (or an SOCP / MIQCP solver)")


def interval_bounds(model: nn.Module, x0, *, eps: float, norm="linf", x_min=0.0, x_max=1.0):
    """Interval arithmetic (IBP, Gowal et al. 2018) pre-activation bounds of every ReLU for one input.

    The input interval is the box ``[x0 - eps, x0 + eps] ∩ [x_min, x_max]``, which contains the L1 and L2
    balls too. For those two norms the first layer's bounds are also intersected with Hölder's bound
    ``w . x0 -+ eps ||w||_q`` of the ball alone (``q`` the dual norm): both are valid, and for the L1 ball
    in particular the box alone is very loose. ``model`` may also be given as its :func:`affine_relu_form`.
    Returns ``[(l, u), ...]`` in forward order, 1-D float64 tensors: the ``pre`` of :func:`lp_bound` and
    :func:`milp_bound`.
    """
    norm, eps = parse_norm(norm, "interval_bounds"), check_budget(eps, "interval_bounds")
    x0 = _np(x0)
    lo, hi = _box(x0, eps, x_min, x_max)
    pre = []
    for k, (W, b) in enumerate(_layers(model, x0.shape)[:-1]):
        Wp, Wn = np.clip(W, 0, None), np.clip(W, None, 0)
        l, u = Wp @ lo + Wn @ hi + b, Wp @ hi + Wn @ lo + b
        if k == 0 and norm != "linf":
            centre, radius = W @ x0.ravel() + b, eps * np.linalg.norm(W, ord=dual_order(norm), axis=1)
            l, u = np.maximum(l, centre - radius), np.minimum(u, centre + radius)
        pre.append((torch.from_numpy(l), torch.from_numpy(u)))
        lo, hi = np.maximum(l, 0.0), np.maximum(u, 0.0)
    return pre


# ----------------------------------------------------------------------------------------------------------
# A small LP / MILP builder
# ----------------------------------------------------------------------------------------------------------
class _Program:
    """A (mixed-integer) linear program under construction: bounded variables and rows ``lo <= A v <= hi``."""

    def __init__(self):
        self.n = 0
        self.lb, self.ub, self.integer, self.rows = [], [], [], []

    def variables(self, lb, ub, integer: bool = False) -> np.ndarray:
        """Add a block of variables with bounds ``lb <= v <= ub``; returns their indices."""
        lb, ub = np.broadcast_arrays(np.asarray(lb, dtype=np.float64), np.asarray(ub, dtype=np.float64))
        idx = np.arange(self.n, self.n + lb.size)
        self.n += lb.size
        self.lb.append(lb.ravel())
        self.ub.append(ub.ravel())
        self.integer.append(np.full(lb.size, integer))
        return idx

    def constrain(self, terms, lo, hi):
        """Add rows ``lo <= sum_i M_i @ v[idx_i] <= hi`` for ``terms = [(idx_i, M_i), ...]``."""
        m = terms[0][1].shape[0]
        if m:
            self.rows.append((terms, np.broadcast_to(np.asarray(lo, float), (m,)),
                              np.broadcast_to(np.asarray(hi, float), (m,))))

    def vector(self, terms) -> np.ndarray:
        """The dense coefficient vector of ``sum_i w_i . v[idx_i]`` for ``terms = [(idx_i, w_i), ...]``."""
        out = np.zeros(self.n)
        for idx, w in terms:
            out[idx] += w
        return out

    def matrices(self):
        m = sum(lo.size for _, lo, _ in self.rows)
        A, lo, hi = np.zeros((m, self.n)), np.empty(m), np.empty(m)
        r = 0
        for terms, l, h in self.rows:
            k = l.size
            for idx, M in terms:
                A[r:r + k, idx] += M
            lo[r:r + k], hi[r:r + k] = l, h
            r += k
        return A, lo, hi, np.concatenate(self.lb), np.concatenate(self.ub), np.concatenate(self.integer)

    def solve_lp(self, cost: np.ndarray, lb=None, ub=None):
        """Minimise ``cost . v`` with scipy's ``linprog`` (HiGHS); equality rows go to ``A_eq``."""
        A, lo, hi, vlb, vub, _ = self.matrices()
        vlb = vlb if lb is None else lb
        vub = vub if ub is None else ub
        eq = lo == hi
        up, down = ~eq & np.isfinite(hi), ~eq & np.isfinite(lo)
        A_ub = np.vstack([A[up], -A[down]])
        b_ub = np.concatenate([hi[up], -lo[down]])
        res = linprog(cost, A_ub=A_ub if len(b_ub) else None, b_ub=b_ub if len(b_ub) else None,
                      A_eq=A[eq] if eq.any() else None, b_eq=lo[eq] if eq.any() else None,
                      bounds=np.stack([vlb, vub], 1), method="highs")
        return res

    def solve_milp(self, cost: np.ndarray, mip_rel_gap: float = 1e-9):
        """Minimise ``cost . v`` with scipy's ``milp`` (HiGHS branch and bound)."""
        A, lo, hi, vlb, vub, integer = self.matrices()
        constraints = LinearConstraint(A, lo, hi) if len(lo) else None
        return milp(cost, integrality=integer.astype(int), bounds=Bounds(vlb, vub), constraints=constraints,
                    options={"mip_rel_gap": mip_rel_gap})


def _input_set(prog: _Program, x0: np.ndarray, eps: float, norm: str, x_min, x_max) -> np.ndarray:
    """Variables ``x`` constrained to the perturbation set; returns their indices."""
    lo, hi = _box(x0, eps, x_min, x_max)
    x = prog.variables(lo, hi)  # the L-inf ball ∩ box is exactly this box
    if norm == "l1":
        n, x0 = x.size, x0.ravel()
        t = prog.variables(0.0, np.full(n, eps))  # t_i >= |x_i - x0_i|, sum(t) <= eps
        eye = np.eye(n)
        prog.constrain([(x, eye), (t, -eye)], -np.inf, x0)
        prog.constrain([(x, -eye), (t, -eye)], -np.inf, -x0)
        prog.constrain([(t, np.ones((1, n)))], -np.inf, eps)
    return x


def _encode(prog: _Program, layers, x: np.ndarray, pre, tol: float, exact: bool):
    """Add the network's neurons to ``prog`` and return the indices of the last ReLU layer's outputs.

    For each ReLU with pre-activation ``zhat = W z_prev + b`` (an equality row) and bounds ``l <= zhat <= u``:

    * stable active (``l >= 0``): ``z = zhat``; stable inactive (``u <= 0``): ``z = 0``;
    * unstable (``l < 0 < u``), triangle relaxation (``exact=False``):
      ``z >= 0, z >= zhat, z <= u (zhat - l) / (u - l)``;
    * unstable, big-M encoding with a binary ``a`` (``exact=True``; ``a = 1`` iff the neuron is active):
      ``z >= 0, z >= zhat, z <= zhat - l (1 - a), z <= u a``.

    ``zhat`` is also kept in ``[l - tol, u + tol]`` (the box is part of the planet relaxation; ``tol`` absorbs
    float32 rounding of bounds computed by a float32 engine). The triangle itself uses ``l`` and ``u`` as given.
    """
    if len(pre) != len(layers) - 1:
        raise ValueError(f"pre has {len(pre)} (l, u) pairs but the network has {len(layers) - 1} ReLUs")
    z = x
    for (W, b), (l, u) in zip(layers[:-1], pre):
        l, u = _np(l).ravel(), _np(u).ravel()
        if l.shape != b.shape or u.shape != b.shape:
            raise ValueError(f"pre-activation bounds of {l.size} neurons for a layer of {b.size}")
        if (l > u + tol).any():
            raise ValueError("invalid pre-activation bounds: some l > u")
        if exact:  # big-M stays exact for any valid bounds, so widening only costs a little speed
            l, u = l - tol, u + tol
        active, inactive = l >= 0, u <= 0
        unstable = ~active & ~inactive
        n = b.size
        zhat = prog.variables(l - tol, u + tol)
        prog.constrain([(zhat, np.eye(n)), (z, -W)], b, b)
        post = prog.variables(np.where(active, -np.inf, 0.0), np.where(inactive, 0.0, np.inf))
        A, J = np.flatnonzero(active), np.flatnonzero(unstable)
        ones_a, ones_j = np.eye(A.size), np.eye(J.size)
        prog.constrain([(post[A], ones_a), (zhat[A], -ones_a)], 0.0, 0.0)         # z = zhat
        prog.constrain([(zhat[J], ones_j), (post[J], -ones_j)], -np.inf, 0.0)      # z >= zhat
        lj, uj = l[J], u[J]
        if exact:
            a = prog.variables(np.zeros(J.size), np.ones(J.size), integer=True)
            # z <= zhat - l (1 - a)  and  z <= u a
            prog.constrain([(post[J], ones_j), (zhat[J], -ones_j), (a, -np.diag(lj))], -np.inf, -lj)
            prog.constrain([(post[J], ones_j), (a, -np.diag(uj))], -np.inf, 0.0)
        else:
            s = uj / (uj - lj)
            prog.constrain([(post[J], ones_j), (zhat[J], -np.diag(s))], -np.inf, -s * lj)  # z <= s (zhat - l)
        z = post
    return z


def _objective(prog: _Program, layers, z: np.ndarray, c) -> tuple[np.ndarray, float]:
    W, b = layers[-1]
    c = _np(c).ravel()
    if c.size != b.size:
        raise ValueError(f"c has {c.size} entries but the network has {b.size} outputs")
    return prog.vector([(z, c @ W)]), float(c @ b)


def _setup(model, x0, eps, norm, pre, x_min, x_max, who):
    norm, eps = parse_norm(norm, who), check_budget(eps, who)
    _not_lp(norm)
    x0 = _np(x0)
    layers = _layers(model, x0.shape)
    if pre is None:
        pre = interval_bounds(layers, x0, eps=eps, norm=norm, x_min=x_min, x_max=x_max)
    return norm, eps, x0, layers, pre


# ----------------------------------------------------------------------------------------------------------
# The two oracles
# ----------------------------------------------------------------------------------------------------------
def lp_bound(model: nn.Module, x0, c, *, eps: float, norm="linf", pre=None, x_min=0.0, x_max=1.0,
             tol: float = 1e-7) -> float:
    """Minimum of ``c . model(x)`` over the triangle ("planet") LP relaxation of the network, for one input.

    ``x`` ranges over ``{|x - x0|_p <= eps} ∩ [x_min, x_max]`` (``norm`` in ``"linf"``, ``"l1"``), each ReLU
    is relaxed by its convex hull given the pre-activation bounds ``pre`` (one ``(l, u)`` per ReLU, this
    sample's, see the module docstring; ``None`` computes them by interval arithmetic). The result is a lower
    bound of the true minimum whenever ``pre`` is valid, and at least as tight as any linear bound
    (Fast-Lin, CROWN, any slope) back-substituted through the same ``pre``. Solved by HiGHS via ``linprog``.

    ``model`` may also be its :func:`affine_relu_form`, to convert it once when bounding many objectives.
    """
    norm, eps, x0, layers, pre = _setup(model, x0, eps, norm, pre, x_min, x_max, "lp_bound")
    prog = _Program()
    x = _input_set(prog, x0, eps, norm, x_min, x_max)
    z = _encode(prog, layers, x, pre, tol, exact=False)
    cost, const = _objective(prog, layers, z, c)
    res = prog.solve_lp(cost)
    if res.status != 0:
        raise RuntimeError(f"the LP failed ({res.message}); an infeasible LP means the pre-activation bounds "
                           "exclude every input of the set, i.e. they are not valid")
    return float(res.fun) + const


def lp_all_bounds(model: nn.Module, x0, *, eps: float, norm="linf", x_min=0.0, x_max=1.0, tol: float = 1e-7):
    """The tightest pre-activation bounds the triangle relaxation gives, layer by layer, for one input.

    Every neuron of the k-th ReLU layer is minimised and maximised by :func:`lp_bound` over the triangle
    relaxation of the layers before it, themselves bounded this way ("LP-all" in Salman et al. 2019; two LPs
    per neuron). Every layer-wise linear method (IBP, Fast-Lin, CROWN, ...) gives intermediate bounds at least
    this loose; the exact ranges (:func:`milp_bound` on the truncated network) are at least this tight.
    Same format as :func:`interval_bounds`.
    """
    x0 = _np(x0)
    layers = _layers(model, x0.shape)
    pre = []
    for k in range(len(layers) - 1):
        head = layers[:k + 1]  # the network up to the k-th pre-activation
        eye = np.eye(head[-1][1].size)
        kw = dict(eps=eps, norm=norm, pre=pre, x_min=x_min, x_max=x_max, tol=tol)
        l = [lp_bound(head, x0, e, **kw) for e in eye]
        u = [-lp_bound(head, x0, -e, **kw) for e in eye]
        pre.append((torch.tensor(l, dtype=torch.float64), torch.tensor(u, dtype=torch.float64)))
    return pre


class MILPResult(NamedTuple):
    """The exact minimum ``value`` of ``c . model(x)`` and an input ``x`` (shaped like ``x0``) attaining it."""

    value: float
    x: torch.Tensor


def milp_bound(model: nn.Module, x0, c, *, eps: float, norm="linf", pre=None, x_min=0.0, x_max=1.0,
               tol: float = 1e-7, mip_rel_gap: float = 1e-9) -> MILPResult:
    """The exact minimum of ``c . model(x)`` over ``{|x - x0|_p <= eps} ∩ [x_min, x_max]``, for one input.

    A mixed-integer LP with one binary per unstable ReLU (big-M encoding, see :func:`_encode`); the big-M
    constants come from ``pre`` (one valid ``(l, u)`` per ReLU, widened by ``tol``), or from interval
    arithmetic when ``pre`` is None. After branch and bound, the activation pattern of the best solution is
    fixed and the LP over that linear region is solved once more, so ``value`` is the minimum of the
    (then affine) network over a polytope, without the integrality and big-M tolerances of the MILP.

    Returns ``MILPResult(value, x)``: ``x`` lies in the input set and ``c . model(x) == value`` up to
    floating-point error (``value`` is the network evaluated at ``x`` in float64). ``model`` may also be its
    :func:`affine_relu_form`.
    """
    norm, eps, x0, layers, pre = _setup(model, x0, eps, norm, pre, x_min, x_max, "milp_bound")
    prog = _Program()
    x = _input_set(prog, x0, eps, norm, x_min, x_max)
    z = _encode(prog, layers, x, pre, tol, exact=True)
    cost, const = _objective(prog, layers, z, c)
    res = prog.solve_milp(cost, mip_rel_gap)
    if res.x is None:
        raise RuntimeError(f"the MILP failed ({res.message}); infeasible means the given pre-activation "
                           "bounds are not valid")
    v = res.x
    _, _, _, lb, ub, integer = prog.matrices()
    pattern = np.where(integer, np.round(v), 0.0)  # fix the binaries: the network is affine on that region
    polished = prog.solve_lp(cost, np.where(integer, pattern, lb), np.where(integer, pattern, ub))
    if polished.status == 0 and polished.fun <= res.fun + 1e-6 * (1 + abs(res.fun)):
        v = polished.x
    x_star = np.clip(v[x], *_box(x0, eps, x_min, x_max))
    value = float(_np(c).ravel() @ _forward(layers, x_star))
    return MILPResult(value, torch.from_numpy(x_star.reshape(x0.shape)))


# ----------------------------------------------------------------------------------------------------------
# Batched wrappers in the engine's format
# ----------------------------------------------------------------------------------------------------------
def _per_sample(model, x, y, eps, C, pre, norm, x_min, x_max, who):
    """Check the batch and yield ``(layers, x_n, C_n, pre_n, keywords)`` per sample; the network is rewritten
    once, and bounded by interval arithmetic (or ``pre="lp"``: LP-all) once per sample."""
    check_batch(x, who, x_min=x_min, x_max=x_max)
    norm = parse_norm(norm, who)
    _not_lp(norm)
    eps = check_budget(eps, who, len(x))
    layers = _layers(model, x.shape[1:])
    k = layers[-1][1].size
    if y is not None:
        if C is not None:
            raise ValueError(f"{who}: give the labels y (for the margins z_y - z_j) or a matrix C, not both")
        check_labels(y, len(x), k, who)
        C = margin_matrix(y.cpu(), k)
    C = torch.eye(k, dtype=torch.float64).expand(len(x), k, k) if C is None else torch.as_tensor(C)
    if C.dim() == 2:
        C = C.unsqueeze(0).expand(len(x), *C.shape)
    e = _np(eps)
    for n in range(len(x)):
        eps_n = float(e) if e.ndim == 0 else float(e.ravel()[n])
        kw = dict(eps=eps_n, norm=norm, x_min=x_min, x_max=x_max)
        if pre is None:
            pre_n = interval_bounds(layers, x[n], **kw)
        elif isinstance(pre, str):
            if pre != "lp":
                raise ValueError(f"{who}: pre must be None, 'lp' or a list of (l, u) pairs, got {pre!r}")
            pre_n = lp_all_bounds(layers, x[n], **kw)
        else:
            pre_n = [(l[n], u[n]) for l, u in pre]
        yield layers, x[n], C[n], pre_n, kw


def lp_bounds(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, eps, norm="linf", C=None,
              pre=None, x_min=0.0, x_max=1.0, tol: float = 1e-7) -> torch.Tensor:
    """:func:`lp_bound` for a batch: the ``N x M`` lower bounds of ``C @ logits`` (``C`` is ``N x M x K``,
    ``M x K``, the margin matrix of ``y``, or with neither the logits themselves; ``pre`` as in
    ``propagate(...).pre``, each ``N x ...``; ``eps`` a number or one per input). The LP maximum is
    ``-lp_bounds(model, x, eps=eps, C=-C, pre=pre)``."""
    rows = [[lp_bound(layers, x_n, c, pre=pre_n, tol=tol, **kw) for c in C_n]
            for layers, x_n, C_n, pre_n, kw in _per_sample(model, x, y, eps, C, pre, norm, x_min, x_max,
                                                               "lp_bounds")]
    return torch.tensor(rows, dtype=torch.float64)


def milp_bounds(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, eps, norm="linf", C=None,
                pre=None, x_min=0.0, x_max=1.0, tol: float = 1e-7) -> torch.Tensor:
    """:func:`milp_bound` for a batch: the ``N x M`` exact minima of ``C @ logits`` (shapes as :func:`lp_bounds`).
    ``pre`` only supplies the big-M constants: None for interval arithmetic, ``"lp"`` for :func:`lp_all_bounds`
    (fewer binaries, worth it for many rows of ``C``), or given bounds. The maximum is
    ``-milp_bounds(..., C=-C)``."""
    rows = [[milp_bound(layers, x_n, c, pre=pre_n, tol=tol, **kw).value for c in C_n]
            for layers, x_n, C_n, pre_n, kw in _per_sample(model, x, y, eps, C, pre, norm, x_min, x_max,
                                                               "milp_bounds")]
    return torch.tensor(rows, dtype=torch.float64)


# ----------------------------------------------------------------------------------------------------------
# Random tiny networks for tests
# ----------------------------------------------------------------------------------------------------------
def random_relu_mlp(seed: int, in_shape=(1, 2, 2), hidden=(6, 5), n_classes: int = 3, scale: float = 1.0,
                    bias: float = 0.5) -> nn.Sequential:
    """A seeded random ``Normalize -> Flatten -> (Linear -> ReLU)* -> Linear`` network (see ``models.mlp``).

    Weights are Gaussian with standard deviation ``scale / sqrt(fan_in)``, biases Gaussian with standard
    deviation ``bias`` and the Normalize layer gets a random per-channel mean and std, so that a moderate eps
    makes some ReLUs unstable. No global random state is touched.
    """
    from ..models import mlp

    g = torch.Generator().manual_seed(seed)
    c = in_shape[0]
    mean = (0.3 + 0.4 * torch.rand(c, generator=g)).tolist()
    std = (0.3 + 0.7 * torch.rand(c, generator=g)).tolist()
    model = mlp(in_shape, hidden, n_classes, mean=mean, std=std)
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * scale / math.sqrt(m.in_features))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * bias)
    return model.eval()
