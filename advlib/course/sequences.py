"""Helpers of lecture 52 (adversarial sequences and temporal-dependency detection): the reference
answers and the checks of its exercises.

* Exercise 1, TD's score (Yang et al., ICLR 2019, Sec. 3) for per-step labels: label the first ``k``
  steps alone, label the whole series, and count the fraction of the first ``k`` steps whose two
  labels differ.
* Exercise 2, the loss of the adaptive attack that knows the detector: the per-step cross-entropy of
  the target labels on the whole series plus, for every prefix length ``k`` the detector may use, the
  same on the prefix ``x_{1:k}`` labelled alone, so that cutting the series no longer changes its labels.

Each ``reference_*`` function is written from the formula, one series and one step at a time,
independently of :mod:`advlib.applications.temporal` (which the lecture uses), so that a check
compares two implementations, not one with itself.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .exercises import ExerciseError, attempt

__all__ = ["reference_td_score", "reference_adaptive_loss", "check_td_score", "check_adaptive_loss"]


# ------------------------------------------------------------------------------------------ references
def reference_td_score(model: nn.Module, x: torch.Tensor, k: int) -> torch.Tensor:
    """Per series of ``x`` (``N x C x L``), the fraction of the first ``k`` steps whose label on ``x_{1:k}``
    alone differs from its label on the whole series: one series at a time."""
    out = torch.empty(len(x))
    with torch.no_grad():
        for i in range(len(x)):
            whole = model(x[i:i + 1])[0].argmax(0)
            prefix = model(x[i:i + 1, :, :k])[0].argmax(0)
            out[i] = sum(int(whole[t] != prefix[t]) for t in range(k)) / k
    return out


def reference_adaptive_loss(model: nn.Module, x: torch.Tensor, target: torch.Tensor, prefixes) -> torch.Tensor:
    """``CE(model(x), target) + sum_k CE(model(x_{1:k}), target_{1:k})``, each cross-entropy the mean over
    series and steps, written step by step."""
    def ce(logits, labels):  # mean over series and steps of -log softmax(logits)[label]
        logp = logits.log_softmax(1)
        n, steps = labels.shape
        return -sum(logp[i, labels[i, t], t] for i in range(n) for t in range(steps)) / (n * steps)

    loss = ce(model(x), target)
    for k in prefixes:
        loss = loss + ce(model(x[..., :k]), target[:, :k])
    return loss


# ------------------------------------------------------------------------------------------ checks
def _tagger(seed: int, n_classes: int = 3) -> nn.Module:
    """A small random non-causal tagger (two non-causal convolutions), seeded: its labels depend on a
    window of 9 steps around each step, so cutting a series changes the last few labels of the prefix."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv1d(1, 8, 5, padding=2), nn.Tanh(), nn.Conv1d(8, n_classes, 5, padding=2)).eval()


def check_td_score(td_score: Callable, *, strict: bool = False) -> None:
    """``td_score(model, x, k)`` must return, per series of ``x`` (``N x 1 x L``), the fraction of the first
    ``k`` steps whose label (the arg-max over classes of ``model``'s ``N x K x L`` logits) on the prefix
    ``x[..., :k]`` alone differs from its label on the whole series: a tensor of ``N`` values in [0, 1]."""
    def check():
        g = torch.Generator().manual_seed(2019)
        for seed, n, length, k in [(0, 5, 40, 20), (1, 3, 30, 7), (2, 6, 64, 60), (3, 1, 16, 1)]:
            model = _tagger(seed)
            x = torch.rand(n, 1, length, generator=g)
            want = reference_td_score(model, x, k)
            got = td_score(model, x, k)
            what = f"{n} series of length {length}, k = {k}"
            try:
                got = torch.as_tensor(got, dtype=torch.float32).cpu()
            except (TypeError, ValueError, RuntimeError):
                raise ExerciseError(f"{what}: return a tensor of {n} scores, got {type(got).__name__}") from None
            if got.shape != (n,):
                raise ExerciseError(f"{what}: return one score per series, shape ({n},); got {tuple(got.shape)}")
            if torch.allclose(got, want, atol=1e-6):
                continue
            with torch.no_grad():
                whole, prefix = model(x).argmax(1), model(x[..., :k]).argmax(1)
            if torch.allclose(got, (whole[:, :k] != prefix).float().sum(1), atol=1e-6):
                raise ExerciseError(f"{what}: that is the number of disagreeing steps; TD's score is their "
                                    "fraction of the k steps")
            if torch.allclose(got, (whole[:, :k] == prefix).float().mean(1), atol=1e-6):
                raise ExerciseError(f"{what}: that is the agreement; the score is the disagreement (one minus it)")
            if torch.allclose(got, torch.zeros(n)) and not torch.allclose(want, torch.zeros(n)):
                raise ExerciseError(f"{what}: every score is 0 — compare the labels of the prefix labelled *alone* "
                                    "(model(x[..., :k])) with the first k labels of the whole series "
                                    "(model(x)[..., :k]), not the same forward pass twice")
            raise ExerciseError(f"{what}: the scores differ from TD's (first series: expected {float(want[0]):.3f}, "
                                f"got {float(got[0]):.3f})")
    attempt(check, title="Exercise 1 (TD's score)", strict=strict)


def check_adaptive_loss(adaptive_loss: Callable, *, strict: bool = False) -> None:
    """``adaptive_loss(model, x, target, prefixes)`` must return the scalar, differentiable
    ``CE(model(x), target) + sum over k in prefixes of CE(model(x[..., :k]), target[:, :k])``, each ``CE`` the
    mean per-step cross-entropy over series and steps (``F.cross_entropy`` of ``N x K x L`` logits)."""
    def check():
        g = torch.Generator().manual_seed(2020)
        for seed, n, length, prefixes in [(0, 4, 24, ()), (1, 3, 30, (10,)), (2, 2, 40, (8, 20, 39))]:
            model = _tagger(seed)
            x = torch.rand(n, 1, length, generator=g, requires_grad=True)
            target = torch.randint(3, (n, length), generator=g)
            what = f"{n} series of length {length}, prefixes {tuple(prefixes)}"
            want = reference_adaptive_loss(model, x, target, prefixes)
            got = adaptive_loss(model, x, target, prefixes)
            if not isinstance(got, torch.Tensor) or got.numel() != 1:
                raise ExerciseError(f"{what}: return one scalar tensor (the loss), got "
                                    f"{tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}")
            if not got.requires_grad:
                raise ExerciseError(f"{what}: the loss carries no gradient: compute it from model(x) without "
                                    "torch.no_grad() or .detach(), the attack differentiates it")
            if math.isclose(float(got.detach()), float(want.detach()), rel_tol=1e-5, abs_tol=1e-6):
                (g_got,) = torch.autograd.grad(got, x)
                (g_want,) = torch.autograd.grad(reference_adaptive_loss(model, x, target, prefixes), x)
                if not torch.allclose(g_got, g_want, atol=1e-6):
                    raise ExerciseError(f"{what}: the value is right but its gradient is not")
                continue
            whole = F.cross_entropy(model(x), target).detach()
            if prefixes and math.isclose(float(got.detach()), float(whole), rel_tol=1e-5):
                raise ExerciseError(f"{what}: that is the whole series' loss only; add the loss of every prefix "
                                    "x[..., :k] labelled alone against target[:, :k]")
            if prefixes:
                wrong = whole + sum(F.cross_entropy(model(x)[..., :k], target[:, :k]) for k in prefixes)
                if math.isclose(float(got.detach()), float(wrong.detach()), rel_tol=1e-5):
                    raise ExerciseError(f"{what}: the prefix terms must label x[..., :k] on its own (a new forward "
                                        "pass on the cut series), not read the first k steps of model(x)")
            raise ExerciseError(f"{what}: expected {float(want.detach()):.5f}, got {float(got.detach()):.5f}")
    attempt(check, title="Exercise 2 (the adaptive attack's loss)", strict=strict)
