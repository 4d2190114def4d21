"""The adversarial program: the target input placed inside the source input, plus a trainable pattern.

BAR (Tsai, Chen & Ho 2020, eq. 1; after Elsayed et al. 2019) in the source domain ``[-1, 1]^d``::

    X~ = Pad(T) + P,    P = tanh(W * M)

with ``M`` the mask: 0 on the target, 1 around it (``mask="outside"``), or 1 everywhere so that the program
also adds to the target (``mask="all"``); a tensor gives any other weight. Images here live in ``[0, 1]``:
the same map, affinely, is ``X~ = clip(Pad_{1/2}(T) + tanh(W * M) / 2, 0, 1)``, padding with mid-grey (the
paper's 0) and an amplitude of one half; the clip is idle when ``M`` is 0 on the target. V2S (Yang, Tsai &
Chen 2021, Algorithm 1) reprograms series without squashing or a box: ``H(x) = Pad(x) + M * theta``
(``form="additive"``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Program", "FORMS", "PLACEMENTS", "MASKS"]

FORMS = ("tanh", "additive")
PLACEMENTS = ("center", "resize")
MASKS = ("outside", "all")


class Program(nn.Module):
    """``X~ = place(T) + pattern(W)`` for targets of shape ``target_shape`` inside a source input of
    ``source_shape`` (both ``C x ...``: images ``C x H x W``, series ``C x L``; the channels must agree).

    ``placement``: ``"center"`` pads the target to the source size around its centre; ``"resize"``
    first resizes it (bilinear / linear) to ``size`` (spatial shape; default: the whole source input).
    ``form="tanh"``: BAR's bounded program for images in ``[0, 1]`` (module docstring); ``"additive"``:
    V2S's ``Pad(x) + M * theta``. ``W`` starts at ``init * N(0, 1)`` (seeded by ``seed``).

    ``program(x)`` maps a batch ``N x target_shape`` to ``N x source_shape``; ``program(x, W)`` with a
    batch of ``m`` patterns ``W`` (``m x source_shape``) gives ``m x N x source_shape``: every pattern on
    every input, the batch a zeroth-order estimate evaluates.
    """

    def __init__(self, source_shape, target_shape, *, form: str = "tanh", placement: str = "center",
                 mask="outside", size=None, init: float = 0.01, seed: int = 0):
        super().__init__()
        source_shape, target_shape = tuple(source_shape), tuple(target_shape)
        if form not in FORMS:
            raise ValueError(f"Program: form must be one of {FORMS} (images in [0, 1] / series), got {form!r}")
        if placement not in PLACEMENTS:
            raise ValueError(f"Program: placement must be one of {PLACEMENTS}, got {placement!r}")
        if (len(source_shape) != len(target_shape) or source_shape[0] != target_shape[0]
                or len(source_shape) not in (2, 3)):
            raise ValueError(f"Program: source {source_shape} and target {target_shape} must both be C x L (series) "
                             "or C x H x W (images) with the same channels; encode other targets first "
                             "(advlib.reprogram.tasks.encode_table)")
        self.form, self.placement = form, placement
        self.source_shape, self.target_shape = source_shape, target_shape
        default = source_shape[1:] if placement == "resize" else target_shape[1:]
        self.size = tuple(size) if size is not None else default
        if any(s > t for s, t in zip(self.size, source_shape[1:])):
            raise ValueError(f"Program: the target ({'x'.join(map(str, self.size))} after placement) does not fit "
                             f"inside the source input {source_shape}; use placement='resize' with a smaller size")
        lead = [(t - s) // 2 for s, t in zip(self.size, source_shape[1:])]
        self._pad = [v for s, t, a in reversed(list(zip(self.size, source_shape[1:], lead))) for v in (a, t - s - a)]
        inside = torch.zeros(source_shape)
        inside[(slice(None), *[slice(a, a + s) for a, s in zip(lead, self.size)])] = 1
        self.register_buffer("inside", inside)  # 1 where the target lies
        if isinstance(mask, torch.Tensor):
            if tuple(mask.shape) != source_shape:
                raise ValueError(f"Program: a mask tensor must have the source shape {source_shape}, got "
                                 f"{tuple(mask.shape)}")
            m = mask.float()
        elif mask == "outside":
            m = 1 - inside
        elif mask == "all":
            m = torch.ones(source_shape)
        else:
            raise ValueError(f"Program: mask must be one of {MASKS} or a tensor of the source shape, got {mask!r}")
        self.register_buffer("mask", m)
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(init * torch.randn(source_shape, generator=g))

    @property
    def free(self) -> torch.Tensor:
        """Flat indices of the coordinates of ``W`` the mask lets act (the others change nothing)."""
        return self.mask.flatten().nonzero().flatten()

    def place(self, x: torch.Tensor) -> torch.Tensor:
        """The target inputs ``N x target_shape`` inside the source input, the rest filled (mid-grey for
        ``form="tanh"``, 0 for series)."""
        if tuple(x.shape[1:]) != self.target_shape:
            raise ValueError(f"Program: expected targets of shape N x {self.target_shape}, got {tuple(x.shape)}")
        if self.size != self.target_shape[1:]:
            x = F.interpolate(x, size=self.size, mode="bilinear" if x.dim() == 4 else "linear", align_corners=False)
        return F.pad(x, self._pad, value=0.5 if self.form == "tanh" else 0.0)

    def pattern(self, W: torch.Tensor | None = None) -> torch.Tensor:
        """``P = tanh(W * M) / 2`` (images, the [0, 1] form) or ``M * W`` (series)."""
        W = self.W if W is None else W
        return torch.tanh(W * self.mask) / 2 if self.form == "tanh" else self.mask * W

    def forward(self, x: torch.Tensor, W: torch.Tensor | None = None) -> torch.Tensor:
        base = self.place(x)
        if W is not None:  # m patterns x N inputs
            base = base[None]
            p = self.pattern(W)[:, None]
        else:
            p = self.pattern()
        out = base + p
        return out.clamp(0, 1) if self.form == "tanh" else out

    def extra_repr(self) -> str:
        return (f"form={self.form!r}, placement={self.placement!r}, target={self.target_shape} -> "
                f"source={self.source_shape}, free coordinates={int(self.mask.count_nonzero())}")
