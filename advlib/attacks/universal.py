"""Universal and min-max ensemble perturbations: one perturbation against many inputs or models.

The lecture's "universal" attacks go beyond one perturbation for one input: one perturbation for
*different* inputs, models or transformations. :func:`universal` finds one perturbation for a whole
set of inputs; :func:`minmax_ensemble` finds, for each input, one perturbation that fools *every*
model of an ensemble by the min-max formulation of Wang et al. (2021), and :func:`average_ensemble`
is its baseline that averages the models' losses; :func:`minmax_universal` is the same min-max
across groups of inputs (one perturbation, universal over the groups).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
from torch import nn

from ..threat import check_budget, check_inputs, chunks, clip_box, project
from ._common import step_size
from .pgd import _loss, _step

__all__ = ["universal", "apply_universal", "project_simplex", "MinMaxResult", "minmax_ensemble",
           "average_ensemble", "minmax_universal"]


def _check_budget(who: str, **named: float) -> None:
    for name, v in named.items():
        check_budget(v, who, name=name)


def apply_universal(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``x + delta`` for every input of the batch ``x`` (``delta`` has the shape of one input, or of
    the batch), clipped to the valid range [0, 1]."""
    if delta.shape != x.shape[1:] and delta.shape != x.shape:
        raise ValueError(f"apply_universal: delta has shape {tuple(delta.shape)}, expected the shape of one "
                         f"input {tuple(x.shape[1:])} (or of the batch {tuple(x.shape)})")
    return (x + delta.to(x)).clamp(0, 1)


def universal(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int,
              alpha: float | None = None, norm: str = "linf", targeted: bool = False,
              batch_size: int | None = None, loss: str = "ce") -> torch.Tensor:
    """One universal adversarial perturbation ``delta`` (the shape of *one* input) for all of ``x``.

    The goal of Moosavi-Dezfooli et al. (2017), "Universal adversarial perturbations": one small
    ``delta`` that changes the label of most inputs. Their algorithm aggregates per-input DeepFool
    steps; this is the *gradient* variant (Shafahi et al., 2020, "Universal adversarial training"):
    projected (sign-)gradient ascent on the mean loss over the inputs,

        delta <- Proj_{||delta|| <= eps} (delta + alpha * s(grad_delta mean_n loss(f(clip(x_n + delta)), y_n)))

    with ``s`` the unit steepest-ascent direction of the norm (sign for L-inf). With ``batch_size``
    each step uses the next mini-batch of ``x`` (stochastic, as Shafahi et al.), otherwise all of
    it. ``targeted=True`` lowers the loss of the labels ``y`` (e.g. one target for every input).
    ``alpha`` defaults to ``2.5 * eps / steps``. Returns the iterate with the highest mean loss on
    all of ``x`` among those visited (with mini-batches: the last one); apply it with
    :func:`apply_universal`.
    """
    check_inputs(model, x, y, who="universal", eps=eps, steps=steps, norm=norm)
    if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
        raise ValueError(f"universal: batch_size must be a positive integer or None, got {batch_size}")
    alpha = step_size("universal", alpha, eps, steps)
    x, y = x.detach(), y.detach()
    bs = len(x) if batch_size is None else int(batch_size)
    delta = torch.zeros_like(x[:1])
    best, best_loss = delta.clone(), -torch.inf

    def mean_loss(d: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([_loss(model((x[s] + d).clamp(0, 1)), y[s], loss, targeted)
                              for s in chunks(len(x), x[0].numel())]).mean()

    for t in range(steps):
        i = (t * bs) % len(x)
        xb, yb = x[i:i + bs], y[i:i + bs]
        delta.requires_grad_(True)
        obj = _loss(model((xb + delta).clamp(0, 1)), yb, loss, targeted).mean()
        (grad,) = torch.autograd.grad(obj, delta)
        if bs == len(x) and obj.item() > best_loss:  # full batch: obj is the loss of this iterate
            best, best_loss = delta.detach().clone(), obj.item()
        delta = project(delta.detach() + alpha * _step(grad, norm), eps, norm)
    final = mean_loss(delta).item()
    if final > best_loss or bs != len(x):
        best = delta
    return best[0].detach()


def project_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row of ``v`` (..., K) onto the probability simplex
    ``{w : w_i >= 0, sum_i w_i = 1}`` by sorting (Duchi et al., 2008, Fig. 1; Wang &
    Carreira-Perpinan, 2013, Algorithm 1): with ``u`` sorted in decreasing order,
    ``rho = max{j : u_j - (sum_{i<=j} u_i - 1) / j > 0}``, ``theta = (sum_{i<=rho} u_i - 1) / rho``,
    and ``w = max(v - theta, 0)``."""
    if v.dim() == 0 or v.shape[-1] == 0:
        raise ValueError(f"project_simplex: need at least one coordinate, got shape {tuple(v.shape)}")
    if not v.is_floating_point():
        v = v.float()
    u = v.sort(-1, descending=True).values
    css = u.cumsum(-1) - 1
    k = torch.arange(1, v.shape[-1] + 1, device=v.device, dtype=v.dtype)
    rho = ((u - css / k) > 0).sum(-1, keepdim=True)  # the test holds exactly for j = 1..rho
    theta = css.gather(-1, rho - 1) / rho.to(v.dtype)
    return (v - theta).clamp(min=0)


class MinMaxResult(NamedTuple):
    """What the min-max attacks return: the perturbation(s), the final weights ``w`` on the simplex
    (K,) or (N, K), and the weights after every step (steps x ...), to plot how they moved."""

    delta: torch.Tensor
    weights: torch.Tensor
    weight_history: torch.Tensor


def _minmax(losses, delta: torch.Tensor, w: torch.Tensor, *, eps: float, steps: int, alpha: float,
            beta: float, gamma: float, norm: str, clip) -> MinMaxResult:
    """Alternating projected descent (on delta) / ascent (on w) for

        min_delta max_{w in simplex} sum_i w_i f_i(delta) - gamma/2 ||w - 1/K||^2

    where ``f_i = -losses(delta)[..., i]`` is the attack loss of the i-th model or group (small when
    the attack succeeds), so ``w`` moves towards the *hardest* one. ``beta = 0`` keeps ``w`` fixed."""
    K = w.shape[-1]
    history = []
    for _ in range(steps):
        delta.requires_grad_(True)
        ell = losses(delta)  # (..., K), to maximise
        (grad,) = torch.autograd.grad((w * ell).sum(), delta)
        delta = clip(project(delta.detach() + alpha * _step(grad, norm), eps, norm))
        if beta > 0:
            with torch.no_grad():
                f = -losses(delta)  # attack losses at the new delta
                w = project_simplex(w + beta * (f - gamma * (w - 1.0 / K)))
        history.append(w.clone())
    hist = torch.stack(history) if history else w[None].clone()
    return MinMaxResult(delta.detach(), w.detach(), hist.detach())


def _check_models(models: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor, who: str, **kw) -> list[nn.Module]:
    if isinstance(models, nn.Module):
        models = [models]
    models = list(models.values() if isinstance(models, Mapping) else models)
    if not models:
        raise ValueError(f"{who}: the list of models is empty; give at least one model")
    classes = [check_inputs(m, x, y, who=who, **kw) for m in models]
    if len(set(classes)) > 1:
        raise ValueError(f"{who}: the models must have the same number of classes, got {classes}")
    return models


def minmax_ensemble(models: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int,
                    alpha: float | None = None, beta: float = 0.05, gamma: float = 3.0, norm: str = "linf",
                    targeted: bool = False, per_input: bool = True, loss: str = "ce") -> MinMaxResult:
    """Ensemble attack by min-max optimisation (Wang et al., 2021, "Adversarial attack generation
    empowered by min-max optimization", NeurIPS; its ensemble attack and alternating projected
    descent / ascent algorithm): for each input one ``delta`` that fools *all* K models,

        min_{||delta|| <= eps}  max_{w in simplex_K}  sum_i w_i f_i(delta) - gamma/2 ||w - 1/K||^2,

    with ``f_i`` the attack loss on model ``i`` (here minus the cross-entropy, or minus the C&W
    margin with ``loss="cw"``; targeted: of the target labels ``y``). Each step takes a PGD step on
    ``delta`` for the ``w``-weighted loss, then a projected gradient ascent step on ``w``:
    ``w <- Proj_simplex(w + beta * (f(delta) - gamma * (w - 1/K)))``. ``w`` climbs onto the models
    the attack fails on; ``gamma`` pulls it back towards the average (``gamma -> inf`` is
    :func:`average_ensemble`). ``per_input=True`` (the default, one problem per input as in the
    paper) gives every input its own ``w`` (N x K); ``per_input=False`` shares one ``w`` that weights
    the models' mean losses over the batch (it chases the hardest model on average and, with a small
    ``gamma``, tends to oscillate). The defaults ``beta=0.05, gamma=3`` were chosen on the digits
    models with cross-entropy losses (whose differences between models are of order 1-10).

    Returns a :class:`MinMaxResult`: ``delta`` (the shape of ``x``, with ``x + delta`` in [0, 1]),
    the final ``weights`` and their history. ``alpha`` defaults to ``2.5 * eps / steps``.
    """
    models = _check_models(models, x, y, "minmax_ensemble", eps=eps, steps=steps, norm=norm)
    _check_budget("minmax_ensemble", beta=beta, gamma=gamma)
    alpha = step_size("minmax_ensemble", alpha, eps, steps)
    x, y = x.detach(), y.detach()
    K = len(models)

    def losses(delta):  # N x K (per input) or K (mean over the batch)
        ell = torch.stack([_loss(m(x + delta), y, loss, targeted) for m in models], 1)
        return ell if per_input else ell.mean(0)

    w0 = torch.full((len(x), K) if per_input else (K,), 1.0 / K, device=x.device)
    return _minmax(losses, torch.zeros_like(x), w0, eps=eps, steps=steps, alpha=alpha, beta=beta, gamma=gamma,
                   norm=norm, clip=lambda d: clip_box(x, d))


def average_ensemble(models: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int,
                     alpha: float | None = None, norm: str = "linf", targeted: bool = False,
                     loss: str = "ce") -> MinMaxResult:
    """The averaging baseline of :func:`minmax_ensemble`: PGD on the mean loss of the K models
    (``w`` fixed at 1/K; the ensemble attack of Liu et al., 2017 with equal weights). Same steps,
    same step size and the same start as the min-max attack, so the two compare at equal budget."""
    return minmax_ensemble(models, x, y, eps=eps, steps=steps, alpha=alpha, beta=0.0, norm=norm,
                           targeted=targeted, loss=loss)


def minmax_universal(model: nn.Module, xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor], *, eps: float,
                     steps: int, alpha: float | None = None, beta: float = 0.05, gamma: float = 3.0,
                     norm: str = "linf", targeted: bool = False, loss: str = "ce") -> MinMaxResult:
    """One perturbation universal across K *groups* of inputs (e.g. K classes) by the same min-max
    (Wang et al., 2021, universal perturbation across inputs): ``f_i`` is the attack loss averaged
    over group ``i``, so ``w`` puts its weight on the groups the perturbation does not fool yet.
    ``beta=0`` gives the average over groups. ``delta`` has the shape of one input; apply it with
    :func:`apply_universal`."""
    xs, ys = list(xs), list(ys)
    if not xs or len(xs) != len(ys):
        raise ValueError(f"minmax_universal: need K >= 1 groups of inputs and as many label tensors, got "
                         f"{len(xs)} and {len(ys)}")
    for xg, yg in zip(xs, ys):
        check_inputs(model, xg, yg, who="minmax_universal", eps=eps, steps=steps, norm=norm)
    _check_budget("minmax_universal", beta=beta, gamma=gamma)
    alpha = step_size("minmax_universal", alpha, eps, steps)

    def losses(delta):
        return torch.stack([_loss(model((xg + delta).clamp(0, 1)), yg, loss, targeted).mean()
                            for xg, yg in zip(xs, ys)])

    w0 = torch.full((len(xs),), 1.0 / len(xs), device=xs[0].device)
    res = _minmax(losses, torch.zeros_like(xs[0][:1]), w0, eps=eps, steps=steps, alpha=alpha, beta=beta,
                  gamma=gamma, norm=norm, clip=lambda d: d)
    return res._replace(delta=res.delta[0])
