"""Certifying a semantic perturbation: rotations, in the spirit of Semantify-NN (Mohapatra et al., 2020).

A rotation by an angle in ``[a, b]`` is not an Lp ball, but it becomes one after an explicit input
layer: every pixel of the rotated image is a function of the angle, so over ``[a, b]`` it lies in an
interval ``[l_i, u_i]``. The network is then certified on that box with the usual bound propagation
(:func:`advlib.verify.propagate` with per-pixel ``x_min, x_max``). The box of a wide angle range is
loose, so the range is split into short pieces (Semantify-NN's explicit splits) and each piece is
certified on its own; the certified angle is where the first piece fails.

The pixel bounds are sound, not sampled: the rotated image uses bilinear interpolation with zero
fill, whose value moves at most ``D * sqrt(2)`` per pixel of displacement (``D`` the largest jump
between neighbouring pixels, the zero border included), and the pixel at distance ``r`` from the
centre moves ``r`` pixels per radian. Sampling the angle every ``h`` radians and widening each
interval by ``sqrt(2) D r h / 2`` therefore covers every angle in between.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..train import predict
from .bounds import margin_matrix, propagate

__all__ = ["rotate", "rotation_box", "certify_rotation", "rotation_attack"]


def rotate(x: torch.Tensor, degrees) -> torch.Tensor:
    """Rotate each image of ``x`` (N x C x H x W) by ``degrees`` (a number or one per image) about its
    centre, bilinear interpolation, zero fill."""
    theta = torch.as_tensor(degrees, dtype=x.dtype, device=x.device).expand(len(x)) * (math.pi / 180)
    c, s = torch.cos(theta), torch.sin(theta)
    h, w = x.shape[-2:]
    # affine_grid works in [-1, 1] coordinates: rescale so that the rotation is a rotation in pixels
    mat = torch.stack([torch.stack([c, -s * h / w, torch.zeros_like(c)], 1),
                       torch.stack([s * w / h, c, torch.zeros_like(c)], 1)], 1)
    grid = F.affine_grid(mat, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rotation_box(x: torch.Tensor, lo: float, hi: float, samples: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Sound per-pixel bounds of ``rotate(x, t)`` over every angle ``t`` in ``[lo, hi]`` (degrees)."""
    if not hi >= lo:
        raise ValueError(f"rotation_box needs lo <= hi, got [{lo}, {hi}]")
    angles = torch.linspace(lo, hi, samples)
    imgs = torch.stack([rotate(x, float(a)) for a in angles])  # S x N x C x H x W
    padded = F.pad(x, (1, 1, 1, 1))
    jump = torch.maximum((padded[..., 1:, :] - padded[..., :-1, :]).abs().flatten(1).amax(1),
                         (padded[..., :, 1:] - padded[..., :, :-1]).abs().flatten(1).amax(1))  # D per image
    h, w = x.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h, dtype=x.dtype) - (h - 1) / 2,
                            torch.arange(w, dtype=x.dtype) - (w - 1) / 2, indexing="ij")
    radius = torch.sqrt(xx ** 2 + yy ** 2).to(x.device)  # pixels from the centre
    step = (hi - lo) / max(samples - 1, 1) * math.pi / 180
    slack = math.sqrt(2) * jump.view(-1, 1, 1, 1) * radius * step / 2
    return (imgs.amin(0) - slack).clamp(0, 1), (imgs.amax(0) + slack).clamp(0, 1)


def certify_rotation(model: nn.Module, x: torch.Tensor, y: torch.Tensor, max_degrees: float = 30.0,
                     piece: float = 0.5, method: str = "crown", samples: int = 8) -> torch.Tensor:
    """The largest angle ``A`` (a multiple of ``piece`` degrees, at most ``max_degrees``) such that the
    prediction is provably ``y`` for every rotation in ``[-A, A]``; 0 where even the first piece fails.

    Every piece ``[k piece, (k + 1) piece]`` of ``[-max_degrees, max_degrees]`` is bounded by
    :func:`rotation_box` and certified on that box; all pieces of all images go through one batch.
    """
    if not (piece > 0 and max_degrees >= piece):
        raise ValueError(f"certify_rotation needs 0 < piece <= max_degrees, got {piece}, {max_degrees}")
    k = int(max_degrees // piece)
    edges = [i * piece for i in range(-k, k + 1)]
    boxes = [rotation_box(x, a, b, samples) for a, b in zip(edges[:-1], edges[1:])]  # 2k pieces
    lo = torch.cat([b[0] for b in boxes])  # piece-major: (2k N) x C x H x W
    hi = torch.cat([b[1] for b in boxes])
    with torch.no_grad():
        n_classes = model(x[:1]).shape[1]
    C = margin_matrix(y.repeat(2 * k), n_classes)
    radius = ((hi - lo) / 2).flatten(1).amax(1)  # the box [lo, hi] lies in the L-inf ball about its centre
    # propagate splits the batch itself when it is large
    ok = (propagate(model, (lo + hi) / 2, radius, "linf", method, C=C, x_min=lo, x_max=hi).lower > 0).all(1)
    ok = ok.view(2 * k, len(x))
    pos, neg = ok[k:], ok[:k].flip(0)  # pieces moving away from 0 on each side
    n_pos = torch.where(pos.all(0), k, (~pos).float().argmax(0))
    n_neg = torch.where(neg.all(0), k, (~neg).float().argmax(0))
    return torch.minimum(n_pos, n_neg).to(x.dtype) * piece


@torch.no_grad()
def rotation_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, max_degrees: float = 60.0,
                    step: float = 0.1) -> torch.Tensor:
    """The smallest ``|angle|`` on a grid of ``step`` degrees that changes the prediction (the grid
    attack of the Semantify-NN table); ``inf`` where none up to ``max_degrees`` does."""
    found = torch.full((len(x),), math.inf, device=x.device)
    for a in torch.arange(step, max_degrees + step / 2, step).tolist():
        for signed in (a, -a):
            wrong = (predict(model, rotate(x, signed)) != y) & torch.isinf(found)
            found[wrong] = a
        if torch.isfinite(found).all():
            break
    return found
