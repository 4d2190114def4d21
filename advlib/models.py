"""Small architectures for the course.

Every model takes images in [0, 1] (N x C x H x W) and returns logits; any normalisation happens
inside the model (a :class:`Normalize` first layer), so attacks and certificates work in the
input space a person sees. The models are plain ``nn.Sequential`` stacks of standard layers (and
:class:`ResidualBlock` for the ResNet) so the verification engine can walk them layer by layer.
"""
from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["Normalize", "ResidualBlock", "mlp", "small_cnn", "cnn1d", "resnet", "build", "ARCHITECTURES"]


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel: an affine layer, so certificates pass straight through it.
    ``spatial`` is the number of axes after the channel axis (2 for images ``C x H x W``, 1 for series)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], spatial: int = 2):
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, *[1] * spatial)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(-1, *[1] * spatial)
        if (std_t <= 0).any():
            raise ValueError(f"Normalize needs positive std, got {list(std)}")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class ResidualBlock(nn.Module):
    """``relu(body(x) + shortcut(x))`` (He et al., 2016, the basic block)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out),
        )
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        else:
            self.shortcut = nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


def _norm(in_shape, mean, std) -> Normalize:
    c = in_shape[0]
    return Normalize([0.0] * c if mean is None else mean, [1.0] * c if std is None else std, len(in_shape) - 1)


def mlp(in_shape=(1, 8, 8), hidden: Sequence[int] = (100, 100), n_classes: int = 10,
        activation: str = "relu", mean=None, std=None) -> nn.Sequential:
    """A fully connected ReLU (or tanh / sigmoid) network, e.g. 64-100-100-10 on 8x8 digits."""
    act = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}[activation]
    layers: list[nn.Module] = [_norm(in_shape, mean, std), nn.Flatten()]
    width = int(torch.tensor(in_shape).prod())
    for h in hidden:
        layers += [nn.Linear(width, h), act()]
        width = h
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)


def small_cnn(in_shape=(1, 8, 8), channels: Sequence[int] = (16, 32), strides: Sequence[int] = (1, 2),
              hidden: int = 100, n_classes: int = 10, mean=None, std=None) -> nn.Sequential:
    """Conv-ReLU layers (kernel 3 at stride 1, kernel 4 at stride 2, padding 1), then an MLP head.

    With ``strides=(2, 2)`` on 28x28 inputs this is the "small" MNIST network of the
    certified-training literature (Wong & Kolter 2018; Gowal et al. 2018).
    """
    if len(channels) != len(strides):
        raise ValueError("channels and strides must have the same length")
    c, h, w = in_shape
    layers: list[nn.Module] = [_norm(in_shape, mean, std)]
    for c_out, s in zip(channels, strides):
        k = 3 if s == 1 else 4
        layers += [nn.Conv2d(c, c_out, k, s, 1), nn.ReLU()]
        c, h, w = c_out, (h + 2 - k) // s + 1, (w + 2 - k) // s + 1
    layers += [nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, n_classes)]
    return nn.Sequential(*layers)


def cnn1d(in_shape=(1, 320), channels: Sequence[int] = (16, 32, 64), kernel: int = 5, hidden: int = 64,
          n_classes: int = 10, mean=None, std=None) -> nn.Sequential:
    """A 1-D convolutional network for series ``C x L``: conv-ReLU layers (``kernel`` at stride 2), global
    average pooling over time and an MLP head: the frozen source model of V2S-style reprogramming."""
    layers: list[nn.Module] = [_norm(in_shape, mean, std)]
    c = in_shape[0]
    for c_out in channels:
        layers += [nn.Conv1d(c, c_out, kernel, 2, kernel // 2), nn.ReLU()]
        c = c_out
    layers += [nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(c, hidden), nn.ReLU(), nn.Linear(hidden, n_classes)]
    return nn.Sequential(*layers)


def resnet(in_shape=(3, 32, 32), widths: Sequence[int] = (16, 32, 64), blocks_per_stage: int = 1,
           n_classes: int = 10, mean=None, std=None) -> nn.Sequential:
    """A small CIFAR ResNet: a 3x3 stem, stages of basic blocks (stride 2 between stages),
    global average pooling and a linear head. ``blocks_per_stage=1`` gives ResNet-8, 3 gives ResNet-20."""
    layers: list[nn.Module] = [_norm(in_shape, mean, std),
                               nn.Conv2d(in_shape[0], widths[0], 3, 1, 1, bias=False),
                               nn.BatchNorm2d(widths[0]), nn.ReLU()]
    c = widths[0]
    for i, w in enumerate(widths):
        for j in range(blocks_per_stage):
            layers.append(ResidualBlock(c, w, stride=2 if (i > 0 and j == 0) else 1))
            c = w
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, n_classes)]
    return nn.Sequential(*layers)


ARCHITECTURES = {"mlp": mlp, "cnn": small_cnn, "cnn1d": cnn1d, "resnet": resnet}


def build(arch: str, **kwargs) -> nn.Sequential:
    """Build an architecture by name (``mlp``, ``cnn``, ``resnet``) with its keyword arguments."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    model = ARCHITECTURES[arch](**kwargs)
    # the input shape it was built for (C x H x W): the input checks of advlib.threat compare with it
    default = inspect.signature(ARCHITECTURES[arch]).parameters["in_shape"].default
    model.in_shape = tuple(kwargs.get("in_shape", default))
    return model
