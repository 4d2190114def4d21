"""Checks of lecture 03 (universal, ensemble and physical-world perturbations)."""
from __future__ import annotations

import itertools

import torch
from torch import nn

from ..threat import chunks
from ..train import predict
from .exercises import ExerciseError, attempt

__all__ = ["check_project_simplex", "check_weight_step", "check_fool_rate", "random_sign_fool_rates"]


def _simplex_by_supports(v: torch.Tensor) -> torch.Tensor:
    """The Euclidean projection of one vector onto the simplex from first principles: on a support
    S the projection is v_S - theta with theta = (sum v_S - 1) / |S|; try every S, keep the
    feasible candidate nearest to v."""
    best, best_d = None, float("inf")
    for r in range(1, len(v) + 1):
        for S in itertools.combinations(range(len(v)), r):
            S = list(S)
            w = torch.zeros_like(v)
            w[S] = v[S] - (v[S].sum() - 1) / r
            if (w >= -1e-12).all() and (w - v).norm().item() < best_d:
                best, best_d = w, (w - v).norm().item()
    return best


def _probe_vectors() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    out = [torch.tensor([0.2, 0.3, 0.5]), torch.tensor([2.0, 0.0, -1.0]), torch.tensor([1.0, 1.0, 1.0, 1.0]),
           torch.tensor([-3.0, -2.0]), torch.tensor([5.0])]
    out += [torch.randn(k, generator=g, dtype=torch.float64) * s for k in (2, 3, 5) for s in (0.3, 3.0)]
    return [v.double() for v in out]


def check_project_simplex(project_simplex, *, strict: bool = False) -> None:
    """``project_simplex(v)`` must return the closest point to the vector ``v`` (K,) on the
    probability simplex ``{w : w >= 0, sum(w) = 1}``."""

    def check():
        for v in _probe_vectors():
            w = project_simplex(v.clone())
            if not isinstance(w, torch.Tensor) or w.shape != v.shape:
                raise ExerciseError(f"expected a tensor of shape {tuple(v.shape)}, got "
                                    f"{getattr(w, 'shape', type(w).__name__)}")
            w = w.double()
            if (w < -1e-6).any():
                raise ExerciseError(f"for v={v.tolist()} the result {w.tolist()} has negative weights. "
                                    "Hint: the answer has the form max(v - theta, 0).")
            if abs(w.sum().item() - 1) > 1e-5:
                raise ExerciseError(f"for v={v.tolist()} the weights sum to {w.sum().item():.4f}, not 1. Hint: "
                                    "choose theta so that sum(max(v - theta, 0)) = 1 (sort v in decreasing order, "
                                    "rho = the largest j with u_j - (u_1 + ... + u_j - 1) / j > 0).")
            want = _simplex_by_supports(v)
            if not torch.allclose(w, want, atol=1e-5):
                raise ExerciseError(f"for v={v.tolist()} the result {[round(a, 4) for a in w.tolist()]} lies on the "
                                    f"simplex but is not the closest point, which is "
                                    f"{[round(a, 4) for a in want.tolist()]}. Hint: subtract the same theta from "
                                    "every coordinate, then clip at 0 (do not just clip and renormalise).")

    attempt(check, title="projection onto the simplex", strict=strict)


def check_weight_step(weight_step, *, strict: bool = False) -> None:
    """``weight_step(w, f, beta, gamma)`` must return one projected gradient-ascent step of the
    min-max weights: ``Proj_simplex(w + beta * (f - gamma * (w - 1/K)))`` for ``w`` and the
    attack losses ``f`` of the K models (vectors of length K)."""

    def check():
        g = torch.Generator().manual_seed(4)
        for k in (2, 3, 5):
            w = torch.distributions.Dirichlet(torch.ones(k, dtype=torch.float64)).sample()
            f = torch.randn(k, generator=g, dtype=torch.float64) * 2
            for beta, gamma in ((0.1, 0.0), (0.5, 2.0), (0.0, 1.0), (2.0, 1.0)):
                got = weight_step(w.clone(), f.clone(), beta, gamma)
                if not isinstance(got, torch.Tensor) or got.shape == () or got.shape != w.shape:
                    raise ExerciseError(f"expected a tensor of shape {tuple(w.shape)}, got "
                                        f"{getattr(got, 'shape', type(got).__name__)}")
                want = _simplex_by_supports(w + beta * (f - gamma * (w - 1.0 / k)))
                if not torch.allclose(got.double(), want, atol=1e-5):
                    moved = got.double() - w
                    off_simplex = (got.double() < -1e-6).any() or abs(got.double().sum().item() - 1) > 1e-5
                    hint = ("the new weights are not on the simplex (a weight is negative or they do not sum to "
                            "1): end the step with project_simplex" if off_simplex else
                            "the step must go *up* the objective: add beta * gradient"
                            if (moved @ (want - w)) < 0 else
                            "the gradient of sum_i w_i f_i - gamma/2 ||w - 1/K||^2 is f - gamma * (w - 1/K); "
                            "then project onto the simplex")
                    raise ExerciseError(f"K={k}, beta={beta}, gamma={gamma}: expected "
                                        f"{[round(a, 4) for a in want.tolist()]}, got "
                                        f"{[round(a, 4) for a in got.double().tolist()]}. Hint: {hint}.")
        w = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
        out = weight_step(w.clone(), torch.tensor([0.0, 0.0, 5.0], dtype=torch.float64), 1.0, 0.0)
        if out.argmax() != 2:
            raise ExerciseError("with f = (0, 0, 5) the weight should move to the third model, whose attack loss is "
                                "largest (the model the attack is failing on).")

    attempt(check, title="min-max weight step", strict=strict)


class _ThresholdModel(nn.Module):
    """Class 1 when the mean pixel exceeds 0.5, else class 0 — simple enough to reason about."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        m = x.flatten(1).mean(1) - 0.5
        return torch.stack([-m, m], 1) + 0 * self.dummy


def check_fool_rate(fool_rate, *, strict: bool = False) -> None:
    """``fool_rate(model, x, y, delta)`` must apply one perturbation ``delta`` (the shape of one
    input) to every input of ``x``, clip to [0, 1], and return, among the inputs that ``model``
    classifies correctly *without* ``delta``, the fraction whose predicted label changes (a float)."""

    def check():
        model = _ThresholdModel().eval()
        means = torch.tensor([0.1, 0.3, 0.45, 0.55, 0.7, 0.9, 0.4, 0.6])
        checker = (torch.arange(16).view(4, 4) + torch.arange(4).view(4, 1)) % 2 * 0.1 - 0.05  # zero mean
        x = means.view(-1, 1, 1, 1) + checker  # 8 inputs 1 x 4 x 4 in [0.05, 0.95]
        y = torch.tensor([0, 0, 0, 1, 1, 1, 1, 0])  # the last two are misclassified to begin with
        corner = torch.full((1, 4, 4), -0.1)
        corner[0, ::2, ::2] = 1.5  # a quarter of the pixels pushed far beyond 1: clipping matters
        cases = [("no perturbation", torch.zeros(1, 4, 4)), ("+0.12 everywhere", torch.full((1, 4, 4), 0.12)),
                 ("-0.2 everywhere", torch.full((1, 4, 4), -0.2)), ("+1.5 on a quarter, -0.1 elsewhere", corner)]
        with torch.no_grad():
            ok = model(x).argmax(1) == y
        for name, delta in cases:
            with torch.no_grad():
                pred_adv = model((x + delta).clamp(0, 1)).argmax(1)
                want = (pred_adv[ok] != y[ok]).float().mean().item()
                unclipped = (model(x + delta).argmax(1)[ok] != y[ok]).float().mean().item()
                over_all = (pred_adv != y).float().mean().item()
            got = fool_rate(model, x.clone(), y.clone(), delta.clone())
            got = got.item() if isinstance(got, torch.Tensor) and got.numel() == 1 else got
            if not isinstance(got, float):
                raise ExerciseError(f"expected a float (the fraction of inputs), got {type(got).__name__}")
            if abs(got - want) > 1e-6:
                if abs(got - unclipped) < 1e-6:
                    hint = "clip x + delta to [0, 1] before asking the model: no pixel can leave the valid range"
                elif abs(got - over_all) < 1e-6:
                    hint = ("count only the inputs the model gets right without delta: one it already gets "
                            "wrong was not fooled by delta")
                else:
                    hint = "broadcast delta over the batch (x + delta), clip, and compare predictions with y"
                raise ExerciseError(f"delta = {name}: expected a fool rate of {want:.3f}, got {got:.3f}. Hint: {hint}.")

    attempt(check, title="fool rate of a universal perturbation", strict=strict)


def random_sign_fool_rates(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, draws: int,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """The baseline of a universal perturbation: ``draws`` random perturbations, each one sign
    pattern ``±eps`` with the shape of one input, added to every input of ``x`` and clipped to
    [0, 1]. Returns, per draw, the fool rate (as :func:`advlib.attacks.success_rate`): among the
    inputs ``model`` classifies correctly, the fraction it then misclassifies. The draws run in
    memory-sized batches; ``generator`` (a CPU generator) makes them repeatable."""
    if draws < 1 or not eps >= 0:
        raise ValueError(f"random_sign_fool_rates: need draws >= 1 and eps >= 0, got draws={draws}, eps={eps}")
    signs = (torch.randint(0, 2, (draws, *x.shape[1:]), generator=generator) * 2 - 1).to(x)
    ok = predict(model, x) == y
    x_ok, y_ok = x[ok], y[ok]
    rates = []
    for s in chunks(draws, max(1, x_ok.numel())):
        noisy = (x_ok[None] + eps * signs[s, None]).clamp(0, 1)  # draws x N x ...
        pred = predict(model, noisy.flatten(0, 1)).view(len(signs[s]), -1)
        rates.append((pred != y_ok.to(pred.device)).float().mean(1))
    return torch.cat(rates).cpu()
