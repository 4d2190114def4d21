"""Checks and measurements of lecture 12 (score-based L-inf attacks: NES, Bandits, ZO-signSGD, Square)."""
from __future__ import annotations

import torch

from .exercises import ExerciseError, attempt

__all__ = ["check_nes_gradient", "success_curve", "summary_row"]


def check_nes_gradient(nes_gradient, *, strict: bool = False) -> None:
    """``nes_gradient(f, x, u, sigma)`` must return NES's antithetic estimate at each row of ``x``
    (``n x d``) from the given directions ``u`` (``n x q x d``):
    ``g = 1 / (2 q sigma) * sum_j (f(x + sigma u_j) - f(x - sigma u_j)) u_j`` (Ilyas et al. 2018,
    Algorithm 1), with all ``2 n q`` points in one call of ``f``."""

    def check():
        n, q, d, sigma = 5, 7, 6, 0.01
        gen = torch.Generator().manual_seed(3)
        a, b = torch.randn(d, generator=gen), torch.rand(d, generator=gen)
        calls = []

        def f(z):  # a quadratic: the antithetic difference is exact for it, f(x+su) - f(x-su) = 2s u.grad f(x)
            calls.append(len(z))
            return z @ a + 0.5 * (b * z * z).sum(1)

        x = torch.rand(n, d, generator=gen)
        u = torch.randn(n, q, d, generator=gen)
        g = nes_gradient(f, x, u, sigma)
        if not isinstance(g, torch.Tensor) or g.shape != x.shape:
            raise ExerciseError(f"return one estimate per row of x, shape {tuple(x.shape)}; got "
                                f"{getattr(g, 'shape', type(g).__name__)}")
        if len(calls) != 1 or calls[0] != 2 * n * q:
            raise ExerciseError(f"query all {2 * n * q} points (n x 2q) in one call of f; your calls had sizes {calls}"
                                " — stack x + sigma u and x - sigma u for every example and direction first")
        grad = a + b * x  # the true gradient; for a quadratic each pair gives exactly 2 sigma (u . grad)
        want = (u * (u * grad[:, None]).sum(2, keepdim=True)).mean(1)
        if torch.allclose(g, 2 * want, rtol=1e-3, atol=1e-4):
            raise ExerciseError("twice too large: a pair's difference spans 2 sigma, divide by 2 sigma")
        if torch.allclose(g, q * want, rtol=1e-3, atol=1e-4):
            raise ExerciseError("q times too large: average over the q directions, do not sum")
        if not torch.allclose(g, want, rtol=1e-3, atol=1e-4):
            raise ExerciseError("the estimate differs from 1/(2 q sigma) sum_j (f(x + sigma u_j) - f(x - sigma u_j))"
                                " u_j; check which rows of f's answer belong to which example and direction")

    attempt(check, title="NES antithetic gradient estimate", strict=strict)


def success_curve(first_success: torch.Tensor, budgets) -> torch.Tensor:
    """The fraction of examples fooled within each query budget: ``0 <= first_success <= b``
    (``first_success`` from a :class:`~advlib.blackbox.QueryLog`, ``-1`` where never fooled)."""
    fs = first_success.cpu()
    b = torch.as_tensor(list(budgets))
    return ((fs[None] >= 0) & (fs[None] <= b[:, None])).float().mean(1)


def summary_row(log) -> dict:
    """Success rate, mean and median queries to the first success (over the successes) of a run."""
    ok = log.success.cpu()
    fs = log.first_success.cpu()[ok].float()
    nan = float("nan")
    return {"success": ok.float().mean().item(), "mean queries": fs.mean().item() if ok.any() else nan,
            "median queries": fs.median().item() if ok.any() else nan}
