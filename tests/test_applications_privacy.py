"""advlib.applications.extraction and .membership from first principles: a copy costs exactly its
budget in queries, learns the box's probabilities from a score box and its labels from a label box,
agrees more with the victim the more it is allowed to ask, is as good as ART's CopycatCNN trained on
the same answers, and makes a transfer surrogate far better than noise of the same size; the ROC of
the threshold attacks equals scikit-learn's (ties included), its extremes and its advantage, the
three scores against their definitions, and a model that memorised 100 digits leaks more than the
shipped one."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn
from torch.utils.data import TensorDataset

import advlib
from advlib.applications import KINDS, agreement, copycat, evaluate, membership_scores, random_sign_noise, roc
from advlib.blackbox import BlackBox, transfer
from advlib.models import build

N_DIGITS = 100
EPOCHS = 60  # copycat's default


def _student(seed=0, **kw):
    torch.manual_seed(seed)
    return build("mlp", in_shape=(1, 8, 8), **kw)


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def pool(digits_splits):
    return digits_splits["train"].x  # 1297 unlabelled inputs for the thief


@pytest.fixture(scope="module")
def held_out(digits_splits):
    return digits_splits["test"][:]


@pytest.fixture(scope="module")
def copies(cnn, pool):
    """MLP copies of digits-cnn from a score box at 50 and 500 queries: (copy, result, box)."""
    out = {}
    for budget in (50, 500):
        box, student = BlackBox(cnn, "scores"), _student()
        out[budget] = (student, copycat(box, pool, student, budget=budget), box)
    return out


# ------------------------------------------------------------------------------------------ extraction
def test_copycat_spends_exactly_its_budget_on_distinct_pool_inputs(cnn, pool, copies):
    for budget, (student, res, box) in copies.items():
        assert box.queries == budget
        assert res["x"].shape == (budget, 1, 8, 8) and res["answers"].shape == (budget, 10)
        # every queried input is a pool input, none twice (drawn without replacement)
        match = (res["x"].flatten(1)[:, None] == pool.flatten(1)[None]).all(2)
        rows = match.float().argmax(1)
        assert match.any(1).all() and len(set(rows.tolist())) == budget == len(set(map(tuple, res["x"].flatten(1)
                                                                                       .tolist())))
        with torch.no_grad():  # the answers are the victim's probabilities on those inputs
            assert torch.allclose(res["answers"], F.softmax(cnn(res["x"]), 1), atol=1e-6)
        # 60 epochs, or more for 600 optimiser steps (50 answers are one mini-batch per epoch)
        assert len(res["history"]["loss"]) == max(EPOCHS, math.ceil(600 / math.ceil(budget / 64)))
        assert res["history"]["train_acc"][-1] > 0.97 and not student.training  # it fits the answers
    # a box capped at the budget is not exceeded, and one query less is refused
    assert copycat(BlackBox(cnn, "label", budget=30), pool, _student(), budget=30, epochs=1)["x"].shape[0] == 30
    with pytest.raises(advlib.blackbox.QueryBudgetExceeded):
        copycat(BlackBox(cnn, "label", budget=29), pool, _student(), budget=30, epochs=1)


def test_copycat_draw_is_seeded(cnn, pool):
    a = copycat(BlackBox(cnn, "label"), pool, _student(), budget=40, epochs=2, seed=3)
    b = copycat(BlackBox(cnn, "label"), pool, _student(), budget=40, epochs=2, seed=3)
    c = copycat(BlackBox(cnn, "label"), pool, _student(), budget=40, epochs=2, seed=4)
    assert torch.equal(a["x"], b["x"]) and not torch.equal(a["x"], c["x"])


def test_agreement_grows_with_the_budget(cnn, copies, held_out):
    x, _ = held_out
    a50, a500 = (agreement(copies[b][0], cnn, x) for b in (50, 500))
    print(f"agreement with digits-cnn on {len(x)} test digits: {a50:.3f} at 50 queries, {a500:.3f} at 500")
    assert a500 >= 0.9 and a500 > a50 + 0.1
    # agreement against its definition, symmetric, 1 with itself
    copy = copies[500][0]
    with torch.no_grad():
        manual = (copy(x).argmax(1) == cnn(x).argmax(1)).float().mean().item()
    assert agreement(copy, cnn, x) == pytest.approx(manual) == pytest.approx(agreement(cnn, copy, x))
    assert agreement(cnn, cnn, x) == 1.0


def test_label_box_copy_is_plain_training_on_the_labels(cnn, pool):
    """Against a label box the copy is advlib.train.fit's cross-entropy on the box's top-1 labels: the
    same weights bit for bit."""
    box = BlackBox(cnn, "label")
    student = _student()
    res = copycat(box, pool, student, budget=100, epochs=20, min_steps=0, seed=1)
    assert box.queries == 100 and res["answers"].dtype == torch.long and res["answers"].shape == (100,)
    assert torch.equal(res["answers"], advlib.train.predict(cnn, res["x"]))
    again = _student()
    advlib.train.fit(again, TensorDataset(res["x"], res["answers"]), epochs=20, lr=2e-3, batch_size=64,
                     weight_decay=1e-4, seed=1, progress=False)
    assert _same_weights(student, again)


def test_score_box_copy_learns_the_probabilities_a_label_box_hides(pool):
    """A victim that always answers (0.5, 0.3, 0.2): from its scores the copy learns those
    probabilities; from its labels it can only learn "always class 0"."""
    victim = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with torch.no_grad():
        victim[1].weight.zero_()
        victim[1].bias.copy_(torch.tensor([0.5, 0.3, 0.2]).log())
    victim.eval()
    probs = {}
    for output in ("scores", "label"):
        student = _student(n_classes=3)
        copycat(BlackBox(victim, output), pool, student, budget=200, epochs=30)
        with torch.no_grad():
            probs[output] = F.softmax(student(pool[:300]), 1).mean(0)
    print("mean copy probabilities, score box:", probs["scores"].tolist(), "label box:", probs["label"].tolist())
    assert torch.allclose(probs["scores"], torch.tensor([0.5, 0.3, 0.2]), atol=0.05)
    assert probs["label"][0] > 0.9


def test_attacks_made_on_the_copy_transfer_far_better_than_noise(cnn, copies, held_out):
    x, y = held_out
    ok = advlib.train.predict(cnn, x) == y
    x, y = x[ok][:200], y[ok][:200]
    eps = 0.15
    victim = BlackBox(cnn, "label")
    x_adv = transfer(copies[500][0], victim, x, y, eps=eps, steps=20)
    assert victim.queries == len(x) and (x_adv - x).abs().max() <= eps + 1e-6
    fooled = (advlib.train.predict(cnn, x_adv) != y).float().mean().item()
    assert fooled == pytest.approx(victim.log.success.float().mean().item())
    noise = random_sign_noise(x, eps, seed=0)
    assert ((noise - x).abs().max() - eps).abs() < 1e-6
    by_noise = (advlib.train.predict(cnn, noise) != y).float().mean().item()
    print(f"PGD eps {eps} on the 500-query copy fools digits-cnn on {fooled:.1%}, sign noise on {by_noise:.1%}")
    assert fooled > by_noise + 0.15


def test_random_sign_noise():
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    x[0] = 0.0
    x[1] = 1.0
    n = random_sign_noise(x, 0.1, seed=5)
    assert n.min() >= 0 and n.max() <= 1 and torch.equal(n, random_sign_noise(x, 0.1, seed=5))
    assert not torch.equal(n, random_sign_noise(x, 0.1, seed=6))
    inside = (x >= 0.1) & (x <= 0.9)
    assert torch.allclose((n - x).abs()[inside], torch.tensor(0.1), atol=1e-6)  # exactly eps where not clipped
    signs = torch.sign(n - x)[inside]
    assert 0.35 < (signs > 0).float().mean() < 0.65  # both signs, about equally often
    # at the ends of the box a sign that points out of it is clipped away
    assert torch.isclose(n[0], torch.tensor(0.0)).logical_or(torch.isclose(n[0], torch.tensor(0.1))).all()
    assert torch.isclose(n[1], torch.tensor(1.0)).logical_or(torch.isclose(n[1], torch.tensor(0.9))).all()
    assert torch.equal(random_sign_noise(x, 0.0), x)
    with pytest.raises(ValueError, match="eps"):
        random_sign_noise(x, -0.1)


def test_copycat_bad_input(cnn, pool):
    with pytest.raises(ValueError, match="exceeds the pool"):
        copycat(BlackBox(cnn), pool[:20], _student(), budget=21)
    with pytest.raises(ValueError, match="budget"):
        copycat(BlackBox(cnn), pool, _student(), budget=0)
    with pytest.raises(ValueError, match="BlackBox"):
        copycat(cnn, pool, _student(), budget=10)
    with pytest.raises(ValueError, match="NaN"):
        copycat(BlackBox(cnn), torch.full((4, 1, 8, 8), float("nan")), _student(), budget=2)


def test_copycat_matches_art_copycat_cnn_on_the_same_answers(cnn, pool, held_out):
    """ART's CopycatCNN (a PyTorchClassifier thief, constant-rate Adam) given exactly the 500 inputs
    our copy queried, the same architecture, initialisation, epochs, batch size and learning rate."""
    pytest.importorskip("art")
    from art.attacks.extraction import CopycatCNN
    from art.estimators.classification import PyTorchClassifier

    x, _ = held_out
    budget, box, ours = 500, BlackBox(cnn, "label"), _student()
    res = copycat(box, pool, ours, budget=budget)
    theirs = _student()
    kw = dict(loss=nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=10, clip_values=(0.0, 1.0))
    thief = PyTorchClassifier(model=theirs, optimizer=torch.optim.Adam(theirs.parameters(), lr=2e-3), **kw)
    np.random.seed(0)
    attack = CopycatCNN(PyTorchClassifier(model=cnn, **kw), batch_size_fit=64, batch_size_query=64,
                        nb_epochs=EPOCHS, nb_stolen=budget)
    attack.extract(res["x"].numpy(), thieved_classifier=thief)
    cnn.eval()
    theirs.eval()
    a_ours, a_art = agreement(ours, cnn, x), agreement(theirs, cnn, x)
    print(f"agreement at {budget} queries: advlib.copycat {a_ours:.3f}, ART CopycatCNN {a_art:.3f}")
    assert a_ours >= a_art - 0.03


# ------------------------------------------------------------------------------------------ membership
def _sk_roc(pos, neg):
    s = np.concatenate([pos, neg])
    t = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    fpr, tpr, thr = roc_curve(t, s, drop_intermediate=False)
    return roc_auc_score(t, s), fpr, tpr, thr


@pytest.mark.parametrize("n_pos, n_neg, levels, seed", [(50, 70, 0, 0), (200, 150, 6, 1), (30, 30, 2, 2),
                                                        (1, 5, 0, 3)])
def test_roc_equals_sklearn(n_pos, n_neg, levels, seed):
    """Continuous scores, heavy ties (a few levels) and a single member."""
    g = torch.Generator().manual_seed(seed)
    pos, neg = torch.randn(n_pos, generator=g) + 0.7, torch.randn(n_neg, generator=g)
    if levels:
        pos, neg = pos.mul(levels / 3).round(), neg.mul(levels / 3).round()
    r = roc(pos, neg)
    auc, fpr, tpr, thr = _sk_roc(pos.double().numpy(), neg.double().numpy())
    assert r["auc"] == pytest.approx(auc, abs=1e-12)
    np.testing.assert_allclose(r["fpr"].numpy(), fpr, atol=1e-12)
    np.testing.assert_allclose(r["tpr"].numpy(), tpr, atol=1e-12)
    np.testing.assert_array_equal(r["thresholds"].numpy()[1:], thr[1:])
    assert math.isinf(r["thresholds"][0].item())
    # the AUC is the Mann-Whitney probability that a member outscores a non-member, ties one half
    d = pos[:, None] - neg[None]
    assert r["auc"] == pytest.approx(((d > 0).double() + 0.5 * (d == 0).double()).mean().item(), abs=1e-12)
    # the advantage: max over thresholds of TPR - FPR, by brute force ("member iff score >= t")
    ts = torch.cat([pos, neg]).unique().tolist() + [float("inf")]
    brute = max((pos >= t).double().mean() - (neg >= t).double().mean() for t in ts)
    assert r["advantage"] == pytest.approx(float(brute), abs=1e-12)


def test_roc_extremes():
    g = torch.Generator().manual_seed(0)
    lo, hi = torch.rand(40, generator=g), torch.rand(60, generator=g) + 1.0
    sep, rev = roc(hi, lo), roc(lo, hi)
    assert sep["auc"] == 1.0 and sep["advantage"] == 1.0
    assert rev["auc"] == 0.0 and rev["advantage"] == 0.0  # the curve never leaves the diagonal from below
    tied = roc(torch.ones(10), torch.ones(20))
    assert tied["auc"] == 0.5 and tied["advantage"] == 0.0
    same = roc(torch.randn(2000, generator=g), torch.randn(2000, generator=g))
    # the AUC of two samples of one distribution: mean 1/2, sd sqrt((n+m+1)/(12nm)) = 0.0065
    assert abs(same["auc"] - 0.5) < 4 * 0.0065 and same["advantage"] < 0.1
    for r in (sep, rev, same):  # a curve from (0, 0) to (1, 1), non-decreasing
        assert r["fpr"][0] == r["tpr"][0] == 0 and r["fpr"][-1] == r["tpr"][-1] == 1
        assert (r["fpr"].diff() >= 0).all() and (r["tpr"].diff() >= 0).all()


def test_roc_bad_scores():
    with pytest.raises(ValueError, match="finite"):
        roc(torch.tensor([0.1, float("nan")]), torch.tensor([0.2]))
    with pytest.raises(ValueError, match="finite"):
        roc(torch.tensor([0.1]), torch.tensor([float("inf")]))
    with pytest.raises(ValueError, match="at least one"):
        roc(torch.tensor([]), torch.tensor([0.2]))


def test_membership_scores_against_their_definitions(cnn, digits):
    x, y = digits
    with torch.no_grad():
        p = F.softmax(cnn(x).double(), 1)
    s = {k: membership_scores(cnn, x, y, k).double() for k in KINDS}
    assert set(KINDS) == {"loss", "confidence", "max"}
    torch.testing.assert_close(s["loss"], p[torch.arange(len(y)), y].log(), atol=1e-5, rtol=1e-5)  # log p_y
    torch.testing.assert_close(s["confidence"], p[torch.arange(len(y)), y], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(s["max"], p.max(1).values, atol=1e-6, rtol=1e-5)
    assert (s["max"] >= s["confidence"] - 1e-7).all() and (s["loss"] <= 1e-7).all()
    wrong = p.argmax(1) != y
    assert (s["max"][~wrong] == s["confidence"][~wrong]).all()
    # the max score does not look at the label
    assert torch.equal(membership_scores(cnn, x, y, "max"), membership_scores(cnn, x, (y + 1) % 10, "max"))
    # batching does not change anything
    torch.testing.assert_close(membership_scores(cnn, x, y, "loss", batch_size=7), s["loss"].float())
    with pytest.raises(ValueError, match="kind"):
        membership_scores(cnn, x, y, "entropy")
    with pytest.raises(ValueError, match="label"):
        membership_scores(cnn, x, y[:-1])
    with pytest.raises(ValueError, match="NaN"):
        membership_scores(cnn, torch.full_like(x, float("nan")), y)


def test_an_overfitted_model_leaks_membership_more(cnn, train_digits, digits_splits):
    """A CNN trained on 100 digits for 200 epochs against digits-cnn (all 1297 training digits, 98 %
    test accuracy), with the same 100 members and 200 non-members."""
    members, nonmembers = train_digits, digits_splits["test"][:200]
    torch.manual_seed(0)
    overfit = build("cnn", in_shape=(1, 8, 8))
    advlib.train.fit(overfit, TensorDataset(*members), epochs=200, lr=1e-3, progress=False)
    res = {name: {k: evaluate(m, members, nonmembers, k) for k in KINDS} for name, m in
           (("overfit", overfit), ("digits-cnn", cnn))}
    for name, r in res.items():
        print(name, {k: round(v["auc"], 3) for k, v in r.items()}, "train/test acc",
              r["loss"]["train_acc"], r["loss"]["test_acc"])
    o, c = res["overfit"]["loss"], res["digits-cnn"]["loss"]
    assert o["train_acc"] == 1.0 and o["test_acc"] < 0.9 < c["test_acc"]  # it memorised its training set
    assert o["auc"] > c["auc"] + 0.15 and o["advantage"] > c["advantage"] + 0.15
    assert abs(c["auc"] - 0.5) < 0.1  # the shipped model leaks little to this attack
    for k in KINDS:
        assert res["overfit"][k]["auc"] > res["digits-cnn"][k]["auc"] + 0.1
    # log p_y is a monotone function of p_y: the same ranking, up to float32 ties near p = 1
    assert res["overfit"]["loss"]["auc"] == pytest.approx(res["overfit"]["confidence"]["auc"], abs=0.01)
    # evaluate is roc of membership_scores, plus the accuracies
    direct = roc(membership_scores(overfit, *members), membership_scores(overfit, *nonmembers))
    assert direct["auc"] == o["auc"] and direct["advantage"] == o["advantage"]
    assert o["test_acc"] == pytest.approx(advlib.train.accuracy(overfit, *nonmembers))


def test_membership_on_a_train_mode_model_warns_and_switches(cnn, digits):
    import copy
    model = copy.deepcopy(cnn).train()
    with pytest.warns(UserWarning, match="train mode"):
        membership_scores(model, *digits)
    assert not model.training
