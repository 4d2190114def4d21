"""An L0 attack: the Jacobian-based saliency map attack (JSMA; Papernot, McDaniel, Jha, Fredrikson,
Celik & Swami, "The Limitations of Deep Learning in Adversarial Settings", EuroS&P 2016).

Greedy: at every iteration it picks the *pair* of pixels whose joint increase most raises the
target's logit while lowering the others' (the saliency map over pairs, §III.B / Algorithm 3), and
sets both to their maximum. It stops when the target is reached, or when a fraction ``gamma`` of
the pixels has been changed. Like Carlini & Wagner (2017, §VI.A), we take the saliency map on the
logits ``Z`` rather than the softmax ``F`` (softmax saturates and its Jacobian vanishes).
"""
from __future__ import annotations

import torch
from torch import nn

from ..threat import check_inputs, chunks

__all__ = ["jsma"]


def _jsma_targeted(model: nn.Module, x: torch.Tensor, t: torch.Tensor, theta: float, gamma: float) -> torch.Tensor:
    """Batched targeted JSMA, in memory-sized chunks: the pair scores are d x d per input."""
    return torch.cat([_jsma_chunk(model, x[s], t[s], theta, gamma) for s in chunks(len(x), x[0].numel() ** 2)])


def _jsma_chunk(model: nn.Module, x: torch.Tensor, t: torch.Tensor, theta: float, gamma: float) -> torch.Tensor:
    n, d = len(x), x[0].numel()
    x_adv = x.clone().flatten(1)
    domain = x_adv < 1  # the search domain Gamma: pixels that can still increase
    max_iters = int(gamma * d) // 2  # two pixels per iteration: at most gamma * d change
    eye = torch.eye(d, dtype=torch.bool, device=x.device)
    active = torch.ones(n, dtype=torch.bool, device=x.device)
    for _ in range(max_iters):
        xa = x_adv.view_as(x).requires_grad_(True)
        logits = model(xa)
        active &= logits.argmax(1) != t
        if not active.any():
            break
        z_t = logits.gather(1, t[:, None]).squeeze(1)
        (alpha,) = torch.autograd.grad(z_t.sum(), xa, retain_graph=True)  # d z_t / d x_p
        (beta,) = torch.autograd.grad((logits.sum(1) - z_t).sum(), xa)  # sum_{j != t} d z_j / d x_p
        alpha, beta = alpha.flatten(1), beta.flatten(1)
        with torch.no_grad():
            a = alpha[:, :, None] + alpha[:, None, :]  # alpha_p + alpha_q for every pair
            b = beta[:, :, None] + beta[:, None, :]
            ok = (a > 0) & (b < 0) & domain[:, :, None] & domain[:, None, :] & ~eye
            score = torch.where(ok, a * -b, torch.zeros_like(a)).flatten(1)
            top, idx = score.max(1)
            go = active & (top > 0)  # no admissible pair left: the example gives up
            if not go.any():
                break
            rows = go.nonzero()[:, 0]
            for pix in (idx[rows] // d, idx[rows] % d):
                x_adv[rows, pix] = (x_adv[rows, pix] + theta).clamp(max=1)
                domain[rows, pix] = x_adv[rows, pix] < 1
            active &= go
    return x_adv.view_as(x).detach()


def jsma(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, theta: float = 1.0, gamma: float = 0.145,
         targeted: bool = False, targets: str = "all") -> torch.Tensor:
    """JSMA (Papernot et al., 2016), increasing features (theta > 0), saliency map over pixel pairs:

        (p, q) = argmax_{p != q in Gamma}  (alpha_p + alpha_q) * |beta_p + beta_q|
                 subject to alpha_p + alpha_q > 0 and beta_p + beta_q < 0,

    with ``alpha_p = dZ_t / dx_p`` and ``beta_p = sum_{j != t} dZ_j / dx_p``; both pixels grow by
    ``theta`` (clipped to 1) and leave Gamma once at 1. At most ``floor(gamma * d / 2)`` iterations,
    so at most ``gamma * d`` pixels change and none decreases (``gamma = 0.145`` is the paper's MNIST
    budget). With ``targeted=True``, ``y`` holds the targets. Untargeted, ``targets="all"`` runs
    the targeted attack towards every other class and keeps, per example, the success with the
    fewest changed pixels (``n_classes - 1`` runs); ``targets="next"`` only aims at the second most
    likely class (one run). An example that is not broken comes back as its last iterate.
    """
    n_classes = check_inputs(model, x, y, who="jsma")
    if not 0 < theta <= 1:
        raise ValueError(f"jsma: theta must lie in (0, 1] (pixels only increase), got {theta}")
    if not 0 <= gamma <= 1:
        raise ValueError(f"jsma: gamma (the largest fraction of pixels changed) must lie in [0, 1], got {gamma}")
    if targets not in ("all", "next"):
        raise ValueError(f"jsma: targets must be 'all' or 'next', got {targets!r}")
    x, y = x.detach(), y.detach()
    if targeted:
        return _jsma_targeted(model, x, y, theta, gamma)
    with torch.no_grad():
        ranked = model(x).argsort(1, descending=True)
    if targets == "next":
        t = torch.where(ranked[:, 0] == y, ranked[:, 1], ranked[:, 0])
        return _jsma_targeted(model, x, t, theta, gamma)
    best, best_l0 = x.clone(), torch.full((len(x),), torch.inf, device=x.device)
    for k in range(1, n_classes):
        t = (y + k) % n_classes
        x_adv = _jsma_targeted(model, x, t, theta, gamma)
        with torch.no_grad():
            ok = model(x_adv).argmax(1) != y
            l0 = (x_adv != x).flatten(1).sum(1).to(best_l0.dtype)
            better = (ok & (l0 < best_l0)) | (torch.isinf(best_l0) & (k == 1))
            best_l0 = torch.where(ok & (l0 < best_l0), l0, best_l0)
            best[better] = x_adv[better]
    return best
