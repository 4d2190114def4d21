"""ZOO: the C&W-L2 attack with coordinate-wise finite differences in place of the gradient.

Chen, Zhang, Sharma, Yi & Hsieh, "ZOO: Zeroth Order Optimization based Black-box Attacks to Deep
Neural Networks without Training Substitute Models", AISec 2017 — ZOO-ADAM, Algorithm 2. Per
example, in pixel space (no tanh: the paper's MNIST setting, where tanh's flat ends stall the
pixels at 0 and 1)::

    minimise  F(delta) = ||x' - x||_2^2 + c * f(x'),   x' = clip(x + delta, 0, 1)

with ``f`` the loss of eq. 4 / 5 on log-probabilities (:func:`advlib.blackbox.cw_loss`). Each
iteration draws ``coords`` coordinates ``i`` at random, estimates ``dF/d delta_i`` by the symmetric
difference of eq. 6 (``h = 1e-4``; ``2 * coords`` queries, plus one for ``F(delta)`` itself, which
also says whether the current iterate is adversarial) and moves those coordinates by
coordinate-wise Adam (:class:`advlib.zo.ZOAdam` with ``index``). The box is kept on the image: after
each step ``delta`` is projected so that ``x + delta`` lies in [0, 1], and the probes ``x' +- h e_i``
are clipped to it.

The constant ``c``. The paper runs 9 rounds of C&W's binary search on ``c`` from 0.01, each a full
optimisation; here the *query allowance* is the budget, and 9 restarts would spend it nine times
over. So the search runs online: every ``search_every`` iterations each example's ``c`` moves by
C&W's rule (:class:`advlib.attacks.BinarySearch`: a success in the last period lowers the upper
bound and bisects, a failure raises the lower bound, times 10 while no success) and the
optimisation goes on from the current ``delta`` instead of restarting (Adam's state too). It starts
at ``c = 1`` rather than the paper's 0.01: on the 28x28 digits the loss of a correctly classified
input is a gap of about 5 to 30 nats of log-probability (median about 17 for a random target, 10
untargeted, on digits28-cnn), the same order as the squared L2 a successful perturbation needs
(about 1 to 10), so the search starts near the right scale instead of spending its first periods
raising ``c`` a hundredfold.
"""
from __future__ import annotations

import math

import torch

from ..attacks.cw import BinarySearch
from ..threat import check_budget, check_count
from ..zo import ZOAdam, coordinate_estimate
from ._common import adversarial, check_attack, cw_loss, first_look, generator

__all__ = ["zoo_attack"]


def zoo_attack(blackbox, x: torch.Tensor, y: torch.Tensor, *, queries: int = 40_000, targeted: bool = False,
               c: float = 1.0, kappa: float = 0.0, lr: float = 0.01, coords: int = 128, h: float = 1e-4,
               search_every: int = 20, seed: int | None = 0) -> torch.Tensor:
    """ZOO-ADAM (Chen et al. 2017, Algorithm 2) on the score black box ``blackbox`` (module docstring).

    ``y``: true labels (untargeted) or targets (``targeted``); ``queries``: the allowance of each
    example; ``c``: the starting constant of the online search (every ``search_every`` iterations);
    ``kappa``: the confidence of the loss; ``lr``: Adam's step; ``coords``: coordinates per iteration
    (``2 * coords + 1`` queries); ``h``: the difference step. An example stops when its next iteration
    would not fit in its allowance (it spends what is left on one last look at its iterate). Returns
    the adversarial input of smallest L2 found per example (``x`` where none); the cost is in
    ``blackbox.log``.
    """
    log = check_attack(blackbox, x, y, "zoo_attack", queries=queries, scores=True, norm="l2")
    c = check_budget(c, "zoo_attack", name="c", positive=True)
    kappa = check_budget(kappa, "zoo_attack", name="kappa")
    lr = check_budget(lr, "zoo_attack", name="lr", positive=True)
    h = check_budget(h, "zoo_attack", name="h", positive=True)
    search_every = check_count(search_every, "zoo_attack", "search_every", 1)
    d = x[0].numel()
    coords = check_count(coords, "zoo_attack", "coords", 1)
    if coords > d:
        raise ValueError(f"zoo_attack: coords must be at most the input dimension {d}, got {coords}")
    x = x.detach()
    dev = log.queries.device
    y = y.to(dev)
    gen = generator(seed, x.device)
    n = len(x)

    probs, hit = first_look(blackbox, x, y, targeted, scores=True)
    best, best_l2 = x.clone(), torch.where(hit, 0.0, math.inf).to(x.dtype)
    search = BinarySearch(x, y, c, kappa=kappa, targeted=targeted)
    delta = torch.zeros_like(x)
    adam = ZOAdam(lr)
    done = hit.clone()  # an input already adversarial needs no perturbation

    def objective(z, ids):  # F at the points z of the examples ids (rows grouped by example)
        k = len(z) // len(ids)
        xr, yr, cr = (v[ids].repeat_interleave(k, 0) for v in (x, y, search.value))
        img = (xr + z).clamp(0, 1)
        p = blackbox.scores(img, ids.repeat_interleave(k))
        l2 = (img - xr).flatten(1).double().pow(2).sum(1)
        return (l2 + cr.double() * cw_loss(p, yr, targeted, kappa).double()).float(), p

    it = 0
    while True:
        ids = (~done & (log.remaining() >= 1)).nonzero().flatten()
        if not len(ids):
            break
        fx, p = objective(delta[ids], ids)
        adv = adversarial(p.argmax(1), y[ids], targeted)
        log.record(ids, x[ids] + delta[ids], adv)
        l2 = delta[ids].flatten(1).norm(dim=1)
        better = adv & (l2 < best_l2[ids])
        best[ids[better]], best_l2[ids[better]] = x[ids[better]] + delta[ids[better]], l2[better]
        search.hit[ids] |= adv

        step = log.remaining(ids) >= 2 * coords
        done[ids[~step]] = True  # the last look at this example's iterate: its allowance is spent
        ids, fx = ids[step], fx[step]
        if not len(ids):
            break
        index = torch.rand(len(ids), d, generator=gen, device=x.device).argsort(1)[:, :coords]
        g, _ = coordinate_estimate(lambda z, ids=ids: objective(z, ids)[0], delta[ids], index, h=h, fx=fx)
        full = torch.zeros(n, coords, dtype=x.dtype, device=x.device)
        full[ids] = g
        all_index = torch.zeros(n, coords, dtype=torch.long, device=x.device)
        all_index[ids] = index
        moved = adam.step(delta, full, index=all_index)  # the rows that do not step get g = 0 ...
        keep = torch.zeros(n, dtype=torch.bool, device=x.device)
        keep[ids] = True
        delta = torch.where(keep.view(-1, *[1] * (x.dim() - 1)), (x + moved).clamp(0, 1) - x, delta)  # ... no move
        it += 1
        if it % search_every == 0:
            search.next_round()
    return best.detach()
