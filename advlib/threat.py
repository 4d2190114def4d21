"""The threat-model core: norms, balls, margins and the checks every public function shares.

A threat model of the course is an Lp ball intersected with the image box,

    S(x0) = { x : ||x - x0||_p <= eps,  x_min <= x <= x_max },      p in {inf, 2, 1},

and a question about the labels inside it. Attacks search S (:mod:`advlib.attacks`), certificates
bound a network over it (:mod:`advlib.verify`), and every later part reuses the same pieces, which
live here and nowhere else:

* norms by name (:func:`parse_norm`), their order and dual order (Hölder: ``1/p + 1/q = 1``),
  :func:`lp_norm` and :func:`dual_norm` per example;
* the projection onto the ball (:func:`project`, with one radius per example if wanted) and onto
  the box (:func:`clip_box`);
* the C&W margin (:func:`margin`), whose sign says whether the label changed;
* the input checks, split by concern: :func:`check_batch` (a batch of finite inputs in the box),
  :func:`check_labels`, :func:`check_budget`, :func:`check_count`, :func:`check_model_input` (the
  model accepts the batch, is in eval mode, is on its device) and their composition for attacks,
  :func:`check_inputs`. Each says what is wrong and how to fix it;
* :func:`chunks`, the one rule for splitting a batch into memory-sized pieces.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["NORMS", "MEMORY_BUDGET", "parse_norm", "order", "dual_order", "lp_norm", "dual_norm", "project",
           "clip_box", "per_example", "margin", "check_batch", "check_labels", "check_budget", "check_count",
           "check_input_shape", "check_model_input", "check_inputs", "require_eval", "frozen", "n_classes", "chunks"]

#: the threat models of the course, by name
NORMS = ("linf", "l2", "l1")
#: floats one piece of batched work may hold in its largest tensor (2**25 floats = 128 MB in float32)
MEMORY_BUDGET = 2 ** 25

_NAMES = {"linf": "linf", "inf": "linf", "l_inf": "linf", "l2": "l2", "2": "l2", "l1": "l1", "1": "l1",
          "l0": "l0", "0": "l0"}
_ORDER = {"linf": math.inf, "l2": 2.0, "l1": 1.0, "l0": 0.0}
_DUAL = {"linf": 1.0, "l2": 2.0, "l1": math.inf}


# --------------------------------------------------------------------------------------------- norms
def parse_norm(norm, who: str = "advlib", allowed: tuple[str, ...] = NORMS) -> str:
    """The canonical name (``"linf"``, ``"l2"``, ``"l1"``) of a norm given by name or order
    (``"linf"``, ``"inf"``, ``math.inf``, ``2``, ``"l2"``, ``1``, ...). ``allowed`` limits the choice
    (``"l0"`` too for distortions); anything else is an error naming the choices."""
    key = "inf" if isinstance(norm, float) and math.isinf(norm) and norm > 0 else norm
    if isinstance(key, (int, float)) and not isinstance(key, bool) and float(key).is_integer():
        key = str(int(key))
    name = _NAMES.get(str(key).strip().lower()) if isinstance(key, (str, int)) else None
    if name not in allowed:
        raise ValueError(f"{who}: norm must be one of {allowed} (or their orders, e.g. math.inf or 2), got {norm!r}")
    return name


def order(norm) -> float:
    """The ``p`` of an Lp norm: ``inf``, 2, 1 (or 0 for the count ``l0``)."""
    return _ORDER[parse_norm(norm, "order", NORMS + ("l0",))]


def dual_order(norm) -> float:
    """The ``q`` with ``1/p + 1/q = 1`` (Hölder): ``max_{||d||_p <= eps} a.d = eps ||a||_q``.
    L-inf pairs with L1, L2 with itself, L1 with L-inf."""
    return _DUAL[parse_norm(norm, "dual_order")]


def lp_norm(delta: torch.Tensor, p) -> torch.Tensor:
    """Per-example norm of a batch (all dimensions after the first): ``p`` a name (``"linf"``,
    ``"l2"``, ``"l1"``, ``"l0"``) or an order (``inf``, 2, 1, 0). L0 counts the non-zero entries."""
    q = order(p)
    flat = delta.flatten(1)
    if q == 0:
        return (flat != 0).sum(1).to(flat.dtype)
    if math.isinf(q):  # the same value as vector_norm(ord=inf), many times faster on CPUs
        return flat.abs().amax(1)
    return torch.linalg.vector_norm(flat, ord=q, dim=1)


def dual_norm(a: torch.Tensor, norm, start_dim: int = 1) -> torch.Tensor:
    """``||a||_q`` over the dimensions from ``start_dim`` on, ``q`` the dual order of ``norm``: the
    largest change ``a.d`` over ``||d||_p <= 1`` (gradients, rows of a linear bound)."""
    return torch.linalg.vector_norm(a.flatten(start_dim), ord=dual_order(norm), dim=-1)


def per_example(eps, like: torch.Tensor) -> torch.Tensor | float:
    """A radius as a number, or as a tensor broadcastable against the batch ``like``."""
    if isinstance(eps, torch.Tensor) and eps.dim() > 0:
        return eps.to(like).view(-1, *([1] * (like.dim() - 1)))
    return float(eps)


def _project_l1(flat: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Euclidean projection onto the L1 ball (Duchi et al., 2008, Fig. 1): soft-threshold by the
    smallest theta with ``sum(max(|v| - theta, 0)) <= eps``, found by sorting. ``eps``: N x 1."""
    inside = flat.abs().sum(1, keepdim=True) <= eps
    u = flat.abs().sort(1, descending=True).values
    css = u.cumsum(1)
    k = torch.arange(1, u.shape[1] + 1, device=u.device, dtype=u.dtype)
    rho = ((u - (css - eps) / k) > 0).to(u.dtype).cumsum(1).argmax(1, keepdim=True)  # last index where it holds
    theta = ((css.gather(1, rho) - eps) / (rho + 1)).clamp(min=0)
    return torch.where(inside, flat, flat.sign() * (flat.abs() - theta).clamp(min=0))


def project(delta: torch.Tensor, eps, norm) -> torch.Tensor:
    """The closest point to ``delta`` in the ball ``||delta||_p <= eps``, per example. ``eps`` is a
    number or one radius per example (a tensor of length N)."""
    norm = parse_norm(norm, "project")
    e = per_example(eps, delta)
    if norm == "linf":
        return torch.maximum(torch.minimum(delta, e), -e) if isinstance(e, torch.Tensor) else delta.clamp(-e, e)
    n = lp_norm(delta, norm).view(-1, *([1] * (delta.dim() - 1)))
    e = torch.as_tensor(e, dtype=delta.dtype, device=delta.device).expand_as(n)
    if norm == "l2":
        return delta * torch.where(n > e, e / n.clamp(min=1e-12), torch.ones_like(n))
    return _project_l1(delta.flatten(1), e.flatten(1)[:, :1]).view_as(delta)


def clip_box(x: torch.Tensor, delta: torch.Tensor, x_min=0.0, x_max=1.0) -> torch.Tensor:
    """The perturbation that ``delta`` becomes when ``x + delta`` is clipped to ``[x_min, x_max]``.
    After :func:`project` on an L-inf ball this is the exact projection onto ball ∩ box (both are
    boxes); for L2 / L1 it keeps the point feasible and inside the ball (clipping only shrinks it)."""
    return (x + delta).clamp(x_min, x_max) - x


def margin(logits: torch.Tensor, y: torch.Tensor, targeted: bool = False, kappa: float = 0.0) -> torch.Tensor:
    """The C&W margin per example (Carlini & Wagner 2017, eq. 6 / f_6), to be *minimised*:
    untargeted ``max(z_y - max_{j != y} z_j, -kappa)``, targeted ``max(max_{j != t} z_j - z_t, -kappa)``.
    With ``kappa = inf`` it is the plain gap, ``< 0`` exactly when the label changed (reached ``t``)."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], -torch.inf).amax(1)
    gap = (other - z_y) if targeted else (z_y - other)
    return gap if math.isinf(kappa) else gap.clamp(min=-kappa)


# --------------------------------------------------------------------------------------------- checks
def check_batch(x, who: str, *, x_min=0.0, x_max=1.0) -> None:
    """``x`` must be a non-empty floating-point batch ``N x ...`` of finite inputs in ``[x_min, x_max]``
    (numbers or tensors like ``x``; ``None`` skips that side)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{who}: x must be a torch.Tensor batch N x C x H x W, got {type(x).__name__}; "
                         "convert with torch.as_tensor(x, dtype=torch.float32)")
    if not x.is_floating_point():
        hint = (" (8-bit images: x.float() / 255)" if x.dtype == torch.uint8 else "")
        raise ValueError(f"{who}: x must be floating point with values in [0, 1], got dtype {x.dtype}; "
                         f"convert it{hint}")
    if x.dim() < 2:
        raise ValueError(f"{who}: x must be a batch N x ..., got shape {tuple(x.shape)}; "
                         "a single input needs a batch dimension: x[None]")
    if len(x) == 0:
        raise ValueError(f"{who}: x is an empty batch (shape {tuple(x.shape)}); pass at least one input")
    if isinstance(x_min, (int, float)) and isinstance(x_max, (int, float)):
        lo, hi = torch.aminmax(x)  # the common case in one pass; NaN and inf fail it and get the checks below
        if bool((lo >= x_min - 1e-6) & (hi <= x_max + 1e-6)):
            return
    bad = ~torch.isfinite(x)
    if bad.any():
        rows = bad.flatten(1).any(1).nonzero().flatten()
        raise ValueError(f"{who}: x contains NaN or infinite values ({int(bad.sum())} entries, in inputs "
                         f"{rows[:5].tolist()}{' ...' if len(rows) > 5 else ''}); remove or repair them first")
    for name, bound, worse in (("x_min", x_min, torch.lt), ("x_max", x_max, torch.gt)):
        if bound is None:
            continue
        b = torch.as_tensor(bound, dtype=x.dtype, device=x.device)
        tol = 1e-6 if name == "x_max" else -1e-6
        if worse(x, b + tol).any():
            box = f"[{x_min}, {x_max}]" if not isinstance(x_min, torch.Tensor) and not isinstance(
                x_max, torch.Tensor) else "[x_min, x_max]"
            raise ValueError(f"{who}: inputs must lie in {box}, found [{x.min().item():.3g}, {x.max().item():.3g}]; "
                             "attack raw images in [0, 1] and put any normalisation inside the model "
                             "(advlib.models.Normalize); a black box for series takes BlackBox(..., bounds=None)")


def check_labels(y, n: int, classes: int | None, who: str, name: str = "y") -> None:
    """``y`` must be a 1-D integer tensor of ``n`` labels in ``0..classes-1``."""
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or len(y) != n or y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"{who}: {name} must be a 1-D integer tensor with one label per input (x has {n} inputs, "
                         f"{name} is {getattr(y, 'dtype', type(y).__name__)} {tuple(getattr(y, 'shape', ()))})")
    if classes is not None and n and (y.min() < 0 or y.max() >= classes):
        raise ValueError(f"{who}: labels must lie in 0..{classes - 1} (the model has {classes} outputs), "
                         f"found {name} in {y.min().item()}..{y.max().item()}")


def check_budget(eps, who: str, n: int | None = None, name: str = "eps", positive: bool = False):
    """A radius (or any non-negative scalar parameter): a finite number ``>= 0`` (``> 0`` when
    ``positive``), or (given ``n``) one per input as a tensor of length ``n``. Returns it as a float,
    or as a 1-D tensor."""
    if isinstance(eps, torch.Tensor) and eps.dim() > 0:
        if n is None or eps.shape != (n,):
            raise ValueError(f"{who}: {name} must be a number or one value per input (shape ({n},)), "
                             f"got shape {tuple(eps.shape)}")
        if not torch.isfinite(eps).all() or (eps < 0).any() or (positive and (eps == 0).any()):
            raise ValueError(f"{who}: every {name} must be finite and {'> 0' if positive else '>= 0'}, got {eps}")
        return eps
    try:
        if isinstance(eps, (str, bytes)):
            raise TypeError  # a number written as text is a mistake, not a number
        value = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: {name} must be a number, got {eps!r}") from None
    if isinstance(eps, bool) or not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{who}: {name} must be a finite number {'> 0' if positive else '>= 0'}, got {eps!r}")
    return value


def check_count(v, who: str, name: str, minimum: int = 0) -> int:
    """A whole number ``>= minimum`` (steps, restarts, samples)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or v < minimum:
        raise ValueError(f"{who}: {name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def require_eval(model: nn.Module, who: str = "this function") -> None:
    """Warn and switch a model to eval mode: dropout and batch-norm statistics must not change
    while we attack or certify it."""
    if model.training:
        warnings.warn(f"{who} got a model in train mode; switching it to eval mode (call model.eval() "
                      "yourself to silence this).", stacklevel=3)
        model.eval()


@contextlib.contextmanager
def frozen(model: nn.Module):
    """Inside the block no parameter of ``model`` requires grad (each flag is restored after): a loss
    differentiates through the model to its input only, and the model's ``.grad`` stays untouched."""
    flags = [q.requires_grad for q in model.parameters()]
    for q in model.parameters():
        q.requires_grad_(False)
    try:
        yield model
    finally:
        for q, f in zip(model.parameters(), flags):
            q.requires_grad_(f)


def check_input_shape(model: nn.Module, x: torch.Tensor, who: str) -> None:
    """Without running the model: it is a module on ``x``'s device and, where it records the input
    shape it was built for (``in_shape``, set by :func:`advlib.models.build`), ``x`` is a batch of
    that shape. For code that must not switch a training model to eval mode (a training loss)."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"{who}: model must be a torch.nn.Module, got {type(model).__name__}")
    p = next(model.parameters(), None)
    if p is not None and p.device != x.device:
        raise ValueError(f"{who}: x is on {x.device} but the model is on {p.device}; move one of them "
                         f"(x.to({str(p.device)!r}))")
    expected = getattr(model, "in_shape", None)
    if expected is not None and tuple(x.shape[1:]) != tuple(expected):
        if tuple(x.shape) == tuple(expected):
            raise ValueError(f"{who}: x has shape {tuple(x.shape)}, the shape of one input of this model, not of a "
                             "batch; a single input needs a batch dimension: x[None]")
        raise ValueError(f"{who}: the model does not accept inputs of shape {tuple(x.shape[1:])}: it was built "
                         f"for {tuple(expected)} (C x H x W); resize the inputs or use a model of their size")


def check_model_input(model: nn.Module, x: torch.Tensor, who: str) -> int:
    """The model is on ``x``'s device, in eval mode (else a warning switches it), and accepts inputs of
    ``x``'s shape (:func:`check_input_shape`, then one forward pass of one input), returning a logit
    vector per input. Returns the number of classes."""
    check_input_shape(model, x, who)
    require_eval(model, who)
    try:
        with torch.no_grad():
            out = model(x[:1])
    except RuntimeError as err:
        said = str(err).splitlines()[0]
        if _accepts(model, x[None]):
            raise ValueError(f"{who}: x has shape {tuple(x.shape)}, which the model takes as one input, not a "
                             "batch; a single input needs a batch dimension: x[None]") from None
        raise ValueError(f"{who}: the model does not accept inputs of shape {tuple(x.shape[1:])} (torch says: "
                         f"{said}); give it inputs of the size and channels it was trained on (e.g. the "
                         "profile's data set)") from None
    if out.dim() != 2 or len(out) != 1:
        raise ValueError(f"{who}: the model must return logits N x K for a batch of N inputs; it returned "
                         f"shape {tuple(out.shape)} for 1 input")
    return out.shape[1]


def _accepts(model: nn.Module, x: torch.Tensor) -> bool:
    try:
        with torch.no_grad():
            return model(x[:1]).dim() == 2
    except RuntimeError:
        return False


def n_classes(model: nn.Module, x: torch.Tensor) -> int:
    """The number of outputs of ``model`` on inputs like ``x`` (one forward pass of one input)."""
    with torch.no_grad():
        return model(x[:1]).shape[1]


def check_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, *, who: str, eps=None,
                 steps: int | None = None, norm=None) -> int:
    """The checks of an attack's inputs in one call: the batch, the budget, the norm, the model and
    the labels (``None``: no labels needed). Returns the model's number of classes."""
    check_batch(x, who)
    if eps is not None:
        check_budget(eps, who, len(x))
    if steps is not None:
        check_count(steps, who, "steps")
    if norm is not None:
        parse_norm(norm, who)
    classes = check_model_input(model, x, who)
    if y is not None:
        check_labels(y, len(x), classes, who)
    return classes


# --------------------------------------------------------------------------------------------- chunks
def chunks(n: int, per_item: int, budget: int | None = None) -> Iterator[slice]:
    """Slices of ``range(n)`` such that ``len(slice) * per_item <= budget`` (at least one item each):
    how every batched computation of the library splits work that would not fit in memory at once.
    ``per_item`` is the number of floats one item puts in the largest tensor of the computation;
    ``budget`` defaults to :data:`MEMORY_BUDGET` (read at each call)."""
    budget = MEMORY_BUDGET if budget is None else budget
    size = max(1, int(budget // max(int(per_item), 1)))
    for s in range(0, n, size):
        yield slice(s, min(s + size, n))
