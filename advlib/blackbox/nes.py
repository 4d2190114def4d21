"""NES: the L-inf soft-label attack of Ilyas, Engstrom, Athalye & Lin (ICML 2018, "Black-box
adversarial attacks with limited queries and information"), Algorithm 1 inside PGD.

The gradient of the loss is estimated from ``n`` antithetic pairs of Gaussian samples (a natural
evolution strategy, NES)::

    g = 1 / (2 n sigma) * sum_i [L(x + sigma u_i) - L(x - sigma u_i)] u_i,    u_i ~ N(0, I)

and used as PGD uses the true gradient: ``x <- Proj(x - lr * sign(g))`` onto the eps-ball around the
clean input intersected with [0, 1]. The sign step needs only the signs of the estimate, which are
right far more often than its magnitudes are accurate.
"""
from __future__ import annotations

import math

import torch

from ..threat import check_budget, check_count, clip_box, project
from ..zo import estimate
from ._common import adversarial, charged, check_attack, cw_loss, first_look, generator

__all__ = ["nes"]


def nes(blackbox, x: torch.Tensor, y: torch.Tensor, *, eps, queries: int = 10_000, targeted: bool = False,
        samples: int = 50, sigma: float = 1e-3, lr: float = 0.01, seed: int | None = 0) -> torch.Tensor:
    """NES + PGD in the L-inf ball of radius ``eps`` (Ilyas et al. 2018, Algorithm 1 and eq. 1 / 2).

    Each step spends ``2 * samples + 1`` queries per example: the antithetic pairs of the estimate,
    all examples in one call of the black box, and one query of the new iterate, which says whether
    it is adversarial. The loss is the margin on log-probabilities (:func:`advlib.blackbox.cw_loss`
    without clamping), minimised. An example stops at its first success; an example whose next step
    would not fit in ``queries`` stops. Returns the adversarial iterate where one was found, else the
    last iterate (in the ball and in [0, 1]).
    """
    log = check_attack(blackbox, x, y, "nes", queries=queries, scores=True, norm="linf")
    eps = check_budget(eps, "nes", positive=True)
    samples = check_count(samples, "nes", "samples", 1)
    sigma = check_budget(sigma, "nes", name="sigma", positive=True)
    lr = check_budget(lr, "nes", name="lr", positive=True)
    gen = generator(seed, x.device)
    x, y = x.detach(), y.detach().to(x.device)
    _, done = first_look(blackbox, x, y, targeted, scores=True)
    done = done.to(x.device)
    x_cur, cost = x.clone(), 2 * samples + 1
    loss = lambda p, owner: cw_loss(p, y[owner], targeted, math.inf)  # noqa: E731
    in_box = lambda f: lambda z: f(z.clamp(0, 1))  # noqa: E731  (samples are queried clipped to [0, 1])
    while True:
        ids = (~done & (log.remaining().to(x.device) >= cost)).nonzero().squeeze(1)
        if len(ids) == 0:
            break
        g, _ = estimate(in_box(charged(blackbox, ids, loss)), x_cur[ids], q=samples, beta=sigma, kind="gaussian",
                        antithetic=True, generator=gen)
        delta = project(x_cur[ids] - lr * g.sign() - x[ids], eps, "linf")
        x_cur[ids] = x[ids] + clip_box(x[ids], delta)
        hit = adversarial(blackbox.scores(x_cur[ids], ids).argmax(1), y[ids], targeted)
        log.record(ids, x_cur[ids], hit)
        done[ids] = hit
    return x_cur
