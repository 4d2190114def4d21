"""Mode-connectivity repair and its baselines (advlib.backdoor.repair)."""
import copy

import pytest
import torch
from torch import nn

from advlib.backdoor.poison import backdoor_metrics, patch_trigger, poison
from advlib.backdoor.repair import (
    Path,
    bezier,
    channel_activity,
    choose_t,
    connect,
    fine_prune,
    fine_tune,
    noisy_model,
    sanitise,
    train_scratch,
    weight_distance,
)
from advlib.data import load
from advlib.models import build
from advlib.train import fit


def cnn(seed, channels=(8, 16)):
    torch.manual_seed(seed)
    return build("cnn", in_shape=(1, 8, 8), channels=channels, strides=(1, 2), hidden=64).eval()


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(model, saved):
    return all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


@pytest.fixture(scope="module")
def digits():
    return load("digits", "train"), load("digits", "test")


def stratified(data, per_class, seed=0):
    g = torch.Generator().manual_seed(seed)
    idx = [(data.y == c).nonzero().flatten() for c in range(10)]
    idx = torch.cat([i[torch.randperm(len(i), generator=g)[:per_class]] for i in idx])
    return data.x[idx], data.y[idx]


@pytest.fixture(scope="module")
def small(digits):
    """Two (untrained) CNNs of one architecture and 30 trusted samples."""
    return cnn(0), cnn(1), stratified(digits[0], 3)


def test_bezier_formula_and_exact_endpoints():
    w1, th, w2 = torch.randn(5), torch.randn(5), torch.randn(5)
    assert torch.equal(bezier(w1, th, w2, 0.0), w1)
    assert torch.equal(bezier(w1, th, w2, 1.0), w2)
    t = 0.3
    assert torch.allclose(bezier(w1, th, w2, t), 0.49 * w1 + 0.42 * th + 0.09 * w2)
    d = bezier({"a": w1}, {"a": th}, {"a": w2}, 0.0)
    assert torch.equal(d["a"], w1)
    with pytest.raises(ValueError, match="same parameter names"):
        bezier({"a": w1}, {"b": th}, {"a": w2}, 0.5)
    with pytest.raises(ValueError, match=r"t must be a number in \[0, 1\]"):
        bezier(w1, th, w2, 1.01)


def test_path_endpoints_are_the_models(small):
    m1, m2, (x, _) = small
    path = Path(m1, m2)
    for t, m in ((0, m1), (1, m2)):
        pm = path.model(t)
        assert not pm.training
        for (k, p), (k2, q) in zip(pm.named_parameters(), m.named_parameters()):
            assert k == k2 and torch.equal(p, q)
        assert torch.equal(pm(x), m(x))


def test_path_midpoint_is_linear_midpoint(small):
    m1, m2, (x, _) = small
    path = Path(m1, m2)
    p1, p2 = dict(m1.named_parameters()), dict(m2.named_parameters())
    for k, p in path.model(0.5).named_parameters():
        assert torch.allclose(p, (p1[k] + p2[k]) / 2, atol=1e-6)
    # the functional forward is the forward of the model at phi(t)
    assert torch.allclose(path(x, 0.3), path.model(0.3)(x), atol=1e-5)


def test_training_changes_only_theta(small):
    m1, m2, trusted = small
    s1, s2 = state(m1), state(m2)
    path = Path(m1, m2)
    theta0 = [p.detach().clone() for p in path.theta]
    w1 = {k: v.clone() for k, v in path.w1.items()}
    trained = connect(m1, m2, trusted, epochs=3, seed=0)
    assert same_state(m1, s1) and same_state(m2, s2)  # the input models are untouched
    assert all(torch.equal(trained.w1[k], w1[k]) for k in w1)  # endpoints bit-identical
    assert all(torch.equal(trained.w2[k], p) for k, p in m2.named_parameters())
    assert any(not torch.equal(p, q) for p, q in zip(trained.theta, theta0))  # theta moved
    assert torch.equal(trained.model(0)(trusted[0]), m1(trusted[0]))
    # only theta is a trainable parameter of the path
    assert {id(p) for p in trained.parameters()} == {id(p) for p in trained.theta}


def test_one_forward_backpropagates_into_theta(small):
    m1, m2, (x, y) = small
    path = Path(m1, m2)
    nn.functional.cross_entropy(path(x, 0.4), y).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in path.theta)
    path.zero_grad()
    nn.functional.cross_entropy(path(x, 0.0), y).backward()  # at an endpoint theta has no influence
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in path.theta)


def test_noisy_model_distance(small):
    m1, _, _ = small
    s1 = state(m1)
    for d in (0.5, 3.0):
        noisy = noisy_model(m1, d, seed=2)
        assert abs(weight_distance(noisy, m1) - d) <= 1e-5 * d
    assert same_state(m1, s1)
    assert not same_state(noisy_model(m1, 1.0, seed=0), state(noisy_model(m1, 1.0, seed=1)))
    with pytest.raises(ValueError, match="distance"):
        noisy_model(m1, -1.0)


def test_fine_prune_masks_stay_zero(small):
    m1, _, trusted = small
    s1 = state(m1)
    pruned = fine_prune(m1, trusted, prune_ratio=0.25, epochs=5)
    conv = [m for m in pruned.modules() if isinstance(m, nn.Conv2d)][-1]
    off = pruned.pruned
    assert len(off) == round(0.25 * conv.out_channels) == 4
    assert torch.equal(conv.weight[off], torch.zeros_like(conv.weight[off]))
    assert torch.equal(conv.bias[off], torch.zeros_like(conv.bias[off]))
    kept = torch.ones(conv.out_channels, dtype=torch.bool)
    kept[off] = False
    assert (conv.weight[kept].flatten(1).abs().sum(1) > 0).all()
    assert isinstance(conv.weight, nn.Parameter)  # the pruning re-parametrisation was made permanent
    # the pruned channels are the least active ones on the trusted data
    act = channel_activity(m1, [m for m in m1.modules() if isinstance(m, nn.Conv2d)][-1], trusted[0])
    assert act[off].max() <= act[kept].min()
    assert same_state(m1, s1)


def test_baselines_do_not_modify_their_input(small):
    m1, _, trusted = small
    s1 = state(m1)
    tuned = fine_tune(m1, trusted, epochs=3)
    fresh = train_scratch(m1, trusted, epochs=3)
    assert same_state(m1, s1)
    assert not same_state(tuned, s1) and not same_state(fresh, s1)
    assert not tuned.training and not fresh.training
    # from scratch: the result does not depend on the input's weights, only on its architecture
    _, m2, _ = small
    assert same_state(train_scratch(m2, trusted, epochs=3), state(fresh))


def test_bad_input(small):
    m1, m2, (x, y) = small
    with pytest.raises(ValueError, match="same architecture"):
        Path(m1, cnn(0, channels=(8, 8)))
    bn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(144, 10))
    with pytest.raises(ValueError, match="batch-norm"):
        Path(bn, copy.deepcopy(bn))
    other = copy.deepcopy(m2)
    other[0].mean += 0.1  # a different input normalisation
    with pytest.raises(ValueError, match="buffers"):
        Path(m1, other)
    path = Path(m1, m2)
    for t in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"t must be a number in \[0, 1\]"):
            path.model(t)
    with pytest.raises(ValueError, match="empty"):
        connect(m1, m2, (x[:0], y[:0]), epochs=1)
    with pytest.raises(ValueError, match="empty"):
        fine_tune(m1, torch.utils.data.TensorDataset(x[:0], y[:0]), epochs=1)
    for f in (fine_tune, train_scratch, fine_prune, sanitise):
        with pytest.raises(ValueError, match="empty"):
            f(m1, (x[:0], y[:0]))
    with pytest.raises(ValueError, match="prune_ratio"):
        fine_prune(m1, (x, y), prune_ratio=1.0)
    with pytest.raises(ValueError, match="epochs"):
        connect(m1, m2, (x, y), epochs=0)
    with pytest.raises(ValueError, match="prior"):
        choose_t(path, (x, y), prior=2)


def test_choose_t_reads_only_trusted_accuracy(small):
    """The rule: the largest t <= prior whose trusted accuracy is within tolerance of the path's best;
    a broken far end pulls t back toward the first endpoint."""
    m1, _, trusted = small
    good = fine_tune(m1, trusted, epochs=30, lr=0.05, weight_decay=1e-4)
    broken = copy.deepcopy(good)
    with torch.no_grad():
        for p in broken.parameters():
            p.zero_()  # constant logits: chance accuracy at t = 1
    path = Path(good, good)
    assert choose_t(path, trusted, prior=0.9) == pytest.approx(0.9)
    assert choose_t(path, trusted, prior=0.5) == pytest.approx(0.5)
    path = Path(good, broken)
    curve = path.curve(trusted)
    t = choose_t(path, trusted, prior=0.9, tolerance=0.02)
    assert t < 0.9
    i = int((curve["t"] - t).abs().argmin())
    assert curve["accuracy"][i] >= curve["accuracy"].max() - 0.02 - 1e-6
    assert curve["accuracy"][i + 1] < curve["accuracy"].max() - 0.02


def test_sanitise_removes_a_trojan(digits):
    """End to end: a Trojan digits CNN (ASR ~99 %), 100 trusted samples (10 per class)."""
    train, test = digits
    trigger = patch_trigger(size=2)
    suspect = cnn(0)
    fit(suspect, poison(train, trigger, target=0, rate=0.1).dataset, epochs=40, lr=2e-3, batch_size=64,
        weight_decay=1e-4, progress=False)
    before = backdoor_metrics(suspect, test, trigger, 0)
    assert before["asr"] > 0.9 and before["clean"] > 0.9
    saved = state(suspect)
    trusted = stratified(train, 10)
    repair = sanitise(suspect, trusted)
    after = backdoor_metrics(repair.model, test, trigger, 0)
    assert same_state(suspect, saved)
    assert 0 < repair.t < 1
    assert after["asr"] <= 0.2, after
    assert after["clean"] >= before["clean"] - 0.08, (before, after)  # 5 points lower in our runs
    # the path keeps more clean accuracy than its fine-tuned end, at no higher ASR than the suspect's
    end = backdoor_metrics(repair.path.model(1), test, trigger, 0)
    assert after["clean"] >= end["clean"]
    curve = repair.path.evaluate(test, trigger, 0, ts=torch.tensor([0.0, repair.t]))
    assert curve["asr"][0] == pytest.approx(before["asr"]) and curve["clean"][1] == pytest.approx(after["clean"])
