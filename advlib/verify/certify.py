"""Certificates from bounds: certified radius by bisection, certified accuracy, the IBP training loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .bounds import _other_classes, _propagate_chunk, margin_matrix, propagate, trace

__all__ = ["certify", "certified_radius", "certified_accuracy", "ibp_loss"]


def certify(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps, norm: str = "linf",
            method: str = "crown") -> torch.Tensor:
    """``True`` where the prediction is provably ``y`` on the whole ball: every margin
    ``z_y - z_j`` has a positive lower bound."""
    n_classes = _n_classes(model, x)
    lower = propagate(model, x, eps, norm, method, C=margin_matrix(y, n_classes)).lower
    return (lower > 0).all(1)


def certified_radius(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str = "linf",
                     method: str = "crown", steps: int = 15, hi: float | None = None) -> torch.Tensor:
    """The largest ``eps`` that :func:`certify` proves, per sample, by bisection (CNN-Cert uses
    15 steps): a lower bound on the minimal adversarial distortion. 0 where ``x`` is misclassified.

    The search starts at ``[0, hi]`` (default 0.5 for L-inf, 4 for L2, 16 for L1) and doubles ``hi``
    while some sample is still certified at it. The result is within ``hi / 2**steps`` below the
    largest radius the method can certify.
    """
    if steps < 1:
        raise ValueError(f"certified_radius: steps must be >= 1, got {steps}")
    hi = {"linf": 0.5, "l2": 4.0, "l1": 16.0}.get(norm, 1.0) if hi is None else float(hi)
    if not hi > 0:
        raise ValueError(f"certified_radius: hi must be > 0, got {hi}")
    nodes = trace(model, tuple(x.shape[1:]))
    C = margin_matrix(y, _n_classes(model, x))

    def ok(eps):
        return (propagate(model, x, eps, norm, method, C=C, nodes=nodes).lower > 0).all(1)

    correct = ok(torch.zeros(len(x), device=x.device))
    top = torch.full((len(x),), hi, device=x.device)
    for _ in range(20):  # grow the bracket where needed (rarely more than once)
        grow = correct & ok(top)
        if not grow.any():
            break
        top = torch.where(grow, 2 * top, top)
    lo, hi_ = torch.zeros_like(top), top
    for _ in range(steps):
        mid = (lo + hi_) / 2
        good = ok(mid)
        lo, hi_ = torch.where(good, mid, lo), torch.where(good, hi_, mid)
    return torch.where(correct, lo, torch.zeros_like(lo))


def certified_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = "linf",
                       method: str = "crown", batch_size: int = 500) -> float:
    """Fraction of samples whose prediction is certified correct on the whole ``eps`` ball."""
    if len(x) == 0:
        raise ValueError("certified_accuracy of an empty set is undefined")
    hits = sum(certify(model, x[i:i + batch_size], y[i:i + batch_size], eps, norm, method).sum().item()
               for i in range(0, len(x), batch_size))
    return hits / len(x)


def ibp_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, kappa: float = 0.5,
             norm: str = "linf") -> torch.Tensor:
    """The IBP training loss (Gowal et al., 2018, eq. 12):
    ``kappa * CE(f(x), y) + (1 - kappa) * CE(z_worst, y)``, where ``z_worst`` puts the IBP lower
    bound of each margin ``z_y - z_j`` in place of the logit gap (``z_worst_y = 0``,
    ``z_worst_j = -lower_j``). Differentiable: use it as the ``loss`` of :func:`advlib.train.fit`.
    """
    logits = model(x)  # the model may be in train mode here: IBP does not care (no batch norm in training)
    eps_t = torch.full((len(x),), float(eps), device=x.device, dtype=x.dtype)
    nodes = trace(model, tuple(x.shape[1:]))
    C = margin_matrix(y, logits.shape[1])
    lower = _propagate_chunk(nodes, x, eps_t, norm, "ibp", C, None, 0.0, 1.0).lower
    worst = torch.zeros_like(logits).scatter(1, _other_classes(y, logits.shape[1]), -lower)
    return kappa * F.cross_entropy(logits, y) + (1 - kappa) * F.cross_entropy(worst, y)


def _n_classes(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        return model(x[:1]).shape[1]
