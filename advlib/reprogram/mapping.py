"""Output label mappings: from the source model's ``K_s`` probabilities to the target task's ``K_t``.

BAR (Tsai et al. 2020, Sec. 3.1, "multi-label mapping"): ``h_j(F(X))`` averages the probabilities of the
source labels assigned to target label ``j``, e.g. ``h_ASD = (F_tench + F_goldfish + F_hammerhead) / 3``;
several source labels per target label work better than one. The assignment is one-to-one, random
many-to-one, or by frequency: each target label gets the source labels that the frozen model (with the
initial program) most often predicts for its training inputs.
"""
from __future__ import annotations

import torch

__all__ = ["LabelMap", "one_to_one", "random_many_to_one", "frequency_mapping", "MAPPINGS"]


class LabelMap:
    """``assign[s]``: the target label of source label ``s`` (``-1``: unused). ``h(p) = p @ H`` with
    ``H[s, j] = 1 / m_j`` where ``assign[s] == j`` and ``m_j`` source labels map to ``j``.

    BAR's averages, not renormalised: with ``m`` source labels per target label the mapped values sum to
    at most ``1 / m`` (the cross-entropy's floor is ``log m``); the argmax, the prediction, is unaffected."""

    def __init__(self, assign, n_target: int | None = None):
        assign = torch.as_tensor(assign, dtype=torch.long).flatten()
        k_t = int(assign.max()) + 1 if n_target is None else int(n_target)
        counts = torch.bincount(assign[assign >= 0], minlength=k_t)
        if len(counts) > k_t or (counts == 0).any():
            raise ValueError(f"LabelMap: every target label 0..{k_t - 1} needs at least one source label, got "
                             f"assignment {assign.tolist()}")
        self.assign, self.n_source, self.n_target = assign, len(assign), k_t
        used = (assign >= 0).nonzero().flatten()
        H = torch.zeros(self.n_source, k_t)
        H[used, assign[used]] = 1.0
        self.H = H / counts.clamp_min(1).to(H.dtype)

    def groups(self) -> list[list[int]]:
        """The source labels of each target label."""
        return [(self.assign == j).nonzero().flatten().tolist() for j in range(self.n_target)]

    def __call__(self, p: torch.Tensor) -> torch.Tensor:
        """Target probabilities ``... x K_t`` from source probabilities ``... x K_s``."""
        if p.shape[-1] != self.n_source:
            raise ValueError(f"LabelMap: maps {self.n_source} source labels, got probabilities over {p.shape[-1]}")
        return p @ self.H.to(p)

    def __repr__(self) -> str:
        return f"LabelMap({self.n_source} -> {self.n_target}: {self.groups()})"


def _check(n_source: int, n_target: int, m: int | None, who: str) -> int:
    m = n_source // n_target if m is None else m
    if n_target < 1 or m < 1 or m * n_target > n_source:
        raise ValueError(f"{who}: {n_target} target labels x {m} source labels each needs {m * n_target} of the "
                         f"{n_source} source labels; lower m")
    return m


def one_to_one(n_source: int, n_target: int, *, seed: int = 0) -> LabelMap:
    """One random source label per target label."""
    return random_many_to_one(n_source, n_target, m=1, seed=seed)


def random_many_to_one(n_source: int, n_target: int, m: int | None = None, *, seed: int = 0) -> LabelMap:
    """``m`` random source labels per target label (default: as many as fit, ``K_s // K_t``)."""
    m = _check(n_source, n_target, m, "random_many_to_one")
    order = torch.randperm(n_source, generator=torch.Generator().manual_seed(seed))
    assign = torch.full((n_source,), -1, dtype=torch.long)
    assign[order[:m * n_target]] = torch.arange(m * n_target) % n_target
    return LabelMap(assign, n_target)


def frequency_mapping(probs: torch.Tensor, y: torch.Tensor, n_target: int, m: int | None = None) -> LabelMap:
    """Frequency-based assignment (BAR, Sec. 3.1): ``probs`` are the source model's probabilities
    (``N x K_s``) on the training inputs with the initial program, ``y`` their target labels. The pair
    (target ``j``, source ``s``) scores how often the model predicts ``s`` for inputs of class ``j``
    (ties broken by the mean probability); pairs are taken greedily, best first, until each target label
    holds ``m`` source labels (default ``K_s // K_t``) and no source label serves two."""
    probs, y = probs.detach().float().cpu(), y.detach().cpu()
    n_source = probs.shape[1]
    m = _check(n_source, n_target, m, "frequency_mapping")
    top = torch.nn.functional.one_hot(probs.argmax(1), n_source).float()
    score = torch.stack([top[y == j].sum(0) + probs[y == j].mean(0) if (y == j).any() else torch.zeros(n_source)
                         for j in range(n_target)])
    assign = torch.full((n_source,), -1, dtype=torch.long)
    held = torch.zeros(n_target, dtype=torch.long)
    for flat in score.flatten().argsort(descending=True).tolist():
        j, s = divmod(flat, n_source)
        if assign[s] < 0 and held[j] < m:
            assign[s], held[j] = j, held[j] + 1
    return LabelMap(assign, n_target)


#: the mappings by name (the lecture's comparison)
MAPPINGS = ("frequency", "random", "one-to-one")
