"""Expectation over transformation (EOT): adversarial examples that survive the physical world.

A printed or 3-D-printed adversarial example is seen from other angles, distances and lighting.
Athalye et al. (2018, "Synthesizing robust adversarial examples", the 3-D-printed turtle that is
classified as a rifle) optimise the *expected* loss over a distribution of transformations; the
adversarial T-shirt (Xu et al., 2020) adds thin-plate-spline deformations of cloth to the same idea.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..threat import check_batch, check_count, check_inputs, chunks, clip_box, project
from ._common import step_size
from .pgd import _loss, _random_start, _step

__all__ = ["random_transform", "eot_pgd", "eot_success"]

Transform = Callable[[torch.Tensor], torch.Tensor]


def random_transform(max_shift: float = 1.0, max_rotation: float = 15.0,
                     brightness: tuple[float, float] = (0.8, 1.2),
                     generator: torch.Generator | None = None) -> Transform:
    """A random, differentiable image transformation ``t(x)`` applied to a batch ``N x C x H x W``:
    each call draws, for every image independently, a shift of up to ``max_shift`` pixels in each
    direction, a rotation of up to ``max_rotation`` degrees about the centre (both by
    ``affine_grid`` / ``grid_sample``, bilinear, zero background) and a brightness factor uniform in
    ``brightness`` (multiplicative), then clips to [0, 1] (straight-through: the gradient passes the clip
    unchanged). Gradients flow to ``x``. ``generator``
    (a CPU generator) makes the draws repeatable."""
    lo, hi = brightness
    if max_shift < 0 or max_rotation < 0 or not 0 <= lo <= hi:
        raise ValueError(f"random_transform: need max_shift >= 0, max_rotation >= 0 and 0 <= brightness[0] <= "
                         f"brightness[1]; got {max_shift}, {max_rotation}, {brightness}")

    def transform(x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"random_transform expects images N x C x H x W, got shape {tuple(x.shape)}")
        n, _, h, w = x.shape

        def uniform(a: float, b: float) -> torch.Tensor:
            return (a + (b - a) * torch.rand(n, generator=generator)).to(device=x.device, dtype=x.dtype)

        angle = uniform(-max_rotation, max_rotation) * math.pi / 180
        # affine_grid works in normalised coordinates [-1, 1]: one pixel is 2 / size
        tx, ty = uniform(-max_shift, max_shift) * 2 / w, uniform(-max_shift, max_shift) * 2 / h
        cos, sin = angle.cos(), angle.sin()
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = out * uniform(lo, hi).view(n, 1, 1, 1)
        # clipped to [0, 1] with a straight-through gradient: since torch 2.14 the gradient of a clamp
        # is 0 at its bounds, which would hide every background pixel (exactly 0) from the attack
        return out + (out.clamp(0, 1) - out).detach()

    transform.params = {"max_shift": max_shift, "max_rotation": max_rotation, "brightness": (lo, hi)}
    return transform


def eot_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int,
            alpha: float | None = None, transform: Transform, samples: int = 16, norm: str = "linf",
            targeted: bool = False, loss: str = "ce", random_start: bool = True) -> torch.Tensor:
    """PGD on the expectation over transformation (Athalye et al., 2018):

        max_{||delta|| <= eps, x + delta in [0, 1]}  E_{t ~ T} [ loss(f(t(x + delta)), y) ],

    the expectation estimated at every step by ``samples`` fresh draws of ``transform`` (e.g.
    :func:`random_transform`) per input, all in one batched forward and backward pass (the batch is
    repeated ``samples`` times). ``alpha`` defaults to ``2.5 * eps / steps``. Returns ``x + delta``
    (untransformed: the object the attacker would print)."""
    check_inputs(model, x, y, who="eot_pgd", eps=eps, steps=steps, norm=norm)
    samples = check_count(samples, "eot_pgd", "samples", 1)
    alpha = step_size("eot_pgd", alpha, eps, steps)
    x, y = x.detach(), y.detach()
    y_rep = y.repeat(int(samples))
    delta = _random_start(x, eps, norm) if random_start else torch.zeros_like(x)
    for _ in range(steps):
        delta.requires_grad_(True)
        x_rep = (x + delta).repeat(int(samples), *[1] * (x.dim() - 1))  # samples * N inputs
        (grad,) = torch.autograd.grad(_loss(model(transform(x_rep)), y_rep, loss, targeted).sum(), delta)
        delta = clip_box(x, project(delta.detach() + alpha * _step(grad, norm, x + delta.detach()), eps, norm))
    return (x + delta).detach()


@torch.no_grad()
def eot_success(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, transform: Transform,
                samples: int = 64, targeted: bool = False) -> torch.Tensor:
    """Per input, the fraction of ``samples`` random transformations under which ``x_adv`` still
    fools ``model``: predicted label != ``y`` (untargeted) or == ``y`` (targeted). A tensor of
    length N; ``.mean()`` is the attack's success rate in the "physical" world of ``transform``."""
    check_batch(x_adv, "eot_success")
    samples = check_count(samples, "eot_success", "samples", 1)
    hits = torch.zeros(len(x_adv), device=x_adv.device)
    for s in chunks(samples, x_adv.numel()):  # as many transformed copies of the batch as fit
        k = s.stop - s.start
        pred = model(transform(x_adv.repeat(k, *[1] * (x_adv.dim() - 1)))).argmax(1).view(k, -1)
        hits += (pred == y if targeted else pred != y).float().sum(0)
    return hits / samples
