"""The sliced Wasserstein distance (Rabin et al. 2011; Kolouri et al. 2018) and the alignment term of
the reprogramming bound (Yang, Tsai & Chen 2021, Theorem 1)::

    E_target[loss(x_t + delta*)] <= eps_S + 2 sqrt(K) W_1(mu(z_S(x_t + delta*)), mu(z_S(x_s)))

for a ``K``-way source classifier ``f_S = softmax(z_S)``, under the paper's assumptions (its
Assumptions 1-4: among them, the target loss bounded and Lipschitz in the logits, and a shared
label mapping). ``W_1`` in ``K`` dimensions is costly; the SWD averages exact 1-D distances of random
projections and is what the paper plots (its Figure 3, Table 3).
"""
from __future__ import annotations

import torch
from torch import nn

from ..threat import check_count
from .program import Program

__all__ = ["wasserstein_1d", "sliced_wasserstein", "alignment"]


def wasserstein_1d(a: torch.Tensor, b: torch.Tensor, p: float = 1.0) -> torch.Tensor:
    """``W_p^p`` between the empirical distributions of the columns of ``a`` (``n x P``) and ``b``
    (``m x P``), exactly: the integral over ``t`` in (0, 1) of ``|F_a^-1(t) - F_b^-1(t)|^p`` with both
    quantile functions step functions (breakpoints at ``i/n`` and ``j/m``). Returns ``P`` values."""
    n, m = len(a), len(b)
    sa, sb = a.sort(0).values, b.sort(0).values
    if n == m:
        return (sa - sb).abs().pow(p).mean(0)
    t = torch.cat([torch.arange(1, n + 1, device=a.device) / n, torch.arange(1, m + 1, device=a.device) / m])
    t = t.to(a.dtype).unique()  # sorted breakpoints, the last is 1
    width = torch.diff(t, prepend=t.new_zeros(1))
    mid = t - width / 2
    ia = (mid * n).long().clamp_max(n - 1)
    ib = (mid * m).long().clamp_max(m - 1)
    return ((sa[ia] - sb[ib]).abs().pow(p) * width[:, None]).sum(0)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, *, projections: int = 256, p: float = 1.0,
                       seed: int = 0) -> torch.Tensor:
    """``SW_p(a, b) = (E_theta W_p^p(theta . a, theta . b))^(1/p)`` between point clouds ``n x D`` and
    ``m x D``, ``theta`` uniform on the unit sphere of ``R^D`` (``projections`` of them, seeded)."""
    projections = check_count(projections, "sliced_wasserstein", "projections", 1)
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1] or not len(a) or not len(b):
        raise ValueError(f"sliced_wasserstein: a and b must be non-empty point clouds n x D and m x D with the same D, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")
    g = torch.Generator(device=a.device).manual_seed(seed)
    theta = torch.randn(a.shape[1], projections, generator=g, device=a.device, dtype=a.dtype)
    theta = theta / theta.norm(dim=0, keepdim=True)
    return wasserstein_1d(a @ theta, b.to(a) @ theta, p).mean().pow(1 / p)


@torch.no_grad()
def alignment(model: nn.Module, program: Program, x_target: torch.Tensor, x_source: torch.Tensor, *,
              projections: int = 256, seed: int = 0) -> float:
    """The theorem's alignment term, by SWD: between the source model's logits ``z_S`` on the
    reprogrammed targets and on source-domain inputs."""
    return sliced_wasserstein(model(program(x_target)), model(x_source), projections=projections, seed=seed).item()
