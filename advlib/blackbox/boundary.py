"""The Boundary attack (Brendel, Rauber, Bethge: "Decision-based adversarial attacks: reliable attacks
against black-box machine learning models", ICLR 2018): a random walk along the decision boundary
that shrinks the distance to the input, from the final decision alone."""
from __future__ import annotations

import torch

from ..threat import check_budget, check_count
from ._common import adversarial, check_attack, first_look, generator
from ._hard import check_init, closest_start, confirm, reserve

__all__ = ["boundary", "boundary_candidates"]


def _col(t, like):
    return t.view(-1, *([1] * (like.dim() - 1)))


def boundary_candidates(x0: torch.Tensor, x_adv: torch.Tensor, spherical: torch.Tensor, source: torch.Tensor,
                        gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One proposal of the Boundary attack per row (Brendel et al. 2018, §3.2 and Fig. 2), with
    ``d = ||x0 - x_adv||``:

    1. an *orthogonal* step: Gaussian noise made orthogonal to ``x0 - x_adv``, of length
       ``spherical * d``, then projected back onto the sphere of radius ``d`` around ``x0``;
    2. a step *towards the original* of length ``source * d`` from there.

    Returns the point after step 1 (the spherical candidate) and after step 2, both clipped to [0, 1]
    (clipping only moves them closer to ``x0``, which lies in the box)."""
    v = (x0 - x_adv).flatten(1)
    d = v.norm(dim=1, keepdim=True).clamp_min(1e-12)
    v = v / d
    eta = torch.randn(v.shape, device=v.device, generator=gen, dtype=v.dtype)
    eta = eta - (eta * v).sum(1, keepdim=True) * v
    eta = eta / eta.norm(dim=1, keepdim=True).clamp_min(1e-12) * spherical[:, None] * d
    z = x_adv.flatten(1) + eta - x0.flatten(1)
    z = x0.flatten(1) + z * d / z.norm(dim=1, keepdim=True)  # back onto the sphere of radius d
    c = z + source[:, None] * (x0.flatten(1) - z)  # ||x0 - z|| = d: a step of source * d
    return z.view_as(x0).clamp(0, 1), c.view_as(x0).clamp(0, 1)


def boundary(bb, x: torch.Tensor, y: torch.Tensor, *, queries: int = 4000, targeted: bool = False,
             spherical_step: float = 1e-2, source_step: float = 1e-2, step_adaptation: float = 1.5,
             adapt_every: int = 10, tries: int = 100, starts: int = 10, x_init: torch.Tensor | None = None,
             seed: int | None = 0) -> torch.Tensor:
    """The Boundary attack, L2 (Brendel et al., ICLR 2018, §3), hard label: only ``bb.label`` is used.

    Start adversarial: uniform noise (``_hard.initial_points``; targeted: ``x_init``
    or the closest input of the batch labelled as the target), then a binary search on the segment
    towards ``x`` (``_hard.blend_search``); advlib keeps the closest of ``starts``
    such noise starts (``_hard.closest_start``; the paper: one). Then a random walk: each iteration
    every example proposes ``boundary_candidates`` and asks the black box about both points (two
    queries); the proposal is taken when the full step is adversarial (it is closer to ``x``). Each
    ``adapt_every`` iterations the step sizes adapt per example to the success rates over the last
    ``2 * adapt_every`` (§3.3): orthogonal success above 50% multiplies both steps by
    ``step_adaptation``, below 20% divides them; full-step success above 25% multiplies the step
    towards the original, below 10% divides it.

    All examples in one query per iteration; an example stops when two queries no longer fit.
    Returns the best adversarial point per example (``x`` where none was found)."""
    log = check_attack(bb, x, y, "boundary", queries=queries)
    spherical_step = check_budget(spherical_step, "boundary", name="spherical_step", positive=True)
    source_step = check_budget(source_step, "boundary", name="source_step", positive=True)
    step_adaptation = check_budget(step_adaptation, "boundary", name="step_adaptation", positive=True)
    adapt_every = check_count(adapt_every, "boundary", "adapt_every", 1)
    tries = check_count(tries, "boundary", "tries", 1)
    starts = check_count(starts, "boundary", "starts", 1)
    x_init = check_init(x_init, x, targeted, "boundary")
    x, y = x.detach(), y.detach()
    n, dev = len(x), x.device
    labels, hit = first_look(bb, x, y, targeted)
    with reserve(log):
        gen = generator(seed, dev)
        best, found = closest_start(bb, x, y, targeted, gen=gen, tries=tries, starts=starts, tol_rel=1e-3,
                                    x_init=x_init, labels=labels, active=~hit)
        ids = found.nonzero().squeeze(1)
        log.record(ids, best[ids], torch.ones_like(ids, dtype=torch.bool))
        sph = torch.full((n,), spherical_step, device=dev, dtype=x.dtype)
        src = torch.full((n,), source_step, device=dev, dtype=x.dtype)
        window = 2 * adapt_every
        s_hist = torch.zeros(n, window, device=dev)  # the last results of the orthogonal step ...
        f_hist = torch.zeros(n, window, device=dev)  # ... and of the full step
        seen = torch.zeros(n, dtype=torch.long, device=dev)
        while True:
            go = found & (log.remaining() >= 2)
            if not go.any():
                break
            ids = go.nonzero().squeeze(1)
            z, c = boundary_candidates(x[ids], best[ids], sph[ids], src[ids], gen)
            m = len(ids)
            adv = adversarial(bb.label(torch.cat([z, c]), ids.repeat(2)), y[ids].repeat(2), targeted)
            s_ok, f_ok = adv[:m], adv[m:]
            if f_ok.any():
                b = ids[f_ok]
                best[b] = c[f_ok]
                log.record(b, best[b], torch.ones_like(b, dtype=torch.bool))
            slot = seen[ids] % window
            s_hist[ids, slot], f_hist[ids, slot] = s_ok.float(), f_ok.float()
            seen[ids] += 1
            due = ids[seen[ids] % adapt_every == 0]
            if len(due):
                full = seen[due].clamp(max=window).float()
                p_s, p_f = s_hist[due].sum(1) / full, f_hist[due].sum(1) / full
                up_s, down_s = p_s > 0.5, p_s < 0.2
                sph[due] *= torch.where(up_s, step_adaptation, torch.where(down_s, 1 / step_adaptation, 1.0))
                src[due] *= torch.where(up_s, step_adaptation, torch.where(down_s, 1 / step_adaptation, 1.0))
                src[due] *= torch.where(p_f > 0.25, step_adaptation, torch.where(p_f < 0.1, 1 / step_adaptation, 1.0))
                src[due] = src[due].clamp(max=0.5)
    return confirm(bb, x, y, best, found, targeted=targeted)
