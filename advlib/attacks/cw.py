"""Minimum-distance attacks: *minimise the distance* subject to a misclassification, and a
per-example search on the one scalar that trades distance for success.

``cw_l2`` is the Carlini & Wagner L2 attack (Carlini & Wagner, "Towards Evaluating the Robustness
of Neural Networks", IEEE S&P 2017, §V.A):

    minimise  ||x' - x||_2^2 + c * f(x')        f the C&W margin (:func:`advlib.threat.margin`, eq. 6 / f_6),

with C&W's per-example binary search on ``c``. :func:`advlib.attacks.ead` (``ead.py``) is the same
search around an elastic-net objective. ``minimal_pgd`` is *not* a C&W attack: it is PGD (Madry et
al., 2018) on the C&W margin with the same kind of per-example bisection, on the radius ``eps``,
for the smallest ball in which PGD finds an adversarial example (C&W's own L-inf attack, §V.C,
is a different algorithm: a penalty ``sum_i max(|delta_i| - tau, 0)`` with ``tau`` lowered step
by step, which this library does not implement).

The three share :class:`~advlib.attacks.BinarySearch` (the search and "keep the best iterate")
and :class:`~advlib.attacks.EarlyAbort` (C&W's abort of an optimisation round that stopped
improving).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..threat import check_budget, check_count, check_inputs, lp_norm, margin, parse_norm
from .pgd import pgd

__all__ = ["cw_l2", "minimal_pgd", "BinarySearch", "EarlyAbort"]

#: the tanh variable is kept strictly inside (-1, 1): pixels at exactly 0 or 1 map to finite w
_SHRINK = 1 - 1e-6


class BinarySearch:
    """C&W's per-example search on a scalar (Carlini & Wagner 2017, §V: the constant ``c``; or a
    radius) and, per example, the best adversarial example found in any round.

    ``value`` is the scalar each example tries in the current round, ``lo`` the largest value that
    failed and ``hi`` the smallest that succeeded (``hi`` starts at ``hi``, by default ``inf``).
    :meth:`consider` takes candidates with their logits (from a forward pass the attack made anyway)
    and their distance; a candidate *succeeds* when its margin is below ``-kappa`` (the label changed,
    or the target leads, by more than ``kappa``) and becomes the example's ``best`` if its distance is
    the smallest so far. :meth:`next_round` then moves ``value``: a success lowers ``hi``, a failure
    raises ``lo``; the new value bisects ``[lo, hi]`` once ``hi`` is finite, else it is multiplied by
    ``grow`` (C&W: ``c * 10``). ``best`` starts as ``x`` (returned unchanged where nothing succeeded),
    ``best_dist`` as ``inf``.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, start: float, *, kappa: float = 0.0,
                 targeted: bool = False, hi: float = math.inf, grow: float = 10.0):
        self.y, self.kappa, self.targeted, self.grow = y, float(kappa), targeted, grow
        self.value = torch.full((len(x),), float(start), device=x.device, dtype=x.dtype)
        self.lo, self.hi = torch.zeros_like(self.value), torch.full_like(self.value, hi)
        self.best, self.best_dist = x.detach().clone(), torch.full_like(self.value, math.inf)
        self.hit = torch.zeros(len(x), dtype=torch.bool, device=x.device)  # succeeded in this round

    @property
    def found(self) -> torch.Tensor:
        """Per example: has any round found an adversarial example?"""
        return torch.isfinite(self.best_dist)

    def consider(self, x_adv: torch.Tensor, logits: torch.Tensor, dist: torch.Tensor,
                 rows: torch.Tensor | None = None) -> torch.Tensor:
        """Candidates ``x_adv`` of the examples ``rows`` (all when ``None``), their logits and
        distances: record the successes, keep the closest. Returns the success mask."""
        rows = torch.arange(len(self.value), device=dist.device) if rows is None else rows
        with torch.no_grad():
            ok = margin(logits, self.y[rows], self.targeted, kappa=math.inf) < -self.kappa
            self.hit[rows] |= ok
            better = ok & (dist < self.best_dist[rows])
            self.best_dist[rows[better]] = dist[better].to(self.best_dist)
            self.best[rows[better]] = x_adv.detach()[better]
        return ok

    def next_round(self, upper: torch.Tensor | None = None) -> None:
        """Move each example's value (see the class); a success lowers ``hi`` to the value tried,
        or to ``upper`` if given (``minimal_pgd``: the radius actually used)."""
        up = self.value if upper is None else torch.minimum(self.value, upper)
        self.hi = torch.where(self.hit, torch.minimum(self.hi, up), self.hi)
        self.lo = torch.where(self.hit, self.lo, torch.maximum(self.lo, self.value))
        self.value = torch.where(torch.isfinite(self.hi), (self.lo + self.hi) / 2, self.value * self.grow)
        self.hit = torch.zeros_like(self.hit)


class EarlyAbort:
    """C&W's early abort (their code's ``ABORT_EARLY``): every ``steps // 10`` steps, from step 0,
    compare the objective with its value at the previous check; one that has not fallen by 0.01%
    has converged. Here per example — an example that has converged leaves the round, so it costs
    no more forward passes — and, as in C&W, for the whole batch: when the sum of the objectives
    has not fallen by 0.01%, the round ends for every example."""

    def __init__(self, n: int, steps: int, device, tol: float = 1e-4):
        self.every, self.tol = max(steps // 10, 1), tol
        self.prev = torch.full((n,), math.inf, device=device)
        self.prev_total = math.inf

    def _stalled(self, now, before):
        return now > before - self.tol * abs(before)

    def check(self, step: int, objective: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The rows still running after ``step`` (``objective``: theirs, per example)."""
        if step % self.every:
            return rows
        objective = objective.detach().to(self.prev)
        stalled = self._stalled(objective, self.prev[rows])
        self.prev[rows] = objective
        total = float(self.prev.sum())
        if math.isfinite(total) and self._stalled(total, self.prev_total):
            return rows[:0]
        self.prev_total = total
        return rows[~stalled]


def check_search(who: str, c: float, search_steps: int, lr: float, kappa: float) -> None:
    """The parameters of a C&W-style search: ``c > 0``, ``search_steps >= 1``, ``lr > 0``, ``kappa >= 0``."""
    check_budget(c, who, name="the initial constant c", positive=True)
    check_count(search_steps, who, "search_steps", 1)
    check_budget(lr, who, name="lr", positive=True)
    if not (isinstance(kappa, (int, float)) and kappa >= 0):
        raise ValueError(f"{who}: kappa must be >= 0, got {kappa!r}")


def _to_w(x: torch.Tensor) -> torch.Tensor:
    """Inverse of ``_from_w``: ``atanh`` of ``2x - 1`` scaled strictly inside (-1, 1). Without the
    scaling a pixel at 0 or 1 becomes w = -inf / +inf, where tanh has zero gradient: it could never
    move (torchattacks' C&W has this problem; 59% of the digits' pixels are exactly 0 or 1)."""
    return torch.atanh((2 * x - 1) * _SHRINK)


def _from_w(w: torch.Tensor) -> torch.Tensor:
    """The change of variables of C&W §V.A: ``x' = (tanh(w) + 1) / 2`` always lies in [0, 1]."""
    return (torch.tanh(w) + 1) / 2


def _adam(w, grad, m, v, t: int, lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
    """One Adam step (Kingma & Ba 2015, Algorithm 1) on rows of ``w`` with their moments ``m, v``
    (all updated in place); written out so that rows can leave the optimisation one by one."""
    m.mul_(b1).add_(grad, alpha=1 - b1)
    v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
    w.sub_(lr * (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + eps))


def record(history: list | None, n: int, rows: torch.Tensor, values: torch.Tensor) -> None:
    """Append to ``history`` (if a list) the per-example ``values`` of ``rows`` as a CPU tensor of
    length ``n``, NaN for the examples not running."""
    if history is not None:
        full = torch.full((n,), math.nan, dtype=values.dtype)
        history.append(full.index_put_((rows.cpu(),), values.detach().cpu()))


def _sqnorm(d: torch.Tensor) -> torch.Tensor:
    return d.flatten(1).pow(2).sum(1)


def cw_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, c: float = 1.0, kappa: float = 0.0,
          steps: int = 100, lr: float = 0.05, search_steps: int = 9, targeted: bool = False,
          abort_early: bool = True, history: list | None = None) -> torch.Tensor:
    """The C&W L2 attack (Carlini & Wagner, 2017, §V.A): with ``x' = (tanh(w) + 1) / 2``, minimise
    with Adam over ``w``

        ||x' - x||_2^2 + c * f(x'),    f(x') = max(z_y(x') - max_{j != y} z_j(x'), -kappa)

    (targeted: ``f = max(max_{j != t} z_j - z_t, -kappa)``). ``c`` is the *initial* constant of
    the per-example binary search (:class:`~advlib.attacks.BinarySearch`, ``search_steps`` rounds):
    a success lowers an example's upper bound, a failure raises its lower bound, and ``c`` bisects
    them (``c * 10`` while it has never succeeded). Every iterate is judged with the logits of the
    forward pass that computes its gradient (no extra pass); each example keeps its smallest-L2
    successful iterate over all rounds, one never broken is returned unchanged (``x``). The first
    round starts at ``x``; each later round goes on from the example's last iterate with a fresh
    Adam (C&W restart every round from ``x``: a warm start needs fewer steps to converge).
    ``abort_early`` (:class:`~advlib.attacks.EarlyAbort`): an example whose objective has not fallen
    by 0.01% in ``steps // 10`` steps leaves the round; the round ends when the batch total has not.
    ``history``, if a list, receives per step the per-example objective (a CPU tensor, NaN for
    examples that left the round). The whole batch is optimised at once.

    Pixels at exactly 0 or 1 start at ``|w| = atanh(1 - 1e-6) ~ 7.25``, on the flat end of tanh;
    Adam moves ``w`` by about ``lr`` per step, so with the paper's ``lr=0.01`` they need hundreds of
    steps to move visibly. Hence the default ``lr=0.05`` (short budgets like the lectures').
    """
    check_inputs(model, x, y, who="cw_l2", steps=steps)
    check_search("cw_l2", c, search_steps, lr, kappa)
    x, y = x.detach(), y.detach()
    n = len(x)
    search = BinarySearch(x, y, c, kappa=kappa, targeted=targeted)
    w = _to_w(x)
    for _ in range(search_steps):
        m, v = torch.zeros_like(w), torch.zeros_like(w)  # Adam restarts; w goes on from the last round
        rows, abort = torch.arange(n, device=x.device), EarlyAbort(n, steps, x.device)
        for step in range(steps):
            w_r = w[rows].requires_grad_(True)
            x_adv = _from_w(w_r)
            logits = model(x_adv)
            l2sq = _sqnorm(x_adv - x[rows])
            loss = l2sq + search.value[rows] * margin(logits, y[rows], targeted, kappa)
            (grad,) = torch.autograd.grad(loss.sum(), w_r)  # only w: no gradients for the weights
            with torch.no_grad():
                search.consider(x_adv, logits, l2sq, rows)  # the iterate this forward pass evaluated
                m_r, v_r, w_r = m[rows], v[rows], w_r.detach()
                _adam(w_r, grad, m_r, v_r, step + 1, lr)
                w[rows], m[rows], v[rows] = w_r, m_r, v_r
                record(history, n, rows, loss)
                if abort_early:
                    rows = abort.check(step, loss, rows)
            if len(rows) == 0:
                break
        search.next_round()
    return search.best


def minimal_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str = "linf", steps: int = 100,
                search_steps: int = 10, eps_max: float | None = None, targeted: bool = False) -> torch.Tensor:
    """The smallest ball in which PGD finds an adversarial example, per example: a bisection on the
    radius of :func:`advlib.attacks.pgd` (Madry et al., 2018) with the C&W margin loss (``loss="cw"``,
    no random start), in any norm ``pgd`` supports (``"linf"``, ``"l2"``, ``"l1"``). Not C&W's L-inf
    attack (see the module docstring).

    Every example starts at ``eps_max`` (default: the largest distance in the box [0, 1]^d, i.e. 1
    for L-inf, sqrt(d) for L2, d for L1) and runs ``search_steps`` rounds of ``steps`` PGD steps, all
    examples in one batch with one radius each: a success at radius ``eps`` sets the example's upper
    bound to the norm of the perturbation found (at most ``eps``), a failure its lower bound to
    ``eps``, and the next radius bisects them (:class:`~advlib.attacks.BinarySearch`). An example
    that fails at ``eps_max`` drops out (as does one whose bracket has closed). Returns, per
    example, the successful PGD result of smallest norm (inside that ball and the box), or ``x``
    unchanged where no round succeeded.
    """
    check_inputs(model, x, y, who="minimal_pgd", steps=steps, norm=norm, eps=eps_max)
    norm = parse_norm(norm, "minimal_pgd")
    check_count(search_steps, "minimal_pgd", "search_steps", 1)
    d = x[0].numel()
    eps_max = {"linf": 1.0, "l2": math.sqrt(d), "l1": float(d)}[norm] if eps_max is None else float(eps_max)
    x, y = x.detach(), y.detach()
    search = BinarySearch(x, y, eps_max, targeted=targeted, hi=eps_max)
    for _ in range(search_steps):
        rows = (search.lo < search.hi).nonzero().flatten()  # failed at eps_max, or converged: done
        if len(rows) == 0:
            break
        x_adv = pgd(model, x[rows], y[rows], eps=search.value[rows], steps=steps, norm=norm, random_start=False,
                    loss="cw", targeted=targeted)
        with torch.no_grad():
            search.consider(x_adv, model(x_adv), lp_norm(x_adv - x[rows], norm), rows)
        search.next_round(upper=search.best_dist)
    return search.best
