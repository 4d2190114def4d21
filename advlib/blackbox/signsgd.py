"""The ZO-signSGD attack (Liu, Chen, Chen & Hong, ICLR 2019, "signSGD via zeroth-order oracle"):
signSGD with the forward-difference random-direction estimate, projected onto the L-inf ball.

With ``q`` directions ``u_j`` uniform on the unit sphere of ``R^d`` (Liu et al. 2019, eq. 3)::

    g = d / (mu q) * sum_j [L(x + mu u_j) - L(x)] u_j,      x <- Proj(x - lr * sign(g))

The query of ``L(x)`` that the forward difference needs is the query that says whether ``x`` is
already adversarial: a step costs ``q + 1`` queries, none of them wasted.
"""
from __future__ import annotations

import math

import torch

from ..threat import check_budget, check_count, clip_box, project
from ..zo import estimate
from ._common import adversarial, charged, check_attack, cw_loss, first_look, generator

__all__ = ["zo_signsgd"]


def zo_signsgd(blackbox, x: torch.Tensor, y: torch.Tensor, *, eps, queries: int = 10_000, targeted: bool = False,
               q: int = 10, mu: float = 1e-3, lr: float = 0.01, seed: int | None = 0) -> torch.Tensor:
    """ZO-signSGD (Liu et al. 2019, Algorithm 1 with the sphere estimate of eq. 3) in the L-inf ball of
    radius ``eps`` around ``x`` intersected with [0, 1].

    Each step spends ``q + 1`` queries per example (``q`` perturbed points and the iterate itself,
    all examples in one call); the loss is the margin on log-probabilities, minimised. ``lr`` is the
    sign step (the paper's 1e-3 with decay is for 800 iterations; here the step is sized to reach the
    ball's boundary within a few thousand queries). An example stops at its first success, or when its
    next step would not fit in ``queries``. Returns the adversarial iterate where one was found, else
    the last iterate.
    """
    log = check_attack(blackbox, x, y, "zo_signsgd", queries=queries, scores=True, norm="linf")
    eps = check_budget(eps, "zo_signsgd", positive=True)
    q = check_count(q, "zo_signsgd", "q", 1)
    mu = check_budget(mu, "zo_signsgd", name="mu", positive=True)
    lr = check_budget(lr, "zo_signsgd", name="lr", positive=True)
    gen = generator(seed, x.device)
    x, y = x.detach(), y.detach().to(x.device)
    probs, done = first_look(blackbox, x, y, targeted, scores=True)
    done = done.to(x.device)
    x_cur, fx = x.clone(), cw_loss(probs, y, targeted, math.inf)
    loss = lambda p, owner: cw_loss(p, y[owner], targeted, math.inf)  # noqa: E731
    in_box = lambda f: lambda z: f(z.clamp(0, 1))  # noqa: E731  (samples are queried clipped to [0, 1])
    while True:
        ids = (~done & (log.remaining().to(x.device) >= q + 1)).nonzero().squeeze(1)
        if len(ids) == 0:
            break
        g, _ = estimate(in_box(charged(blackbox, ids, loss)), x_cur[ids], q=q, beta=mu, kind="sphere", fx=fx[ids],
                        generator=gen)
        delta = project(x_cur[ids] - lr * g.sign() - x[ids], eps, "linf")
        x_cur[ids] = x[ids] + clip_box(x[ids], delta)
        p = blackbox.scores(x_cur[ids], ids)
        hit = adversarial(p.argmax(1), y[ids], targeted)
        fx[ids] = loss(p, ids)
        log.record(ids, x_cur[ids], hit)
        done[ids] = hit
    return x_cur
