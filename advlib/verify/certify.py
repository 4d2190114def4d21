"""Certificates from bounds: certified inputs, certified radius by bisection, certified accuracy, and
the IBP training loss.

Every function takes ``(model, x, y=None, *, eps, norm="linf", method="crown")`` like
:func:`advlib.verify.bounds`; ``y`` are the labels to certify (``None``: the model's own predictions).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..threat import check_batch, check_budget, check_count, check_input_shape, check_labels, parse_norm
from ..train import predict
from .bounds import _checked, _other_classes, _run, margin_matrix, trace

__all__ = ["certify", "certified_radius", "certified_accuracy", "ibp_loss", "RADIUS_BRACKET"]

#: where :func:`certified_radius` starts its bisection, per norm, for inputs in [0, 1] (the bracket
#: doubles while some input is still certified at its top)
RADIUS_BRACKET = {"linf": 0.5, "l2": 4.0, "l1": 16.0}


def _margins(model, x, y, norm, method, who, eps=0.0):
    """Checked inputs and the margin matrix of ``y``, or of the predictions where ``y`` is None."""
    eps, norm, C, classes = _checked(model, x, y, eps, norm, method, None, 0.0, 1.0, who)
    if C is None:
        C = margin_matrix(predict(model, x).to(x.device), classes)
    return eps, norm, C


def certify(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, eps, norm="linf",
            method: str = "crown") -> torch.Tensor:
    """``True`` where the prediction is provably ``y`` (``None``: the model's prediction) for every
    input of the ``norm`` ball of radius ``eps`` (a number or one per input) inside [0, 1]: every
    margin ``z_y - z_j`` has a positive lower bound (:attr:`Bounds.certified`)."""
    eps, norm, C = _margins(model, x, y, norm, method, "certify", eps)
    return _run(trace(model, tuple(x.shape[1:])), x, eps, norm, method, C, certify=True).certified


def certified_radius(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, norm="linf",
                     method: str = "crown", steps: int = 15, hi: float | None = None) -> torch.Tensor:
    """The largest radius that :func:`certify` proves, per input, by bisection (CNN-Cert, Boopathy et
    al. 2019, uses 15 steps): a lower bound on the minimal adversarial distortion. 0 where ``x`` is
    misclassified (the prediction is not ``y``).

    The search starts at ``[0, hi]`` (default :data:`RADIUS_BRACKET`: 0.5 for L-inf, 4 for L2, 16
    for L1) and doubles ``hi`` while some input is still certified at it. The result is within
    ``hi / 2**steps`` below the largest radius the method can certify.
    """
    _, norm, C = _margins(model, x, y, norm, method, "certified_radius")
    steps = check_count(steps, "certified_radius", "steps", 1)
    hi = RADIUS_BRACKET[norm] if hi is None else check_budget(hi, "certified_radius", name="hi", positive=True)
    nodes = trace(model, tuple(x.shape[1:]))

    def ok(eps: torch.Tensor) -> torch.Tensor:
        return _run(nodes, x, eps, norm, method, C, certify=True).certified

    correct = ok(torch.zeros(len(x), device=x.device, dtype=x.dtype))
    top = torch.full((len(x),), hi, device=x.device, dtype=x.dtype)
    for _ in range(20):  # grow the bracket where needed (rarely more than once)
        grow = correct & ok(top)
        if not grow.any():
            break
        top = torch.where(grow, 2 * top, top)
    lo, up = torch.zeros_like(top), top
    for _ in range(steps):
        mid = (lo + up) / 2
        good = ok(mid)
        lo, up = torch.where(good, mid, lo), torch.where(good, up, mid)
    return torch.where(correct, lo, torch.zeros_like(lo))


def certified_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps, norm="linf",
                       method: str = "crown") -> float:
    """The fraction of inputs whose prediction is certified *correct* on the whole ``eps`` ball: a
    lower bound on the robust accuracy (an attack's robust accuracy is an upper bound)."""
    if y is None:
        raise ValueError("certified_accuracy: needs the true labels y (certify(...) certifies predictions)")
    eps, norm, C = _margins(model, x, y, norm, method, "certified_accuracy", eps)
    return _run(trace(model, tuple(x.shape[1:])), x, eps, norm, method, C, certify=True).certified.float().mean().item()


def ibp_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps, kappa: float = 0.5,
             norm="linf") -> torch.Tensor:
    """The IBP training loss (Gowal et al., 2018, eq. 12):
    ``kappa * CE(f(x), y) + (1 - kappa) * CE(z_worst, y)``, where ``z_worst`` puts the IBP lower
    bound of each margin ``z_y - z_j`` in place of the logit gap (``z_worst_y = 0``,
    ``z_worst_j = -lower_j``). Differentiable: use it as the ``loss`` of :func:`advlib.train.fit`.
    The model may be in train mode (IBP has no statistics to protect if it has no batch norm).
    """
    check_batch(x, "ibp_loss")
    check_input_shape(model, x, "ibp_loss")  # no forward probe: the model may be training
    eps = check_budget(eps, "ibp_loss", len(x))
    norm = parse_norm(norm, "ibp_loss")
    if not 0 <= kappa <= 1:
        raise ValueError(f"ibp_loss: kappa must lie in [0, 1], got {kappa}")
    try:
        logits = model(x)
    except RuntimeError as err:
        raise ValueError(f"ibp_loss: the model does not accept inputs of shape {tuple(x.shape[1:])} (torch says: "
                         f"{str(err).splitlines()[0]})") from None
    check_labels(y, len(x), logits.shape[1], "ibp_loss")
    eps_t = torch.as_tensor(eps, device=x.device, dtype=x.dtype).expand(len(x))
    lower = _run(trace(model, tuple(x.shape[1:])), x, eps_t, norm, "ibp", margin_matrix(y, logits.shape[1])).lower
    worst = torch.zeros_like(logits).scatter(1, _other_classes(y, logits.shape[1]), -lower)
    return kappa * F.cross_entropy(logits, y) + (1 - kappa) * F.cross_entropy(worst, y)
