"""Checks, references and figures of lectures 40 (bound propagation: IBP, Fast-Lin, CROWN) and 41 (certified
radius and accuracy)."""
from __future__ import annotations

import torch

from ..threat import dual_order, order, parse_norm
from .exercises import ExerciseError, attempt

__all__ = ["check_interval_linear", "check_crown_relu", "check_linear_certified_radius", "reference_interval_linear",
           "reference_crown_relu", "reference_radius", "relaxation_figure"]


def _shape_error(got, want: torch.Tensor, what: str) -> ExerciseError | None:
    if not isinstance(got, torch.Tensor) or got.shape != want.shape:
        return ExerciseError(f"{what}: expected a tensor of shape {tuple(want.shape)}, got "
                             f"{getattr(got, 'shape', type(got).__name__)}")
    return None


def _pair(got, what: str):
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise ExerciseError(f"{what}: return a pair (lower, upper), got {type(got).__name__}")
    return got


# ------------------------------------------------------------------------------------------------ exercise 1
def reference_interval_linear(W: torch.Tensor, b: torch.Tensor, l: torch.Tensor, u: torch.Tensor):
    """The exact range ``(lower, upper)`` of ``W x + b`` over each box ``l <= x <= u`` of the batch
    (IBP's step through an affine layer, Gowal et al. 2018, eq. 6): centre ``W c + b``, radius ``|W| r``."""
    centre, radius = (l + u) / 2, (u - l) / 2
    mid, rad = centre @ W.T + b, radius @ W.abs().T
    return mid - rad, mid + rad


def check_interval_linear(interval_linear, *, strict: bool = False) -> None:
    """``interval_linear(W, b, l, u)`` must return ``(lower, upper)``: the exact range of each output
    of ``W x + b`` (``W`` is ``m x n``, ``b`` has ``m`` entries) when every ``x`` of the batch ranges over
    its box ``l <= x <= u`` (``l``, ``u`` are ``N x n``; results ``N x m``). The IBP step of an affine layer."""

    def check():
        g = torch.Generator().manual_seed(40)
        small = ([[1.0, -2.0], [0.5, 0.5], [-1.0, -1.0]], [0.0, 1.0, -0.5],  # W, b
                 [[-1.0, 0.0], [0.0, 0.0]], [[1.0, 2.0], [0.0, 3.0]])  # l, u: two boxes
        cases = [tuple(torch.tensor(t, dtype=torch.float64) for t in small)]
        for n, m in ((5, 4), (16, 10)):
            W, b = torch.randn(m, n, generator=g, dtype=torch.float64), torch.randn(m, generator=g, dtype=torch.float64)
            centre = torch.randn(7, n, generator=g, dtype=torch.float64)
            radius = torch.rand(7, n, generator=g, dtype=torch.float64)
            radius[0] = 0.0  # a box that is a single point
            cases.append((W, b, centre - radius, centre + radius))
        for W, b, l, u in cases:
            # first principles: a linear function of independent coordinates is smallest at the corner
            # where each x_i sits at l_i if its weight is positive, at u_i if it is negative
            Wp, Wn = W.clamp(min=0), W.clamp(max=0)
            want_lo, want_up = l @ Wp.T + u @ Wn.T + b, u @ Wp.T + l @ Wn.T + b
            got = interval_linear(W.clone(), b.clone(), l.clone(), u.clone())
            got_lo, got_up = _pair(got, "interval_linear")
            for t, want, name in ((got_lo, want_lo, "lower"), (got_up, want_up, "upper")):
                if err := _shape_error(t, want, f"{name} for W {tuple(W.shape)} and a batch of {len(l)} boxes"):
                    if isinstance(t, torch.Tensor) and t.shape == want.shape[::-1]:
                        raise ExerciseError(f"{err} Hint: the batch comes first, so the product is x @ W.T "
                                            "(N x n times n x m).")
                    raise err
            got_lo, got_up = got_lo.double(), got_up.double()
            if torch.allclose(got_lo, want_lo, atol=1e-6) and torch.allclose(got_up, want_up, atol=1e-6):
                continue
            if torch.allclose(got_lo, l @ W.T + b, atol=1e-6) and torch.allclose(got_up, u @ W.T + b, atol=1e-6):
                raise ExerciseError("W l + b and W u + b are the bounds only when every weight is >= 0. A negative "
                                    "weight turns the input's upper end into the output's lower end. Hint: centre "
                                    "c = (l + u) / 2 and radius r = (u - l) / 2 give W c + b -+ |W| r.")
            if (got_lo > got_up + 1e-9).any():
                raise ExerciseError("some lower bounds exceed their upper bounds. Hint: return (lower, upper) in that "
                                    "order; the output's radius |W| r is never negative.")
            if torch.allclose(got_lo + b, want_lo, atol=1e-6) and torch.allclose(got_up + b, want_up, atol=1e-6):
                raise ExerciseError("the bias b is missing: the outputs are W x + b.")
            if ((got_lo > want_lo + 1e-6) | (got_up < want_up - 1e-6)).any():
                raise ExerciseError("your interval is too narrow: some corner of the box gives an output outside it, "
                                    "so the bound is not sound. Hint: W c + b -+ |W| r with c and r the box's centre "
                                    "and radius.")
            raise ExerciseError("your interval is sound but wider than the exact range of W x + b on the box. "
                                "Hint: each output is a sum of independent terms W_ij x_j; bound each term on its "
                                "own interval, i.e. W c + b -+ |W| r.")

    attempt(check, title="interval bounds of an affine layer", strict=strict)


# ------------------------------------------------------------------------------------------------ exercise 2
def reference_crown_relu(l: torch.Tensor, u: torch.Tensor):
    """CROWN's lines ``(a_lo, b_lo, a_up, b_up)`` for ReLU on ``[l, u]`` (Zhang et al. 2018, Sec. 3.2),
    neuron by neuron from the definitions (any shape, element-wise): the answer the check expects."""
    a_lo, b_lo, a_up, b_up = (torch.zeros(l.numel(), dtype=l.dtype) for _ in range(4))
    for i, (lo, up) in enumerate(zip(l.flatten().tolist(), u.flatten().tolist())):
        if lo >= 0:  # always active: relu(z) = z
            a_lo[i] = a_up[i] = 1.0
        elif up <= 0:  # always inactive: relu(z) = 0
            pass
        else:  # the chord from (l, 0) to (u, u); below it, 0 or z, whichever leaves the smaller area
            a_up[i] = up / (up - lo)
            b_up[i] = -a_up[i] * lo
            a_lo[i] = 1.0 if up > -lo else 0.0
    return tuple(t.view_as(l).to(l.device) for t in (a_lo, b_lo, a_up, b_up))


def check_crown_relu(crown_relu, *, strict: bool = False) -> None:
    """``crown_relu(l, u)`` must return ``(a_lo, b_lo, a_up, b_up)``, element-wise like ``l``, with
    ``a_lo z + b_lo <= relu(z) <= a_up z + b_up`` on ``[l, u]``: the identity or zero for a stable
    neuron; for an unstable one (``l < 0 < u``) the chord through ``(l, 0)`` and ``(u, u)`` above and,
    below, the line ``z`` if ``u > -l`` else ``0`` (CROWN's adaptive choice, the smaller area)."""

    def check():
        l = torch.tensor([-1.0, -3.0, -2.0, 0.5, 0.0, -2.0, -4.0, -0.5, 1.0, -1e-3], dtype=torch.float64)
        u = torch.tensor([3.0, 1.0, 2.5, 2.0, 1.0, 0.0, -1.0, 0.25, 1.0, 5.0], dtype=torch.float64)
        want = reference_crown_relu(l, u)
        got = crown_relu(l.clone(), u.clone())
        if not isinstance(got, (tuple, list)) or len(got) != 4:
            raise ExerciseError(f"return four tensors (a_lo, b_lo, a_up, b_up), got {type(got).__name__}")
        for t, w, name in zip(got, want, ("a_lo", "b_lo", "a_up", "b_up")):
            if isinstance(t, (int, float)):
                raise ExerciseError(f"{name} is a number: return one value per neuron (e.g. torch.zeros_like(l)).")
            if err := _shape_error(t, w, name):
                raise err
        got = [t.double() for t in got]
        if any(not torch.isfinite(t).all() for t in got):
            bad = torch.stack([~torch.isfinite(t) for t in got]).any(0)
            raise ExerciseError(f"NaN or inf for l={l[bad][0].item()}, u={u[bad][0].item()}. Hint: the chord's slope "
                                "u / (u - l) is only for unstable neurons; a stable one (l >= 0 or u <= 0) is the "
                                "identity or zero, and l = u divides by zero.")
        a_lo, b_lo, a_up, b_up = got
        # soundness, from the definition: the lines bound relu at many points of every interval
        z = l[:, None] + (u - l)[:, None] * torch.linspace(0, 1, 101, dtype=torch.float64)
        relu = z.clamp(min=0)
        low, up = a_lo[:, None] * z + b_lo[:, None], a_up[:, None] * z + b_up[:, None]
        names = [f"[{a:g}, {b:g}]" for a, b in zip(l.tolist(), u.tolist())]
        if bad := [names[i] for i in range(len(l)) if (up[i] < relu[i] - 1e-9).any()]:
            raise ExerciseError(f"the upper line falls below relu(z) on {', '.join(bad)}. Hint: above an unstable "
                                "neuron, the chord from (l, 0) to (u, u): slope u / (u - l), intercept -l u / (u - l) "
                                "(positive); a stable neuron is its own line.")
        if bad := [names[i] for i in range(len(l)) if (low[i] > relu[i] + 1e-9).any()]:
            raise ExerciseError(f"the lower line rises above relu(z) on {', '.join(bad)}: not a lower bound. Hint: "
                                "below an unstable neuron any line through the origin with slope in [0, 1] is "
                                "sound; an active neuron (l >= 0) is the identity, an inactive one zero.")
        if not (torch.allclose(a_up, want[2]) and torch.allclose(b_up, want[3])):
            raise ExerciseError("the upper line is sound but not the tightest: it should touch relu at both ends, "
                                "i.e. be the chord through (l, 0) and (u, u) for an unstable neuron, and relu itself "
                                "for a stable one.")
        if torch.allclose(b_lo, want[1]) and torch.allclose(a_lo, want[0]):
            return
        unstable = (l < 0) & (u > 0)
        if torch.allclose(a_lo[unstable], (u / (u - l))[unstable]):
            raise ExerciseError("that is Fast-Lin's lower line, parallel to the upper one. CROWN chooses the lower "
                                "slope per neuron: 1 (the line z) if u > -l, else 0, whichever leaves the smaller "
                                "area between the line and relu.")
        if torch.allclose(a_lo[unstable], 1 - want[0][unstable]):
            raise ExerciseError("the choice is the wrong way round: the line z has the smaller area when u > -l "
                                "(most of the interval is on the positive side), the line 0 when u < -l.")
        raise ExerciseError("the lower line is sound but not CROWN's: through the origin (intercept 0) with slope 1 "
                            "if u > -l else 0 for an unstable neuron, the identity or zero for a stable one.")

    attempt(check, title="CROWN's relaxation of ReLU", strict=strict)


# ------------------------------------------------------------------------------------------------ exercise 3
def reference_radius(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor, norm: str) -> torch.Tensor:
    """The exact robustness radius of the linear classifier ``argmax(W x + b)`` at each row of ``x``
    in the ``norm`` ball (no box): ``min_{j != y} (z_y - z_j) / ||w_y - w_j||_q`` with ``q`` the dual
    norm, and 0 where ``x`` is misclassified. Written as a loop, from the definition."""
    return _linear_radius(W, b, x, y, dual_order(parse_norm(norm, "reference_radius")))


def _linear_radius(W, b, x, y, q: float) -> torch.Tensor:
    """``min_{j != y} (z_y - z_j) / ||w_y - w_j||_q`` per row of ``x`` (0 where misclassified), by a loop."""
    out = torch.zeros(len(x), dtype=torch.float64)
    z = x.double() @ W.double().T + b.double()
    for n in range(len(x)):
        t = int(y[n])
        if int(z[n].argmax()) != t:
            continue
        out[n] = min((z[n, t] - z[n, j]).item() / torch.linalg.vector_norm(W[t].double() - W[j].double(), ord=q).item()
                     for j in range(len(b)) if j != t)
    return out


def _linear_problem(seed: int = 41):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(5, 12, generator=g, dtype=torch.float64)
    b = torch.randn(5, generator=g, dtype=torch.float64) * 0.5
    x = torch.rand(24, 12, generator=g, dtype=torch.float64)
    y = (x @ W.T + b).argmax(1)
    y[:4] = (y[:4] + 1) % 5  # four misclassified points
    return W, b, x, y


def check_linear_certified_radius(linear_certified_radius, *, strict: bool = False) -> None:
    """``linear_certified_radius(W, b, x, y, norm)`` must return, for each row of ``x`` (``N x n``), the
    largest ``eps`` such that no ``x'`` with ``||x' - x||_p <= eps`` changes the prediction of
    ``argmax(W x' + b)`` away from ``y`` (``norm`` in ``"linf"``, ``"l2"``, ``"l1"``; no box):
    ``min_{j != y} (z_y - z_j) / ||w_y - w_j||_q`` (dual norm ``q``), and 0 where the prediction is wrong."""

    def check():
        W, b, x, y = _linear_problem()
        for norm in ("linf", "l2", "l1"):
            want = reference_radius(W, b, x, y, norm)
            got = linear_certified_radius(W.clone(), b.clone(), x.clone(), y.clone(), norm)
            if err := _shape_error(got, want, f"norm={norm!r}, {len(x)} points"):
                raise err
            got = got.double()
            if torch.isnan(got).any() or torch.isinf(got).any():
                raise ExerciseError(f"norm={norm!r}: NaN or inf radii. Hint: leave j = y out of the minimum "
                                    "(w_y - w_y = 0 divides by zero).")
            if torch.allclose(got, want, rtol=1e-5, atol=1e-7):
                continue
            wrong = want == 0
            if (got[wrong] != 0).any():
                raise ExerciseError(f"norm={norm!r}: a misclassified point gets radius {got[wrong].abs().max():.3g}; "
                                    "it has no robustness at all. Hint: return 0 where argmax(z) != y.")
            right = ~wrong
            p, ball = order(norm), {"linf": "L-inf", "l1": "L1", "l2": "L2"}[norm]
            if p != dual_order(norm) and torch.allclose(got[right], _linear_radius(W, b, x, y, p)[right], rtol=1e-5):
                raise ExerciseError(f"norm={norm!r}: you divided by the {ball} norm of w_y - w_j, the norm of the "
                                    "ball. By Hölder's inequality a change of size eps in the p-norm "
                                    "moves (w_y - w_j).x by at most eps times the *dual* norm: L1 for an L-inf ball, "
                                    "L-inf for an L1 ball (L2 is its own dual).")
            if (got[right] > want[right] * (1 + 1e-5)).any():
                raise ExerciseError(f"norm={norm!r}: some radii are too large, so your ball holds points with another "
                                    "prediction. Hint: take the minimum over *every* j != y of "
                                    "(z_y - z_j) / ||w_y - w_j||_q (the closest boundary need not be that of the "
                                    "runner-up class).")
            raise ExerciseError(f"norm={norm!r}: expected {[round(v, 4) for v in want[4:8].tolist()]} for points 4-7, "
                                f"got {[round(v, 4) for v in got[4:8].tolist()]}. Hint: min over j != y of "
                                "(z_y - z_j) / ||w_y - w_j||_q, with q the dual norm (linf -> 1, l2 -> 2, l1 -> inf).")

    attempt(check, title="certified radius of a linear classifier", strict=strict)


# ------------------------------------------------------------------------------------------------ figure
def relaxation_figure(relaxation, cases=None):
    """Linear relaxations of activations on intervals, from ``relaxation(op, l, u, method)`` (e.g.
    :func:`advlib.verify.relaxation`). ``cases`` is a list of ``(op, l, u)``; by default two ReLUs
    (``u > -l`` and ``u < -l``) and two tanh neurons (an interval across 0, one on the concave side).
    ReLU panels show the triangle (the convex hull), Fast-Lin's two parallel lines and CROWN's
    adaptive lower line; tanh panels show CROWN's lines."""
    import matplotlib.pyplot as plt
    from torch import nn

    cases = cases or [(nn.ReLU(), -1.0, 3.0), (nn.ReLU(), -3.0, 1.0), (nn.Tanh(), -2.0, 1.0), (nn.Tanh(), 0.5, 2.5)]
    cols = min(len(cases), 2)  # two panels a row: readable at book width
    rows = -(-len(cases) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(cases):]:
        ax.axis("off")
    for ax, (op, lo, up) in zip(axes.flat, cases):
        l, u = torch.tensor([float(lo)]), torch.tensor([float(up)])
        pad = 0.25 * (up - lo)
        z = torch.linspace(lo - pad, up + pad, 300)
        inside = torch.linspace(lo, up, 200)
        with torch.no_grad():
            ax.plot(z, op(z), color="#2d2d2d", lw=2, label=type(op).__name__.lower())
        relu = isinstance(op, nn.ReLU)
        methods = ("fastlin", "crown") if relu else ("crown",)
        styles = {"fastlin": dict(color="#dd8452", ls="--"), "crown": dict(color="#4c72b0", ls="-")}
        for method in methods:
            a_lo, b_lo, a_up, b_up = (float(t) for t in relaxation(op, l, u, method))
            name = {"fastlin": "Fast-Lin", "crown": "CROWN"}[method]
            if not relu or method == "fastlin":  # the upper lines of the two coincide on ReLU
                ax.plot(inside, a_up * inside + b_up, lw=1.6, **{**styles[method], "color": "#c44e52"},
                        label="upper line" if relu else f"{name} upper")
            ax.plot(inside, a_lo * inside + b_lo, lw=1.6, **styles[method], label=f"{name} lower")
        if relu:
            ax.fill([lo, 0, up], [0, 0, up], color="#4c72b0", alpha=0.12, label="triangle (convex hull)")
        ax.axvline(lo, color="#999", lw=0.6, ls=":"), ax.axvline(up, color="#999", lw=0.6, ls=":")
        ax.set_title(f"{type(op).__name__} on [l, u] = [{lo:g}, {up:g}]", fontsize=10)
        ax.set_xlabel("pre-activation z"), ax.grid(alpha=0.3), ax.legend(fontsize=9)
    fig.tight_layout()
    return fig
