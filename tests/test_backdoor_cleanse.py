"""Neural Cleanse (advlib.backdoor.cleanse): the anomaly index, the cost schedule, the data limit,
the cost accounting, and detection of a Trojan digits CNN trained here."""
import math

import pytest
import torch

import advlib
from advlib.backdoor.cleanse import MAD_CONSISTENCY, cost_schedule, mad_anomaly, neural_cleanse
from advlib.backdoor.poison import attack_success_rate, patch_trigger, poison
from advlib.models import build
from advlib.train import fit


def _cnn(in_shape=(1, 8, 8), seed=0):
    torch.manual_seed(seed)
    return build("cnn", in_shape=in_shape, channels=(8, 16), strides=(1, 2), hidden=64)


@pytest.fixture(scope="module")
def trojan(digits_splits):
    """The standard suspect: 2x2 checker patch bottom-right, target 0, 10 % poisoned (~3 s)."""
    model = _cnn()
    trig = patch_trigger(size=2)
    fit(model, poison(digits_splits["train"], trig, target=0, rate=0.1).dataset, epochs=40, lr=2e-3,
        batch_size=64, weight_decay=1e-4, seed=0, progress=False)
    model.eval()
    x, y = digits_splits["test"][:]
    assert attack_success_rate(model, x, y, trig, 0) > 0.9  # the backdoor took
    return model, trig


class CountingSet:
    """A dataset that records every item fetched."""

    def __init__(self, ds):
        self.ds, self.y, self.fetched = ds, ds.y, []

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        self.fetched.append(int(i))
        return self.ds[i]


# ------------------------------------------------------------------------------------- pure pieces
def test_mad_anomaly_is_its_definition():
    l1 = [1.0, 5, 6, 7, 8, 9, 10, 11, 12, 30]
    # median of an even count: (8 + 9) / 2 = 8.5; |l1 - 8.5| sorted: .5 .5 1.5 1.5 2.5 2.5 3.5 3.5 7.5 21.5 -> MAD 2.5
    expected = [(8.5 - v) / (1.4826 * 2.5) for v in l1]
    assert torch.allclose(mad_anomaly(l1), torch.tensor(expected, dtype=torch.float64))
    assert MAD_CONSISTENCY == 1.4826
    assert mad_anomaly(l1)[0] == pytest.approx(7.5 / 3.7065)  # the outlier: above 2
    assert (mad_anomaly(l1)[5:] < 0).all()  # larger masks than the median are never suspicious
    # an odd count: median 3, |l1 - 3| = 2 1 0 1 7 -> MAD 1
    assert mad_anomaly([1.0, 2, 3, 4, 10]).tolist() == pytest.approx([2 / 1.4826, 1 / 1.4826, 0, -1 / 1.4826,
                                                                       -7 / 1.4826])
    # MAD 0: the limit
    assert mad_anomaly([1.0, 4, 4, 4, 5]).tolist() == [math.inf, 0, 0, 0, -math.inf]
    assert mad_anomaly([2.0, 2.0]).tolist() == [0, 0]
    for bad in ([1.0], [[1.0, 2.0]], [1.0, float("nan")], [-1.0, 2.0]):
        with pytest.raises(ValueError, match="mad_anomaly"):
            mad_anomaly(bad)


def test_cost_schedule_raises_lambda_when_successful_and_lowers_it_when_not():
    cost = torch.tensor([1.0, 1.0, 1.0])
    above = below = torch.zeros(3, dtype=torch.long)
    succeeded = torch.tensor([True, False, True])
    history = []
    for step in range(6):
        ok = succeeded if step < 5 else torch.tensor([True, False, False])
        cost, above, below = cost_schedule(cost, ok, above, below, patience=3, up=2.0, down=4.0)
        history.append(cost.tolist())
    assert history[1] == [1.0, 1.0, 1.0]  # not yet: patience 3
    assert history[2] == [2.0, 0.25, 2.0]  # 3 successes in a row: x up; 3 failures: / down
    assert history[4] == [2.0, 0.25, 2.0]  # the counters restarted
    assert history[5] == [4.0, 0.0625, 2.0]  # the third label's run was broken by a failure
    assert above.tolist() == [0, 0, 0] and below.tolist() == [0, 0, 1]


# ------------------------------------------------------------------------------------- detection
def test_flags_the_trojan_model_names_its_target_and_recovers_the_patch(trojan, digits_splits):
    model, trig = trojan
    d = neural_cleanse(model, digits_splits["train"], per_class=5)
    assert d.method == "Neural Cleanse" and d.samples == 50
    assert d.trojan and d.target == 0 and d.score > 2 and d.threshold == 2
    assert d.score == pytest.approx(float(d.per_label.max())) and int(d.per_label.argmax()) == 0
    l1 = torch.tensor([t.l1 for t in d.triggers])
    assert torch.allclose(d.per_label, mad_anomaly(l1).float(), atol=1e-5)  # per_label: the anomaly indices
    mask = d.trigger.mask
    assert (mask * trig.mask).sum() > 0.5 * mask.sum()  # most of the mask lies on the true 2x2 patch
    x, y = digits_splits["test"][:]
    assert attack_success_rate(model, x, y, d.trigger, d.target) >= 0.9  # the recovered trigger works
    print(d, [round(v, 1) for v in l1.tolist()])


def test_triggers_are_valid_masks_shared_over_channels():
    model = _cnn((3, 6, 6)).eval()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(10, 3, 6, 6, generator=g), torch.arange(10)
    d = neural_cleanse(model, (x, y), steps=5)
    assert len(d.triggers) == 10 and d.per_label.shape == (10,)
    for t in d.triggers:
        assert t.mask.shape == t.pattern.shape == (3, 6, 6)
        assert 0 <= t.mask.min() and t.mask.max() <= 1 and 0 <= t.pattern.min() and t.pattern.max() <= 1
        assert torch.equal(t.mask, t.mask[:1].expand(3, 6, 6))  # one value per pixel
        assert t.apply(x).shape == x.shape
    assert torch.equal(neural_cleanse(model, (x, y), steps=5).per_label, d.per_label)  # seeded


def test_labels_split_into_chunks_give_the_same_triggers(digits_splits, monkeypatch):
    model = _cnn().eval()
    whole = neural_cleanse(model, digits_splits["test"], steps=20)
    monkeypatch.setattr(advlib.threat, "MEMORY_BUDGET", 3 * 10 * 64)  # three labels at a time
    split = neural_cleanse(model, digits_splits["test"], steps=20)
    assert split.forwards == whole.forwards and split.backwards == whole.backwards
    for a, b in zip(whole.triggers, split.triggers):
        assert torch.allclose(a.mask, b.mask, atol=1e-5) and torch.allclose(a.pattern, b.pattern, atol=1e-5)


# ------------------------------------------------------------------------------------- data and cost
def test_fetches_only_per_class_items_and_counts_its_cost(digits_splits):
    ds = CountingSet(digits_splits["test"])
    model = _cnn().eval()
    seen = []
    hook = model.register_forward_pre_hook(lambda mod, args: seen.append(len(args[0])))
    try:
        d = neural_cleanse(model, ds, per_class=2, steps=7)
    finally:
        hook.remove()
    labels = ds.y[ds.fetched]
    assert len(ds.fetched) == len(set(ds.fetched)) == 20
    assert torch.bincount(labels, minlength=10).tolist() == [2] * 10
    assert d.samples == 20
    assert d.forwards == sum(seen)  # every input through the model is counted
    assert d.backwards == 7 * 10 * 20  # every step: one gradient for each label x sample
    assert d.forwards == 1 + d.backwards and d.seconds > 0


def test_a_tuple_over_the_limit_is_refused(digits_splits):
    x, y = digits_splits["test"][:]
    pick = torch.cat([(y == c).nonzero().flatten()[:1] for c in range(10)] + [(y == 3).nonzero().flatten()[1:2]])
    with pytest.raises(ValueError, match="class 3 has 2"):
        neural_cleanse(_cnn().eval(), (x[pick], y[pick]), per_class=1)
    neural_cleanse(_cnn().eval(), (x[pick], y[pick]), per_class=2, steps=1)  # within its limit


def test_leaves_the_model_unchanged(digits_splits):
    model = _cnn().eval()
    params = [p.detach().clone() for p in model.parameters()]
    next(model.parameters()).requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    model.train()
    with pytest.warns(UserWarning, match="eval mode"):
        neural_cleanse(model, digits_splits["test"], steps=3)
    assert not model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(torch.equal(p, q) and p.grad is None for p, q in zip(model.parameters(), params))


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=0), "steps"), (dict(per_class=0), "per_class"), (dict(lr=-1), "lr"), (dict(init_cost=0), "init_cost"),
    (dict(success=1.5), "success"), (dict(cost_up=1.0), "cost_up"), (dict(patience=0), "patience"),
    (dict(threshold=-1), "threshold")])
def test_bad_arguments_are_refused(kwargs, match, digits_splits):
    with pytest.raises(ValueError, match=match):
        neural_cleanse(_cnn().eval(), digits_splits["test"], **kwargs)


def test_bad_inputs_are_refused(digits_splits):
    x, y = digits_splits["test"][:10]
    with pytest.raises(ValueError, match="torch.nn.Module"):
        neural_cleanse(lambda v: v, (x, y))
    with pytest.raises(ValueError, match="dataset or a tuple"):
        neural_cleanse(_cnn().eval(), (x, y, y))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        neural_cleanse(_cnn().eval(), (x * 3, y))
    with pytest.raises(ValueError, match="built for"):
        neural_cleanse(_cnn((1, 6, 6)).eval(), (x, y))
