"""Branch and bound (advlib.verify.bab) against the exact MILP on small random ReLU networks: never
*verified* where the MILP finds a counterexample, never *falsified* without a counterexample that a forward
pass confirms inside the ball; it answers more cases than CROWN and α-CROWN; its search tree is a tree
whose leaves, when an input is verified, are all verified; bad input is refused."""
import pytest
import torch

import advlib
from advlib import verify as V
from advlib.verify.exact import milp_bounds, random_relu_mlp

CASES = [(seed, hidden) for seed in range(4) for hidden in ((10, 8), (16, 16, 16))]


@pytest.mark.parametrize("seed,hidden", CASES)
def test_branch_and_bound_agrees_with_the_milp(seed, hidden):
    shape = (1, 3, 3) if len(hidden) == 2 else (1, 4, 4)
    eps = 0.1 if len(hidden) == 2 else 0.06
    model = random_relu_mlp(seed, shape, hidden, 4, scale=2.0)
    x = torch.rand(6, *shape, generator=torch.Generator().manual_seed(seed))
    y = model(x).argmax(1)
    r = V.branch_and_bound(model, x, y, eps=eps, max_domains=4000)
    exact = milp_bounds(model, x, y, eps=eps).amin(1)
    for i, status in enumerate(r.status):
        assert status in V.BAB_STATUS
        if status == "verified":
            assert exact[i] > 0 and 0 < r.lower[i] <= exact[i] + 1e-4, (i, exact[i], r.lower[i])
        if status == "falsified":
            c = r.counterexample[i]
            assert exact[i] < 0 and (c - x[i]).abs().max() <= eps + 1e-6 and c.min() >= 0 and c.max() <= 1
            with torch.no_grad():
                assert (V.margin_matrix(y[i:i + 1], 4) @ model(c[None])[0]).min() < 0
        else:
            assert torch.isnan(r.counterexample[i]).all()


def test_branch_and_bound_answers_more_than_the_relaxations():
    answered = {"crown": 0, "alpha-crown": 0, "bab": 0}
    split = 0
    for seed, hidden in CASES[1::2]:
        model = random_relu_mlp(seed, (1, 4, 4), hidden, 4, scale=2.0)
        x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(seed))
        y = model(x).argmax(1)
        r = V.branch_and_bound(model, x, y, eps=0.06)
        for m in ("crown", "alpha-crown"):
            answered[m] += int(V.certify(model, x, y, eps=0.06, method=m).sum())
        answered["bab"] += sum(s != "unknown" for s in r.status)
        split += int((r.domains > 0).sum())
        for i, tree in enumerate(r.trees):  # a tree: every parent comes before its children
            assert all(t.parent is None or t.parent < k for k, t in enumerate(tree))
            if r.status[i] == "verified":
                parents = {t.parent for t in tree}
                assert all(t.fate == "verified" for k, t in enumerate(tree) if k not in parents)
    assert answered["bab"] == 24 and answered["bab"] > answered["alpha-crown"] >= answered["crown"], answered
    assert split >= 3  # some answers needed splits


def test_branch_and_bound_decides_hard_zoo_digits(zoo_model):
    """On the IBP-trained MLP at eps 0.1 it decides every one of the first 200 test digits, and verifies
    some that α-CROWN leaves open (the MILP decides them too, at seconds per digit)."""
    model = zoo_model("digits-mlp-ibp")
    test = advlib.data.load("digits", "test")
    x, y = test.x[:200], test.y[:200]
    r = V.branch_and_bound(model, x, y, eps=0.1, time_limit=60)
    cert = V.certify(model, x, y, eps=0.1, method="alpha-crown")
    assert r.status.count("unknown") == 0
    assert (r.verified >= cert).all() and r.verified.sum() > cert.sum()
    adv = advlib.attacks.pgd(model, x, y, eps=0.1, steps=50)
    with torch.no_grad():
        broken = model(adv).argmax(1) != y
    assert not (broken & r.verified).any()  # a verified digit is never broken by PGD


def test_branch_and_bound_refuses_what_it_cannot_split(zoo_model, digits):
    x = digits[0][:2]
    tanh = advlib.models.mlp((1, 8, 8), (8,), 10, activation="tanh").eval()
    with pytest.raises(ValueError, match="splits ReLUs"):
        V.branch_and_bound(tanh, x, digits[1][:2], eps=0.1)
    with pytest.raises(ValueError, match="labels y"):
        V.branch_and_bound(zoo_model("digits-mlp"), x, eps=0.1)
    with pytest.raises(ValueError, match="max_domains"):
        V.branch_and_bound(zoo_model("digits-mlp"), x, digits[1][:2], eps=0.1, max_domains=0)


def test_a_network_without_relus_is_decided_at_the_root():
    """An affine network has nothing to split: the root's bound is exact and its minimiser a counterexample."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    x = torch.rand(12, 1, 2, 2)
    y = model(x).argmax(1)
    for eps in (0.02, 0.3):
        r = V.branch_and_bound(model, x, y, eps=eps)
        exact = milp_bounds(model, x, y, eps=eps).amin(1)
        assert r.status == ["verified" if e > 0 else "falsified" for e in exact.tolist()]
        assert (r.domains == 0).all()
