"""Helpers of lecture 20 (model reprogramming): the reference answers and the checks of its exercises.

* Exercise 1, BAR's program for images in [0, 1] (Tsai et al. 2020, Sec. 3.1, mapped from [-1, 1]):
  ``X~ = clip(Pad_1/2(T) + tanh(W * M) / 2, 0, 1)``, the target ``T`` (``N x C x h x w``) padded to the
  source size ``C x H x W`` with mid-grey 1/2 around its centre (the extra row or column of an odd
  margin goes below / to the right), the mask ``M`` inside the ``tanh``.
* Exercise 2, the focal loss (Lin et al. 2017; BAR Sec. 3.2) per example: ``-omega (1 - p_t)^gamma
  log p_t`` with ``p_t = p[i, y_i]``; the cross-entropy at ``gamma = 0``.
* Exercise 3, the 1-Wasserstein distance of two 1-D samples of equal size ``n``: the mean absolute
  difference of the sorted samples (the optimal coupling of the line pairs order statistics).

Each ``reference_*`` function is written from the formula, independently of :mod:`advlib.reprogram`
(which the lecture uses), so that a check compares two implementations, not one with itself.
"""
from __future__ import annotations

import math

import torch

from .exercises import ExerciseError, attempt

__all__ = ["reference_program_transform", "reference_focal_loss", "reference_wasserstein_1d",
           "check_program_transform", "check_focal_loss", "check_wasserstein_1d"]


# ------------------------------------------------------------------------------------------ references
def _pad_half(t: torch.Tensor, size) -> torch.Tensor:
    """``t`` (``N x C x h x w``) in the centre of a mid-grey canvas ``N x C x H x W``; the larger half of an
    odd margin after the target."""
    n, c, h, w = t.shape
    H, W = size
    top, left = (H - h) // 2, (W - w) // 2
    out = torch.full((n, c, H, W), 0.5, dtype=t.dtype, device=t.device)
    out[:, :, top:top + h, left:left + w] = t
    return out


def reference_program_transform(t: torch.Tensor, W: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """``clip(Pad_1/2(t) + tanh(W * M) / 2, 0, 1)`` for targets ``t`` (``N x C x h x w``) and a program
    ``W`` and mask ``M`` of the source shape ``C x H x W``."""
    return (_pad_half(t, W.shape[1:]) + torch.tanh(W * M) / 2).clamp(0, 1)


def reference_focal_loss(p: torch.Tensor, y: torch.Tensor, gamma: float = 2.0, omega: float = 1.0) -> torch.Tensor:
    """Per example ``-omega (1 - p_t)^gamma log p_t`` with ``p_t = p[i, y_i]`` (``p``: ``N x K``)."""
    pt = torch.stack([p[i, int(y[i])] for i in range(len(y))])
    return -omega * (1 - pt) ** gamma * torch.log(pt)


def reference_wasserstein_1d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``W_1`` of two equal-size 1-D samples: ``mean_i |a_(i) - b_(i)|`` over the order statistics."""
    a, b = sorted(float(v) for v in a), sorted(float(v) for v in b)
    return torch.tensor(sum(abs(u - v) for u, v in zip(a, b)) / len(a), dtype=torch.float64)


def _close(got: torch.Tensor, want: torch.Tensor, tol: float = 1e-5) -> bool:
    return got.shape == want.shape and bool(torch.allclose(got, want, atol=tol, rtol=tol))


# ------------------------------------------------------------------------------------------ exercise 1
def check_program_transform(program_transform, *, strict: bool = False) -> None:
    """``program_transform(t, W, M)`` must return ``clip(Pad_1/2(t) + tanh(W * M) / 2, 0, 1)``: the targets
    ``t`` (``N x C x h x w``, values in [0, 1]) padded with 1/2 to the shape ``C x H x W`` of ``W`` and ``M``
    around the centre (top margin ``(H - h) // 2``, left margin ``(W - w) // 2``), plus the bounded program,
    clipped to [0, 1]. ``M`` may be binary or a weight in [0, 1]. Checked against
    :class:`advlib.reprogram.Program` (``form="tanh"``) and the reference."""
    from ..reprogram import Program

    def check():
        g = torch.Generator().manual_seed(20)
        binary = (torch.rand(1, 8, 8, generator=g) > 0.5).float()
        cases = [((1, 8, 8), (1, 5, 6), "outside", "a breast-cancer image 1x5x6 inside an 8x8 digit, M outside it"),
                 ((1, 8, 8), (1, 5, 6), "all", "1x5x6 inside 8x8, M = 1 everywhere"),
                 ((1, 8, 8), (1, 3, 3), binary, "1x3x3 inside 8x8 (odd margins), a random binary M"),
                 ((3, 10, 9), (3, 4, 4), torch.rand(3, 10, 9, generator=g), "3 channels, 4x4 inside 10x9, a "
                  "weight M in [0, 1]")]
        for source, target, mask, what in cases:
            seed = int(torch.randint(100, (1,), generator=g))
            prog = Program(source, target, form="tanh", mask=mask, init=1.5, seed=seed)
            t = torch.rand(7, *target, generator=g)
            W, M = prog.W.detach().clone(), prog.mask.clone()
            saved = (t.clone(), W.clone(), M.clone())
            got = program_transform(t, W, M)
            if not all(torch.equal(a, b) for a, b in zip((t, W, M), saved)):
                raise ExerciseError(f"{what}: t, W or M was modified in place: leave the inputs as they are.")
            want = reference_program_transform(*saved)
            with torch.no_grad():
                library = prog(saved[0])
            assert torch.allclose(want, library, atol=1e-6), "the reference disagrees with Program"  # our own check
            if not isinstance(got, torch.Tensor) or tuple(got.shape) != (7, *source):
                raise ExerciseError(f"{what}: expected a tensor of shape {(7, *source)} (N x the source shape), got "
                                    f"{tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}")
            got = got.detach().to(want)
            if _close(got, want):
                continue
            t0, W0, M0 = saved
            padded = _pad_half(t0, source[1:])
            if _close(got, padded + torch.tanh(W0 * M0) / 2):
                raise ExerciseError(f"{what}: the values must be clipped to [0, 1] (the source model's input range): "
                                    "a grey pixel plus a program above 1/2 goes past 1.")
            if _close(got, (padded + torch.tanh(W0 * M0)).clamp(0, 1)):
                raise ExerciseError(f"{what}: tanh(W * M) lies in [-1, 1], the range of BAR's [-1, 1] images; in "
                                    "[0, 1] the program is tanh(W * M) / 2.")
            inside = _pad_half(torch.ones_like(t0), source[1:]) == 1.0
            zero_pad = torch.where(inside, padded, torch.zeros_like(padded))
            if _close(got, (zero_pad + torch.tanh(W0 * M0) / 2).clamp(0, 1)):
                raise ExerciseError(f"{what}: the padding is 0 (black); in [0, 1] BAR's zero padding of [-1, 1] "
                                    "images is mid-grey 1/2.")
            if _close(got, (padded + torch.tanh(W0) / 2).clamp(0, 1)):
                raise ExerciseError(f"{what}: the mask is missing: the program acts only where M lets it, "
                                    "P = tanh(W * M) / 2.")
            if _close(got, (padded + M0 * torch.tanh(W0) / 2).clamp(0, 1)):
                raise ExerciseError(f"{what}: M multiplies W inside the tanh, tanh(W * M), not the tanh's output "
                                    "(the two agree only for a binary mask; here M is a weight in [0, 1]).")
            for top in range(source[1] - target[1] + 1):
                for left in range(source[2] - target[2] + 1):
                    shifted = torch.full_like(padded, 0.5)
                    shifted[:, :, top:top + target[1], left:left + target[2]] = t0
                    if _close(got, (shifted + torch.tanh(W0 * M0) / 2).clamp(0, 1)):
                        raise ExerciseError(
                            f"{what}: the target sits at row {top}, column {left}; centred it starts at row "
                            f"{(source[1] - target[1]) // 2}, column {(source[2] - target[2]) // 2} (the margins "
                            "(H - h) // 2 and (W - w) // 2 before it, the rest after).")
            raise ExerciseError(f"{what}: not the program's output (max difference {(got - want).abs().max():.3g}). "
                                "Hint: pad t with 1/2, add tanh(W * M) / 2, clip to [0, 1].")

    attempt(check, title="the program transform", strict=strict)


# ------------------------------------------------------------------------------------------ exercise 2
def check_focal_loss(focal_loss, *, strict: bool = False) -> None:
    """``focal_loss(p, y, gamma, omega)`` must return, for probabilities ``p`` (``N x K``) and labels ``y``,
    the ``N`` values ``-omega (1 - p_t)^gamma log p_t`` with ``p_t = p[i, y_i]``: per example, not
    averaged. At ``gamma = 0`` and ``omega = 1`` that is the cross-entropy ``-log p_t``. Checked against
    :func:`advlib.reprogram.focal_loss` and the reference."""
    import torch.nn.functional as F

    from ..reprogram import focal_loss as library

    def check():
        g = torch.Generator().manual_seed(2017)
        p_hand = torch.tensor([[0.9, 0.1], [0.3, 0.7], [0.5, 0.5]], dtype=torch.float64)
        y_hand = torch.tensor([0, 0, 1])
        cases = [(p_hand, y_hand, 2.0, 1.0, "hand-made: 3 examples, 2 classes, gamma 2")]
        for n, k, gamma, omega in ((8, 2, 0.0, 1.0), (16, 10, 2.0, 1.0), (16, 10, 3.5, 0.25), (5, 3, 1.0, 2.0)):
            p = torch.softmax(3 * torch.randn(n, k, generator=g, dtype=torch.float64), 1)
            y = torch.randint(k, (n,), generator=g)
            cases.append((p, y, gamma, omega, f"{n} examples, {k} classes, gamma {gamma}, omega {omega}"))
        for p, y, gamma, omega, what in cases:
            saved = (p.clone(), y.clone())
            got = focal_loss(p, y, gamma, omega)
            if not (torch.equal(p, saved[0]) and torch.equal(y, saved[1])):
                raise ExerciseError(f"{what}: p or y was modified in place: leave them as they are.")
            p0, y0 = saved
            want = reference_focal_loss(p0, y0, gamma, omega)
            assert torch.allclose(want, library(p0, y0, gamma, omega), atol=1e-9)  # the reference is the library's
            if gamma == 0 and omega == 1:
                assert torch.allclose(want, F.nll_loss(p0.log(), y0, reduction="none"), atol=1e-9)  # and the CE
            if not isinstance(got, torch.Tensor):
                raise ExerciseError(f"{what}: return a tensor of {len(y0)} losses, got {type(got).__name__}")
            got = got.detach().to(want)
            if got.numel() == 1 and len(y0) > 1:
                if torch.allclose(got.flatten(), want.mean()[None], atol=1e-6) or \
                        torch.allclose(got.flatten(), want.sum()[None], atol=1e-6):
                    raise ExerciseError(f"{what}: that is the batch's mean (or sum); return the loss of every "
                                        f"example, a tensor of {len(y0)} values (target_loss averages them).")
            if tuple(got.shape) != (len(y0),):
                raise ExerciseError(f"{what}: expected {len(y0)} losses (one per example), got shape "
                                    f"{tuple(got.shape)}")
            if _close(got, want, 1e-6):
                continue
            pt = p0.gather(1, y0[:, None])[:, 0]
            if _close(got, -(1 - pt) ** gamma * pt.log(), 1e-6):
                raise ExerciseError(f"{what}: the weight omega is missing (here omega = {omega}).")
            if _close(got, -omega * pt.log(), 1e-6):
                raise ExerciseError(f"{what}: that is the (weighted) cross-entropy: the factor (1 - p_t)^gamma, "
                                    "which down-weights the examples already classified well, is missing.")
            if _close(got, -omega * pt ** gamma * pt.log(), 1e-6):
                raise ExerciseError(f"{what}: the modulating factor is (1 - p_t)^gamma, not p_t^gamma: a confident, "
                                    "correct example (p_t near 1) must weigh little.")
            if _close(got, -omega * (1 - pt) ** gamma * (1 - pt).log(), 1e-6):
                raise ExerciseError(f"{what}: the log is of p_t, the probability of the true label, not of 1 - p_t.")
            if _close(got, omega * (1 - pt) ** gamma * pt.log(), 1e-6):
                raise ExerciseError(f"{what}: the sign: log p_t is negative, the loss -omega (1 - p_t)^gamma log p_t "
                                    "is positive.")
            pmax = p0.max(1).values
            if _close(got, -omega * (1 - pmax) ** gamma * pmax.log(), 1e-6):
                raise ExerciseError(f"{what}: p_t is the probability of the *true* label y_i, not the largest one.")
            raise ExerciseError(f"{what}: expected {[round(v, 4) for v in want.tolist()]}, got "
                                f"{[round(v, 4) for v in got.tolist()]}. Hint: p_t = p[i, y[i]] "
                                "(p.gather(1, y[:, None])), then -omega * (1 - p_t) ** gamma * log(p_t).")

    attempt(check, title="the focal loss", strict=strict)


# ------------------------------------------------------------------------------------------ exercise 3
def check_wasserstein_1d(wasserstein_1d, *, strict: bool = False) -> None:
    """``wasserstein_1d(a, b)`` must return the 1-Wasserstein distance of two 1-D samples of the same size
    ``n`` (tensors of shape ``(n,)``): ``mean_i |a_(i) - b_(i)|`` with both sorted. A number or a
    0-dimensional tensor. Checked against :func:`advlib.reprogram.wasserstein_1d` and the reference."""
    from ..reprogram import wasserstein_1d as library

    def check():
        g = torch.Generator().manual_seed(2011)
        cases = [(torch.tensor([0.0, 3.0, 1.0, 2.0]), torch.tensor([-1.0, 2.5, 0.5, 6.0]),
                  "hand-made: [0, 3, 1, 2] and [-1, 2.5, 0.5, 6] (distance 1.25)")]
        a = torch.randn(50, generator=g)
        cases += [(a, a[torch.randperm(50, generator=g)], "a sample and the same values shuffled"),
                  (a, a + 1.5, "a sample and the same shifted by 1.5"),
                  (torch.randn(200, generator=g), 0.3 + 2 * torch.randn(200, generator=g), "N(0, 1) and N(0.3, 4), "
                   "200 points each"),
                  (torch.rand(64, generator=g), torch.rand(64, generator=g) ** 3, "uniform and a cubed uniform")]
        for a, b, what in cases:
            saved = (a.clone(), b.clone())
            got = wasserstein_1d(a, b)
            if not (torch.equal(a, saved[0]) and torch.equal(b, saved[1])):
                raise ExerciseError(f"{what}: a or b was modified in place (Tensor.sort_? a[:] = ...): sort copies.")
            a0, b0 = saved
            want = reference_wasserstein_1d(a0, b0)
            assert math.isclose(float(want), float(library(a0[:, None], b0[:, None])[0]), abs_tol=1e-5)
            try:
                got = torch.as_tensor(got, dtype=torch.float64)
            except (TypeError, ValueError, RuntimeError):
                raise ExerciseError(f"{what}: return a number, got {type(got).__name__}") from None
            if got.numel() != 1:
                raise ExerciseError(f"{what}: return one number (the distance), got a tensor of shape "
                                    f"{tuple(got.shape)}")
            got = got.reshape(())
            if math.isclose(float(got), float(want), rel_tol=1e-5, abs_tol=1e-6):
                continue
            sa, sb = a0.double().sort().values, b0.double().sort().values
            tries = [((a0 - b0).double().abs().mean(), "that pairs a[i] with b[i] in the order given; the optimal "
                      "coupling on the line pairs the sorted values (the i-th smallest with the i-th smallest)"),
                     ((sa - sb).pow(2).mean(), "that is the mean *squared* difference (W_2^2); W_1 averages the "
                      "absolute differences"),
                     ((sa - sb).pow(2).mean().sqrt(), "that is W_2 (root mean square); W_1 averages the absolute "
                      "differences"),
                     ((sa - sb).abs().sum(), "that is the sum of the differences; W_1 is their mean (each point "
                      "carries mass 1/n)"),
                     ((sa - sb).abs().max(), "that is the largest difference (W_infinity); W_1 is their mean"),
                     ((a0.double().mean() - b0.double().mean()).abs(), "that is the difference of the means, which "
                      "is W_1 only when one sample lies entirely to the right of the other after sorting; average "
                      "|a_(i) - b_(i)| instead"),
                     ((sa - b0.double()).abs().mean(), "only a is sorted: sort both"),
                     ((a0.double() - sb).abs().mean(), "only b is sorted: sort both"),
                     ((sa - sb.flip(0)).abs().mean(), "one sample is sorted in descending order: sort both ascending")]
            for value, hint in tries:
                if math.isclose(float(got), float(value), rel_tol=1e-5, abs_tol=1e-6):
                    raise ExerciseError(f"{what}: {hint} (expected {float(want):.5f}, got {float(got):.5f}).")
            raise ExerciseError(f"{what}: expected {float(want):.5f}, got {float(got):.5f}. Hint: sort a and b, "
                                "then the mean absolute difference.")

    attempt(check, title="the 1-D Wasserstein distance", strict=strict)
