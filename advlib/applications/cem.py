"""Contrastive explanations: pertinent negatives and pertinent positives (Dhurandhar, Chen, Luss, Tu,
Ting, Shanmugam & Das, "Explanations based on the Missing: Towards Contrastive Explanations with
Pertinent Negatives", NeurIPS 2018; CEM).

For an input ``x0`` that the model classifies as ``t0``, CEM answers two questions with the
elastic-net optimisation of EAD (:func:`advlib.attacks.elastic_net`):

* a **pertinent negative** (PN): a sparse addition ``delta >= 0`` to features that are (partly)
  *absent* which changes the class — what must stay absent for the class to be ``t0``. Eq. (1):

      minimise_{delta}  c * max([z(x0 + delta)]_t0 - max_{i != t0} [z(x0 + delta)]_i, -kappa)
                        + beta * ||delta||_1 + ||delta||_2^2 + gamma * ||x0 + delta - AE(x0 + delta)||_2^2

  with ``x0 + delta`` in the data range and ``delta`` nonzero only on the allowed (absent) features;
* a **pertinent positive** (PP): a sparse part ``0 <= delta <= x0`` of what is present that is
  classified ``t0`` on its own — what is minimally sufficient. Eq. (3):

      minimise_{delta}  c * max(max_{i != t0} [z(delta)]_i - [z(delta)]_t0, -kappa)
                        + beta * ||delta||_1 + ||delta||_2^2 + gamma * ||delta - AE(delta)||_2^2.

Both are solved, as in the paper, by FISTA with the projected shrinkage of EAD and a per-example
binary search on ``c``; each example keeps its successful iterate of smallest elastic-net size.
``z`` are the logits (the paper's "Pred" before the softmax). The optional auto-encoder ``AE``
keeps the explanation close to the data manifold (:func:`autoencoder` trains one).
"""
from __future__ import annotations

import torch
from torch import nn

from ..attacks.cw import check_search
from ..attacks.ead import elastic_net
from ..threat import check_batch, check_budget, check_count, check_model_input, require_eval

__all__ = ["pertinent_negative", "pertinent_positive", "explain", "autoencoder"]


def _prepare(model, x, who, beta, c, kappa, steps, lr, search_steps, gamma, ae):
    check_batch(x, who)
    check_model_input(model, x, who)
    require_eval(model, who)
    check_count(steps, who, "steps", 1)
    check_search(who, c, search_steps, lr, kappa)
    check_budget(beta, who, name="beta")
    check_budget(gamma, who, name="gamma")
    if gamma > 0 and ae is None:
        raise ValueError(f"{who}: gamma > 0 weights an auto-encoder term; pass autoencoder= (e.g. "
                         "advlib.applications.autoencoder(x_train)) or set gamma=0")
    x = x.detach()
    with torch.no_grad():
        t0 = model(x).argmax(1)
    if ae is None or gamma == 0:
        return x, t0, None
    require_eval(ae, who)
    return x, t0, lambda v: gamma * (v - ae(v)).flatten(1).pow(2).sum(1)


def pertinent_negative(model: nn.Module, x: torch.Tensor, *, allowed: torch.Tensor | None = None,
                       beta: float = 0.1, c: float = 10.0, kappa: float = 0.1, steps: int = 300, lr: float = 0.01,
                       search_steps: int = 5, gamma: float = 0.0, autoencoder: nn.Module | None = None,
                       abort_early: bool = True) -> torch.Tensor:
    """CEM's pertinent negative (Dhurandhar et al. 2018, eq. 1) of each input of ``x`` (in [0, 1]):
    ``x0 + delta`` with ``delta >= 0``, nonzero only where ``allowed`` (default: the features at 0,
    the absent ones — the background of a digit), classified other than the model's label ``t0`` of
    ``x0`` by a margin ``kappa``. Defaults follow the authors' MNIST setting (kappa 0.1, beta 0.1,
    c from 10); ``gamma > 0`` adds the auto-encoder term; ``abort_early`` is EAD's (C&W's) early abort,
    which also ends a round when the batch's total objective stalls (so a batch and one-by-one calls
    may differ). Returns ``x0 + delta`` (``x0`` unchanged where no PN was found: check the class of
    the result)."""
    x, t0, penalty = _prepare(model, x, "pertinent_negative", beta, c, kappa, steps, lr, search_steps, gamma,
                              autoencoder)
    if allowed is None:
        allowed = x == 0
    else:
        allowed = torch.as_tensor(allowed, device=x.device).to(torch.bool)
        if allowed.shape not in (x.shape, x.shape[1:]):
            raise ValueError(f"pertinent_negative: allowed must be a mask of the batch's shape {tuple(x.shape)} or "
                             f"of one input's {tuple(x.shape[1:])}, got {tuple(allowed.shape)}")
        allowed = allowed.expand_as(x)
    hi = torch.where(allowed, torch.ones_like(x), x)  # delta >= 0, only on the allowed features
    return elastic_net(model, x, t0, x, lo=x, hi=hi, beta=beta, c=c, kappa=kappa, steps=steps, lr=lr,
                       search_steps=search_steps, targeted=False, abort_early=abort_early, penalty=penalty)


def pertinent_positive(model: nn.Module, x: torch.Tensor, *, beta: float = 0.1, c: float = 10.0, kappa: float = 0.1,
                       steps: int = 300, lr: float = 0.01, search_steps: int = 5, gamma: float = 0.0,
                       autoencoder: nn.Module | None = None, abort_early: bool = True) -> torch.Tensor:
    """CEM's pertinent positive (Dhurandhar et al. 2018, eq. 3) of each input of ``x`` (in [0, 1]):
    ``delta`` with ``0 <= delta <= x0`` (a part of what is present, the rest set to 0) that the model
    classifies as ``t0``, the label of ``x0``, by a margin ``kappa``, on its own. FISTA starts from
    the empty input ``delta = 0``. Returns ``delta`` (all zeros where none was found: check the class
    of the result)."""
    x, t0, penalty = _prepare(model, x, "pertinent_positive", beta, c, kappa, steps, lr, search_steps, gamma,
                              autoencoder)
    zero = torch.zeros_like(x)
    return elastic_net(model, zero, t0, zero, lo=zero, hi=x, beta=beta, c=c, kappa=kappa, steps=steps, lr=lr,
                       search_steps=search_steps, targeted=True, abort_early=abort_early, penalty=penalty)


def explain(model: nn.Module, x: torch.Tensor, **kwargs) -> dict[str, torch.Tensor]:
    """Both explanations of ``x`` and the classes they get: ``{"label", "pn", "pn_label", "pp",
    "pp_label"}``; ``kwargs`` go to both solvers (``allowed`` to the PN only)."""
    allowed = kwargs.pop("allowed", None)
    pn = pertinent_negative(model, x, allowed=allowed, **kwargs)
    pp = pertinent_positive(model, x, **kwargs)
    with torch.no_grad():
        labels = [model(v).argmax(1) for v in (x, pn, pp)]
    return {"label": labels[0], "pn": pn, "pn_label": labels[1], "pp": pp, "pp_label": labels[2]}


def autoencoder(x: torch.Tensor, *, hidden: int = 32, epochs: int = 200, lr: float = 3e-3, batch_size: int = 64,
                seed: int = 0) -> nn.Module:
    """A small fully connected auto-encoder ``d -> 128 -> hidden -> 128 -> d`` with a sigmoid output,
    trained with Adam on the mean squared reconstruction error of the inputs ``x`` (in [0, 1]); returned
    in eval mode, on ``x``'s device. CEM's ``gamma`` term uses it as the data manifold."""
    check_batch(x, "autoencoder")
    check_count(epochs, "autoencoder", "epochs", 1)
    shape, d = x.shape[1:], x[0].numel()
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    ae = nn.Sequential(nn.Flatten(), nn.Linear(d, 128), nn.ReLU(), nn.Linear(128, hidden), nn.ReLU(),
                       nn.Linear(hidden, 128), nn.ReLU(), nn.Linear(128, d), nn.Sigmoid(), nn.Unflatten(1, shape))
    ae.to(x.device)
    opt = torch.optim.Adam(ae.parameters(), lr=lr)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(batch_size):
            xb = x[idx.to(x.device)]
            loss = (ae(xb) - xb).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return ae.eval()
