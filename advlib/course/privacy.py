"""Helpers of lecture 51 (what a model gives away: watermarks, model extraction, membership inference):
the reference answers and the checks of its exercises.

* Exercise 1, a watermark's bits read through a black box (the lecture's "remote extraction by
  gradient estimation"): for keys ``x_k`` with classes ``c_k`` and flat input coordinates
  ``i_1 .. i_N``, the symmetric differences

      g_kj = [log p_{c_k}(x_k + h e_{i_j}) - log p_{c_k}(x_k - h e_{i_j})] / (2h),

  ``bit_j = sign(mean_k g_kj)``: exactly ``2N`` queries per key.
* Exercise 2, the equation-solving attack of Tramer et al. (2016, Sec. 4.1) on a softmax regression
  ``p(x) = softmax(W x + b)``: ``log p_k(x) = w_k . x + b_k - log Z(x)`` is linear in ``x`` up to a term
  that all classes share, so ``d + 1`` answers (the zero input and the ``d`` unit vectors) give
  ``W`` and ``b`` up to that shared term, which the softmax ignores: a copy that answers exactly as
  the victim does.
* Exercise 3, the area under the ROC curve of a membership score as the Mann-Whitney statistic: the
  fraction of (member, non-member) pairs in which the member scores higher, a tie counting one half.

Each ``reference_*`` function is written from the formula, independently of
:mod:`advlib.applications` (which the lecture uses), so that a check compares two implementations,
not one with itself.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .exercises import ExerciseError, attempt

__all__ = ["reference_read_bits", "reference_steal_linear", "reference_auc", "check_read_bits",
           "check_steal_linear", "check_auc"]


# ------------------------------------------------------------------------------------------ references
def reference_read_bits(logp: Callable, keys: torch.Tensor, classes: torch.Tensor, coords: torch.Tensor,
                        h: float = 1e-3) -> torch.Tensor:
    """The ``N`` bits (``+-1``) of a gradient watermark from symmetric differences of ``logp(x, c)`` (the
    log-probability of class ``c[m]`` for input ``x[m]``, a batch), ``2N`` queries per key: one key and
    one coordinate at a time."""
    n_keys, shape = len(keys), keys.shape[1:]
    flat = keys.detach().reshape(n_keys, -1)
    sums = torch.zeros(len(coords), dtype=torch.float64)
    for k in range(n_keys):
        for j, i in enumerate(int(v) for v in coords):
            plus, minus = flat[k].clone(), flat[k].clone()
            plus[i] += h
            minus[i] -= h
            v = logp(torch.stack([plus, minus]).reshape(2, *shape), classes[k:k + 1].repeat(2))
            sums[j] += (float(v[0]) - float(v[1])) / (2 * h)
    return torch.sign(sums / n_keys)


def reference_steal_linear(query: Callable, shape) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W, b)`` (``K x d`` and ``K``) of a softmax regression behind ``query`` (inputs ``n x shape`` in
    [0, 1] to probabilities ``n x K``) from ``d + 1`` answers: at 0, ``log p`` gives ``b`` up to a shared
    constant; at the unit vector ``e_i``, ``log p(e_i) - log p(0)`` gives column ``i`` of ``W`` up to a
    shared constant."""
    d = math.prod(shape)
    x = torch.zeros(d + 1, d, dtype=torch.float64)
    x[1:] = torch.eye(d, dtype=torch.float64)
    logp = torch.as_tensor(query(x.reshape(d + 1, *shape))).double().log()
    b = logp[0]
    return (logp[1:] - b).T.contiguous(), b


def reference_auc(members: torch.Tensor, nonmembers: torch.Tensor) -> float:
    """``P(member score > non-member score) + P(tie) / 2`` over all pairs (the Mann-Whitney ``U / (n m)``)."""
    pos = torch.as_tensor(members).detach().double().flatten().cpu()
    neg = torch.as_tensor(nonmembers).detach().double().flatten().cpu()
    greater = (pos[:, None] > neg[None, :]).sum().item()
    ties = (pos[:, None] == neg[None, :]).sum().item()
    return (greater + 0.5 * ties) / (len(pos) * len(neg))


def _counting(fn: Callable, what: str, shape, bounds: tuple[float, float] | None = None):
    """``fn`` behind a counter of the inputs it answers (``.rows``), refusing inputs of another shape or
    outside ``bounds``."""
    def call(x, *rest):
        if not isinstance(x, torch.Tensor):
            raise ExerciseError(f"{what}: pass a torch tensor of inputs, got {type(x).__name__}")
        if x.dim() != 1 + len(shape) or tuple(x.shape[1:]) != tuple(shape):
            raise ExerciseError(f"{what}: inputs must be a batch of shape (n, {', '.join(map(str, shape))}), got "
                                f"{tuple(x.shape)} (a single input still needs the batch dimension: x[None])")
        if bounds is not None and (float(x.min()) < bounds[0] - 1e-12 or float(x.max()) > bounds[1] + 1e-12):
            raise ExerciseError(f"{what}: the API answers only inputs in [{bounds[0]}, {bounds[1]}] (images), got "
                                f"values in [{float(x.min()):.3g}, {float(x.max()):.3g}]")
        call.rows += len(x)
        with torch.no_grad():
            return fn(x.detach().double(), *rest)
    call.rows = 0
    return call


# ------------------------------------------------------------------------------------------ exercise 1
def _linear_logp(G: torch.Tensor, offset: torch.Tensor):
    """``logp(x, c) = x_flat . G[c] + offset[c]``: a function whose input gradient for class ``c`` is ``G[c]``
    everywhere, so symmetric differences are exact."""
    def logp(x, c):
        c = torch.as_tensor(c).long().flatten()
        if len(c) != len(x):
            raise ExerciseError(f"logp(x, c): c needs one class per input ({len(x)}), got {len(c)}")
        return (x.flatten(1) * G[c]).sum(1) + offset[c]
    return logp


def check_read_bits(read_bits, *, strict: bool = False) -> None:
    """``read_bits(logp, keys, classes, coords, h)`` must return the ``N`` bits ``sign(mean_k g_kj)`` (entries
    ``+-1``) from the symmetric differences ``g_kj`` of ``logp`` at every key ``k`` along every flat coordinate
    ``coords[j]`` (of one input's ``C x H x W`` values), with ``logp(x, c)`` the log-probability of class
    ``c[m]`` for input ``x[m]`` and ``c_k = classes[k]``; exactly ``2 N`` queries (inputs) per key. Checked
    against the reference and, on a small network, against autograd's input gradients."""
    from ..models import build

    def check():
        g = torch.Generator().manual_seed(51)
        # a hand-made case: per-key gradients at the first marked coordinate are +3, -1, -1 (mean +1/3:
        # bit +1, while two of the three keys say -1); key k has class k, and class 0 alone is misleading
        shape, n_classes = (1, 2, 3), 3
        G = torch.zeros(n_classes, 6, dtype=torch.float64)
        G[:, 4] = torch.tensor([3.0, -1.0, -1.0])
        G[:, 0] = torch.tensor([-1.0, 2.0, 2.0])
        G[:, 2] = torch.tensor([0.5, 0.5, -2.0])
        G[:, 5] = torch.tensor([-0.2, -0.3, 0.1])
        hand = (_linear_logp(G, torch.tensor([-1.0, -2.0, -0.5], dtype=torch.float64)),
                0.25 + 0.5 * torch.rand(3, *shape, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2]),
                torch.tensor([4, 0, 2, 5]), 1e-3, "hand-made: 3 keys of shape 1x2x3, 4 coordinates")
        cases = [hand]
        torch.manual_seed(7)
        net = build("mlp", in_shape=(1, 4, 4), hidden=(16,), n_classes=5).double().eval()
        for p in net.parameters():
            p.requires_grad_(False)

        def net_logp(x, c):
            c = torch.as_tensor(c).long().flatten()
            if len(c) != len(x):
                raise ExerciseError(f"logp(x, c): c needs one class per input ({len(x)}), got {len(c)}")
            return torch.log_softmax(net(x), 1).gather(1, c[:, None])[:, 0]

        for n_keys in (1, 4):
            keys = 0.25 + 0.5 * torch.rand(n_keys, 1, 4, 4, generator=g, dtype=torch.float64)
            cases.append((net_logp, keys, torch.randint(5, (n_keys,), generator=g),
                          torch.randperm(16, generator=g)[:6], 1e-4,
                          f"a small network (16 inputs, 5 classes), {n_keys} key(s), 6 coordinates"))
        for logp, keys, classes, coords, h, what in cases:
            shape = tuple(keys.shape[1:])
            box = _counting(logp, "logp(x, c)", shape)
            saved = (keys.clone(), classes.clone(), coords.clone())
            got = read_bits(box, keys, classes, coords, h)
            if not all(torch.equal(a, b) for a, b in zip((keys, classes, coords), saved)):
                raise ExerciseError(f"{what}: keys, classes or coords were modified in place: perturb copies "
                                    "(keys.clone()), not the owner's key.")
            counted = box.rows
            want = reference_read_bits(logp, *saved, h)
            if logp is net_logp:  # our own check: the reference reads the signs of the true mean gradient
                x = saved[0].clone().requires_grad_(True)
                (grad,) = torch.autograd.grad(net_logp(x, saved[1]).sum(), x)
                assert torch.equal(want, torch.sign(grad.flatten(1)[:, saved[2]].mean(0)))
            n_keys, n_bits = len(keys), len(coords)
            if not isinstance(got, torch.Tensor):
                raise ExerciseError(f"{what}: return a tensor of {n_bits} bits, got {type(got).__name__}")
            got = got.detach().double().cpu()
            if tuple(got.shape) == (n_keys, n_bits) and n_keys > 1:
                raise ExerciseError(f"{what}: that is one row per key ({tuple(got.shape)}); average the estimates "
                                    f"over the keys and return the {n_bits} signs of the mean.")
            if tuple(got.shape) != (n_bits,):
                raise ExerciseError(f"{what}: expected {n_bits} bits (one per coordinate), got shape "
                                    f"{tuple(got.shape)}")
            if not torch.isin(got, torch.tensor([-1.0, 1.0], dtype=got.dtype)).all():
                if torch.equal(torch.sign(got), want):
                    raise ExerciseError(f"{what}: those are the gradient estimates; the bits are their signs "
                                        "(torch.sign), entries -1 or +1.")
                raise ExerciseError(f"{what}: the bits must be -1 or +1, got {got.tolist()}")
            keys0, classes0, coords0 = saved
            one_sided = counted in (n_bits * n_keys, n_bits * n_keys + n_keys) and counted != 2 * n_bits * n_keys
            if one_sided:
                raise ExerciseError(f"{what}: {counted} queries for {n_keys} key(s) and {n_bits} coordinates: "
                                    "one-sided differences. Use symmetric ones, [log p(x + h e_i) - log p(x - h e_i)] "
                                    f"/ 2h, which are accurate to O(h^2): 2N = {2 * n_bits} queries per key.")
            if torch.equal(got, want):
                if counted != 2 * n_bits * n_keys:
                    extra = (" The symmetric differences need no log p(x_k) itself." if counted ==
                             2 * n_bits * n_keys + n_keys else "")
                    raise ExerciseError(f"{what}: the bits are right, but you made {counted} queries; the readout "
                                        f"costs exactly 2N = {2 * n_bits} per key, {2 * n_bits * n_keys} for "
                                        f"{n_keys} key(s).{extra}")
                continue
            if torch.equal(got, -want):
                raise ExerciseError(f"{what}: every bit is flipped: the difference is log p(x + h e_i) minus "
                                    "log p(x - h e_i), not the other way round.")
            if n_keys > 1:
                per_key = torch.stack([reference_read_bits(logp, keys0[k:k + 1], classes0[k:k + 1], coords0, h)
                                       for k in range(n_keys)])
                majority = torch.sign(per_key.sum(0))
                if torch.equal(got, majority) and not torch.equal(majority, want):
                    raise ExerciseError(f"{what}: that is a majority vote of the keys' signs; the mark is the "
                                        "sign of the *mean* estimate over the keys (a key with a large gradient "
                                        "outweighs two with small ones).")
                for name, other in (("the first key's class", classes0[:1].repeat(n_keys)),
                                    ("class 0", torch.zeros_like(classes0))):
                    wrong_class = reference_read_bits(logp, keys0, other, coords0, h)
                    if torch.equal(got, wrong_class) and not torch.equal(wrong_class, want):
                        raise ExerciseError(f"{what}: every key was read with {name}; each key x_k carries the "
                                            "mark in the log-probability of its own class c_k = classes[k].")
            raise ExerciseError(f"{what}: expected the bits {[int(v) for v in want]}, got {[int(v) for v in got]}. "
                                "Hint: for each key and each coordinate i in coords, evaluate logp at the key "
                                "with h added to and subtracted from its flat entry i; average the differences "
                                "over the keys; take the signs.")

    attempt(check, title="reading a watermark through a black box", strict=strict)


# ------------------------------------------------------------------------------------------ exercise 2
def _softmax_regression(W: torch.Tensor, b: torch.Tensor):
    def query(x):
        return torch.softmax(x.flatten(1) @ W.T + b, 1)
    return query


def check_steal_linear(steal, *, strict: bool = False) -> None:
    """``steal(query, shape)`` must return ``(W, b)``, a ``K x d`` matrix and ``K`` biases (``d`` the number of
    values of an input of ``shape``), such that ``softmax(W x + b)`` answers every input ``x`` in [0, 1] as the
    softmax regression behind ``query`` does, from at most ``d + 1`` queries. ``query(x)`` takes a batch
    ``n x shape`` of inputs in [0, 1] and returns the probabilities (``n x K``); ``K`` is for the answers to
    tell. Checked on fresh random inputs against the victim."""
    def check():
        g = torch.Generator().manual_seed(2016)
        cases = []
        for shape, n_classes, scale in (((1, 2, 3), 3, 1.0), ((1, 4, 4), 5, 2.0), ((1, 8, 8), 10, 0.5)):
            d = math.prod(shape)
            W = scale * torch.randn(n_classes, d, generator=g, dtype=torch.float64)
            b = torch.randn(n_classes, generator=g, dtype=torch.float64)
            cases.append((shape, W, b, f"a softmax regression on inputs {'x'.join(map(str, shape))} (d = {d}), "
                                       f"{n_classes} classes"))
        for shape, W, b, what in cases:
            d, n_classes = math.prod(shape), len(b)
            query = _counting(_softmax_regression(W, b), "query(x)", shape, bounds=(0.0, 1.0))
            got = steal(query, shape)
            counted = query.rows
            if not (isinstance(got, (tuple, list)) and len(got) == 2):
                raise ExerciseError(f"{what}: return the pair (W, b), got {type(got).__name__}")
            try:
                W_hat, b_hat = (torch.as_tensor(v).detach().double().cpu() for v in got)
            except (TypeError, ValueError, RuntimeError):
                raise ExerciseError(f"{what}: W and b must be tensors (or arrays) of numbers") from None
            if tuple(W_hat.shape) == (d, n_classes) and d != n_classes:
                raise ExerciseError(f"{what}: W has shape {tuple(W_hat.shape)} = d x K; return it K x d "
                                    f"({n_classes} x {d}), one row per class (logits W @ x + b).")
            if tuple(W_hat.shape) != (n_classes, d) or tuple(b_hat.shape) != (n_classes,):
                raise ExerciseError(f"{what}: expected W of shape ({n_classes}, {d}) and b of shape ({n_classes},), "
                                    f"got {tuple(W_hat.shape)} and {tuple(b_hat.shape)}")
            fresh = torch.cat([torch.rand(256, d, generator=g, dtype=torch.float64),
                               torch.eye(d, dtype=torch.float64), torch.ones(1, d, dtype=torch.float64)])
            truth = torch.softmax(fresh @ W.T + b, 1)
            mine = torch.softmax(fresh @ W_hat.T + b_hat, 1)
            gap = float((mine - truth).abs().max())
            if gap <= 1e-5:
                if counted > d + 1:
                    raise ExerciseError(f"{what}: the copy is exact, but it took {counted} queries; d + 1 = {d + 1} "
                                        f"suffice (each answer gives K - 1 = {n_classes - 1} equations for the "
                                        f"(K - 1)(d + 1) = {(n_classes - 1) * (d + 1)} unknowns that matter).")
                continue
            # what typical slips give, for the hints
            shift = (W - W[:1], b - b[:1])  # the victim up to the shift that the softmax ignores
            W_rel, b_rel = W_hat - W_hat[:1], b_hat - b_hat[:1]
            w_ok = torch.allclose(W_rel, shift[0], atol=1e-5, rtol=1e-5)
            b_ok = torch.allclose(b_rel, shift[1], atol=1e-5, rtol=1e-5)
            if w_ok and not b_ok:
                raise ExerciseError(f"{what}: W is right (up to the shift all classes share), the biases are not"
                                    f"{' (b is all zeros: the intercept is missing)' if not b_hat.abs().any() else ''}:"
                                    " the answer at the zero input gives b.")
            if b_ok and not w_ok:
                raise ExerciseError(f"{what}: b is right, W is not: column i is the change of log p between the "
                                    "zero input and the unit vector e_i (divided by the step, if you step by less "
                                    "than 1).")
            zero = torch.zeros(1, d, dtype=torch.float64)
            p0 = torch.softmax(zero @ W.T + b, 1)[0]
            pe = torch.softmax(torch.eye(d, dtype=torch.float64) @ W.T + b, 1)
            if torch.allclose(W_hat, (pe - p0).T, atol=1e-6) or torch.allclose(b_hat, p0, atol=1e-6):
                raise ExerciseError(f"{what}: those are differences of probabilities; the logits are linear in x, "
                                    "the probabilities are not: take log p first.")
            raise ExerciseError(f"{what}: softmax(W x + b) differs from the victim's answers by up to {gap:.3g} on "
                                "fresh inputs. Hint: log p_k(x) = w_k . x + b_k - log Z(x), and log Z(x) is the same "
                                "for every class: query the zero input and the d unit vectors.")

    attempt(check, title="stealing a softmax regression (equation solving)", strict=strict)


# ------------------------------------------------------------------------------------------ exercise 3
def check_auc(auc, *, strict: bool = False) -> None:
    """``auc(members, nonmembers)`` must return the area under the ROC curve of the rule "member iff score >= t"
    for the scores of members and non-members (1-D tensors, possibly of different lengths, possibly tied):
    the fraction of (member, non-member) pairs in which the member scores higher, a tie counting one half. A
    number or a 0-dimensional tensor. Checked against :func:`advlib.applications.roc` and the reference."""
    from ..applications import roc

    def check():
        g = torch.Generator().manual_seed(2018)
        cases = [(torch.tensor([3.0, 1.0, 2.0, 2.0]), torch.tensor([2.0, 0.0, 1.0]),
                  "hand-made: members [3, 1, 2, 2], non-members [2, 0, 1] (three tied pairs, AUC 9.5 / 12)"),
                 (torch.tensor([0.9, 0.8]), torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5]), "perfectly separated (AUC 1)"),
                 (torch.full((4,), 0.5), torch.full((6,), 0.5), "every score tied (AUC 0.5)"),
                 (torch.randint(5, (30,), generator=g).float(), torch.randint(4, (50,), generator=g).float(),
                  "30 members and 50 non-members, integer scores (many ties)"),
                 (torch.randn(200, generator=g) + 0.3, torch.randn(120, generator=g),
                  "200 members, 120 non-members, continuous scores"),
                 (torch.rand(40, generator=g), torch.rand(40, generator=g) + 0.2, "members score lower (AUC < 0.5)")]
        for members, nonmembers, what in cases:
            saved = (members.clone(), nonmembers.clone())
            got = auc(members, nonmembers)
            if not (torch.equal(members, saved[0]) and torch.equal(nonmembers, saved[1])):
                raise ExerciseError(f"{what}: the scores were modified in place (members[:] = members.sort().values?): "
                                    "sort copies.")
            pos, neg = saved
            want = reference_auc(pos, neg)
            assert math.isclose(want, roc(pos, neg)["auc"], abs_tol=1e-9)  # our own check: the library agrees
            try:
                value = torch.as_tensor(got, dtype=torch.float64)
            except (TypeError, ValueError, RuntimeError):
                raise ExerciseError(f"{what}: return a number, got {type(got).__name__}") from None
            if value.numel() != 1:
                raise ExerciseError(f"{what}: return one number (the area), got a tensor of shape {tuple(value.shape)}")
            value = float(value)
            if math.isclose(value, want, abs_tol=1e-9):
                continue
            n, m = len(pos), len(neg)
            greater = float((pos[:, None] > neg[None, :]).sum())
            ties = float((pos[:, None] == neg[None, :]).sum())
            r = roc(pos, neg)
            tries = [(greater / (n * m), "ties count zero; a tied pair counts one half (the threshold rule "
                      "'score >= t' sweeps through a tie as one diagonal step of the curve)"),
                     ((greater + ties) / (n * m), "ties count one; a tied pair counts one half"),
                     (1 - want, "that is the probability that a non-member outscores a member: higher scores mean "
                      "'member'"),
                     ((greater + 0.5 * ties) / (n * n), f"divided by n * n; there are n * m = {n * m} pairs"),
                     ((greater + 0.5 * ties) / (m * m), f"divided by m * m; there are n * m = {n * m} pairs"),
                     ((greater + 0.5 * ties), f"that is the count U; the area is U / (n m), n m = {n * m}"),
                     (r["advantage"], "that is the membership advantage max (TPR - FPR); the AUC is the area under "
                      "the whole curve")]
            for v, hint in tries:
                if math.isclose(value, v, abs_tol=1e-9) and not math.isclose(v, want, abs_tol=1e-9):
                    raise ExerciseError(f"{what}: {hint} (expected {want:.4f}, got {value:.4f}).")
            raise ExerciseError(f"{what}: expected {want:.4f}, got {value:.4f}. Hint: compare every member's score "
                                "with every non-member's (broadcasting), count wins plus half the ties, divide by "
                                "the number of pairs.")

    attempt(check, title="the AUC of a membership attack", strict=strict)
