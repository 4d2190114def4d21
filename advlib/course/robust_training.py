"""Helpers of lecture 30 (robust training): the reference answers and the checks of its exercises.

* Exercise 1, the robust regulariser of TRADES (Zhang et al. 2019, eq. 5): per example
  ``KL(f(x) || f(x'))`` between the softmax outputs on a clean input and on its perturbation;
* Exercise 2, mixup of a batch (Zhang et al. 2018; step 2 of SPROUT's Algorithm 1, Cheng et al. 2021):
  ``x_mix = lam x + (1 - lam) x[partner]`` and the same mixture of one-hot labels;
* Exercise 3, CAT's radius rule (Cheng et al. 2020): a sample still classified correctly at its own
  radius ``eps_i`` gets ``eps_i + eta``, otherwise ``eps_i - eta``, kept in ``[0, eps_max]``.

Each ``reference_*`` function is written from the formula, independently of :mod:`advlib.defenses`
(whose recipes the lecture uses), so that a check compares two implementations, not one with itself.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .exercises import ExerciseError, attempt

__all__ = ["reference_kl", "reference_mixup", "reference_cat_update", "check_trades_kl", "check_mixup",
           "check_cat_update"]


# ------------------------------------------------------------------------------------------ references
def reference_kl(logits_clean: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(z) || softmax(z'))`` per row (TRADES' regulariser, Zhang et al. 2019, eq. 5), with
    ``torch.nn.functional.kl_div`` on log-probabilities (stable for large logits, differentiable)."""
    log_p, log_q = F.log_softmax(logits_clean, 1), F.log_softmax(logits_adv, 1)
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(1)


def reference_mixup(x: torch.Tensor, y: torch.Tensor, lam: float, partner: torch.Tensor, n_classes: int):
    """Mixup (Zhang et al. 2018): ``(lam x + (1 - lam) x[partner], lam e_y + (1 - lam) e_y[partner])``
    with ``e_y`` the one-hot rows of the labels ``y``."""
    one_hot = F.one_hot(y, n_classes).to(x.dtype)
    return lam * x + (1 - lam) * x[partner], lam * one_hot + (1 - lam) * one_hot[partner]


def reference_cat_update(eps_i: torch.Tensor, correct: torch.Tensor, eta: float, eps_max: float) -> torch.Tensor:
    """CAT's per-sample radius rule (Cheng et al. 2020): ``eps_i + eta`` where ``correct`` (the sample
    is still classified correctly at its radius), else ``eps_i - eta``; clipped to ``[0, eps_max]``."""
    return torch.where(correct, eps_i + eta, eps_i - eta).clamp(0, eps_max)


def _shape_error(got, shape: tuple, what: str) -> ExerciseError | None:
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(shape):
        return ExerciseError(f"{what}: expected a tensor of shape {tuple(shape)}, got "
                             f"{getattr(got, 'shape', type(got).__name__)}")
    return None


# ------------------------------------------------------------------------------------------ exercise 1
def check_trades_kl(trades_kl, *, strict: bool = False) -> None:
    """``trades_kl(logits_clean, logits_adv)`` must return, per example, ``KL(p || q)`` with
    ``p = softmax(logits_clean)`` and ``q = softmax(logits_adv)``: ``sum_k p_k (log p_k - log q_k)``.
    It must stay finite for large logits and differentiable in both arguments (TRADES back-propagates
    through ``f(x)`` and ``f(x')``); the gradient in ``logits_adv`` is ``q - p``."""

    def check():
        g = torch.Generator().manual_seed(30)
        cases = [(torch.randn(16, 10, generator=g) * 3, torch.randn(16, 10, generator=g) * 3),
                 (torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g))]
        same = torch.randn(4, 10, generator=g)
        cases.append((same, same.clone()))
        cases.append((same, same + 7.0))  # shifting every logit changes no probability
        big = torch.randn(6, 10, generator=g) * 60  # softmax underflows to 0 for many classes
        cases.append((big, torch.randn(6, 10, generator=g) * 60))
        for k, (z, z_adv) in enumerate(cases):
            lp, lq = F.log_softmax(z.double(), 1), F.log_softmax(z_adv.double(), 1)
            want = (lp.exp() * (lp - lq)).sum(1)
            got = trades_kl(z.clone(), z_adv.clone())
            if isinstance(got, torch.Tensor) and got.dim() == 0:
                raise ExerciseError("you returned one number for the batch: return one KL per example (a tensor of "
                                    "shape N); TRADES averages them itself. Hint: sum over the classes only, dim=1.")
            if err := _shape_error(got, want.shape, f"{len(z)} examples, {z.shape[1]} classes"):
                raise err
            got = got.detach().double()
            if not torch.isfinite(got).all():
                raise ExerciseError(f"the result has {(~torch.isfinite(got)).sum().item()} inf / NaN value(s) for "
                                    f"logits of size up to {z.abs().max():.0f}. Hint: softmax underflows to 0 and "
                                    "log(0) = -inf; take F.log_softmax of the logits instead of the log of a softmax.")
            if torch.allclose(got, want, rtol=1e-4, atol=1e-5):
                continue
            reverse = (lq.exp() * (lq - lp)).sum(1)
            cross = -(lp.exp() * lq).sum(1)
            if torch.allclose(got, reverse, rtol=1e-4, atol=1e-5):
                raise ExerciseError("you computed KL(f(x') || f(x)): the KL is not symmetric, and TRADES' regulariser "
                                    "weighs the log-ratio by the *clean* prediction, KL(f(x) || f(x')) = "
                                    "sum_k p_k (log p_k - log q_k), p from logits_clean.")
            if torch.allclose(got, cross, rtol=1e-4, atol=1e-5):
                raise ExerciseError("that is the cross-entropy H(p, q) = KL(p || q) + H(p): subtract the entropy of p "
                                    "(sum_k p_k log p_k), or the regulariser is not 0 when x' = x.")
            raise ExerciseError(f"case {k + 1}: expected {[round(v, 4) for v in want[:3].tolist()]}..., got "
                                f"{[round(v, 4) for v in got[:3].tolist()]}... Hint: p = softmax of the clean "
                                "logits, sum_k p_k (log_softmax(z)_k - log_softmax(z')_k) over dim 1.")
        z = torch.randn(8, 10, generator=g, requires_grad=True)
        z_adv = torch.randn(8, 10, generator=g, requires_grad=True)
        out = trades_kl(z, z_adv)
        if not out.requires_grad:
            raise ExerciseError("the result is detached from the logits: TRADES trains through it, so keep it "
                                "differentiable (no .detach(), .item(), numpy or torch.no_grad()).")
        grad_clean, grad_adv = torch.autograd.grad(out.sum(), (z, z_adv), allow_unused=True)
        if grad_clean is None or grad_adv is None:
            raise ExerciseError("the result does not depend on both logits: TRADES back-propagates through f(x) "
                                "and through f(x').")
        if not torch.allclose(grad_adv, z_adv.softmax(1) - z.softmax(1), atol=1e-5):
            raise ExerciseError("the values are right but the gradient in logits_adv is not q - p: do not detach or "
                                "clamp part of the computation.")

    attempt(check, title="TRADES' KL term", strict=strict)


# ------------------------------------------------------------------------------------------ exercise 2
def check_mixup(mixup, *, strict: bool = False) -> None:
    """``mixup(x, y, lam, partner, n_classes)`` must return ``(x_mix, y_mix)``: ``x_mix = lam x + (1 - lam)
    x[partner]`` (same shape as ``x``) and the same mixture of the one-hot labels, ``y_mix`` of shape
    ``N x n_classes`` (rows are probability distributions). ``partner`` is a permutation of the batch."""

    def check():
        g = torch.Generator().manual_seed(31)
        for n, k, lam in ((12, 10, 0.7), (6, 3, 0.25), (5, 4, 1.0)):
            x = torch.rand(n, 1, 8, 8, generator=g)
            y = torch.randint(0, k, (n,), generator=g)
            y[1] = (y[0] + 1) % k  # at least two different labels
            partner = torch.randperm(n, generator=g)
            if (partner == torch.arange(n)).all():
                partner = partner.roll(1)
            x0, y0, p0 = x.clone(), y.clone(), partner.clone()
            got = mixup(x, y, lam, partner, k)
            if not (isinstance(got, tuple) and len(got) == 2):
                raise ExerciseError(f"return the pair (x_mix, y_mix), got {type(got).__name__}")
            x_mix, y_mix = got
            if not (torch.equal(x, x0) and torch.equal(y, y0) and torch.equal(partner, p0)):
                raise ExerciseError("the inputs were modified in place: build new tensors (the training loop still "
                                    "needs x and y).")
            want_x, want_y = reference_mixup(x0, y0, lam, p0, k)
            if isinstance(y_mix, torch.Tensor) and y_mix.shape == (n,):
                raise ExerciseError("y_mix has one number per example: mix the labels as distributions (one-hot rows, "
                                    "F.one_hot(y, n_classes)), not as integers — 0.5 * 3 + 0.5 * 8 is not a digit.")
            if err := _shape_error(x_mix, want_x.shape, "x_mix") or _shape_error(y_mix, want_y.shape, "y_mix"):
                raise err
            x_mix, y_mix = x_mix.detach().float(), y_mix.detach().float()
            swapped_x = (1 - lam) * x0 + lam * x0[p0]
            if not torch.allclose(x_mix, want_x, atol=1e-6):
                if torch.allclose(x_mix, swapped_x, atol=1e-6):
                    raise ExerciseError(f"lam = {lam} weighs the partner: it weighs the batch itself, "
                                        "x_mix = lam * x + (1 - lam) * x[partner].")
                raise ExerciseError(f"lam = {lam}: x_mix is not lam * x + (1 - lam) * x[partner]. Hint: index the "
                                    "batch with the permutation, x[partner].")
            if not torch.allclose(y_mix.sum(1), torch.ones(n), atol=1e-5):
                raise ExerciseError(f"the rows of y_mix sum to {y_mix.sum(1)[:3].tolist()}..., not 1: a mixture of two "
                                    "distributions with weights lam and 1 - lam is a distribution.")
            if not torch.allclose(y_mix, want_y, atol=1e-6):
                one_hot = F.one_hot(y0, k).float()
                if lam < 1 and torch.allclose(y_mix, one_hot):
                    raise ExerciseError("y_mix is the one-hot label of x alone: the mixed input x_mix also holds "
                                        "(1 - lam) of its partner, so its label holds (1 - lam) of the partner's "
                                        "label.")
                if torch.allclose(y_mix, (1 - lam) * one_hot + lam * one_hot[p0], atol=1e-6):
                    raise ExerciseError("the labels' weights are swapped: y_mix = lam * e_y + (1 - lam) * "
                                        "e_y[partner], with the same lam and partner as the inputs.")
                raise ExerciseError("y_mix is not the same mixture of the one-hot labels as x_mix is of the inputs: "
                                    "lam * e_y + (1 - lam) * e_y[partner].")

    attempt(check, title="mixup of a batch", strict=strict)


# ------------------------------------------------------------------------------------------ exercise 3
def check_cat_update(cat_update, *, strict: bool = False) -> None:
    """``cat_update(eps_i, correct, eta, eps_max)`` must return the new radii: ``eps_i + eta`` where
    ``correct`` is true (the sample survived PGD at its own radius), ``eps_i - eta`` where it is
    false, clipped to ``[0, eps_max]``; a new tensor, ``eps_i`` untouched."""

    def check():
        g = torch.Generator().manual_seed(32)
        eps_max, eta = 0.1, 0.01
        eps_i = torch.cat([torch.tensor([0.0, 0.0, eps_max, eps_max, 0.005, 0.095]),
                           torch.rand(30, generator=g) * eps_max])
        correct = torch.cat([torch.tensor([True, False, True, False, False, True]),
                             torch.rand(30, generator=g) < 0.6])
        before = eps_i.clone()
        got = cat_update(eps_i, correct.clone(), eta, eps_max)
        if not torch.equal(eps_i, before):
            raise ExerciseError("eps_i was modified in place: return a new tensor (CAT keeps the old radii for "
                                "its history, and the samples of other batches keep theirs).")
        if err := _shape_error(got, eps_i.shape, "the new radii"):
            raise err
        got = got.detach().float()
        want = reference_cat_update(before, correct, eta, eps_max)
        if torch.allclose(got, want, atol=1e-7):
            return
        if torch.allclose(got, torch.where(correct, before - eta, before + eta).clamp(0, eps_max), atol=1e-7):
            raise ExerciseError("the rule is reversed: a sample still classified correctly at its radius can take a "
                                "*larger* one (eps_i + eta); a sample that was broken gets a smaller one.")
        if (got < -1e-7).any():
            raise ExerciseError(f"a radius became {got.min():.3f} < 0: a broken sample at radius 0 stays at 0. "
                                "Hint: clamp(0, eps_max).")
        if (got > eps_max + 1e-7).any():
            raise ExerciseError(f"a radius became {got.max():.3f} > eps_max = {eps_max}: the radii are bounded. "
                                "Hint: clamp(0, eps_max).")
        if torch.allclose(got, torch.where(correct, before + eta, before).clamp(0, eps_max), atol=1e-7):
            raise ExerciseError("the broken samples kept their radius: they must shrink by eta, or a radius that is "
                                "too large for a sample never comes back.")
        bad = (got - want).abs().argmax().item()
        raise ExerciseError(f"sample with eps_i = {before[bad]:.3f}, correct = {bool(correct[bad])}: expected "
                            f"{want[bad]:.3f}, got {got[bad]:.3f}. Hint: torch.where(correct, eps_i + eta, "
                            "eps_i - eta).clamp(0, eps_max).")

    attempt(check, title="CAT's radius rule", strict=strict)
