"""EAD: elastic-net attacks (Chen, Sharma, Zhang, Yi & Hsieh, "EAD: Elastic-Net Attacks to Deep
Neural Networks via Adversarial Examples", AAAI 2018).

C&W's formulation with an L1 term added to the distance, which favours *sparse* perturbations:

    minimise_{x in [0,1]^d}  c * f(x) + ||x - x0||_2^2 + beta * ||x - x0||_1        (paper eq. 3)

The L1 term is not differentiable, so the paper solves it by (fast) iterative shrinkage-
thresholding, ISTA / FISTA (Beck & Teboulle 2009): a gradient step on the smooth part
g(x) = c * f(x) + ||x - x0||_2^2, then the projected shrinkage-thresholding operator (eq. 5)

    [Pi_[0,1] S_beta(z)]_i = min(z_i - beta, 1)   if z_i - x0_i >  beta
                             x0_i                 if |z_i - x0_i| <= beta
                             max(z_i + beta, 0)   if z_i - x0_i < -beta

which sets every coordinate that moved by less than ``beta`` back to the original pixel.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..threat import check_budget, check_inputs, lp_norm, margin
from .cw import BinarySearch, EarlyAbort, check_search, record

__all__ = ["ead", "shrink", "elastic_net"]


def shrink(z: torch.Tensor, x0: torch.Tensor, beta: float, lo=0.0, hi=1.0) -> torch.Tensor:
    """The projected shrinkage-thresholding operator Pi_[lo,hi](S_beta(z)) of EAD (eq. 5), around x0:
    a coordinate that moved from ``x0`` by at most ``beta`` returns to ``x0``, the others move ``beta``
    back towards it and are clipped to the box ``[lo, hi]`` (EAD: [0, 1]; numbers or tensors that
    contain ``x0``)."""
    d = z - x0
    return torch.where(d > beta, torch.minimum(z - beta, torch.as_tensor(hi, dtype=z.dtype, device=z.device)),
                       torch.where(d < -beta, torch.maximum(z + beta, torch.as_tensor(lo, dtype=z.dtype,
                                                                                       device=z.device)), x0))


def _distances(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``||delta||_2^2`` and ``||delta||_1`` per example."""
    return delta.flatten(1).pow(2).sum(1), lp_norm(delta, 1)


def ead(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, beta: float = 1e-2, c: float = 1.0,
        kappa: float = 0.0, steps: int = 100, lr: float = 0.01, search_steps: int = 9, rule: str = "en",
        targeted: bool = False, abort_early: bool = True, history: list | None = None) -> torch.Tensor:
    """The EAD attack (Chen et al., AAAI 2018, Algorithm 1 with FISTA): from ``x_0 = y_0``,

        x_{k+1} = Pi_[0,1] S_beta(y_k - a_k * grad g(y_k)),      g = c * f + ||. - x||_2^2
        y_{k+1} = x_{k+1} + k / (k + 3) * (x_{k+1} - x_k)       (the slack / momentum variable)

    with ``f`` the C&W margin (confidence ``kappa``) and the step ``a_k = lr * (1 - k/steps)^0.5``
    (the polynomial decay of the authors' code); the slack point ``y_k`` may leave [0, 1], only the
    ``x_k`` are candidates. As in the paper (and its code) the threshold is ``beta`` itself, not
    ``a_k * beta`` as an exact proximal step of eq. 3 would use: it shrinks harder and gives sparser
    results. ``c`` is the initial constant of C&W's per-example binary search
    (:class:`~advlib.attacks.BinarySearch`, ``search_steps`` rounds). The first round starts at
    ``x``; each later round restarts FISTA's momentum from the example's best adversarial example so
    far (from its last iterate while it has none): a warm start of the next subproblem, where C&W
    and the EAD paper restart from ``x``. Among all successful iterates each example keeps the best
    by the decision ``rule``: ``"en"`` the elastic-net distance ``||d||_2^2 + beta * ||d||_1``,
    ``"l1"`` the L1 distance; one never broken is returned unchanged.

    Work: one forward and backward pass at ``y_k`` per step, and a forward pass at ``x_{k+1}`` only
    for the examples where it can matter (no success yet in this round, or a distance below the best
    so far). ``abort_early`` (:class:`~advlib.attacks.EarlyAbort`, as in C&W): an example whose
    objective ``c * f + ||d||_2^2 + beta * ||d||_1`` at ``y_k`` has not fallen by 0.01% in
    ``steps // 10`` steps leaves the round, and the round ends when the batch total has not. The
    paper runs 1000 steps; ``history``, if a list, receives that objective per step (a CPU tensor,
    NaN for examples that left the round).
    """
    check_inputs(model, x, y, who="ead", steps=steps)
    check_search("ead", c, search_steps, lr, kappa)
    check_budget(beta, "ead", name="beta")
    return elastic_net(model, x, y, x, beta=beta, c=c, kappa=kappa, steps=steps, lr=lr, search_steps=search_steps,
                       rule=rule, targeted=targeted, abort_early=abort_early, history=history)


def elastic_net(model: nn.Module, start: torch.Tensor, y: torch.Tensor, center: torch.Tensor, *, lo=0.0, hi=1.0,
                beta: float, c: float, kappa: float, steps: int, lr: float, search_steps: int, rule: str = "en",
                targeted: bool = False, abort_early: bool = True, history: list | None = None,
                penalty: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """EAD's solver for any centre and box: FISTA with a per-example binary search on ``c`` for

        minimise_{v in [lo, hi]}  c * f(v) + ||v - center||_2^2 + beta * ||v - center||_1 (+ penalty(v))

    where ``f`` is the C&W margin of the model's logits at ``v`` itself (label ``y``, ``targeted``,
    confidence ``kappa``) and ``penalty`` an optional smooth per-example term (CEM's auto-encoder
    loss). :func:`ead` is ``center = start = x`` in the box [0, 1]; the contrastive explanations of
    :mod:`advlib.applications.cem` move the centre and the box. The iteration, the search, the
    decision ``rule`` and the early abort are those of :func:`ead`'s docstring; the distance of the
    rule is measured from ``center``. Returns, per example, the best successful ``v`` (``start``
    where none succeeded); checks are the caller's.
    """
    if rule not in ("en", "l1"):
        raise ValueError(f"elastic_net: rule must be 'en' (elastic net) or 'l1', got {rule!r}")
    x, y = center.detach(), y.detach()
    n = len(x)
    search = BinarySearch(start.detach(), y, c, kappa=kappa, targeted=targeted)
    x_k = start.detach().clone()
    for _ in range(search_steps):
        x_k = torch.where(search.found.view(-1, *[1] * (x.dim() - 1)), search.best, x_k)  # warm start
        y_k = x_k.clone()
        rows, abort = torch.arange(n, device=x.device), EarlyAbort(n, steps, x.device)
        for k in range(steps):
            x0, y_r = x[rows], y_k[rows].requires_grad_(True)
            g = search.value[rows] * margin(model(y_r), y[rows], targeted, kappa) + _distances(y_r - x0)[0]
            if penalty is not None:
                g = g + penalty(y_r)
            (grad,) = torch.autograd.grad(g.sum(), y_r)
            with torch.no_grad():
                lo_r = lo[rows] if torch.is_tensor(lo) else lo
                hi_r = hi[rows] if torch.is_tensor(hi) else hi
                x_next = shrink(y_r - lr * (1 - k / steps) ** 0.5 * grad, x0, beta, lo_r, hi_r)
                y_k[rows] = x_next + k / (k + 3) * (x_next - x_k[rows])
                x_k[rows] = x_next
                l2, l1 = _distances(x_next - x0)
                dist = l2 + beta * l1 if rule == "en" else l1
                need = ~search.hit[rows] | (dist < search.best_dist[rows])  # else it cannot change anything
                if need.any():
                    search.consider(x_next[need], model(x_next[need]), dist[need], rows[need])
                objective = g + beta * lp_norm(y_r - x0, 1)
                record(history, n, rows, objective)
                if abort_early:
                    rows = abort.check(k, objective, rows)
            if len(rows) == 0:
                break
        search.next_round()
    return search.best
