"""Randomized smoothing (Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness via Randomized
Smoothing", ICML 2019).

The smoothed classifier ``g(x) = argmax_c P(f(x + eps) = c)``, ``eps ~ N(0, sigma^2 I)``, is robust
in L2: if the top class has probability ``p_A >= p_A_lower > 1/2``, then ``g`` is constant in the
ball of radius ``sigma * Phi^-1(p_A_lower)`` (Theorem 1 with ``p_B = 1 - p_A``). The probabilities
are only estimated by Monte Carlo, so PREDICT may abstain and CERTIFY is right with probability at
least ``1 - alpha`` (Section 3.2, pseudocode in Figure 2 / Algorithm 1).

The noise is *not* clipped to the image box [0, 1]: the theorem is about the Gaussian measure, and
clipping ``x + eps`` would change the distribution (a point mass on the faces of the box) so that
the certified radius no longer follows. The base classifier must simply accept noisy inputs.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from scipy import stats
from torch import nn

from ..threat import check_batch, check_budget, check_count, check_model_input, chunks
from ._common import activation_floats

__all__ = ["Smoothed", "SmoothedCertificate", "clopper_pearson_lower", "gaussian_augment",
           "certified_accuracy_curve", "ABSTAIN"]

#: the label of an abstention
ABSTAIN = -1


class SmoothedCertificate(NamedTuple):
    """The answer of :meth:`Smoothed.certify`, per input: the certified ``label`` of the smoothed
    classifier ``g`` (``ABSTAIN`` = -1 where CERTIFY abstains) and the L2 ``radius`` on which ``g``
    keeps it (0 where it abstains), both right with probability at least ``1 - alpha``.
    Unpacks as ``label, radius = smoothed.certify(x)``."""

    label: torch.Tensor
    radius: torch.Tensor


def _check_alpha(who: str, alpha: float) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ValueError(f"{who}: alpha must lie in (0, 1), got {alpha!r}")


def _check_sigma(who: str, sigma: float) -> float:
    check_budget(sigma, who, name="sigma", positive=True)
    return float(sigma)


def clopper_pearson_lower(k, n, alpha: float) -> np.ndarray:
    """The one-sided (1 - alpha) Clopper-Pearson lower confidence bound on a binomial proportion
    after ``k`` successes in ``n`` trials (Clopper & Pearson, 1934): the ``alpha`` quantile of
    ``Beta(k, n - k + 1)``, and 0 when ``k = 0``. It is the lower end of the two-sided exact interval
    at level ``1 - 2 alpha`` (Cohen et al.'s ``proportion_confint(k, n, 2 alpha, method="beta")``)."""
    _check_alpha("clopper_pearson_lower", alpha)
    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    if (n < 1).any() or (k < 0).any() or (k > n).any():
        raise ValueError(f"clopper_pearson_lower: need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    with np.errstate(all="ignore"):
        return np.where(k > 0, stats.beta.ppf(alpha, np.maximum(k, 1), n - k + 1), 0.0)


class Smoothed:
    """The Gaussian-smoothed version of ``model`` at noise level ``sigma`` (Cohen et al., 2019).

    ``predict`` and ``certify`` take a batch ``x`` (N x ..., in [0, 1], on the model's device) and
    draw the noise for many inputs at once: the N * n noisy copies are classified in pieces of
    :data:`advlib.threat.MEMORY_BUDGET` floats, whatever input they belong to. ``seed`` makes a call
    repeatable (``None``: fresh noise). The smoothed classifier ``g`` is what is certified, not
    ``model``: a certificate of ``g`` says nothing about ``model`` itself.
    """

    def __init__(self, model: nn.Module, sigma: float):
        self.model, self.sigma = model, _check_sigma("Smoothed", sigma)

    def __repr__(self) -> str:
        return f"Smoothed({type(self.model).__name__}, sigma={self.sigma})"

    def _check(self, who: str, x: torch.Tensor) -> int:
        """The core's checks (a finite floating batch in [0, 1], the model accepts it, device, eval
        mode); returns the number of classes."""
        check_batch(x, who)
        return check_model_input(self.model, x, who)

    def counts(self, x: torch.Tensor, *, n: int, seed: int | None = 0) -> torch.Tensor:
        """How often the base classifier picks each class on ``n`` noisy copies of every input:
        ``counts[i, c] = #{k : f(x_i + eps_k) = c}``, ``eps_k ~ N(0, sigma^2 I)`` (N x K, int64)."""
        return self._counts(x, n, seed, "Smoothed.counts")

    @torch.no_grad()
    def _counts(self, x: torch.Tensor, n: int, seed: int | None, who: str) -> torch.Tensor:
        n_classes = self._check(who, x)
        n = check_count(n, who, "n", 1)
        gen = torch.Generator(device=x.device)
        gen.manual_seed(seed) if seed is not None else gen.seed()
        out = torch.zeros(len(x), n_classes, dtype=torch.long, device=x.device)
        for piece in chunks(len(x) * n, activation_floats(self.model, x)):
            owner = torch.arange(piece.start, piece.stop, device=x.device) // n  # the input of each copy
            noise = torch.randn((len(owner), *x.shape[1:]), generator=gen, device=x.device, dtype=x.dtype)
            pred = self.model(x[owner] + self.sigma * noise).argmax(1)
            out.index_put_((owner, pred), torch.ones_like(pred), accumulate=True)
        return out

    def predict(self, x: torch.Tensor, *, n: int = 1000, alpha: float = 0.001, seed: int | None = 0) -> torch.Tensor:
        """PREDICT (Cohen et al., 2019, Figure 2): the top class ``c_A`` of ``n`` noisy samples, or
        ``ABSTAIN`` (-1) unless the two-sided binomial test of ``n_A`` against ``n_A + n_B`` (the two
        top counts) rejects ``p = 1/2`` at level ``alpha``. Then the returned class differs from
        ``g(x)`` with probability at most ``alpha`` (Theorem 2). The paper evaluates it with
        ``n = 100,000``; the default here is 1000 for speed."""
        _check_alpha("Smoothed.predict", alpha)
        top2 = self._counts(x, n, seed, "Smoothed.predict").topk(2, dim=1)
        n_a, n_b = top2.values[:, 0].cpu().numpy(), top2.values[:, 1].cpu().numpy()
        # binomtest(n_a, n_a + n_b, 1/2).pvalue, vectorised: the law is symmetric, so twice the smaller tail
        p_value = np.minimum(1.0, 2 * stats.binom.cdf(np.minimum(n_a, n_b), n_a + n_b, 0.5))
        keep = torch.as_tensor(p_value <= alpha, device=x.device)
        return torch.where(keep, top2.indices[:, 0], ABSTAIN)

    def certify(self, x: torch.Tensor, *, n0: int = 100, n: int = 10_000, alpha: float = 0.001,
                seed: int | None = 0) -> SmoothedCertificate:
        """CERTIFY (Cohen et al., 2019, Figure 2): guess the top class ``c_A`` from ``n0`` noisy
        samples, count it on ``n`` fresh ones, bound ``p_A`` from below at confidence ``1 - alpha``
        (one-sided Clopper-Pearson, :func:`clopper_pearson_lower`) and return, per input, a
        :class:`SmoothedCertificate` ``(label, radius)``:

            c_A and radius sigma * Phi^-1(p_A_lower)   if p_A_lower > 1/2,   else ABSTAIN (-1) and 0.

        With probability at least ``1 - alpha`` a returned label is ``g(x)`` and ``g`` is constant in
        the L2 ball of that radius (Theorem 1). Paper: ``n0 = 100, n = 100,000, alpha = 0.001``; the
        default ``n = 10,000`` caps p_A_lower at alpha^(1/n) ~ 0.9993, i.e. radii at ~3.2 sigma."""
        n0 = check_count(n0, "Smoothed.certify", "n0", 1)
        n = check_count(n, "Smoothed.certify", "n", 1)
        _check_alpha("Smoothed.certify", alpha)
        second = None if seed is None else seed + 1  # the selection and the estimation use independent noise
        c_a = self._counts(x, n0, seed, "Smoothed.certify").argmax(1)
        n_a = self._counts(x, n, second, "Smoothed.certify").gather(1, c_a[:, None]).squeeze(1)
        p_lower = clopper_pearson_lower(n_a.cpu().numpy(), n, alpha)
        radius = torch.as_tensor(self.sigma * stats.norm.ppf(np.maximum(p_lower, 0.5)), device=x.device)
        ok = torch.as_tensor(p_lower > 0.5, device=x.device)
        # Phi^-1(1/2) = 0: abstentions get radius 0
        return SmoothedCertificate(torch.where(ok, c_a, ABSTAIN), radius.to(x.dtype))


def gaussian_augment(sigma: float) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """A ``perturb`` hook for :func:`advlib.train.fit` that trains on ``x + N(0, sigma^2 I)``, as Cohen
    et al. (2019, Section 4) train the base classifier with the noise level it will be smoothed at.
    The noise is not clipped to [0, 1], like the noise of :class:`Smoothed`."""
    sigma = _check_sigma("gaussian_augment", sigma)

    def perturb(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + sigma * torch.randn_like(x)

    return perturb


def certified_accuracy_curve(labels: torch.Tensor, radii: torch.Tensor, y: torch.Tensor,
                             radii_grid) -> torch.Tensor:
    """Certified accuracy at each radius r of ``radii_grid`` (Cohen et al., 2019, Figure 6): the
    fraction of points whose certified label is the true label *and* whose radius is at least r.
    Abstentions (label -1) never count. Non-increasing in r by construction."""
    labels, radii, y = (torch.as_tensor(v) for v in (labels, radii, y))
    if labels.dim() != 1 or labels.shape != radii.shape or labels.shape != y.shape or len(y) == 0:
        raise ValueError(f"certified_accuracy_curve: labels, radii and y must be 1-D of the same non-zero "
                         f"length, got {tuple(labels.shape)}, {tuple(radii.shape)}, {tuple(y.shape)}")
    grid = torch.as_tensor(radii_grid, dtype=torch.float64, device=radii.device).flatten()
    right = (labels == y.to(labels.device))[None, :] & (radii.double()[None, :] >= grid[:, None])
    return right.float().mean(1)
