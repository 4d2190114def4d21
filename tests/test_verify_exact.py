"""The exact oracles of advlib.verify.exact (triangle LP, big-M MILP) on tiny ReLU networks: first checked
against brute force, then used to check the bound engine (IBP, Fast-Lin, CROWN of advlib.verify).

Chain of inequalities tested per sample and per row of C, with the engine's own intermediate bounds:
``ibp <= exact``, ``fastlin <= lp``, ``crown <= lp``, ``lp <= exact`` (the last one fails if the engine's
intermediate bounds are not sound), and the mirror images for upper bounds (``c -> -c``).
"""
import copy
import math

import numpy as np
import pytest
import torch

from advlib.verify.exact import (
    affine_relu_form,
    interval_bounds,
    lp_all_bounds,
    lp_bound,
    lp_bounds,
    milp_bound,
    milp_bounds,
    random_relu_mlp,
)

TOL = 1e-5


def _rand(seed, shape, lo=0.0, hi=1.0):
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(shape, generator=g)


def _value(model, x, c):
    """``c . model(x)`` in float64 for one unbatched input."""
    with torch.no_grad():
        return float(torch.as_tensor(c, dtype=torch.float64) @ copy.deepcopy(model).double()(x.double()[None])[0])


def _grid(x0, eps, n=301):
    """A dense grid of the 2-D box [x0 - eps, x0 + eps] ∩ [0, 1], as a batch 1 x 1 x 2 inputs."""
    x0 = x0.reshape(2).double()
    axes = [torch.linspace(max(0.0, float(v) - eps), min(1.0, float(v) + eps), n, dtype=torch.float64) for v in x0]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 1, 1, 2)


# ------------------------------------------------------------------------------- the oracles by themselves
def test_affine_relu_form_reproduces_the_model():
    for seed, hidden in [(0, (6, 5)), (1, (4, 3, 3)), (2, ())]:
        model = random_relu_mlp(seed, (2, 2, 2), hidden, 4)
        layers = affine_relu_form(model, (2, 2, 2))
        assert len(layers) == len(hidden) + 1
        x = _rand(seed, (8, 2, 2, 2)).double()
        with torch.no_grad():
            want = copy.deepcopy(model).double()(x).numpy()
        for xi, wi in zip(x, want):
            z = xi.numpy().ravel()
            for W, b in layers[:-1]:
                z = np.maximum(W @ z + b, 0)
            np.testing.assert_allclose(layers[-1][0] @ z + layers[-1][1], wi, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("eps", [0.08, 0.3])
def test_milp_is_the_grid_minimum_linf(seed, eps):
    model = random_relu_mlp(seed, (1, 1, 2), (8, 6), 3, scale=1.5)
    x0, c = _rand(100 + seed, (1, 1, 2)), _rand(200 + seed, (3,), -1, 1)
    res = milp_bound(model, x0, c, eps=eps)
    assert res.x.shape == x0.shape
    assert (res.x - x0.double()).abs().max() <= eps + 1e-9 and res.x.min() >= 0 and res.x.max() <= 1
    assert abs(_value(model, res.x, c) - res.value) <= TOL
    with torch.no_grad():
        grid = copy.deepcopy(model).double()(_grid(x0, eps)) @ c.double()
    assert grid.min() >= res.value - 1e-9  # nothing on the grid beats the MILP ...
    assert grid.min() <= res.value + 1e-2  # ... and the grid gets close to it (spacing <= 0.002)
    assert lp_bound(model, x0, c, eps=eps) <= res.value + 1e-9


@pytest.mark.parametrize("seed", [3, 4])
def test_milp_is_the_grid_minimum_l1(seed):
    eps = 0.3
    model = random_relu_mlp(seed, (1, 1, 2), (8, 6), 3, scale=1.5)
    x0, c = _rand(100 + seed, (1, 1, 2)), _rand(200 + seed, (3,), -1, 1)
    res = milp_bound(model, x0, c, eps=eps, norm="l1")
    assert (res.x - x0.double()).abs().sum() <= eps + 1e-7 and res.x.min() >= 0 and res.x.max() <= 1
    assert abs(_value(model, res.x, c) - res.value) <= TOL
    pts = _grid(x0, eps, 401)
    pts = pts[(pts - x0.double()).abs().flatten(1).sum(1) <= eps]
    with torch.no_grad():
        grid = copy.deepcopy(model).double()(pts) @ c.double()
    assert res.value - 1e-9 <= grid.min() <= res.value + 1e-2
    assert lp_bound(model, x0, c, eps=eps, norm="l1") <= res.value + 1e-9
    # the L1 set is smaller than the L-inf set of the same radius
    assert res.value >= milp_bound(model, x0, c, eps=eps, norm="linf").value - 1e-9


def test_milp_beats_random_samples_deeper_net():
    """Four inputs, three hidden layers: no random point or vertex of the box goes below the MILP."""
    eps = 0.15
    model = random_relu_mlp(5, (1, 2, 2), (8, 6, 5), 3, scale=1.5)
    x0, c = _rand(105, (1, 2, 2), 0.2, 0.8), torch.tensor([1.0, -1.0, 0.0])
    res = milp_bound(model, x0, c, eps=eps)
    assert abs(_value(model, res.x, c) - res.value) <= TOL
    signs = torch.tensor([[(v >> i) & 1 for i in range(4)] for v in range(16)], dtype=torch.float64) * 2 - 1
    pts = torch.cat([signs, _rand(6, (20000, 4), -1, 1).double()]) * eps + x0.double().reshape(1, 4)
    with torch.no_grad():
        vals = copy.deepcopy(model).double()(pts.reshape(-1, 1, 2, 2)) @ c.double()
    assert vals.min() >= res.value - 1e-9
    # the l1 MILP: samples in the L1 ball (scaled to its sphere) stay above it too
    res1 = milp_bound(model, x0, c, eps=eps, norm="l1")
    d = _rand(7, (20000, 4), -1, 1).double()
    d = d / d.abs().sum(1, keepdim=True) * eps
    with torch.no_grad():
        vals1 = copy.deepcopy(model).double()((x0.double().reshape(1, 4) + d).reshape(-1, 1, 2, 2)) @ c.double()
    assert vals1.min() >= res1.value - 1e-9 and abs(_value(model, res1.x, c) - res1.value) <= TOL


def test_lp_relaxes_milp():
    """LP <= MILP for many nets, both norms, interval bounds as ``pre``; strictly below somewhere."""
    gaps = []
    for seed in range(4):
        model = random_relu_mlp(seed, (1, 2, 2), [(6, 5), (8, 6, 4)][seed % 2], 3, scale=1.5)
        x0, c = _rand(300 + seed, (1, 2, 2)), _rand(400 + seed, (3,), -1, 1)
        for norm, eps in [("linf", 0.1), ("linf", 0.2), ("l1", 0.4)]:
            pre = interval_bounds(model, x0, eps=eps, norm=norm)
            kw = dict(eps=eps, norm=norm, pre=pre)
            lp, exact = lp_bound(model, x0, c, **kw), milp_bound(model, x0, c, **kw).value
            assert lp <= exact + 1e-7
            # the MILP does not depend on which valid bounds give its big-M constants
            assert abs(milp_bound(model, x0, c, eps=eps, norm=norm).value - exact) <= 1e-7
            gaps.append(exact - lp)
    assert max(gaps) > 1e-3


def test_lp_equals_milp_without_unstable_neurons():
    checked = 0
    for seed in range(8):
        model = random_relu_mlp(seed, (1, 2, 2), (6, 5), 3)
        x0, c = _rand(500 + seed, (1, 2, 2)), _rand(600 + seed, (3,), -1, 1)
        for norm in ("linf", "l1"):
            eps = 1e-3
            pre = interval_bounds(model, x0, eps=eps, norm=norm)
            if any(((l < 0) & (u > 0)).any() for l, u in pre):
                continue
            checked += 1
            kw = dict(eps=eps, norm=norm, pre=pre)
            lp, res = lp_bound(model, x0, c, **kw), milp_bound(model, x0, c, **kw)
            assert abs(lp - res.value) <= 1e-6
    assert checked >= 8


def test_l2_is_refused():
    model, x0, c = random_relu_mlp(0), _rand(0, (1, 2, 2)), torch.tensor([1.0, 0.0, -1.0])
    with pytest.raises(ValueError, match="L2"):
        lp_bound(model, x0, c, eps=0.1, norm="l2")
    with pytest.raises(ValueError, match="L2"):
        milp_bound(model, x0, c, eps=0.1, norm="l2")
    with pytest.raises(NotImplementedError, match="ReLU"):
        milp_bound(random_relu_mlp(0).append(torch.nn.Tanh()), x0, c, eps=0.1)


def test_invalid_pre_is_caught():
    """Pre-activation bounds that exclude every input make the LP infeasible: the oracle says so."""
    model, x0, c = random_relu_mlp(0), _rand(0, (1, 2, 2)), torch.tensor([1.0, 0.0, -1.0])
    pre = interval_bounds(model, x0, eps=0.05)
    l, u = pre[0]
    bad = [(u + 1.0, u + 2.0)] + pre[1:]
    with pytest.raises(RuntimeError, match="not valid"):
        lp_bound(model, x0, c, eps=0.05, pre=bad)


# ------------------------------------------------------------------------------- the engine against them
ARCHS = [(6, 5), (8, 6, 4), (10, 10), (5, 5, 5)]
EPSILONS = {"linf": (0.02, 0.06, 0.12), "l1": (0.1, 0.2, 0.4)}


def _neg(C, k, n):
    return -(torch.eye(k).expand(n, k, k) if C is None else C)


def _case(seed, norm, eps, n=2, use_margin=True):
    """Engine bounds (CROWN, Fast-Lin with CROWN's intermediate bounds, IBP) and the oracles' bounds for one
    random net: the triangle LP over the engine's intermediate bounds, the exact MILP (its big-M constants from
    the oracle's own LP-all bounds, independent of the engine), lower and upper."""
    from advlib.verify import margin_matrix, propagate

    model = random_relu_mlp(seed, (1, 2, 2), ARCHS[seed % len(ARCHS)], 3, scale=1.5)
    x = _rand(700 + seed, (n, 1, 2, 2))
    with torch.no_grad():
        y = model(x).argmax(1)
    C = margin_matrix(y, 3) if use_margin else None
    crown = propagate(model, x, eps=eps, norm=norm, C=C)
    return dict(
        seed=seed, norm=norm, eps=eps, model=model, x=x, C=C, crown=crown,
        fastlin=propagate(model, x, eps=eps, norm=norm, method="fastlin", C=C, pre=crown.pre),
        crown_again=propagate(model, x, eps=eps, norm=norm, C=C, pre=crown.pre),
        ibp=propagate(model, x, eps=eps, norm=norm, method="ibp", C=C),
        lp_lo=lp_bounds(model, x, eps=eps, norm=norm, C=C, pre=crown.pre),
        lp_up=-lp_bounds(model, x, eps=eps, norm=norm, C=_neg(C, 3, n), pre=crown.pre),
        ex_lo=milp_bounds(model, x, eps=eps, norm=norm, C=C),
        ex_up=-milp_bounds(model, x, eps=eps, norm=norm, C=_neg(C, 3, n)),
    )


@pytest.fixture(scope="module")
def cases():
    """Eight random nets (four architectures), each at one eps per norm, two inputs, margins or logits."""
    return [_case(seed, norm, EPSILONS[norm][seed % 3], use_margin=seed % 4 != 3)
            for seed in range(8) for norm in ("linf", "l1")]


def _tol(v):
    return TOL * (1 + v.abs())  # the engine runs in float32


def _where(cs, bad):
    """A reproducer for a failing comparison."""
    n, m = torch.nonzero(bad)[0].tolist()
    return (f"seed={cs['seed']} norm={cs['norm']} eps={cs['eps']} sample={n} row={m}: "
            f"x={cs['x'][n].flatten().tolist()} C={None if cs['C'] is None else cs['C'][n, m].tolist()}")


def test_engine_linear_bounds_below_triangle_lp(cases):
    """With the same intermediate bounds, Fast-Lin and CROWN are never tighter than the triangle LP."""
    for cs in cases:
        for method in ("fastlin", "crown_again"):
            lo, up = cs[method].lower.double(), cs[method].upper.double()
            bad = lo > cs["lp_lo"] + _tol(lo)
            assert not bad.any(), (method, "lower", _where(cs, bad), lo, cs["lp_lo"])
            bad = up < cs["lp_up"] - _tol(up)
            assert not bad.any(), (method, "upper", _where(cs, bad), up, cs["lp_up"])


def test_engine_intermediate_bounds_keep_lp_below_exact(cases):
    """The LP over the engine's own pre-activation bounds stays below the exact MILP (above for the max):
    a violation means some intermediate bound of the engine cuts off reachable pre-activations."""
    for cs in cases:
        bad = cs["lp_lo"] > cs["ex_lo"] + _tol(cs["ex_lo"])
        assert not bad.any(), ("lower", _where(cs, bad), cs["lp_lo"], cs["ex_lo"])
        bad = cs["lp_up"] < cs["ex_up"] - _tol(cs["ex_up"])
        assert not bad.any(), ("upper", _where(cs, bad), cs["lp_up"], cs["ex_up"])


def test_engine_bounds_are_sound(cases):
    """IBP, Fast-Lin and CROWN (each with its own intermediate bounds for IBP and CROWN) contain the exact range."""
    for cs in cases:
        for method in ("ibp", "fastlin", "crown"):
            lo, up = cs[method].lower.double(), cs[method].upper.double()
            bad = lo > cs["ex_lo"] + _tol(lo)
            assert not bad.any(), (method, "lower", _where(cs, bad), lo, cs["ex_lo"])
            bad = up < cs["ex_up"] - _tol(up)
            assert not bad.any(), (method, "upper", _where(cs, bad), up, cs["ex_up"])


def test_oracle_chain_is_exercised(cases):
    """The cases above are not vacuous: unstable ReLUs, LP strictly below exact, CROWN strictly below LP."""
    unstable = sum(int(((l < 0) & (u > 0)).sum()) for cs in cases for l, u in cs["crown"].pre)
    lp_gap = max(float((cs["ex_lo"] - cs["lp_lo"]).max()) for cs in cases)
    crown_gap = max(float((cs["lp_lo"] - cs["crown"].lower.double()).max()) for cs in cases)
    assert unstable >= 50 and lp_gap > 1e-2 and crown_gap > 1e-2


def test_engine_reuses_given_pre(cases):
    for cs in cases:
        assert torch.allclose(cs["crown_again"].lower, cs["crown"].lower, atol=1e-6, rtol=1e-6), cs["seed"]
        assert torch.allclose(cs["crown_again"].upper, cs["crown"].upper, atol=1e-6, rtol=1e-6), cs["seed"]


def _textbook(layers, pre, c, x0, eps, norm, method):
    """Lower bound of ``c . f`` by back-substitution (Weng et al. 2018 Thm 3.5; Zhang et al. 2018 Thm 3.2) in
    float64 numpy, with the engine's documented concretisation (box, and for L1 the better of box and ball)."""
    a, const = c @ layers[-1][0], c @ layers[-1][1]
    for (W, b), (l, u) in zip(reversed(layers[:-1]), reversed(pre)):
        l, u = l.double().numpy(), u.double().numpy()
        unstable = (l < 0) & (u > 0)
        up = np.where(unstable, u / np.where(unstable, u - l, 1.0), (l >= 0).astype(float))
        lo = up if method == "fastlin" else np.where(unstable, (u > -l).astype(float), up)
        neg = np.minimum(a, 0)
        const = const + neg @ np.where(unstable, -up * l, 0.0)
        a = np.maximum(a, 0) * lo + neg * up
        a, const = a @ W, const + a @ b
    x0 = x0.ravel()
    box_lo, box_hi = (np.zeros_like(x0), np.ones_like(x0)) if norm == "l1" else (
        np.maximum(x0 - eps, 0), np.minimum(x0 + eps, 1))
    value = a @ (box_lo + box_hi) / 2 - np.abs(a) @ (box_hi - box_lo) / 2
    if norm == "l1":
        value = max(value, a @ x0 - eps * np.abs(a).max())
    return value + const


def test_engine_matches_textbook_backsubstitution(cases):
    """Given the same intermediate bounds, the engine's last backward walk equals the dense textbook formula."""
    for cs in cases:
        layers = affine_relu_form(cs["model"], (1, 2, 2))
        C = torch.eye(3).expand(2, 3, 3) if cs["C"] is None else cs["C"]
        for n in range(2):
            pre = [(l[n], u[n]) for l, u in cs["crown"].pre]
            for m in range(C.shape[1]):
                c, x0 = C[n, m].double().numpy(), cs["x"][n].double().numpy()
                for method in ("fastlin", "crown_again"):
                    name = method.split("_")[0]
                    lo = _textbook(layers, pre, c, x0, cs["eps"], cs["norm"], name)
                    up = -_textbook(layers, pre, -c, x0, cs["eps"], cs["norm"], name)
                    assert abs(float(cs[method].lower[n, m]) - lo) <= TOL * (1 + abs(lo)), (method, cs["seed"])
                    assert abs(float(cs[method].upper[n, m]) - up) <= TOL * (1 + abs(up)), (method, cs["seed"])


def test_engine_crown_beats_fastlin_on_average():
    """CROWN's adaptive lower slope (1 if u > -l else 0) is a heuristic: with the same intermediate bounds it
    loses to Fast-Lin's parallel lines on many single bounds, and on the tiny nets above not even the mean gain
    is reliably positive. On wider random nets it wins on average and on most bounds, for both norms."""
    from advlib.verify import margin_matrix, propagate

    gains, wins, total = [], 0, 0
    for seed in range(6):
        model = random_relu_mlp(seed, (1, 4, 4), [(20, 20), (50, 50, 50)][seed % 2], 10)
        x = _rand(1000 + seed, (8, 1, 4, 4))
        with torch.no_grad():
            C = margin_matrix(model(x).argmax(1), 10)
        for norm, eps in [("linf", 0.05), ("l1", 0.3)]:
            crown = propagate(model, x, eps=eps, norm=norm, C=C)
            fastlin = propagate(model, x, eps=eps, norm=norm, method="fastlin", C=C, pre=crown.pre)
            gains += [(crown.lower - fastlin.lower).mean(), (fastlin.upper - crown.upper).mean()]
            wins += int((crown.lower >= fastlin.lower - 1e-6).sum())
            total += crown.lower.numel()
    assert float(torch.stack(gains).mean()) > 0 and wins / total > 0.6


def test_engine_intermediate_bounds_contain_lp_all_bounds():
    """CROWN's intermediate bounds can never be tighter than the triangle LP's layer-wise bounds (LP-all)."""
    from advlib.verify import propagate

    for seed in range(4):
        model = random_relu_mlp(seed, (1, 2, 2), ARCHS[seed % len(ARCHS)], 3, scale=1.5)
        x = _rand(850 + seed, (2, 1, 2, 2))
        for norm, eps in [("linf", 0.1), ("l1", 0.3)]:
            pre = propagate(model, x, eps=eps, norm=norm).pre
            for n in range(2):
                for (l, u), (la, ua) in zip(pre, lp_all_bounds(model, x[n], eps=eps, norm=norm)):
                    assert (l[n].double() <= la + _tol(la)).all() and (u[n].double() >= ua - _tol(ua)).all(), (
                        seed, norm, n)


def test_engine_intermediate_bounds_contain_exact_ranges():
    """Every (l, u) of CROWN's ``pre`` contains the exact range of that neuron (a MILP per neuron on the
    network cut just before the ReLU)."""
    from advlib.verify import propagate

    for seed, norm, eps in [(1, "linf", 0.08), (2, "l1", 0.3)]:
        model = random_relu_mlp(seed, (1, 2, 2), ARCHS[seed % len(ARCHS)], 3, scale=1.5)
        x = _rand(800 + seed, (1, 1, 2, 2))
        pre = propagate(model, x, eps=eps, norm=norm).pre
        cuts = [i for i, m in enumerate(model) if isinstance(m, torch.nn.ReLU)]
        assert len(cuts) == len(pre)
        for cut, (l, u) in zip(cuts, pre):
            head = model[:cut]
            for j in range(l.shape[1]):
                e = torch.zeros(l.shape[1])
                e[j] = 1
                lo = milp_bound(head, x[0], e, eps=eps, norm=norm).value
                hi = -milp_bound(head, x[0], -e, eps=eps, norm=norm).value
                assert l[0, j] <= lo + TOL * (1 + abs(lo)) and u[0, j] >= hi - TOL * (1 + abs(hi)), (cut, j)


def test_engine_exact_without_unstable_neurons():
    """When eps is so small that every ReLU is stable, the network is affine on the input set: Fast-Lin,
    CROWN, the LP and the MILP all give the exact bound."""
    from advlib.verify import margin_matrix, propagate

    checked = 0
    for seed in range(4):
        model = random_relu_mlp(seed, (1, 2, 2), ARCHS[seed % len(ARCHS)], 3, scale=1.5)
        x = _rand(900 + seed, (3, 1, 2, 2), 0.1, 0.9)
        with torch.no_grad():
            C = margin_matrix(model(x).argmax(1), 3)
        for norm, eps in [("linf", 1e-4), ("l1", 1e-4)]:
            crown = propagate(model, x, eps=eps, norm=norm, C=C)
            fastlin = propagate(model, x, eps=eps, norm=norm, method="fastlin", C=C, pre=crown.pre)
            stable = torch.stack([((l < 0) & (u > 0)).flatten(1).any(1) for l, u in crown.pre]).any(0).logical_not()
            for n in torch.nonzero(stable).flatten().tolist():
                pre = [(l[n], u[n]) for l, u in crown.pre]
                for m in range(C.shape[1]):
                    lp = lp_bound(model, x[n], C[n, m], eps=eps, norm=norm, pre=pre)
                    ex = milp_bound(model, x[n], C[n, m], eps=eps, norm=norm).value
                    lp_max = -lp_bound(model, x[n], -C[n, m], eps=eps, norm=norm, pre=pre)
                    ex_max = -milp_bound(model, x[n], -C[n, m], eps=eps, norm=norm).value
                    for v in (crown.lower[n, m], fastlin.lower[n, m], lp):
                        assert abs(float(v) - ex) <= TOL * (1 + abs(ex)), (seed, norm, n, m, float(v), ex)
                    for v in (crown.upper[n, m], fastlin.upper[n, m], lp_max):
                        assert abs(float(v) - ex_max) <= TOL * (1 + abs(ex_max)), (seed, norm, n, m, float(v), ex_max)
                checked += 1
    assert checked >= 12


def test_oracles_are_fast():
    """A 3-hidden-layer net of 10 neurons each with several unstable ReLUs: an LP and a MILP take about 0.1 s
    together (the bound is generous so that a loaded machine does not fail it)."""
    import time

    model = random_relu_mlp(11, (1, 2, 2), (10, 10, 10), 3, scale=1.5)
    x0, c = _rand(11, (1, 2, 2)), torch.tensor([1.0, -1.0, 0.0])
    pre = interval_bounds(model, x0, eps=0.1)
    unstable = sum(int(((l < 0) & (u > 0)).sum()) for l, u in pre)
    t = time.perf_counter()
    lp = lp_bound(model, x0, c, eps=0.1, pre=pre)
    ex = milp_bound(model, x0, c, eps=0.1, pre=pre).value
    assert time.perf_counter() - t < 5.0 and lp <= ex + 1e-7 and unstable >= 5
    assert math.isfinite(ex)


def test_batched_oracles_take_labels_and_keywords_like_the_engine():
    """``lp_bounds`` / ``milp_bounds`` follow ``propagate``'s convention: labels y give the margins, the rest
    is keyword-only; the single-sample oracles take ``(model, x0, c, *, eps, norm, pre)`` both alike."""
    from advlib.verify import margin_matrix

    model = random_relu_mlp(0, scale=1.5)
    x = _rand(12, (2, 1, 2, 2))
    with torch.no_grad():
        y = model(x).argmax(1)
    C = margin_matrix(y, 3)
    assert torch.equal(lp_bounds(model, x, y, eps=0.1), lp_bounds(model, x, eps=0.1, C=C))
    assert torch.equal(milp_bounds(model, x, y, eps=0.1), milp_bounds(model, x, eps=0.1, C=C))
    assert lp_bounds(model, x, eps=0.1).shape == (2, 3)  # neither: the logits
    c = C[0, 0]
    assert lp_bound(model, x[0], c, eps=0.1) <= milp_bound(model, x[0], c, eps=0.1).value + 1e-9
    with pytest.raises(TypeError):
        lp_bound(model, x[0], c, 0.1)
    with pytest.raises(TypeError):
        milp_bound(model, x[0], c, 0.1, "linf")
    with pytest.raises(ValueError, match="not both"):
        lp_bounds(model, x, y, eps=0.1, C=C)
    with pytest.raises(ValueError, match="empty batch"):
        milp_bounds(model, x[:0], eps=0.1)
    with pytest.raises(ValueError, match="norm"):
        lp_bound(model, x[0], c, eps=0.1, norm="l3")
    with pytest.raises(ValueError, match="eps"):
        lp_bounds(model, x, eps=-1.0)
