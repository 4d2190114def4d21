"""Where tensors live and how runs are made repeatable."""
from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["device", "seed_everything"]


def device(prefer: str | None = None) -> torch.device:
    """The best available device: CUDA, then Apple's MPS, then the CPU.

    ``ADVLIB_DEVICE`` (e.g. ``cpu`` or ``cuda:1``) or ``prefer`` overrides the choice; asking for a
    device that is not there is an error rather than a silent fallback.
    """
    name = prefer or os.environ.get("ADVLIB_DEVICE")
    if name:
        dev = torch.device(name)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} was asked for, but CUDA is not available here; "
                               "unset ADVLIB_DEVICE or use 'cpu'.")
        if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise RuntimeError(f"device {name!r} was asked for, but MPS is not available here; "
                               "unset ADVLIB_DEVICE or use 'cpu'.")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0, *, deterministic: bool = True) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (all devices) and return a CPU generator seeded the same way.

    With ``deterministic`` cuDNN picks deterministic kernels, so a fast-profile run on the same
    machine and library versions repeats exactly (on a GPU, up to the few ops that have no
    deterministic kernel).
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)
