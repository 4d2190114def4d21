"""EAD: elastic-net attacks (Chen, Sharma, Zhang, Yi & Hsieh, "EAD: Elastic-Net Attacks to Deep
Neural Networks via Adversarial Examples", AAAI 2018).

C&W's formulation with an L1 term added to the distance, which favours *sparse* perturbations:

    minimise_{x in [0,1]^d}  c * f(x) + ||x - x0||_2^2 + beta * ||x - x0||_1        (paper eq. 3)

The L1 term is not differentiable, so the paper solves it by (fast) iterative shrinkage-
thresholding, ISTA / FISTA (Beck & Teboulle 2009): a gradient step on the smooth part
g(x) = c * f(x) + ||x - x0||_2^2, then the projected shrinkage-thresholding operator (eq. 5)

    [Pi_[0,1] S_beta(z)]_i = min(z_i - beta, 1)   if z_i - x0_i >  beta
                             x0_i                 if |z_i - x0_i| <= beta
                             max(z_i + beta, 0)   if z_i - x0_i < -beta

which sets every coordinate that moved by less than ``beta`` back to the original pixel.
"""
from __future__ import annotations

import torch
from torch import nn

from ._common import check_inputs, lp_norm, margin
from .cw import _check_search, _gap, _update_c

__all__ = ["ead", "shrink"]


def shrink(z: torch.Tensor, x0: torch.Tensor, beta: float) -> torch.Tensor:
    """The projected shrinkage-thresholding operator Pi_[0,1](S_beta(z)) of EAD (eq. 5), around x0."""
    d = z - x0
    return torch.where(d > beta, (z - beta).clamp(max=1), torch.where(d < -beta, (z + beta).clamp(min=0), x0))


def ead(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, beta: float = 1e-2, c: float = 1.0,
        kappa: float = 0.0, steps: int = 100, lr: float = 0.01, search_steps: int = 9, rule: str = "en",
        targeted: bool = False, history: list | None = None) -> torch.Tensor:
    """The EAD attack (Chen et al., AAAI 2018, Algorithm 1 with FISTA): from ``x_0 = y_0 = x``,

        x_{k+1} = Pi_[0,1] S_beta(y_k - a_k * grad g(y_k)),      g = c * f + ||. - x||_2^2
        y_{k+1} = x_{k+1} + k / (k + 3) * (x_{k+1} - x_k)       (the slack / momentum variable)

    with ``f`` the C&W margin (confidence ``kappa``) and the step ``a_k = lr * (1 - k/steps)^0.5``
    (the polynomial decay of the authors' code); the slack point ``y_k`` may leave [0, 1], only the
    ``x_k`` are candidates. As in the paper (and its code) the threshold is
    ``beta`` itself, not ``a_k * beta`` as an exact proximal step of eq. 3 would use: it shrinks
    harder and gives sparser results. ``c`` is the initial constant of C&W's per-example binary
    search (``search_steps`` rounds, each restarting from ``x``). Among all successful iterates each
    example keeps the best by the decision ``rule``: ``"en"`` the elastic-net distance
    ``||d||_2^2 + beta * ||d||_1``, ``"l1"`` the L1 distance; one never broken is returned unchanged.
    The paper runs 1000 steps; ``history``, if a list, receives the per-example objective
    ``c * f + ||d||_2^2 + beta * ||d||_1`` (CPU tensor) of every iterate x_k.
    """
    check_inputs(model, x, y, who="ead", steps=steps)
    _check_search("ead", c, search_steps, lr, kappa)
    if not beta >= 0:
        raise ValueError(f"ead: beta must be >= 0, got {beta}")
    if rule not in ("en", "l1"):
        raise ValueError(f"ead: rule must be 'en' (elastic net) or 'l1', got {rule!r}")
    x, y = x.detach(), y.detach()
    n = len(x)
    const = torch.full((n,), float(c), device=x.device, dtype=x.dtype)
    lo, hi = torch.zeros_like(const), torch.full_like(const, 1e10)
    best, best_dist = x.clone(), torch.full_like(const, torch.inf)

    def evaluate(x_k: torch.Tensor, logits: torch.Tensor, succeeded: torch.Tensor) -> None:
        nonlocal best_dist
        delta = x_k - x
        l1, l2sq = lp_norm(delta, 1), delta.flatten(1).pow(2).sum(1)
        if history is not None:
            history.append((const * margin(logits, y, targeted, kappa) + l2sq + beta * l1).cpu())
        ok = _gap(logits, y, targeted) < -kappa
        succeeded |= ok
        dist = l2sq + beta * l1 if rule == "en" else l1
        better = ok & (dist < best_dist)
        best_dist = torch.where(better, dist, best_dist)
        best[better] = x_k[better]

    for _ in range(search_steps):
        x_k, y_k = x.clone(), x.clone()
        succeeded = torch.zeros(n, dtype=torch.bool, device=x.device)
        for k in range(steps):
            y_k.requires_grad_(True)
            g = const * margin(model(y_k), y, targeted, kappa) + (y_k - x).flatten(1).pow(2).sum(1)
            (grad,) = torch.autograd.grad(g.sum(), y_k)
            a_k = lr * (1 - k / steps) ** 0.5
            with torch.no_grad():
                x_next = shrink(y_k.detach() - a_k * grad, x, beta)
                y_k = x_next + k / (k + 3) * (x_next - x_k)
                x_k = x_next
                evaluate(x_k, model(x_k), succeeded)
        _update_c(const, lo, hi, succeeded)
    return best.detach()
