"""Helpers of lecture 50 (attacks as explanations): the reference answers and the checks of its exercises.

* Exercise 1, the projected shrinkage step of a pertinent negative (Dhurandhar et al. 2018, eq. 1,
  solved as in EAD): ``Pi_[x0, hi](S_beta(z))`` around ``x0`` with the box ``[x0, hi]``, ``hi = 1`` on
  the allowed features and ``hi = x0`` elsewhere: a coordinate of an allowed feature that moved up
  from ``x0`` by more than ``beta`` keeps ``min(z - beta, 1)``, every other coordinate returns to ``x0``.
* Exercise 2, block soft-thresholding, the proximal operator of ``t * sum_G ||.||_2`` (StrAttack's
  group-lasso step, Xu et al. 2019, eq. 8): ``a_G * max(1 - t / ||a_G||_2, 0)`` per example and group,
  a group that is all zero staying zero.
* Exercise 3, the group sparsity of a perturbation: per example, the fraction of the groups whose
  ``||delta_G||_2`` exceeds a tolerance.

Each ``reference_*`` function is written from the formula, independently of :mod:`advlib.attacks`
and :mod:`advlib.applications` (which the lecture uses), so that a check compares two
implementations, not one with itself. Groups are given, as in :func:`advlib.attacks.group_ids`, by a
LongTensor ``ids`` of one input's shape ``C x H x W`` whose entries number the groups ``0 .. P-1``.
"""
from __future__ import annotations

import math

import torch

from .exercises import ExerciseError, attempt

__all__ = ["reference_pn_step", "reference_group_shrink", "reference_group_sparsity", "tile_ids",
           "check_pn_step", "check_group_shrink", "check_group_sparsity"]


# ------------------------------------------------------------------------------------------ references
def reference_pn_step(z: torch.Tensor, x0: torch.Tensor, beta: float, allowed: torch.Tensor) -> torch.Tensor:
    """``Pi_[x0, hi](S_beta(z))``: per coordinate, ``min(z - beta, 1)`` where the feature is allowed and
    ``z - x0 > beta``, else ``x0`` (``hi = 1`` on the allowed features, ``x0`` on the others)."""
    out = x0.detach().clone().double()
    zd, xd = z.detach().double(), x0.detach().double()
    grow = allowed.to(torch.bool) & (zd - xd > beta)
    out[grow] = torch.clamp(zd[grow] - beta, max=1.0)
    return out.to(x0.dtype)


def _groups(ids: torch.Tensor) -> list[torch.Tensor]:
    flat = ids.flatten()
    return [(flat == g).nonzero().flatten() for g in range(int(flat.max()) + 1)]


def reference_group_shrink(a: torch.Tensor, ids: torch.Tensor, t: float) -> torch.Tensor:
    """Per example and group ``G``: ``a_G * max(1 - t / ||a_G||_2, 0)`` (0 for a group that is all zero)."""
    flat = a.detach().double().flatten(1)
    out = torch.zeros_like(flat)
    for n in range(len(flat)):
        for members in _groups(ids):
            norm = math.sqrt(sum(float(v) ** 2 for v in flat[n, members]))
            if norm > 0:
                out[n, members] = flat[n, members] * max(1.0 - t / norm, 0.0)
    return out.view_as(a).to(a.dtype)


def reference_group_sparsity(delta: torch.Tensor, ids: torch.Tensor, tol: float = 1e-3) -> torch.Tensor:
    """Per example, the fraction of the ``P`` groups with ``||delta_G||_2 > tol``."""
    flat = delta.detach().double().flatten(1)
    groups = _groups(ids)
    touched = [[math.sqrt(sum(float(v) ** 2 for v in flat[n, g])) > tol for g in groups] for n in range(len(flat))]
    return torch.tensor([sum(row) / len(groups) for row in touched], dtype=torch.float64)


def tile_ids(shape, size: int) -> torch.Tensor:
    """Non-overlapping ``size x size`` tiles of a ``C x H x W`` input numbered row by row, all channels of a
    tile in one group, tiles cut short at the right and bottom edges (the checks' own groups; the same
    partition as :func:`advlib.attacks.group_ids`)."""
    c, h, w = shape
    per_row = -(-w // size)
    ids = torch.empty(c, h, w, dtype=torch.long)
    for i in range(h):
        for j in range(w):
            ids[:, i, j] = (i // size) * per_row + j // size
    return ids


def _close(got: torch.Tensor, want: torch.Tensor, tol: float = 1e-5) -> bool:
    return got.shape == want.shape and bool(torch.allclose(got.double(), want.double(), atol=tol, rtol=tol))


def _as_tensor(got, shape, what: str) -> torch.Tensor:
    if not isinstance(got, torch.Tensor):
        raise ExerciseError(f"{what}: return a tensor of shape {tuple(shape)}, got {type(got).__name__}")
    if tuple(got.shape) != tuple(shape):
        raise ExerciseError(f"{what}: expected a tensor of shape {tuple(shape)}, got shape {tuple(got.shape)}")
    return got.detach()


def _unchanged(saved, now, what: str, names: str) -> None:
    if not all(torch.equal(a, b) for a, b in zip(saved, now)):
        raise ExerciseError(f"{what}: {names} was modified in place: leave the inputs as they are (work on a copy).")


# ------------------------------------------------------------------------------------------ exercise 1
def _digit_like(g: torch.Generator, n: int, shape) -> torch.Tensor:
    """Inputs in [0, 1] with about half of the features exactly 0 (the absent ones) and some exactly 1."""
    x = torch.rand(n, *shape, generator=g)
    x[torch.rand(n, *shape, generator=g) < 0.5] = 0.0
    x[torch.rand(n, *shape, generator=g) < 0.1] = 1.0
    return x


def check_pn_step(pn_step, *, strict: bool = False) -> None:
    """``pn_step(z, x0, beta, allowed)`` must return the projected shrinkage step of a pertinent negative,
    ``Pi_[x0, hi](S_beta(z))`` around ``x0``: the perturbation only adds (``delta = v - x0 >= 0``), only on
    the features where the boolean ``allowed`` (of ``x0``'s shape) is true, and the result stays at most 1.
    Per coordinate: ``min(z - beta, 1)`` where ``allowed`` and ``z - x0 > beta``; ``x0`` everywhere else.
    Checked against :func:`advlib.attacks.shrink` with the box ``[x0, hi]`` and against the reference."""
    from ..attacks import shrink

    def check():
        g = torch.Generator().manual_seed(50)
        cases = []
        for n, shape, beta, rule, what in ((6, (1, 8, 8), 0.1, "absent", "digit-like inputs, allowed = (x0 == 0), "
                                            "beta 0.1"),
                                           (6, (1, 8, 8), 0.3, "random", "allowed a random mask that also covers "
                                            "pixels with ink (x0 > 0), beta 0.3"),
                                           (4, (3, 5, 7), 0.05, "random", "3 channels, 5x7, a random mask, beta "
                                            "0.05"),
                                           (5, (1, 6, 6), 0.0, "absent", "beta 0 (a projection only), allowed = "
                                            "(x0 == 0)")):
            x0 = _digit_like(g, n, shape)
            allowed = (x0 == 0) if rule == "absent" else torch.rand(n, *shape, generator=g) < 0.6
            z = x0 + 0.6 * torch.randn(n, *shape, generator=g)
            z.view(-1)[:: 7] += 1.5  # some steps far past the box's upper end 1
            cases.append((z, x0, beta, allowed, what))
        for z, x0, beta, allowed, what in cases:
            saved = (z.clone(), x0.clone(), allowed.clone())
            got = pn_step(z, x0, beta, allowed)
            _unchanged(saved, (z, x0, allowed), what, "z, x0 or allowed")
            z0, x00, al = saved
            want = reference_pn_step(z0, x00, beta, al)
            library = shrink(z0, x00, beta, lo=x00, hi=torch.where(al, torch.ones_like(x00), x00))
            assert torch.allclose(want, library, atol=1e-6), "the reference disagrees with advlib.attacks.shrink"
            got = _as_tensor(got, z0.shape, what).to(want)
            if _close(got, want, 1e-6):
                continue
            d = z0 - x00
            ead = torch.where(d > beta, (z0 - beta).clamp(max=1), torch.where(d < -beta, (z0 + beta).clamp(min=0), x00))
            up = torch.where(d > beta, (z0 - beta).clamp(max=1), x00)
            tries = [(ead, "that is EAD's operator on [0, 1]: it also lowers features (z - x0 < -beta). A PN only "
                           "adds, delta >= 0, and only where allowed: the box is [x0, hi] with hi = 1 on the allowed "
                           "features and hi = x0 elsewhere"),
                     (torch.where(al, ead, x00), "features of an allowed pixel must not go below x0: a PN only adds "
                                                 "(delta >= 0), so the box's lower end is x0, not 0"),
                     (up, "the mask is ignored: features where allowed is false must stay at x0 (a PN changes only "
                          "what is absent)"),
                     (torch.where(al & (d > beta), z0.clamp(max=1), x00), "the coordinates that survive must also "
                      "move beta back towards x0 (z - beta): that is the shrinkage of the L1 term, not a hard "
                      "threshold"),
                     (torch.where(al & (d > beta), z0 - beta, x00), "the result must stay in the box: clip the "
                      "survivors at 1 (min(z - beta, 1))"),
                     (torch.where(al, torch.minimum(torch.maximum(z0, x00), torch.ones_like(z0)), x00),
                      "that is the projection onto the box alone; the step first shrinks z - x0 by beta "
                      "(coordinates within beta of x0 return to x0, the others move beta towards it)")]
            for value, hint in tries:
                if _close(got, value, 1e-6):
                    raise ExerciseError(f"{what}: {hint}.")
            if (got < x00 - 1e-6).any():
                raise ExerciseError(f"{what}: some features fell below x0: a PN only adds (delta >= 0).")
            if not torch.allclose(got[~al], x00[~al], atol=1e-6):
                raise ExerciseError(f"{what}: features where allowed is false changed; they must stay at x0.")
            if (got > 1 + 1e-6).any():
                raise ExerciseError(f"{what}: values above 1: clip the result to the box's upper end 1.")
            raise ExerciseError(f"{what}: not the PN step (max difference {(got - want).abs().max():.3g}). Hint: "
                                "where allowed and z - x0 > beta, min(z - beta, 1); everywhere else x0.")

    attempt(check, title="the pertinent negative's shrinkage step", strict=strict)


# ------------------------------------------------------------------------------------------ exercise 2
def _group_cases(g: torch.Generator):
    hand_ids = torch.tensor([[[0, 0], [1, 1]]])
    hand = torch.tensor([[[[3.0, 4.0], [0.3, 0.4]]], [[[0.0, 0.0], [-6.0, 8.0]]]])  # norms 5, 0.5 / 0, 10
    cases = [(hand, hand_ids, 1.0, "hand-made: two examples, two groups of 2 pixels with norms 5 and 0.5 "
                                   "(then 0 and 10), t = 1")]
    a = 0.3 * torch.randn(5, 1, 8, 8, generator=g)
    a[:, :, :2, :2] = 0  # a group that is all zero
    cases.append((a, tile_ids((1, 8, 8), 2), 0.3, "2x2 tiles of 8x8 inputs (16 groups, one all zero), t = 0.3"))
    cases.append((0.3 * torch.randn(4, 1, 8, 8, generator=g), tile_ids((1, 8, 8), 3), 0.5,
                  "3x3 tiles of 8x8 (cut short at the edges), t = 0.5"))
    cases.append((0.2 * torch.randn(3, 3, 6, 6, generator=g), tile_ids((3, 6, 6), 2), 0.4,
                  "3 channels, 2x2 tiles (12 features per group), t = 0.4"))
    rand_ids = (torch.randperm(50, generator=g) % 7).view(2, 5, 5)
    cases.append((torch.randn(4, 2, 5, 5, generator=g), rand_ids, 1.0, "7 scattered groups (not tiles) of a "
                                                                       "2x5x5 input, t = 1"))
    cases.append((torch.randn(2, 1, 4, 4, generator=g), tile_ids((1, 4, 4), 2), 0.0, "t = 0 (nothing shrinks)"))
    return cases


def check_group_shrink(group_shrink, *, strict: bool = False) -> None:
    """``group_shrink(a, ids, t)`` must return the block soft-thresholding of ``a`` (``N x C x H x W``) by
    the groups of ``ids`` (a LongTensor ``C x H x W`` numbering the groups ``0 .. P-1``) at ``t >= 0``: for
    every example and group ``G``, ``a_G * max(1 - t / ||a_G||_2, 0)`` — a group whose norm is at most
    ``t`` becomes zero, the others shrink by ``t`` along their own direction, and a group that is all zero
    stays zero. Checked against :func:`advlib.attacks.group_shrink` and the reference."""
    from ..attacks import group_shrink as library

    def check():
        for a, ids, t, what in _group_cases(torch.Generator().manual_seed(2019)):
            saved = (a.clone(), ids.clone())
            got = group_shrink(a, ids, t)
            _unchanged(saved, (a, ids), what, "a or ids")
            a0, ids0 = saved
            want = reference_group_shrink(a0, ids0, t)
            assert torch.allclose(want, library(a0, ids0, t), atol=1e-5), "the reference disagrees with the library"
            got = _as_tensor(got, a0.shape, what).to(want)
            if torch.isnan(got).any():
                raise ExerciseError(f"{what}: NaN in the result: a group that is all zero has norm 0, and t / 0 "
                                    "must not reach the output. Keep such a group at zero (e.g. divide by "
                                    "norm.clamp_min(1e-12)).")
            if _close(got, want):
                continue
            flat, gid = a0.flatten(1), ids0.flatten()
            n_groups = int(gid.max()) + 1
            sq = torch.zeros(len(flat), n_groups, dtype=flat.dtype).index_add_(1, gid, flat.pow(2))
            norm = sq.sqrt().clamp_min(1e-12)[:, gid].view_as(a0)
            pooled = sq.sum(0, keepdim=True).sqrt().clamp_min(1e-12)[:, gid].view(1, *a0.shape[1:])
            whole = flat.norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (a0.dim() - 1))
            tries = [(a0.sign() * (a0.abs() - t).clamp(min=0), "that shrinks every feature on its own (the L1 "
                      "proximal operator, EAD's step); the group lasso shrinks each group's vector as a whole: "
                      "a_G * max(1 - t / ||a_G||_2, 0)"),
                     (a0 * (1 - t / norm), "the factor must be clamped at 0: a group whose norm is below t "
                                           "becomes zero instead of flipping its sign"),
                     (a0 * (1 - t / norm.pow(2)).clamp(min=0), "divide t by the group's norm ||a_G||_2, not by its "
                                                                "square"),
                     (a0 * (1 - t / whole).clamp(min=0), "that is one norm for the whole input; take the norm of "
                                                         "each group G separately"),
                     (a0 * (1 - t / pooled).clamp(min=0), "the group norms pool all examples of the batch; take "
                                                          "them per example (norm over the group's features only)"),
                     (torch.where(norm > t, a0, torch.zeros_like(a0)), "the groups above the threshold must also "
                      "shrink, by t along their direction (a soft, not a hard, threshold)"),
                     (a0 * (1 - norm / t).clamp(min=0) if t > 0 else a0, "the factor is 1 - t / ||a_G||_2 (the "
                      "threshold over the norm), not 1 - ||a_G||_2 / t")]
            for value, hint in tries:
                if _close(got, value):
                    raise ExerciseError(f"{what}: {hint}.")
            raise ExerciseError(f"{what}: not the block soft-threshold (max difference "
                                f"{(got - want).abs().max():.3g}). Hint: per example and group, the norm "
                                "||a_G||_2 = sqrt(sum of squares over the group's features), then "
                                "a_G * max(1 - t / ||a_G||_2, 0).")

    attempt(check, title="block soft-thresholding (group_shrink)", strict=strict)


# ------------------------------------------------------------------------------------------ exercise 3
def check_group_sparsity(group_sparsity, *, strict: bool = False) -> None:
    """``group_sparsity(delta, ids, tol)`` must return, for perturbations ``delta`` (``N x C x H x W``) and
    the groups of ``ids`` (``C x H x W``, numbered ``0 .. P-1``, every number used), a tensor of ``N``
    values: per example, the fraction of the ``P`` groups whose L2 norm ``||delta_G||_2`` is larger than
    ``tol`` (strictly). Checked against :func:`advlib.attacks.group_sparsity` and the reference."""
    from ..attacks import group_sparsity as library

    def check():
        g = torch.Generator().manual_seed(2019)
        tol = 1e-3
        hand_ids = tile_ids((1, 4, 4), 2)  # 4 groups of 4 pixels
        hand = torch.zeros(3, 1, 4, 4)
        hand[0, 0, 0, 0] = 0.5  # group 0 touched by one pixel
        hand[0, 0, 2:, 2:] = 0.15  # group 3: no pixel above 0.25, but the norm is 0.3
        hand[1, 0, 0, 2] = 0.25  # group 1: norm exactly 0.25 (not touched)
        hand[1, 0, 2, 0] = -0.4  # group 2: a negative change
        cases = [(hand, hand_ids, 0.25, "hand-made: 4 groups of 2x2, tol 0.25; touched 2 of 4, then 1 of 4, then "
                                        "none")]
        d = torch.randn(6, 1, 8, 8, generator=g) * (torch.rand(6, 1, 8, 8, generator=g) < 0.15)
        cases.append((d, tile_ids((1, 8, 8), 2), tol, "sparse random perturbations, 2x2 tiles of 8x8"))
        d = 1e-3 * torch.randn(5, 3, 6, 6, generator=g)
        cases.append((d, tile_ids((3, 6, 6), 3), tol, "small dense perturbations near the tolerance, 3 channels, "
                                                      "3x3 tiles"))
        d = torch.randn(4, 1, 8, 8, generator=g) * (torch.rand(4, 1, 1, 1, generator=g) < 0.5)
        cases.append((d, tile_ids((1, 8, 8), 3), 0.5, "some perturbations all zero, 3x3 tiles cut at the edges, "
                                                      "tol 0.5"))
        for delta, ids, t, what in cases:
            saved = (delta.clone(), ids.clone())
            got = group_sparsity(delta, ids, t)
            _unchanged(saved, (delta, ids), what, "delta or ids")
            d0, ids0 = saved
            want = reference_group_sparsity(d0, ids0, t)
            assert torch.allclose(want, library(d0, ids0, t).double(), atol=1e-6), "the reference disagrees"
            if not isinstance(got, torch.Tensor):
                raise ExerciseError(f"{what}: return a tensor of {len(d0)} fractions, got {type(got).__name__}")
            if got.numel() == 1 and len(d0) > 1:
                raise ExerciseError(f"{what}: one value for the whole batch; return the fraction of every "
                                    f"example, a tensor of {len(d0)} values.")
            got = _as_tensor(got, (len(d0),), what).double()
            if _close(got, want, 1e-6):
                continue
            flat, gid = d0.double().flatten(1), ids0.flatten()
            n_groups = int(gid.max()) + 1
            norms = torch.zeros(len(flat), n_groups, dtype=flat.dtype).index_add_(1, gid, flat.pow(2)).sqrt()
            peak = torch.zeros(len(flat), n_groups, dtype=flat.dtype).scatter_reduce_(
                1, gid.expand(len(flat), -1), flat.abs(), "amax")
            touched = (norms > t).double()
            tries = [((flat.abs() > t).double().mean(1), "that is the fraction of *features* that changed; count "
                      "groups: a group is touched when ||delta_G||_2 > tol"),
                     (touched.sum(1), f"that is the number of groups touched; divide by the number of groups "
                                      f"P = {n_groups}"),
                     (touched.sum(1) / flat.shape[1], "divide the number of groups touched by the number of groups "
                                                      "P, not of features"),
                     ((peak > t).double().mean(1), "a group counts as touched when its L2 norm exceeds tol, not "
                                                   "when one of its features does (the group lasso measures "
                                                   "groups by their L2 norm)"),
                     ((norms >= t).double().mean(1), "a group whose norm equals tol exactly is not touched: "
                                                     "strictly greater"),
                     (1 - touched.mean(1), "that is the fraction of groups left untouched; return the fraction "
                                           "touched")]
            for value, hint in tries:
                if _close(got, value, 1e-6):
                    raise ExerciseError(f"{what}: {hint} (expected {[round(v, 4) for v in want.tolist()]}).")
            raise ExerciseError(f"{what}: expected {[round(v, 4) for v in want.tolist()]}, got "
                                f"{[round(v, 4) for v in got.tolist()]}. Hint: the L2 norm of every group per "
                                "example, then the mean of (norm > tol) over the groups.")

    attempt(check, title="group sparsity", strict=strict)
