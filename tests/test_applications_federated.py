"""advlib.applications.federated from first principles: every aggregation rule against an
independent loop implementation of its paper (FedAvg's weighted mean, Krum's scores and choice,
Multi-Krum, Bulyan's Algorithm 1, the trimmed mean, the coordinate median) and against f large
Byzantine rows; the client split (IID and Dirichlet) disjoint, covering and as skewed as it
should be; the DBA trigger layout pixel by pixel; one round of FedAvg with one full-batch step per
client equal to one centralised gradient step computed by hand with autograd; FedAvg over IID
digits close to centralised SGD; the boost of a malicious update; the round bookkeeping of
``train_federated``; and a small distributed backdoor that works under FedAvg while honest training
leaves the global trigger harmless."""
import copy
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

import advlib
from advlib.applications.federated import (
    AGGREGATORS,
    Client,
    bulyan,
    dba_triggers,
    fedavg,
    flat_params,
    krum,
    krum_scores,
    local_update,
    median,
    multi_krum,
    set_params,
    split_clients,
    train_federated,
    trimmed_mean,
)
from advlib.backdoor import backdoor_metrics
from advlib.models import mlp

SHAPE28 = (1, 28, 28)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def train28():
    return advlib.data.load("digits28", "train")


@pytest.fixture(scope="module")
def test28():
    return advlib.data.load("digits28", "test")


# ------------------------------------------------------------------------------ reference implementations
def sqdist(a, b):
    """Squared Euclidean distance of two rows, summed coordinate by coordinate in Python floats."""
    return sum((float(p) - float(q)) ** 2 for p, q in zip(a.tolist(), b.tolist()))


def ref_scores(rows, f, neighbours=None):
    """Krum's score of every row: sum of the squared distances to its n - f - 2 nearest other rows."""
    n = len(rows)
    k = n - f - 2 if neighbours is None else neighbours
    out = []
    for i in range(n):
        d = sorted(sqdist(rows[i], rows[j]) for j in range(n) if j != i)
        out.append(sum(d[:k]))
    return out


def argmin(values):
    best = 0
    for i, v in enumerate(values):
        if v < values[best]:
            best = i
    return best


def ref_bulyan(U, f):
    """El Mhamdi et al. (2018), Algorithm 1: theta = n - 2f rows chosen one at a time by Krum on the
    rows left (n' - f - 2 neighbours, at least 1), each removed once chosen; then per coordinate the
    mean of the beta = theta - 2f chosen values closest to the (lower) median of the chosen values."""
    rows = [U[i] for i in range(len(U))]
    rest, chosen = list(range(len(rows))), []
    theta = len(rows) - 2 * f
    while len(chosen) < theta:
        if len(rest) == 1:
            chosen.append(rest.pop())
            continue
        scores = ref_scores([rows[i] for i in rest], f, neighbours=max(len(rest) - f - 2, 1))
        chosen.append(rest.pop(argmin(scores)))
    beta = theta - 2 * f
    out = []
    for j in range(U.shape[1]):
        vals = sorted(float(rows[i][j]) for i in chosen)
        med = vals[(len(vals) - 1) // 2]
        closest = sorted(vals, key=lambda v: abs(v - med))[:beta]
        out.append(sum(closest) / beta)
    return torch.tensor(out, dtype=torch.float64)


# ------------------------------------------------------------------------------ aggregation rules
def test_fedavg_is_the_weighted_mean():
    U = torch.tensor([[1.0, 2.0, -3.0], [4.0, 0.0, 1.0], [-2.0, 6.0, 5.0]])
    # by hand: (1 * row0 + 2 * row1 + 3 * row2) / 6
    expected = torch.tensor([(1 + 8 - 6) / 6, (2 + 0 + 18) / 6, (-3 + 2 + 15) / 6])
    assert torch.allclose(fedavg(U, torch.tensor([1.0, 2.0, 3.0])), expected, atol=1e-6)
    assert torch.allclose(fedavg(U, [10, 20, 30]), expected, atol=1e-6)  # only the proportions matter
    assert torch.allclose(fedavg(U), torch.tensor([1.0, 8 / 3, 1.0]), atol=1e-6)
    assert torch.allclose(fedavg(U, [0, 1, 0]), U[1])


def test_krum_on_a_hand_made_set():
    # five honest updates around the origin, an outlier pair (f = 2) far away; (0, 0) is row 3
    U = torch.tensor([[10.0, 10.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [-1.0, 0.0], [10.0, 11.0], [0.0, -1.0]])
    f = 2  # n - f - 2 = 3 neighbours
    scores = ref_scores(U, f)
    # by hand: the centre is at distance 1 from four points; (1, 0) has 1, 2, 2 (then 4)
    assert scores[3] == 3 and scores[1] == scores[2] == scores[4] == scores[6] == 5
    assert scores[0] == 1 + 181 + 181 and scores[5] == 1 + 200 + 202
    assert torch.allclose(krum_scores(U, f), torch.tensor(scores), atol=1e-4)
    assert torch.equal(krum(U, f), U[3])
    # the same set permuted: Krum follows the row, not the position
    perm = torch.tensor([5, 0, 3, 6, 1, 4, 2])
    assert torch.equal(krum(U[perm], f), torch.tensor([0.0, 0.0]))


@pytest.mark.parametrize("n,f,d,seed", [(7, 2, 3, 0), (9, 1, 5, 1), (12, 3, 4, 2), (20, 4, 8, 3)])
def test_krum_scores_and_choice_match_loops(n, f, d, seed):
    U = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    scores = ref_scores(U, f)
    assert torch.allclose(krum_scores(U, f).double(), torch.tensor(scores, dtype=torch.float64), rtol=1e-4)
    assert torch.equal(krum(U, f), U[argmin(scores)])


@pytest.mark.parametrize("m", [1, 2, 3, 5])
def test_multi_krum_is_the_mean_of_the_m_best(m):
    U = torch.randn(9, 4, generator=torch.Generator().manual_seed(7))
    U[0] += 20  # one far row, which must never be among the best
    f = 2
    scores = ref_scores(U, f)
    best = sorted(range(len(U)), key=lambda i: scores[i])[:m]
    assert 0 not in best
    expected = sum(U[i].double() for i in best) / m
    assert torch.allclose(multi_krum(U, f, m).double(), expected, atol=1e-6)
    assert torch.allclose(multi_krum(U, f, 1), krum(U, f))
    # the default m = n - f
    best = sorted(range(len(U)), key=lambda i: scores[i])[:len(U) - f]
    assert torch.allclose(multi_krum(U, f).double(), sum(U[i].double() for i in best) / len(best), atol=1e-6)


@pytest.mark.parametrize("n,f,d,seed", [(3, 0, 4, 0), (7, 1, 5, 1), (11, 2, 6, 2), (15, 3, 4, 3),
                                        (12, 1, 5, 4), (16, 2, 7, 5), (25, 3, 3, 6)])
def test_bulyan_matches_algorithm_1(n, f, d, seed):
    assert n >= 4 * f + 3
    U = torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) * torch.linspace(0.5, 3, d)
    assert torch.allclose(bulyan(U, f).double(), ref_bulyan(U, f), atol=1e-5)


def test_bulyan_without_attackers_is_the_mean():
    U = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(bulyan(U, 0), U.mean(0), atol=1e-6)


@pytest.mark.parametrize("rule,f", [("bulyan", 1), ("bulyan", 2), ("krum", 3), ("multi-krum", 3),
                                    ("trimmed-mean", 3), ("median", 3)])
def test_robust_rules_stay_in_the_honest_range(rule, f):
    g = torch.Generator().manual_seed(f)
    n = 4 * f + 3 if rule == "bulyan" else 2 * f + 3
    honest = torch.randn(n - f, 10, generator=g)
    byz = 1e3 * torch.sign(torch.randn(f, 10, generator=g)) + torch.randn(f, 10, generator=g)
    for U in (torch.cat([honest, byz]), torch.cat([byz, honest])):
        out = AGGREGATORS[rule](U, f, torch.ones(n))
        assert (out >= honest.min(0).values - 1e-6).all() and (out <= honest.max(0).values + 1e-6).all()
    # ... where the plain mean is dragged out of it
    out = AGGREGATORS["fedavg"](torch.cat([honest, byz]), f, torch.ones(n))
    assert ((out < honest.min(0).values) | (out > honest.max(0).values)).any()


@pytest.mark.parametrize("n,b", [(9, 0), (9, 1), (9, 2), (9, 4), (6, 2), (5, 1)])
def test_trimmed_mean_matches_sorting(n, b):
    U = torch.randn(n, 6, generator=torch.Generator().manual_seed(n + b))
    expected = []
    for j in range(U.shape[1]):
        vals = sorted(U[:, j].tolist())
        kept = vals[b:n - b]
        expected.append(sum(kept) / len(kept))
    assert torch.allclose(trimmed_mean(U, b).double(), torch.tensor(expected, dtype=torch.float64), atol=1e-6)


@pytest.mark.parametrize("n", [1, 4, 7])
def test_median_is_the_coordinate_median(n):
    U = torch.randn(n, 5, generator=torch.Generator().manual_seed(n))
    expected = [sorted(U[:, j].tolist())[(n - 1) // 2] for j in range(5)]  # lower middle for even n
    assert torch.equal(median(U), torch.tensor(expected))
    assert torch.equal(median(U), U.median(0).values)


@pytest.mark.parametrize("n,f", [(3, 1), (4, 2), (2, 0), (5, 3), (4, 1), (5, 2), (6, 2), (8, 3)])
def test_krum_refuses_n_at_most_2f_plus_2(n, f):
    """Blanchard et al.'s condition n > 2f + 2, not merely n - f - 2 >= 1 neighbours."""
    U = torch.randn(n, 3)
    hint = f"n > 2f \\+ 2 .*got n = {n}, f = {f}.*at most f = {max((n - 3) // 2, 0)}"
    for fn in (krum, krum_scores, multi_krum):
        with pytest.raises(ValueError, match=hint):
            fn(U, f)
    krum_scores(torch.randn(2 * f + 3, 3), f)  # the smallest n allowed


def test_other_rules_refuse_too_few_updates_and_bad_input():
    with pytest.raises(ValueError, match="n >= 4f \\+ 3"):
        bulyan(torch.randn(10, 3), 2)
    with pytest.raises(ValueError, match="n >= 4f \\+ 3"):
        bulyan(torch.randn(6, 3), 1)
    bulyan(torch.randn(11, 3), 2)
    with pytest.raises(ValueError, match="n > 2b"):
        trimmed_mean(torch.randn(4, 3), 2)
    with pytest.raises(ValueError, match="n > 2b"):
        trimmed_mean(torch.randn(4, 3), -1)
    rules = [fedavg, median, lambda U: krum(U, 0), lambda U: multi_krum(U, 0), lambda U: bulyan(U, 0),
             lambda U: trimmed_mean(U, 0), lambda U: krum_scores(U, 0)]
    for rule, bad in itertools.product(rules, [torch.randn(5), torch.randn(3, 2, 2), torch.zeros(0, 4)]):
        with pytest.raises(ValueError, match="n x d matrix"):
            rule(bad)
    for rule, v in itertools.product(rules, [math.nan, math.inf]):
        U = torch.randn(5, 3)
        U[2, 1] = v
        with pytest.raises(ValueError, match="not finite"):
            rule(U)


def test_federated_refuses_an_unknown_aggregator():
    with pytest.raises(ValueError, match="aggregator must be one of .*'mean'"):
        train_federated(nn.Linear(2, 2), [Client(torch.rand(4, 2), torch.zeros(4, dtype=torch.long))], rounds=1,
                  aggregator="mean", progress=False)


# ------------------------------------------------------------------------------ client split
def _classes_above(y, parts, share=0.05):
    """Per non-empty client, how many classes hold more than ``share`` of its data."""
    out = []
    for p in parts:
        if len(p):
            counts = torch.bincount(y[p], minlength=10).float()
            out.append(int((counts / len(p) > share).sum()))
    return out


def _check_partition(parts, n):
    together = torch.cat(list(parts))
    assert len(together) == n and torch.equal(together.sort().values, torch.arange(n))
    for p in parts:
        assert p.dtype == torch.long and torch.equal(p, p.sort().values)


def test_split_clients_iid(train28):
    y = train28.y
    parts = split_clients(y, 10, seed=0)
    assert len(parts) == 10
    _check_partition(parts, len(y))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == len(y)
    assert min(_classes_above(y, parts)) >= 9  # every client sees (nearly) every class
    assert all(torch.equal(a, b) for a, b in zip(parts, split_clients(y, 10, seed=0)))
    assert not all(torch.equal(a, b) for a, b in zip(parts, split_clients(y, 10, seed=1)))
    assert [len(p) for p in split_clients(torch.zeros(7, dtype=torch.long), 3)] == [3, 2, 2]
    _check_partition(split_clients(torch.zeros(5, dtype=torch.long), 5), 5)  # one example each


def test_split_clients_dirichlet(train28):
    y = train28.y
    parts = split_clients(y, 10, alpha=0.1, seed=0)
    assert len(parts) == 10
    _check_partition(parts, len(y))
    skewed, iid = _classes_above(y, parts), _classes_above(y, split_clients(y, 10, seed=0))
    assert sum(skewed) / len(skewed) < 5 < 9 <= sum(iid) / len(iid)
    # a large alpha comes back close to IID
    broad = _classes_above(y, split_clients(y, 10, alpha=1000.0, seed=0))
    assert sum(broad) / len(broad) >= 9
    again = split_clients(y, 10, alpha=0.1, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(parts, again))
    other = split_clients(y, 10, alpha=0.1, seed=1)
    assert not all(torch.equal(a, b) for a, b in zip(parts, other))
    _check_partition(other, len(y))


def test_split_clients_errors():
    y = torch.arange(10) % 3
    for alpha in (0, 0.0, -1.0):
        with pytest.raises(ValueError, match="alpha must be > 0"):
            split_clients(y, 3, alpha=alpha)
    with pytest.raises(ValueError, match="11 clients for 10 examples"):
        split_clients(y, 11)
    with pytest.raises(ValueError, match="n_clients"):
        split_clients(y, 0)


# ------------------------------------------------------------------------------ DBA triggers
def _bar(shape, r, c, bh, bw):
    m = torch.zeros(shape)
    for ch, i, j in itertools.product(range(shape[0]), range(r, r + bh), range(c, c + bw)):
        m[ch, i, j] = 1.0
    return m


@pytest.mark.parametrize("shape,parts,size,gap,position", [
    ((1, 28, 28), 4, (1, 4), 1, (0, 0)),
    ((1, 28, 28), 4, (2, 3), 2, (5, 3)),
    ((3, 12, 12), 5, (2, 2), 0, (1, 1)),
    ((1, 8, 8), 2, (1, 3), 1, (7, 0)),
])
def test_dba_layout(shape, parts, size, gap, position):
    (bh, bw), (r0, c0) = size, position
    glob, locs = dba_triggers(shape, parts=parts, size=size, gap=gap, position=position, value=0.7)
    assert len(locs) == parts
    union = torch.zeros(shape)
    for k, t in enumerate(locs):
        # by the docstring: two per row, gap pixels apart both ways, from the top-left position
        expected = _bar(shape, r0 + (k // 2) * (bh + gap), c0 + (k % 2) * (bw + gap), bh, bw)
        assert torch.equal(t.mask, expected)
        assert torch.allclose(t.pattern, 0.7 * expected)
        assert t.mask.sum() == shape[0] * bh * bw
        union = torch.maximum(union, t.mask)
    assert torch.equal(glob.mask, union)
    assert torch.allclose(glob.pattern, 0.7 * union)
    # disjoint parts: their masks add up to the global one
    assert torch.equal(sum(t.mask for t in locs), glob.mask)
    # the global trigger stamps every local pixel
    x = torch.zeros(2, *shape)
    assert torch.allclose(glob.apply(x), torch.stack([0.7 * union] * 2))


def test_dba_position_and_gap_move_the_parts():
    base, _ = dba_triggers((1, 16, 16), size=(1, 3), gap=1, position=(0, 0))
    moved, _ = dba_triggers((1, 16, 16), size=(1, 3), gap=1, position=(4, 6))
    assert torch.equal(moved.mask, base.mask.roll((4, 6), dims=(1, 2)))
    _, wide = dba_triggers((1, 16, 16), size=(1, 3), gap=3, position=(0, 0))
    cols = wide[1].mask[0].nonzero()[:, 1]
    rows = wide[2].mask[0].nonzero()[:, 0]
    assert cols.min() == 3 + 3 and rows.min() == 1 + 3
    _, tight = dba_triggers((1, 16, 16), size=(1, 3), gap=0, position=(0, 0))
    assert torch.equal(sum(t.mask for t in tight)[0, :2, :6], torch.ones(2, 6))  # adjacent, no overlap


def test_dba_parts_that_do_not_fit():
    with pytest.raises(ValueError, match="part 1 .* does not fit in 8x8"):
        dba_triggers((1, 8, 8), parts=2, size=(1, 4), gap=1)
    with pytest.raises(ValueError, match="part 2 .* does not fit in 8x8"):
        dba_triggers((1, 8, 8), parts=4, size=(2, 2), gap=1, position=(5, 0))
    with pytest.raises(ValueError, match="does not fit"):
        dba_triggers((1, 8, 8), position=(-1, 0))
    with pytest.raises(ValueError, match="parts"):
        dba_triggers((1, 8, 8), parts=0)
    dba_triggers((1, 8, 8), parts=2, size=(1, 4), gap=0)  # exactly fits


# ------------------------------------------------------------------------------ parameters
def test_flat_params_round_trip():
    torch.manual_seed(0)
    model = mlp((1, 4, 4), hidden=(5,), n_classes=3)
    params = list(model.parameters())
    vec = flat_params(model)
    assert vec.shape == (sum(p.numel() for p in params),) and not vec.requires_grad
    assert torch.equal(vec, torch.cat([p.detach().reshape(-1) for p in params]))
    new = torch.randn_like(vec)
    set_params(model, new)
    assert torch.equal(flat_params(model), new)
    i = 0
    for p in params:  # layout: the parameters in order, each flattened row-major
        assert torch.equal(p.detach(), new[i:i + p.numel()].view(p.shape))
        i += p.numel()
    new += 1  # flat_params is a copy, set_params copies in
    assert not torch.equal(flat_params(model), new)
    vec = flat_params(model)
    vec.zero_()
    assert not torch.equal(flat_params(model), vec)


# ------------------------------------------------------------------------------ FedAvg = centralised step
@pytest.mark.parametrize("sizes,server_lr", [((50, 50, 50, 50), 1.0), ((30, 50, 70, 90), 1.0), ((40, 40, 40), 0.5)])
def test_one_fedavg_round_is_one_centralised_step(train28, sizes, server_lr):
    """One local epoch of one full batch per client: SGD's first step from a fresh optimizer is
    ``-lr * grad`` (the momentum buffer starts at the gradient), and FedAvg's size-weighted mean of
    the clients' mean-loss gradients is the gradient of the mean loss on the union."""
    n = sum(sizes)
    x, y = train28.x[:n], train28.y[:n]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    start = copy.deepcopy(model)
    cuts = torch.tensor(sizes).cumsum(0)[:-1].tolist()
    clients = [Client(xs, ys) for xs, ys in zip(x.tensor_split(cuts), y.tensor_split(cuts))]
    lr = 0.1
    history = train_federated(model, clients, rounds=1, aggregator="fedavg", local_epochs=1, lr=lr,
                        batch_size=max(sizes), server_lr=server_lr, progress=False)
    assert history["round"] == [1] and history["malicious"] == [0]
    # the centralised step by hand
    loss = F.cross_entropy(start(x), y)
    grads = torch.autograd.grad(loss, list(start.parameters()))
    expected = torch.cat([(p - server_lr * lr * g).detach().flatten() for p, g in zip(start.parameters(), grads)])
    moved = flat_params(model) - flat_params(start)
    assert moved.abs().max() > 1e-3  # the step is not negligible ...
    assert torch.allclose(flat_params(model), expected, atol=2e-6)  # ... and it is the centralised one
    # with unequal shards the unweighted mean of the updates is a different step
    if len(set(sizes)) > 1:
        U = torch.stack([local_update(start, c, epochs=1, lr=lr, batch_size=max(sizes)) for c in clients])
        assert not torch.allclose(flat_params(start) + server_lr * U.mean(0), expected, atol=1e-5)


def test_fedavg_iid_is_close_to_centralised_training(train28, test28):
    """10 IID clients, 20 rounds of 2 local epochs (SGD, momentum 0.9, batch 32) against centralised
    SGD with the same optimiser for the same 40 epochs with batches of 10 x 32 (as many gradient
    evaluations and as many sequential steps); the gap is ~2.5 points on this data."""
    parts = split_clients(train28.y, 10, seed=0)
    clients = [Client(train28.x[p], train28.y[p]) for p in parts]
    torch.manual_seed(0)
    start = mlp(SHAPE28, hidden=(64,))
    fed = copy.deepcopy(start)
    rounds, epochs, lr = 20, 2, 0.05
    history = train_federated(fed, clients, rounds=rounds, local_epochs=epochs, lr=lr, batch_size=32, test=test28,
                        progress=False)
    assert history["round"] == list(range(1, rounds + 1)) and len(history["clean"]) == rounds
    assert all(math.isnan(a) for a in history["asr"])
    central = copy.deepcopy(start).train()
    opt = torch.optim.SGD(central.parameters(), lr=lr, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for _ in range(rounds * epochs):
        for idx in torch.randperm(len(train28.x), generator=g).split(320):
            loss = F.cross_entropy(central(train28.x[idx]), train28.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    central.eval()
    with torch.no_grad():
        acc_central = (central(test28.x).argmax(1) == test28.y).float().mean().item()
        acc_fed = (fed(test28.x).argmax(1) == test28.y).float().mean().item()
    assert acc_fed == pytest.approx(history["clean"][-1])
    assert acc_central > 0.9
    assert acc_fed > max(acc_central - 0.05, 0.85)
    assert history["clean"][-1] > history["clean"][0] + 0.1


# ------------------------------------------------------------------------------ clients and rounds
def test_boosted_update_is_boost_times_the_update(train28):
    x, y = train28.x[:96], train28.y[:96]
    glob, locs = dba_triggers(SHAPE28, size=(2, 4), position=(1, 1))
    torch.manual_seed(0)
    model = mlp(SHAPE28, hidden=(16,))
    before = flat_params(model)
    u1 = local_update(model, Client(x, y, trigger=locs[0], target=3, poison=0.5), epochs=2, seed=5)
    u4 = local_update(model, Client(x, y, trigger=locs[0], target=3, poison=0.5, boost=4.0), epochs=2, seed=5)
    assert torch.equal(flat_params(model), before)  # the global model is left alone
    assert u1.abs().max() > 0 and torch.equal(u4, 4.0 * u1)
    honest = local_update(model, Client(x, y), epochs=2, seed=5)
    assert not torch.allclose(honest, u1)  # poisoning changes the update ...
    unpoisoned = local_update(model, Client(x, y, trigger=locs[0], target=3, poison=0.0), epochs=2, seed=5)
    assert torch.equal(unpoisoned, honest)  # ... through the poisoned examples only
    other_seed = local_update(model, Client(x, y), epochs=2, seed=6)
    assert not torch.equal(other_seed, honest)


def test_federated_rounds_and_participants(monkeypatch):
    """Clients with distinct shard sizes: the weights the aggregator is given say who took part."""
    torch.manual_seed(0)
    shards = [(torch.rand(4 + i, 1, 2, 2), torch.randint(3, (4 + i,))) for i in range(6)]
    trig = dba_triggers((1, 2, 2), parts=1, size=(1, 1))[0]
    bad = {1, 4}
    clients = [Client(xs, ys, trigger=trig if i in bad else None) for i, (xs, ys) in enumerate(shards)]
    seen = []

    def record(U, f, w):
        seen.append((len(U), f, sorted(int(v) - 4 for v in w)))
        return fedavg(U, w)

    monkeypatch.setitem(AGGREGATORS, "record", record)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    test = TensorDataset(torch.rand(10, 1, 2, 2), torch.arange(10) % 3)  # federated reads test[:]
    history = train_federated(model, clients, rounds=4, aggregator="record", f=1, per_round=3, attack_rounds={1, 3},
                        local_epochs=1, test=test, trigger=trig, target=0, progress=False)
    assert history["round"] == [1, 2, 3, 4]
    assert history["malicious"] == [0, 2, 0, 2]
    assert len(history["clean"]) == len(history["asr"]) == 4
    assert all(0 <= a <= 1 for a in history["clean"] + history["asr"])
    assert [s[0] for s in seen] == [3, 3, 3, 3] and all(s[1] == 1 for s in seen)
    for r, (_, _, who) in enumerate(seen):
        assert (set(who) & bad == bad) if r in {1, 3} else not set(who) & bad
    # attack_rounds=None: every round; no test set: no metrics
    seen.clear()
    history = train_federated(model, clients, rounds=2, aggregator="record", per_round=4, local_epochs=1,
                              progress=False)
    assert history["malicious"] == [2, 2] and history["clean"] == history["asr"] == []
    assert all(s[0] == 4 and bad <= set(s[2]) for s in seen)
    with pytest.raises(ValueError, match="at least the 2 malicious"):
        train_federated(model, clients, rounds=1, per_round=1, progress=False)
    with pytest.raises(ValueError, match="at most the 6 clients"):
        train_federated(model, clients, rounds=1, per_round=7, progress=False)
    with pytest.raises(ValueError, match="rounds"):
        train_federated(model, clients, rounds=0, progress=False)


def test_dba_backdoors_fedavg(train28, test28):
    """10 IID clients, 4 of them malicious with one DBA part each (2x4 bars, target 0), 6 FedAvg
    rounds: the global trigger ends far more successful than on the untrained model or on the same
    federation without attackers (observed ~0.9-1.0 against ~0), and more than any single part."""
    parts = split_clients(train28.y, 10, seed=0)
    glob, locs = dba_triggers(SHAPE28, parts=4, size=(2, 4), gap=1, position=(1, 1))
    torch.manual_seed(0)
    start = mlp(SHAPE28, hidden=(64,)).eval()
    before = backdoor_metrics(start, test28, glob, 0)["asr"]
    kw = dict(rounds=6, local_epochs=2, lr=0.05, batch_size=32, test=test28, trigger=glob, target=0, progress=False)
    attacked = copy.deepcopy(start)
    clients = [Client(train28.x[p], train28.y[p], trigger=locs[i] if i < 4 else None) for i, p in enumerate(parts)]
    h = train_federated(attacked, clients, **kw)
    honest = train_federated(copy.deepcopy(start), [Client(c.x, c.y) for c in clients], **kw)
    assert h["malicious"] == [4] * 6 and honest["malicious"] == [0] * 6
    assert h["asr"][-1] > 0.6
    assert h["asr"][-1] > before + 0.4 and h["asr"][-1] > honest["asr"][-1] + 0.4
    assert h["clean"][-1] > 0.7 and honest["clean"][-1] > 0.7
    assert h["asr"][-1] == pytest.approx(backdoor_metrics(attacked, test28, glob, 0)["asr"])
    assert max(backdoor_metrics(attacked, test28, t, 0)["asr"] for t in locs) < h["asr"][-1] - 0.2


def test_dirichlet_split_leaves_the_global_generator_alone():
    torch.manual_seed(123)
    a = torch.rand(3)
    torch.manual_seed(123)
    split_clients(torch.arange(100) % 10, 5, alpha=0.5, seed=7)
    assert torch.equal(torch.rand(3), a)


def test_batch_norm_is_refused_with_a_clear_error():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    clients = [Client(torch.rand(6, 1, 2, 2), torch.arange(6) % 3) for _ in range(3)]
    with pytest.raises(ValueError, match="batch normalisation"):
        train_federated(model, clients, rounds=1, progress=False)
    # a malicious client's round itself no longer runs a one-image batch in train mode
    trigger, _ = dba_triggers((1, 2, 2), parts=1, size=(1, 1), gap=0)
    update = local_update(model, Client(torch.rand(6, 1, 2, 2), torch.arange(6) % 3, trigger=trigger), epochs=1,
                          batch_size=3)
    assert update.shape == flat_params(model).shape and torch.isfinite(update).all()
