"""FGSM and PGD: gradient steps on the loss, projected back into the threat model."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..threat import check_count, check_inputs, clip_box, lp_norm, margin, parse_norm, per_example, project
from ._common import step_size

__all__ = ["fgsm", "pgd"]


def _loss(logits: torch.Tensor, y: torch.Tensor, loss: str, targeted: bool) -> torch.Tensor:
    """Per-example objective to *maximise*."""
    if loss == "ce":
        ce = F.cross_entropy(logits, y, reduction="none")
        return -ce if targeted else ce
    if loss == "cw":
        return -margin(logits, y, targeted)
    raise ValueError(f"loss must be 'ce' or 'cw', got {loss!r}")


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, targeted: bool = False,
         loss: str = "ce") -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al., 2015, eq. 3): ``x + eps * sign(grad_x loss)``,
    clipped to [0, 1] (targeted: a step *down* the loss of the target label)."""
    check_inputs(model, x, y, who="fgsm", eps=eps)
    x0 = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(_loss(model(x0), y, loss, targeted).sum(), x0)
    return (x + eps * grad.sign()).clamp(0, 1).detach()


def _random_start(x: torch.Tensor, eps, norm: str) -> torch.Tensor:
    """A random point of the ball (``eps`` a number or one per example), clipped to the box."""
    eps = per_example(eps, x)
    if norm == "linf":
        delta = (torch.rand_like(x) * 2 - 1) * eps
    else:  # a random direction (Gaussian for L2, Laplace for L1) at a radius uniform in [0, eps]
        # (not uniform in the ball: in d = 64 dimensions that puts almost every start on the surface)
        delta = torch.randn_like(x) if norm == "l2" else torch.distributions.Laplace(0.0, 1.0).sample(x.shape).to(x)
        delta = delta / lp_norm(delta, norm).clamp(min=1e-12).view(-1, *[1] * (x.dim() - 1))
        delta = delta * eps * torch.rand(len(x), device=x.device).view(-1, *[1] * (x.dim() - 1))
    return clip_box(x, delta)


def _step(grad: torch.Tensor, norm: str, x_adv: torch.Tensor | None = None) -> torch.Tensor:
    """The steepest-ascent direction of unit norm: sign for L-inf, normalised gradient for L2, and
    for L1 the largest-|gradient| coordinate (Tramer & Boneh 2019 use a top-q% variant). Given the
    current point ``x_adv``, the L1 step skips coordinates that the box [0, 1] blocks (a pixel at 0
    pushed down, at 1 pushed up): moving only such a pixel would stall the attack."""
    if norm == "linf":
        return grad.sign()
    if norm == "l1" and x_adv is not None:
        grad = grad.masked_fill(((x_adv <= 0) & (grad < 0)) | ((x_adv >= 1) & (grad > 0)), 0)
    flat = grad.flatten(1)
    if norm == "l2":
        return (flat / flat.norm(dim=1, keepdim=True).clamp(min=1e-12)).view_as(grad)
    top = flat.abs().argmax(1, keepdim=True)
    return torch.zeros_like(flat).scatter(1, top, flat.gather(1, top).sign()).view_as(grad)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps, alpha: float | None = None,
        steps: int, norm: str = "linf", random_start: bool = True, targeted: bool = False, loss: str = "ce",
        restarts: int = 1, schedule: str = "constant") -> torch.Tensor:
    """Projected gradient descent (Madry et al., 2018, eq. 2), in the L-inf, L2 or L1 ball:

        delta <- Proj_{||delta|| <= eps, x + delta in [0, 1]} (delta + alpha_t * s(grad_delta loss))

    with ``s`` the unit steepest-ascent direction of the norm (sign for L-inf). ``eps`` is a number or
    one radius per example (a tensor of length N). ``alpha`` defaults to ``2.5 * eps / steps`` (the
    ``robustness`` library's rule; per example when ``eps`` is); ``schedule="cosine"`` decays it to 0.
    Without random start and with ``restarts=1`` this is I-FGSM / BIM (Kurakin et al., 2017). ``loss`` is cross-entropy
    (``"ce"``) or the C&W margin (``"cw"``). With restarts, each example keeps a run that fools the
    model (reaches the target) if any does, else the run that reached the highest loss, so more
    restarts never help the model. All examples of a step share one forward and one backward pass.
    """
    check_inputs(model, x, y, who="pgd", eps=eps, steps=steps, norm=norm)
    norm = parse_norm(norm, "pgd")
    check_count(restarts, "pgd", "restarts", 1)
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"pgd: schedule must be 'constant' or 'cosine', got {schedule!r}")
    alpha = per_example(step_size("pgd", alpha, eps, steps), x)
    x, y = x.detach(), y.detach()
    best, best_loss = x.clone(), torch.full((len(x),), -torch.inf, device=x.device)
    best_hit = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(restarts):
        delta = _random_start(x, eps, norm) if random_start else torch.zeros_like(x)
        for t in range(steps):
            a = alpha if schedule == "constant" else alpha * 0.5 * (1 + math.cos(math.pi * t / steps))
            delta.requires_grad_(True)
            (grad,) = torch.autograd.grad(_loss(model(x + delta), y, loss, targeted).sum(), delta)
            x_now = x + delta.detach() if norm == "l1" else None  # only the L1 step needs the point
            delta = clip_box(x, project(delta.detach() + a * _step(grad, norm, x_now), eps, norm))
        if restarts == 1:  # nothing to choose between: skip the extra forward pass
            return (x + delta).detach()
        with torch.no_grad():
            logits = model(x + delta)
            final = _loss(logits, y, loss, targeted)
            hit = (logits.argmax(1) == y) if targeted else (logits.argmax(1) != y)
        # a run that fools the model beats one that does not, whatever their losses (a higher
        # cross-entropy does not imply a wrong label); among equals, the higher loss wins
        better = (hit & ~best_hit) | ((hit == best_hit) & (final > best_loss))
        best[better], best_loss[better], best_hit[better] = (x + delta)[better], final[better], hit[better]
    return best.detach()
