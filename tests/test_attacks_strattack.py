"""StrAttack (advlib.attacks.strattack) and its group tools from first principles: the tiles against
a plain loop (edge tiles cut short, channels together), the group norms against a loop, the block
soft-threshold against the optimality condition of its proximal problem and a numerical minimiser;
on real digits the examples stay in [0, 1] and the L-inf ball, reach their targets, and touch far
fewer groups than C&W and EAD at the same success rate (the paper's claim, Xu et al. 2019)."""
import numpy as np
import pytest
import torch
from scipy.optimize import minimize

import advlib
from advlib.attacks import cw_l2, ead, group_ids, group_norms, group_shrink, group_sparsity, lp_norm, strattack

N_DIGITS = 60


def _fooled(model, x_adv, y, targeted=False):
    pred = advlib.train.predict(model, x_adv)
    return pred == y if targeted else pred != y


@pytest.fixture(scope="module")
def points(cnn, digits):
    """The first 40 test digits digits-cnn gets right."""
    x, y = digits
    ok = advlib.train.predict(cnn, x) == y
    return x[ok][:40], y[ok][:40]


# ------------------------------------------------------------------------------------------ groups
@pytest.mark.parametrize("shape, size", [((1, 8, 8), 2), ((3, 5, 7), 3), ((2, 4, 4), 4), ((1, 6, 6), 1),
                                         ((2, 3, 5), 8)])
def test_group_ids_are_tiles(shape, size):
    ids = group_ids(shape, size)
    assert ids.shape == shape and ids.dtype == torch.long
    c, h, w = shape
    per_row = -(-w // size)
    for ch in range(c):
        for i in range(h):
            for j in range(w):
                assert ids[ch, i, j] == (i // size) * per_row + j // size
    n_groups = -(-h // size) * per_row
    assert sorted(ids.unique().tolist()) == list(range(n_groups))
    counts = torch.bincount(ids.flatten())
    # full tiles hold size * size * c features, edge tiles fewer (cut short), each tile all channels
    for p in range(n_groups):
        r, q = divmod(p, per_row)
        assert counts[p] == c * min(size, h - r * size) * min(size, w - q * size)
    assert (ids == ids[0]).all()


def test_group_ids_bad_input():
    with pytest.raises(ValueError, match="C x H x W"):
        group_ids((8, 8), 2)
    with pytest.raises(ValueError, match="size"):
        group_ids((1, 8, 8), 0)


def test_group_norms_and_sparsity_against_a_loop():
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(5, 2, 6, 6, generator=g)
    for ids in (group_ids((2, 6, 6), 2), group_ids((2, 6, 6), 4), torch.randint(0, 7, (2, 6, 6), generator=g)):
        norms = group_norms(delta, ids)
        n_groups = int(ids.max()) + 1
        assert norms.shape == (5, n_groups)
        for n in range(5):
            for p in range(n_groups):
                member = ids == p
                ref = delta[n][member].pow(2).sum().sqrt() if member.any() else torch.tensor(0.0)
                assert norms[n, p].item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-7)
    ids = group_ids((1, 4, 4), 2)  # 4 tiles
    d = torch.zeros(3, 1, 4, 4)
    d[0, 0, 0, 0] = 1e-2  # touches tile 0
    d[0, 0, 3, 3] = 1e-4  # below the tolerance
    d[1] = 0.5  # every tile
    assert group_sparsity(d, ids).tolist() == [0.25, 1.0, 0.0]
    assert group_sparsity(d, ids, tol=0).tolist() == [0.5, 1.0, 0.0]


def test_group_shrink_is_the_proximal_operator_of_the_group_lasso():
    """prox_{t sum ||.||_2}(a) = argmin_v 1/2 ||v - a||^2 + t sum_G ||v_G||_2: its optimality condition
    (a_G - v_G = t v_G / ||v_G|| on the groups it keeps, ||a_G|| <= t on those it zeroes) and a
    numerical minimiser agree."""
    g = torch.Generator().manual_seed(1)
    ids = group_ids((1, 4, 4), 2)
    a = torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64) * 0.6
    t = torch.tensor([0.0, 0.3, 0.8, 1.2, 2.0, 100.0], dtype=torch.float64)  # one per example
    v = group_shrink(a, ids, t)
    na, nv = group_norms(a, ids), group_norms(v, ids)
    for n in range(6):
        for p in range(4):
            m = ids == p
            ag, vg = a[n][m], v[n][m]
            if na[n, p] <= t[n]:
                assert (vg == 0).all()  # a group below the threshold is zeroed exactly
            else:
                assert nv[n, p] > 0
                torch.testing.assert_close(ag - vg, t[n] * vg / vg.norm())
    assert torch.equal(v[0], a[0]) and (v[-1] == 0).all()  # t = 0 keeps everything, a huge t nothing
    assert 0 < (nv[2:4] == 0).float().mean() < 1  # some groups kept, some zeroed: both cases are tested
    # a number t is the same for every example
    torch.testing.assert_close(group_shrink(a, ids, 0.8)[2], v[2])

    group = ids.flatten().numpy()

    def objective(vec, an, tn):  # in numpy, independent of group_norms
        return 0.5 * ((vec - an) ** 2).sum() + tn * sum(np.sqrt((vec[group == p] ** 2).sum()) for p in range(4))

    for n in (1, 2, 3):
        an, tn = a[n].flatten().numpy(), float(t[n])
        best = min((minimize(objective, start, args=(an, tn), method="Powell",
                             options={"xtol": 1e-10, "ftol": 1e-14, "maxfev": 40000})
                    for start in (an, np.zeros(16))), key=lambda r: r.fun)
        prox = v[n].flatten().numpy()
        assert objective(prox, an, tn) <= best.fun + 1e-9
        np.testing.assert_allclose(best.x, prox, atol=1e-5)


# ------------------------------------------------------------------------------------------ the attack
def test_strattack_stays_in_the_box_and_the_ball(cnn, points):
    x, y = points[0][:20], points[1][:20]
    eps = 0.2
    x_adv = strattack(cnn, x, y, eps=eps, steps=50, search_steps=4)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert x_adv.min() >= 0 and x_adv.max() <= 1 and (x_adv - x).abs().max() <= eps + 1e-6
    ok = _fooled(cnn, x_adv, y)
    assert ok.float().mean() >= 0.5  # the ball binds, yet is large enough for most digits
    assert (x_adv[~ok] == x[~ok]).all()  # a failure is returned unchanged
    # a ball too small for any digit: nothing is broken and nothing changes
    assert torch.equal(strattack(cnn, x[:5], y[:5], eps=1e-3, steps=10, search_steps=2), x[:5])


def test_strattack_is_group_sparser_than_cw_and_ead(cnn, points):
    """The paper's claim (Xu et al. 2019, Table 1 and Fig. 1) on 40 digits, 2 x 2 tiles, 100 steps each."""
    x, y = points
    ids = group_ids(x.shape[1:], 2)
    runs = {"C&W": cw_l2(cnn, x, y, steps=100), "EAD": ead(cnn, x, y, steps=100),
            "StrAttack": strattack(cnn, x, y, steps=100)}
    stats = {}
    for name, x_adv in runs.items():
        ok = _fooled(cnn, x_adv, y)
        d = x_adv - x
        stats[name] = {"success": ok.float().mean().item(),
                       **{f"groups@{tol:g}": group_sparsity(d[ok], ids, tol).mean().item() for tol in (1e-3, 1e-2)},
                       "exact": group_sparsity(d[ok], ids, 0.0).mean().item(),
                       "l2": lp_norm(d[ok], 2).median().item()}
        print(name, {k: round(v, 3) for k, v in stats[name].items()})
    s, c, e = stats["StrAttack"], stats["C&W"], stats["EAD"]
    assert min(v["success"] for v in stats.values()) >= 0.95
    assert abs(s["success"] - c["success"]) <= 0.05 and abs(s["success"] - e["success"]) <= 0.05
    for tol in ("groups@0.001", "groups@0.01"):
        assert s[tol] < 0.8 * e[tol] and s[tol] < 0.6 * c[tol]
    assert s["exact"] < 0.6  # untouched groups are exactly zero, not merely small
    assert s["l2"] < 1.5 * c["l2"]  # at a comparable L2 size


def test_a_heavier_group_penalty_touches_fewer_groups(cnn, points):
    x, y = points[0][:20], points[1][:20]
    ids = group_ids(x.shape[1:], 2)
    touched = {}
    for tau in (0.0, 2.0):
        x_adv = strattack(cnn, x, y, tau=tau, steps=50, search_steps=4)
        ok = _fooled(cnn, x_adv, y)
        assert ok.float().mean() >= 0.9
        touched[tau] = group_sparsity((x_adv - x)[ok], ids).mean().item()
    print("groups touched, tau 0 vs 2:", touched)
    assert touched[2.0] < 0.7 * touched[0.0]


def test_strattack_targeted(cnn, points):
    x, y = points[0][:20], points[1][:20]
    t = (y + 3) % 10
    x_adv = strattack(cnn, x, t, steps=60, search_steps=5, targeted=True)
    ok = _fooled(cnn, x_adv, t, targeted=True)
    assert ok.float().mean() >= 0.9
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    x_k = strattack(cnn, x[:8], t[:8], kappa=1.0, steps=60, search_steps=5, targeted=True)
    with torch.no_grad():  # kappa: the target leads by the margin
        z = cnn(x_k)
    hit = z.argmax(1) == t[:8]
    assert hit.float().mean() >= 0.75
    top2 = z[hit].topk(2, 1).values
    assert (top2[:, 0] - top2[:, 1] > 1.0 - 1e-4).all()


def test_strattack_groups_as_ids(cnn, points):
    x, y = points[0][:6], points[1][:6]
    a = strattack(cnn, x, y, groups=2, steps=20, search_steps=2)
    b = strattack(cnn, x, y, groups=group_ids(x.shape[1:], 2), steps=20, search_steps=2)
    assert torch.equal(a, b)
    rows = torch.arange(8).view(1, 8, 1).expand(1, 8, 8)  # a row of the image per group
    c = strattack(cnn, x, y, groups=rows, tau=2.0, steps=40, search_steps=3)
    touched = ((c - x).abs().sum(3) > 0).float().mean()  # fraction of rows that changed
    assert touched < 1.0


def test_strattack_bad_input(cnn, points):
    x, y = points[0][:4], points[1][:4]
    with pytest.raises(ValueError, match="groups"):
        strattack(cnn, x, y, groups=torch.zeros(8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="groups"):
        strattack(cnn, x, y, groups=torch.zeros(1, 4, 4, dtype=torch.long))
    for name, value in (("tau", -1.0), ("eps", 0.0), ("rho", 0.0), ("eta", -1.0)):
        with pytest.raises(ValueError, match=name):
            strattack(cnn, x, y, **{name: value})
    with pytest.raises(ValueError, match="steps"):
        strattack(cnn, x, y, steps=-1)
    assert torch.equal(strattack(cnn, x, y, steps=0), x)  # no step, no change (as cw_l2 and ead)
    with pytest.raises(ValueError, match="NaN"):
        strattack(cnn, torch.full_like(x, float("nan")), y)
