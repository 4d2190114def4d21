"""Input-transformation defenses, and the adaptive attacks that break them.

A transformation defense classifies ``f(g(x))``: it squeezes, smooths or randomises the input
``g`` before the model ``f`` sees it, hoping to wash the adversarial perturbation out.

* Feature squeezing (Xu, Evans & Qi, 2018, NDSS): :func:`bit_depth` reduction and
  :func:`median_smooth` (their "local smoothing"), and the detector :class:`FeatureSqueezing`,
  which flags an input whose prediction moves (in L1) when it is squeezed.
* :func:`spatial_smooth`: the median filter with a centred, odd window (the "spatial smoothing"
  of the literature; a median, not a mean, because a median removes isolated outliers -- the
  salt-and-pepper pixels of an L0 / L-inf attack -- while keeping edges, and a mean only blurs them).
* A random transformation: :func:`random_resize_pad` (Xie et al., 2018).

Several of these ``g`` have a zero or useless gradient (rounding is flat almost everywhere), so a
gradient attack on ``f(g(x))`` stalls and the defense *looks* robust. Athalye, Carlini & Wagner
(2018, "Obfuscated gradients give a false sense of security", Section 4.1) break them with BPDA:
forward through ``g``, but backward through the identity (``g(x) ~ x``) or through a
differentiable approximation of ``g`` (:func:`bpda`, :class:`Transformed`); a random ``g`` falls to
EOT, the gradient of the expected loss over its draws (:func:`advlib.attacks.eot_pgd`)::

    squeeze = functools.partial(bit_depth, bits=1)
    defended = Transformed(model, squeeze)                   # PGD's gradient is exactly 0
    adaptive = Transformed(model, squeeze, bpda="identity")  # same forward, straight-through backward
    x_adv = advlib.attacks.pgd(adaptive, x, y, eps=0.1, steps=40)   # then evaluate on `defended`
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..threat import check_batch, check_count, chunks

__all__ = ["bit_depth", "soft_bit_depth", "median_smooth", "spatial_smooth", "random_resize_pad", "bpda",
           "Transformed", "FeatureSqueezing"]

Transform = Callable[[torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------------------------- squeezers
def _check_bits(bits, who: str) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ValueError(f"{who}: bits must be an integer in 1..8 (the colour depth to keep; 8 keeps an 8-bit "
                         f"image as it is, 1 binarises it), got {bits!r}")
    return bits


def bit_depth(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Colour-depth reduction to ``bits`` bits per value (Xu et al., 2018, Section III-A):
    ``round(x * (2^bits - 1)) / (2^bits - 1)``, mapping [0, 1] onto its ``2^bits`` evenly spaced
    levels. ``bits=1`` binarises at 1/2 (the MNIST squeezer of the paper); at ``bits=8`` an 8-bit
    image (values k/255) is unchanged. Its gradient is zero almost everywhere."""
    bits = _check_bits(bits, "bit_depth")
    check_batch(x, "bit_depth")
    levels = 2 ** bits - 1
    return torch.round(x * levels) / levels


def soft_bit_depth(x: torch.Tensor, bits: int, temperature: float = 0.1) -> torch.Tensor:
    """A differentiable surrogate of :func:`bit_depth`, for BPDA with an approximation (Athalye et al.,
    2018, Section 4.1). With ``u = x (2^bits - 1)`` and ``f = u - floor(u)`` the fraction of a
    level, rounding is replaced by ``floor(u) + s(f)``, ``s`` a sigmoid of width ``temperature``
    (in level units) rescaled so that ``s(0) = 0`` and ``s(1) = 1``: a continuous staircase, steep at
    the rounding thresholds and flat (but not zero) between them, equal to ``bit_depth`` as
    ``temperature -> 0``."""
    bits = _check_bits(bits, "soft_bit_depth")
    if not (isinstance(temperature, (int, float)) and 0 < temperature < math.inf):
        raise ValueError(f"soft_bit_depth: temperature must be a number > 0, got {temperature!r}")
    levels = 2 ** bits - 1
    u = x * levels
    whole = torch.floor(u).detach()
    lo, hi = torch.sigmoid(torch.tensor(-0.5 / temperature)), torch.sigmoid(torch.tensor(0.5 / temperature))
    step = (torch.sigmoid((u - whole - 0.5) / temperature) - lo.to(x)) / (hi - lo).to(x)
    return (whole + step) / levels


def _median_filter(x: torch.Tensor, size: int, who: str) -> torch.Tensor:
    """The median over every ``size x size`` window, reflect padding; even windows extend one pixel
    further right and down than left and up."""
    if x.dim() != 4:
        raise ValueError(f"{who}: x must be a batch of images N x C x H x W, got shape {tuple(x.shape)}")
    check_batch(x, who)
    if size == 1:
        return x.clone()
    if size > min(x.shape[2:]):
        raise ValueError(f"{who}: window size {size} is larger than the image ({x.shape[2]} x {x.shape[3]})")
    before, after = (size - 1) // 2, size // 2
    padded = F.pad(x, (before, after, before, after), mode="reflect")
    windows = padded.unfold(2, size, 1).unfold(3, size, 1)  # N x C x H x W x size x size
    flat = windows.flatten(-2)
    if size % 2:
        return flat.median(-1).values
    # an even number of values: the mean of the two middle ones (the usual median of an even sample)
    middle = flat.sort(-1).values[..., size * size // 2 - 1: size * size // 2 + 1]
    return middle.mean(-1)


def median_smooth(x: torch.Tensor, size: int = 2) -> torch.Tensor:
    """Median smoothing (Xu et al., 2018, Section III-B, "local smoothing"): every pixel becomes the
    median of the ``size x size`` window starting at it (centred when ``size`` is odd; an even
    window reaches one pixel further right and down), reflect padding at the border, per channel.
    ``size=2`` is the paper's MNIST squeezer. For an even window the median is the mean of the two
    middle values. Batched, on ``x``'s device; the gradient goes to the median pixel(s)."""
    size = check_count(size, "median_smooth", "size", 1)
    return _median_filter(x, size, "median_smooth")


def spatial_smooth(x: torch.Tensor, size: int = 3) -> torch.Tensor:
    """Spatial smoothing: the median filter over a centred ``size x size`` window (``size`` odd),
    reflect padding, per channel. A median rather than a mean (see the module docstring); the same
    filter as :func:`median_smooth`, with the window centred on its pixel."""
    size = check_count(size, "spatial_smooth", "size", 1)
    if size % 2 == 0:
        raise ValueError(f"spatial_smooth: size must be odd so the window is centred on its pixel, got {size}; "
                         "for an even window use median_smooth(x, size)")
    return _median_filter(x, size, "spatial_smooth")


# ------------------------------------------------------------------------------------ randomisation
def random_resize_pad(x: torch.Tensor, pad: int | None = None, *, mode: str = "nearest",
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Random resizing and padding (Xie et al., 2018, "Mitigating adversarial effects through
    randomization", Section 3): each image, independently, is resized to ``(H + k) x (W + k)`` with
    ``k`` uniform in ``0..pad``, placed at a random offset (uniform in ``0..pad-k`` both ways) on a
    zero canvas of ``(H + pad) x (W + pad)``, and the canvas is resized back to ``H x W``
    (bilinear, antialiased) so that the model accepts it. Xie et al. use 299 -> [299, 331) in 331 on
    ImageNet; ``pad`` defaults to a quarter of the smaller side (2 pixels on 8 x 8 digits).
    ``mode``: interpolation of the first resize (``"nearest"`` or ``"bilinear"``). Differentiable in
    ``x`` for every draw (the attacker's EOT needs that); ``generator`` (CPU) makes draws repeatable."""
    if x.dim() != 4:
        raise ValueError(f"random_resize_pad: x must be a batch of images N x C x H x W, got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    pad = max(1, round(min(h, w) / 4)) if pad is None else check_count(pad, "random_resize_pad", "pad")
    if mode not in ("nearest", "bilinear"):
        raise ValueError(f"random_resize_pad: mode must be 'nearest' or 'bilinear', got {mode!r}")
    k = torch.randint(0, pad + 1, (n,), generator=generator)
    room = (pad - k).float()
    top = torch.floor(torch.rand(n, generator=generator) * (room + 1))
    left = torch.floor(torch.rand(n, generator=generator) * (room + 1))
    # resize + pad as one sampling grid per image: canvas pixel centre u + 1/2 (of S = H + pad) reads
    # the input at (u + 1/2 - offset) * H / (H + k); in grid_sample's [-1, 1] coordinates (align_corners
    # False) that is input = (S / r) * out + (S - 2 * offset) / r - 1 with r = H + k
    sh, sw, rh, rw = h + pad, w + pad, (h + k).float(), (w + k).float()
    zero = torch.zeros(n)
    theta = torch.stack([torch.stack([sw / rw, zero, (sw - 2 * left) / rw - 1], 1),
                         torch.stack([zero, sh / rh, (sh - 2 * top) / rh - 1], 1)], 1).to(x)
    grid = F.affine_grid(theta, [n, c, sh, sw], align_corners=False)
    canvas = F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)
    if pad == 0:
        return canvas
    # (no clamp: the weights are non-negative and sum to 1, and a clamp would zero the gradient of every
    # pixel at 0 or 1 -- most of a digit -- masking the gradient by accident)
    return F.interpolate(canvas, size=(h, w), mode="bilinear", align_corners=False, antialias=True)


# -------------------------------------------------------------------------------------------- BPDA
class _BPDA(torch.autograd.Function):
    """Forward: ``transform(x)``. Backward: the identity, or the vector-Jacobian product of the
    differentiable ``approx`` at ``x``."""

    @staticmethod
    def forward(ctx, x, transform, approx):
        ctx.approx = approx
        if approx is not None:
            ctx.save_for_backward(x)
        return transform(x)

    @staticmethod
    def backward(ctx, grad):
        if ctx.approx is None:
            return grad, None, None
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(ctx.approx(x), x, grad)
        return g, None, None


def bpda(transform: Transform, approx: Transform | None = None) -> Transform:
    """Backward Pass Differentiable Approximation (Athalye, Carlini & Wagner, 2018, Section 4.1):
    the function ``x -> transform(x)`` whose backward pass pretends the transform was ``approx``:
    ``grad_x L(f(g(x))) ~ J_approx(x)^T grad_z L(f(z))`` at ``z = g(x)``. With ``approx=None``
    it is the straight-through identity (``g(x) ~ x``, so ``J = I``), right for any transform that
    keeps its input nearly unchanged (squeezing, smoothing). The forward value is exactly
    ``transform(x)``."""
    if not callable(transform) or (approx is not None and not callable(approx)):
        raise ValueError("bpda: transform (and approx, if given) must be callables x -> tensor like x")

    def apply(x: torch.Tensor) -> torch.Tensor:
        return _BPDA.apply(x, transform, approx)

    return apply


class Transformed(nn.Module):
    """A transformation defense as a model: ``model(transform(x))``.

    ``bpda=False``: gradients flow through ``transform`` as autograd sees it (zero through rounding:
    what a non-adaptive attacker gets). ``bpda=True`` or ``"identity"``: the backward pass takes
    ``transform`` as the identity; ``bpda=approx`` (a differentiable callable, e.g.
    ``functools.partial(soft_bit_depth, bits=1)``): the backward pass is that approximation's
    (:func:`bpda`; Athalye et al., 2018, Section 4.1). The forward pass is the same in every case.
    Keeps the inner model's ``in_shape`` and its train / eval mode."""

    def __init__(self, model: nn.Module, transform: Transform, bpda: bool | str | Transform = False):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise ValueError(f"Transformed: model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(transform):
            raise ValueError(f"Transformed: transform must be a callable x -> tensor like x, got {transform!r}")
        if bpda is True or bpda == "identity":
            approx, self.bpda = None, "identity"
        elif bpda is False or bpda is None:
            approx, self.bpda = None, False
        elif callable(bpda):
            approx, self.bpda = bpda, bpda
        else:
            raise ValueError(f"Transformed: bpda must be False, True / 'identity' or a differentiable callable "
                             f"approximating the transform, got {bpda!r}")
        self.model, self.transform, self._approx = model, transform, approx
        if hasattr(model, "in_shape"):
            self.in_shape = model.in_shape
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.transform(x) if self.bpda is False else _BPDA.apply(x, self.transform, self._approx)
        return self.model(z)

    def extra_repr(self) -> str:
        name = getattr(self.transform, "__name__", None) or getattr(getattr(self.transform, "func", None),
                                                                     "__name__", repr(self.transform))
        return f"transform={name}, bpda={self.bpda if not callable(self.bpda) else 'approx'}"


# ------------------------------------------------------------------------------------ the detector
class FeatureSqueezing(nn.Module):
    """The feature-squeezing detector (Xu, Evans & Qi, 2018, Section III-C, eq. 1): the score of an
    input is the largest L1 distance between the model's softmax on ``x`` and on a squeezed ``x``,

        score(x) = max_i || softmax(f(x)) - softmax(f(s_i(x))) ||_1 ,

    and ``x`` is flagged adversarial when the score exceeds a threshold chosen on clean inputs for a
    target false-positive rate (:meth:`fit_threshold`). ``squeezers``: callables ``x -> s(x)`` (e.g.
    ``partial(bit_depth, bits=1)`` and ``median_smooth`` on MNIST), a sequence or a name -> callable
    mapping. Calling the detector returns the model's logits on ``x`` (a detector does not change
    the classification)."""

    def __init__(self, model: nn.Module, squeezers: Sequence[Transform] | Mapping[str, Transform]):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise ValueError(f"FeatureSqueezing: model must be a torch.nn.Module, got {type(model).__name__}")
        named = dict(squeezers) if isinstance(squeezers, Mapping) else {
            getattr(s, "__name__", None) or f"squeezer {i}": s for i, s in enumerate(squeezers)}
        if not named or not all(callable(s) for s in named.values()):
            raise ValueError("FeatureSqueezing: squeezers must be a non-empty list (or dict) of callables x -> s(x), "
                             "e.g. [functools.partial(bit_depth, bits=1), median_smooth]")
        self.model, self.squeezers = model, named
        self.threshold: float | None = None
        if hasattr(model, "in_shape"):
            self.in_shape = model.in_shape
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """The L1 gap of every squeezer, N x (number of squeezers): one forward pass over the batch
        and its squeezed copies (in memory-sized pieces)."""
        check_batch(x, "FeatureSqueezing")
        out = []
        for s in chunks(len(x), (1 + len(self.squeezers)) * x[0].numel()):
            xs = x[s]
            views = torch.cat([xs] + [sq(xs) for sq in self.squeezers.values()])
            p = F.softmax(self.model(views), 1).view(1 + len(self.squeezers), len(xs), -1)
            out.append((p[1:] - p[:1]).abs().sum(-1).T)
        return torch.cat(out)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """The detection score per input: the largest L1 gap over the squeezers."""
        return self.scores(x).amax(1)

    def fit_threshold(self, x_clean: torch.Tensor, fpr: float = 0.05) -> float:
        """Set (and return) the threshold so that at most a fraction ``fpr`` of ``x_clean`` is flagged:
        the ``(floor(fpr * n) + 1)``-th largest clean score (flagging means score > threshold)."""
        if not (isinstance(fpr, (int, float)) and 0 <= fpr < 1):
            raise ValueError(f"FeatureSqueezing.fit_threshold: fpr must be a fraction in [0, 1), got {fpr!r}")
        s = self.score(x_clean).sort(descending=True).values
        self.threshold = s[min(int(math.floor(fpr * len(s))), len(s) - 1)].item()
        return self.threshold

    def detect(self, x: torch.Tensor) -> torch.Tensor:
        """True for the inputs whose score exceeds the threshold (call :meth:`fit_threshold` first)."""
        if self.threshold is None:
            raise ValueError("FeatureSqueezing.detect: no threshold yet; call fit_threshold(x_clean, fpr=0.05) "
                             "on clean inputs first")
        return self.score(x) > self.threshold
