"""Hierarchical random switching (HRS; Wang et al., 2019, IJCAI, "Protecting neural networks with
hierarchical random switching: towards better robustness-accuracy trade-off for stochastic defenses").

The network is cut into ``B`` blocks; block ``b`` holds ``M_b`` parallel *channels*, sub-networks
with the same input and output shapes. Every forward pass draws, for every input and every block,
one channel uniformly at random, so the attacker faces ``prod_b M_b`` networks at once and never
knows which one will answer. The channels are trained bottom-up (Section 3.2) so that any path
through them is accurate: the channels of block 1 are trained one by one, each under a freshly
initialised upper network; then block 1 is frozen and *switches at random* while each channel of
block 2 is trained under a fresh upper network; and so on up to the last block.

A random defense is evaluated with EOT (Athalye et al., 2018): the gradient of the loss averaged
over the model's draws, e.g. ``advlib.attacks.eot_pgd(hrs, x, y, eps=0.1, steps=40,
transform=lambda x: x, samples=16)`` (the batch is repeated, each copy drawing its own paths).
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..models import Normalize
from ..train import fit

__all__ = ["HRS", "hrs_cnn", "hrs_train"]


class HRS(nn.Module):
    """A network of ``B`` blocks, each of ``M_b >= 1`` parallel channels; ``forward`` draws one
    channel per block and per input, uniformly at random (Wang et al., 2019, Section 3.1).

    ``blocks``: a sequence of ``B`` sequences of modules (block ``b``'s channels). ``fixed``: a
    tuple of ``B`` channel indices to use for every input instead of drawing (deterministic), as the
    default of ``forward(x, fixed=...)``. ``generator``: a CPU ``torch.Generator`` for repeatable
    draws (else the global generator of ``x``'s device). ``in_shape`` (C x H x W): checks at once
    that the channels of each block agree on their output shape, and is kept as ``.in_shape``.

    The draw is batched: the inputs are grouped by the channel drawn for them, each channel runs
    once on its group, and the outputs go back in the inputs' order."""

    def __init__(self, blocks: Sequence[Sequence[nn.Module]], *, fixed: Sequence[int] | None = None,
                 generator: torch.Generator | None = None, in_shape: Sequence[int] | None = None):
        super().__init__()
        if isinstance(blocks, nn.Module) and not isinstance(blocks, nn.ModuleList) or not len(blocks):
            raise ValueError("HRS: blocks must be a non-empty list of blocks, each a list of parallel channels "
                             "(modules with the same input and output shapes)")
        for b, block in enumerate(blocks):
            if isinstance(block, nn.Module) and not isinstance(block, nn.ModuleList):
                raise ValueError(f"HRS: block {b} is a single module; give each block as a list of its channels, "
                                 f"e.g. [{type(block).__name__}(...)] for one channel")
            if len(block) < 1 or not all(isinstance(c, nn.Module) for c in block):
                raise ValueError(f"HRS: block {b} must hold at least one channel (M >= 1), every channel an "
                                 f"nn.Module; got {len(block)} entries")
        self.blocks = nn.ModuleList(nn.ModuleList(block) for block in blocks)
        self.generator = generator
        self.fixed = None if fixed is None else self._check_fixed(fixed)
        if in_shape is not None:
            self.in_shape = tuple(in_shape)
            self._check_shapes(torch.zeros(2, *self.in_shape))

    @property
    def channels(self) -> tuple[int, ...]:
        """``(M_1, ..., M_B)``: the number of channels of each block."""
        return tuple(len(block) for block in self.blocks)

    def _check_fixed(self, fixed) -> tuple[int, ...]:
        fixed = tuple(fixed)
        if len(fixed) != len(self.blocks) or not all(
                isinstance(j, int) and not isinstance(j, bool) and 0 <= j < m for j, m in zip(fixed, self.channels)):
            raise ValueError(f"HRS: fixed must give one channel index per block, each in 0..M_b - 1 for channels "
                             f"{self.channels}; got {fixed}")
        return fixed

    @torch.no_grad()
    def _check_shapes(self, x: torch.Tensor) -> None:
        """Run every channel of every block on a probe batch (in eval mode) and compare output shapes."""
        modes = [m.training for m in self.modules()]
        self.eval()
        try:
            for b, block in enumerate(self.blocks):
                outs = [c(x) for c in block]
                shapes = [tuple(o.shape[1:]) for o in outs]
                if len(set(shapes)) > 1:
                    raise ValueError(f"HRS: the channels of block {b} give outputs of different shapes {shapes}; "
                                     "parallel channels must map the same input shape to the same output shape")
                x = outs[0]
        finally:
            for m, mode in zip(self.modules(), modes):
                m.training = mode

    def draw(self, n: int, device=None) -> torch.Tensor:
        """Channel indices for ``n`` inputs, ``n x B``, each uniform in ``0..M_b - 1``."""
        if self.generator is not None:
            return torch.stack([torch.randint(m, (n,), generator=self.generator) for m in self.channels], 1).to(device)
        return torch.stack([torch.randint(m, (n,), device=device) for m in self.channels], 1)

    def forward(self, x: torch.Tensor, fixed: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """``x`` through one channel per block: ``fixed`` (a tuple of B indices, or an N x B tensor
        of per-input indices), else ``self.fixed``, else a fresh uniform draw per input."""
        fixed = self.fixed if fixed is None else fixed
        if fixed is not None and not isinstance(fixed, torch.Tensor):
            fixed = self._check_fixed(fixed)
            for block, j in zip(self.blocks, fixed):
                x = block[j](x)
            return x
        paths = self.draw(len(x), x.device) if fixed is None else fixed.to(x.device)
        if paths.shape != (len(x), len(self.blocks)) or (paths < 0).any() or (
                paths >= torch.tensor(self.channels, device=x.device)).any():
            raise ValueError(f"HRS: per-input channels must be an N x B = {len(x)} x {len(self.blocks)} tensor of "
                             f"indices below {self.channels}, got shape {tuple(paths.shape)}")
        for b, block in enumerate(self.blocks):
            x = _switch(block, x, paths[:, b], b)
        return x


def _switch(block: nn.ModuleList, x: torch.Tensor, idx: torch.Tensor, b: int) -> torch.Tensor:
    """Channel ``idx[i]`` of ``block`` applied to ``x[i]``, one call per channel on its group."""
    if len(block) == 1:
        return block[0](x)
    order = torch.argsort(idx, stable=True)
    counts = torch.bincount(idx, minlength=len(block)).tolist()
    outs = [block[j](part) for j, part in enumerate(torch.split(x[order], counts)) if counts[j]]
    shapes = {tuple(o.shape[1:]) for o in outs}
    if len(shapes) > 1:
        raise ValueError(f"HRS: the channels of block {b} give outputs of different shapes {sorted(shapes)}; "
                         "parallel channels must map the same input shape to the same output shape")
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order), device=order.device)
    return torch.cat(outs)[inverse]


def hrs_cnn(in_shape=(1, 8, 8), channels_per_block: int | Sequence[int] = 4, channels: Sequence[int] = (16, 32),
            strides: Sequence[int] = (1, 2), hidden: int = 100, n_classes: int = 10, mean=None, std=None) -> HRS:
    """:func:`advlib.models.small_cnn` cut into blocks for HRS: one block per convolution (the first
    starting with :class:`advlib.models.Normalize` by ``mean`` / ``std``), and the dense head
    ``Linear-ReLU-Linear`` as the last block, so ``B = len(channels) + 1``. ``channels_per_block``:
    ``M`` for every block, or one ``M_b`` per block. Each channel is initialised independently."""
    if len(channels) != len(strides):
        raise ValueError(f"hrs_cnn: channels and strides must have the same length, got {channels} and {strides}")
    n_blocks = len(channels) + 1
    per = [channels_per_block] * n_blocks if isinstance(channels_per_block, int) else list(channels_per_block)
    if len(per) != n_blocks or not all(isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in per):
        raise ValueError(f"hrs_cnn: channels_per_block must be an integer >= 1 or {n_blocks} of them (one per "
                         f"block: {len(channels)} convolutions and the head), got {channels_per_block!r}")
    c, h, w = in_shape
    makers: list[Callable[[], nn.Module]] = []
    for i, (c_out, s) in enumerate(zip(channels, strides)):
        k = 3 if s == 1 else 4
        last = i == len(channels) - 1

        def conv(c=c, c_out=c_out, k=k, s=s, first=i == 0, last=last) -> nn.Module:
            norm = Normalize([0.0] * c if mean is None else mean, [1.0] * c if std is None else std)
            layers = [norm] if first else []
            layers += [nn.Conv2d(c, c_out, k, s, 1), nn.ReLU()] + ([nn.Flatten()] if last else [])
            return nn.Sequential(*layers)

        makers.append(conv)
        c, h, w = c_out, (h + 2 - k) // s + 1, (w + 2 - k) // s + 1
    width = c * h * w
    makers.append(lambda: nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, n_classes)))
    return HRS([[make() for _ in range(m)] for make, m in zip(makers, per)], in_shape=in_shape)


class _Frozen(nn.Module):
    """Trained lower blocks during a later stage: parameters already frozen, and kept in eval mode
    (``fit`` switches the network to train mode every epoch; batch-norm statistics must not move)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def train(self, mode: bool = True):
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def _fresh(channel: nn.Module) -> nn.Module:
    """A newly initialised copy of ``channel`` (every submodule with ``reset_parameters``)."""
    new = copy.deepcopy(channel)
    for m in new.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    for p in new.parameters():
        p.requires_grad_(True)
    return new


def hrs_train(model_or_builder: HRS | Callable[[], HRS], train, test=None, *, epochs: int, lr: float = 2e-3,
              seed: int = 0, progress: bool = True, **fit_kwargs) -> HRS:
    """Bottom-up HRS training (Wang et al., 2019, Section 3.2). For block ``b = 1..B``, for each of its
    channels ``j``: train the network ``[blocks 1..b-1 switching at random, frozen] -> channel (b, j)
    -> [a freshly initialised channel for each block above b]`` with :func:`advlib.train.fit`
    (``epochs``, ``lr`` and any other ``fit`` argument, e.g. a robust recipe's ``perturb=`` /
    ``loss=``), keep channel ``(b, j)`` and drop the upper channels; then freeze block ``b``
    (``requires_grad=False``). The model's ``requires_grad`` flags are restored at the end.

    ``model_or_builder``: an :class:`HRS` (its channels are trained in place) or a function
    returning one (e.g. ``lambda: hrs_cnn(channels_per_block=3)``). Returns the trained model in eval
    mode; ``model.stage_history`` lists each stage's ``fit`` history with its ``block`` and ``channel``.
    Stage ``k`` (counting from 0) is seeded with ``seed + k``."""
    model = model_or_builder if isinstance(model_or_builder, nn.Module) else model_or_builder()
    if not isinstance(model, HRS):
        raise ValueError(f"hrs_train: needs an HRS model (or a function returning one, e.g. hrs_cnn), got "
                         f"{type(model).__name__}")
    flags = [p.requires_grad for p in model.parameters()]
    history, stage = [], 0
    try:
        for b, block in enumerate(model.blocks):
            lower = _Frozen(HRS(model.blocks[:b], generator=model.generator)) if b else nn.Identity()
            for j, channel in enumerate(block):
                torch.manual_seed(seed + stage)
                upper = [_fresh(model.blocks[k][0]) for k in range(b + 1, len(model.blocks))]
                for p in channel.parameters():
                    p.requires_grad_(True)
                net = nn.Sequential(lower, channel, *upper)
                h = fit(net, train, test, epochs=epochs, lr=lr, seed=seed + stage, progress=progress, **fit_kwargs)
                history.append({"block": b, "channel": j, **h})
                stage += 1
            for p in block.parameters():
                p.requires_grad_(False)
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
    model.stage_history = history
    return model.eval()
