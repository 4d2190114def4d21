"""Checks and references of lecture 60 (the capstone: a holistic robustness report)."""
from __future__ import annotations

import torch

from .exercises import ExerciseError, attempt

__all__ = ["reference_worst_case", "check_worst_case", "reference_interval", "check_interval",
           "reference_flag", "check_flag"]


def _masks(seed: int, n: int = 50, k: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"attack {i}": torch.rand(n, generator=g) < 0.3 + 0.2 * i for i in range(k)}


# ------------------------------------------------------------------------------------------------ exercise 1
def reference_worst_case(robust: dict[str, torch.Tensor]) -> tuple[torch.Tensor, float]:
    """Per point, robust against *every* attack (the logical and of the masks), and the fraction of
    such points: the robust accuracy an evaluation reports, an upper bound on the true one."""
    both = torch.stack(list(robust.values())).all(0)
    return both, both.float().mean().item()


def check_worst_case(worst_case, *, strict: bool = False) -> None:
    """``worst_case(robust)`` gets ``{attack name: bool tensor (N,)}``, True where the point survived
    that attack (and was classified correctly), and must return the per-point mask of the points that
    survived all of them, and its mean as a float."""

    def check():
        for seed in range(4):
            robust = _masks(seed)
            got = worst_case({k: v.clone() for k, v in robust.items()})
            if not (isinstance(got, tuple) and len(got) == 2):
                raise ExerciseError("return a pair: (the per-point mask, the fraction of robust points)")
            mask, acc = got
            want_mask, want_acc = reference_worst_case(robust)
            if not isinstance(mask, torch.Tensor) or mask.shape != want_mask.shape:
                raise ExerciseError(f"the mask must be a tensor of shape {tuple(want_mask.shape)}, one entry "
                                    "per point (not one per attack)")
            if torch.equal(mask.bool(), torch.stack(list(robust.values())).any(0)) and not torch.equal(
                    mask.bool(), want_mask):
                raise ExerciseError("a point counts as robust only if it survives every attack: the worst case "
                                    "is the logical and of the masks, not the or. Hint: torch.stack(...).all(0).")
            if not torch.equal(mask.bool(), want_mask):
                raise ExerciseError("the mask is off: True exactly where every attack's mask is True")
            if not isinstance(acc, float) or abs(acc - want_acc) > 1e-6:
                raise ExerciseError(f"the fraction must be a float, the mean of the mask ({want_acc:.3f} here), "
                                    f"got {acc!r}. Hint: mask.float().mean().item().")

    attempt(check, title="the worst case over attacks", strict=strict)


# ------------------------------------------------------------------------------------------------ exercise 2
def reference_interval(certified: torch.Tensor, robust: torch.Tensor) -> tuple[float, float]:
    """``(certified fraction, robust fraction)``: the interval in which the true robust accuracy lies.
    A point that is certified but not robust under attack contradicts one of the two (an unsound
    verifier or an invalid attack): a ``ValueError`` names those points."""
    bad = torch.nonzero(certified & ~robust).flatten()
    if len(bad):
        raise ValueError(f"points {bad.tolist()} are certified yet an attack broke them: one of the two is wrong")
    return certified.float().mean().item(), robust.float().mean().item()


def check_interval(interval, *, strict: bool = False) -> None:
    """``interval(certified, robust)``, two bool tensors (N,), must return ``(lower, upper)``: the
    fraction certified and the fraction robust under attack; and raise ``ValueError`` when some point
    is certified although an attack broke it."""

    def check():
        g = torch.Generator().manual_seed(7)
        robust = torch.rand(40, generator=g) < 0.6
        certified = robust & (torch.rand(40, generator=g) < 0.5)
        got = interval(certified.clone(), robust.clone())
        want = reference_interval(certified, robust)
        if not (isinstance(got, tuple) and len(got) == 2):
            raise ExerciseError("return a pair (lower, upper) of floats")
        if abs(got[0] - want[1]) < 1e-6 and abs(got[1] - want[0]) < 1e-6:
            raise ExerciseError("the pair is the wrong way round: the certified fraction is the *lower* bound "
                                "(every certified point is robust), the attacked one the upper bound")
        if any(abs(float(a) - b) > 1e-6 for a, b in zip(got, want)):
            raise ExerciseError(f"expected (lower, upper) = ({want[0]:.3f}, {want[1]:.3f}): the fractions of "
                                "certified and of robust points")
        broken = certified.clone()
        broken[~robust] = True  # certified where an attack succeeded: impossible for a sound verifier
        try:
            interval(broken, robust.clone())
        except ValueError:
            return
        raise ExerciseError("a point that is certified and yet broken by an attack must raise ValueError: "
                            "a sound certificate and a valid attack cannot both hold there")

    attempt(check, title="the robustness interval", strict=strict)


# ------------------------------------------------------------------------------------------------ exercise 3
def reference_flag(score: float, clean_scores: torch.Tensor, fpr: float = 0.0) -> bool:
    """Flag a model whose detector ``score`` exceeds the ``1 - fpr`` quantile of the scores of
    known-clean models (with ``fpr = 0``: their largest score, so no clean calibration model is
    flagged), as :func:`advlib.backdoor.calibrate` chooses it."""
    return bool(score > torch.as_tensor(clean_scores, dtype=torch.float64).quantile(1 - fpr).item())


def check_flag(flag, *, strict: bool = False) -> None:
    """``flag(score, clean_scores, fpr)`` must say whether a model with detector ``score`` is flagged
    by the threshold calibrated on the clean models' ``clean_scores`` at false-positive rate ``fpr``."""

    def check():
        g = torch.Generator().manual_seed(11)
        clean = torch.rand(10, generator=g, dtype=torch.float64)
        for fpr in (0.0, 0.1, 0.3):
            t = clean.quantile(1 - fpr).item()
            for score in (t - 1e-3, t, t + 1e-3, clean.min().item(), 2.0):
                got = flag(score, clean.clone(), fpr)
                want = reference_flag(score, clean, fpr)
                if not isinstance(got, bool):
                    raise ExerciseError(f"return a bool, got {type(got).__name__}. Hint: bool(...)")
                if got != want:
                    hint = ("a score equal to the threshold is not above it: use >" if abs(score - t) < 1e-12 else
                            "the threshold is the (1 - fpr) quantile of the clean scores (torch.quantile); "
                            "with fpr = 0 it is their maximum")
                    raise ExerciseError(f"score {score:.4f}, fpr {fpr}: expected {want}, got {got}. Hint: {hint}")

    attempt(check, title="flagging against clean models", strict=strict)
