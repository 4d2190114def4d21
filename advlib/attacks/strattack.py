"""StrAttack: structured, group-sparse adversarial examples by ADMM (Xu, Liu, Zhao, Chen, Zhang, Fan,
Erdogmus, Wang & Lin, "Structured Adversarial Attack: Towards General Implementation and Better
Interpretability", ICLR 2019).

The image is cut into groups ``G_1 .. G_P`` of pixels (here non-overlapping ``s x s`` tiles, all
channels of a tile in one group; any partition by a tensor of group ids). A group-lasso penalty
``sum_i ||delta_{G_i}||_2`` makes whole groups of the perturbation zero, so the pixels that change
come in a few compact patches that one can point to (the paper's interpretability argument). The
problem (paper eq. 4, with the C&W loss ``f`` and the squared L2 distortion) is

    minimise_delta  c * f(x0 + delta) + ||delta||_2^2 + tau * sum_i ||delta_{G_i}||_2
    subject to      x0 + delta in [0, 1]^d,  ||delta||_inf <= eps.

ADMM splits it over four copies of the perturbation: ``z`` (the loss), ``delta`` (the distortion),
``y`` (the groups) and ``w`` (the box), with ``z = delta = y = w`` enforced by scaled duals
``u, s, v`` (paper eq. 5-10). Every step is closed form: a scaling for ``delta``, a block soft-
threshold for ``y``, a clip for ``w``, and for ``z`` one linearised gradient step on ``f`` (the
paper's "linearised ADMM", eq. 10) — one forward and backward pass of the model per step.

Not implemented here: the paper's overlapping groups (one copy of ``y`` per overlap) and its
optional refinement (a C&W attack masked to the groups found, which lowers the L2 distortion of the
result after the fact without touching more groups).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..threat import check_budget, check_count, check_inputs, margin
from .cw import BinarySearch, check_search

__all__ = ["strattack", "group_ids", "group_norms", "group_shrink", "group_sparsity"]


def group_ids(shape, size: int) -> torch.Tensor:
    """The group of every feature of an input of ``shape`` (``C x H x W``): non-overlapping ``size x size``
    tiles of the image, numbered row by row, all channels of a tile in one group (tiles at the right and
    bottom edges are cut short when ``size`` does not divide ``H`` or ``W``). Returns a LongTensor of ``shape``."""
    size = check_count(size, "group_ids", "size", 1)
    if len(shape) != 3:
        raise ValueError(f"group_ids: shape must be C x H x W, got {tuple(shape)}")
    c, h, w = shape
    rows, cols = torch.arange(h) // size, torch.arange(w) // size
    ids = rows[:, None] * math.ceil(w / size) + cols[None, :]
    return ids.expand(c, h, w).clone()


def group_norms(delta: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``||delta_{G_i}||_2`` for every example and group: ``N x P``, one column per distinct id of ``ids``
    in increasing order (``ids`` from :func:`group_ids`, or any labelling of the features)."""
    _, idx = torch.unique(ids.flatten().to(delta.device), return_inverse=True)
    sq = torch.zeros(len(delta), int(idx.max()) + 1, device=delta.device, dtype=delta.dtype)
    return sq.index_add_(1, idx, delta.flatten(1).pow(2)).sqrt()


def group_shrink(a: torch.Tensor, ids: torch.Tensor, t) -> torch.Tensor:
    """The proximal operator of ``t * sum_i ||.||_2`` (block soft-thresholding, paper eq. 8):
    ``a_G * max(1 - t / ||a_G||_2, 0)`` for every group; ``t`` a number or one per example."""
    _, idx = torch.unique(ids.flatten().to(a.device), return_inverse=True)
    norms = group_norms(a, ids)
    t = torch.as_tensor(t, dtype=a.dtype, device=a.device).reshape(-1, 1)
    scale = (1 - t / norms.clamp_min(1e-12)).clamp_min(0)
    return a * scale[:, idx].view_as(a)


def group_sparsity(delta: torch.Tensor, ids: torch.Tensor, tol: float = 1e-3) -> torch.Tensor:
    """Per example, the fraction of groups that the perturbation touches: ``||delta_G||_2 > tol``."""
    return (group_norms(delta, ids) > tol).float().mean(1)


def _view(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.view(-1, *[1] * (like.dim() - 1))


def strattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, groups: int | torch.Tensor = 2,
              tau: float = 0.5, c: float = 1.0, kappa: float = 0.0, eps: float = 1.0, rho: float = 1.0,
              eta: float = 10.0, steps: int = 200, search_steps: int = 6, targeted: bool = False) -> torch.Tensor:
    """StrAttack (Xu et al., ICLR 2019) by linearised ADMM, with C&W's per-example binary search on ``c``.

    ``groups``: the tile size of :func:`group_ids` or a tensor of group ids of the input's shape. Per
    step, with ``rho`` the ADMM penalty and ``eta`` the proximal weight of the linearised ``z``-step:

        delta = rho / (rho + 2) * (z + u)                          (distortion ||delta||_2^2, eq. 6)
        w     = clip(z + v, max(-x0, -eps), min(1 - x0, eps))       (box and L-inf ball, eq. 7)
        y     = group_shrink(z + s, tau / rho)                      (group lasso, eq. 8)
        z     = (eta z - grad c f(x0 + z) + rho (delta - u + w - v + y - s)) / (eta + 3 rho)      (eq. 10)
        u, v, s += z - delta, z - w, z - y                         (scaled duals)

    The candidate of a step is ``x0 + clip(y)``: group-sparse (a zero group stays zero under the
    clip) and in the box and the ball. Among the successful candidates of all rounds each example
    keeps the one of smallest ``||delta||_2^2 + tau * sum_i ||delta_G_i||_2``; one never broken is
    returned unchanged. A round restarts ADMM from zero with the example's new ``c`` (bisected after
    a success, times 10 while it has none). Work per step: one forward and backward pass for the
    gradient, one forward pass for the candidate.
    """
    check_inputs(model, x, y, who="strattack", steps=steps)
    check_search("strattack", c, search_steps, 1.0, kappa)
    check_budget(tau, "strattack", name="tau")
    check_budget(eps, "strattack", name="eps", positive=True)
    check_budget(rho, "strattack", name="rho", positive=True)
    check_budget(eta, "strattack", name="eta", positive=True)
    ids = group_ids(x.shape[1:], groups) if isinstance(groups, int) else torch.as_tensor(groups)
    if ids.shape != x.shape[1:]:
        raise ValueError(f"strattack: groups must be a tile size or a tensor of group ids of shape "
                         f"{tuple(x.shape[1:])}, got shape {tuple(ids.shape)}")
    ids = ids.to(x.device).long()
    x, y = x.detach(), y.detach()
    lo, hi = (-x).clamp(min=-eps), (1 - x).clamp(max=eps)
    search = BinarySearch(x, y, c, kappa=kappa, targeted=targeted)
    for _ in range(search_steps):
        z = torch.zeros_like(x)
        u, v, s = torch.zeros_like(x), torch.zeros_like(x), torch.zeros_like(x)
        cv = _view(search.value, x)
        for _ in range(steps):
            delta = rho / (rho + 2) * (z + u)
            w = torch.minimum(torch.maximum(z + v, lo), hi)
            yg = group_shrink(z + s, ids, tau / rho)
            z_r = z.requires_grad_(True)
            loss = margin(model(x + z_r), y, targeted, kappa)
            (grad,) = torch.autograd.grad(loss.sum(), z_r)
            with torch.no_grad():
                z = (eta * z - cv * grad + rho * (delta - u + w - v + yg - s)) / (eta + 3 * rho)
                u, v, s = u + z - delta, v + z - w, s + z - yg
                cand = torch.minimum(torch.maximum(yg, lo), hi)
                dist = cand.flatten(1).pow(2).sum(1) + tau * group_norms(cand, ids).sum(1)
                search.consider(x + cand, model(x + cand), dist)
        search.next_round()
    return search.best
