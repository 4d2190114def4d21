"""Helpers of lecture 04 (poisoning and backdoors): the reference answers and the checks of its exercises.

* Exercise 1, stamping a BadNets patch (Gu et al. 2017): every image of a batch gets the ``s x s`` tile
  at rows ``row..row+s-1`` and columns ``col..col+s-1``, all channels; the other pixels are untouched.
  It is the trigger form ``x' = (1 - m) x + m p`` with a 0/1 mask ``m`` on the patch, so the check
  compares the answer with :meth:`advlib.backdoor.Trigger.apply` of
  :func:`advlib.backdoor.patch_trigger`.
* Exercise 2, the attack success rate by hand: over the inputs whose label the backdoor changes
  (those of the target label left out), the share predicted as the backdoor's label -- ``target``
  (all-to-one) or ``(y + 1) mod K`` (all-to-all).
* Exercise 3, reading a poisoning curve: the smallest poisoning rate of a grid whose attack success
  rate reaches a level, or ``None`` when none does.

Each ``reference_*`` function is written from the definition, independently of :mod:`advlib.backdoor`
(which the lecture uses), so that a check compares two implementations, not one with itself.
"""
from __future__ import annotations

import math

import torch

from .exercises import ExerciseError, attempt

__all__ = ["reference_stamp_patch", "reference_asr", "reference_smallest_rate", "check_stamp_patch",
           "check_asr", "check_smallest_rate"]


# ------------------------------------------------------------------------------------------ references
def reference_stamp_patch(x: torch.Tensor, tile: torch.Tensor, row: int, col: int) -> torch.Tensor:
    """A copy of the batch ``x`` (N x C x H x W) with the ``s x s`` ``tile`` pasted at
    ``[row:row+s, col:col+s]`` of every channel of every image (BadNets, Gu et al. 2017)."""
    s = tile.shape[-1]
    out = x.clone()
    out[:, :, row:row + s, col:col + s] = tile.to(x)
    return out


def reference_asr(pred: torch.Tensor, y: torch.Tensor, target, n_classes: int) -> float:
    """Attack success rate from the predictions ``pred`` on triggered inputs of true labels ``y``:
    the backdoor's label is ``target`` (all-to-one) or ``(y + 1) mod n_classes`` (``"all-to-all"``);
    the inputs that already have it are left out."""
    wanted = (y + 1) % n_classes if target == "all-to-all" else torch.full_like(y, int(target))
    changed = wanted != y
    return (pred[changed] == wanted[changed]).double().mean().item()


def reference_smallest_rate(rates, asr, level: float = 0.9):
    """The smallest rate of the grid ``rates`` whose ``asr`` is at least ``level``; ``None`` if none is."""
    hits = [float(r) for r, a in zip(rates, asr) if float(a) >= level]
    return min(hits) if hits else None


# ------------------------------------------------------------------------------------------ exercise 1
def check_stamp_patch(stamp_patch, *, strict: bool = False) -> None:
    """``stamp_patch(x, tile, row, col)`` must return a new batch: ``x`` with the ``s x s`` ``tile`` in
    rows ``row..row+s-1`` and columns ``col..col+s-1`` of every channel of every image, the rest
    unchanged, ``x`` itself untouched -- what :meth:`advlib.backdoor.Trigger.apply` does for
    ``patch_trigger(shape, s, position=(row, col), pattern=tile)``."""
    from ..backdoor.poison import patch_trigger

    def check():
        g = torch.Generator().manual_seed(4)
        # (shape, size, row, col): row != col everywhere, a corner, an off-corner spot, 3 channels, a 1-pixel patch
        cases = [((1, 8, 8), 2, 6, 6), ((1, 8, 8), 3, 1, 4), ((3, 10, 12), 2, 7, 2), ((1, 8, 8), 1, 0, 5),
                 ((1, 28, 28), 4, 20, 3)]
        for shape, s, row, col in cases:
            x = torch.rand(5, *shape, generator=g)
            tile = torch.rand(s, s, generator=g) * 0.5 + 0.5 * ((torch.arange(s)[:, None] + torch.arange(s)) % 2)
            x0, tile0 = x.clone(), tile.clone()
            want = patch_trigger(shape, s, position=(row, col), pattern=tile0).apply(x0)
            got = stamp_patch(x, tile, row, col)
            where = f"a {s}x{s} tile at (row, col) = ({row}, {col}) on {len(x)} images of shape {shape}"
            if not torch.equal(tile, tile0):
                raise ExerciseError(f"{where}: the tile was modified in place: leave it as it is.")
            if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(want.shape):
                raise ExerciseError(f"{where}: expected a batch of shape {tuple(want.shape)}, got "
                                    f"{getattr(got, 'shape', type(got).__name__)}. Hint: return the stamped batch.")
            if not torch.equal(x, x0):
                raise ExerciseError(f"{where}: x was modified in place: the clean images are still needed (the "
                                    "training set keeps them). Hint: x.clone() first.")
            got = got.detach().float()
            if torch.allclose(got, want, atol=1e-6):
                continue
            region = torch.zeros(shape, dtype=torch.bool)
            region[:, row:row + s, col:col + s] = True
            outside = ~region.expand_as(got)
            if not torch.allclose(got[outside], x0[outside], atol=1e-6):
                _, h, w = shape
                if row != col and col + s <= h and row + s <= w:  # the swapped position fits too
                    swapped = patch_trigger(shape, s, position=(col, row), pattern=tile0.T).apply(x0)
                    if torch.allclose(got, swapped, atol=1e-6) or torch.allclose(
                            got, patch_trigger(shape, s, position=(col, row), pattern=tile0).apply(x0), atol=1e-6):
                        raise ExerciseError(f"{where}: the tile landed at (row, col) = ({col}, {row}): rows and "
                                            "columns are swapped. x is N x C x H x W: the row indexes H (dim 2), "
                                            "the column W (dim 3).")
                changed = (got - x0).abs().flatten(1).amax(0).reshape(shape).amax(0).nonzero()
                raise ExerciseError(f"{where}: pixels outside the patch changed (e.g. at (row, col) = "
                                    f"{tuple(changed[0].tolist())} of an image). Hint: rows row..row+s-1 "
                                    "and columns col..col+s-1, i.e. the slices row:row+s and col:col+s.")
            added = x0.clone()
            added[:, :, row:row + s, col:col + s] = (added[:, :, row:row + s, col:col + s] + tile0).clamp(0, 1)
            if torch.allclose(got, added, atol=1e-6):
                raise ExerciseError(f"{where}: the tile was added to the image: a patch replaces the pixels it "
                                    "covers, x' = (1 - m) x + m p with m = 1 on the patch.")
            raise ExerciseError(f"{where}: the pixels of the patch are not the tile's. Hint: every image and "
                                "every channel gets the same tile (broadcasting over N and C).")

    attempt(check, title="stamping a patch", strict=strict)


# ------------------------------------------------------------------------------------------ exercise 2
def check_asr(asr, *, strict: bool = False) -> None:
    """``asr(pred, y, target, n_classes)`` must return the attack success rate as a number in [0, 1]:
    among the inputs whose label the backdoor changes -- all of them but those of label ``target``
    (all-to-one), or every input for ``target="all-to-all"``, whose backdoor label is
    ``(y + 1) mod n_classes`` -- the share whose prediction ``pred`` (on the triggered input) is that
    label."""

    def check():
        g = torch.Generator().manual_seed(40)
        # a hand-made case: 10 inputs, 3 of them of the target label 2 (all predicted 2 already)
        y = torch.tensor([2, 2, 2, 0, 1, 3, 4, 5, 6, 7])
        pred = torch.tensor([2, 2, 2, 2, 2, 2, 2, 0, 1, 3])
        cases = [(pred, y, 2, 10, "hand-made: 7 inputs not of the target label 2, 4 of them sent to 2")]
        for k, target in ((10, 0), (10, 7), (3, 1), (10, "all-to-all"), (4, "all-to-all")):
            yy = torch.randint(0, k, (200,), generator=g)
            wanted = (yy + 1) % k if target == "all-to-all" else torch.full_like(yy, target)
            hit = torch.rand(200, generator=g) < 0.6
            pp = torch.where(hit, wanted, torch.randint(0, k, (200,), generator=g))
            cases.append((pp, yy, target, k, f"200 random inputs, {k} classes, target {target!r}"))
        for pp, yy, target, k, what in cases:
            p0, y0 = pp.clone(), yy.clone()
            got = asr(pp, yy, target, k)
            if not (torch.equal(pp, p0) and torch.equal(yy, y0)):
                raise ExerciseError(f"{what}: pred or y was modified in place: leave them as they are.")
            if isinstance(got, torch.Tensor):
                if got.numel() != 1:
                    raise ExerciseError(f"{what}: return one number, got a tensor of shape {tuple(got.shape)}.")
                got = got.item()
            if not isinstance(got, (int, float)) or not math.isfinite(got):
                raise ExerciseError(f"{what}: return a finite number (a float in [0, 1]), got {got!r}.")
            want = reference_asr(p0, y0, target, k)
            if abs(got - want) <= 1e-6:
                continue
            wanted = (y0 + 1) % k if target == "all-to-all" else torch.full_like(y0, int(target))
            success = p0 == wanted
            changed = wanted != y0
            if abs(got - success.double().mean().item()) <= 1e-6:
                raise ExerciseError(f"{what}: you counted every input, {want:.4f} expected. An input that already "
                                    "has the target label is not a success of the backdoor (a clean model gets "
                                    "it right too): leave out the inputs with y == target.")
            if abs(got - (success & changed).double().sum().item() / len(y0)) <= 1e-6:
                raise ExerciseError(f"{what}: you divided by all {len(y0)} inputs; divide by the number of "
                                    f"inputs whose label the backdoor changes ({int(changed.sum())}).")
            if target == "all-to-all" and abs(got - reference_asr(p0, y0, 0, k)) <= 1e-6:
                raise ExerciseError(f"{what}: with target='all-to-all' the backdoor's label depends on the input: "
                                    "(y + 1) mod n_classes.")
            if abs(got - (1 - want)) <= 1e-6:
                raise ExerciseError(f"{what}: that is 1 - ASR: the share of triggered inputs *sent to* the "
                                    "backdoor's label is the success rate.")
            raise ExerciseError(f"{what}: expected {want:.4f}, got {got:.4f}. Hint: the backdoor's label for "
                                "each input, then the mean of (pred == it) over the inputs where it is not y.")

    attempt(check, title="attack success rate by hand", strict=strict)


# ------------------------------------------------------------------------------------------ exercise 3
def check_smallest_rate(smallest_rate, *, curve=None, strict: bool = False) -> None:
    """``smallest_rate(rates, asr, level)`` must return the smallest rate of the grid ``rates`` (a
    sequence, not necessarily sorted) whose attack success rate ``asr`` (same length) is at least
    ``level``, as a float, or ``None`` if no rate of the grid reaches it. ``curve=(rates, asr)`` adds
    a measured curve (the lecture's) to the cases."""

    def check():
        cases = [
            ((0.0, 0.01, 0.02, 0.05, 0.1), (0.0, 0.3, 0.8, 0.93, 0.99), 0.9),
            ((0.1, 0.0, 0.05, 0.02, 0.01), (0.99, 0.0, 0.93, 0.8, 0.3), 0.9),  # the same curve, unsorted
            ((0.0, 0.01, 0.02, 0.05, 0.1), (0.0, 0.3, 0.8, 0.93, 0.99), 0.5),
            ((0.0, 0.005, 0.01, 0.02), (0.0, 0.2, 0.9, 0.97), 0.9),  # exactly at the level counts
            ((0.0, 0.01, 0.02, 0.05), (0.01, 0.95, 0.6, 0.99), 0.9),  # not monotone: the smallest that reaches it
            ((0.0, 0.01, 0.02), (0.0, 0.4, 0.85), 0.9),  # none reaches it
        ]
        if curve is not None:
            rates, values = curve
            cases.append((tuple(float(r) for r in rates), tuple(float(a) for a in values), 0.9))
        for rates, values, level in cases:
            what = f"rates {list(rates)}, ASR {list(values)}, level {level}"
            got = smallest_rate(list(rates), list(values), level)
            want = reference_smallest_rate(rates, values, level)
            if want is None:
                if got is not None:
                    raise ExerciseError(f"{what}: no rate of the grid reaches the level, so return None (got "
                                        f"{got!r}): the grid is too coarse or too short to say.")
                continue
            if got is None:
                raise ExerciseError(f"{what}: expected {want}, got None.")
            if isinstance(got, torch.Tensor) and got.numel() == 1:
                got = got.item()
            if not isinstance(got, (int, float)):
                raise ExerciseError(f"{what}: return a rate (a float) or None, got {type(got).__name__}.")
            if abs(got - want) <= 1e-12:
                continue
            if any(abs(got - float(a)) <= 1e-12 for a in values) and not any(abs(got - r) <= 1e-12 for r in rates):
                raise ExerciseError(f"{what}: you returned an ASR ({got}); return the poisoning *rate* at which it "
                                    "is reached.")
            above = [r for r, a in zip(rates, values) if a > level]
            if above and abs(got - min(above)) <= 1e-12:
                raise ExerciseError(f"{what}: an ASR exactly equal to the level reaches it: use >=, not >.")
            first = next((r for r, a in zip(rates, values) if a >= level), None)
            if first is not None and abs(got - first) <= 1e-12:
                raise ExerciseError(f"{what}: {got} is the first rate *in the order given* that reaches the level; "
                                    "the grid need not be sorted: take the smallest rate that reaches it.")
            raise ExerciseError(f"{what}: expected {want}, got {got}. Hint: among the rates whose ASR is >= level, "
                                "the smallest.")

    attempt(check, title="smallest poisoning rate", strict=strict)
