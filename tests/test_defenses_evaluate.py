"""The AutoAttack-style evaluation of advlib.defenses, from first principles: APGD's threat model,
schedule, step rule and loss; FAB's projection against a linear program; the ensemble's per-point
worst case and its skipping of broken points; bad input; and, the one heavy test, agreement with
torchattacks' AutoAttack on the shipped digits models (an issue requirement)."""
import math
import warnings

import pytest
import torch
from torch import nn

import advlib
from advlib.attacks import pgd
from advlib.defenses.apgd import apgd, apgd_targeted, checkpoints, dlr_loss, dlr_targeted_loss, halve_step
from advlib.defenses.evaluate import ATTACKS, Evaluation, evaluate, report
from advlib.defenses.fab import fab_targeted, project_boundary

N_DIGITS = 200


def _norm(d, norm):
    d = d.flatten(1)
    return d.abs().amax(1) if norm == "linf" else d.norm(dim=1)


def _tiny(seed=0, cnn=False):
    torch.manual_seed(seed)
    if cnn:
        net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 10))
    else:
        net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    return net.eval()


class Counted(nn.Module):
    """Counts forward calls and the inputs they evaluate."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls, self.inputs = model, 0, 0

    def forward(self, x):
        self.calls, self.inputs = self.calls + 1, self.inputs + len(x)
        return self.model(x)


# ------------------------------------------------------------------------------------------ APGD
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_never_leaves_the_ball_or_the_box(norm):
    torch.manual_seed(1)
    x = torch.rand(64, 1, 8, 8)
    x[:16] = (x[:16] > 0.5).float()  # pixels exactly at the box's edges
    x[16:20] = 0.0
    x[20:24] = 1.0
    y = torch.randint(0, 10, (64,))
    radii = (0.05, 0.3) if norm == "linf" else (0.5, 3.0)
    per_example = torch.rand(64) * radii[1]
    for model in (_tiny(0), _tiny(1, cnn=True)):
        for eps in (*radii, per_example):
            for kw in ({}, {"loss": "dlr", "restarts": 2}):
                x_adv = apgd(model, x, y, eps=eps, norm=norm, steps=12, **kw)
                bound = eps if isinstance(eps, float) else eps
                assert (_norm(x_adv - x, norm) <= bound + 1e-5).all()
                assert x_adv.min() >= 0 and x_adv.max() <= 1 and x_adv.shape == x.shape
        t = (y + 1) % 10
        x_adv = apgd(model, x, y, eps=radii[1], norm=norm, steps=12, targeted=True, target=t)
        assert (_norm(x_adv - x, norm) <= radii[1] + 1e-5).all() and x_adv.min() >= 0 and x_adv.max() <= 1
        x_adv = apgd_targeted(model, x, y, eps=radii[1], norm=norm, steps=6, n_targets=3)
        assert (_norm(x_adv - x, norm) <= radii[1] + 1e-5).all() and x_adv.min() >= 0 and x_adv.max() <= 1


def _paper_checkpoints(n):
    p = [0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(round(v * n, 6)) for v in p})


def test_checkpoints_follow_the_papers_formula():
    assert checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    for n in (1, 5, 10, 37, 100, 250, 1000):
        w = checkpoints(n)
        assert w == _paper_checkpoints(n) and w[0] == 0 and all(a < b for a, b in zip(w, w[1:])) and w[-1] <= n
    # the gaps shrink by 0.03 of the run per checkpoint down to 0.06 of it
    gaps = [b - a for a, b in zip(checkpoints(1000), checkpoints(1000)[1:])]
    assert gaps[:4] == [220, 190, 160, 130] and min(gaps) == 60


def test_step_halves_only_when_a_condition_holds():
    f = torch.tensor
    inc = f([20.0, 10.0, 20.0, 20.0, 10.0])  # increases in an interval of 20 steps (rho * 20 = 15)
    halved_last = f([False, False, False, True, True])
    best_now = f([1.0, 2.0, 1.0, 1.0, 3.0])
    best_last = f([0.5, 0.5, 1.0, 1.0, 1.0])
    got = halve_step(inc, 20, halved_last, best_now, best_last, rho=0.75)
    # 0: progress, best grew -> keep; 1: too few increases -> halve (condition 1); 2: best did not
    # change and not halved last time -> halve (condition 2); 3: same but halved last time -> keep;
    # 4: too few increases -> halve even though halved last time
    assert got.tolist() == [False, True, True, False, True]
    # the boundary of condition 1: exactly rho * interval increases is enough
    assert not halve_step(f([15.0]), 20, f([True]), f([2.0]), f([1.0]))[0]
    assert halve_step(f([14.0]), 20, f([True]), f([2.0]), f([1.0]))[0]


def test_dlr_is_invariant_to_shift_and_positive_scale():
    torch.manual_seed(0)
    z = torch.randn(50, 10, dtype=torch.float64) * 3
    y = torch.randint(0, 10, (50,))
    t = (y + 1 + torch.randint(0, 9, (50,))) % 10
    for loss, args in ((dlr_loss, (y,)), (dlr_targeted_loss, (y, t))):
        base = loss(z, *args)
        for a, c in ((1.0, 7.0), (0.3, -2.0), (25.0, 100.0)):
            assert torch.allclose(loss(a * z + c, *args), base, rtol=1e-6, atol=1e-8)
    # the untargeted DLR is positive exactly when y is not the top class
    wrong = z.argmax(1) != y
    assert ((dlr_loss(z, y) > 0) == wrong).all()
    with pytest.raises(ValueError, match="at least 4 classes"):
        dlr_targeted_loss(z[:, :3], y % 3, (y + 1) % 3)


@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn"])
def test_apgd_ce_at_least_as_strong_as_pgd_of_equal_steps(zoo_model, digits, name):
    model, (x, y) = zoo_model(name), digits
    steps = 20
    acc_pgd = (advlib.train.predict(model, pgd(model, x, y, eps=0.1, steps=steps)) == y).float().mean().item()
    acc_apgd = (advlib.train.predict(model, apgd(model, x, y, eps=0.1, steps=steps)) == y).float().mean().item()
    assert acc_apgd <= acc_pgd + 0.01, (acc_apgd, acc_pgd)


def test_apgd_eot_draws_fresh_randomness_per_pass():
    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.draws = _tiny(2), []

        def forward(self, x):
            noise = 1e-7 * torch.randn(len(x), 10)  # fresh randomness at every pass, too small to matter
            self.draws.append(noise[0, 0].item())
            return self.net(x) + noise

    torch.manual_seed(0)
    model = Noisy().eval()
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    y = model.net(x).argmax(1)  # correctly classified by the clean network
    model.draws.clear()
    steps, eot = 5, 3
    apgd(model, x, y, eps=1e-4, steps=steps, eot=eot)  # so small that nothing is broken: no early exit
    calls = model.draws[1:]  # the first call is the input check
    assert len(calls) == eot * (steps + 1)
    assert len(set(calls)) == len(calls)  # every pass drew its own noise


# ------------------------------------------------------------------------------------------ FAB
def _linprog_linf(x, w, b):
    """min t s.t. |d_i| <= t, 0 <= x + d <= 1, w.(x + d) + b = 0, as a linear program in (d, t)."""
    from scipy.optimize import linprog

    n = len(x)
    cost = [0.0] * n + [1.0]
    a_ub, b_ub = [], []
    for i in range(n):
        for sgn in (1.0, -1.0):
            row = [0.0] * (n + 1)
            row[i], row[n] = sgn, -1.0
            a_ub.append(row)
            b_ub.append(0.0)
    bounds = [(-xi, 1 - xi) for xi in x] + [(0, None)]
    res = linprog(cost, A_ub=a_ub, b_ub=b_ub, A_eq=[list(w) + [0.0]], b_eq=[-(w @ x + b)], bounds=bounds,
                  method="highs")
    return res


def _active_sets_l2(x, w, b):
    """min ||d||_2 s.t. w.(x + d) + b = 0, 0 <= x + d <= 1, by enumerating which coordinates sit at a
    bound (3^dim cases): with the others free, the least-norm solution of the equation is d_F = lam w_F;
    the optimum is the smallest feasible one."""
    import itertools

    lo, hi, c = -x, 1 - x, -(w @ x + b)
    best = math.inf
    for status in itertools.product((0, 1, 2), repeat=len(x)):  # free, at lower, at upper
        st = torch.tensor(status)
        d = torch.where(st == 1, lo, torch.where(st == 2, hi, torch.zeros_like(x)))
        free = st == 0
        rest = c - (w * d)[~free].sum()
        wf2 = (w[free] ** 2).sum()
        if wf2 == 0:
            if abs(rest) > 1e-12:
                continue
        else:
            d[free] = rest / wf2 * w[free]
        if (d >= lo - 1e-12).all() and (d <= hi + 1e-12).all():
            best = min(best, d.norm().item())
    return best


def test_fab_projection_is_the_minimal_point_on_the_hyperplane_in_the_box():
    gen = torch.Generator().manual_seed(0)
    checked = {"linf": 0, "l2": 0}
    for trial in range(40):
        dim = 3 + trial % 5
        x = torch.rand(dim, generator=gen, dtype=torch.float64)
        x[: dim // 3] = (x[: dim // 3] > 0.5).double()  # some coordinates on the box's faces
        w = torch.randn(dim, generator=gen, dtype=torch.float64)
        if trial % 5 == 0:
            w[0] = 0.0
        b = torch.randn((), generator=gen, dtype=torch.float64) * 0.7
        res = _linprog_linf(x.numpy(), w.numpy(), b.item())
        if res.status != 0:  # the hyperplane misses the box: the projection goes to the best corner
            z = project_boundary(x[None], w[None], b[None], "linf")[0]
            side = -(w @ x + b).sign()
            corner = torch.where(w * side > 0, torch.ones_like(x), torch.zeros_like(x))
            corner = torch.where(w == 0, x, corner)
            assert torch.allclose(z, corner)
            continue
        for norm in ("linf", "l2"):
            z = project_boundary(x[None], w[None], b[None], norm)[0]
            assert abs((w @ z + b).item()) < 1e-9 and z.min() >= 0 and z.max() <= 1  # on the plane, in the box
            if norm == "linf":
                assert (z - x).abs().max().item() == pytest.approx(res.fun, abs=1e-6)
            else:
                assert (z - x).norm().item() == pytest.approx(_active_sets_l2(x, w, b), abs=1e-7)
            checked[norm] += 1
    assert min(checked.values()) >= 20  # most instances were feasible: the comparison happened
    # batched: the same answers as one at a time
    xs, ws, bs = torch.rand(16, 7, generator=gen), torch.randn(16, 7, generator=gen), torch.randn(16, generator=gen)
    for norm in ("linf", "l2"):
        batch = project_boundary(xs, ws, bs, norm)
        single = torch.cat([project_boundary(xs[i:i + 1], ws[i:i + 1], bs[i:i + 1], norm) for i in range(16)])
        assert torch.allclose(batch, single, atol=1e-6)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_fab_targeted_returns_adversarial_points_within_eps(mlp, digits, norm, eps):
    x, y = digits[0][:60], digits[1][:60]
    x_adv = fab_targeted(mlp, x, y, eps=eps, norm=norm, steps=20, n_targets=3)
    dist = _norm(x_adv - x, norm)
    assert (dist <= eps + 1e-6).all() and x_adv.min() >= 0 and x_adv.max() <= 1
    changed = dist > 0
    pred = advlib.train.predict(mlp, x_adv)
    assert changed.sum() >= 10 and (pred[changed] != y[changed]).all()
    # minimal-distortion mode: an adversarial point for (nearly) every example, as close as found
    x_min = fab_targeted(mlp, x, y, eps=None, norm=norm, steps=20, n_targets=3)
    d_min = _norm(x_min - x, norm)
    found = d_min > 0
    assert found.float().mean() > 0.9 and (advlib.train.predict(mlp, x_min)[found] != y[found]).all()


# ------------------------------------------------------------------------------------------ the ensemble
def test_ensemble_is_the_per_point_worst_case(cnn, digits):
    x, y = digits[0][:120], digits[1][:120]
    names = ("apgd-ce", "apgd-t", "fab-t")
    ev = evaluate(cnn, x, y, eps=0.1, steps=10, attacks=names, progress=False)
    clean = advlib.train.predict(cnn, x) == y
    assert ev.clean_accuracy == pytest.approx(clean.float().mean().item())
    broken = torch.tensor([b != "" for b in ev.broken_by])
    assert (ev.robust == ~broken).all() and (ev.robust <= clean).all()
    assert [b == "clean" for b in ev.broken_by] == (~clean).tolist()
    # AND over the attacks: robust only if no attack broke it; every break confirmed
    by_attack = {a: torch.tensor([b == a for b in ev.broken_by]) for a in names}
    assert (ev.robust == clean & ~torch.stack(list(by_attack.values())).any(0)).all()
    hit = broken & clean
    assert (advlib.train.predict(cnn, ev.x_adv[hit]) != y[hit]).all()
    assert (_norm(ev.x_adv - x, "linf") <= 0.1 + 1e-5).all() and (ev.x_adv[ev.robust] == x[ev.robust]).all()
    accs = [r.robust_accuracy for r in ev.per_attack.values()]
    assert accs == sorted(accs, reverse=True) and accs[-1] == ev.robust_accuracy
    assert sum(r.broken for r in ev.per_attack.values()) == int(hit.sum())
    assert ev.robust_accuracy == pytest.approx(ev.robust.float().mean().item())
    # no higher than each attack alone
    for a in names:
        alone = evaluate(cnn, x, y, eps=0.1, steps=10, attacks=(a,), progress=False)
        assert ev.robust_accuracy <= alone.robust_accuracy
    assert ev.robust_accuracy < ev.clean_accuracy


def test_points_already_broken_are_not_attacked_again(cnn, digits, monkeypatch):
    x, y = digits[0][:100], digits[1][:100]
    seen = {}
    for name in ("apgd-ce", "apgd-t", "fab-t"):
        def spy(model, xs, ys, _f=ATTACKS[name], _n=name, **kw):
            seen[_n] = xs.clone()
            return _f(model, xs, ys, **kw)
        monkeypatch.setitem(ATTACKS, name, spy)
    ev = evaluate(cnn, x, y, eps=0.1, steps=10, attacks=("apgd-ce", "apgd-t", "fab-t"), progress=False)
    clean = advlib.train.predict(cnn, x) == y
    assert torch.equal(seen["apgd-ce"], x[clean])  # misclassified points are skipped
    after_ce = clean & torch.tensor([b not in ("apgd-ce",) for b in ev.broken_by])
    assert torch.equal(seen["apgd-t"], x[after_ce])
    after_t = after_ce & torch.tensor([b != "apgd-t" for b in ev.broken_by])
    assert torch.equal(seen["fab-t"], x[after_t])
    monkeypatch.undo()
    # counted forward passes: the second attack evaluates only the points left by the first
    steps = 10
    one, two = Counted(cnn).eval(), Counted(cnn).eval()
    ev1 = evaluate(one, x, y, eps=0.1, steps=steps, attacks=("apgd-ce",), progress=False)
    evaluate(two, x, y, eps=0.1, steps=steps, attacks=("apgd-ce", "apgd-t"), progress=False)
    left = ev1.per_attack["apgd-ce"].attacked - ev1.per_attack["apgd-ce"].broken
    extra = two.inputs - one.inputs
    # 9 targets x (steps + 1) passes on each point left, plus the clean logits and the confirmation
    assert 0 < extra <= left * (9 * (steps + 1) + 2) + 2
    assert extra < len(x) * 9 * (steps + 1) / 2  # far from attacking every point again


def test_square_runs_last_and_flags_masking(mlp, digits):
    x, y = digits[0][:40], digits[1][:40]
    ev = evaluate(mlp, x, y, eps=0.1, steps=5, square_queries=50, attacks=("square",), progress=False)
    assert not ev.masking  # no gradient attack ran before it: nothing to compare
    assert ev.per_attack["square"].broken > 0 and (_norm(ev.x_adv - x, "linf") <= 0.1 + 1e-5).all()

    class Masked(nn.Module):
        """The MLP with its input gradient cut (zero): what a gradient-masking defense shows an attack."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x.detach()) + 0 * x.flatten(1).sum(1, keepdim=True)

    masked = Masked(mlp).eval()
    ev = evaluate(masked, x, y, eps=0.1, steps=5, square_queries=300, attacks=("apgd-ce", "square"), progress=False)
    assert ev.per_attack["apgd-ce"].broken == 0
    assert ev.per_attack["square"].broken > 0 and ev.masking and "square" in ev.note and "mask" in ev.note


def test_table_plot_and_report(mlp, cnn, digits):
    import matplotlib
    import matplotlib.pyplot
    x, y = digits[0][:30], digits[1][:30]
    ev = evaluate(mlp, x, y, eps=0.1, steps=5, square_queries=20, progress=False)
    assert isinstance(ev, Evaluation)
    text = ev.table()
    for stage in ("clean", "apgd-ce", "apgd-t", "fab-t", "square", "worst case"):
        assert stage in text
    assert f"{ev.robust_accuracy:.1%}" in text and str(ev) == text
    ax = ev.plot()
    assert len(ax.patches) == 6 and ax.patches[-1].get_height() == pytest.approx(100 * ev.robust_accuracy)
    rep = report({"mlp": mlp, "cnn": cnn}, x, y, eps=0.1, steps=5, square_queries=20, progress=False)
    lines = rep.table().splitlines()
    assert any(ln.startswith("mlp") for ln in lines) and any(ln.startswith("cnn") for ln in lines)
    ax = rep.plot()
    assert len(ax.patches) == 2 * 6
    matplotlib.pyplot.close("all")
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install pandas"):
            ev.to_frame()
    else:
        frame = rep.to_frame()
        assert list(frame.index) == ["mlp", "cnn"] and frame.loc["mlp", "worst case"] == ev.robust_accuracy


def test_bad_input_is_refused_with_a_clear_error(mlp, digits):
    x, y = digits[0][:8], digits[1][:8]
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    cases = [
        (dict(x=bad), "NaN"),
        (dict(x=x * 2), r"\[0, 1\]"),
        (dict(y=y[:5]), "one label per input"),
        (dict(attacks=("apgd-ce", "pgd-50")), "unknown attack"),
        (dict(attacks=("apgd-ce", "apgd-ce")), "twice"),
        (dict(attacks=()), "non-empty"),
        (dict(norm="l1"), "norm must be one of"),
        (dict(eps=0.0), "eps"),
        (dict(eps=-0.1), "eps"),
        (dict(steps=0), "steps"),
        (dict(square_queries=0), "square_queries"),
        (dict(eot=0), "eot"),
        (dict(x=x[0]), "batch"),
    ]
    for change, message in cases:
        kw = dict(x=x, y=y, eps=0.1, steps=2, square_queries=5, progress=False) | change
        with pytest.raises(ValueError, match=message):
            evaluate(mlp, kw.pop("x"), kw.pop("y"), **kw)
    flat = nn.Sequential(nn.Linear(64, 10)).eval()
    with pytest.raises(ValueError, match="Square needs image batches"):
        evaluate(flat, x.flatten(1), y, eps=0.1, steps=2, progress=False)
    with pytest.raises(ValueError, match="loss must be one of"):
        apgd(mlp, x, y, eps=0.1, loss="hinge")
    with pytest.raises(ValueError, match="needs target="):
        apgd(mlp, x, y, eps=0.1, targeted=True)
    with pytest.raises(ValueError, match="equals the true label"):
        apgd(mlp, x, y, eps=0.1, targeted=True, target=y)
    with pytest.raises(ValueError, match="other classes"):
        fab_targeted(mlp, x, y, eps=0.1, n_targets=10)
    with pytest.raises(ValueError, match="other classes"):
        apgd_targeted(mlp, x, y, eps=0.1, n_targets=12)
    # a model in train mode is switched to eval mode, with a warning
    net = _tiny(3).train()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        evaluate(net, x, y, eps=0.1, steps=2, square_queries=5, progress=False)
    assert not net.training and any("train mode" in str(m.message) for m in w)


# ------------------------------------------------------------------------------------------ the reference
def _shipped(name):
    return name in advlib.zoo.manifest() and any(advlib.zoo.weights_dir().glob(f"{name}-v*.safetensors"))


CROSS_CHECK = [m for m in ("digits-mlp", "digits-cnn", "digits-mlp-pgd", "digits-cnn-pgd") if _shipped(m)]
_EVALUATED: dict[str, Evaluation] = {}


def _ours(model, test, name):
    """advlib's evaluation of a shipped model at torchattacks' standard budget, once per session."""
    if name not in _EVALUATED:
        _EVALUATED[name] = evaluate(model, test.x, test.y, eps=0.1, steps=10, square_queries=5000, progress=False)
    return _EVALUATED[name]


@pytest.mark.parametrize("name", CROSS_CHECK)
def test_agrees_with_torchattacks_autoattack(zoo_model, digits_splits, name):
    """The issue's requirement: within 0.5 points of torchattacks' standard AutoAttack at eps 0.1 on
    the whole 500-point test split, at its budget (its standard version runs 10 steps per APGD run
    and per FAB target, and 5000 Square queries). The heavy test of this file (tens of seconds)."""
    torchattacks = pytest.importorskip("torchattacks")
    model, test = zoo_model(name), digits_splits["test"]
    x, y = test.x, test.y
    aa = torchattacks.AutoAttack(model, norm="Linf", eps=0.1, version="standard", n_classes=10, seed=0)
    steps = {a.steps for a in aa._autoattack.attacks if hasattr(a, "steps")}
    assert steps == {10}
    theirs = (advlib.train.predict(model, aa(x, y)) == y).float().mean().item()
    ours = _ours(model, test, name)
    assert abs(ours.robust_accuracy - theirs) <= 0.005, (name, ours.robust_accuracy, theirs)
    assert ours.clean_accuracy > ours.robust_accuracy


def test_pgd_training_buys_at_least_20_points_of_robust_accuracy(zoo_model, digits_splits):
    """The issue's requirement: digits-cnn-pgd keeps robust accuracy >= 20 points above digits-cnn's
    at eps 0.1 under the ensemble evaluation, with clean accuracy >= 90 %."""
    test = digits_splits["test"]
    std, adv = (_ours(zoo_model(n), test, n) for n in ("digits-cnn", "digits-cnn-pgd"))
    assert adv.clean_accuracy >= 0.9
    assert adv.robust_accuracy >= std.robust_accuracy + 0.20, (std.robust_accuracy, adv.robust_accuracy)
