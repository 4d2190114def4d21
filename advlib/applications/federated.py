"""Federated learning with a backdoor: honest and malicious clients, robust aggregation, and the
distributed backdoor attack (DBA; Xie, Huang, Chen & Li, "DBA: Distributed Backdoor Attacks
against Federated Learning", ICLR 2020).

Clients hold disjoint shards of the training data (:func:`split_clients`: IID, or non-IID with
Dirichlet class proportions). Each round the server sends its weights ``w``; every selected client
trains a copy on its shard for a few local epochs and returns its *update* ``Delta_i = w_i - w``;
the server moves ``w <- w + eta * AGG(Delta_1 .. Delta_n)`` (:func:`train_federated`). The aggregation
rules, each one function after its paper, on the ``n x d`` matrix of flattened updates:

* :func:`fedavg` — the mean, weighted by shard size (McMahan et al., AISTATS 2017);
* :func:`krum` — the update with the smallest sum of squared distances to its ``n - f - 2`` nearest
  neighbours, for at most ``f`` Byzantine clients (Blanchard et al., NeurIPS 2017);
* :func:`multi_krum` — the mean of the ``m`` updates of smallest Krum score (ibid.);
* :func:`bulyan` — Krum applied ``n - 2f`` times to select a set, then per coordinate the mean of
  the ``n - 4f`` selected values closest to their median (El Mhamdi et al., ICML 2018);
* :func:`trimmed_mean` — per coordinate, the mean after dropping the ``b`` largest and ``b``
  smallest values (Yin et al., ICML 2018); :func:`median`, the coordinate-wise median (ibid.).

A malicious client poisons a fraction of its shard with a trigger (:mod:`advlib.backdoor`) relabelled
to the target, trains on it and may scale its update. The **centralised** attack gives every
malicious client the whole global trigger; **DBA** splits the global trigger into local patterns,
one per malicious client (:func:`dba_triggers`), and is judged, like the centralised attack, by the
success of the *global* trigger on the aggregated model.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..backdoor import Trigger, backdoor_metrics, target_labels
from ..threat import check_count
from ..train import accuracy

__all__ = ["split_clients", "fedavg", "krum_scores", "krum", "multi_krum", "bulyan", "trimmed_mean", "median",
           "AGGREGATORS", "Client", "dba_triggers", "local_update", "train_federated", "flat_params", "set_params"]


# ------------------------------------------------------------------------------------------ data
def split_clients(y: torch.Tensor, n_clients: int, *, alpha: float | None = None, seed: int = 0) -> list[torch.Tensor]:
    """Disjoint index sets of the training labels ``y``, one per client. ``alpha=None``: IID (a seeded
    permutation cut into near-equal parts). ``alpha > 0``: non-IID, each class's examples shared out by
    proportions drawn from Dirichlet(alpha) (Hsu et al. 2019): small alpha, few classes per client."""
    n_clients = check_count(n_clients, "split_clients", "n_clients", 1)
    if n_clients > len(y):
        raise ValueError(f"split_clients: {n_clients} clients for {len(y)} examples; use fewer clients")
    g = torch.Generator().manual_seed(seed)
    y = torch.as_tensor(y).cpu()
    if alpha is None:
        return [part.sort().values for part in torch.randperm(len(y), generator=g).tensor_split(n_clients)]
    if not alpha > 0:
        raise ValueError(f"split_clients: alpha must be > 0 (or None for IID), got {alpha!r}")
    parts: list[list[torch.Tensor]] = [[] for _ in range(n_clients)]
    dirichlet = torch.distributions.Dirichlet(torch.full((n_clients,), float(alpha)))
    for c in y.unique():
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        with torch.random.fork_rng(devices=[]):  # seeded, and the global generator left as it was
            torch.manual_seed(int(torch.randint(2 ** 31, (1,), generator=g)))
            cuts = (dirichlet.sample().cumsum(0) * len(idx)).round().long()[:-1]
        for k, chunk in enumerate(torch.tensor_split(idx, cuts)):
            parts[k].append(chunk)
    return [torch.cat(p).sort().values for p in parts]


# ------------------------------------------------------------------------------------------ aggregation
def _check_updates(U: torch.Tensor, who: str) -> torch.Tensor:
    if U.dim() != 2 or len(U) == 0:
        raise ValueError(f"{who}: updates must be an n x d matrix (one flattened update per row), got "
                         f"{tuple(U.shape)}")
    if not torch.isfinite(U).all():
        raise ValueError(f"{who}: an update is not finite (NaN or inf)")
    return U


def fedavg(U: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """FedAvg: ``sum_i p_i Delta_i`` with ``p_i`` proportional to ``weights`` (shard sizes; equal if None)."""
    U = _check_updates(U, "fedavg")
    if weights is None:
        return U.mean(0)
    w = torch.as_tensor(weights, dtype=U.dtype, device=U.device)
    return (w / w.sum()) @ U


def krum_scores(U: torch.Tensor, f: int) -> torch.Tensor:
    """Krum's score of every update: the sum of its squared distances to its ``n - f - 2`` nearest other
    updates (Blanchard et al. 2017, Sec. 4). Needs ``n > 2f + 2``."""
    U = _check_updates(U, "krum")
    n = len(U)
    if not 0 <= f or n <= 2 * f + 2:
        raise ValueError(f"krum: needs n > 2f + 2 updates (its guarantee's condition); got n = {n}, f = {f}: "
                         f"tolerate at most f = {max((n - 3) // 2, 0)} with {n} updates")
    return _scores(U, n - f - 2)


def _scores(U: torch.Tensor, k: int) -> torch.Tensor:
    """Per row, the sum of the squared distances to its ``k`` nearest other rows."""
    d = torch.cdist(U, U).pow(2)
    d.fill_diagonal_(float("inf"))
    return d.topk(k, dim=1, largest=False).values.sum(1)


def krum(U: torch.Tensor, f: int) -> torch.Tensor:
    """Krum: the one update of smallest :func:`krum_scores`."""
    return U[krum_scores(U, f).argmin()]


def multi_krum(U: torch.Tensor, f: int, m: int | None = None) -> torch.Tensor:
    """Multi-Krum: the mean of the ``m`` updates of smallest Krum score (default ``m = n - f``)."""
    scores = krum_scores(U, f)
    m = len(U) - f if m is None else check_count(m, "multi_krum", "m", 1)
    return U[scores.topk(min(m, len(U)), largest=False).indices].mean(0)


def bulyan(U: torch.Tensor, f: int) -> torch.Tensor:
    """Bulyan (El Mhamdi et al. 2018, Algorithm 1): select ``theta = n - 2f`` updates by Krum, one at a
    time, each removed from the candidates before the next choice (Krum's ``n' - f - 2`` neighbours on
    the ``n'`` candidates left, at least one); then per coordinate average the
    ``beta = theta - 2f`` selected values closest to the coordinate's median. Needs ``n >= 4f + 3``."""
    U = _check_updates(U, "bulyan")
    n = len(U)
    if n < 4 * f + 3:
        raise ValueError(f"bulyan: needs n >= 4f + 3 updates; got n = {n}, f = {f}")
    rest, chosen = list(range(n)), []
    for _ in range(n - 2 * f):  # Krum on the candidates left (at least one neighbour when few are left)
        k = int(_scores(U[rest], max(len(rest) - f - 2, 1)).argmin()) if len(rest) > 1 else 0
        chosen.append(rest.pop(k))
    S = U[chosen]
    beta = len(S) - 2 * f
    med = S.median(0).values
    closest = (S - med).abs().topk(beta, dim=0, largest=False).indices
    return S.gather(0, closest).mean(0)


def trimmed_mean(U: torch.Tensor, b: int) -> torch.Tensor:
    """Coordinate-wise trimmed mean: per coordinate, drop the ``b`` largest and ``b`` smallest values and
    average the rest. Needs ``n > 2b``."""
    U = _check_updates(U, "trimmed_mean")
    if not 0 <= b or len(U) <= 2 * b:
        raise ValueError(f"trimmed_mean: needs n > 2b updates; got n = {len(U)}, b = {b}")
    return U.sort(0).values[b:len(U) - b].mean(0)


def median(U: torch.Tensor) -> torch.Tensor:
    """Coordinate-wise median (the lower of the two middle values for an even ``n``, as torch's)."""
    return _check_updates(U, "median").median(0).values


#: name -> ``aggregate(U, f, weights)``: each rule told how many attackers ``f`` to tolerate
AGGREGATORS: dict[str, Callable[[torch.Tensor, int, torch.Tensor], torch.Tensor]] = {
    "fedavg": lambda U, f, w: fedavg(U, w),
    "krum": lambda U, f, w: krum(U, f),
    "multi-krum": lambda U, f, w: multi_krum(U, f),
    "bulyan": lambda U, f, w: bulyan(U, f),
    "trimmed-mean": lambda U, f, w: trimmed_mean(U, f),
    "median": lambda U, f, w: median(U),
}


# ------------------------------------------------------------------------------------------ clients
@dataclass
class Client:
    """A client's shard ``(x, y)`` and, for a malicious one, its ``trigger``, the backdoor ``target``, the
    fraction ``poison`` of each local batch it stamps and relabels, and the factor ``boost`` its update
    is scaled by (model replacement; 1: none)."""

    x: torch.Tensor
    y: torch.Tensor
    trigger: Trigger | None = None
    target: int | str = 0
    poison: float = 0.3
    boost: float = 1.0

    @property
    def malicious(self) -> bool:
        return self.trigger is not None


def dba_triggers(shape, parts: int = 4, size: tuple[int, int] = (1, 4), gap: int = 1, position=(0, 0),
                 value: float = 1.0) -> tuple[Trigger, list[Trigger]]:
    """DBA's global trigger and its local parts (Xie et al. 2020, Fig. 1): ``parts`` bars of ``size``
    (rows x cols) laid out two per row, ``gap`` pixels apart horizontally and vertically, from the
    top-left ``position``. Returns ``(global, [local_1 .. local_parts])``; the global trigger's mask is
    the union of the local ones. The trigger factors of the paper are ``size``, ``gap`` and
    ``position``."""
    c, h, w = shape
    parts = check_count(parts, "dba_triggers", "parts", 1)
    (bh, bw), (r0, c0) = size, position
    locals_, union = [], torch.zeros(shape)
    for k in range(parts):
        r, col = r0 + (k // 2) * (bh + gap), c0 + (k % 2) * (bw + gap)
        if r < 0 or col < 0 or r + bh > h or col + bw > w:
            raise ValueError(f"dba_triggers: part {k} at ({r}, {col}) of size {bh}x{bw} does not fit in {h}x{w}; "
                             "use a smaller size or gap, or another position")
        m = torch.zeros(shape)
        m[:, r:r + bh, col:col + bw] = 1
        union = torch.maximum(union, m)
        locals_.append(Trigger(m, m * value, f"DBA part {k + 1} of {parts}"))
    return Trigger(union, union * value, f"DBA global trigger ({parts} x {bh}x{bw}, gap {gap})"), locals_


def flat_params(model: nn.Module) -> torch.Tensor:
    """All parameters of ``model`` as one vector."""
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def set_params(model: nn.Module, vec: torch.Tensor) -> None:
    """Write the vector ``vec`` (of :func:`flat_params`' layout) into ``model``'s parameters."""
    i = 0
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(vec[i:i + p.numel()].view_as(p))
            i += p.numel()


def local_update(model: nn.Module, client: Client, *, epochs: int = 2, lr: float = 0.05, batch_size: int = 32,
                 seed: int = 0) -> torch.Tensor:
    """A client's round: SGD (momentum 0.9) on a copy of the global ``model`` for ``epochs`` over its
    shard — a malicious client stamps its trigger on a ``poison`` fraction of every batch and relabels
    those to its target — and returns ``boost * (w_local - w_global)``, flattened."""
    local = copy.deepcopy(model).eval()
    with torch.no_grad():  # the number of classes, for the target labels (in eval mode: batch norm allows one input)
        n_classes = int(local(client.x[:1]).shape[1]) if client.malicious else None
    local.train()
    opt = torch.optim.SGD(local.parameters(), lr=lr, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    dev = client.x.device
    for _ in range(epochs):
        for idx in torch.randperm(len(client.x), generator=g).split(batch_size):
            xb, yb = client.x[idx.to(dev)], client.y[idx.to(dev)]
            if client.malicious:
                k = int(round(client.poison * len(xb)))
                xb, yb = xb.clone(), yb.clone()
                xb[:k] = client.trigger.to(dev).apply(xb[:k])
                yb[:k] = target_labels(yb[:k], client.target, n_classes)
            loss = F.cross_entropy(local(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    local.eval()
    return client.boost * (flat_params(local) - flat_params(model))


def train_federated(model: nn.Module, clients: list[Client], *, rounds: int, aggregator: str = "fedavg",
                    f: int = 0, per_round: int | None = None, attack_rounds=None, local_epochs: int = 2,
                    lr: float = 0.05, batch_size: int = 32, server_lr: float = 1.0, test=None,
                    trigger: Trigger | None = None, target: int | str = 0, seed: int = 0,
                    progress: bool = True) -> dict[str, list]:
    """FedAvg-style training of ``model`` (changed in place) with ``clients`` for ``rounds`` rounds.

    Each round ``per_round`` clients (default all) are drawn at random (seeded), always including the
    malicious ones in ``attack_rounds`` (a set of round numbers; default every round) and never in the
    other rounds; each returns :func:`local_update` and the server adds ``server_lr`` times the
    ``aggregator`` (a key of :data:`AGGREGATORS`, told to tolerate ``f`` attackers) of the updates,
    FedAvg weighted by shard size. After every round, with ``test`` given: clean accuracy, and with
    ``trigger`` the attack success rate of that (global) trigger for ``target``. Returns the history
    ``{"round", "clean", "asr", "malicious"}`` (``malicious``: how many attackers took part)."""
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ValueError("train_federated: the model has batch normalisation, whose running statistics are buffers, "
                         "not parameters, and would not be aggregated; use a model without it (e.g. advlib.models "
                         "'mlp' or 'cnn' without batch norm)")
    if aggregator not in AGGREGATORS:
        raise ValueError(f"train_federated: aggregator must be one of {sorted(AGGREGATORS)}, got {aggregator!r}")
    rounds = check_count(rounds, "train_federated", "rounds", 1)
    n = len(clients)
    per_round = n if per_round is None else check_count(per_round, "train_federated", "per_round", 1)
    bad = [i for i, c in enumerate(clients) if c.malicious]
    good = [i for i, c in enumerate(clients) if not c.malicious]
    if per_round > n or len(bad) > per_round:
        raise ValueError(f"train_federated: per_round ({per_round}) must be at most the {n} clients and at least the "
                         f"{len(bad)} malicious ones")
    g = torch.Generator().manual_seed(seed)
    history: dict[str, list] = {"round": [], "clean": [], "asr": [], "malicious": []}
    for r in tqdm(range(rounds), desc=f"federated ({aggregator})", disable=not progress, leave=False):
        attack = bool(bad) and (attack_rounds is None or r in attack_rounds)
        honest = [good[i] for i in torch.randperm(len(good), generator=g)[:per_round - (len(bad) if attack else 0)]]
        chosen = honest + (bad if attack else [])
        U = torch.stack([local_update(model, clients[i], epochs=local_epochs, lr=lr, batch_size=batch_size,
                                      seed=seed * 100_003 + r * 1_009 + i) for i in chosen])
        sizes = torch.tensor([len(clients[i].x) for i in chosen], dtype=U.dtype, device=U.device)
        step = AGGREGATORS[aggregator](U, f, sizes)
        set_params(model, flat_params(model) + server_lr * step)
        history["round"].append(r + 1)
        history["malicious"].append(len(chosen) - len(honest))
        if test is not None:
            m = backdoor_metrics(model, test, trigger, target) if trigger is not None else None
            history["clean"].append(m["clean"] if m is not None else accuracy(model, test))
            history["asr"].append(m["asr"] if m is not None else float("nan"))
    model.eval()
    return history
