"""Membership inference: was this example in the training set? (Shokri, Stronati, Song & Shmatikov,
"Membership Inference Attacks against Machine Learning Models", S&P 2017; Yeom, Giacomelli,
Fredrikson & Jha, "Privacy Risk in Machine Learning: Analyzing the Connection to Overfitting",
CSF 2018; Salem et al., "ML-Leaks", NDSS 2019.)

A model tends to fit its training examples better than others: a lower loss, a more confident
answer. The threshold attacks score each example by what the model says about it and call it a
*member* above a threshold:

* ``"loss"``: ``-CE(f(x), y)`` (Yeom et al., who threshold at the mean training loss);
* ``"confidence"``: ``p_y(x)``, the probability of the true label;
* ``"max"``: ``max_k p_k(x)``, the top probability, which needs no label (Salem et al.'s attack).

Swept over every threshold, the scores of known members and non-members give a ROC curve; its area
(AUC, 0.5 for a model that leaks nothing to the attack) and the membership advantage
``max_t (TPR - FPR)`` (Yeom et al.'s measure) summarise the leak.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..threat import check_batch, check_labels, require_eval

__all__ = ["membership_scores", "roc", "evaluate", "KINDS"]

KINDS = ("loss", "confidence", "max")


def membership_scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor, kind: str = "loss",
                      batch_size: int = 1024) -> torch.Tensor:
    """Per example, the attack's score (higher: more likely a member), by ``kind`` (module docstring)."""
    if kind not in KINDS:
        raise ValueError(f"membership_scores: kind must be one of {KINDS}, got {kind!r}")
    require_eval(model, "membership_scores")
    check_batch(x, "membership_scores")
    with torch.no_grad():
        logits = torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    check_labels(y, len(x), logits.shape[1], "membership_scores")
    y = y.to(logits.device)
    if kind == "loss":
        return -F.cross_entropy(logits, y, reduction="none")
    p = logits.softmax(1)
    return p.gather(1, y[:, None]).squeeze(1) if kind == "confidence" else p.max(1).values


def roc(members: torch.Tensor, nonmembers: torch.Tensor) -> dict[str, torch.Tensor | float]:
    """The ROC curve of the rule "member iff score >= t" over every threshold t, from the scores of
    members (positives) and non-members: ``{"fpr", "tpr", "thresholds", "auc", "advantage"}``. The AUC
    is the probability that a random member outscores a random non-member, ties counting one half
    (the Mann-Whitney statistic, equal to the trapezoidal area under the curve); the advantage is
    ``max (TPR - FPR)``."""
    pos, neg = members.detach().double().flatten().cpu(), nonmembers.detach().double().flatten().cpu()
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("roc: needs at least one member and one non-member score")
    if not (torch.isfinite(pos).all() and torch.isfinite(neg).all()):
        raise ValueError("roc: scores must be finite (a NaN or inf score cannot be thresholded)")
    scores = torch.cat([pos, neg])
    is_pos = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).double()
    thresholds, inverse = torch.unique(scores, sorted=True, return_inverse=True)
    thresholds = thresholds.flip(0)  # from the highest score down
    rank = len(thresholds) - 1 - inverse
    tp = torch.zeros(len(thresholds), dtype=torch.float64).index_add_(0, rank, is_pos).cumsum(0)
    fp = torch.zeros(len(thresholds), dtype=torch.float64).index_add_(0, rank, 1 - is_pos).cumsum(0)
    tpr = torch.cat([torch.zeros(1, dtype=torch.float64), tp / len(pos)])
    fpr = torch.cat([torch.zeros(1, dtype=torch.float64), fp / len(neg)])
    auc = float(torch.trapezoid(tpr, fpr))
    return {"fpr": fpr, "tpr": tpr, "thresholds": torch.cat([thresholds.new_tensor([float("inf")]), thresholds]),
            "auc": auc, "advantage": float((tpr - fpr).max())}


def evaluate(model: nn.Module, members: tuple[torch.Tensor, torch.Tensor],
             nonmembers: tuple[torch.Tensor, torch.Tensor], kind: str = "loss") -> dict:
    """The threshold attack ``kind`` on ``model`` with known ``members`` and ``nonmembers`` (each a pair
    ``(x, y)``): :func:`roc`'s dictionary, plus ``"train_acc"`` and ``"test_acc"`` (the model's accuracy
    on the two sets: the generalisation gap that the attack exploits)."""
    out = roc(membership_scores(model, *members, kind), membership_scores(model, *nonmembers, kind))
    with torch.no_grad():
        for name, (x, y) in (("train_acc", members), ("test_acc", nonmembers)):
            out[name] = float((model(x).argmax(1).cpu() == y.cpu()).float().mean())
    return out
