"""Complete verification of ReLU networks by branch and bound (β-CROWN style).

A linear bound that stays below 0 leaves the question open: the relaxation may be loose, or the network
may really go below 0 somewhere in the ball. Branch and bound (Bunel et al., "Branch and bound for
piecewise linear neural network verification", JMLR 2020) splits the problem where the relaxation is
loose: an unstable ReLU ``z`` becomes two subproblems, ``z >= 0`` (the ReLU is the identity) and
``z <= 0`` (it is 0), each with one neuron fewer relaxed. Every subproblem ("domain") whose lower bound is
positive is closed; a point of the ball where a row of ``C f`` is negative ends the search with a
counterexample. Deep enough, every domain is linear and its bound exact, so the answer is complete:

* **verified** — every domain of every row closed: the property holds on the whole ball;
* **falsified** — a counterexample, checked by a forward pass of the model;
* **unknown** — the domain or time budget ran out first.

The parts, each a short function below:

* **Bounding** (β-CROWN, Wang et al. NeurIPS 2021, eq. 7-8): CROWN's walk of one row over the root's
  intermediate bounds, with the split neurons fixed (their interval clipped at 0) and the split constraints
  ``s z >= 0`` added to the objective with Lagrange multipliers ``β >= 0`` (the lower bound of
  ``g(x) - Σ β s z(x)`` is one of ``g`` on the domain, for every ``β``); ``α`` and ``β`` are optimised by a
  few projected Adam steps, started from CROWN's choice and 0. Intermediate bounds are not re-tightened
  after a split (β-CROWN's default).
* **Branching**: BaBSR's intercept score (Bunel et al. 2020, Sec. 5.1): an unstable neuron whose ReLU output
  has a negative coefficient ``λ`` in the row's bound pays ``λ · (-u l / (u - l))`` for the intercept of
  its upper line; splitting removes it. The best ``candidates`` by score are then filtered as in FSB
  (De Palma et al., "Improved branch and bound", 2021): both children of each are bounded (one CROWN
  walk, batched) and the split whose worse child is best wins.
* **Searching for counterexamples**: PGD on the smallest row at the root, then at every bounding the point
  of the ball that minimises the domain's linear bound, evaluated through the model.

All open domains, of all inputs and rows, are bounded together in batches of ``batch`` on the device.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from ..threat import check_count, clip_box, project
from .alpha import _alpha_chunk, _clean_rows, projected_step
from .bounds import _ACTIVATIONS, _backward, _checked, initial_alpha, trace

__all__ = ["branch_and_bound", "BaBResult", "TreeNode", "BAB_STATUS"]

#: the answers of :func:`branch_and_bound`, per input
BAB_STATUS = ("verified", "falsified", "unknown")


@dataclass
class TreeNode:
    """One bounded domain of the search (for drawing the tree): its parent (None at a row's root), the
    split that made it (``(activation, neuron, +1 active / -1 inactive)``), its depth, lower bound and
    fate (``"verified"``, ``"falsified"``, ``"open"`` or ``"split"``)."""

    parent: int | None
    row: int
    split: tuple[int, int, int] | None
    depth: int
    lower: float
    fate: str = "open"


@dataclass
class BaBResult:
    """The answer of :func:`branch_and_bound`, per input: ``status`` (one of :data:`BAB_STATUS`), ``lower``
    (a proven lower bound of the smallest row of ``C f`` on the ball: > 0 where verified; the root's where
    unknown), ``counterexample`` (a point of the ball where some row is negative, NaN where none),
    ``domains`` (subproblems bounded per input), ``trees`` (the :class:`TreeNode` list of each input) and
    ``seconds`` (wall time of the whole call)."""

    status: list[str]
    lower: torch.Tensor
    counterexample: torch.Tensor
    domains: torch.Tensor
    trees: list[list[TreeNode]] = field(repr=False)
    seconds: float = 0.0

    @property
    def verified(self) -> torch.Tensor:
        return torch.tensor([s == "verified" for s in self.status])

    @property
    def falsified(self) -> torch.Tensor:
        return torch.tensor([s == "falsified" for s in self.status])


# ----------------------------------------------------------------------------------------------- bounding
def _split_pre(pre, splits):
    """The root's intermediate bounds with the split neurons fixed: ``l >= 0`` where active, ``u <= 0``
    where inactive. A domain where some ``l > u`` is empty."""
    out = {}
    for j, (l, u) in pre.items():
        s = splits[j].view_as(l)
        out[j] = (torch.where(s > 0, l.clamp(min=0), l), torch.where(s < 0, u.clamp(max=0), u))
    return out


def _bound(nodes, x0, eps, norm, x_min, x_max, c, pre, splits, steps, lr):
    """β-CROWN lower bounds of ``c . f`` (one row per domain, ``c`` D x 1 x K) on each domain. Returns the
    bound (D), the point of the ball minimising the final linear bound (a counterexample candidate) and
    the coefficients of every ReLU's output (for branching), all detached."""
    pre_of = _split_pre(pre, splits)
    acts = {i: nd for i, nd in enumerate(nodes) if isinstance(nd.op, _ACTIVATIONS)}
    leaves, alpha, beta = [], {}, {}
    for i, nd in acts.items():
        l, u = pre_of[nd.inputs[0]]
        alpha[i] = (initial_alpha(nd.op, l, u)[:, None].clone().requires_grad_(True), None)
        beta[nd.inputs[0]] = torch.zeros_like(l)[:, None].requires_grad_(True)
        leaves += [alpha[i][0], beta[nd.inputs[0]]]
    opt = torch.optim.Adam(leaves, lr=lr) if leaves else None
    steps = steps if leaves else 0
    best, record = None, {}
    for step in range(steps + 1):
        rec = {}
        with torch.enable_grad():
            extra = {j: -b * splits[j].view_as(b[:, 0])[:, None] for j, b in beta.items()}
            lo, _ = _backward(nodes, len(nodes) - 1, c, pre_of, "crown", x0, eps, norm, x_min, x_max,
                              alpha=alpha, extra=extra, upper=False, record=rec)
            loss = -lo.sum()
        lo_d = lo.detach()[:, 0]
        improved = torch.ones_like(lo_d, dtype=torch.bool) if best is None else lo_d > best
        best = lo_d if best is None else torch.maximum(best, lo_d)
        for k, v in rec.items():  # the coefficients of the best iterate
            v = v.detach()
            record[k] = v if k not in record else torch.where(improved.view(-1, *[1] * (v.dim() - 1)), v, record[k])
        if step == steps:
            break
        projected_step(opt, loss, [(a, 0, 1) for a, _ in alpha.values()] + [(b, 0, None) for b in beta.values()])
    empty = torch.zeros_like(best, dtype=torch.bool)
    for l, u in pre_of.values():
        empty |= (l > u).flatten(1).any(1)
    best = torch.where(empty, torch.full_like(best, math.inf), best)
    return best, _primal(record[0][:, 0], x0, eps, norm, x_min, x_max), {i: record[i][:, 0] for i in acts}


def _primal(A, x0, eps, norm, x_min, x_max):
    """The point of the ball ∩ box that minimises ``A . x`` (L-inf: exactly, a corner of the box; L2 / L1:
    the ball's minimiser, clipped to the box)."""
    e = eps.view(-1, *[1] * (x0.dim() - 1))
    A = A.view_as(x0)
    if norm == "linf":
        return torch.where(A > 0, (x0 - e).clamp(min=x_min), (x0 + e).clamp(max=x_max))
    if norm == "l2":
        d = -A
    else:
        flat = A.flatten(1)
        d = torch.zeros_like(flat).scatter(1, flat.abs().argmax(1, keepdim=True),
                                           -flat.gather(1, flat.abs().argmax(1, keepdim=True)).sign()).view_as(A)
    return x0 + clip_box(x0, project(d * 1e6, eps, norm), x_min, x_max)


# ----------------------------------------------------------------------------------------------- branching
def _scores(nodes, pre_of, lam):
    """BaBSR's intercept score of every neuron, per domain: ``-min(λ, 0) · u (-l) / (u - l)`` on unstable
    ReLUs, ``-inf`` elsewhere. Returns ``{activation input node: D x neurons}``."""
    out = {}
    for i, L in lam.items():
        j = nodes[i].inputs[0]
        l, u = (t.flatten(1) for t in pre_of[j])
        unstable = (l < 0) & (u > 0)
        gain = (-L.flatten(1)).clamp(min=0) * u * (-l) / (u - l).clamp(min=1e-12)
        out[j] = torch.where(unstable, gain, torch.full_like(gain, -math.inf))
    return out


def _choose(nodes, x0, eps, norm, x_min, x_max, c, pre, splits, lam, candidates):
    """The neuron to split in each domain: ``(node, neuron)`` per domain as two tensors, and a mask of the
    domains with nothing left to split. FSB: of the ``candidates`` best intercept scores, the one whose
    worse child has the best CROWN bound."""
    scores = _scores(nodes, _split_pre(pre, splits), lam)
    keys = list(scores)
    if not keys:  # no ReLU at all: the network is affine and every domain is as split as it gets
        return [], torch.zeros(len(c), dtype=torch.long, device=c.device), torch.ones(len(c), dtype=torch.bool)
    flat = torch.cat([scores[j] for j in keys], 1)
    offsets = torch.tensor([0] + [scores[j].shape[1] for j in keys]).cumsum(0)
    k = min(candidates, flat.shape[1])
    top_s, top_i = flat.topk(k, 1)
    exhausted = torch.isinf(top_s[:, 0])
    d = len(flat)
    if k > 1:  # bound both children of every candidate in one batch: D * k * 2 domains
        rep = lambda t: t.repeat_interleave(2 * k, 0)  # noqa: E731
        kids = {j: rep(s).clone() for j, s in splits.items()}
        cand = top_i.repeat_interleave(2, 1).flatten()  # D*k*2
        phase = torch.tensor([1, -1], device=x0.device).repeat(d * k)
        for n_j, j in enumerate(keys):
            inside = (cand >= offsets[n_j]) & (cand < offsets[n_j + 1])
            rows = inside.nonzero().squeeze(1)
            kids[j][rows, cand[rows] - offsets[n_j]] = phase[rows].to(kids[j].dtype)
        lo, _, _ = _bound(nodes, rep(x0), rep(eps), norm, rep(x_min), rep(x_max), rep(c),
                          {j: (rep(l), rep(u)) for j, (l, u) in pre.items()}, kids, 0, 1.0)
        worse = lo.view(d, k, 2).amin(2)
        worse = torch.where(torch.isinf(top_s), torch.full_like(worse, -math.inf), worse)
        pick = top_i.gather(1, worse.argmax(1, keepdim=True)).squeeze(1)
    else:
        pick = top_i[:, 0]
    layer = torch.searchsorted(offsets[1:].to(pick.device), pick, right=True)
    neuron = pick - offsets.to(pick.device)[layer]
    return [keys[int(t)] for t in layer], neuron, exhausted


# -------------------------------------------------------------------------------------------------- search
def _attack(model, x0, C, eps, norm, x_min, x_max, steps=50, restarts=4):
    """PGD on the smallest row of ``C f`` (random starts): points of the ball ∩ box, per input the best."""
    n = len(x0)
    x = x0.repeat(restarts, *[1] * (x0.dim() - 1))
    Cr, er = C.repeat(restarts, 1, 1), eps.repeat(restarts)
    x_min, x_max = (t.repeat(restarts, *[1] * (x0.dim() - 1)) for t in (x_min, x_max))
    g = torch.Generator(device="cpu").manual_seed(0)
    e = er.view(-1, *[1] * (x.dim() - 1))
    delta = clip_box(x, project((torch.rand(x.shape, generator=g).to(x) * 2 - 1) * e, er, norm), x_min, x_max)
    step = 2.5 * e / steps
    for _ in range(steps):
        delta.requires_grad_(True)
        with torch.enable_grad():
            rows = (Cr @ model(x + delta)[:, :, None]).squeeze(2).amin(1)
            (grad,) = torch.autograd.grad(rows.sum(), delta)
        with torch.no_grad():
            if norm == "linf":
                move = grad.sign()
            else:
                move = grad / grad.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, *[1] * (x.dim() - 1))
            delta = clip_box(x, project(delta - step * move * (1 if norm == "linf" else math.sqrt(x[0].numel())),
                                        er, norm), x_min, x_max)
    with torch.no_grad():
        value = (Cr @ model(x + delta)[:, :, None]).squeeze(2).amin(1).view(restarts, n)
    best = value.argmin(0)
    return (x + delta).view(restarts, n, *x0.shape[1:])[best, torch.arange(n)], value.min(0).values


def _take(domains: dict, which) -> dict:
    """The domains ``which`` (indices or a mask) of a dict of per-domain tensors."""
    return {k: v[which.to(v.device)] for k, v in domains.items()}


def _join(a: dict, b: dict) -> dict:
    return {k: torch.cat([a[k], b[k]]) for k in a}


def branch_and_bound(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, eps, norm="linf",
                     C: torch.Tensor | None = None, max_domains: int = 2000, time_limit: float | None = None,
                     batch: int = 512, steps: int = 10, lr: float = 0.1, candidates: int = 3, x_min=0.0,
                     x_max=1.0) -> BaBResult:
    """Decide, per input, whether every row of ``C f(x')`` (with ``y``: every margin ``z_y - z_j``) stays
    positive on the ball: branch and bound with β-CROWN bounds (see the module's notes). The root is
    bounded by α-CROWN and attacked by PGD; then the open domains with the lowest bounds are split,
    ``batch`` at a time, each child bounded with ``steps`` Adam steps of size ``lr``, until every input is
    decided or ``time_limit`` seconds have passed; an input whose search has bounded ``max_domains``
    subproblems stops there (unknown), and so does one with a linear domain left below 0 (nothing to split).

    Feed-forward ReLU networks only (what a split means); returns :class:`BaBResult`.
    """
    eps, norm, C, _ = _checked(model, x, y, eps, norm, "crown", C, x_min, x_max, "branch_and_bound")
    if C is None:
        raise ValueError("branch_and_bound: give the labels y (for the margins z_y - z_j) or a matrix C; the "
                         "question it answers is whether every row of C f stays positive")
    max_domains = check_count(max_domains, "branch_and_bound", "max_domains", 1)
    batch = check_count(batch, "branch_and_bound", "batch", 1)
    candidates = check_count(candidates, "branch_and_bound", "candidates", 1)
    nodes = trace(model, tuple(x.shape[1:]))
    if any(isinstance(nd.op, _ACTIVATIONS) and not isinstance(nd.op, nn.ReLU) for nd in nodes):
        raise ValueError("branch_and_bound splits ReLUs: the network has tanh or sigmoid activations; bound it "
                         "with method='alpha-crown' instead")
    start = time.perf_counter()
    dev = x.device
    x_min, x_max = (torch.as_tensor(t, dtype=x.dtype, device=dev).expand_as(x) for t in (x_min, x_max))
    n, m = C.shape[:2]
    acts = [nd.inputs[0] for nd in nodes if isinstance(nd.op, _ACTIVATIONS)]
    with torch.no_grad():
        root = _alpha_chunk(nodes, x, eps, norm, C, x_min, x_max, upper=False)
        clean = _clean_rows(nodes, x, C)
        cex, worst = _attack(model, x, C, eps, norm, x_min, x_max)
    pre = dict(zip(acts, root.pre))
    status, counter = ["unknown"] * n, torch.full_like(x, math.nan)
    for i in range(n):
        if clean[i].min() < 0 or worst[i] < 0:
            status[i], counter[i] = "falsified", x[i] if clean[i].min() < 0 else cex[i]
        elif (root.lower[i] > 0).all():
            status[i] = "verified"
    trees: list[list[TreeNode]] = [[] for _ in range(n)]
    roots = []
    for i in range(n):
        for r in range(m):
            fate = "verified" if root.lower[i, r] > 0 else "open"
            trees[i].append(TreeNode(None, r, None, 0, float(root.lower[i, r]), fate))
            if fate == "open" and status[i] == "unknown":
                roots.append((i, r, len(trees[i]) - 1))
    counted = torch.zeros(n, dtype=torch.long)
    exhausted = torch.zeros(n, dtype=torch.bool)

    def problem(owner, row):
        """The inputs, radii, boxes, rows of C and root bounds of the domains of ``owner`` / ``row``."""
        o = owner.to(dev)
        return (x[o], eps[o], norm, x_min[o], x_max[o], C[o, row.to(dev)][:, None],
                {j: (l[o], u[o]) for j, (l, u) in pre.items()})

    def bound(owner, row, splits, k_steps):
        """β-CROWN on the domains of ``owner`` / ``row`` with ``splits``: (lower, candidate point, λ)."""
        return _bound(nodes, *problem(owner, row), splits, k_steps, lr)

    # the open domains, one tensor per field with one entry per domain (see _take / _join)
    owner = torch.tensor([r[0] for r in roots], dtype=torch.long)
    row = torch.tensor([r[1] for r in roots], dtype=torch.long)
    splits = {j: torch.zeros(len(roots), nodes[j].numel, dtype=torch.int8, device=dev) for j in acts}
    with torch.no_grad():
        lo, point, lam = bound(owner, row, splits, 0)  # the roots' coefficients, for their first split
        value = (C[owner.to(dev), row.to(dev)] * model(point)).sum(1).cpu() if len(roots) else lo
    for q in (value < 0).nonzero().squeeze(1).tolist():  # the bounds' own minimisers, checked by the model
        i = int(owner[q])
        if status[i] == "unknown":
            status[i], counter[i] = "falsified", point[q]
    domains = dict(owner=owner, row=row, node=torch.tensor([r[2] for r in roots], dtype=torch.long),
                   lower=root.lower[owner.to(dev), row.to(dev)].cpu(),
                   **{f"split{j}": s for j, s in splits.items()}, **{f"lam{i}": v for i, v in lam.items()})

    def prune(domains):
        """The domains of the inputs still undecided and within budget."""
        alive = [status[i] == "unknown" and not exhausted[i] for i in domains["owner"].tolist()]
        return _take(domains, torch.tensor(alive, dtype=torch.bool))

    domains = prune(domains)
    with torch.no_grad():
        while len(domains["owner"]) and (time_limit is None or time.perf_counter() - start < time_limit):
            order = domains["lower"].argsort()  # the lowest bounds first
            rest, d = _take(domains, order[batch:]), _take(domains, order[:batch])
            d_splits = {j: d[f"split{j}"] for j in acts}
            layer, neuron, done = _choose(nodes, *problem(d["owner"], d["row"]), d_splits,
                                          {i: d[f"lam{i}"] for i in lam}, candidates)
            exhausted[d["owner"][done.cpu()]] = True  # linear domains still below 0: left undecided
            go = (~done).nonzero().squeeze(1).cpu()
            if not len(go):
                domains = prune(rest)
                continue
            kid = go.repeat_interleave(2)  # two children per split: active (+1), then inactive (-1)
            phase = torch.tensor([1, -1], dtype=torch.int8).repeat(len(go))
            k_splits = {j: d_splits[j][kid.to(dev)].clone() for j in acts}
            for q, (p, parent) in enumerate(zip(phase.tolist(), kid.tolist())):
                k_splits[layer[parent]][q, neuron[parent]] = p
            k_owner, k_row = d["owner"][kid], d["row"][kid]
            lo, point, k_lam = bound(k_owner, k_row, k_splits, steps)
            value = (C[k_owner.to(dev), k_row.to(dev)] * model(point)).sum(1).cpu()  # the row at the point
            lo = lo.cpu()
            counted += torch.bincount(k_owner, minlength=n)
            nodes_new, keep = [], torch.zeros(len(kid), dtype=torch.bool)
            for q in range(len(kid)):
                i, parent = int(k_owner[q]), int(d["node"][kid[q]])
                trees[i][parent].fate = "split"
                fate = "verified" if lo[q] > 0 else "open"
                if status[i] == "unknown" and value[q] < 0:  # checked through the model: a counterexample
                    status[i], counter[i], fate = "falsified", point[q], "falsified"
                split = (acts.index(layer[int(kid[q])]), int(neuron[kid[q]]), int(phase[q]))
                trees[i].append(TreeNode(parent, int(k_row[q]), split, trees[i][parent].depth + 1, float(lo[q]),
                                         fate))
                nodes_new.append(len(trees[i]) - 1)
                keep[q] = fate == "open"
            kids = dict(owner=k_owner, row=k_row, node=torch.tensor(nodes_new, dtype=torch.long), lower=lo,
                        **{f"split{j}": s for j, s in k_splits.items()}, **{f"lam{i}": v for i, v in k_lam.items()})
            domains = _join(rest, _take(kids, keep))
            exhausted |= counted >= max_domains  # out of budget: undecided
            domains = prune(domains)
    for i in set(range(n)) - set(domains["owner"].tolist()):
        if status[i] == "unknown" and not exhausted[i]:
            status[i] = "verified"
    proven = root.lower.amin(1).cpu()
    for i in range(n):
        if status[i] == "verified":  # the leaves partition the ball: the smallest of their bounds holds
            proven[i] = min(t.lower for t in trees[i] if t.fate == "verified")
    return BaBResult(status, proven, counter, counted, trees, time.perf_counter() - start)

