"""Bandits-TD: the L-inf soft-label attack of Ilyas, Engstrom & Madry (ICLR 2019, "Prior convictions:
black-box adversarial attacks with bandits and priors"), Algorithms 1-3.

The attack keeps a *prior* ``v``, its running guess of the gradient of the loss, and improves it
as an online bandit problem rather than estimating the gradient afresh at every step:

* the **time prior**: ``v`` is carried from one step to the next (successive gradients are
  strongly correlated);
* the **data prior**: ``v`` lives at a coarse resolution (one value per ``tile x tile`` pixels) and is
  upsampled (nearest neighbour) to the image (nearby pixels have similar gradients).

A step (Algorithm 2, then 3): draw ``u`` (Gaussian, norm about ``exploration``), query the loss at
``x + fd_eta * up(v ± u) / ||up(v ± u)||`` (two queries), which estimates the derivative of
``<grad L, v>`` along ``u``: ``Delta = (L+ - L-) / (fd_eta * exploration) * u``; update the prior
by exponentiated gradients with rate ``online_lr`` (the L-inf case: ``v`` stays in [-1, 1]), then
take the image step ``x <- Proj(x - image_lr * sign(up(v)))``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..threat import check_budget, check_count, clip_box, project
from ._common import adversarial, check_attack, cw_loss, first_look, generator

__all__ = ["bandits"]


def _eg_step(v: torch.Tensor, g: torch.Tensor, lr: float) -> torch.Tensor:
    """Exponentiated gradient ascent on ``v`` in [-1, 1] (the L-inf prior update of Bandits): with
    ``p = (v + 1) / 2``, ``p <- p e^{lr g} / (p e^{lr g} + (1 - p) e^{-lr g})``. Written with a
    sigmoid (``p = sigmoid(a)``, ``a <- a + 2 lr g``), which never overflows."""
    a = torch.logit((v + 1) / 2, eps=1e-12)
    return 2 * torch.sigmoid(a + 2 * lr * g) - 1


def bandits(blackbox, x: torch.Tensor, y: torch.Tensor, *, eps, queries: int = 10_000, targeted: bool = False,
            fd_eta: float = 0.1, image_lr: float = 0.01, online_lr: float = 1.0, exploration: float = 1.0,
            tile: int = 2, seed: int | None = 0) -> torch.Tensor:
    """Bandits-TD in the L-inf ball of radius ``eps`` around ``x`` intersected with [0, 1]
    (Ilyas, Engstrom & Madry 2019, Algorithm 3 with the estimate of Algorithm 2).

    ``tile`` is the side, in pixels, of the data prior's tiles: the prior has
    ``ceil(H / tile) x ceil(W / tile)`` values per channel (``tile=1``: the time prior alone). The
    paper's 50 is for 299-pixel ImageNet images (a 6 x 6 prior); on the 28 x 28 digits a prior that
    coarse is too small a search space: measured on 30 digits at eps = 0.1 and 4000 queries
    (online_lr 1), tile 2 (a 14 x 14 prior) fooled 87 % and tile 4 (7 x 7) 80 %, hence the default 2.
    ``online_lr``: the paper's 100 is tuned to its ImageNet losses; on these digits it saturates the
    prior at once (43 % in the same run) while 0.1 to 10 all gave 87 %: the default is 1. The other
    defaults are the paper's (fd_eta 0.1, image_lr 0.01, exploration 1). Each step spends
    3 queries per example: the two of the prior's update and one of the new iterate, which says
    whether it is adversarial; all examples are in one call of the black box. The loss is the margin
    on log-probabilities, minimised. An example stops at its first success or when a step would not
    fit in ``queries``. Returns the adversarial iterate where one was found, else the last iterate.
    """
    log = check_attack(blackbox, x, y, "bandits", queries=queries, scores=True, norm="linf")
    eps = check_budget(eps, "bandits", positive=True)
    for name, v in (("fd_eta", fd_eta), ("image_lr", image_lr), ("online_lr", online_lr),
                    ("exploration", exploration)):
        check_budget(v, "bandits", name=name, positive=True)
    tile = check_count(tile, "bandits", "tile", 1)
    if x.dim() != 4:
        raise ValueError(f"bandits: the data prior needs image batches N x C x H x W, got shape {tuple(x.shape)}")
    gen = generator(seed, x.device)
    x, y = x.detach(), y.detach().to(x.device)
    _, done = first_look(blackbox, x, y, targeted, scores=True)
    done = done.to(x.device)
    n, c, h, w = x.shape
    prior = torch.zeros(n, c, math.ceil(h / tile), math.ceil(w / tile), device=x.device)
    d_prior = prior[0].numel()
    up = lambda v: F.interpolate(v, scale_factor=tile, mode="nearest")[:, :, :h, :w]  # noqa: E731
    x_cur = x.clone()
    while True:
        ids = (~done & (log.remaining().to(x.device) >= 3)).nonzero().squeeze(1)
        if len(ids) == 0:
            break
        v = prior[ids]
        u = exploration * torch.randn(v.shape, device=x.device, generator=gen) / math.sqrt(d_prior)
        q = up(torch.cat([v + u, v - u]))
        q = q / q.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        probe = (x_cur[ids].repeat(2, 1, 1, 1) + fd_eta * q).clamp(0, 1)
        owner = ids.repeat(2)
        l_plus, l_minus = cw_loss(blackbox.scores(probe, owner), y[owner], targeted, math.inf).chunk(2)
        delta_v = ((l_plus - l_minus) / (fd_eta * exploration)).view(-1, 1, 1, 1) * u
        prior[ids] = v = _eg_step(v, delta_v, online_lr)
        delta = project(x_cur[ids] - image_lr * up(v).sign() - x[ids], eps, "linf")
        x_cur[ids] = x[ids] + clip_box(x[ids], delta)
        hit = adversarial(blackbox.scores(x_cur[ids], ids).argmax(1), y[ids], targeted)
        log.record(ids, x_cur[ids], hit)
        done[ids] = hit
    return x_cur
