"""Checks, references and helpers of lecture 42 (robustness estimates: CLEVER and randomized smoothing)."""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats
from torch import nn

from ..threat import dual_norm, parse_norm
from .exercises import ExerciseError, attempt

__all__ = ["check_sample_l2_ball", "check_clever_from_gradients", "check_clopper_pearson_lower", "gradient_norms",
           "plot_weibull_fit", "reference_clever_score"]


# ------------------------------------------------------------------------------------------------ helpers
def gradient_norms(model: nn.Module, x0: torch.Tensor, c: int, j: int, *, norm: str = "l2",
                   radius: float | None = None, n_batches: int = 100, batch_size: int = 256,
                   seed: int = 0) -> np.ndarray:
    """The dual norms ``||grad g(x_k)||_q`` of the margin ``g = z_c - z_j`` at ``n_batches x batch_size``
    points ``x_k`` uniform in the Lp ball of ``radius`` around the single input ``x0`` (C x H x W),
    clipped to the image box [0, 1] — the raw material of CLEVER (Weng et al., 2018, Algorithm 1,
    lines 3-7), with the sampler of :func:`advlib.verify.clever`. Returns an array of shape
    ``(n_batches, batch_size)``: one row per batch, so ``.max(1)`` gives the batch maxima."""
    from ..verify.clever import DEFAULT_RADIUS, _uniform_ball

    norm = parse_norm(norm, "gradient_norms")
    radius = DEFAULT_RADIUS[norm] if radius is None else radius
    gen = torch.Generator(device=x0.device).manual_seed(seed)
    rows = []
    for _ in range(n_batches):
        pts = (x0 + _uniform_ball(batch_size, tuple(x0.shape), radius, norm, gen, x0.device, x0.dtype)).clamp(0, 1)
        pts.requires_grad_(True)
        logits = model(pts)
        (grad,) = torch.autograd.grad((logits[:, c] - logits[:, j]).sum(), pts)
        rows.append(dual_norm(grad, norm).detach().cpu())
    return torch.stack(rows).double().numpy()


def plot_weibull_fit(norms: np.ndarray, fit, *, title: str = ""):
    """Two panels: the histogram of all gradient norms and of the batch maxima with the fitted
    reverse Weibull density, and the empirical CDF of the maxima against the fitted CDF.
    ``fit`` is ``(shape, location, scale, p_value)`` of :func:`advlib.verify.clever.reverse_weibull_fit`."""
    import matplotlib.pyplot as plt

    shape, loc, scale, p = fit
    maxima = norms.max(1)
    law = stats.weibull_max(shape, loc=loc, scale=scale)  # the reverse Weibull: support (-inf, loc]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 4.4), gridspec_kw={"width_ratios": (1.5, 1)})
    bins = np.linspace(norms.min(), max(loc, norms.max()) * 1.01, 80)
    ax1.hist(norms.ravel(), bins=bins, density=True, color="#999999", alpha=0.6,
             label=f"all {norms.size:,} gradient norms")
    ax1.hist(maxima, bins=bins, density=True, color="#4c72b0", alpha=0.7,
             label=f"the {len(maxima)} batch maxima")
    t = np.linspace(maxima.min() - 0.2 * (loc - maxima.min()), loc, 400)
    ax1.plot(t, law.pdf(t), color="#c44e52", lw=2, label=f"reverse Weibull fit (shape {shape:.2g})")
    ax1.axvline(loc, color="#c44e52", ls="--", lw=1.2, label=f"location = estimate of L: {loc:.3f}")
    ax1.axvline(norms.max(), color="#2d2d2d", ls=":", lw=1.2, label=f"largest norm seen: {norms.max():.3f}")
    ax1.set_xlabel(r"dual norm of the margin's gradient $\|\nabla g(x)\|_q$"), ax1.set_ylabel("density")
    ax1.legend(fontsize=9, loc="upper left")
    ax1.set_title("gradient norms in the ball and their batch maxima", fontsize=10)
    s = np.sort(maxima)
    ax2.step(s, np.arange(1, len(s) + 1) / len(s), where="post", color="#4c72b0", label="batch maxima (empirical)")
    t2 = np.linspace(s[0] - 0.1 * (loc - s[0]), loc, 400)
    ax2.plot(t2, law.cdf(t2), color="#c44e52", lw=2, label=f"fitted CDF (K-S p-value {p:.2f})")
    ax2.axvline(loc, color="#c44e52", ls="--", lw=1.2)
    ax2.set_xlabel("batch maximum"), ax2.set_ylabel("cumulative probability")
    ax2.legend(fontsize=9, loc="upper left")
    ax2.set_title("goodness of fit", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------ exercise 1
def check_sample_l2_ball(sample_l2_ball, *, strict: bool = False) -> None:
    """``sample_l2_ball(x0, radius, n)`` must return ``n`` points (``n x *x0.shape``) drawn uniformly
    from the L2 ball of ``radius`` centred at the single input ``x0``. Tested from first principles:
    every point is inside; the direction ``delta / ||delta||`` is uniform on the sphere (its mean is
    0, and in 2-D its angle is uniform); and since the volume inside radius ``r`` grows like ``r^d``,
    ``(||delta|| / R)^d`` must be uniform on [0, 1] (a Kolmogorov-Smirnov test)."""

    def check():
        torch.manual_seed(41)
        n = 20_000
        cases = [(torch.tensor([0.3, -0.2]), 1.0), (torch.rand(1, 8, 8), 2.0), (torch.randn(3, 2, 2), 0.5)]
        for x0, radius in cases:
            d = x0.numel()
            where = f"x0 of shape {tuple(x0.shape)} (d = {d}), radius {radius}"
            got = sample_l2_ball(x0.clone(), radius, n)
            if not isinstance(got, torch.Tensor) or tuple(got.shape) != (n, *x0.shape):
                raise ExerciseError(f"{where}: expected a tensor of shape {(n, *x0.shape)}, got "
                                    f"{tuple(getattr(got, 'shape', ())) or type(got).__name__}")
            got = got.detach().double()
            if not torch.isfinite(got).all():
                raise ExerciseError(f"{where}: the points contain NaN or inf")
            delta = (got - x0.double()).flatten(1)
            r = delta.norm(dim=1)
            if (r > radius * (1 + 1e-5)).any():
                share = f"{(r > radius * (1 + 1e-5)).float().mean():.0%}"
                if (got.flatten(1).norm(dim=1) <= radius * (1 + 1e-5)).all():
                    raise ExerciseError(f"{where}: the points are not centred at x0. Hint: sample delta in the ball "
                                        "around 0, then return x0 + delta.")
                if (delta.abs().amax(1) <= radius * (1 + 1e-5)).all():
                    raise ExerciseError(f"{where}: {share} of the points lie outside the ball, but inside the cube "
                                        "[-R, R]^d around x0. Hint: a cube is not a ball; draw a direction and a "
                                        "radius instead.")
                raise ExerciseError(f"{where}: {share} of the points lie outside the ball (largest ||x - x0|| = "
                                    f"{r.max():.3f}). Hint: normalise the Gaussian direction to unit length before "
                                    "scaling it.")
            if torch.allclose(r, torch.full_like(r, radius), rtol=1e-4):
                raise ExerciseError(f"{where}: every point has ||x - x0|| = R: they lie on the sphere, not in the "
                                    "ball. Hint: scale each direction by its own random radius.")
            u = delta / r[:, None].clamp(min=1e-300)
            if u.mean(0).norm() > 6 * math.sqrt(1 / n):  # the mean of n unit vectors uniform on the sphere
                raise ExerciseError(f"{where}: the directions are not uniform on the sphere (their mean has length "
                                    f"{u.mean(0).norm():.3f}, expected about {math.sqrt(1 / n):.3f}). Hint: a "
                                    "standard Gaussian vector (torch.randn) is isotropic; a uniform (torch.rand) "
                                    "one is not.")
            if d == 2 and stats.kstest((torch.atan2(u[:, 1], u[:, 0]).numpy() + math.pi) / (2 * math.pi),
                                       "uniform").pvalue < 1e-4:
                raise ExerciseError(f"{where}: the directions are not uniform on the circle. Hint: normalise a "
                                    "standard Gaussian vector.")
            ks = stats.kstest(((r / radius) ** d).numpy(), "uniform")
            if ks.pvalue < 1e-4:
                too_central = torch.median(r / radius) < 0.5 ** (1 / d)
                where_mass = "near the centre" if too_central else "near the surface"
                hint = ("the volume inside radius r grows like r^d, so most of a ball's points lie near its "
                        "surface: draw the radius as R * U^(1/d), with d = x0.numel() the number of coordinates"
                        if too_central else
                        "draw the radius as R * U^(1/d) with U uniform on [0, 1] and d = x0.numel()")
                raise ExerciseError(f"{where}: the distances ||x - x0|| do not have the law of a uniform point "
                                    f"(too many points {where_mass}; K-S p-value {ks.pvalue:.1e}). Hint: {hint}.")

    attempt(check, title="uniform sampling in the L2 ball", strict=strict)


# ------------------------------------------------------------------------------------------------ exercise 2
def _gradient_batches(kind: int, gen: np.random.Generator, n_batches: int, batch_size: int) -> np.ndarray:
    """Gradient norms with a known bounded law: their supremum is 3, 0.8 or 12 (kind 0, 1, 2);
    kind 3 is constant (a linear model)."""
    u = gen.random((n_batches, batch_size))
    if kind == 0:
        return 3.0 * (1 - 0.6 * u ** 0.5)  # density growing linearly towards the end point 3
    if kind == 1:
        return 0.8 - 0.5 * gen.beta(2.0, 5.0, (n_batches, batch_size))
    if kind == 2:
        return 12.0 * np.sqrt(1 - u ** 3)
    return np.full((n_batches, batch_size), 1.7)


def _fit(maxima: np.ndarray) -> tuple[float, float, float, float]:
    from ..verify.clever import reverse_weibull_fit

    return reverse_weibull_fit(maxima)


def _clip(value: float, radius: float) -> float:
    return min(max(value, 0.0), radius)


def reference_clever_score(margin: float, grad_norms, radius: float) -> float:
    """The CLEVER score of one input and class from its gradient norms (Weng et al., 2018, Algorithm 1,
    lines 8-10): ``min(max(margin / L, 0), radius)``, ``L`` the location of the reverse Weibull fitted to
    the batch maxima (one row of ``grad_norms`` per batch). The answer the check of exercise 2 expects."""
    return _clip(margin / _fit(np.asarray(grad_norms).max(axis=1))[1], radius)


def check_clever_from_gradients(clever_from_gradients, *, strict: bool = False) -> None:
    """``clever_from_gradients(margin, grad_norms, radius)`` must return the CLEVER score of one input
    and class: ``min(max(margin / L, 0), radius)``, where ``L`` is the location of the reverse Weibull
    fitted (:func:`advlib.verify.clever.reverse_weibull_fit`) to the *batch maxima* of ``grad_norms``
    (``n_batches x batch_size``, one row per batch). Tested on gradient norms with a known bounded
    law (supremum 3, 0.8, 12, or a constant 1.7 as for a linear model)."""

    def check():
        gen = np.random.default_rng(41)
        cases = [(0.9, 0, 4.0), (0.5, 1, 2.0), (6.0, 2, 0.3), (-0.4, 0, 2.0), (1.2, 3, 2.0)]
        for margin, kind, radius in cases:
            norms = _gradient_batches(kind, gen, 60, 128)
            where = f"margin {margin}, radius {radius}"
            fit = _fit(norms.max(1))
            L = fit[1]
            want = _clip(margin / L, radius)
            got = clever_from_gradients(margin, norms.copy(), radius)
            try:
                got = float(got)
            except (TypeError, ValueError):
                raise ExerciseError(f"{where}: return one number (a float), got {type(got).__name__}") from None
            if not math.isfinite(got):
                raise ExerciseError(f"{where}: the score is {got}")
            if math.isclose(got, want, rel_tol=1e-3, abs_tol=1e-9):
                continue

            def close(value: float, got: float = got) -> bool:
                return math.isclose(got, value, rel_tol=1e-3, abs_tol=1e-9)

            if margin < 0 and got < 0:
                raise ExerciseError(f"{where}: the score is negative ({got:.3f}). Hint: a negative margin means the "
                                    "input is already misclassified: its score is 0 (clip at 0).")
            if margin / L > radius and close(margin / L):
                raise ExerciseError(f"{where}: the score {got:.3f} exceeds the sampling radius. Hint: the Lipschitz "
                                    "constant was only estimated inside the ball of radius R, so the score is "
                                    "capped at R: min(margin / L, R).")
            # the typical mistakes, recognised where the cap at R does not hide them
            if close(_clip(margin / norms.max(), radius)) or close(margin / norms.max()):
                raise ExerciseError(f"{where}: you divided by the largest gradient norm seen ({norms.max():.4f}). "
                                    "Hint: that is only a lower bound of the local Lipschitz constant; fit the "
                                    "reverse Weibull to the batch maxima and use its *location* (the right end "
                                    "point of their law).")
            if margin > 0 and (close(margin * L) or close(_clip(margin * L, radius))):
                raise ExerciseError(f"{where}: you multiplied the margin by L. Hint: the margin falls by at most L "
                                    "per unit of distance, so it cannot reach 0 before a distance margin / L.")
            if kind != 3 and margin > 0:
                L_cols = _fit(norms.max(0))[1]
                if close(_clip(margin / L_cols, radius)) or close(margin / L_cols):
                    raise ExerciseError(f"{where}: you took the maxima over the wrong axis. Hint: grad_norms has one "
                                        "row per batch; the batch maxima are grad_norms.max(axis=1).")
                if any(v > 0 and (close(margin / v) or close(_clip(margin / v, radius))) for v in fit[::2] + fit[3:]):
                    raise ExerciseError(f"{where}: you used the wrong parameter of the fit. Hint: "
                                        "reverse_weibull_fit returns (shape, location, scale, p_value); L is the "
                                        "location.")
            raise ExerciseError(f"{where}: got {got:.4f}, expected {want:.4f}. Hint: maxima = "
                                "grad_norms.max(axis=1); L = reverse_weibull_fit(maxima)[1]; score = "
                                "min(max(margin / L, 0), radius).")

    attempt(check, title="CLEVER score from gradient norms", strict=strict)


# ------------------------------------------------------------------------------------------------ exercise 3
def _scipy_lower(k: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """The one-sided (1 - alpha) exact lower bound from scipy's binomial test: the lower end of the
    two-sided exact (Clopper-Pearson) interval at confidence 1 - 2 alpha."""
    return np.array([stats.binomtest(int(ki), n).proportion_ci(1 - 2 * alpha, method="exact").low for ki in k])


def check_clopper_pearson_lower(clopper_pearson_lower, *, strict: bool = False) -> None:
    """``clopper_pearson_lower(k, n, alpha)`` must return, for every count ``k`` of the integer array
    (successes out of ``n`` trials), the one-sided ``(1 - alpha)`` Clopper-Pearson lower confidence
    bound on the success probability: the ``p`` with ``P(Binomial(n, p) >= k) = alpha``, and 0 when
    ``k = 0``. Checked against scipy's exact binomial confidence interval and against that defining
    equation."""

    def check():
        gen = np.random.default_rng(41)
        for n, alpha in ((10, 0.05), (100, 0.001), (10_000, 0.001), (1000, 0.2)):
            k = np.unique(np.concatenate([[0, 1, n // 2, n - 1, n], gen.integers(0, n + 1, 6)]))
            where = f"n = {n}, alpha = {alpha}"
            want = _scipy_lower(k, n, alpha)
            got = clopper_pearson_lower(k.copy(), n, alpha)
            try:
                got = np.asarray(got.detach().cpu() if isinstance(got, torch.Tensor) else got, dtype=np.float64)
            except (TypeError, ValueError):
                raise ExerciseError(f"{where}: return an array of numbers, got {type(got).__name__}") from None
            if got.shape != k.shape:
                raise ExerciseError(f"{where}: expected one bound per count, shape {k.shape}, got {got.shape}")
            if np.isnan(got[k == 0]).any():
                raise ExerciseError(f"{where}: the bound is NaN for k = 0. Hint: Beta(0, ...) does not exist; no "
                                    "success at all gives the lower bound 0 (np.where(k > 0, ..., 0.0)).")
            if not np.isfinite(got).all():
                raise ExerciseError(f"{where}: some bounds are NaN or inf (at k = {k[~np.isfinite(got)].tolist()})")
            if np.allclose(got, want, rtol=1e-6, atol=1e-10):
                # first principles: at the bound, seeing k or more successes has probability exactly alpha
                tail = stats.binom.sf(k[k > 0] - 1, n, got[k > 0])
                if not np.allclose(tail, alpha, rtol=1e-4):
                    raise ExerciseError(f"{where}: P(Binomial(n, p) >= k) = {tail} at your bound, not alpha")
                continue
            beta = stats.beta.ppf
            with np.errstate(all="ignore"):
                ks = np.maximum(k, 1)
                two_sided = np.where(k > 0, beta(alpha / 2, ks, n - k + 1), 0.0)
                wrong_b = np.where(k > 0, beta(alpha, ks, n - k), 0.0)
                shifted = beta(alpha, k + 1, np.maximum(n - k, 1))
                upper = np.where(k < n, beta(1 - alpha, k + 1, np.maximum(n - k, 1)), 1.0)
                p_hat = k / n
                wald = p_hat - stats.norm.ppf(1 - alpha) * np.sqrt(p_hat * (1 - p_hat) / n)
            if (got > p_hat + 1e-9).any():
                if np.allclose(got, upper, rtol=1e-5):
                    raise ExerciseError(f"{where}: that is the *upper* confidence bound. Hint: the lower bound is "
                                        "the alpha quantile of Beta(k, n - k + 1).")
                raise ExerciseError(f"{where}: a lower bound above the estimate k / n (at k = "
                                    f"{k[got > p_hat + 1e-9].tolist()}). Hint: the lower bound is the alpha quantile "
                                    "of Beta(k, n - k + 1).")
            if np.allclose(got, p_hat):
                raise ExerciseError(f"{where}: you returned the estimate k / n. Hint: CERTIFY needs a value that "
                                    "p_A exceeds with probability 1 - alpha: the alpha quantile of Beta(k, n - k + 1).")
            if np.allclose(got, two_sided, rtol=1e-5):
                raise ExerciseError(f"{where}: that is the lower end of the *two-sided* interval at level 1 - alpha "
                                    "(alpha / 2 in each tail), which is too low. Hint: a one-sided bound puts all "
                                    "of alpha in one tail: the alpha quantile.")
            if np.allclose(got[k < n], wald[k < n], rtol=1e-5, atol=1e-9) or np.allclose(got, np.clip(wald, 0, 1)):
                raise ExerciseError(f"{where}: that is the normal (Wald) approximation, which is no bound at all "
                                    "near k = 0 or k = n (at k = n it gives 1). Hint: use the exact Beta quantile.")
            if np.allclose(got[(k > 0) & (k < n)], wrong_b[(k > 0) & (k < n)], rtol=1e-5):
                raise ExerciseError(f"{where}: wrong Beta parameters: Beta(k, n - k) is off by one. Hint: the "
                                    "lower bound is the alpha quantile of Beta(k, n - k + 1).")
            if np.allclose(got[k < n], shifted[k < n], rtol=1e-5):
                raise ExerciseError(f"{where}: wrong Beta parameters: Beta(k + 1, ...) belongs to the upper bound. "
                                    "Hint: the lower bound is the alpha quantile of Beta(k, n - k + 1).")
            bad = ~np.isclose(got, want, rtol=1e-6, atol=1e-10)
            raise ExerciseError(f"{where}: wrong bounds at k = {k[bad].tolist()} (got {got[bad]}, expected "
                                f"{want[bad]}). Hint: scipy.stats.beta.ppf(alpha, k, n - k + 1), and 0 where k = 0.")

    attempt(check, title="Clopper-Pearson lower bound", strict=strict)
