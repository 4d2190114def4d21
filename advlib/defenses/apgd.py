"""Auto-PGD (Croce & Hein, ICML 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", Algorithm 1): PGD with momentum whose step size is
halved on a fixed schedule of checkpoints when progress stalls, and restarted from the best point.

At step ``k`` (``S`` the ball of radius ``eps`` around ``x_orig`` intersected with [0, 1], ``P_S``
the projection onto it, ``alpha = 0.75`` the momentum weight)::

    z(k+1) = P_S( x(k) + eta(k) s(grad f(x(k))) )                              s: sign (L-inf), unit L2 (L2)
    x(k+1) = P_S( x(k) + alpha (z(k+1) - x(k)) + (1 - alpha) (x(k) - x(k-1)) )  (x(1) = z(1))

``eta`` starts at ``2 eps``. At each checkpoint ``w_j = ceil(p_j N)`` with ``p_0 = 0``,
``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``, the step is halved and the
iterate restarted from the best point so far when (condition 1) fewer than a fraction ``rho = 0.75``
of the steps since the last checkpoint increased the loss, or (condition 2) the step was not halved
at the last checkpoint and the best loss has not changed since (:func:`halve_step`). Each example
has its own step size and its own schedule of halvings.

Losses (to maximise): cross-entropy, and the Difference of Logits Ratio (eq. 4), invariant to
shifting and to positive scaling of the logits (``pi`` sorts them in decreasing order)::

    DLR(z, y)    = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)
    DLR_T(z, y, t) = -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)

Implementation notes (choices the paper leaves open): the start is a uniform random point of the
L-inf ball (a random point on the L2 sphere) clipped to the box; after a restart from the best
point the momentum term starts from zero; the L2 projection onto ball ∩ box is the ball's followed by
the box's (feasible, not always the closest point); an example leaves the batch as soon as it is
adversarial (its result can no longer change), so the cost falls as the attack succeeds.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..threat import check_budget, check_count, check_inputs, check_labels, chunks, lp_norm, parse_norm, project

__all__ = ["apgd", "apgd_targeted", "top_targets", "checkpoints", "halve_step", "dlr_loss", "dlr_targeted_loss",
           "LOSSES"]

#: the losses :func:`apgd` maximises, by name
LOSSES = ("ce", "dlr")


# --------------------------------------------------------------------------------------------- schedule
def checkpoints(steps: int, p1: float = 0.22, decay: float = 0.03, minimum: float = 0.06) -> list[int]:
    """The iterations ``w_j = ceil(p_j * steps)`` at which APGD may halve its step (Croce & Hein 2020,
    Sec. 3.1): ``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``, all
    ``p_j <= 1``; for 100 steps ``[0, 22, 41, 57, 70, 80, 87, 93, 99]``. Duplicates (few steps) are
    dropped."""
    steps = check_count(steps, "checkpoints", "steps", 1)
    p = [0.0, p1]
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - decay, minimum)
        if nxt > 1 + 1e-12:
            break
        p.append(nxt)
    # round before the ceiling: 0.22 * 100 is 22.000000000000004 in floating point
    w = sorted({math.ceil(round(pj * steps, 9)) for pj in p})
    return [wj for wj in w if wj <= steps]


def halve_step(increases: torch.Tensor, interval: int, halved_last: torch.Tensor, best_now: torch.Tensor,
               best_last: torch.Tensor, rho: float = 0.75) -> torch.Tensor:
    """APGD's rule at a checkpoint, per example (Croce & Hein 2020, Sec. 3.1): halve the step when

    * condition 1: ``increases``, the number of the ``interval`` steps since the last checkpoint that
      increased the loss, is below ``rho * interval``; or
    * condition 2: the step was not halved at the last checkpoint (``~halved_last``) and the best
      loss did not grow since then (``best_now <= best_last``).
    """
    return (increases < rho * interval) | (~halved_last & (best_now <= best_last))


# --------------------------------------------------------------------------------------------- losses
def _sorted(z: torch.Tensor, who: str, k: int) -> torch.Tensor:
    if z.shape[1] < k:
        raise ValueError(f"{who} needs at least {k} classes (it divides by z_pi1 - z_pi{k}); the model has "
                         f"{z.shape[1]}: use loss='ce'")
    return z.sort(1, descending=True).values


def dlr_loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The Difference of Logits Ratio (Croce & Hein 2020, eq. 4), per example, to maximise:
    ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)``; positive exactly when ``y`` is not the top
    class. Unchanged by ``z + c`` and by ``a z`` with ``a > 0`` (up to the 1e-12)."""
    s = _sorted(z, "the DLR loss", 3)
    z_y = z.gather(1, y[:, None]).squeeze(1)
    other = z.masked_fill(F.one_hot(y, z.shape[1]).bool(), -torch.inf).amax(1)
    return -(z_y - other) / (s[:, 0] - s[:, 2] + 1e-12)


def dlr_targeted_loss(z: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The targeted DLR (Croce & Hein 2020, Sec. 4), per example, to maximise:
    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)``: the target's logit pushed above the
    true one, on a scale set by the spread of the top logits."""
    s = _sorted(z, "the targeted DLR loss", 4)
    z_y, z_t = z.gather(1, y[:, None]).squeeze(1), z.gather(1, t[:, None]).squeeze(1)
    return -(z_y - z_t) / (s[:, 0] - (s[:, 2] + s[:, 3]) / 2 + 1e-12)


def _objective(loss: str, targeted: bool):
    """``f(logits, y, t)`` per example, to maximise."""
    if loss == "ce":
        if targeted:
            return lambda z, y, t: -F.cross_entropy(z, t, reduction="none")
        return lambda z, y, t: F.cross_entropy(z, y, reduction="none")
    if targeted:
        return dlr_targeted_loss
    return lambda z, y, t: dlr_loss(z, y)


# --------------------------------------------------------------------------------------------- the run
def _start(x: torch.Tensor, eps, norm: str, gen: torch.Generator) -> torch.Tensor:
    """A random start: uniform in the L-inf ball, or on the L2 sphere; clipped to the box."""
    shape = (len(x), *([1] * (x.dim() - 1)))
    if norm == "linf":
        delta = (torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1) * eps
    else:
        delta = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        delta = delta / lp_norm(delta, "l2").clamp_min(1e-12).view(shape) * eps
    return (x + delta).clamp(0, 1)


def _direction(g: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "linf":
        return g.sign()
    return g / lp_norm(g, "l2").clamp_min(1e-12).view(-1, *([1] * (g.dim() - 1)))


def _evaluate(model, x, y, t, objective, eot: int, grad: bool):
    """Loss, its gradient (averaged over ``eot`` forward/backward passes, each drawing the model's
    randomness afresh) and the mean softmax of the passes."""
    f_sum, g_sum, p_sum = 0.0, 0.0, 0.0
    for _ in range(eot):
        if grad:
            xg = x.detach().requires_grad_(True)
            z = model(xg)
            f = objective(z, y, t)
            (g,) = torch.autograd.grad(f.sum(), xg)
            g_sum = g_sum + g
        else:
            with torch.no_grad():
                z = model(x)
                f = objective(z, y, t)
        f_sum = f_sum + f.detach()
        p_sum = p_sum + F.softmax(z.detach(), 1)
    return f_sum / eot, (g_sum / eot if grad else None), p_sum / eot


def _run(model, x0, y, t, eps, norm, steps, objective, eot, gen, rho=0.75, momentum=0.75):
    """One APGD run on a batch (``eps`` a number or one radius per example): returns
    ``(x_out, adversarial, loss)`` per example, ``x_out`` the first adversarial iterate if one was
    found, else the iterate of highest loss."""
    n, dev = len(x0), x0.device
    view = (-1, *([1] * (x0.dim() - 1)))
    eo = eps.to(x0) if isinstance(eps, torch.Tensor) else torch.full((n,), float(eps), device=dev, dtype=x0.dtype)
    x_out, found = x0.clone(), torch.zeros(n, dtype=torch.bool, device=dev)
    out_loss = torch.full((n,), -torch.inf, device=dev, dtype=x0.dtype)
    x = _start(x0, eo.view(view), norm, gen)
    f, g, p = _evaluate(model, x, y, t, objective, eot, grad=True)
    # the state of the examples still running; ids maps them to the batch
    ids, xo, yo, to = torch.arange(n, device=dev), x0, y, t

    def record(adv):  # the first adversarial iterate of each example is its result
        i = ids[adv]
        x_out[i], found[i], out_loss[i] = x[adv], True, f[adv]

    adv = p.argmax(1) != y
    record(adv)
    x_prev, x_best, f_best, g_best = x, x.clone(), f.clone(), g
    eta = 2 * eo
    increases = torch.zeros(n, device=dev)
    halved_last = torch.zeros(n, dtype=torch.bool, device=dev)
    best_last = f_best.clone()
    checks, last_check = set(checkpoints(steps)), 0
    for k in range(steps):
        if adv.any():  # recorded: drop the example from the batch
            keep = ~adv
            ids, xo, yo, eo, eta = ids[keep], xo[keep], yo[keep], eo[keep], eta[keep]
            to = to[keep] if to is not None else None
            x, x_prev, x_best, g, g_best = x[keep], x_prev[keep], x_best[keep], g[keep], g_best[keep]
            f, f_best, increases, halved_last, best_last = (f[keep], f_best[keep], increases[keep],
                                                            halved_last[keep], best_last[keep])
            if len(ids) == 0:
                break
        z = (xo + project(x + eta.view(view) * _direction(g, norm) - xo, eo, norm)).clamp(0, 1)
        if k > 0:  # the momentum step
            z = (xo + project(x + momentum * (z - x) + (1 - momentum) * (x - x_prev) - xo, eo, norm)).clamp(0, 1)
        last = k == steps - 1  # no gradient needed at the final iterate
        f_new, g_new, p = _evaluate(model, z, yo, to, objective, eot, grad=not last)
        increases += (f_new > f).to(increases.dtype)
        better = f_new > f_best
        x_best = torch.where(better.view(view), z, x_best)
        f_best = torch.where(better, f_new, f_best)
        if not last:
            g_best = torch.where(better.view(view), g_new, g_best)
        x_prev, x, f, g = x, z, f_new, g_new
        adv = p.argmax(1) != yo
        record(adv)
        if k + 1 in checks and not last:  # a checkpoint: halve the step and restart where progress stalled
            halve = halve_step(increases, k + 1 - last_check, halved_last, f_best, best_last, rho)
            eta = torch.where(halve, eta / 2, eta)
            x = torch.where(halve.view(view), x_best, x)
            x_prev = torch.where(halve.view(view), x_best, x_prev)
            g = torch.where(halve.view(view), g_best, g)
            f = torch.where(halve, f_best, f)
            halved_last, best_last, last_check = halve, f_best.clone(), k + 1
            increases = torch.zeros_like(increases)
    if len(ids):
        rest = ~adv
        i = ids[rest]
        x_out[i], out_loss[i] = x_best[rest], f_best[rest]
    return x_out, found, out_loss


def _check(model, x, y, who, eps, norm, steps, eot, seed):
    classes = check_inputs(model, x, y, who=who, eps=eps, steps=steps, norm=norm)
    norm = parse_norm(norm, who, ("linf", "l2"))
    eps = check_budget(eps, who, len(x))
    check_count(eot, who, "eot", 1)
    if seed is not None:
        check_count(seed, who, "seed")
    return classes, norm, eps


def _generator(seed, device) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed) if seed is not None else gen.seed()
    return gen


def _eps_rows(eps, rows):
    return eps[rows] if isinstance(eps, torch.Tensor) else eps


def _attack(model, x, y, t, eps, norm, steps, loss, targeted, restarts, eot, gen):
    """All restarts of all examples in one batch (chunked to memory), the best restart per example:
    an adversarial one if any, else the one of highest loss. Returns ``(x_out, adversarial, loss)``."""
    n = len(x)
    objective = _objective(loss, targeted)
    x_out, found, best = x.clone(), torch.zeros(n, dtype=torch.bool, device=x.device), torch.full(
        (n,), -torch.inf, device=x.device, dtype=x.dtype)
    for s in chunks(n, restarts * x[0].numel() * 16):
        m = s.stop - s.start
        xr = x[s].repeat(restarts, *([1] * (x.dim() - 1)))
        yr = y[s].repeat(restarts)
        tr = t[s].repeat(restarts) if t is not None else None
        er = eps[s].repeat(restarts) if isinstance(eps, torch.Tensor) else eps
        xa, ok, f = _run(model, xr, yr, tr, er, norm, steps, objective, eot, gen)
        xa, ok, f = xa.view(restarts, m, *x.shape[1:]), ok.view(restarts, m), f.view(restarts, m)
        # rank the restarts: adversarial first, then by loss
        score = torch.where(ok, torch.full_like(f, torch.inf), f)
        pick = score.argmax(0)
        ar = torch.arange(m, device=x.device)
        x_out[s], found[s], best[s] = xa[pick, ar], ok[pick, ar], f[pick, ar]
    return x_out, found, best


def apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps, norm: str = "linf", steps: int = 100,
         loss: str = "ce", targeted: bool = False, target: torch.Tensor | None = None, restarts: int = 1,
         eot: int = 1, seed: int | None = 0) -> torch.Tensor:
    """Auto-PGD (Croce & Hein 2020, Algorithm 1) in the L-inf or L2 ball of radius ``eps`` (a number
    or one per example) intersected with [0, 1]: ``steps`` iterations of momentum PGD whose
    per-example step, ``2 eps`` at first, is halved at the checkpoints of :func:`checkpoints` by the
    rule :func:`halve_step`. ``loss``: ``"ce"`` (cross-entropy) or ``"dlr"`` (eq. 4, :func:`dlr_loss`).

    ``y`` are the true labels. With ``targeted=True``, ``target`` gives a target class per example
    and the loss becomes the targeted one (``-CE(target)``, or :func:`dlr_targeted_loss`); success is
    still any wrong label, as in the paper's APGD-T. ``restarts`` random starts run in one batch;
    ``eot=k`` averages the loss gradient over ``k`` forward/backward passes (for randomised models:
    each pass draws the model's randomness afresh; predictions are the mean of the passes' softmax).

    Returns, per example, the first adversarial iterate found (over the restarts), else the
    iterate of highest loss; always inside the ball and [0, 1], detached. ``seed`` fixes the starts
    (``None``: fresh randomness).
    """
    _, norm, eps = _check(model, x, y, "apgd", eps, norm, steps, eot, seed)
    steps = check_count(steps, "apgd", "steps", 1)
    restarts = check_count(restarts, "apgd", "restarts", 1)
    if loss not in LOSSES:
        raise ValueError(f"apgd: loss must be one of {LOSSES}, got {loss!r}")
    if targeted:
        if target is None:
            raise ValueError("apgd: targeted=True needs target=, one target class per example (y stays the "
                             "true labels); apgd_targeted picks them for you")
        check_labels(target, len(x), None, "apgd", "target")
        if (target == y).any():
            raise ValueError("apgd: a target equals the true label; pick another class for those examples")
    elif target is not None:
        raise ValueError("apgd: target= is given but targeted=False; pass targeted=True to use it")
    x, y = x.detach(), y.detach()
    gen = _generator(seed, x.device)
    return _attack(model, x, y, target, eps, norm, steps, loss, targeted, restarts, eot, gen)[0].detach()


def top_targets(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_targets: int) -> torch.Tensor:
    """``N x n_targets``: the classes other than ``y`` with the highest clean logits, best first
    (the targets of APGD-T and FAB-T)."""
    with torch.no_grad():
        z = torch.cat([model(x[s]) for s in chunks(len(x), 64 * x[0].numel())])
    return z.masked_fill(F.one_hot(y, z.shape[1]).bool(), -torch.inf).argsort(1, descending=True)[:, :n_targets]


def apgd_targeted(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps, norm: str = "linf",
                  steps: int = 100, n_targets: int = 9, eot: int = 1, seed: int | None = 0) -> torch.Tensor:
    """APGD-T (Croce & Hein 2020, Sec. 4): APGD with the targeted DLR loss, once for each of the
    ``n_targets`` classes with the highest clean logits after the true one, most likely first; each
    target is run only on the examples that no earlier target broke. Returns the first adversarial
    point found, else the point of highest targeted-DLR loss over the targets; inside the ball and
    [0, 1]."""
    classes, norm, eps = _check(model, x, y, "apgd_targeted", eps, norm, steps, eot, seed)
    steps = check_count(steps, "apgd_targeted", "steps", 1)
    n_targets = check_count(n_targets, "apgd_targeted", "n_targets", 1)
    if n_targets > classes - 1:
        raise ValueError(f"apgd_targeted: n_targets={n_targets}, but a model with {classes} classes has only "
                         f"{classes - 1} other classes to target")
    x, y = x.detach(), y.detach()
    gen = _generator(seed, x.device)
    targets = top_targets(model, x, y, n_targets)
    x_out, found = x.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
    best = torch.full((len(x),), -torch.inf, device=x.device, dtype=x.dtype)
    for k in range(n_targets):
        rows = (~found).nonzero().squeeze(1)
        if len(rows) == 0:
            break
        xa, ok, f = _attack(model, x[rows], y[rows], targets[rows, k], _eps_rows(eps, rows), norm, steps, "dlr",
                            True, 1, eot, gen)
        take = ok | (f > best[rows])
        x_out[rows[take]], best[rows[take]], found[rows[ok]] = xa[take], f[take], True
    return x_out.detach()
