"""Certifying a semantic perturbation: rotations, in the spirit of Semantify-NN (Mohapatra et al., 2020).

A rotation by an angle in ``[a, b]`` is not an Lp ball, but it becomes a box after an explicit input
layer: every pixel of the rotated image is a function of the angle, so over ``[a, b]`` it lies in an
interval ``[l_i, u_i]``. The network is then certified on that box with the usual bound propagation
(:func:`advlib.verify.propagate` with per-pixel ``x_min, x_max``). Two kinds of splits tighten it,
as in Semantify-NN's Table 2:

* **implicit splits**: the pixel intervals of ``[a, b]`` are the union of those of ``splits`` equal
  sub-intervals, each bounded around its middle angle (:func:`rotation_box`); one box, one
  certificate, tighter the more splits;
* **explicit splits**: ``[-A, A]`` is cut into pieces of ``piece`` degrees, each certified on its own
  box; the certified angle is where the first piece fails (:func:`certify_rotation`).

The pixel bounds are sound, not sampled: the rotated image uses bilinear interpolation with zero
fill, whose value moves at most ``sqrt(2) D`` per pixel of displacement (``D`` the largest jump
between neighbouring pixels, the zero border included: a bilinear patch has partial derivatives at
most ``D``), and the pixel at distance ``r`` from the centre moves ``r`` pixels per radian. An angle
within ``h / 2`` radians of a sub-interval's middle therefore changes each pixel by at most
``sqrt(2) D r h / 2``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..threat import check_batch, check_budget, check_count, check_labels, check_model_input, chunks
from ..train import predict
from .bounds import METHODS, _run, margin_matrix, trace

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


def _check_images(x, who: str, model: nn.Module | None = None, y=None) -> tuple[int | None, torch.Tensor | None]:
    """The core's checks of a batch of images (and of the model and labels, if given); returns the
    number of classes and the labels (``y``, else the model's predictions)."""
    check_batch(x, who)
    classes = None if model is None else check_model_input(model, x, who)
    if x.dim() != 4:
        raise ValueError(f"{who}: x must be a batch of images N x C x H x W, got shape {tuple(x.shape)}")
    if model is not None:
        y = predict(model, x).to(x.device) if y is None else y
        check_labels(y, len(x), classes, who)
    return classes, y


def rotation_box(x: torch.Tensor, lo, hi, *, splits: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Sound per-pixel bounds ``(l, u)`` of ``rotate(x, t)`` over every angle ``t`` in ``[lo, hi]``
    (degrees; numbers or one per image), from ``splits`` implicit splits: the images at the middles
    of ``splits`` equal sub-intervals, each widened by the Lipschitz slack of the module docstring."""
    _check_images(x, "rotation_box")
    lo, hi = (torch.as_tensor(v, dtype=x.dtype, device=x.device).expand(len(x)) for v in (lo, hi))
    if not (torch.isfinite(lo).all() and torch.isfinite(hi).all() and (hi >= lo).all()):
        raise ValueError(f"rotation_box needs finite lo <= hi, got [{lo.tolist()}, {hi.tolist()}]")
    splits = check_count(splits, "rotation_box", "splits", 1)
    h = (hi - lo) / splits  # degrees per implicit split, per image
    padded = F.pad(x, (1, 1, 1, 1))
    jump = torch.maximum((padded[..., 1:, :] - padded[..., :-1, :]).abs().flatten(1).amax(1),
                         (padded[..., :, 1:] - padded[..., :, :-1]).abs().flatten(1).amax(1))  # D per image
    rows, cols = x.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(rows, dtype=x.dtype) - (rows - 1) / 2,
                            torch.arange(cols, dtype=x.dtype) - (cols - 1) / 2, indexing="ij")
    radius = torch.sqrt(xx ** 2 + yy ** 2).to(x.device)  # pixels from the centre
    slack = math.sqrt(2) * (jump * h * math.pi / 180).view(-1, 1, 1, 1) * radius / 2
    low, up = torch.full_like(x, math.inf), torch.full_like(x, -math.inf)
    for part in chunks(splits, x.numel()):  # several angles per rotate call
        k = torch.arange(part.start, part.stop, dtype=x.dtype, device=x.device)
        angles = (lo[None] + (k[:, None] + 0.5) * h[None]).flatten()  # split-major, like x.repeat
        imgs = rotate(x.repeat(len(k), 1, 1, 1), angles).view(len(k), *x.shape)
        low, up = torch.minimum(low, imgs.amin(0)), torch.maximum(up, imgs.amax(0))
    return (low - slack).clamp(0, 1), (up + slack).clamp(0, 1)


def _certified_on_boxes(nodes, lo, hi, C, method) -> torch.Tensor:
    """Which boxes ``[lo, hi]`` (one per row) the method certifies for the margins ``C``."""
    radius = ((hi - lo) / 2).flatten(1).amax(1)  # the box lies in the L-inf ball about its centre
    return _run(nodes, (lo + hi) / 2, radius, "linf", method, C, None, lo, hi).certified


def certify_rotation(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *,
                     max_degrees: float = 30.0, piece: float | None = 0.5, splits: int = 8,
                     method: str = "crown", steps: int = 12) -> torch.Tensor:
    """The largest angle ``A`` (at most ``max_degrees``) such that the prediction is provably ``y``
    (``None``: the model's prediction) for every rotation of ``x`` by an angle in ``[-A, A]``
    (Semantify-NN, Mohapatra et al. 2020); 0 where even the first piece fails.

    ``splits`` is the number of implicit splits of every box (:func:`rotation_box`). With explicit
    splits (``piece`` in degrees) every piece ``[k piece, (k + 1) piece]`` of ``[-max_degrees,
    max_degrees]`` is certified on its own box, moving away from 0 on both sides until the first
    piece fails (pieces of many images share one batch), and ``A`` is a multiple of ``piece``. With
    ``piece=None`` (no explicit split) ``[-A, A]`` is one box and ``A`` is found by bisection (``steps``
    halvings of ``[0, max_degrees]``; it only moves to angles that were certified, so it is sound even
    where certification is not monotone in the angle).
    """
    classes, y = _check_images(x, "certify_rotation", model, y)
    if method not in METHODS:
        raise ValueError(f"certify_rotation: method must be one of {METHODS}, got {method!r}")
    check_budget(max_degrees, "certify_rotation", name="max_degrees", positive=True)
    nodes = trace(model, tuple(x.shape[1:]))
    if piece is None:
        steps = check_count(steps, "certify_rotation", "steps", 1)
        C = margin_matrix(y, classes)
        lo_a = torch.zeros(len(x), device=x.device, dtype=x.dtype)
        hi_a = torch.full((len(x),), float(max_degrees), device=x.device, dtype=x.dtype)
        for _ in range(steps):
            mid = (lo_a + hi_a) / 2
            ok = _certified_on_boxes(nodes, *rotation_box(x, -mid, mid, splits=splits), C, method)
            lo_a, hi_a = torch.where(ok, mid, lo_a), torch.where(ok, hi_a, mid)
        at_zero = _certified_on_boxes(nodes, x, x, C, method)
        return torch.where(at_zero, lo_a, torch.zeros_like(lo_a)).to(x.dtype)
    if not (isinstance(piece, (int, float)) and 0 < piece <= max_degrees):
        raise ValueError(f"certify_rotation needs 0 < piece <= max_degrees, got {piece}, {max_degrees}")
    return _explicit_splits(nodes, x, y, classes, int(max_degrees // piece), piece, splits, method)


#: pieces per side that certify_rotation bounds per image in one round (it stops at the first failure)
_ROUND = 8


def _explicit_splits(nodes, x, y, classes, k, piece, splits, method) -> torch.Tensor:
    """Certify the pieces ``[j piece, (j + 1) piece]`` and their mirror images, ``j < k``, moving away
    from 0 in rounds of :data:`_ROUND` pieces per side, for the sides (image, sign) still unbroken; the
    certified count of a side is the number of pieces before its first failure."""
    count = torch.zeros(2, len(x), dtype=torch.long, device=x.device)  # certified pieces: + side, - side
    alive = torch.ones(2, len(x), dtype=torch.bool, device=x.device)
    for j0 in range(0, k, _ROUND):
        rows = alive.nonzero()  # (side, image) pairs still going
        if len(rows) == 0:
            break
        js = list(range(j0, min(j0 + _ROUND, k)))
        sign = 1.0 - 2.0 * rows[:, 0].to(x.dtype)  # side 0: positive angles, side 1: negative ones
        img = rows[:, 1]
        lo, hi, labels = [], [], []
        for j in js:  # piece j of every live side: the angles between j piece and (j + 1) piece, signed
            a, b = sign * j * piece, sign * (j + 1) * piece
            box = rotation_box(x[img], torch.minimum(a, b), torch.maximum(a, b), splits=splits)
            lo.append(box[0]), hi.append(box[1]), labels.append(y[img])
        ok = _certified_on_boxes(nodes, torch.cat(lo), torch.cat(hi),
                                 margin_matrix(torch.cat(labels), classes), method).view(len(js), len(rows))
        run = torch.where(ok.all(0), len(js), (~ok).to(torch.long).argmax(0))  # certified before a failure
        count[rows[:, 0], img] += run
        alive[rows[:, 0], img] = run == len(js)
    return count.amin(0).to(x.dtype) * piece


@torch.no_grad()
def rotation_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *,
                    max_degrees: float = 60.0, step: float = 0.1) -> torch.Tensor:
    """The smallest ``|angle|`` on a grid of ``step`` degrees that changes the prediction away from
    ``y`` (``None``: the model's prediction), the grid attack of Semantify-NN's table; ``inf`` where
    no angle up to ``max_degrees`` does."""
    _, y = _check_images(x, "rotation_attack", model, y)
    if not (step > 0 and max_degrees >= step):
        raise ValueError(f"rotation_attack needs 0 < step <= max_degrees, got {step}, {max_degrees}")
    found = torch.full((len(x),), math.inf, device=x.device)
    for a in torch.arange(step, max_degrees + step / 2, step).tolist():
        for signed in (a, -a):
            wrong = (predict(model, rotate(x, signed)).to(x.device) != y) & torch.isinf(found)
            found[wrong] = a
        if torch.isfinite(found).all():
            break
    return found
