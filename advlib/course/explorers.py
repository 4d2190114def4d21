"""Interactive explorers of the lectures (ipywidgets 8), each with a static figure for the book.

An explorer is an ``ipywidgets.VBox``: its controls (public attributes: ``ex.eps``, ``ex.norm``, ...)
above an ``ipywidgets.Image``, the PNG of a matplotlib figure drawn again (Agg, no pyplot state) on
every change of a control. What the figure shows is also in ``ex.shown``, a dict of plain numbers,
so that code can drive an explorer by setting a control's ``.value`` and read the result; ``ex.figure``
is the last figure drawn (a plain ``matplotlib.figure.Figure``: pyplot never holds it, nothing to
close). Displayed, an explorer's bundle carries the live widget *and* that PNG (``image/png``):
JupyterLab renders the widget, the book (``nb_mime_priority_overrides`` in ``book/_config.yml``) the
figure, as it was when the cell ran.
"""
from __future__ import annotations

import base64
import inspect
import io
import math
from functools import partial

import ipywidgets as widgets
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Rectangle
from torch import nn

from .. import zo
from ..attacks import pgd
from ..threat import check_batch, check_budget, check_count, check_labels, check_model_input, lp_norm
from ..train import predict
from ..verify import certified_radius

__all__ = ["EpsilonExplorer", "CertifiedBallExplorer", "ZOExplorer", "BigCheckGame"]

_COLOURS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974",
            "#64b5cd"]


def _check_model(model, x: torch.Tensor, who: str) -> int:
    """A model in eval mode that takes the batch ``x`` (in [0, 1]) and returns logits; its classes."""
    if isinstance(model, nn.Module) and model.training:
        raise ValueError(f"{who}: the model is in train mode (dropout and batch norm would change what the explorer "
                         "shows from one redraw to the next); call model.eval() first")
    check_batch(x, who)
    return check_model_input(model, x, who)


def _check_images(x, who: str) -> None:
    if isinstance(x, torch.Tensor) and (x.dim() != 4 or x.shape[1] not in (1, 3)):
        raise ValueError(f"{who}: x must be a batch of images N x C x H x W with C = 1 or 3, got shape "
                         f"{tuple(x.shape)}")


def _picture(img: torch.Tensor) -> np.ndarray:
    """One image C x H x W as what ``imshow`` takes: H x W (grey) or H x W x 3."""
    img = img.detach().cpu().float()
    return img[0].numpy() if len(img) == 1 else img.permute(1, 2, 0).clamp(0, 1).numpy()


def _grey(ax, img: torch.Tensor, title: str = "", **kw) -> None:
    ax.imshow(_picture(img), cmap="gray_r", vmin=0, vmax=1, **kw)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([]), ax.set_yticks([])


class _Explorer(widgets.VBox):
    """Controls, then the figure as a PNG; ``_draw`` (set ``shown``, return a Figure) runs on every change."""

    dpi = 90

    def __init_subclass__(cls, **kwargs):
        # help(), Jupyter's `?` and autodoc show __signature__: __init__'s, not traitlets' __new__(*args, **kwargs)
        super().__init_subclass__(**kwargs)
        sig = inspect.signature(cls.__init__, eval_str=True)
        cls.__signature__ = sig.replace(parameters=list(sig.parameters.values())[1:])

    def __init__(self, rows, controls):
        self.image = widgets.Image(format="png")
        self.shown, self.figure, self._quiet = {}, None, False
        super().__init__([*rows, self.image])
        for c in controls:
            c.observe(self._redraw, names="value")
        self._redraw()

    def _redraw(self, change=None) -> None:
        if self._quiet:  # several controls change at once: draw once, after
            return
        self.figure = self._draw()
        buf = io.BytesIO()
        self.figure.savefig(buf, format="png", dpi=self.dpi)
        self.image.value = buf.getvalue()

    def _draw(self) -> Figure:
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs):
        """The widget's bundle plus the current figure as ``image/png``: the static fallback."""
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        return {**bundle, "image/png": base64.b64encode(self.image.value).decode("ascii")}


# --------------------------------------------------------------------------------------------- lecture 1
class EpsilonExplorer(_Explorer):
    """PGD (Madry et al. 2018, eq. 2; :func:`advlib.attacks.pgd`) on one image of ``x`` at the budget and
    norm of the controls: the clean image, the adversarial one, the perturbation on its own symmetric
    scale, and the class probabilities before and after. PGD starts at the clean image (no random
    start), so the figure changes with the controls only.

    Controls: ``eps`` (its range follows the norm: up to 0.5 in L-inf, 3 in L2, 10 in L1 on 8x8
    images, scaled with the dimension otherwise), ``norm`` (``"linf"``, ``"l2"``, ``"l1"``) and
    ``index`` (which image of ``x``).
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int = 20):
        _check_images(x, "EpsilonExplorer")
        self.classes = _check_model(model, x, "EpsilonExplorer")
        check_labels(y, len(x), self.classes, "EpsilonExplorer")
        self.model, self.x, self.y = model, x.detach(), y
        self.steps = check_count(steps, "EpsilonExplorer", "steps", 1)
        d = x[0].numel()
        self.eps_max = {"linf": 0.5, "l2": 0.375 * math.sqrt(d), "l1": d / 6.4}  # 0.5, 3, 10 for d = 64
        self.eps = widgets.FloatSlider(value=0.1, min=0.0, max=0.5, step=0.01, description="ε",
                                       readout_format=".3g", continuous_update=False)
        self.norm = widgets.Dropdown(options=["linf", "l2", "l1"], value="linf", description="norm")
        self.index = widgets.IntSlider(value=0, min=0, max=len(x) - 1, description="image", continuous_update=False)
        self.norm.observe(self._rescale, names="value")
        super().__init__([widgets.HBox([self.eps, self.norm, self.index])], [self.eps, self.norm, self.index])

    def _rescale(self, change) -> None:
        """A new norm: the same fraction of the new range (before the redraw that the norm triggers)."""
        share = self.eps.value / self.eps_max[change["old"]]
        self._quiet = True
        try:
            top = self.eps_max[change["new"]]
            self.eps.max, self.eps.step = top, top / 50
            self.eps.value = share * top
        finally:
            self._quiet = False

    def _draw(self) -> Figure:
        i, norm, eps = self.index.value, self.norm.value, float(self.eps.value)
        x, y = self.x[i : i + 1], self.y[i : i + 1]
        x_adv = pgd(self.model, x, y, eps=eps, steps=self.steps, norm=norm, random_start=False) if eps > 0 else x
        with torch.no_grad():
            p_clean, p_adv = (self.model(v).softmax(1)[0].cpu() for v in (x, x_adv))
        delta = (x_adv - x)[0].cpu()
        self.shown = {"prediction": int(p_adv.argmax()), "clean_prediction": int(p_clean.argmax()),
                      "probabilities": p_adv.tolist(), "norm_of_delta": float(lp_norm(delta[None], norm)),
                      "eps": eps, "norm": norm}
        fig = Figure(figsize=(9.6, 2.6), layout="constrained")
        axes = fig.subplots(1, 4, width_ratios=(1, 1, 1.25, 1.7))
        fooled = self.shown["prediction"] != int(y)
        _grey(axes[0], x[0], f"clean (label {int(y)}): {self.shown['clean_prediction']} ({p_clean.max():.0%})")
        _grey(axes[1], x_adv[0], f"PGD: {self.shown['prediction']} ({p_adv.max():.0%})")
        axes[1].title.set_color("#c44e52" if fooled else "k")
        lim = float(delta.abs().max()) or 1.0
        im = axes[2].imshow(delta.mean(0).numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
        axes[2].set_title(f"δ: {norm} norm {self.shown['norm_of_delta']:.3g} (ε = {eps:.3g})", fontsize=9)
        axes[2].set_xticks([]), axes[2].set_yticks([])
        fig.colorbar(im, ax=axes[2], shrink=0.85)
        k = np.arange(self.classes)
        axes[3].bar(k - 0.2, p_clean.numpy(), 0.4, color="#8c8c8c", label="clean")
        axes[3].bar(k + 0.2, p_adv.numpy(), 0.4, color="#c44e52", label="adversarial")
        axes[3].set_ylim(0, 1), axes[3].set_xticks(k), axes[3].set_ylabel("probability", fontsize=9)
        axes[3].legend(fontsize=8, loc="upper right"), axes[3].tick_params(labelsize=8)
        return fig


# --------------------------------------------------------------------------------------------- lecture 40
def _moons_mlp(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A 2-32-32-2 ReLU MLP, trained (Adam, full batch, seeded) on 200 noisy two-moons points rescaled
    into [0.1, 0.9]^2; returned in eval mode with its training points."""
    from sklearn.datasets import make_moons

    x, y = make_moons(200, noise=0.15, random_state=seed)
    x = torch.as_tensor(x, dtype=torch.float32)
    x, y = 0.1 + 0.8 * (x - x.amin(0)) / (x.amax(0) - x.amin(0)), torch.as_tensor(y)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2))
    params = list(model.parameters())
    m, v = [torch.zeros_like(q) for q in params], [torch.zeros_like(q) for q in params]
    # Adam (Kingma & Ba 2015, Algorithm 1), lr 0.05, written out: a process's first torch.optim optimizer imports
    # torch._dynamo, which takes seconds
    for t in range(1, 201):
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), params)
        with torch.no_grad():
            for q, g, m_, v_ in zip(params, grads, m, v):
                m_.lerp_(g, 0.1), v_.lerp_(g * g, 0.001)
                q -= 0.05 * (m_ / (1 - 0.9 ** t)) / ((v_ / (1 - 0.999 ** t)).sqrt() + 1e-8)
    return model.eval(), x, y


class CertifiedBallExplorer(_Explorer):
    """A 2-D classifier's decision regions, a point, its ε-ball (a square in L-inf, a disc in L2), the
    largest ball CROWN certifies around it (Zhang et al. 2018; :func:`advlib.verify.certified_radius`,
    by bisection) and the point PGD reaches in the ε-ball (a cross where it changes the class). No
    attack can succeed inside the certified ball: the certificate is a proof.

    ``model``: a classifier of points of [0, 1]^2 (N x 2 -> logits) in eval mode; by default a small
    ReLU MLP trained here, in a fraction of a second, on two moons (its training points are drawn
    faintly). Controls: ``x1``, ``x2`` (the point), ``eps`` and ``norm`` (``"linf"``, ``"l2"``).
    """

    def __init__(self, model: nn.Module | None = None):
        self.data = None
        if model is None:
            model, *self.data = _moons_mlp()
        self.classes = _check_model(model, torch.full((1, 2), 0.5, device=_device(model)), "CertifiedBallExplorer")
        self.model = model
        g = torch.linspace(0, 1, 161)
        grid = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2).to(_device(model))
        self._regions = (g.numpy(), predict(model, grid).view(len(g), len(g)).cpu().numpy())
        slider = partial(widgets.FloatSlider, min=0.0, max=1.0, step=0.01, continuous_update=False,
                         readout_format=".2f")
        self.x1, self.x2 = slider(value=0.6, description="x₁"), slider(value=0.6, description="x₂")
        self.eps = slider(value=0.15, max=0.3, step=0.005, description="ε", readout_format=".3f")
        self.norm = widgets.Dropdown(options=["linf", "l2"], value="linf", description="norm")
        controls = [self.x1, self.x2, self.eps, self.norm]
        super().__init__([widgets.HBox(controls[:2]), widgets.HBox(controls[2:])], controls)

    def _draw(self) -> Figure:
        norm, eps = self.norm.value, float(self.eps.value)
        p = torch.tensor([[self.x1.value, self.x2.value]], dtype=torch.float32, device=_device(self.model))
        label = predict(self.model, p)
        # a ball of radius 1 (L-inf) or sqrt(2) (L2) holds the whole box [0, 1]^2: the bisection's bracket
        radius = float(certified_radius(self.model, p, norm=norm, method="crown", hi=1.0 if norm == "linf" else 1.5))
        x_adv = pgd(self.model, p, label, eps=eps, steps=50, norm=norm, random_start=False) if eps > 0 else p
        hit = bool(predict(self.model, x_adv) != label)
        (a, b), (c, d) = p[0].tolist(), x_adv[0].tolist()
        self.shown = {"point": (a, b), "prediction": int(label), "certified_radius": radius, "attack_point": (c, d),
                      "attack_succeeded": hit, "eps": eps, "norm": norm}
        fig = Figure(figsize=(5.2, 4.6), layout="constrained")
        ax = fig.subplots()
        g, regions = self._regions
        cmap = ListedColormap([_COLOURS[k % len(_COLOURS)] + "55" for k in range(self.classes)])
        ax.contourf(g, g, regions, levels=np.arange(self.classes + 1) - 0.5, cmap=cmap)
        if self.data is not None:
            xs, ys = self.data
            colours = [_COLOURS[k % len(_COLOURS)] for k in ys.tolist()]
            ax.scatter(*xs.T.numpy(), c=colours, s=6, alpha=0.3, linewidths=0)

        def ball(r, **kw):
            return (Rectangle((a - r, b - r), 2 * r, 2 * r, **kw) if norm == "linf" else Circle((a, b), r, **kw))

        ax.add_patch(ball(radius, facecolor="#55a86840", edgecolor="#2d7a3e", lw=2, gid="certified ball",
                          label=f"certified by CROWN (r = {radius:.3f})"))
        ax.add_patch(ball(eps, fill=False, edgecolor="k", ls="--", lw=1.2, gid="eps ball",
                          label=f"ε-ball (ε = {eps:.3f})"))
        ax.annotate("", xy=(c, d), xytext=(a, b), arrowprops=dict(arrowstyle="->", color="#444", lw=1))
        ax.plot(a, b, "o", color="k", ms=6, label=f"point (class {int(label)})")
        ax.plot(c, d, "X" if hit else "o", ms=9 if hit else 6, color="#c44e52" if hit else "w", mec="#c44e52",
                label="PGD: class changed" if hit else "PGD: class kept")
        ax.set_xlim(0, 1), ax.set_ylim(0, 1), ax.set_aspect("equal")
        ax.set_xlabel("x₁"), ax.set_ylabel("x₂")
        ax.set_title(f"{norm}: certified radius {radius:.3f}, PGD at ε = {eps:.3f} "
                     f"{'changes the class' if hit else 'fails'}", fontsize=9)
        ax.legend(fontsize=7, loc="lower right", framealpha=0.85)
        return fig


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None) if isinstance(model, nn.Module) else None
    return p.device if p is not None else torch.device("cpu")


# --------------------------------------------------------------------------------------------- lecture 10
def _default_loss() -> tuple:
    """The cross-entropy of the fast profile's MLP (float64) on the first 8x8 test digit, as a function
    of its 64 pixels (offline in every profile)."""
    import copy

    from .. import data, profile, zoo

    P = profile("fast")
    model = copy.deepcopy(zoo.load(P.models[-1], "cpu")).double().eval()
    test = data.load(P.dataset, "test")
    x, y = test.x[0].double(), test.y[:1]

    def loss(z: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(z), y.expand(len(z)), reduction="none")

    return loss, x


def _as_image(v: torch.Tensor) -> np.ndarray:
    """A point as a 2-D picture: its last two dimensions, a square, or one row."""
    v = v.detach().cpu()
    if v.dim() >= 2:
        return v.reshape(-1, *v.shape[-2:]).mean(0).numpy()
    side = math.isqrt(v.numel())
    return v.reshape(side, side).numpy() if side * side == v.numel() else v.reshape(1, -1).numpy()


class ZOExplorer(_Explorer):
    """The forward random-direction estimate of a gradient (:func:`advlib.zo.estimate`, sphere
    directions: ``d / (beta q) sum_j [f(x + beta u_j) - f(x)] u_j``; Liu et al. 2020, eq. 3) next to the
    true gradient from autograd: both as images on one symmetric scale, and estimate against truth
    coordinate by coordinate. It costs ``q + 1`` queries of ``f``, counted.

    ``f`` maps a batch of points (``m x ...``, the shape of ``x`` after the batch dimension) to ``m``
    values, differentiably; ``x`` is one point. Default (both ``None``): the cross-entropy of the fast
    profile's MLP on the first 8x8 test digit, as a function of its 64 pixels (in float64). Controls: ``q``
    (directions), ``beta`` (smoothing radius) and ``redraw`` (a button: new directions, the next seed).
    """

    def __init__(self, f=None, x: torch.Tensor | None = None):
        if (f is None) != (x is None):
            raise ValueError("ZOExplorer: give both f and x, or neither (the default: a digit's cross-entropy)")
        if f is None:
            f, x = _default_loss()
        if not callable(f) or not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.numel() == 0:
            raise ValueError("ZOExplorer: f must be a function of a batch of points and x one point, a non-empty "
                             f"floating-point tensor; got {type(f).__name__} and {type(x).__name__}")
        self.f, self.x, self.seed, self._queries = f, x.detach(), 0, 0
        xg = self.x[None].clone().requires_grad_(True)
        with torch.enable_grad():
            fx = f(xg)
            if not isinstance(fx, torch.Tensor) or fx.shape != (1,):
                raise ValueError(f"ZOExplorer: f must return one value per point of the batch; on a batch of one "
                                 f"(shape {tuple(xg.shape)}) it returned {getattr(fx, 'shape', type(fx).__name__)}")
            if not fx.requires_grad:
                raise ValueError("ZOExplorer: f(x) does not depend on x through autograd, so the true gradient is "
                                 "unknown; write f with torch operations")
            (self.grad,) = torch.autograd.grad(fx.sum(), xg)
        self.grad = self.grad[0]
        self.q = widgets.IntSlider(value=10, min=1, max=200, description="q", continuous_update=False)
        self.beta = widgets.FloatLogSlider(value=1e-2, base=10, min=-4, max=0, description="β",
                                           readout_format=".0e", continuous_update=False)
        self.redraw = widgets.Button(description="draw again", icon="refresh")
        self.redraw.on_click(self._next_seed)
        super().__init__([widgets.HBox([self.q, self.beta, self.redraw])], [self.q, self.beta])

    def _next_seed(self, button=None) -> None:
        self.seed += 1
        self._redraw()

    def _counted(self, z: torch.Tensor) -> torch.Tensor:
        self._queries += len(z)
        return self.f(z)

    def _draw(self) -> Figure:
        q, beta = int(self.q.value), float(self.beta.value)
        self._queries = 0
        gen = torch.Generator(self.x.device).manual_seed(self.seed)
        with torch.no_grad():
            est = zo.estimate(self._counted, self.x[None], q=q, beta=beta, kind="sphere", generator=gen)[0][0]
        g, e = self.grad.flatten().double().cpu(), est.flatten().double().cpu()
        cosine = float(F.cosine_similarity(e, g, dim=0))
        rel = float((e - g).norm() / g.norm().clamp_min(1e-300))
        self.shown = {"q": q, "beta": beta, "cosine": cosine, "relative_error": rel, "queries": self._queries}
        fig = Figure(figsize=(9.6, 3.1), layout="constrained")
        axes = fig.subplots(1, 3, width_ratios=(1, 1, 1.15))
        lim = float(max(g.abs().max(), e.abs().max())) or 1.0
        for ax, v, title in zip(axes, (self.grad, est), ("true gradient ∇f (autograd)", f"estimate ĝ, q = {q}")):
            im = ax.imshow(_as_image(v), cmap="RdBu_r", vmin=-lim, vmax=lim)
            ax.set_title(title, fontsize=9), ax.set_xticks([]), ax.set_yticks([])
        fig.colorbar(im, ax=list(axes[:2]), shrink=0.85, label="one scale for both")
        ax = axes[2]
        ax.scatter(g.numpy(), e.numpy(), s=9, color="#4c72b0", alpha=0.7)
        ax.axline((0, 0), slope=1, color="k", lw=0.8, ls="--", label="ĝ = ∇f")
        ax.set_xlabel("∇f, coordinate by coordinate", fontsize=9), ax.set_ylabel("ĝ", fontsize=9)
        ax.legend(fontsize=8), ax.tick_params(labelsize=8), ax.grid(alpha=0.3)
        fig.suptitle(f"q = {q}, β = {beta:.0e}, seed {self.seed}: cosine {cosine:.2f}, "
                     f"‖ĝ − ∇f‖ / ‖∇f‖ = {rel:.2f}  ({self._queries} queries)", fontsize=10)
        return fig


# --------------------------------------------------------------------------------------------- lecture 0
class BigCheckGame(_Explorer):
    """Be the attacker of a bank's check reader, in the spirit of IBM's "Big Check" demonstration: a
    check shows ``digits`` handwritten digits of ``x`` (ones the bank's ``model`` reads correctly, the
    first not 0) forming an amount. Paint a perturbation on one digit at a time and see what the bank
    credits. Each pixel is a vertex of the L-inf ball of radius ``eps``: a click cycles it 0 -> +eps ->
    -eps -> 0, and the painted image is clipped to [0, 1]. Images larger than 16x16 are painted in blocks.

    The yardstick is targeted PGD (L-inf, the same ``eps``; :func:`advlib.attacks.pgd`) pushing each
    digit towards the largest digit it reaches (targets tried from 9 down): score = your profit / PGD's
    (``None`` while PGD's is 0). Controls: ``digit`` (which digit the grid paints), ``cells`` (the grid
    of buttons, ``cells[row][col]``), ``reset_button`` and ``compare`` (show PGD's check). From code:
    :meth:`paint` and :meth:`reset`; ``x`` and ``labels`` are the check's digits, ``signs`` the paint
    (digit x row x col, in {-1, 0, 1}), ``pgd_images`` PGD's digits.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float = 0.2, digits: int = 3):
        who = "BigCheckGame"
        _check_images(x, who)
        if _check_model(model, x, who) != 10:
            raise ValueError(f"{who}: the bank's model must read the digits 0-9 (10 classes)")
        check_labels(y, len(x), 10, who)
        self.eps = check_budget(eps, who, positive=True)
        self.digits = check_count(digits, who, "digits", 1)
        self.model = model
        right = (predict(model, x) == y).nonzero().flatten().tolist()
        lead = next((i for i in right if y[i] != 0), None)
        if lead is None or len(right) < self.digits:
            raise ValueError(f"{who}: need {self.digits} digits that the model reads correctly, the first of them "
                             f"not 0; x has {len(right)} read correctly")
        pick = [lead] + [i for i in right if i != lead][: self.digits - 1]
        self.x, self.labels = x[pick].detach(), [int(y[i]) for i in pick]
        self.amount = _amount(self.labels)
        h, w = x.shape[-2:]
        self.block = math.ceil(max(h, w) / 16)  # one button per block: a grid of at most 16 x 16
        self.rows, self.cols = math.ceil(h / self.block), math.ceil(w / self.block)
        self.signs = torch.zeros(self.digits, self.rows, self.cols, dtype=torch.long)
        self.pgd_images = self._strongest_pgd()
        self.digit = widgets.ToggleButtons(options=[(f"digit {k + 1}", k) for k in range(self.digits)], value=0,
                                           description="paint")
        self.digit.style.button_width = "70px"
        self.reset_button = widgets.Button(description="reset", icon="undo")
        self.reset_button.on_click(lambda _: self.reset())
        self.compare = widgets.ToggleButton(value=False, description="compare with PGD", icon="balance-scale")
        cell = widgets.Layout(width="26px", height="26px", padding="0", margin="0")
        self.cells = [[widgets.Button(layout=cell) for _ in range(self.cols)] for _ in range(self.rows)]
        for r, row in enumerate(self.cells):
            for c, b in enumerate(row):
                b.on_click(partial(self._click, r, c))
        grid = widgets.GridBox([b for row in self.cells for b in row], layout=widgets.Layout(
            grid_template_columns=f"repeat({self.cols}, 26px)", grid_gap="1px", align_self="center"))
        self.digit.observe(lambda _: self._colour_cells(), names="value")
        self._colour_cells()
        top = widgets.HBox([self.digit, self.reset_button, self.compare])
        super().__init__([top, grid], [self.digit, self.compare])

    # ------------------------------------------------------------------------------ the game's state
    def painted_images(self) -> torch.Tensor:
        """The digits as painted: ``clip(x + eps * signs, 0, 1)``, the signs spread over their blocks."""
        h, w = self.x.shape[-2:]
        s = self.signs.repeat_interleave(self.block, 1).repeat_interleave(self.block, 2)[:, :h, :w]
        return (self.x + self.eps * s[:, None].to(self.x)).clamp(0, 1)

    def paint(self, digit: int, row: int, col: int, value: int) -> None:
        """Set the perturbation of one pixel (block) of one digit to ``value * eps``, ``value`` in {-1, 0, +1}."""
        if value not in (-1, 0, 1) or isinstance(value, bool):
            raise ValueError(f"BigCheckGame.paint: value must be -1, 0 or +1 (times eps), got {value!r}")
        if not (0 <= digit < self.digits and 0 <= row < self.rows and 0 <= col < self.cols):
            raise ValueError(f"BigCheckGame.paint: digit must be in 0..{self.digits - 1}, row in 0..{self.rows - 1} "
                             f"and col in 0..{self.cols - 1}; got {(digit, row, col)}")
        self.signs[digit, row, col] = value
        self._colour_cells()
        self._redraw()

    def reset(self) -> None:
        """Remove all paint (the reset button)."""
        self.signs.zero_()
        self._colour_cells()
        self._redraw()

    def _click(self, row: int, col: int, button=None) -> None:
        k = self.digit.value
        self.paint(k, row, col, {0: 1, 1: -1, -1: 0}[int(self.signs[k, row, col])])

    def _colour_cells(self) -> None:
        """Each button: the grey of its pixels in the selected digit, and its sign (+ red, - blue)."""
        k = self.digit.value
        ink = F.avg_pool2d(self.x[k].mean(0, keepdim=True)[None].cpu(), self.block, ceil_mode=True)[0, 0]
        for r, row in enumerate(self.cells):
            for c, button in enumerate(row):
                level = int(round(255 * (1 - float(ink[r, c]))))
                s = int(self.signs[k, r, c])
                button.style.button_color = f"#{level:02x}{level:02x}{level:02x}"
                button.description = {1: "+", -1: "−", 0: ""}[s]
                button.style.text_color = "#e8412b" if s > 0 else "#2b7de8"
                button.style.font_weight = "bold"
                button.tooltip = f"row {r}, col {c}: {'+' if s > 0 else '−' if s < 0 else '0'}ε"

    def _strongest_pgd(self) -> torch.Tensor:
        """Per digit, targeted PGD towards 9, 8, ... (down to one above its label): the first target
        reached, or the digit unchanged. All (digit, target) pairs in one batch."""
        pairs = [(k, t) for k, lab in enumerate(self.labels) for t in range(9, lab, -1)]
        best = self.x.clone()
        if pairs:
            rows, targets = (torch.tensor(v, device=self.x.device) for v in zip(*pairs))
            adv = pgd(self.model, self.x[rows], targets, eps=self.eps, steps=50, targeted=True, random_start=False)
            hit = (predict(self.model, adv) == targets).tolist()
            for k in range(self.digits):
                first = next((i for i, (owner, _) in enumerate(pairs) if owner == k and hit[i]), None)
                if first is not None:
                    best[k] = adv[first]
        return best

    def _draw(self) -> Figure:
        painted = self.painted_images()
        read, pgd_read = predict(self.model, painted).tolist(), predict(self.model, self.pgd_images).tolist()
        credited, pgd_credited = _amount(read), _amount(pgd_read)
        profit, pgd_profit = credited - self.amount, pgd_credited - self.amount
        h, w = self.x.shape[-2:]
        cells = (self.signs.repeat_interleave(self.block, 1).repeat_interleave(self.block, 2)[:, :h, :w] != 0)
        self.shown = {"amount": self.amount, "credited": credited, "profit": profit, "pgd_credited": pgd_credited,
                      "pgd_profit": pgd_profit, "score": profit / pgd_profit if pgd_profit else None,
                      "painted": int(cells.sum())}
        money = "\\$"  # a plain dollar sign (matplotlib reads $...$ as mathematics)
        checks = [(self.x, f"the check: {money}{self.amount:,}", self.labels),
                  (painted, f"as painted: the bank reads {money}{credited:,}, your profit {money}{profit:,}", read)]
        if self.compare.value:
            score = "—" if self.shown["score"] is None else f"{self.shown['score']:.0%}"
            checks.append((self.pgd_images, f"targeted PGD (ε = {self.eps:g}): {money}{pgd_credited:,}, profit "
                                      f"{money}{pgd_profit:,}; your score {score}", pgd_read))
        fig = Figure(figsize=(1.6 + 1.05 * self.digits, 1.45 * len(checks)), layout="constrained")
        gap = torch.zeros_like(self.x[0, :, :, :1])
        for ax, (images, title, readings) in zip(np.atleast_1d(fig.subplots(len(checks), 1)), checks):
            _grey(ax, torch.cat([t for img in images for t in (img, gap)][:-1], -1).cpu(), title)
            for k, reading in enumerate(readings):  # each digit: what the bank reads, boxed in red if changed
                left, changed = k * (w + 1) - 0.5, reading != self.labels[k]
                ax.text(left + w / 2, h - 0.2, f"read: {reading}", ha="center", va="top", fontsize=8,
                        color="#c44e52" if changed else "k")
                if changed:
                    ax.add_patch(Rectangle((left, -0.5), w, h, fill=False, ec="#c44e52", lw=2))
                if images is painted and k == self.digit.value:  # the digit the grid paints
                    ax.add_patch(Rectangle((left - 0.3, -0.8), w + 0.6, h + 0.6, fill=False, ec="#e8a33d", lw=2,
                                           ls="--", clip_on=False))
            ax.set_ylim(h + 1.2, -0.9)
        return fig


def _amount(digits: list[int]) -> int:
    return int("".join(map(str, digits)))
