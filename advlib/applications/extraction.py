"""Model extraction: a copy of a black-box model trained only on its answers (Tramèr, Zhang, Juels,
Reiter & Ristenpart, "Stealing Machine Learning Models via Prediction APIs", USENIX Security 2016;
Correia-Silva et al., "Copycat CNN", IJCNN 2018; Orekondy, Schiele & Fritz, "Knockoff Nets", CVPR 2019).

The attacker owns unlabelled inputs from (roughly) the task's distribution, the *pool*, and an
architecture of its choice. It spends ``budget`` queries to have the victim label pool inputs — with
its probabilities (a soft-label API) or its top-1 labels (a hard-label API) — and trains its copy on
those answers alone, by cross-entropy against them. Two numbers measure the theft: the copy's
**agreement** with the victim on held-out inputs (the fraction of equal top-1 labels, "fidelity"),
and the copy's use as a white-box **surrogate**: adversarial examples made on it and submitted to the
victim (:func:`advlib.blackbox.transfer`), compared with random noise of the same size.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import TensorDataset

from ..blackbox import BlackBox
from ..threat import check_batch, check_budget, check_count
from ..train import fit, predict, soft_cross_entropy

__all__ = ["copycat", "agreement", "random_sign_noise"]


def copycat(box: BlackBox, pool: torch.Tensor, student: nn.Module, *, budget: int, epochs: int = 60,
            min_steps: int = 600, lr: float = 2e-3, batch_size: int = 64, weight_decay: float = 1e-4, seed: int = 0,
            progress: bool = False) -> dict:
    """Train ``student`` (a fresh model, changed in place) on the answers of ``box`` to ``budget`` inputs
    of ``pool``, drawn without replacement in a seeded order: against the probabilities for a scores
    box (soft cross-entropy, the knowledge-distillation loss), against the labels for a label box.
    Training runs ``epochs`` epochs, and more if needed for ``min_steps`` optimiser steps: a small
    budget makes few mini-batches per epoch (50 answers: one), and 60 steps underfit them (measured:
    86 % training accuracy on the answers, 0.59 agreement, against 100 % and 0.80 with 600 steps).
    Exactly ``budget`` queries are made, whatever the training. Returns ``{"x", "answers", "history"}``:
    the queried inputs, the box's answers (probabilities or labels) and :func:`advlib.train.fit`'s
    history."""
    if not isinstance(box, BlackBox):
        raise ValueError(f"copycat steals from an advlib.blackbox.BlackBox (wrap the victim: BlackBox(model)), "
                         f"got {type(box).__name__}")
    check_batch(pool, "copycat")
    budget = check_count(budget, "copycat", "budget", 1)
    if budget > len(pool):
        raise ValueError(f"copycat: budget ({budget}) exceeds the pool's {len(pool)} inputs; give a larger pool "
                         "or a smaller budget")
    dev = next(student.parameters()).device
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:budget]
    x = pool[order.to(pool.device)].to(box.device)
    answers = box(x)
    soft = box.output == "scores"
    labels = answers.argmax(1) if soft else answers
    loss: Callable | None = None
    if soft:
        target = answers.to(dev)

        def loss(net, xb, yb, progress, index):
            return soft_cross_entropy(net(xb), target[index])

    epochs = max(check_count(epochs, "copycat", "epochs", 1),
                 math.ceil(check_count(min_steps, "copycat", "min_steps") / math.ceil(budget / batch_size)))
    history = fit(student, TensorDataset(x.to(dev), labels.to(dev)), epochs=epochs, lr=lr, batch_size=batch_size,
                  weight_decay=weight_decay, loss=loss, seed=seed, progress=progress)
    return {"x": x, "answers": answers, "history": history}


def agreement(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    """The fraction of inputs ``x`` on which the models ``a`` and ``b`` give the same top-1 label."""
    check_batch(x, "agreement")
    return float((predict(a, x).cpu() == predict(b, x).cpu()).float().mean())


def random_sign_noise(x: torch.Tensor, eps: float, seed: int = 0) -> torch.Tensor:
    """``clip(x + eps * s, 0, 1)`` with independent random signs ``s``: noise of the L-inf size of a
    perturbation, the baseline that an attack made on a copy must beat."""
    check_batch(x, "random_sign_noise")
    check_budget(eps, "random_sign_noise", name="eps")
    g = torch.Generator().manual_seed(seed)
    s = torch.randint(2, x.shape, generator=g).to(x) * 2 - 1
    return (x + eps * s).clamp(0, 1)
