"""AutoZOOM: ZOO's objective on a small attack space, with a random-direction gradient estimate.

Tu, Ting, Chen, Liu, Zhang, Yi, Hsieh & Cheng, "AutoZOOM: Autoencoder-based Zeroth Order
Optimization Method for Attacking Black-box Neural Networks", AAAI 2019 (Algorithm 1). Two changes
to ZOO (:func:`advlib.blackbox.zoo_attack`), both about queries:

* **Dimension reduction.** The attack variable is a small ``z`` (``d'`` numbers) and the
  perturbation ``delta = D(z)``: a bilinear upsampling of a ``reduced`` image to the input size
  (AutoZOOM-BiLIN), or any ``decoder`` the caller gives (AutoZOOM-AE: the decoder of an
  auto-encoder trained on unlabelled data). The objective is ZOO's on the full-size image::

      minimise  F(z) = ||x' - x||_2^2 + c * f(x'),   x' = clip(x + D(z), 0, 1)

* **A random gradient estimate** on the attack space (the paper's averaged estimator): ``q`` directions
  ``u_j`` uniform on the unit sphere of ``R^{d'}``, smoothing ``beta = 1 / d'``, scale ``d'``,
  ``g = d' / (q beta) * sum_j (F(z + beta u_j) - F(z)) u_j`` (:func:`advlib.zo.estimate`,
  ``kind="sphere"``): ``q + 1`` queries per iteration where ZOO pays ``2 * 128 + 1``.
  Exploration then exploitation: ``q = 1`` until the example's first success, ``q = q_after``
  afterwards (a better estimate pays off once the task is to shrink the distortion).

``z`` moves by Adam (lr 1e-2). The constant ``c`` trades distortion against success as in ZOO; a
query allowance leaves no room for restarts, so it is searched online exactly as in
:func:`~advlib.blackbox.zoo_attack` — per example, every ``search_every`` iterations, by C&W's rule
(:class:`advlib.attacks.BinarySearch`: after a success in the period bisect towards the last failure,
otherwise raise it, times 10 while no success), from ``c = 1``, with Adam's state kept — so that the
two attacks differ only in the points above.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..attacks.cw import BinarySearch
from ..threat import check_budget, check_count
from ..zo import ZOAdam, estimate
from ._common import adversarial, check_attack, cw_loss, first_look, generator

__all__ = ["autozoom", "bilinear_decoder"]


def bilinear_decoder(reduced: tuple[int, int], size: tuple[int, int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``D(z)``: a batch ``N x C x h x w`` (``reduced = (h, w)``) upsampled bilinearly to ``size``
    (AutoZOOM-BiLIN's attack space)."""
    def decode(z: torch.Tensor) -> torch.Tensor:
        return F.interpolate(z, size=size, mode="bilinear", align_corners=False)
    return decode


def autozoom(blackbox, x: torch.Tensor, y: torch.Tensor, *, queries: int = 4_000, targeted: bool = False,
             reduced: tuple[int, int] = (14, 14), decoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
             latent_shape: tuple[int, ...] | None = None, c: float = 1.0, kappa: float = 0.0, lr: float = 0.01,
             q_after: int = 4, search_every: int = 100, seed: int | None = 0) -> torch.Tensor:
    """AutoZOOM (Tu et al. 2019, Algorithm 1) on the score black box ``blackbox`` (module docstring).

    ``y``: true labels (untargeted) or targets (``targeted``); ``queries``: the allowance of each
    example. The attack space: ``reduced = (h, w)`` with bilinear upsampling (AutoZOOM-BiLIN, the
    default), or a ``decoder`` mapping a batch ``N x *latent_shape`` to perturbations of the shape of
    ``x`` (AutoZOOM-AE; give ``latent_shape``). ``c``: the starting constant of the online search
    (every ``search_every`` iterations); ``kappa``: the loss's confidence; ``lr``: Adam's step;
    ``q_after``: directions per estimate after the first success (1 before). An example stops when its
    next iteration would not fit in its allowance. Returns the adversarial input of smallest L2 found
    per example (``x`` where none); the cost is in ``blackbox.log``.
    """
    log = check_attack(blackbox, x, y, "autozoom", queries=queries, scores=True, norm="l2")
    c = check_budget(c, "autozoom", name="c", positive=True)
    kappa = check_budget(kappa, "autozoom", name="kappa")
    lr = check_budget(lr, "autozoom", name="lr", positive=True)
    q_after = check_count(q_after, "autozoom", "q_after", 1)
    search_every = check_count(search_every, "autozoom", "search_every", 1)
    if x.dim() != 4 and decoder is None:
        raise ValueError(f"autozoom: bilinear reduction needs images N x C x H x W, got shape {tuple(x.shape)}; "
                         "give a decoder for other inputs")
    if decoder is None:
        if (len(reduced) != 2 or any(not isinstance(r, int) or isinstance(r, bool) or r < 1 for r in reduced)
                or reduced[0] > x.shape[2] or reduced[1] > x.shape[3]):
            raise ValueError(f"autozoom: reduced must be two positive integers (h, w) no larger than the image "
                             f"{tuple(x.shape[2:])}, got {reduced!r}")
        decoder, latent_shape = bilinear_decoder(tuple(reduced), tuple(x.shape[2:])), (x.shape[1], *reduced)
    elif latent_shape is None or not callable(decoder):
        raise ValueError("autozoom: a decoder must be a callable N x *latent_shape -> N x (shape of x); "
                         "give latent_shape too")
    x = x.detach()
    dev = log.queries.device
    y = y.to(dev)
    gen = generator(seed, x.device)
    n = len(x)

    probs, hit = first_look(blackbox, x, y, targeted, scores=True)
    best, best_l2 = x.clone(), torch.where(hit, 0.0, math.inf).to(x.dtype)
    search = BinarySearch(x, y, c, kappa=kappa, targeted=targeted)
    z = torch.zeros(n, *latent_shape, dtype=x.dtype, device=x.device)
    with torch.no_grad():
        if tuple(decoder(z[:1]).shape[1:]) != tuple(x.shape[1:]):
            raise ValueError(f"autozoom: the decoder must map {tuple(latent_shape)} to {tuple(x.shape[1:])}")
    d_attack = z[0].numel()
    beta = 1.0 / d_attack
    adam = ZOAdam(lr)
    done = hit.clone()

    def objective(zz, ids):  # F at the attack-space points zz of the examples ids (rows grouped by example)
        k = len(zz) // len(ids)
        xr, yr, cr = (v[ids].repeat_interleave(k, 0) for v in (x, y, search.value))
        with torch.no_grad():
            img = (xr + decoder(zz)).clamp(0, 1)
        p = blackbox.scores(img, ids.repeat_interleave(k))
        l2 = (img - xr).flatten(1).double().pow(2).sum(1)
        return (l2 + cr.double() * cw_loss(p, yr, targeted, kappa).double()).float(), p, img

    it = 0
    while True:
        live = (~done & (log.remaining() >= 1)).nonzero().flatten()
        if not len(live):
            break
        fx, p, img = objective(z[live], live)
        adv = adversarial(p.argmax(1), y[live], targeted)
        log.record(live, img, adv)
        l2 = (img - x[live]).flatten(1).norm(dim=1)
        better = adv & (l2 < best_l2[live])
        best[live[better]], best_l2[live[better]] = img[better], l2[better]
        search.hit[live] |= adv

        q = torch.where(log.success[live], q_after, 1)  # exploration, then exploitation
        step = log.remaining(live) >= q
        done[live[~step]] = True
        g = torch.zeros_like(z)
        for qk in sorted({1, q_after}):
            ids = live[step & (q == qk)]
            if len(ids):
                g[ids], _ = estimate(lambda zz, ids=ids: objective(zz, ids)[0], z[ids], q=qk, beta=beta,
                                     kind="sphere", fx=fx[step & (q == qk)], generator=gen)
        stepping = torch.zeros(n, dtype=torch.bool, device=x.device)
        stepping[live[step]] = True
        if not stepping.any():
            break
        z = torch.where(stepping.view(-1, *[1] * (z.dim() - 1)), adam.step(z, g), z)
        it += 1
        if it % search_every == 0:
            search.next_round()
    return best.detach()
