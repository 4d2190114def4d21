"""Helpers of lecture 31 (evaluating defenses): a model that saturates its own softmax, the checklist
table, and the exercise checks (a straight-through BPDA, an EOT gradient, the DLR loss).

The three exercises are the three tools of an adaptive evaluation:

* BPDA (Athalye, Carlini & Wagner 2018, Section 4.1): forward through a transform ``g``, backward
  as if ``g`` were the identity: ``x + (g(x) - x).detach()``.
* EOT (Athalye et al. 2018, Section 4.2): the gradient of the *expected* loss over a random
  transform, ``E_t grad_x L(f(t(x)), y)``, estimated by the mean over ``k`` draws.
* The Difference of Logits Ratio (Croce & Hein 2020, eq. 4), the loss of APGD that a rescaling of
  the logits cannot hide from: ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .exercises import ExerciseError, attempt

__all__ = ["ScaledLogits", "checklist_table", "reference_eot_gradient", "check_straight_through", "check_eot_gradient",
           "check_dlr"]


class ScaledLogits(nn.Module):
    """``model``'s logits times ``scale`` (> 0): the same predictions, a softmax saturated to 0 and 1
    in float32 once the scale is large, hence a cross-entropy whose input gradient vanishes (the
    effect of defensive distillation at test time; Carlini & Wagner 2016, "Defensive distillation is
    not robust to adversarial examples"). Keeps the inner model's ``in_shape``."""

    def __init__(self, model: nn.Module, scale: float):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise ValueError(f"ScaledLogits: model must be a torch.nn.Module, got {type(model).__name__}")
        if not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and 0 < scale < float("inf")):
            raise ValueError(f"ScaledLogits: scale must be a positive finite number, got {scale!r}")
        self.model, self.scale = model, float(scale)
        if hasattr(model, "in_shape"):
            self.in_shape = model.in_shape
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.scale


def checklist_table(rows: Sequence[tuple], models: Sequence[str]) -> str:
    """A printable table of checks: ``rows`` holds ``(check, [(measured, passed), ...])`` with one
    ``(measured text, bool)`` per model of ``models``; a passed check shows ``ok``, a failed one
    ``FAIL``."""
    models = list(models)
    for check, cells in rows:
        if len(cells) != len(models):
            raise ValueError(f"checklist_table: the row {check!r} has {len(cells)} cells for {len(models)} models")
    cw = max([len("check")] + [len(check) for check, _ in rows])
    widths = [max([len(m)] + [len(cells[i][0]) + 6 for _, cells in rows]) for i, m in enumerate(models)]
    lines = [f"{'check':<{cw}}  " + "  ".join(f"{m:<{w}}" for m, w in zip(models, widths))]
    lines.append("-" * len(lines[0]))
    for check, cells in rows:
        lines.append(f"{check:<{cw}}  " + "  ".join(f"{text:<{w - 6}}  {'ok' if ok else 'FAIL':<4}"
                                                   for (text, ok), w in zip(cells, widths)))
    return "\n".join(lines)


def reference_eot_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, transform, samples: int) -> torch.Tensor:
    """The EOT gradient of Exercise 2 (Athalye et al. 2018, Section 4.2): per example, the mean over
    ``samples`` draws of ``grad_x CE(model(transform(x_i)), y_i)``, all draws in one batch (the
    batch repeated ``samples`` times). What the lecture uses while the exercise is a stub."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"reference_eot_gradient: samples must be an integer >= 1, got {samples!r}")
    x_rep = x.detach().repeat(samples, *[1] * (x.dim() - 1)).requires_grad_(True)
    loss = F.cross_entropy(model(transform(x_rep)), y.repeat(samples), reduction="sum")
    (g,) = torch.autograd.grad(loss, x_rep)
    return g.view(samples, *x.shape).mean(0)


# ------------------------------------------------------------------------------------------ exercise 1
def _bits3(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x * 7) / 7


def _affine(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x + 0.25


def check_straight_through(straight_through, *, strict: bool = False) -> None:
    """``straight_through(transform)`` must return a function ``x -> transform(x)`` whose backward pass
    is the identity's (BPDA with ``g(x) ~ x``; Athalye et al. 2018, Section 4.1): the forward value
    is exactly ``transform(x)``, and the gradient of ``sum(w * out)`` with respect to ``x`` is ``w``
    whatever ``transform`` is. Tested on a 3-bit rounding (gradient 0 everywhere) and on an affine map
    ``x/2 + 1/4`` (gradient ``w / 2``), on batches of two shapes and dtypes."""

    def check():
        g = torch.Generator().manual_seed(11)
        cases = [(torch.rand(6, 1, 8, 8, generator=g), _bits3, "3-bit rounding"),
                 (torch.rand(4, 3, 5, 5, generator=g, dtype=torch.float64), _affine, "the affine map x/2 + 1/4"),
                 (torch.rand(5, 10, generator=g), _bits3, "3-bit rounding")]
        for x0, transform, what in cases:
            st = straight_through(transform)
            if not callable(st):
                raise ExerciseError(f"straight_through(transform) must return a function x -> tensor, got "
                                    f"{type(st).__name__}. Hint: def apply(x): ...; return apply.")
            x = x0.clone().requires_grad_(True)
            out = st(x)
            want = transform(x0)
            if not isinstance(out, torch.Tensor) or out.shape != want.shape:
                raise ExerciseError(f"on {what}: expected a tensor of shape {tuple(want.shape)}, got "
                                    f"{getattr(out, 'shape', type(out).__name__)}")
            if not torch.equal(x.detach(), x0):
                raise ExerciseError("your function changed its input in place; leave x as it is")
            if not torch.allclose(out.detach(), want, atol=1e-6):
                if torch.allclose(out.detach(), x0, atol=1e-6):
                    raise ExerciseError(f"on {what}: the forward value is x itself. BPDA keeps the forward pass: the "
                                        "defended model must see transform(x); only the gradient pretends g(x) = x.")
                raise ExerciseError(f"on {what}: the forward value must be exactly transform(x) (largest gap "
                                    f"{(out.detach() - want).abs().max():.3g}).")
            if not out.requires_grad:
                raise ExerciseError(f"on {what}: the output does not require grad, so no gradient reaches x. Hint: "
                                    "detach only the *difference* transform(x) - x and add x back: the x outside "
                                    "the detach carries the gradient.")
            w = torch.randn(want.shape, generator=g, dtype=x0.dtype)
            (grad,) = torch.autograd.grad((out * w).sum(), x, allow_unused=True)
            grad = torch.zeros_like(x0) if grad is None else grad
            if torch.allclose(grad, w, atol=1e-5):
                continue
            if grad.abs().max() == 0:
                raise ExerciseError(f"on {what}: the gradient is zero: that is the rounding's own gradient, which "
                                    "is what masks the defense. Replace it by the identity's.")
            if torch.allclose(grad, 0.5 * w, atol=1e-5):
                raise ExerciseError(f"on {what}: the gradient is the transform's own (w / 2), not the identity's. "
                                    "Hint: detach the transform's output, x + (transform(x) - x).detach().")
            if torch.allclose(grad, 1.5 * w, atol=1e-5):
                raise ExerciseError(f"on {what}: the gradient is the identity's plus the transform's own. Detach "
                                    "the transform: x + (transform(x) - x).detach().")
            raise ExerciseError(f"on {what}: the gradient of sum(w * out) with respect to x should be w itself "
                                "(the identity's Jacobian).")

    attempt(check, title="straight-through BPDA", strict=strict)


# ------------------------------------------------------------------------------------------ exercise 2
class _Recorder:
    """A random affine transform ``t(x) = a x + b`` (``a`` per row in [0.5, 1.5], ``b`` per entry,
    Gaussian of scale 0.2) that keeps every batch it transformed and the draws it used."""

    def __init__(self, seed: int):
        self.gen = torch.Generator().manual_seed(seed)
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            raise ExerciseError(f"the transform takes a batch (N x ...), got {getattr(x, 'shape', type(x).__name__)}")
        n = len(x)
        a = (0.5 + torch.rand(n, generator=self.gen, dtype=x.dtype)).view(n, *[1] * (x.dim() - 1))
        b = 0.2 * torch.randn(x.shape, generator=self.gen, dtype=x.dtype)
        self.calls.append((x.detach().clone(), a, b))
        return a * x + b


def _linear_model(seed: int = 12, d: int = 16, k: int = 5) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(d, k)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(k, d, generator=g))
        model[1].bias.copy_(torch.randn(k, generator=g))
    return model


def _ce_grad(model: nn.Module, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d CE(model(z_i), y_i) / d z_i for every row (summed losses: per-row gradients)."""
    z = z.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(z), y, reduction="sum"), z)
    return g


def check_eot_gradient(eot_gradient, *, strict: bool = False) -> None:
    """``eot_gradient(model, x, y, transform, samples)`` must return, for every example ``x_i`` of the
    batch, the mean over ``samples`` random draws ``t_j`` of ``grad_x CE(model(t_j(x_i)), y_i)``, the
    EOT estimate of the gradient of the expected loss (Athalye et al. 2018, Section 4.2), with all
    ``N * samples`` draws in one call of ``transform`` (the batch repeated ``samples`` times).

    The check replays the answer: its transform records each batch it got and the draws it made
    (a random affine map ``a x + b``), so the right answer for *those* draws is known exactly."""

    def check():
        model = _linear_model()
        g = torch.Generator().manual_seed(13)
        n, samples = 4, 6
        x = torch.rand(n, 1, 4, 4, generator=g)
        y = torch.randint(0, 5, (n,), generator=g)
        rec = _Recorder(14)
        got = eot_gradient(model, x.clone(), y.clone(), rec, samples)
        if not isinstance(got, torch.Tensor) or got.shape != x.shape:
            raise ExerciseError(f"expected one gradient per example, a tensor of the shape of x {tuple(x.shape)}, "
                                f"got {getattr(got, 'shape', type(got).__name__)}")
        if got.requires_grad:
            raise ExerciseError("the result still requires grad: return the gradient detached "
                                "(torch.autograd.grad gives it detached already).")
        if not rec.calls:
            raise ExerciseError("the transform was never called: EOT averages over random draws of the transform, "
                                "model(transform(x_rep)).")
        if len(rec.calls) > 1:
            raise ExerciseError(f"the transform was called {len(rec.calls)} times: repeat the batch samples times "
                                "(x.repeat(samples, 1, 1, 1)) and transform all N * samples copies in one call.")
        inp, a, b = rec.calls[0]
        # which example each transformed row is a copy of
        match = (inp.flatten(1)[:, None] == x.flatten(1)[None]).all(-1)
        if not match.any(1).all():
            raise ExerciseError("the transform got rows that are not copies of the examples of x: apply it to x "
                                "itself, repeated, not to a perturbed or normalised x.")
        owner = match.float().argmax(1)
        counts = torch.bincount(owner, minlength=n)
        if not (counts == samples).all():
            raise ExerciseError(f"the transform drew {counts.tolist()} transformations per example; it must draw "
                                f"samples = {samples} for each.")
        per_row = a * _ce_grad(model, a * inp + b, y[owner])  # chain rule through t(x) = a x + b
        want = torch.zeros_like(x).index_add_(0, owner, per_row) / samples
        if torch.allclose(got, want, atol=1e-5, rtol=1e-4):
            pass
        elif torch.allclose(got, want * samples, atol=1e-5, rtol=1e-4):
            raise ExerciseError(f"your gradient is samples = {samples} times too large: average over the draws "
                                "(divide the sum by samples), do not sum.")
        elif any(torch.allclose(got * f, want, atol=1e-5, rtol=1e-4) for f in (n, n * samples)):
            raise ExerciseError("your gradient is too small by a factor of the batch size: the cross-entropy was "
                                "averaged over the batch. Each example needs the gradient of its own loss: "
                                "reduction='sum' (then divide by samples).")
        elif torch.allclose(got, -want, atol=1e-5, rtol=1e-4):
            raise ExerciseError("wrong sign: this is the gradient of the loss the attacker ascends, "
                                "+grad_x CE(model(t(x)), y).")
        else:
            xr = inp.detach().requires_grad_(True)
            logp = F.log_softmax(model(a * xr + b), 1)
            mean_logp = torch.zeros(n, logp.shape[1]).index_add_(0, owner, logp) / samples
            (alt,) = torch.autograd.grad(F.nll_loss(mean_logp, y, reduction="sum"), xr)
            alt = torch.zeros_like(x).index_add_(0, owner, alt)
            if any(torch.allclose(got, alt / f, atol=1e-5, rtol=1e-4) for f in (1, samples)):
                raise ExerciseError("that is the gradient of the loss of the averaged prediction; EOT averages the "
                                    "gradients (the gradient of the expected loss): CE per draw, then the mean.")
            raise ExerciseError(f"with the draws your transform made, the EOT gradient of the first example is "
                                f"{want[0].flatten()[:3].tolist()}..., got {got[0].flatten()[:3].tolist()}... Hint: "
                                "x_rep = x.repeat(samples, ...) with requires_grad, loss = CE(model(transform(x_rep)), "
                                "y.repeat(samples), reduction='sum'), then sum the gradient's samples copies of each "
                                "example and divide by samples.")
        # a second call draws afresh (EOT needs new draws at every step)
        rec2 = _Recorder(15)
        eot_gradient(model, x.clone(), y.clone(), rec2, 1)
        if len(rec2.calls) != 1 or len(rec2.calls[0][0]) != n:
            raise ExerciseError(f"with samples = 1 the transform should get the batch once ({n} rows).")

    attempt(check, title="EOT gradient", strict=strict)


# ------------------------------------------------------------------------------------------ exercise 3
def _dlr_reference(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """First principles, one example at a time (eq. 4 of Croce & Hein 2020)."""
    out = []
    for row, t in zip(z.tolist(), y.tolist()):
        s = sorted(row, reverse=True)
        other = max(v for j, v in enumerate(row) if j != t)
        out.append(-(row[t] - other) / (s[0] - s[2] + 1e-12))
    return torch.tensor(out, dtype=z.dtype)


def check_dlr(dlr, *, strict: bool = False) -> None:
    """``dlr(logits, y)`` must return, per example, the Difference of Logits Ratio (Croce & Hein 2020,
    eq. 4), the loss an attacker *maximises*: ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)``,
    ``pi`` sorting the logits in decreasing order. Compared with a first-principles loop, and for
    invariance to ``z + c`` and ``a z`` (``a > 0``)."""

    def check():
        g = torch.Generator().manual_seed(16)
        for n, k in ((30, 10), (9, 4)):
            z = torch.randn(n, k, generator=g, dtype=torch.float64) * 3
            y = torch.randint(0, k, (n,), generator=g)
            z[0, y[0]] = z[0].max() + 1.0  # one example with the true class on top
            z[1] = 0.5  # a tie everywhere except one logit
            z[1, 0] = 2.0
            want = _dlr_reference(z, y)
            got = dlr(z.clone(), y.clone())
            if not isinstance(got, torch.Tensor) or got.shape != (n,):
                raise ExerciseError(f"expected one loss per example, a tensor of shape ({n},), got "
                                    f"{getattr(got, 'shape', type(got).__name__)}")
            got = got.to(torch.float64)
            if torch.allclose(got, want, atol=1e-6, rtol=1e-5):
                continue
            if torch.allclose(got, -want, atol=1e-6, rtol=1e-5):
                raise ExerciseError("the sign is flipped: DLR is the loss the attacker maximises, positive exactly "
                                    "when a wrong class is on top: -(z_y - max_{i != y} z_i) / (...).")
            s = z.sort(1, descending=True).values
            z_y = z.gather(1, y[:, None]).squeeze(1)
            other = z.masked_fill(F.one_hot(y, k).bool(), -torch.inf).amax(1)
            if torch.allclose(got, -(z_y - other), atol=1e-6, rtol=1e-5):
                raise ExerciseError("that is the margin without the denominator: it changes when the logits are "
                                    "rescaled. Divide by z_pi1 - z_pi3 (the largest minus the third largest logit).")
            if torch.allclose(got, -(z_y - other) / (s[:, 0] - s[:, 1] + 1e-12), atol=1e-6, rtol=1e-5):
                raise ExerciseError("the denominator is z_pi1 - z_pi3, the largest minus the *third* largest logit "
                                    "(the second largest can equal z_y's rival and make it zero).")
            if torch.allclose(got, -(z_y - s[:, 0]) / (s[:, 0] - s[:, 2] + 1e-12), atol=1e-6, rtol=1e-5):
                raise ExerciseError("the max must leave out the true class: max_{i != y} z_i. With y included the "
                                    "loss is 0 whenever the model is right, and the attack has nothing to climb.")
            raise ExerciseError(f"wrong value, e.g. {got[2].item():.4f} instead of {want[2].item():.4f}. Hint: "
                                "z_y = z.gather(1, y[:, None]); the best other logit is the max with z_y masked to "
                                "-inf; s = z.sort(1, descending=True).values gives z_pi1 = s[:, 0], z_pi3 = s[:, 2].")
        z = torch.randn(12, 10, generator=g, dtype=torch.float64)
        y = torch.randint(0, 10, (12,), generator=g)
        base = dlr(z.clone(), y.clone()).to(torch.float64)
        for changed, what in ((z + 7.0, "adding 7 to every logit"), (z * 50.0, "multiplying the logits by 50")):
            if not torch.allclose(dlr(changed, y.clone()).to(torch.float64), base, atol=1e-6, rtol=1e-5):
                raise ExerciseError(f"{what} changed your loss; DLR is invariant to both.")

    attempt(check, title="DLR loss", strict=strict)
