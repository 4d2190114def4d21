"""Helpers of lecture 32 (Trojans: detection and sanitisation): the reference answers and the checks
of its exercises.

* Exercise 1, DL-TND's shortcut statistic (Wang et al. 2020, Sec. 4): given the cosine similarity of
  the logits under the universal and the per-sample perturbation of every (label, sample) pair, the
  ``q``-quantile (the 25th percentile by default, linear interpolation) of the similarities of each
  candidate label.
* Exercise 2, the MAD anomaly index of Neural Cleanse (Wang et al. 2019, Sec. IV-B) of K mask norms:
  ``(median(l1) - l1_t) / (1.4826 * MAD)`` with ``MAD = median(|l1 - median(l1)|)``, signed so that
  only small masks are suspicious; the median of an even number of values is the mean of the two
  middle ones.
* Exercise 3, a point of the quadratic Bézier curve of mode connectivity (Zhao et al. 2020; Garipov
  et al. 2018): ``phi_theta(t) = (1 - t)^2 w1 + 2 t (1 - t) theta + t^2 w2``.

Each ``reference_*`` function is written from the formula, independently of :mod:`advlib.backdoor`
(which the lecture uses), so that a check compares two implementations, not one with itself.
"""
from __future__ import annotations

import math

import torch

from .exercises import ExerciseError, attempt

__all__ = ["reference_shortcut_statistic", "reference_anomaly_index", "reference_bezier_point",
           "check_shortcut_statistic", "check_anomaly_index", "check_bezier_point"]

_CONSISTENCY = 1.4826  # 1 / Phi^-1(3/4): MAD times this estimates the standard deviation of normal data


# ------------------------------------------------------------------------------------------ references
def _quantile(v: torch.Tensor, q: float) -> float:
    """The ``q``-quantile of the values ``v`` with linear interpolation between order statistics
    (position ``q (n - 1)`` in the sorted values: NumPy's and PyTorch's default)."""
    s = sorted(float(a) for a in v)
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (pos - lo) * (s[hi] - s[lo])


def reference_shortcut_statistic(cos, labels, n_labels: int, q: float = 0.25) -> torch.Tensor:
    """DL-TND's statistic of every candidate label ``c < n_labels``: the ``q``-quantile (linear
    interpolation) of the cosine similarities ``cos[i]`` of the pairs with ``labels[i] == c``."""
    cos, labels = torch.as_tensor(cos, dtype=torch.float64), torch.as_tensor(labels)
    return torch.tensor([_quantile(cos[labels == c], q) for c in range(n_labels)], dtype=torch.float64)


def _median(v) -> float:
    return _quantile(torch.as_tensor(v, dtype=torch.float64), 0.5)


def reference_anomaly_index(l1) -> torch.Tensor:
    """Neural Cleanse's anomaly index (Sec. IV-B) of the mask norms ``l1`` (one per label):
    ``(median - l1_t) / (1.4826 * MAD)``; positive below the median. Assumes ``MAD > 0``."""
    l1 = torch.as_tensor(l1, dtype=torch.float64)
    med = _median(l1)
    mad = _median((l1 - med).abs())
    return (med - l1) / (_CONSISTENCY * mad)


def reference_bezier_point(w1, theta, w2, t: float):
    """The quadratic Bézier curve at ``t``: ``(1 - t)^2 w1 + 2 t (1 - t) theta + t^2 w2``."""
    return (1 - t) ** 2 * w1 + 2 * t * (1 - t) * theta + t ** 2 * w2


def _as_vector(got, n: int, what: str) -> torch.Tensor:
    if isinstance(got, (list, tuple)):
        try:
            got = torch.as_tensor(got, dtype=torch.float64)
        except (TypeError, ValueError):
            raise ExerciseError(f"{what}: return a tensor of {n} numbers, got a {type(got).__name__} that is "
                                "not a list of numbers") from None
    if not isinstance(got, torch.Tensor) or got.numel() != n or got.dim() > 1:
        raise ExerciseError(f"{what}: expected a 1-D tensor of {n} values (one per label), got "
                            f"{tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}")
    return got.detach().double().flatten()


# ------------------------------------------------------------------------------------------ exercise 1
def check_shortcut_statistic(shortcut_statistic, *, strict: bool = False) -> None:
    """``shortcut_statistic(cos, labels, n_labels, q)`` must return a tensor of ``n_labels`` values:
    for each candidate label ``c``, the ``q``-quantile (linear interpolation, as ``torch.quantile``)
    of the entries of ``cos`` whose pair is of label ``c`` (``labels == c``). The pairs come in any
    order, labels may have different numbers of pairs, and ``q`` is an argument (DL-TND uses 0.25)."""

    def check():
        g = torch.Generator().manual_seed(32)
        # hand-made: label 0 has [0.9, 0.1, 0.5, 0.7, 0.3, 0.8] (25th percentile 0.35), label 1 [0.8, 0.6, 0.2] (0.4)
        cases = [(torch.tensor([0.9, 0.8, 0.1, 0.5, 0.6, 0.7, 0.3, 0.2, 0.8]),
                  torch.tensor([0, 1, 0, 0, 1, 0, 0, 1, 0]), 2, 0.25,
                  "hand-made: 2 labels with 6 and 3 pairs, interleaved")]
        k = 10  # DL-TND with one sample per class: 9 pairs per label, here shuffled
        labels = torch.arange(k).repeat_interleave(k - 1)
        order = torch.randperm(len(labels), generator=g)
        cos = torch.rand(len(labels), generator=g) * 1.6 - 0.6
        cos[labels == 3] = 0.95 + 0.05 * torch.rand(k - 1, generator=g)  # a shortcut label
        cases.append((cos[order], labels[order], k, 0.25, "10 labels x 9 samples, shuffled, one shortcut label"))
        cases.append((cos[order], labels[order], k, 0.5, "the same pairs at q = 0.5"))
        counts = torch.tensor([5, 1, 8, 2, 6])
        labels = torch.arange(5).repeat_interleave(counts)
        order = torch.randperm(len(labels), generator=g)
        cos = torch.rand(len(labels), generator=g) * 2 - 1
        cases.append((cos[order], labels[order], 5, 0.25, "5 labels with 5, 1, 8, 2 and 6 pairs"))
        for cos, labels, n, q, what in cases:
            c0, l0 = cos.clone(), labels.clone()
            got = shortcut_statistic(cos, labels, n, q)
            if not (torch.equal(cos, c0) and torch.equal(labels, l0)):
                raise ExerciseError(f"{what}: cos or labels was modified in place: leave them as they are.")
            got = _as_vector(got, n, what)
            want = reference_shortcut_statistic(c0, l0, n, q)
            if torch.allclose(got, want, atol=1e-5):
                continue
            groups = [c0[l0 == c].double() for c in range(n)]
            if torch.allclose(got, torch.stack([v.mean() for v in groups]), atol=1e-5):
                raise ExerciseError(f"{what}: that is the mean of each label's similarities. DL-TND takes a low "
                                    "quantile: a label is a shortcut only if (nearly) *every* sample's own "
                                    "perturbation agrees with the universal one.")
            if q != 0.25 and torch.allclose(got, reference_shortcut_statistic(c0, l0, n, 0.25), atol=1e-5):
                raise ExerciseError(f"{what}: that is the 25th percentile, but this case asks for q = {q}: use the "
                                    "argument q, not a fixed 0.25.")
            if q != 0.5 and torch.allclose(got, reference_shortcut_statistic(c0, l0, n, 0.5), atol=1e-5):
                raise ExerciseError(f"{what}: that is each label's median; use the quantile q = {q}.")
            if torch.allclose(got, reference_shortcut_statistic(c0, l0, n, 1 - q), atol=1e-5):
                raise ExerciseError(f"{what}: that is the {1 - q:g}-quantile; the statistic is the q = {q} "
                                    "quantile (the 25th percentile when q = 0.25).")
            for how in ("lower", "higher", "nearest", "midpoint"):
                if torch.allclose(got, torch.stack([v.quantile(q, interpolation=how) for v in groups]), atol=1e-5):
                    raise ExerciseError(f"{what}: that is the quantile with {how!r} interpolation; DL-TND's is the "
                                        "linearly interpolated one (torch.quantile's or numpy.percentile's default).")
            if torch.allclose(got, torch.stack([v.min() for v in groups]), atol=1e-5):
                raise ExerciseError(f"{what}: that is each label's minimum; take the q-quantile, which one "
                                    "unlucky sample cannot decide alone.")
            whole = _quantile(c0, q)
            if torch.allclose(got, torch.full((n,), whole, dtype=torch.float64), atol=1e-5):
                raise ExerciseError(f"{what}: every label got the same value, the quantile of all pairs together; "
                                    "take the quantile of each label's own pairs (cos[labels == c]).")
            if torch.allclose(got, want, atol=0.2):
                raise ExerciseError(f"{what}: close, but not the linearly interpolated quantile (expected "
                                    f"{[round(v, 4) for v in want.tolist()]}). Hint: torch.quantile (or "
                                    "numpy.percentile) with its default interpolation.")
            raise ExerciseError(f"{what}: expected {[round(v, 4) for v in want.tolist()]}, got "
                                f"{[round(v, 4) for v in got.tolist()]}. Hint: one value per label c, computed "
                                "from cos[labels == c] only.")

    attempt(check, title="the shortcut statistic", strict=strict)


# ------------------------------------------------------------------------------------------ exercise 2
def check_anomaly_index(anomaly_index, *, strict: bool = False) -> None:
    """``anomaly_index(l1)`` must return, for a 1-D tensor of K mask norms with a non-zero MAD, the K
    values ``(median(l1) - l1_t) / (1.4826 * MAD)``, ``MAD = median(|l1 - median(l1)|)``: positive for
    the labels whose mask is *smaller* than the median. For an even K the median is the mean of the
    two middle values."""

    def check():
        g = torch.Generator().manual_seed(19)
        cases = [(torch.tensor([9.0, 10.0, 12.0, 11.0, 2.0, 10.5, 13.0]), "hand-made: 7 labels, label 4's mask is "
                  "tiny")]
        l1 = 40 + 8 * torch.rand(10, generator=g)
        l1[6] = 9.0  # a Trojan label: a 3x3 trigger
        cases.append((l1, "10 labels (an even number), one small mask"))
        cases.append((20 + 30 * torch.rand(10, generator=g), "10 labels, no outlier"))
        cases.append((5 + torch.rand(43, generator=g) * 10, "43 labels"))
        for l1, what in cases:
            l0 = l1.clone()
            got = anomaly_index(l1)
            if not torch.equal(l1, l0):
                raise ExerciseError(f"{what}: l1 was modified in place: leave it as it is.")
            got = _as_vector(got, len(l0), what)
            want = reference_anomaly_index(l0)
            if torch.allclose(got, want, atol=1e-4, rtol=1e-4):
                continue
            if torch.allclose(got, want.abs(), atol=1e-4, rtol=1e-4):
                raise ExerciseError(f"{what}: your index is never negative. It is signed: only a mask *smaller* "
                                    "than the median is suspicious (a trigger is small), so a large mask must get "
                                    "a negative index.")
            if torch.allclose(got, -want, atol=1e-4, rtol=1e-4):
                raise ExerciseError(f"{what}: the sign is reversed: the small masks must get the positive index "
                                    "(median - l1, not l1 - median).")
            if torch.allclose(got, want * _CONSISTENCY, atol=1e-4, rtol=1e-4):
                raise ExerciseError(f"{what}: the consistency constant is missing: divide by 1.4826 * MAD, which "
                                    "puts the index on the scale of a standard deviation (flagged above 2).")
            if len(l0) % 2 == 0:
                lower = l0.double().sort().values[len(l0) // 2 - 1]
                mad_low = (l0.double() - lower).abs().sort().values[len(l0) // 2 - 1]
                if torch.allclose(got, (lower - l0.double()) / (_CONSISTENCY * mad_low), atol=1e-4, rtol=1e-4):
                    raise ExerciseError(f"{what}: with an even number of labels, torch.median returns the *lower* "
                                        "of the two middle values; the median is their mean (torch.quantile(v, "
                                        "0.5), or numpy.median).")
            z = (l0.double().mean() - l0.double()) / l0.double().std()
            if torch.allclose(got, z, atol=1e-3, rtol=1e-3) or torch.allclose(got, z.abs(), atol=1e-3, rtol=1e-3):
                raise ExerciseError(f"{what}: that is a z-score (mean and standard deviation). The anomaly index "
                                    "uses the median and the MAD, which the outlier it looks for cannot drag.")
            raise ExerciseError(f"{what}: expected {[round(v, 3) for v in want.tolist()]}, got "
                                f"{[round(v, 3) for v in got.tolist()]}. Hint: the median of l1, then the median "
                                "of the absolute deviations from it.")

    attempt(check, title="the MAD anomaly index", strict=strict)


# ------------------------------------------------------------------------------------------ exercise 3
def check_bezier_point(bezier_point, *, strict: bool = False) -> None:
    """``bezier_point(w1, theta, w2, t)`` must return ``(1 - t)^2 w1 + 2 t (1 - t) theta + t^2 w2``
    for tensors of any (common) shape and a float ``t`` in [0, 1], leaving its inputs unchanged."""

    def check():
        g = torch.Generator().manual_seed(2020)
        shapes = [(5,), (3, 4), (2, 1, 3, 3)]
        for shape in shapes:
            w1, theta, w2 = (torch.randn(shape, generator=g) for _ in range(3))
            for t in (0.0, 1.0, 0.5, 0.1, 0.37, 0.9):
                what = f"tensors of shape {shape}, t = {t}"
                saved = [w1.clone(), theta.clone(), w2.clone()]
                got = bezier_point(w1, theta, w2, t)
                if not all(torch.equal(a, b) for a, b in zip((w1, theta, w2), saved)):
                    raise ExerciseError(f"{what}: an input was modified in place; the endpoints are the models "
                                        "themselves: leave them unchanged.")
                if not isinstance(got, torch.Tensor) or tuple(got.shape) != shape:
                    raise ExerciseError(f"{what}: expected a tensor of shape {shape}, got "
                                        f"{getattr(got, 'shape', type(got).__name__)}")
                got = got.detach().double()
                a, th, b = (v.double() for v in saved)
                want = reference_bezier_point(a, th, b, t)
                if torch.allclose(got, want, atol=1e-5):
                    continue
                if torch.allclose(got, (1 - t) * a + t * b, atol=1e-5):
                    raise ExerciseError(f"{what}: that is the straight line from w1 to w2: the control point theta "
                                        "is missing, and the curve is what lets the path bend around the "
                                        "backdoor.")
                if torch.allclose(got, reference_bezier_point(b, th, a, t), atol=1e-5):
                    raise ExerciseError(f"{what}: the ends are swapped: t = 0 must give w1 and t = 1 must give w2.")
                if torch.allclose(got, (1 - t) ** 2 * a + t * (1 - t) * th + t ** 2 * b, atol=1e-5):
                    raise ExerciseError(f"{what}: the weight of theta misses its factor 2: the three weights "
                                        "(1 - t)^2, 2 t (1 - t) and t^2 sum to 1.")
                raise ExerciseError(f"{what}: not the quadratic Bézier point (max difference "
                                    f"{(got - want).abs().max():.3g}). Hint: check t = 0 (w1), t = 1 (w2) and "
                                    "t = 0.5 ((w1 + 2 theta + w2) / 4).")

    attempt(check, title="a point of the Bézier path", strict=strict)
