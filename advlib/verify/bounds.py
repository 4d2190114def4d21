"""Linear bound propagation: IBP, Fast-Lin, CROWN and CNN-Cert in one small engine.

The question a certificate answers: for every input ``x`` in the perturbation set
``S = {x : ||x - x0||_p <= eps, x_min <= x <= x_max}``, how small and how large can ``C f(x)`` be?
If every row of ``C f(x)`` (``z_y - z_j`` for every ``j != y``) stays above 0 on ``S``, no
perturbation in ``S`` changes the prediction.

The network is read as a small graph of nodes (:func:`trace`): affine layers (Linear, Conv2d,
Normalize, BatchNorm in eval mode, average pooling, Flatten), element-wise activations (ReLU,
Tanh, Sigmoid) and the sum of a residual block. Three methods:

* **IBP** (Gowal et al., 2018): push an interval through every layer, centre and radius
  ``W c + b, |W| r`` for an affine layer, the endpoints for a monotone activation.
* **Fast-Lin** (Weng et al., 2018, Thm. 3.5): replace each unstable ReLU (``l < 0 < u``) by two
  parallel lines of slope ``u / (u - l)`` and walk a linear bound backwards from the output to the
  input, where it is concretised with the dual norm (Hölder): ``min_{x in ball} a.x = a.x0 - eps ||a||_q``.
* **CROWN** (Zhang et al., 2018, Thm. 3.2): the same walk, with the lower line of each neuron chosen
  adaptively (slope 1 if ``u > -l`` else 0) and with tangent / secant lines for tanh and sigmoid.

Intermediate bounds (the ``l, u`` of every activation's input) come from the same method, one
backward walk per layer (CROWN is O(L^2) walks). The walk through a convolution is a transposed
convolution, so linear bounds of conv layers stay convolutions (CNN-Cert, Boopathy et al., 2019)
and no dense weight matrix of a conv layer is ever built. Only neurons that the cheap interval
bound cannot prove stable are walked back. The margin matrix ``C`` enters as the starting
coefficients of the last walk: bounds of differences are tighter than differences of bounds.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..models import Normalize, ResidualBlock
from ..threat import check_batch, check_budget, check_labels, check_model_input, chunks, dual_norm, parse_norm

__all__ = ["METHODS", "ALL_METHODS", "Node", "initial_alpha", "backward", "trace", "propagate", "bounds",
           "margin_matrix", "Bounds"]

#: the one-pass bound-propagation methods, loosest first: interval, Fast-Lin's and CROWN's linear bounds
METHODS = ("ibp", "fastlin", "crown")
#: every ``method`` the engine takes: those and α-CROWN (CROWN optimised, :mod:`advlib.verify.alpha`)
ALL_METHODS = (*METHODS, "alpha-crown")
_AFFINE = (nn.Linear, nn.Conv2d, Normalize, nn.BatchNorm1d, nn.BatchNorm2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
           nn.Flatten, nn.Identity, nn.Dropout)
_ACTIVATIONS = (nn.ReLU, nn.Tanh, nn.Sigmoid)
_DENSE = 2 ** 21  # convolutions whose matrix has at most this many entries (8 MB) use it


# ----------------------------------------------------------------------------------------------- the graph
@dataclass
class Node:
    """One node of the traced network: ``op`` applied to the outputs of ``inputs``."""

    op: nn.Module | str  # a layer, "input" or "add"
    inputs: tuple[int, ...]
    shape: tuple[int, ...]  # output shape without the batch dimension
    matrix: torch.Tensor | None = None  # a small convolution's dense matrix (out x in), see trace

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def trace(model: nn.Module, in_shape: tuple[int, ...]) -> list[Node]:
    """The network as a list of nodes in forward order (node 0 is the input).

    Accepts ``nn.Sequential`` stacks (nested too) of the supported layers and
    :class:`advlib.models.ResidualBlock`; refuses anything else, naming the layer.
    """
    nodes = [Node("input", (), tuple(in_shape))]

    def add(op, inputs, shape):
        nodes.append(Node(op, inputs, tuple(shape)))
        return len(nodes) - 1

    def walk(module: nn.Module, i: int) -> int:
        if isinstance(module, nn.Sequential):
            for m in module:
                i = walk(m, i)
            return i
        if isinstance(module, ResidualBlock):
            body, short = walk(module.body, i), walk(module.shortcut, i)
            if nodes[body].shape != nodes[short].shape:
                raise ValueError("a residual block's body and shortcut give different shapes")
            return walk(module.relu, add("add", (body, short), nodes[body].shape))
        if isinstance(module, (nn.Identity, nn.Dropout)):
            return i
        if isinstance(module, _AFFINE + _ACTIVATIONS):
            _check_layer(module, nodes[i].shape)
            with torch.no_grad():
                p = next(module.parameters(), None)
                probe = torch.zeros(1, *nodes[i].shape, device=None if p is None else p.device,
                                    dtype=torch.get_default_dtype() if p is None else p.dtype)
                shape = module(probe).shape[1:]
            j = add(module, (i,), shape)
            if isinstance(module, nn.Conv2d) and nodes[i].numel * nodes[j].numel <= _DENSE:
                # A small convolution walks back faster as one matrix product than as a transposed
                # convolution on CPUs; its matrix is the convolution of the unit basis (no bias).
                with torch.no_grad():
                    basis = torch.eye(nodes[i].numel, dtype=probe.dtype, device=probe.device)
                    out = module._conv_forward(basis.view(-1, *nodes[i].shape), module.weight, None)
                nodes[j].matrix = out.flatten(1).T.contiguous()
            return j
        raise ValueError(f"advlib.verify cannot bound the layer {module.__class__.__name__} ({module}); supported: "
                         "Linear, Conv2d, ReLU, Tanh, Sigmoid, Flatten, Normalize, BatchNorm (eval), AvgPool2d, "
                         "AdaptiveAvgPool2d (even split), Identity/Dropout, ResidualBlock and nn.Sequential of them")

    walk(model, 0)
    return nodes


def _check_layer(m: nn.Module, in_shape) -> None:
    if isinstance(m, nn.AvgPool2d) and (m.ceil_mode or m.divisor_override is not None):
        raise ValueError(f"advlib.verify supports AvgPool2d without ceil_mode/divisor_override, got {m}")
    if isinstance(m, nn.AdaptiveAvgPool2d):
        out = (m.output_size,) * 2 if isinstance(m.output_size, int) else m.output_size
        if any(o is None or s % o for s, o in zip(in_shape[-2:], out)):
            raise ValueError(f"advlib.verify supports AdaptiveAvgPool2d only when it splits the input evenly "
                             f"({tuple(in_shape[-2:])} into {out}); use AvgPool2d")
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.running_var is None:
        raise ValueError("advlib.verify needs BatchNorm with running statistics (track_running_stats=True)")


# ------------------------------------------------------------------------------------ affine layers, two ways
def _pool_kernel(m: nn.Module, in_shape):
    if isinstance(m, nn.AvgPool2d):
        k, s, p = (m.kernel_size, m.stride, m.padding)
        return [(v, v) if isinstance(v, int) else tuple(v) for v in (k, s, p)]
    out = (m.output_size,) * 2 if isinstance(m.output_size, int) else m.output_size
    k = tuple(s // o for s, o in zip(in_shape[-2:], out))
    return k, k, (0, 0)


def _bn_scale_shift(m: nn.Module):
    scale = m.weight / torch.sqrt(m.running_var + m.eps) if m.affine else 1 / torch.sqrt(m.running_var + m.eps)
    shift = (m.bias if m.affine else 0) - m.running_mean * scale
    return scale, shift


def _abs_linear(m: nn.Module, r: torch.Tensor) -> torch.Tensor:
    """``|W| r``: the radius of an interval after the affine layer ``m`` (IBP)."""
    if isinstance(m, nn.Linear):
        return r @ m.weight.abs().T
    if isinstance(m, nn.Conv2d):
        return F.conv2d(r, m.weight.abs(), None, m.stride, m.padding, m.dilation, m.groups)
    if isinstance(m, Normalize):
        return r / m.std
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        scale = _bn_scale_shift(m)[0].abs()
        return r * (scale if r.dim() == 2 else scale[:, None, None])
    if isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
        return m(r)  # non-negative weights
    return m(r)  # Flatten


def _back_linear(m: nn.Module, A: torch.Tensor, in_shape, matrix=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pull a linear bound ``A . out + 0`` back through the affine layer ``out = W in + b``.

    ``A`` is ``N x M x out_shape``; returns ``A W`` (``N x M x in_shape``) and ``A b`` (``N x M``).
    For a convolution ``A W`` is the transposed convolution of ``A`` (CNN-Cert's bounds as convolutions).
    """
    n, k = A.shape[:2]
    if isinstance(m, nn.Linear):
        bias = A @ m.bias if m.bias is not None else A.new_zeros(n, k)
        return A @ m.weight, bias
    if isinstance(m, nn.Conv2d):
        bias = (A.sum((3, 4)) @ m.bias) if m.bias is not None else A.new_zeros(n, k)
        if matrix is not None:
            return (A.reshape(n, k, -1) @ matrix).view(n, k, *in_shape), bias
        flat = A.reshape(n * k, *A.shape[2:])
        h, w = flat.shape[-2:]
        out_pad = [size - ((o - 1) * s - 2 * p + d * (kk - 1) + 1)
                   for size, o, s, p, d, kk in zip(in_shape[-2:], (h, w), m.stride, m.padding, m.dilation,
                                                   m.weight.shape[-2:])]
        back = F.conv_transpose2d(flat, m.weight, None, m.stride, m.padding, out_pad, m.groups, m.dilation)
        return back.reshape(n, k, *in_shape), bias
    if isinstance(m, Normalize):
        return A / m.std, -(A * (m.mean / m.std)).flatten(2).sum(2)
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        scale, shift = _bn_scale_shift(m)
        if A.dim() == 5:
            scale, shift = scale[:, None, None], shift[:, None, None]
        return A * scale, (A * shift).flatten(2).sum(2)
    if isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
        (kh, kw), stride, pad = _pool_kernel(m, in_shape)
        c = in_shape[0]
        flat = A.reshape(n * k, *A.shape[2:])
        weight = A.new_full((c, 1, kh, kw), 1.0 / (kh * kw))
        out_pad = [size - ((o - 1) * s - 2 * p + kk) for size, o, s, p, kk in
                   zip(in_shape[-2:], flat.shape[-2:], stride, pad, (kh, kw))]
        back = F.conv_transpose2d(flat, weight, None, stride, pad, out_pad, groups=c)
        return back.reshape(n, k, *in_shape), A.new_zeros(n, k)
    return A.reshape(n, k, *in_shape), A.new_zeros(n, k)  # Flatten


# ------------------------------------------------------------------------------------ activation relaxations
def _fd(op: nn.Module):
    if isinstance(op, nn.Tanh):
        return torch.tanh, lambda z: 1 - torch.tanh(z) ** 2
    return torch.sigmoid, lambda z: torch.sigmoid(z) * (1 - torch.sigmoid(z))


def _tangent_through(f, df, point, lo, hi, upper: bool, steps: int = 30):
    """The tangent point ``d`` in ``[lo, hi]`` whose tangent line passes through ``(point, f(point))``
    (CROWN, Sec. 3.3), by bisection on ``r(d) = f(d) + f'(d) (point - d) - f(point)``.

    Upper line (``point = l < 0``, ``d`` in ``[0, u]``): ``r`` goes from <= 0 to > 0; we return the end
    with ``r >= 0``, so the line passes above ``f(l)`` and stays sound. Lower line (``point = u > 0``,
    ``d`` in ``[l, 0]``): ``r`` goes from < 0 to >= 0; we return the end with ``r <= 0``.
    """
    for _ in range(steps):
        mid = (lo + hi) / 2
        r = f(mid) + df(mid) * (point - mid) - f(point)
        if upper:
            lo, hi = torch.where(r >= 0, lo, mid), torch.where(r >= 0, mid, hi)
        else:
            lo, hi = torch.where(r <= 0, mid, lo), torch.where(r <= 0, hi, mid)
    return hi if upper else lo


def relaxation(op: nn.Module, l: torch.Tensor, u: torch.Tensor, method: str, alpha=None):
    """Linear lower and upper bounds ``a_lo z + b_lo <= act(z) <= a_up z + b_up`` on ``[l, u]``.

    Returns ``(a_lo, b_lo, a_up, b_up)``, element-wise like ``l``. ``alpha`` makes the free choices of
    the relaxation explicit (α-CROWN, Xu et al. 2021, eq. 4; values in [0, 1], broadcast with ``l``):
    for a ReLU the slope of the lower line of an unstable neuron (CROWN picks 0 or 1); for tanh /
    sigmoid a pair ``(t_lo, t_up)``, the position of the tangent point of each line within the range
    where a tangent is sound (CROWN picks the middle, or the end nearest 0 across 0). Every choice gives
    sound lines: :func:`initial_alpha` returns CROWN's.
    """
    if isinstance(op, nn.ReLU):
        unstable = (l < 0) & (u > 0)
        slope = torch.where(unstable, u / (u - l).clamp(min=1e-12), (l >= 0).to(l.dtype))
        b_up = torch.where(unstable, -slope * l, torch.zeros_like(l))
        if method == "fastlin":  # Weng et al. 2018: a parallel lower line through the origin
            a_lo = slope
        elif alpha is not None:  # any slope in [0, 1] is a sound lower line of an unstable ReLU
            a_lo = torch.where(unstable, alpha, slope)
        else:  # Zhang et al. 2018: the lower line (slope 0 or 1) with the smaller area
            a_lo = torch.where(unstable, (u > -l).to(l.dtype), slope)
        return a_lo, torch.zeros_like(b_up), slope, b_up
    if method == "fastlin":
        raise ValueError("Fast-Lin is defined for ReLU networks; use method='crown' for tanh / sigmoid")
    f, df = _fd(op)
    l, u = torch.broadcast_tensors(l, u) if alpha is None else torch.broadcast_tensors(l, u, alpha[0])[:2]
    fl, fu = f(l), f(u)
    width = u - l
    narrow = width < 1e-6
    k = (fu - fl) / width.clamp(min=1e-6)  # the secant's slope
    secant = k, fl - k * l
    cross = (l < 0) & (u > 0)
    # Upper line: a tangent where f is concave (l >= 0: at any d in [l, u]), the secant where convex
    # (u <= 0); across 0 the secant if it stays above f (f'(u) >= k), else a tangent at d in [d_up, u],
    # where d_up's tangent passes through (l, f(l)) (a tangent further right passes above it).
    d_up = _tangent_through(f, df, l, torch.zeros_like(l), u.clamp(min=0), upper=True)
    t_lo, t_up = initial_alpha(op, l, u) if alpha is None else alpha
    start = torch.where(l >= 0, l, d_up)
    d = start + t_up * (u - start)
    tangent_up = df(d), f(d) - df(d) * d
    use = (l >= 0) | (cross & (df(u) < k))
    a_up, b_up = torch.where(use, tangent_up[0], secant[0]), torch.where(use, tangent_up[1], secant[1])
    # Lower line: the mirror image, tangent points d in [l, u] (u <= 0) or [l, d_lo] across 0.
    d_lo = _tangent_through(f, df, u, l.clamp(max=0), torch.zeros_like(u), upper=False)
    end = torch.where(u <= 0, u, d_lo)
    d = end - t_lo * (end - l)
    tangent_lo = df(d), f(d) - df(d) * d
    use = (u <= 0) | (cross & (df(l) < k))
    a_lo, b_lo = torch.where(use, tangent_lo[0], secant[0]), torch.where(use, tangent_lo[1], secant[1])
    # On a (nearly) empty interval use the constants f(l) <= f(z) <= f(u) (f is increasing).
    zero = torch.zeros_like(l)
    return (torch.where(narrow, zero, a_lo), torch.where(narrow, fl, b_lo),
            torch.where(narrow, zero, a_up), torch.where(narrow, fu, b_up))


def initial_alpha(op: nn.Module, l: torch.Tensor, u: torch.Tensor):
    """CROWN's choices as the ``alpha`` of :func:`relaxation` (the start of α-CROWN): for a ReLU the
    lower slope 1 where ``u > -l`` else 0; for tanh / sigmoid ``(t_lo, t_up)``: the middle of ``[l, u]``
    on a convex or concave piece (0.5), the tangent through the far end across 0 (0)."""
    if isinstance(op, nn.ReLU):
        return (u > -l).to(l.dtype)
    return torch.where(u <= 0, 0.5, 0.0).to(l.dtype), torch.where(l >= 0, 0.5, 0.0).to(l.dtype)


# ------------------------------------------------------------------------------------------- concretisation
def _concretise(A: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, norm: str, x_min: torch.Tensor,
                x_max: torch.Tensor, upper: bool) -> torch.Tensor:
    """``min`` (or ``max``) of ``A . x`` over ``x`` in the ball ``||x - x0||_p <= eps`` intersected with
    ``[x_min, x_max]``. For L-inf the intersection is a box, solved exactly (Hölder per coordinate).
    For L2 / L1 we take the better of the ball's bound ``A.x0 -+ eps ||A||_q`` (dual norm ``q``) and
    the box's bound: both are valid, since the set lies in each."""
    A = A.flatten(2)
    x0, x_min, x_max = (t.flatten(1)[:, None, :] for t in (x0, x_min, x_max))
    e = eps.view(-1, 1, 1)
    sign = 1.0 if upper else -1.0
    if norm == "linf":
        lo, hi = (x0 - e).clamp(min=x_min), (x0 + e).clamp(max=x_max)
    else:
        lo, hi = x_min, x_max
    centre, radius = (hi + lo) / 2, (hi - lo) / 2
    box = (A * centre).sum(2) + sign * (A.abs() * radius).sum(2)
    if norm == "linf":
        return box
    ball = (A * x0).sum(2) + sign * e[:, :, 0] * dual_norm(A, norm, start_dim=2)
    return torch.minimum(box, ball) if upper else torch.maximum(box, ball)


# ------------------------------------------------------------------------------------------- propagation
@dataclass
class Bounds:
    """The answer of :func:`bounds` and :func:`propagate`: ``lower <= C f(x') <= upper`` for every
    ``x'`` of the perturbation set (``N x M``: one row per input, one column per row of ``C``), and
    the pre-activation bounds ``pre`` (one ``(l, u)`` per activation layer, in forward order, each
    ``N x ...``). Unpacks as ``lower, upper = bounds(...)``."""

    lower: torch.Tensor
    upper: torch.Tensor
    pre: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)

    def __iter__(self):
        return iter((self.lower, self.upper))

    @property
    def certified(self) -> torch.Tensor:
        """``True`` per input where every row has a positive lower bound (with ``C`` the margin
        matrix of ``y``: the prediction is provably ``y`` on the whole set)."""
        return (self.lower > 0).all(1)


def _dot(A: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum_i A[n, m, i] b[n, i]`` over the node's entries: N x M (``b`` may also hold one row per
    row of ``A``, N x M x ...: α-CROWN's lines)."""
    if b.dim() == A.dim() and b.shape[1] == 1:
        b = b.squeeze(1)
    if b.dim() == A.dim():
        return (A * b).flatten(2).sum(2)
    return (A.flatten(2) @ b.flatten(1)[:, :, None]).squeeze(2)


def _lines(node, l, u, method, alpha):
    """The relaxation of an activation node as lines that broadcast with the walk's coefficients
    (N x M x ...): one set per input, or per row of the walk when ``alpha`` (N x M x ...) is given."""
    if alpha is None:
        return [t[:, None] for t in relaxation(node.op, l, u, method)]
    return relaxation(node.op, l[:, None], u[:, None], method, alpha)


def _backward(nodes, k, A, pre_of, method, x0, eps, norm, x_min, x_max, alpha=None, extra=None, upper=True,
              record=None):
    """Bounds of ``A . node_k`` by walking the linear bound back to the input (CROWN, Thm. 3.2).

    ``lam`` / ``omg`` are the coefficients of the lower / upper bound at each node still to visit,
    ``beta`` / ``gamma`` their accumulated constants; activations are replaced by their relaxation,
    positive coefficients taking the lower line for a lower bound and the upper line for an upper one.
    Options of α-CROWN and branch and bound: ``alpha`` maps an activation node to the ``alpha`` of
    :func:`relaxation` for the lower and for the upper walk (a pair, each N x M x ...); ``extra`` maps a
    node to coefficients added to the lower walk's when it reaches that node (β-CROWN's split terms);
    ``upper=False`` walks the lower bound only (``upper`` is then None); ``record`` (a dict) receives
    the lower walk's coefficients at every activation's output and at the input (node 0).
    """
    alpha, extra = alpha or {}, extra or {}
    lam, omg = {k: A}, {k: A}  # the same tensor until the first activation: walked back once
    beta = gamma = A.new_zeros(A.shape[:2])

    def give(j, a, b):
        same = j not in lam and a is b
        lam[j] = lam[j] + a if j in lam else a
        if upper:
            omg[j] = lam[j] if same else (omg[j] + b if j in omg else b)

    for i in range(k, 0, -1):
        if i not in lam:
            continue
        L, U = lam.pop(i), omg.pop(i, None)
        if i in extra:
            L = L + extra[i]
        node = nodes[i]
        if node.op == "add":
            for j in node.inputs:
                give(j, L, U)
            continue
        j = node.inputs[0]
        if isinstance(node.op, _ACTIVATIONS):
            if record is not None:
                record[i] = L
            a = alpha.get(i, (None, None))
            a_lo, b_lo, a_up, b_up = _lines(node, *pre_of[j], method, a[0])
            # a positive coefficient takes the lower line for the lower bound, a negative one the upper
            # line: L a_lo on L >= 0, L a_up on L < 0, written as L a_up + L+ (a_lo - a_up) (fewer passes)
            Lp = L.clamp(min=0)
            beta = beta + _dot(L, b_up) + _dot(Lp, b_lo - b_up)
            L = torch.addcmul(L * a_up, Lp, a_lo - a_up)
            if upper:
                if a[1] is not a[0]:
                    a_lo, b_lo, a_up, b_up = _lines(node, *pre_of[j], method, a[1])
                Up = U.clamp(min=0)
                gamma = gamma + _dot(U, b_lo) + _dot(Up, b_up - b_lo)
                U = torch.addcmul(U * a_lo, Up, a_up - a_lo)
            give(j, L, U)
        else:
            in_shape, shared = nodes[j].shape, L is U
            L, bl = _back_linear(node.op, L, in_shape, node.matrix)
            U, bu = (L, bl) if shared or not upper else _back_linear(node.op, U, in_shape, node.matrix)
            beta, gamma = beta + bl, gamma + bu
            give(j, L, U)
    lower = _concretise(lam[0], x0, eps, norm, x_min, x_max, upper=False) + beta
    if record is not None:
        record[0] = lam[0]
    if not upper:
        return lower, None
    return lower, _concretise(omg[0], x0, eps, norm, x_min, x_max, upper=True) + gamma


#: the backward walk under its public name, for lectures and exercises that bound one row by hand
backward = _backward


def _interval(node: Node, box: list, x0, eps, norm, x_min, x_max):
    """IBP through one node, from the intervals of its inputs."""
    if node.op == "input":  # every Lp ball (p >= 1) lies in the L-inf ball of the same radius
        e = eps.view(-1, *([1] * (x0.dim() - 1)))
        return (x0 - e).clamp(min=x_min), (x0 + e).clamp(max=x_max)
    if node.op == "add":
        (l1, u1), (l2, u2) = (box[j] for j in node.inputs)
        return l1 + l2, u1 + u2
    l, u = box[node.inputs[0]]
    if isinstance(node.op, _ACTIVATIONS):
        return node.op(l), node.op(u)  # monotone
    c, r = node.op((u + l) / 2), _abs_linear(node.op, (u - l) / 2)
    return c - r, c + r


def _needy(nodes, j, l, u) -> torch.Tensor | None:
    """The neurons of node ``j`` (an activation's input) whose interval ``[l, u]`` leaves the
    activation's relaxation loose (unstable ReLUs; every neuron of tanh / sigmoid): ``N x m`` indices,
    the needy ones first (samples with fewer get harmless extras), or None when there are none."""
    fl, fu = l.flatten(1), u.flatten(1)
    relu_only = all(isinstance(nd.op, nn.ReLU) for nd in nodes if nd.inputs == (j,))
    need = (fl < 0) & (fu > 0) if relu_only else (fu - fl) > 1e-9
    m = int(need.sum(1).max())
    return need.to(fl.dtype).topk(m, dim=1).indices if m else None


def _rows(idx: torch.Tensor, shape, like: torch.Tensor) -> torch.Tensor:
    """The unit rows ``e_i`` (``N x m x shape``, dtype and device of ``like``) that a walk from a node
    starts with for its neurons ``idx``."""
    n, m = idx.shape
    return like.new_zeros(n, m, math.prod(shape)).scatter_(2, idx[:, :, None], 1.0).view(n, m, *shape)


def _tighten(l, u, idx, lo, hi):
    """``[l, u]`` intersected with the walked bounds ``lo`` / ``hi`` of the neurons ``idx``."""
    fl, fu = l.flatten(1), u.flatten(1)
    fl = fl.scatter(1, idx, torch.maximum(fl.gather(1, idx), lo))
    fu = fu.scatter(1, idx, torch.minimum(fu.gather(1, idx), hi))
    return fl.view_as(l), fu.view_as(u)


def _refine(nodes, j, box, pre_of, method, x0, eps, norm, x_min, x_max, rows=None):
    """Tighten the interval of node ``j`` (an activation's input) by a backward walk from it,
    for the neurons the interval cannot settle (:func:`_needy`); ``rows`` records them."""
    l, u = box[j]
    idx = _needy(nodes, j, l, u)
    if rows is not None:
        rows[j] = idx
    if idx is None:
        return l, u
    A = _rows(idx, nodes[j].shape, l)
    return _tighten(l, u, idx, *_backward(nodes, j, A, pre_of, method, x0, eps, norm, x_min, x_max))


def _propagate_chunk(nodes, x0, eps, norm, method, C, pre, x_min, x_max, rows=None) -> Bounds:
    x_min, x_max = (torch.as_tensor(t, dtype=x0.dtype, device=x0.device).expand_as(x0) for t in (x_min, x_max))
    box: list = [None] * len(nodes)
    pre_of: dict[int, tuple] = {}
    given = iter(pre) if pre is not None else None
    pre_out = []
    for i, node in enumerate(nodes):
        if isinstance(node.op, _ACTIVATIONS):
            j = node.inputs[0]
            if j not in pre_of:
                if given is not None:
                    gl, gu = next(given)
                    box[j] = (gl, gu)
                elif method != "ibp":
                    box[j] = _refine(nodes, j, box, pre_of, method, x0, eps, norm, x_min, x_max, rows)
                pre_of[j] = box[j]
            pre_out.append(pre_of[j])
        box[i] = _interval(node, box, x0, eps, norm, x_min, x_max)
    last = len(nodes) - 1
    if method == "ibp":
        return Bounds(*_ibp_output(nodes, box, C), pre_out)
    A = _output_rows(nodes, x0, C)
    lower, upper = _backward(nodes, last, A, pre_of, method, x0, eps, norm, x_min, x_max)
    return Bounds(lower, upper, pre_out)


def _output_rows(nodes, x0, C):
    """The rows the last walk starts with: ``C``, or the identity (the logits themselves)."""
    if C is not None:
        return C
    last = nodes[-1]
    return torch.eye(last.numel, device=x0.device, dtype=x0.dtype).expand(len(x0), -1, -1).reshape(
        len(x0), -1, *last.shape)


def _ibp_output(nodes, box, C):
    """IBP bounds of ``C f(x)``; when the last layer is Linear, ``C`` is folded into it first
    (Gowal et al., 2018, the "elision" of the last layer), which is tighter than ``C`` times an interval."""
    last = nodes[-1]
    if C is None:
        return box[-1]
    if isinstance(last.op, nn.Linear):
        l, u = box[last.inputs[0]]
        W = C @ last.op.weight  # N x M x D
        b = C @ last.op.bias if last.op.bias is not None else 0
        c, r = (u + l) / 2, (u - l) / 2
        mid = (W @ c[:, :, None]).squeeze(2) + b
        rad = (W.abs() @ r[:, :, None]).squeeze(2)
        return mid - rad, mid + rad
    l, u = box[-1]
    c, r = (u + l) / 2, (u - l) / 2
    mid, rad = (C @ c[:, :, None]).squeeze(2), (C.abs() @ r[:, :, None]).squeeze(2)
    return mid - rad, mid + rad


# ------------------------------------------------------------------------------------------- public calls
def _other_classes(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``N x (K-1)``: every class but ``y``, in increasing order (the rows of :func:`margin_matrix`)."""
    idx = torch.arange(n_classes, device=y.device).expand(len(y), -1)
    return idx[idx != y[:, None]].view(len(y), n_classes - 1)


def margin_matrix(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``C`` with rows ``e_y - e_j`` for every ``j != y`` (``N x (K-1) x K``): ``C f(x) > 0`` means
    the prediction is ``y``, so a positive lower bound of every row certifies the sample."""
    n = len(y) if isinstance(y, torch.Tensor) and y.dim() == 1 else -1  # anything else is refused below
    check_labels(y, n, n_classes, "margin_matrix")
    eye = torch.eye(n_classes, device=y.device)
    return eye[y][:, None, :] - eye[_other_classes(y, n_classes)]


def _checked(model, x, y, eps, norm, method, C, x_min, x_max, who: str):
    """The checks every public call of the engine shares (the core's wording, :mod:`advlib.threat`).
    Returns ``(eps as one radius per input, the norm's name, C, the number of classes)``; ``C`` is the
    margin matrix of ``y`` when ``y`` is given and ``C`` is not."""
    check_batch(x, who, x_min=x_min, x_max=x_max)
    n = len(x)
    eps = check_budget(eps, who, n)
    norm = parse_norm(norm, who)
    if method not in ALL_METHODS:
        raise ValueError(f"{who}: method must be one of {ALL_METHODS}, got {method!r}")
    classes = check_model_input(model, x, who)
    if y is not None:
        if C is not None:
            raise ValueError(f"{who}: give the labels y (for the margins z_y - z_j) or a matrix C, not both")
        check_labels(y, n, classes, who)
        C = margin_matrix(y, classes)
    if C is not None and (not isinstance(C, torch.Tensor) or C.dim() != 3 or len(C) != n or C.shape[2] != classes):
        raise ValueError(f"{who}: C must be N x M x K (one matrix per input, K = {classes} logits), got "
                         f"{tuple(getattr(C, 'shape', ()))}")
    eps = torch.as_tensor(eps, dtype=x.dtype, device=x.device).expand(n)
    return eps, norm, C, classes


def _run(nodes, x, eps, norm, method, C=None, pre=None, x_min=0.0, x_max=1.0, options=None,
         certify=False) -> Bounds:
    """The engine on checked inputs, split into pieces of :data:`advlib.threat.MEMORY_BUDGET` floats:
    a backward walk holds ``N x rows x widest`` coefficients (``rows`` the neurons walked back at once).
    α-CROWN (:mod:`advlib.verify.alpha`, with ``options`` for it) holds such a tensor of parameters per
    walk and activation, with their gradients and Adam's two moments; ``certify`` says that only the
    sign of the lower bounds will be read (α-CROWN then skips the inputs it cannot change)."""
    widest = max(nd.numel for nd in nodes)
    rows = max([nodes[nd.inputs[0]].numel for nd in nodes if isinstance(nd.op, _ACTIVATIONS)] + [nodes[-1].numel])
    per_input = 2 * sum(nd.numel for nd in nodes) if method == "ibp" else widest * rows
    if method == "alpha-crown":
        from .alpha import _alpha_chunk

        per_input *= 8 * (1 + sum(isinstance(nd.op, _ACTIVATIONS) for nd in nodes))
    parts = []
    with torch.no_grad() if method != "ibp" else contextlib.nullcontext():  # IBP stays differentiable
        for sl in chunks(len(x), per_input):
            lo, hi = (t[sl] if isinstance(t, torch.Tensor) and t.dim() else t for t in (x_min, x_max))
            part_C = None if C is None else C[sl]
            if method == "alpha-crown":
                parts.append(_alpha_chunk(nodes, x[sl], eps[sl], norm, part_C, lo, hi, **(options or {}),
                                          certify=certify))
                continue
            part_pre = [(l[sl], u[sl]) for l, u in pre] if pre is not None else None
            parts.append(_propagate_chunk(nodes, x[sl], eps[sl], norm, method, part_C, part_pre, lo, hi))
    if len(parts) == 1:
        return parts[0]
    return Bounds(torch.cat([p.lower for p in parts]), torch.cat([p.upper for p in parts]),
                  [(torch.cat([p.pre[i][0] for p in parts]), torch.cat([p.pre[i][1] for p in parts]))
                   for i in range(len(parts[0].pre))])


def propagate(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, eps, norm="linf",
              method: str = "crown", C: torch.Tensor | None = None, pre: list | None = None, x_min=0.0,
              x_max=1.0, nodes: list[Node] | None = None) -> Bounds:
    """Bounds of ``C f(x')`` for every ``x'`` with ``||x' - x||_p <= eps`` and ``x_min <= x' <= x_max``
    (IBP: Gowal et al. 2018, eq. 6; Fast-Lin: Weng et al. 2018, Thm. 3.5; CROWN: Zhang et al. 2018,
    Thm. 3.2), as :class:`Bounds`.

    ``x`` is a batch ``N x ...`` in the box, ``eps`` a number or one radius per input, ``norm`` one of
    ``"linf"``, ``"l2"``, ``"l1"``, ``method`` one of :data:`ALL_METHODS` (``"alpha-crown"``:
    :func:`advlib.verify.alpha_crown` with its defaults). With labels ``y`` (and no ``C``)
    the rows are the margins ``z_y - z_j``, ``j != y`` (:func:`margin_matrix`); with ``C`` (``N x M x K``)
    they are ``C f``; with neither, the logits themselves. ``x_min`` / ``x_max`` are numbers or
    tensors like ``x`` (a per-pixel box, e.g. from :func:`advlib.verify.rotation_box`). ``pre`` reuses
    given intermediate bounds (a list like ``Bounds.pre``; not with α-CROWN, which optimises them),
    ``nodes`` a given :func:`trace`. Large batches are split into pieces of
    :data:`advlib.threat.MEMORY_BUDGET` floats.
    """
    eps, norm, C, _ = _checked(model, x, y, eps, norm, method, C, x_min, x_max, "propagate")
    if pre is not None and method == "alpha-crown":
        raise ValueError("propagate: α-CROWN optimises the intermediate bounds itself; give pre=None, or use "
                         "method='crown' with given bounds")
    nodes = nodes or trace(model, tuple(x.shape[1:]))
    return _run(nodes, x, eps, norm, method, C, pre, x_min, x_max)


def bounds(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, eps, norm="linf",
           method: str = "crown", C: torch.Tensor | None = None, x_min=0.0, x_max=1.0) -> Bounds:
    """:class:`Bounds` with ``lower <= C f(x') <= upper`` on the perturbation set: :func:`propagate`
    without its reuse options. ``lower, upper = bounds(model, x, eps=0.1)`` bounds the logits;
    ``bounds(model, x, y, eps=0.1).lower`` the margins ``z_y - z_j``."""
    eps, norm, C, _ = _checked(model, x, y, eps, norm, method, C, x_min, x_max, "bounds")
    return _run(trace(model, tuple(x.shape[1:])), x, eps, norm, method, C, None, x_min, x_max)
