"""Checks of lecture 14 (transfer attacks)."""
from __future__ import annotations

import torch

from .exercises import ExerciseError, attempt

__all__ = ["check_conditional_transfer", "check_mi_fgsm", "reference_mi_fgsm"]


def check_conditional_transfer(conditional_transfer, *, strict: bool = False) -> None:
    """``conditional_transfer(fools_surrogate, fools_victim)`` must return the fraction of the examples
    that fool the surrogate which also fool the victim (``nan`` when none fools the surrogate)."""

    def check():
        s = torch.tensor([True, True, False, True, False, True])
        v = torch.tensor([True, False, True, True, False, False])
        got = float(conditional_transfer(s.clone(), v.clone()))
        if abs(got - 0.5) > 1e-6:
            hint = (" You divided by all examples, not by those that fool the surrogate." if abs(got - 2 / 6) < 1e-6
                    else " Count victims fooled among the surrogate's successes only.")
            raise ExerciseError(f"expected 2 of the 4 surrogate successes = 0.5, got {got:.4f}.{hint}")
        none = conditional_transfer(torch.zeros(3, dtype=torch.bool), torch.ones(3, dtype=torch.bool))
        if not torch.isnan(torch.as_tensor(float(none))):
            raise ExerciseError("when no example fools the surrogate the rate is undefined: return float('nan')")

    attempt(check, title="Exercise 1 (transfer among the surrogate's successes)", strict=strict)


def reference_mi_fgsm(model, x, y, *, eps: float, steps: int = 10, decay: float = 1.0) -> torch.Tensor:
    """MI-FGSM (Dong et al., CVPR 2018, Algorithm 1): ``g <- mu g + grad / ||grad||_1``,
    ``x <- clip_{x0, eps}(x + (eps / steps) sign(g))``."""
    alpha, x0, x_adv, g = eps / steps, x.detach(), x.detach().clone(), torch.zeros_like(x)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x_adv), y, reduction="sum"), x_adv)
        g = decay * g + grad / grad.flatten(1).abs().sum(1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
        x_adv = (x0 + (x_adv.detach() + alpha * g.sign() - x0).clamp(-eps, eps)).clamp(0, 1)
    return x_adv.detach()


def check_mi_fgsm(mi_fgsm, model, x, y, *, strict: bool = False) -> None:
    """``mi_fgsm(model, x, y, eps=, steps=, decay=)`` must stay in the L-inf ball and the box, and equal
    the reference MI-FGSM (with ``decay=0`` it is I-FGSM without random start)."""

    def check():
        for decay in (1.0, 0.0):
            got = mi_fgsm(model, x, y, eps=0.1, steps=5, decay=decay)
            if not isinstance(got, torch.Tensor) or got.shape != x.shape:
                raise ExerciseError(f"expected a batch like x, shape {tuple(x.shape)}")
            if (got - x).abs().max() > 0.1 + 1e-5 or got.min() < 0 or got.max() > 1:
                raise ExerciseError("the result leaves the L-inf ball of radius eps or the box [0, 1]: "
                                    "clip x + step to [x0 - eps, x0 + eps] and then to [0, 1]")
            want = reference_mi_fgsm(model, x, y, eps=0.1, steps=5, decay=decay)
            agree = ((got - want).abs() < 1e-4).float().mean().item()
            if agree < 0.999:
                raise ExerciseError(f"with decay={decay} only {agree:.1%} of the pixels agree with MI-FGSM. Hint: "
                                    "normalise each example's gradient by its own L1 norm before adding it to "
                                    "the momentum, and step alpha = eps / steps along sign(g)")

    attempt(check, title="Exercise 2 (MI-FGSM)", strict=strict)
