"""CLEVER: a robustness score from extreme value theory (Weng et al., "Evaluating the Robustness of
Neural Networks: An Extreme Value Theory Approach", ICLR 2018).

For a classifier with logits ``f`` and reference class ``c``, the margin ``g_j = f_c - f_j`` must
fall to 0 before the label can change to ``j``; if ``L_j`` bounds the dual norm of its gradient
in the ball ``B_p(x0, R)``, no perturbation of Lp norm below ``min(g_j(x0) / L_j, R)`` reaches class
``j`` (Lemma 3.1 / Theorem 3.2, with ``1/p + 1/q = 1``). CLEVER *estimates* ``L_j`` instead of
bounding it: it takes the largest gradient norm of each of many batches of uniform samples of the
ball and fits a reverse Weibull law to these batch maxima; the law's location (its right end point)
is the estimate (Algorithm 1). The justification is the Fisher-Tippett-Gnedenko theorem (their
Theorem 4.1): *if* the normalised maxima of i.i.d. samples converge to a non-degenerate law, that
law is Gumbel, Fréchet or reverse Weibull, and reverse Weibull when the samples are bounded. For a
ReLU network the condition fails: the gradient is constant on each linear region, so its norm takes
finitely many values and the maxima have no non-degenerate limit. There the fit is a heuristic
extrapolation of the largest norm seen. Either way the score is an estimate of the minimal
distortion, not a certificate: a steep region that no sample hits is missed.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy import optimize, stats
from torch import nn

from ..threat import (
    check_batch,
    check_budget,
    check_count,
    check_labels,
    check_model_input,
    chunks,
    dual_norm,
    parse_norm,
)
from ._common import activation_floats

__all__ = ["CleverResult", "clever", "reverse_weibull_fit", "DEFAULT_RADIUS", "WEIBULL_SHAPES"]

#: the sampling radius R when none is given, sized for images in [0, 1] like the 8x8 digits
#: (about twice the typical C&W distortion of the digits' zoo models; R caps the score)
DEFAULT_RADIUS = {"l2": 2.0, "linf": 0.2, "l1": 10.0}
#: initial shapes of the Weibull fits (the authors' code); the fit with the best K-S p-value wins
WEIBULL_SHAPES = (0.1, 1.0, 5.0, 10.0, 20.0, 50.0, 100.0)


@dataclass
class CleverResult:
    """What :func:`clever` found, per input (N of them) and class (K of them)."""

    #: the CLEVER score: min over the classes computed of ``per_class`` (N,)
    score: torch.Tensor
    #: ``min(g_j(x0) / L_j, R)`` (N, K); ``inf`` at the reference class, ``nan`` where not computed
    per_class: torch.Tensor
    #: the fitted Lipschitz estimates ``L_j``, reverse-Weibull locations (N, K); ``nan`` where not computed
    lipschitz: torch.Tensor
    #: the margins ``g_j(x0) = f_c(x0) - f_j(x0)`` (N, K)
    margins: torch.Tensor
    #: the reference class ``c`` of every input (N,)
    reference: torch.Tensor


def reverse_weibull_fit(maxima, shapes: tuple[float, ...] = WEIBULL_SHAPES,
                        max_gap: float = 1.0) -> tuple[float, float, float, float]:
    """Fit a reverse Weibull distribution to batch maxima (Weng et al., 2018, Algorithm 1, line 9):
    maximum likelihood for ``weibull_min`` on the *negated* maxima from every initial shape in
    ``shapes``, keeping the fit with the best Kolmogorov-Smirnov p-value. Returns ``(shape, location,
    scale, p_value)`` of the reverse Weibull, whose location is the right end point of the maxima.

    As in the authors' code the sample is first shifted by its maximum and divided by its range,
    which keeps the optimiser (Nelder-Mead, scipy's default) well conditioned. Unlike the paper, the
    location is searched at most ``max_gap`` ranges above the largest maximum (``math.inf``: the
    paper's unconstrained fit): when the maxima look Gumbel-like the three-parameter likelihood has
    no finite optimum and grows as the shape goes to infinity and the location to infinity; on the
    digits MLP with R = 2 about one fit in five then ran off to a location 5 to 10^6 times the
    largest maximum, i.e. a score of almost 0. The location is never below the largest maximum (a
    Lipschitz constant is at least every gradient norm seen). Maxima that are all equal (a constant
    gradient norm, e.g. a linear model) have nothing to fit: their value is the location. If every
    fit fails, the largest maximum is returned with p-value 0.
    """
    m = np.asarray(maxima, dtype=np.float64).ravel()
    if m.size < 2 or not np.isfinite(m).all():
        raise ValueError(f"reverse_weibull_fit: need at least 2 finite maxima, got {m.size} values")
    if not max_gap > 0:
        raise ValueError(f"reverse_weibull_fit: max_gap must be > 0, got {max_gap}")
    top, spread = m.max(), m.max() - m.min()
    if spread <= 1e-6 * max(abs(top), 1e-30):  # equal up to float32 rounding
        return math.inf, float(top), 0.0, 1.0
    z = (top - m) / spread  # the negated maxima, shifted to start at 0 and scaled to [0, 1]

    def nelder_mead(func, x0, args=(), disp=0):  # parameters (shape, location, scale) of weibull_min
        bounds = [(0, None), (-max_gap, None), (0, None)]
        return optimize.minimize(func, x0, args=args, method="Nelder-Mead", bounds=bounds).x

    best = (math.nan, 0.0, math.nan, -1.0)
    for c0 in shapes:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            c, loc, scale = stats.weibull_min.fit(z, c0, optimizer=nelder_mead)
            p = stats.kstest(z, "weibull_min", args=(c, loc, scale)).pvalue
        if np.isfinite([c, loc, scale, p]).all() and p > best[3]:
            best = (c, loc, scale, p)
    c, loc, scale, p = best
    if p < 0:
        return math.nan, float(top), math.nan, 0.0
    return float(c), float(max(top - loc * spread, top)), float(scale * spread), float(p)


def _uniform_ball(n: int, shape: tuple[int, ...], radius: float, norm: str, gen: torch.Generator,
                  device, dtype=torch.float32) -> torch.Tensor:
    """``n`` points uniform in the Lp ball of ``radius`` centred at 0: a cube for L-inf; for L2 a
    Gaussian direction at radius ``R U^(1/d)``; for L1 the first d coordinates of a uniform point of
    the (d+1)-simplex (normalised exponentials, i.e. Dirichlet(1, ..., 1)) with random signs."""
    d = math.prod(shape)
    if norm == "linf":
        out = (torch.rand(n, d, generator=gen, device=device, dtype=dtype) * 2 - 1) * radius
    elif norm == "l2":
        z = torch.randn(n, d, generator=gen, device=device, dtype=dtype)
        u = torch.rand(n, 1, generator=gen, device=device, dtype=dtype)
        out = z / z.norm(dim=1, keepdim=True).clamp(min=1e-12) * radius * u ** (1 / d)
    else:
        e = -torch.log1p(-torch.rand(n, d + 1, generator=gen, device=device, dtype=dtype))  # Exp(1)
        sign = torch.randint(0, 2, (n, d), generator=gen, device=device).to(dtype) * 2 - 1
        out = sign * (e[:, :d] / e.sum(1, keepdim=True)) * radius
    return out.view(n, *shape)


def clever(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, norm: str = "l2",
           radius: float | None = None, n_batches: int = 100, batch_size: int = 256,
           target: torch.Tensor | None = None, seed: int | None = 0, x_min: float | None = 0.0,
           x_max: float | None = 1.0, shapes: tuple[float, ...] = WEIBULL_SHAPES) -> CleverResult:
    """The CLEVER score (Weng et al., ICLR 2018, Algorithms 1 and 2) of every input in ``x``:

        score_j = min(g_j(x0) / L_j, R),   g_j = f_c - f_j,   L_j = location of the reverse Weibull
                                                                fitted to max_{k <= N_s} ||grad g_j(x_k)||_q

    over ``n_batches`` (N_b) batches of ``batch_size`` (N_s) points ``x_k`` uniform in the ball
    ``||x_k - x0||_p <= R``, with ``q`` the dual norm (L2 -> ||.||_2, L-inf -> ||.||_1, L1 ->
    ||.||_inf). The reference class ``c`` is ``y`` if given, else the predicted label. Untargeted
    (``target=None``) the score is the minimum over all classes ``j != c`` (Algorithm 2); with
    ``target`` (one class per input) only that class is computed. A score is clamped to ``[0, R]``:
    0 when ``c`` is not the top class (already misclassified).

    Defaults: the paper uses N_b = 500 batches of N_s = 1024 points; the fast default is 100 x 256
    (25,600 gradients per input and class). ``radius`` defaults to ``DEFAULT_RADIUS[norm]`` (2, 0.2
    and 10 for L2, L-inf and L1, sized for 8x8 images in [0, 1]); R bounds the score, so choose it
    above the distortions you expect. Samples are clipped to ``[x_min, x_max]`` (``None``: not
    clipped): the threat model of the attacks is the ball *inside* the image box, and the Lipschitz
    constant only has to hold where an attacker can go. The K-S-best fit from the initial ``shapes``
    is kept (:func:`reverse_weibull_fit`); these fits (about 0.1 s per input and class on a CPU),
    not the gradients, dominate the cost. The points of all inputs share forward passes, in pieces
    of :data:`advlib.threat.MEMORY_BUDGET` floats, and one backward pass per class gives every
    point's gradient of ``g_j``.

    Estimates the *minimal distortion*; it is not a certificate (see the module docstring).
    """
    if x_min is not None and x_max is not None and not x_min < x_max:
        raise ValueError(f"clever: need x_min < x_max, got {x_min}, {x_max}")
    check_batch(x, "clever", x_min=x_min, x_max=x_max)
    norm = parse_norm(norm, "clever")
    n_classes = check_model_input(model, x, "clever")
    if y is not None:
        check_labels(y, len(x), n_classes, "clever")
    radius = DEFAULT_RADIUS[norm] if radius is None else radius
    check_budget(radius, "clever", name="radius", positive=True)
    n_batches = check_count(n_batches, "clever", "n_batches", 2)
    batch_size = check_count(batch_size, "clever", "batch_size", 2)
    x = x.detach()
    with torch.no_grad():
        logits0 = model(x)
    c = logits0.argmax(1) if y is None else y
    margins = logits0.gather(1, c[:, None]) - logits0  # g_j(x0), N x K
    if target is None:
        classes = torch.arange(n_classes, device=x.device).expand(len(x), -1)  # N x m, here m = K
    else:
        if (not isinstance(target, torch.Tensor) or target.shape != (len(x),) or target.is_floating_point()
                or target.min() < 0 or target.max() >= n_classes or (target == c).any()):
            raise ValueError(f"clever: target must be one class in 0..{n_classes - 1} per input, different "
                             f"from the reference class (y or the prediction); got {target!r}")
        classes = target.to(x.device)[:, None]

    # batch maxima of the dual gradient norms, (N * N_b) x m: chunks of whole batches share a forward
    gen = torch.Generator(device=x.device)
    gen.manual_seed(seed) if seed is not None else gen.seed()
    maxima = torch.empty(len(x) * n_batches, classes.shape[1], device=x.device)
    per_batch = batch_size * activation_floats(model, x)  # floats one batch of points keeps for its backward
    for piece in chunks(len(x) * n_batches, per_batch):
        b = torch.arange(piece.start, piece.stop, device=x.device)
        owner = (b // n_batches).repeat_interleave(batch_size)  # the input of every point
        pts = x[owner] + _uniform_ball(len(owner), x.shape[1:], radius, norm, gen, x.device, x.dtype)
        if x_min is not None or x_max is not None:
            pts = pts.clamp(x_min, x_max)
        pts.requires_grad_(True)
        logits = model(pts)
        z_c = logits.gather(1, c[owner, None]).squeeze(1)
        for k in range(classes.shape[1]):
            g = z_c - logits.gather(1, classes[owner, k, None]).squeeze(1)
            (grad,) = torch.autograd.grad(g.sum(), pts, retain_graph=k + 1 < classes.shape[1])
            maxima[b, k] = dual_norm(grad, norm).view(-1, batch_size).amax(1)

    # reverse Weibull fits per input and class (CPU, scipy)
    maxima = maxima.view(len(x), n_batches, -1).cpu().double().numpy()
    cls = classes.cpu()
    lip = torch.full((len(x), n_classes), math.nan, dtype=torch.float64)
    for i in range(len(x)):
        for k in range(cls.shape[1]):
            if cls[i, k] != c[i]:
                lip[i, cls[i, k]] = reverse_weibull_fit(maxima[i, :, k], shapes)[1]
    lip = lip.to(device=x.device, dtype=x.dtype)
    per_class = (margins / lip).clamp(0, radius)  # nan (not computed) stays nan
    per_class[torch.arange(len(x), device=x.device), c] = math.inf
    score = per_class.nan_to_num(math.inf).amin(1)
    return CleverResult(score=score, per_class=per_class, lipschitz=lip, margins=margins, reference=c)
