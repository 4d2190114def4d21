"""Zeroth-order (ZO) optimisation: gradients estimated from function values only (Part 2).

The random-direction estimate of the lecture, averaged over ``q`` directions ``u_j``::

    forward (one-point):   g = phi / (beta q) * sum_j [f(x + beta u_j) - f(x)] u_j
    antithetic (two-point): g = phi / (2 beta q) * sum_j [f(x + beta u_j) - f(x - beta u_j)] u_j

with ``u_j ~ N(0, I)`` and ``phi = 1`` (Nesterov & Spokoiny 2017), or ``u_j`` uniform on the unit
sphere and ``phi = d`` (Flaxman et al. 2005; Liu et al. 2020, "A Primer on ZO optimization", eq. 3-4).
Either is an unbiased estimate of the gradient of a *smoothed* ``f`` (Gaussian smoothing
``E f(x + beta u)``, or the average of ``f`` over the ball of radius ``beta``), hence biased for
``f`` itself: by ``O(beta)`` when ``f`` has an ``L``-Lipschitz gradient (Nesterov & Spokoiny 2017,
Lemma 3), by ``O(beta^2)`` when its Hessian is Lipschitz too, and not at all on a quadratic. Its
variance falls like ``1/q`` and grows with ``d``. The
coordinate-wise estimate of ZOO (Chen et al. 2017, eq. 6-7) takes symmetric differences along
chosen coordinates instead.

``f`` maps a batch ``m x ...`` of points to ``m`` values. All queries of an estimate go to ``f`` in one
call, rows grouped by base point (for ``n`` points and ``k`` queries each, rows ``i*k .. i*k+k-1``
belong to point ``i``), so that a black box can charge each to its example and split the batch to
memory. The optimisers (ZO-SGD, ZO-signSGD of Liu et al. 2019, ZO-Adam of Chen et al. 2019) take
such estimates.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .threat import check_budget, check_count

__all__ = ["KINDS", "directions", "estimate", "coordinate_estimate", "ZOSGD", "ZOSignSGD", "ZOAdam", "OPTIMIZERS",
           "minimize"]

KINDS = ("sphere", "gaussian")


def directions(n: int, q: int, shape, kind: str = "sphere", *, device=None, dtype=None,
               generator=None) -> torch.Tensor:
    """``n x q x *shape`` random directions: standard Gaussian, or uniform on the unit sphere of
    ``R^d`` (``d = prod(shape)``: a Gaussian normalised to length 1). ``generator`` must live on
    ``device``."""
    if kind not in KINDS:
        raise ValueError(f"directions: kind must be one of {KINDS}, got {kind!r}")
    u = torch.randn(n, q, *shape, device=device, dtype=dtype, generator=generator)
    if kind == "sphere":
        u = u / u.flatten(2).norm(dim=2).clamp_min(1e-12).view(n, q, *([1] * len(shape)))
    return u


def estimate(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, q: int = 10, beta: float = 1e-3,
             kind: str = "sphere", antithetic: bool = False, fx: torch.Tensor | None = None,
             generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The random-direction estimate of ``grad f`` at each of the ``n`` points ``x`` (module docstring).

    One call of ``f`` on ``n*q`` points (``2*n*q`` antithetic), plus ``n`` for ``f(x)`` in the forward
    form unless ``fx`` is given. Returns the estimates (shape of ``x``) and ``f(x)`` (``None`` in the
    antithetic form when not given).
    """
    q = check_count(q, "estimate", "q", 1)
    beta = check_budget(beta, "estimate", name="beta", positive=True)
    n, shape = len(x), x.shape[1:]
    d = x[0].numel()
    u = directions(n, q, shape, kind, device=x.device, dtype=x.dtype, generator=generator)
    phi = float(d) if kind == "sphere" else 1.0
    xs = x[:, None]
    if antithetic:
        both = f(torch.cat([xs + beta * u, xs - beta * u], 1).flatten(0, 1)).view(n, 2 * q)
        diff = (both[:, :q] - both[:, q:]) / (2 * beta)
    else:
        fx = (f(x) if fx is None else fx).reshape(n)
        diff = (f((xs + beta * u).flatten(0, 1)).view(n, q) - fx[:, None]) / beta
    g = phi / q * (diff.view(n, q, *([1] * len(shape))) * u).sum(1)
    return g, fx


def coordinate_estimate(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, coords: torch.Tensor, *,
                        h: float = 1e-4, fx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """ZOO's symmetric differences along coordinates ``coords`` (``n x k`` flat indices, one row per
    point): ``g_i = (f(x + h e_i) - f(x - h e_i)) / 2h`` and ``H_ii = (f(x + h e_i) - 2 f(x) + f(x - h e_i)) / h^2``
    (Chen et al. 2017, eq. 6 and 7). One call of ``f`` on ``2*n*k`` points (plus ``n`` for ``f(x)``
    unless given). Returns ``g`` and ``H`` as ``n x k``."""
    h = check_budget(h, "coordinate_estimate", name="h", positive=True)
    n, k = coords.shape
    flat = x.flatten(1)
    e = torch.zeros(n, k, flat.shape[1], device=x.device, dtype=x.dtype)
    e.scatter_(2, coords[:, :, None], h)
    pts = torch.cat([flat[:, None] + e, flat[:, None] - e], 1)  # n x 2k x d
    vals = f(pts.view(n * 2 * k, *x.shape[1:])).view(n, 2 * k)
    fx = (f(x) if fx is None else fx).reshape(n)
    plus, minus = vals[:, :k], vals[:, k:]
    return (plus - minus) / (2 * h), (plus - 2 * fx[:, None] + minus) / h ** 2


# ------------------------------------------------------------------------------------------ optimisers
def _coordinates(x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    flat = x.flatten(1)
    return torch.arange(flat.shape[1], device=x.device).expand(len(flat), -1) if index is None else index


class ZOSGD:
    """``x <- x - lr * g`` (ZO-SGD; Ghadimi & Lan 2013). With ``index`` (``n x k`` flat coordinates),
    ``g`` holds the estimates of those coordinates only, and only they move."""

    def __init__(self, lr: float = 1e-2):
        self.lr = check_budget(lr, "ZOSGD", name="lr", positive=True)

    def direction(self, g: torch.Tensor) -> torch.Tensor:
        return g

    def step(self, x: torch.Tensor, g: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        index, flat = _coordinates(x, index), x.flatten(1)
        return flat.scatter(1, index, flat.gather(1, index) - self.lr * self.direction(g.reshape(index.shape)))\
            .view_as(x)


class ZOSignSGD(ZOSGD):
    """``x <- x - lr * sign(g)`` (ZO-signSGD; Liu et al. 2019, Algorithm 1): the sign keeps the step
    size fixed whatever the estimate's scale, at the price of a bias the sign cannot average away."""

    def __init__(self, lr: float = 1e-2):
        self.lr = check_budget(lr, "ZOSignSGD", name="lr", positive=True)

    def direction(self, g: torch.Tensor) -> torch.Tensor:
        return g.sign()


class ZOAdam:
    """Adam on ZO estimates (ZO-AdaMM; Chen et al. 2019): ``m`` and ``v`` are running means of ``g`` and
    ``g^2``, step ``lr * m_hat / (sqrt(v_hat) + eps)``. With ``index`` (``n x k`` flat coordinates) only
    those coordinates are updated, each with its own step count: ZOO's coordinate-wise Adam
    (Chen et al. 2017, Algorithm 2). The state is sized by the first call; later calls pass all its
    rows, or name the ones they pass with ``rows`` (e.g. the examples still running)."""

    def __init__(self, lr: float = 1e-2, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.lr = check_budget(lr, "ZOAdam", name="lr", positive=True)
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"ZOAdam: betas must be two numbers in [0, 1), got {betas!r}")
        self.b1, self.b2 = betas
        self.eps = check_budget(eps, "ZOAdam", name="eps", positive=True)
        self.m = self.v = self.t = None

    def step(self, x: torch.Tensor, g: torch.Tensor, index: torch.Tensor | None = None,
             rows: torch.Tensor | None = None) -> torch.Tensor:
        flat = x.flatten(1)
        if self.m is None:
            if rows is not None:
                raise ValueError("ZOAdam: the first step sizes the state; pass all rows (rows=None)")
            self.m, self.v, self.t = torch.zeros_like(flat), torch.zeros_like(flat), torch.zeros_like(flat)
        if rows is None and len(flat) != len(self.m):
            raise ValueError(f"ZOAdam: the state holds {len(self.m)} rows, x has {len(flat)}; pass rows= to "
                             "update some of them")
        rows = torch.arange(len(flat), device=x.device) if rows is None else rows
        index = _coordinates(x, index)
        m, v, t = (s[rows].gather(1, index) for s in (self.m, self.v, self.t))
        g = g.reshape(index.shape)
        t = t + 1
        m = self.b1 * m + (1 - self.b1) * g
        v = self.b2 * v + (1 - self.b2) * g * g
        for s, val in ((self.m, m), (self.v, v), (self.t, t)):
            s[rows] = s[rows].scatter(1, index, val)
        step = self.lr * (m / (1 - self.b1 ** t)) / ((v / (1 - self.b2 ** t)).sqrt() + self.eps)
        return flat.scatter(1, index, flat.gather(1, index) - step).view_as(x)


OPTIMIZERS = {"sgd": ZOSGD, "sign": ZOSignSGD, "adam": ZOAdam}


def minimize(f: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, *, steps: int, optimizer: str = "sgd",
             lr: float = 1e-2, q: int = 10, beta: float = 1e-3, kind: str = "sphere", antithetic: bool = False,
             project: Callable[[torch.Tensor], torch.Tensor] | None = None,
             generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` iterations of ZO-SGD / ZO-signSGD / ZO-Adam (``optimizer`` = "sgd" / "sign" / "adam") on
    ``f`` from the points ``x0`` (``n`` independent runs in one batch), each step ``x <- P(step(x, g))``
    with ``g`` from :func:`estimate` and ``P`` = ``project`` (identity by default). Returns the last
    iterates and ``f`` at every iterate (``steps + 1 x n``; the forward form pays for ``f(x)`` anyway:
    ``n*(q+1)`` queries per step; the antithetic form evaluates it separately, ``n*(2q+1)``)."""
    steps = check_count(steps, "minimize", "steps")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"minimize: optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
    opt = OPTIMIZERS[optimizer](lr)
    x = x0.clone()
    values = []
    for _ in range(steps):
        fx = f(x).view(len(x))
        values.append(fx)
        g, _ = estimate(f, x, q=q, beta=beta, kind=kind, antithetic=antithetic, fx=fx, generator=generator)
        x = opt.step(x, g)
        if project is not None:
            x = project(x)
    values.append(f(x).view(len(x)))
    return x, torch.stack(values)
