"""Losses of reprogramming on the target task's mapped probabilities ``p = h(F(X~))``.

The focal loss (Lin et al. 2017; used by BAR, Tsai et al. 2020, Sec. 3.2) ``-omega (1 - p_t)^gamma log p_t``
down-weights the examples already classified well; at ``gamma = 0`` it is the cross-entropy
``-log p_t`` (times ``omega``).
"""
from __future__ import annotations

import torch

__all__ = ["focal_loss", "target_loss", "LOSSES"]

LOSSES = ("ce", "focal")


def focal_loss(p: torch.Tensor, y: torch.Tensor, gamma: float = 2.0, omega: float = 1.0) -> torch.Tensor:
    """Per example ``-omega (1 - p_t)^gamma log p_t``, ``p_t = p[i, y_i]`` (probabilities ``... x N x K``;
    the leading axes, e.g. the patterns of a ZO estimate, stay)."""
    if gamma < 0:
        raise ValueError(f"focal_loss: gamma must be >= 0 (0 is the cross-entropy), got {gamma}")
    pt = p.gather(-1, y.expand(*p.shape[:-1]).unsqueeze(-1)).squeeze(-1).clamp_min(1e-12)
    return -omega * (1 - pt) ** gamma * pt.log()


def target_loss(p: torch.Tensor, y: torch.Tensor, loss: str = "ce", gamma: float = 2.0) -> torch.Tensor:
    """The mean over the batch (last axis before the classes) of the cross-entropy or the focal loss."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    return focal_loss(p, y, gamma if loss == "focal" else 0.0).mean(-1)
