"""Temporal-dependency (TD) detection of adversarial sequences (Yang, Li, Chen & Song,
"Characterizing Audio Adversarial Examples Using Temporal Dependency", ICLR 2019).

A sequence model that labels every step of a series (a speech recogniser's transcription; here a
bidirectional tagger on a generated series task, since no audio data ships offline) reads each step
in the context of the whole series. On a natural series, the labels it gives the first ``k`` steps
alone agree with the first ``k`` labels it gives the whole series. The paper's premise is that an
adversarial perturbation optimised for the whole series relies on that context — the hidden
"command" is spread over the whole input — so that cutting the series breaks it; how well that holds
depends on how far the model's labels depend on distant context (lecture 52 measures both on its
tagger). TD's score is the disagreement

    TD(x; k) = 1 - (1/k) sum_{t < k} [ label_t(x_{1:k}) == label_t(x_{1:L}) ],

and a series is flagged adversarial when it is high (the paper compares transcriptions by word and
character error rates; per-step labels make it an error rate over steps). The detector is only as
good as its evaluation against an attacker who knows it: :func:`sequence_pgd` with ``prefixes``
also makes the prefixes adversarial (an adaptive attack, as the paper's Sec. 4.3 discusses).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..threat import check_batch, check_budget, check_count, project, require_eval

__all__ = ["segment_series", "Tagger", "train_tagger", "sequence_pgd", "td_score", "step_accuracy"]


def segment_series(n: int, length: int = 96, n_classes: int = 4, *, segments: int = 3, noise: float = 0.05,
                   amplitude: tuple[float, float] = (0.2, 0.3), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` generated series ``1 x length`` in [0, 1] and their per-step labels ``n x length``: each
    series is ``segments`` pieces of random lengths, each a sine wave whose frequency is set by the
    piece's class (class ``c``: ``2 + 3c`` periods per 64 steps) with a random phase and an amplitude
    uniform in ``amplitude``,
    plus Gaussian noise. A step's class is only visible in a window around it: the task needs context."""
    n, length = check_count(n, "segment_series", "n", 1), check_count(length, "segment_series", "length", 8)
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=torch.float32)
    x, y = torch.empty(n, 1, length), torch.empty(n, length, dtype=torch.long)
    for i in range(n):
        cuts = torch.sort(torch.randint(length // 8, length - length // 8, (segments - 1,), generator=g)).values
        bounds = [0, *cuts.tolist(), length]
        series = torch.empty(length)
        for a, b in zip(bounds[:-1], bounds[1:]):
            c = int(torch.randint(n_classes, (1,), generator=g))
            freq = (2 + 3 * c) / 64
            phase = 2 * math.pi * float(torch.rand(1, generator=g))
            amp = amplitude[0] + (amplitude[1] - amplitude[0]) * float(torch.rand(1, generator=g))
            series[a:b] = 0.5 + amp * torch.sin(2 * math.pi * freq * t[a:b] + phase)
            y[i, a:b] = c
        x[i, 0] = (series + noise * torch.randn(length, generator=g)).clamp(0, 1)
    return x, y


class Tagger(nn.Module):
    """A non-causal sequence labeller: a 1-D convolution (kernel 5) for local features, a bidirectional
    GRU for context in both directions, a linear read-out per step. ``N x 1 x L`` -> logits ``N x K x L``."""

    def __init__(self, n_classes: int = 4, channels: int = 16, hidden: int = 32):
        super().__init__()
        self.conv = nn.Conv1d(1, channels, 5, padding=2)
        self.gru = nn.GRU(channels, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv(x - 0.5)).transpose(1, 2)  # N x L x C
        return self.out(self.gru(h)[0]).transpose(1, 2)  # N x K x L


def train_tagger(x: torch.Tensor, y: torch.Tensor, *, n_classes: int = 4, epochs: int = 15, lr: float = 5e-3,
                 batch_size: int = 32, seed: int = 0, progress: bool = False) -> Tagger:
    """A :class:`Tagger` trained with Adam on the per-step cross-entropy of the series ``x`` and labels
    ``y``; returned in eval mode."""
    from tqdm.auto import tqdm

    check_batch(x, "train_tagger")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = Tagger(n_classes).to(x.device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in tqdm(range(check_count(epochs, "train_tagger", "epochs", 1)), desc="training the tagger",
                  disable=not progress, leave=False):
        model.train()
        for idx in torch.randperm(len(x), generator=g).split(batch_size):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def step_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per series, the fraction of steps labelled ``y`` (``N``)."""
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean(1)


def sequence_pgd(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, eps: float, steps: int = 100,
                 alpha: float | None = None, prefixes=(), seed: int = 0) -> torch.Tensor:
    """Targeted L-inf PGD (Madry et al. 2018) on a sequence labeller: minimise the per-step cross-entropy
    of the target labels ``target`` (``N x L``) over ``||delta||_inf <= eps``, inputs kept in [0, 1], with
    signed steps ``alpha`` (default ``2.5 eps / steps``) from a random start. ``prefixes``: lengths ``k`` at
    which the truncated series ``x'_{1:k}`` must also carry ``target_{1:k}`` (the adaptive attack against
    TD detection; its loss is the sum of the whole series' and every prefix's mean cross-entropy)."""
    check_batch(x, "sequence_pgd")
    require_eval(model, "sequence_pgd")
    eps = check_budget(eps, "sequence_pgd", positive=True)
    steps = check_count(steps, "sequence_pgd", "steps", 1)
    alpha = 2.5 * eps / steps if alpha is None else check_budget(alpha, "sequence_pgd", name="alpha", positive=True)
    if target.shape != (len(x), x.shape[-1]):
        raise ValueError(f"sequence_pgd: target must hold one label per step, shape {(len(x), x.shape[-1])}; "
                         f"got {tuple(target.shape)}")
    L = x.shape[-1]
    for k in prefixes:
        if not 1 <= int(k) <= L:
            raise ValueError(f"sequence_pgd: every prefix length must be in 1..{L}, got {k}")
    g = torch.Generator(device=x.device).manual_seed(seed)
    x = x.detach()
    delta = (torch.rand(x.shape, generator=g, device=x.device) * 2 - 1) * eps
    delta = (x + delta).clamp(0, 1) - x
    for _ in range(steps):
        delta.requires_grad_(True)
        xa = x + delta
        loss = F.cross_entropy(model(xa), target)
        for k in prefixes:
            loss = loss + F.cross_entropy(model(xa[..., :k]), target[:, :k])
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta = project(delta - alpha * grad.sign(), eps, "linf")
            delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def td_score(model: nn.Module, x: torch.Tensor, k, *, kind: str = "labels") -> torch.Tensor:
    """TD's disagreement per series between the prefix ``x_{1:k}`` labelled alone and the first ``k`` steps
    of the whole series labelled (``k`` an int, or a fraction of the length in (0, 1)). ``kind="labels"``:
    the fraction of the ``k`` steps whose labels differ (the paper's error rate, per step);
    ``"probabilities"``: the mean total-variation distance ``1/2 ||p_t(x_{1:k}) - p_t(x_{1:L})||_1`` of
    the two per-step distributions, a continuous score with fewer ties. Higher: more likely adversarial."""
    check_batch(x, "td_score")
    require_eval(model, "td_score")
    if kind not in ("labels", "probabilities"):
        raise ValueError(f"td_score: kind must be 'labels' or 'probabilities', got {kind!r}")
    L = x.shape[-1]
    k = int(round(k * L)) if isinstance(k, float) else int(k)
    if not 1 <= k < L:
        raise ValueError(f"td_score: the prefix must be shorter than the series (1 <= k < {L}), got {k}")
    with torch.no_grad():
        whole, prefix = model(x)[..., :k], model(x[..., :k])
    if kind == "labels":
        return (whole.argmax(1) != prefix.argmax(1)).float().mean(1)
    return 0.5 * (whole.softmax(1) - prefix.softmax(1)).abs().sum(1).mean(1)
