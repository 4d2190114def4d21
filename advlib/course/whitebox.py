"""Checks and figures of lecture 01 (white-box attacks: from FGSM to PGD)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .exercises import ExerciseError, attempt

__all__ = ["check_project_l2", "check_fgsm", "check_targeted_margin", "unit_balls"]


def _shape_error(got, want: torch.Tensor, what: str) -> ExerciseError | None:
    if not isinstance(got, torch.Tensor) or got.shape != want.shape:
        return ExerciseError(f"{what}: expected a tensor of shape {tuple(want.shape)}, got "
                             f"{getattr(got, 'shape', type(got).__name__)}")
    return None


def check_project_l2(project_l2, *, strict: bool = False) -> None:
    """``project_l2(delta, eps)`` must return, for each example of the batch ``delta`` (N x ...),
    the closest point of the L2 ball of radius ``eps``: unchanged inside, scaled onto the sphere
    outside."""

    def check():
        g = torch.Generator().manual_seed(3)
        batches = [torch.randn(8, 1, 8, 8, generator=g) * torch.linspace(0.01, 0.5, 8).view(-1, 1, 1, 1),
                   torch.randn(5, 3, 4, 4, generator=g), torch.zeros(2, 1, 4, 4)]
        for delta in batches:
            for eps in (0.0, 0.5, 1.5, 100.0):
                n = delta.flatten(1).norm(dim=1).view(-1, *[1] * (delta.dim() - 1))
                want = delta * torch.where(n > eps, eps / n.clamp(min=1e-12), torch.ones_like(n))
                got = project_l2(delta.clone(), eps)
                if err := _shape_error(got, want, f"eps={eps}"):
                    raise err
                if torch.isnan(got).any():
                    raise ExerciseError(f"eps={eps}: the result has NaNs. Hint: a zero perturbation has norm 0 — "
                                        "do not divide by it (clamp the norm, or leave points inside alone).")
                if torch.allclose(got, want, atol=1e-5):
                    continue
                got_n = got.flatten(1).norm(dim=1)
                inside = n.flatten() <= eps
                if (got_n > eps * (1 + 1e-4) + 1e-6).any():
                    raise ExerciseError(f"eps={eps}: some results have L2 norm {got_n.max():.3f} > eps. Hint: the "
                                        "norm is per example — flatten all but the batch dimension.")
                if inside.any() and not torch.allclose(got[inside], delta[inside], atol=1e-5):
                    raise ExerciseError(f"eps={eps}: a perturbation that was already inside the ball moved. Hint: "
                                        "the closest point of the ball to a point inside it is the point itself; "
                                        "only rescale the examples whose own norm exceeds eps.")
                raise ExerciseError(f"eps={eps}: inside the ball but not the closest point. Hint: outside, keep "
                                    "the direction and shrink the length to eps: delta * eps / ||delta||_2.")
            once = project_l2(delta.clone(), 0.5)
            if not torch.allclose(project_l2(once.clone(), 0.5), once, atol=1e-5):
                raise ExerciseError("projecting twice should change nothing (a projection is idempotent)")

    attempt(check, title="L2 projection", strict=strict)


def _linear_probe(seed: int = 4):
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(10, 64, generator=g) * 0.5)
        model[1].bias.copy_(torch.randn(10, generator=g))
    x = torch.rand(16, 1, 8, 8, generator=g)
    x[:, :, :2] = x[:, :, :2].round()  # pixels exactly at 0 and 1, as in the digits
    y = torch.randint(0, 10, (16,), generator=g)
    return model, x, y


def check_fgsm(fgsm, *, strict: bool = False) -> None:
    """``fgsm(model, x, y, eps)`` must return ``clip_[0,1](x + eps * sign(grad_x CE(model(x), y)))``
    (untargeted, one step). Tested on a linear model, whose input gradient is known in closed form:
    ``W^T (softmax(Wx + b) - onehot(y))``."""

    def check():
        model, x, y = _linear_probe()
        W, b = model[1].weight.detach(), model[1].bias.detach()
        p = (x.flatten(1) @ W.T + b).softmax(1)
        grad = ((p - F.one_hot(y, 10)) @ W).view_as(x)  # d CE / dx, first principles
        for eps in (0.0, 0.05, 0.3):
            want = (x + eps * grad.sign()).clamp(0, 1)
            got = fgsm(model, x.clone(), y.clone(), eps)
            if err := _shape_error(got, want, f"eps={eps}"):
                raise err
            if got.requires_grad:
                raise ExerciseError("the result still requires grad. Hint: return x_adv.detach().")
            if torch.allclose(got, want, atol=1e-6):
                continue
            if torch.allclose(got, (x - eps * grad.sign()).clamp(0, 1), atol=1e-6):
                raise ExerciseError("you stepped *down* the loss: that makes the model more sure of the true label. "
                                    "Hint: an untargeted attack ascends the loss, x + eps * sign(grad).")
            if got.min() < -1e-6 or got.max() > 1 + 1e-6:
                raise ExerciseError("the result leaves the valid range [0, 1]. Hint: clamp(0, 1) at the end.")
            if (got - x).abs().max() > eps + 1e-6:
                raise ExerciseError(f"some pixel moved by {(got - x).abs().max():.3f} > eps={eps}. Hint: the "
                                    "L-infinity step is eps * sign(grad), not the gradient itself.")
            raise ExerciseError(f"eps={eps}: the step does not follow sign(grad_x CE). Hint: the loss is the "
                                "cross-entropy of the *true* labels y; differentiate it with respect to x "
                                "(x.requires_grad_(True), then torch.autograd.grad).")

    attempt(check, title="FGSM", strict=strict)


def check_targeted_margin(targeted_margin, *, strict: bool = False) -> None:
    """``targeted_margin(logits, target)`` must return, per example, ``max_{j != t} z_j - z_t``:
    the C&W loss of a targeted attack, to be *minimised*; it is negative once the target wins."""

    def check():
        g = torch.Generator().manual_seed(5)
        for n, k in ((20, 10), (7, 3)):
            logits = torch.randn(n, k, generator=g) * 3
            target = torch.randint(0, k, (n,), generator=g)
            logits[0] = 0.0  # a tie
            want = torch.tensor([max(z[j] for j in range(k) if j != t) - z[t]
                                 for z, t in zip(logits.tolist(), target.tolist())])
            got = targeted_margin(logits.clone(), target.clone())
            if err := _shape_error(got, want, f"{n} examples, {k} classes"):
                raise err
            if torch.allclose(got.float(), want, atol=1e-5):
                continue
            if torch.allclose(got.float(), -want, atol=1e-5):
                raise ExerciseError("the sign is flipped: the loss to *minimise* is (best other logit) - (target "
                                    "logit), which becomes negative exactly when the target is the prediction.")
            if (got >= -1e-6).all() and (want < 0).any():
                raise ExerciseError("your margin is never negative, even where the target already wins. Hint: "
                                    "leave the target out of the max over classes (mask it with -inf).")
            raise ExerciseError("wrong value. Hint: z_t = logits.gather(1, target[:, None]); the best other logit "
                                "is the max over the logits with the target's entry set to -inf.")

    attempt(check, title="targeted C&W margin", strict=strict)


def unit_balls(points, project):
    """The L-inf, L2 and L1 unit balls in 2-D with the projections of ``points`` onto each, using
    ``project(delta, eps, norm)`` (e.g. :func:`advlib.attacks.project`)."""
    import matplotlib.pyplot as plt
    import numpy as np

    pts = torch.as_tensor(points, dtype=torch.float64)
    t = np.linspace(0, 2 * np.pi, 400)
    outlines = {"linf": ([1, -1, -1, 1, 1], [1, 1, -1, -1, 1]), "l2": (np.cos(t), np.sin(t)),
                "l1": ([1, 0, -1, 0, 1], [0, 1, 0, -1, 0])}
    titles = {"linf": r"$L_\infty$: clip each coordinate", "l2": r"$L_2$: rescale the vector",
              "l1": r"$L_1$: soft-threshold (sparse)"}
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.5))
    for ax, norm in zip(axes, ("linf", "l2", "l1")):
        ax.fill(*outlines[norm], color="#4c72b0", alpha=0.18)
        ax.plot(*outlines[norm], color="#4c72b0")
        proj = project(pts, 1.0, norm)
        for (a, b), (c, d) in zip(pts.tolist(), proj.tolist()):
            ax.annotate("", xy=(c, d), xytext=(a, b), arrowprops=dict(arrowstyle="->", color="#c44e52"))
            ax.plot(a, b, "o", color="#c44e52", ms=5)
            ax.plot(c, d, "o", color="#2d2d2d", ms=5)
        ax.axhline(0, color="#999", lw=0.6), ax.axvline(0, color="#999", lw=0.6)
        ax.set_xlim(-1.9, 1.9), ax.set_ylim(-1.9, 1.9), ax.set_aspect("equal")
        ax.set_title(titles[norm], fontsize=10)
    fig.suptitle("Unit balls and the projection (closest point, black) of a few points (red) onto each",
                 fontsize=11)
    fig.tight_layout()
    return fig
