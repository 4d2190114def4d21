"""Checks, references and figures of lecture 43 (α-CROWN and branch and bound)."""
from __future__ import annotations

import math

import torch

from .exercises import ExerciseError, attempt

__all__ = ["reference_babsr_score", "check_babsr_score", "reference_ascend", "check_ascend", "search_tree_figure"]


# ------------------------------------------------------------------------------------------------ exercise 1
def reference_babsr_score(lam: torch.Tensor, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """BaBSR's intercept score (Bunel et al. 2020): ``-min(λ, 0) · u (-l) / (u - l)`` where the neuron is
    unstable (``l < 0 < u``), ``-inf`` elsewhere (a stable neuron is not worth splitting)."""
    unstable = (l < 0) & (u > 0)
    gain = (-lam).clamp(min=0) * u * (-l) / (u - l).clamp(min=1e-12)
    return torch.where(unstable, gain, torch.full_like(gain, -math.inf))


def check_babsr_score(babsr_score, *, strict: bool = False) -> None:
    """``babsr_score(lam, l, u)`` must return, element-wise, what the lower bound of a row pays for the
    intercept of a neuron's upper line: ``lam`` is the coefficient of the ReLU's output in the bound; with
    ``lam < 0`` the bound uses the chord ``u (z - l) / (u - l)``, whose intercept ``-u l / (u - l)`` costs
    ``lam`` times it; ``-inf`` where the neuron is stable."""

    def check():
        lam = torch.tensor([-2.0, 1.5, -1.0, -1.0, -3.0, 0.0, -0.5], dtype=torch.float64)
        l = torch.tensor([-1.0, -1.0, 0.5, -2.0, -1.0, -1.0, -4.0], dtype=torch.float64)
        u = torch.tensor([1.0, 1.0, 2.0, -0.5, 3.0, 1.0, 1.0], dtype=torch.float64)
        got = babsr_score(lam.clone(), l.clone(), u.clone())
        want = reference_babsr_score(lam, l, u)
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            raise ExerciseError(f"return one score per neuron, a tensor of shape {tuple(want.shape)}, got "
                                f"{getattr(got, 'shape', type(got).__name__)}")
        got = got.double()
        stable = ~((l < 0) & (u > 0))
        if not (torch.isinf(got[stable]) & (got[stable] < 0)).all():
            raise ExerciseError("a stable neuron (l >= 0 or u <= 0) must score -inf: its relaxation is exact, "
                                "splitting it gains nothing. Hint: torch.where on (l < 0) & (u > 0).")
        if torch.allclose(got[~stable], (lam.abs() * u * (-l) / (u - l))[~stable]) and not torch.allclose(
                got[~stable], want[~stable]):
            raise ExerciseError("a neuron with a positive coefficient takes the lower line, which has no "
                                "intercept: only a negative lam pays for the chord's. Hint: (-lam).clamp(min=0).")
        if not torch.allclose(got[~stable], want[~stable]):
            raise ExerciseError("the scores of the unstable neurons are off. The chord's intercept is "
                                "-u l / (u - l) (positive); the bound pays lam times it when lam < 0.")

    attempt(check, title="BaBSR's intercept score", strict=strict)


# ------------------------------------------------------------------------------------------------ exercise 2
def reference_ascend(bound, alpha: torch.Tensor, steps: int, lr: float) -> torch.Tensor:
    """The best value per entry of ``bound(alpha)`` over ``steps`` projected Adam steps of size ``lr`` on
    ``-bound(alpha).sum()``, the start included: ``alpha`` is put back into [0, 1] after each step, outside
    the computation of the bound (so its gradient is the true one at 0 and 1)."""
    alpha = alpha.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([alpha], lr=lr)
    best = None
    for step in range(steps + 1):
        value = bound(alpha)
        best = value.detach() if best is None else torch.maximum(best, value.detach())
        if step == steps:
            break
        opt.zero_grad()
        (-value.sum()).backward()
        opt.step()
        with torch.no_grad():
            alpha.clamp_(0, 1)
    return best


def check_ascend(ascend, *, strict: bool = False) -> None:
    """``ascend(bound, alpha, steps, lr)`` must return the best value, per entry, that ``bound`` took at
    the points it was evaluated at: ``alpha`` (start included) and after each of ``steps`` Adam steps of
    size ``lr`` on ``-bound(alpha).sum()``, with ``alpha`` projected onto [0, 1] after each step."""

    def check():
        seen = []

        def concave(alpha):  # per entry, the best alpha is `target` clipped to [0, 1]
            seen.append(alpha.detach().clone())
            return -((alpha - target) ** 2)

        target = torch.tensor([0.3, 0.7, 1.6, -0.4, 0.5, 0.5])
        start = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0])  # CROWN starts at the ends
        got = ascend(concave, start.clone(), 150, 0.05)
        if not isinstance(got, torch.Tensor) or got.shape != target.shape:
            raise ExerciseError(f"return the best bound per entry, a tensor of shape {tuple(target.shape)}, got "
                                f"{getattr(got, 'shape', type(got).__name__)}")
        if not seen:
            raise ExerciseError("bound(alpha) was never called")
        points = torch.stack(seen)
        if (points < -1e-6).any() or (points > 1 + 1e-6).any():
            raise ExerciseError("bound was evaluated at an alpha outside [0, 1]: a line of such a slope is not "
                                "a lower bound of ReLU. Project after each step: with torch.no_grad(): "
                                "alpha.clamp_(0, 1).")
        values = torch.stack([-((p - target) ** 2) for p in seen])
        if not torch.allclose(got.detach(), values.max(0).values, atol=1e-6):
            raise ExerciseError("the result is not the best value over the points evaluated (start included): "
                                "keep a running torch.maximum of bound(alpha) — a later iterate can be worse.")
        moved = (points - start).abs().amax(0)
        if (moved[:2] < 1e-3).any():
            raise ExerciseError("alpha never left its start at 0 or 1. Hint: reading alpha through "
                                "alpha.clamp(0, 1) inside the bound gives a zero gradient at the ends on torch >= "
                                "2.14; optimise alpha itself and clamp it in place after the step.")
        best = -((target.clamp(0, 1) - target) ** 2)
        if ((got.detach() - best).abs() > 1e-3).any():
            raise ExerciseError("the ascent does not reach the maximum of a concave bound in 150 steps of 0.05. "
                                "Use torch.optim.Adam([alpha], lr=lr) on -bound(alpha).sum().")

    attempt(check, title="projected gradient ascent on a bound", strict=strict)


# -------------------------------------------------------------------------------------------------- figures
def search_tree_figure(tree, ax, title: str = ""):
    """Draw a branch-and-bound search tree (a list of :class:`advlib.verify.TreeNode`) on ``ax``: depth
    downwards, leaves side by side, each node coloured by its fate; the root's rows share the top."""
    children: dict = {}
    for k, t in enumerate(tree):
        children.setdefault(t.parent, []).append(k)
    xs: dict = {}
    counter = [0]

    def place(k):
        kids = children.get(k, [])
        if not kids:
            xs[k] = counter[0]
            counter[0] += 1
        else:
            for c in kids:
                place(c)
            xs[k] = sum(xs[c] for c in kids) / len(kids)

    for r in children.get(None, []):
        place(r)
    colours = {"verified": "#1b9e77", "falsified": "#d95f02", "open": "#e6ab02", "split": "#7570b3"}
    for k, t in enumerate(tree):
        if t.parent is not None:
            ax.plot([xs[t.parent], xs[k]], [-tree[t.parent].depth, -t.depth], color="0.7", lw=0.6, zorder=1)
    for fate, colour in colours.items():
        ks = [k for k, t in enumerate(tree) if t.fate == fate]
        if ks:
            ax.scatter([xs[k] for k in ks], [-tree[k].depth for k in ks], s=14, color=colour, zorder=2,
                       label=f"{fate} ({len(ks)})")
    ax.set_xticks([])
    ax.set_ylabel("depth (splits)")
    depth = max(t.depth for t in tree)
    ax.set_yticks(range(0, -depth - 1, -max(1, depth // 6)), [str(d) for d in range(0, depth + 1, max(1, depth // 6))])
    ax.legend(loc="lower left", frameon=False)
    ax.set_title(title)
    return ax
