"""Watermarks in input gradients: embed an N-bit signature in a model, read it back white- or black-box.

The lecture's recipe: "embed an N-bit vector in a subset of dimensions of the input gradients" and
"extract it remotely from a black box by gradient estimation". The owner keeps a secret **key**:
``K`` key inputs ``x_k`` with a class ``c_k`` each, ``N`` input coordinates ``i_1 .. i_N`` and the
bits ``b in {-1, +1}^N``. The mark is the sign pattern of the input gradient of the key class's
log-probability, averaged over the keys,

    g_j = (1/K) sum_k d log p_{c_k}(x_k) / d x[i_j],        bit_j = sign(g_j).

**Embedding** adds to the training loss a hinge on every key's gradient (a double back-propagation:
the gradient is differentiated with respect to the weights)

    L = CE + lambda * (1/KN) sum_{k,j} max(0, m - b_j * d log p_{c_k}(x_k) / d x[i_j]),

so that each key carries the whole signature with a margin ``m``. **Extraction** reads the signs:
from the exact gradient (white box), or from finite differences of the black box's probabilities
(:func:`advlib.zo.coordinate_estimate` on the N coordinates, or :func:`advlib.zo.estimate` along random
directions), paying queries. A model that was never marked gives each bit by chance.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..blackbox import BlackBox
from ..threat import check_batch, check_budget, check_count, check_model_input, require_eval
from ..train import fit
from ..zo import coordinate_estimate, estimate

__all__ = ["Watermark", "make_watermark", "key_gradients", "watermark_loss", "embed", "extract",
           "extract_blackbox", "bit_error"]


@dataclass
class Watermark:
    """The owner's secret: key inputs ``keys`` (``K x shape``, inside (0, 1) so that finite differences
    stay in the box), their classes ``classes`` (``K``), the flat coordinates ``coords`` (``N``) and the
    ``bits`` (``N``, entries -1 or +1)."""

    keys: torch.Tensor
    classes: torch.Tensor
    coords: torch.Tensor
    bits: torch.Tensor

    def to(self, device) -> Watermark:
        return Watermark(*(t.to(device) for t in (self.keys, self.classes, self.coords, self.bits)))


def make_watermark(shape, n_bits: int = 32, n_keys: int = 16, n_classes: int = 10, *, low: float = 0.25,
                   high: float = 0.75, seed: int = 0, device=None) -> Watermark:
    """A random key: ``n_keys`` uniform-noise inputs of ``shape`` in ``[low, high]``, a random class each,
    ``n_bits`` distinct coordinates and random bits, all from one seeded generator."""
    n_bits, n_keys = check_count(n_bits, "make_watermark", "n_bits", 1), check_count(n_keys, "make_watermark",
                                                                                       "n_keys", 1)
    d = int(torch.Size(shape).numel())
    if n_bits > d:
        raise ValueError(f"make_watermark: n_bits ({n_bits}) cannot exceed the input's {d} coordinates")
    if not 0 < low < high < 1:
        raise ValueError(f"make_watermark: need 0 < low < high < 1 (keys inside the box), got {low}, {high}")
    g = torch.Generator().manual_seed(seed)
    keys = low + (high - low) * torch.rand(n_keys, *shape, generator=g)
    classes = torch.randint(n_classes, (n_keys,), generator=g)
    coords = torch.randperm(d, generator=g)[:n_bits]
    bits = torch.randint(2, (n_bits,), generator=g) * 2 - 1
    return Watermark(keys, classes, coords, bits.float()).to(device or "cpu")


def _log_prob(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(model(x), 1).gather(1, classes[:, None]).squeeze(1)


def key_gradients(model: nn.Module, wm: Watermark, *, create_graph: bool = False) -> torch.Tensor:
    """``d log p_{c_k}(x_k) / d x[i_j]`` for every key ``k`` and coordinate ``j``: ``K x N``."""
    keys = wm.keys.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(_log_prob(model, keys, wm.classes).sum(), keys, create_graph=create_graph)
    return g.flatten(1)[:, wm.coords]


def watermark_loss(model: nn.Module, wm: Watermark, margin: float = 0.5) -> torch.Tensor:
    """The embedding term ``(1/KN) sum_{k,j} max(0, m - b_j g_kj)`` (module docstring), differentiable in the
    weights."""
    return F.relu(margin - wm.bits * key_gradients(model, wm, create_graph=True)).mean()


def embed(model: nn.Module, train, wm: Watermark, *, lam: float = 1.0, margin: float = 0.5, epochs: int = 10,
          lr: float = 1e-3, batch_size: int = 64, weight_decay: float = 0.0, test=None, seed: int = 0,
          progress: bool = True) -> dict:
    """Train ``model`` on ``train`` with ``CE + lam * watermark_loss`` (:func:`advlib.train.fit` with a loss
    hook): from scratch, or from trained weights to mark an existing model. Returns fit's history."""
    check_budget(lam, "embed", name="lam", positive=True)
    check_budget(margin, "embed", name="margin", positive=True)
    wm = wm.to(next(model.parameters()).device)

    def loss(net, x, y, progress):
        return F.cross_entropy(net(x), y) + lam * watermark_loss(net, wm, margin)

    return fit(model, train, test, epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay,
               loss=loss, seed=seed, progress=progress)


def extract(model: nn.Module, wm: Watermark) -> torch.Tensor:
    """White-box extraction: the signs of the key gradients averaged over the keys (``N`` entries +-1)."""
    require_eval(model, "extract")
    check_model_input(model, wm.keys, "extract")
    return torch.sign(key_gradients(model, wm.to(wm.keys.device)).mean(0))


def extract_blackbox(box: BlackBox, wm: Watermark, *, q: int | None = None, n_keys: int | None = None,
                     h: float = 1e-3, seed: int = 0) -> tuple[torch.Tensor, int]:
    """Black-box extraction from the box's probabilities of the first ``n_keys`` keys (default all).

    ``q=None``: symmetric differences along the N marked coordinates (ZOO's estimator, step ``h``):
    ``2N`` queries per key. ``q`` an integer: the antithetic random-direction estimate of the whole
    gradient from ``q`` directions on the unit sphere (step ``h``; ``2q`` queries per key), read at the
    marked coordinates — cheaper per key, noisier per bit. Returns the bits (``N`` entries +-1) and the
    queries this extraction made."""
    if box.output != "scores":
        raise ValueError("extract_blackbox: reading a gradient needs probabilities; use BlackBox(model, 'scores')")
    check_budget(h, "extract_blackbox", name="h", positive=True)
    k = len(wm.keys) if n_keys is None else check_count(n_keys, "extract_blackbox", "n_keys", 1)
    if k > len(wm.keys):
        raise ValueError(f"extract_blackbox: n_keys ({k}) exceeds the key's {len(wm.keys)} inputs")
    wm = wm.to(box.device)
    keys, classes = wm.keys[:k], wm.classes[:k]
    check_batch(keys, "extract_blackbox")
    if float(keys.min()) < h or float(keys.max()) > 1 - h:
        raise ValueError(f"extract_blackbox: keys must lie in [h, 1 - h] = [{h}, {1 - h}] for the finite "
                         "differences to stay in the box")
    before = box.queries

    def f(x: torch.Tensor) -> torch.Tensor:  # log p_{c_k} of a batch laid out key by key
        c = classes.repeat_interleave(len(x) // k)
        return box.scores(x).clamp_min(1e-30).log().gather(1, c[:, None]).squeeze(1)

    if q is None:  # the symmetric differences need no f(x): fx is a placeholder (H is not used)
        grads, _ = coordinate_estimate(f, keys, wm.coords.expand(k, -1), h=h, fx=torch.zeros(k, device=keys.device))
    else:
        q = check_count(q, "extract_blackbox", "q", 1)
        gen = torch.Generator(device=keys.device).manual_seed(seed)
        g, _ = estimate(f, keys, q=q, beta=h, kind="sphere", antithetic=True, generator=gen)
        grads = g.flatten(1)[:, wm.coords]
    return torch.sign(grads.mean(0)), box.queries - before


def bit_error(bits: torch.Tensor, wm: Watermark) -> float:
    """The fraction of the N bits that differ from the watermark's (a zero estimate counts as an error)."""
    return float((bits.to(wm.bits.device) != wm.bits).float().mean())
