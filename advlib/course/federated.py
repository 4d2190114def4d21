"""Helpers of lecture 53 (federated learning, robust aggregation and distributed backdoors): the
reference answers and the checks of its exercises.

* Exercise 1, Krum (Blanchard et al., NeurIPS 2017, Sec. 4): for ``n`` updates of which at most ``f``
  are Byzantine, score each update by the sum of its squared distances to its ``n - f - 2`` nearest
  other updates and return the update of smallest score.
* Exercise 2, the coordinate-wise trimmed mean (Yin et al., ICML 2018): per coordinate, drop the ``b``
  largest and the ``b`` smallest of the ``n`` values and average the ``n - 2b`` left.

Each ``reference_*`` function is written from the definition with explicit loops, independently of
:mod:`advlib.applications.federated` (which the lecture uses), so that a check compares two
implementations, not one with itself.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .exercises import ExerciseError, attempt

__all__ = ["reference_krum", "reference_trimmed_mean", "check_krum", "check_trimmed_mean"]


# ------------------------------------------------------------------------------------------ references
def reference_krum(U: torch.Tensor, f: int) -> torch.Tensor:
    """The row of ``U`` (``n x d``) with the smallest sum of squared distances to its ``n - f - 2`` nearest
    other rows; ties go to the lowest index."""
    n = len(U)
    best, best_score = 0, float("inf")
    for i in range(n):
        dists = sorted(float(((U[i] - U[j]) ** 2).sum()) for j in range(n) if j != i)
        score = sum(dists[: n - f - 2])
        if score < best_score:
            best, best_score = i, score
    return U[best]


def reference_trimmed_mean(U: torch.Tensor, b: int) -> torch.Tensor:
    """Per coordinate of ``U`` (``n x d``), the mean of the values left after dropping the ``b`` largest
    and the ``b`` smallest."""
    n, d = U.shape
    out = torch.empty(d, dtype=U.dtype)
    for j in range(d):
        values = sorted(float(v) for v in U[:, j])
        kept = values[b:n - b]
        out[j] = sum(kept) / len(kept)
    return out


# ------------------------------------------------------------------------------------------ checks
def _cases(seed: int):
    """Hand-made and random update matrices with the number of attackers to tolerate."""
    g = torch.Generator().manual_seed(seed)
    honest = torch.randn(7, 3, generator=g) * 0.1
    attackers = torch.randn(2, 3, generator=g) * 0.1 + torch.tensor([5.0, -5.0, 5.0])
    yield torch.cat([honest, attackers]), 2, "7 honest updates near 0 and 2 attackers near (5, -5, 5), f = 2"
    yield torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [10.0, 10.0], [0.2, 0.2]]), 1, \
        "5 hand-made 2-D updates, f = 1"
    yield torch.randn(12, 20, generator=g), 3, "12 random updates in 20-D, f = 3"
    yield torch.randn(6, 4, generator=g).double(), 0, "6 random updates (float64), f = 0"
    # a case where summing plain (unsquared) distances and counting an update as its own neighbour pick
    # two other updates than Krum does
    yield torch.randn(8, 2, generator=torch.Generator().manual_seed(38)), 2, "8 random 2-D updates, f = 2"


def _as_vector(got, d: int, what: str) -> torch.Tensor:
    try:
        got = torch.as_tensor(got).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ExerciseError(f"{what}: return one aggregated update (a tensor of length d), got "
                            f"{type(got).__name__}") from None
    if got.shape != (d,):
        raise ExerciseError(f"{what}: return one aggregated update of shape ({d},), got {tuple(got.shape)}"
                            + (" — aggregate over the updates (dim 0), not over the coordinates" if got.numel()
                               != d else ""))
    return got


def check_krum(krum: Callable, *, strict: bool = False) -> None:
    """``krum(U, f)`` must return the row of ``U`` (``n x d``, one flattened update per row) whose sum of
    squared distances to its ``n - f - 2`` nearest *other* rows is smallest."""
    def check():
        for U, f, what in _cases(2017):
            saved = U.clone()
            got = _as_vector(krum(U, f), U.shape[1], what)
            if not torch.equal(U, saved):
                raise ExerciseError(f"{what}: the updates were modified in place; work on a copy")
            want = reference_krum(U, f)
            if torch.allclose(got.to(want.dtype), want):
                continue
            if not any(torch.allclose(got.to(U.dtype), row) for row in U):
                raise ExerciseError(f"{what}: Krum returns one of the updates itself (the selected row), not an "
                                    "average or a new vector")
            n = len(U)
            d2 = torch.cdist(U.double(), U.double()).pow(2)
            with_self = d2.sort(1).values[:, : n - f - 2].sum(1)  # the zero distance to itself counted
            plain = torch.cdist(U.double(), U.double())
            plain.fill_diagonal_(float("inf"))
            unsquared = plain.sort(1).values[:, : n - f - 2].sum(1)
            d2.fill_diagonal_(float("inf"))
            all_neighbours = d2.sort(1).values[:, : n - 1].sum(1)
            for scores, hint in [(with_self, "the distance of an update to itself (0) must not count as one of "
                                             "its neighbours"),
                                 (unsquared, "Krum sums *squared* Euclidean distances"),
                                 (all_neighbours, "sum over the n - f - 2 nearest neighbours only, not all of them")]:
                if torch.allclose(got.to(U.dtype), U[int(scores.argmin())]):
                    raise ExerciseError(f"{what}: {hint}")
            raise ExerciseError(f"{what}: that is not the update of smallest Krum score")
    attempt(check, title="Exercise 1 (Krum)", strict=strict)


def check_trimmed_mean(trimmed_mean: Callable, *, strict: bool = False) -> None:
    """``trimmed_mean(U, b)`` must return, per coordinate of ``U`` (``n x d``), the mean of the ``n - 2b``
    values left after dropping the ``b`` largest and the ``b`` smallest."""
    def check():
        for U, f, what in _cases(2018):
            b = max(f, 1) if len(U) > 2 * max(f, 1) else 0
            what = f"{what}, b = {b}"
            saved = U.clone()
            got = _as_vector(trimmed_mean(U, b), U.shape[1], what)
            if not torch.equal(U, saved):
                raise ExerciseError(f"{what}: the updates were modified in place (U.sort_()?); sort a copy")
            want = reference_trimmed_mean(U, b)
            if torch.allclose(got.to(want.dtype), want, atol=1e-6):
                continue
            rows = U.norm(dim=1).argsort()[b:len(U) - b]
            if torch.allclose(got.to(U.dtype), U[rows].mean(0), atol=1e-6):
                raise ExerciseError(f"{what}: trim per coordinate (sort each column on its own), not whole updates")
            if b and torch.allclose(got.to(U.dtype), U.sort(0).values[b:].mean(0), atol=1e-6):
                raise ExerciseError(f"{what}: drop the b smallest *and* the b largest values of each coordinate")
            if torch.allclose(got.to(U.dtype), U.mean(0), atol=1e-6) and b:
                raise ExerciseError(f"{what}: that is the plain mean; drop b values at each end first")
            raise ExerciseError(f"{what}: the values differ from the trimmed mean (first coordinate: expected "
                                f"{float(want[0]):.4f}, got {float(got[0]):.4f})")
    attempt(check, title="Exercise 2 (trimmed mean)", strict=strict)
