"""Checks and figures of lecture 02 (optimisation-based attacks: C&W, EAD, JSMA)."""
from __future__ import annotations

import torch

from ..threat import lp_norm
from .exercises import ExerciseError, attempt

__all__ = ["check_cw_margin", "check_shrink", "check_best_pair", "show_perturbations", "all_targets", "target_cases",
           "CASES"]

#: the three cases of the EAD paper's targeted comparison (Chen et al., AAAI 2018, Table 1 ff.)
CASES = ("best", "average", "worst")


def _want_margin(logits: torch.Tensor, y: torch.Tensor, kappa: float) -> torch.Tensor:
    z_y = logits[torch.arange(len(y)), y]
    other = torch.stack([torch.cat([row[:k], row[k + 1:]]).max() for row, k in zip(logits, y.tolist())])
    return torch.maximum(z_y - other, torch.full_like(z_y, -kappa))


def check_cw_margin(cw_margin, *, strict: bool = False) -> None:
    """``cw_margin(logits, y, kappa)`` must return, per example, the untargeted C&W loss
    ``max(z_y - max_{j != y} z_j, -kappa)`` (Carlini & Wagner 2017, f_6): positive while the true
    class wins, negative (down to ``-kappa``) once another class wins."""

    def check():
        g = torch.Generator().manual_seed(3)
        logits = torch.randn(32, 10, generator=g) * 3
        y = torch.randint(0, 10, (32,), generator=g)
        y[:8] = logits[:8].argmax(1)  # the true class wins on some examples ...
        logits[8, :] = 1.0  # ... and one example is a tie everywhere
        for kappa in (0.0, 0.5, 5.0):
            got = cw_margin(logits.clone(), y.clone(), kappa)
            want = _want_margin(logits, y, kappa)
            if not isinstance(got, torch.Tensor) or got.shape != want.shape:
                raise ExerciseError(f"expected one loss per example, a tensor of shape {tuple(want.shape)}, got "
                                    f"{getattr(got, 'shape', type(got).__name__)}. Hint: do not sum or average.")
            if torch.allclose(got, want, atol=1e-5):
                continue
            wins = y[:8]
            incl = logits[:8].gather(1, wins[:, None]).squeeze(1) - logits[:8].max(1).values
            if torch.allclose(got[:8], incl.clamp(min=-kappa), atol=1e-5) and not torch.allclose(incl, want[:8]):
                raise ExerciseError("where the true class has the largest logit your loss is 0: the max must run "
                                    "over the *other* classes j != y (mask z_y out, e.g. with -inf).")
            if torch.allclose(got, want.clamp(min=0), atol=1e-5):
                raise ExerciseError("the loss is clamped at the wrong place: it is max(z_y - max_other, -kappa), "
                                    "so it can go below zero down to -kappa.")
            if torch.allclose(got, -want, atol=1e-5):
                raise ExerciseError("wrong sign: the loss to *minimise* is z_y - max_other (it must fall as the "
                                    "attack succeeds).")
            raise ExerciseError(f"for kappa={kappa} expected {want[:4].tolist()}..., got {got[:4].tolist()}... "
                                "Hint: per example, z_y minus the largest other logit, then no lower than -kappa.")

    attempt(check, title="C&W margin loss", strict=strict)


def check_shrink(shrink, *, strict: bool = False) -> None:
    """``shrink(z, x0, beta)`` must be EAD's projected shrinkage-thresholding operator
    Pi_[0,1](S_beta(z)) around ``x0``: coordinates within ``beta`` of ``x0`` go back to ``x0``,
    the others move ``beta`` towards ``x0``, then everything is clipped to [0, 1]."""

    def check():
        g = torch.Generator().manual_seed(4)
        x0 = torch.rand(8, 1, 8, 8, generator=g)
        x0[:3] = x0[:3].round()  # pixels exactly 0 or 1, as in the digits
        for beta in (0.0, 0.05, 0.3):
            z = x0 + 0.4 * torch.randn(x0.shape, generator=g)
            got = shrink(z.clone(), x0.clone(), beta)
            if not isinstance(got, torch.Tensor) or got.shape != z.shape:
                raise ExerciseError(f"expected a tensor of the shape of z {tuple(z.shape)}, got "
                                    f"{getattr(got, 'shape', type(got).__name__)}")
            d = z - x0
            want = torch.where(d > beta, z - beta, torch.where(d < -beta, z + beta, x0)).clamp(0, 1)
            if torch.allclose(got, want, atol=1e-6):
                continue
            if got.min() < 0 or got.max() > 1:
                raise ExerciseError("the result leaves [0, 1]: the operator ends with the projection Pi_[0,1].")
            soft0 = (z.sign() * (z.abs() - beta).clamp(min=0)).clamp(0, 1)
            if torch.allclose(got, soft0, atol=1e-6):
                raise ExerciseError("you shrink z towards 0; EAD shrinks the *perturbation* z - x0, i.e. towards "
                                    "the original image x0.")
            small = d.abs() <= beta
            if not torch.allclose(got[small], x0[small], atol=1e-6):
                raise ExerciseError(f"for beta={beta}: coordinates with |z - x0| <= beta must be set back to x0 "
                                    "exactly (that is what makes EAD's perturbations sparse).")
            raise ExerciseError(f"for beta={beta}: coordinates with |z - x0| > beta must move by beta towards x0 "
                                "(z - beta above, z + beta below), then be clipped to [0, 1].")

    attempt(check, title="projected shrinkage-thresholding", strict=strict)


def _want_pair(alpha: torch.Tensor, beta: torch.Tensor, domain: torch.Tensor):
    best, pair = 0.0, None
    for p in range(len(alpha)):
        for q in range(p + 1, len(alpha)):
            a, b = float(alpha[p] + alpha[q]), float(beta[p] + beta[q])
            if domain[p] and domain[q] and a > 0 and b < 0 and a * -b > best:
                best, pair = a * -b, {p, q}
    return pair


def check_best_pair(best_pair, *, strict: bool = False) -> None:
    """``best_pair(alpha, beta, domain)`` gets, for one input with ``d`` pixels, the vectors
    ``alpha_p = dZ_t/dx_p`` and ``beta_p = sum_{j != t} dZ_j/dx_p`` and the boolean search domain,
    and must return the pair ``(p, q)``, ``p != q``, both in the domain, maximising
    ``(alpha_p + alpha_q) * |beta_p + beta_q|`` subject to ``alpha_p + alpha_q > 0`` and
    ``beta_p + beta_q < 0`` (JSMA's saliency map over pairs), or ``None`` if no pair qualifies."""

    def check():
        g = torch.Generator().manual_seed(5)
        cases = []
        for d in (6, 12, 20):
            alpha, beta = torch.randn(d, generator=g), torch.randn(d, generator=g)
            cases.append((alpha, beta, torch.ones(d, dtype=torch.bool)))
            cases.append((alpha, beta, torch.rand(d, generator=g) < 0.6))
        a = torch.tensor([3.0, 1.0, 0.5, 2.0])  # the best single pixels (0 and 3) are not the best pair
        b = torch.tensor([2.0, -1.5, -1.0, -0.1])
        cases.append((a, b, torch.ones(4, dtype=torch.bool)))
        cases.append((torch.tensor([2.0, 1.0, -1.0]), torch.tensor([-1.0, -1.0, 1.0]),
                      torch.tensor([True, False, True])))  # the only admissible-looking pair leaves the domain
        cases.append((torch.tensor([5.0, 0.0, 0.1]), torch.tensor([-3.0, 0.5, 0.5]),
                      torch.ones(3, dtype=torch.bool)))  # the same pixel twice would win: p != q
        for alpha, beta, domain in cases:
            want = _want_pair(alpha, beta, domain)
            got = best_pair(alpha.clone(), beta.clone(), domain.clone())
            got_set = None if got is None else {int(v) for v in got}
            if got_set == want:
                continue
            if want is None:
                raise ExerciseError(f"no pair qualifies for alpha={alpha.tolist()}, beta={beta.tolist()}, "
                                    f"domain={domain.tolist()}, but you returned {got}. Return None then.")
            if got_set is not None and len(got_set) == 1:
                raise ExerciseError(f"you returned the same pixel twice ({got}); the pair needs p != q. "
                                    "Hint: mask the diagonal of the d x d score matrix.")
            if got_set is not None and not all(domain[v] for v in got_set):
                raise ExerciseError(f"pixel(s) {[v for v in got_set if not domain[v]]} are outside the search "
                                    "domain (already at their maximum): only pairs inside it may be chosen.")
            raise ExerciseError(f"for alpha={[round(v, 2) for v in alpha.tolist()]}, "
                                f"beta={[round(v, 2) for v in beta.tolist()]} the best pair is {sorted(want)}, "
                                f"you returned {got}. Hint: score every pair by (alpha_p + alpha_q) * "
                                "|beta_p + beta_q|, only where alpha_p + alpha_q > 0 and beta_p + beta_q < 0.")

    attempt(check, title="JSMA pair selection", strict=strict)


def show_perturbations(x: torch.Tensor, advs: dict[str, torch.Tensor], model, y: torch.Tensor, n: int = 6):
    """A grid: the clean digits in the first column (``gray_r``), then for each attack its
    perturbation (red: pixel increased, blue: decreased; one symmetric colour scale shared by all
    panels, with its colour bar) titled with the new prediction (red when the attack failed) and the
    number of pixels changed."""
    import matplotlib.pyplot as plt

    n = min(n, len(x))
    with torch.no_grad():
        preds = {k: model(v[:n]).argmax(1).cpu() for k, v in advs.items()}
        clean = model(x[:n]).argmax(1).cpu()
    scale = max(float((v[:n] - x[:n]).abs().max()) for v in advs.values()) or 1.0
    cols = len(advs) + 1
    fig, axes = plt.subplots(n, cols, figsize=(min(9.0, 1.35 * cols + 0.9), 1.3 * n + 0.6), squeeze=False)
    for j, (name, v) in enumerate(advs.items(), start=1):
        axes[0, j].text(0.5, 1.32, name, transform=axes[0, j].transAxes, ha="center", va="bottom", fontsize=9,
                        weight="bold")
        for i in range(n):
            delta = (v[i] - x[i])[0].cpu()
            im = axes[i, j].imshow(delta, cmap="RdBu_r", vmin=-scale, vmax=scale)
            ok = preds[name][i] != y[i].cpu()
            axes[i, j].set_title(f"→ {preds[name][i]}  L0={int((delta.abs() > 1e-6).sum())}", fontsize=9,
                                 color="k" if ok else "C3")
    for i in range(n):
        axes[i, 0].imshow(x[i, 0].cpu(), cmap="gray_r", vmin=0, vmax=1)
        axes[i, 0].set_title(f"clean: {clean[i]}", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    bar = fig.colorbar(im, cax=fig.add_axes((0.915, 0.15, 0.02, 0.7)))
    bar.set_label("δ = x_adv − x (all panels)", fontsize=9)
    bar.ax.tick_params(labelsize=9)
    return fig


def all_targets(x: torch.Tensor, y: torch.Tensor, classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image with every other class as target, in one batch: ``x`` repeated ``classes - 1``
    times (image ``i`` in rows ``i * (classes - 1)`` to ``(i + 1) * (classes - 1) - 1``) and the targets."""
    others = (y[:, None] + torch.arange(1, classes, device=y.device)[None]) % classes
    return x.repeat_interleave(classes - 1, 0), others.flatten()


def target_cases(x: torch.Tensor, x_adv: torch.Tensor, success: torch.Tensor, own: torch.Tensor,
                 classes: int = 10, seed: int = 0) -> dict[str, dict[str, float]]:
    """The EAD paper's three cases of a targeted attack run on :func:`all_targets` (Chen et al.,
    AAAI 2018, following Carlini & Wagner 2017): per image, the **best** case is its easiest target
    (a success if any target succeeded; the successful target of smallest ``own`` distance, the
    norm the attack minimises), the **average** case one target drawn at random (seeded), the
    **worst** case its hardest target (a success only if every target succeeded; the largest
    ``own`` distance). Returns, per case, the success rate and the *mean* L1, L2 and L-inf
    distortion over the successful images (means, as in the paper)."""
    k = classes - 1
    norms = {p: lp_norm(x_adv - x, p) for p in ("l1", "l2", "linf")}
    ok, own = success.view(-1, k), own.view(-1, k)
    n = len(ok)
    g = torch.Generator().manual_seed(seed)
    pick = {"best": torch.where(ok, own, torch.full_like(own, torch.inf)).argmin(1),
            "average": torch.randint(0, k, (n,), generator=g).to(ok.device),
            "worst": torch.where(ok, own, torch.full_like(own, torch.inf)).argmax(1)}
    hit = {"best": ok.any(1), "average": ok.gather(1, pick["average"][:, None]).squeeze(1), "worst": ok.all(1)}
    out = {}
    for case in CASES:
        rows = torch.arange(n, device=ok.device) * k + pick[case]
        h = hit[case]
        out[case] = {"success": h.float().mean().item(),
                     **{name: (v[rows][h].mean().item() if h.any() else float("nan")) for name, v in norms.items()}}
    return out
