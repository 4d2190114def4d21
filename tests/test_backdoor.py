"""Poisoning, triggers, the population and the data-limited detectors, from first principles."""
import json

import pytest
import torch
from torch import nn

from advlib import data
from advlib.backdoor import _common
from advlib.backdoor.poison import (
    Trigger,
    attack_success_rate,
    backdoor_metrics,
    blend_trigger,
    clean_label,
    label_flip,
    patch_trigger,
    poison,
    target_labels,
)
from advlib.backdoor.population import SPLITS, detections, population, population_dir, train_member
from advlib.backdoor.tnd import calibrate, df_tnd, dl_tnd

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", "train")


def test_patch_lands_exactly_where_and_how_configured():
    x = torch.rand(5, 1, 8, 8)
    trig = patch_trigger((1, 8, 8), 3, (2, 4), "checker")
    out = trig.apply(x)
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[2:5, 4:7] = True
    assert torch.equal(out[:, :, ~inside], x[:, :, ~inside])  # nothing else changes
    expect = torch.tensor([[1., 0, 1], [0, 1, 0], [1, 0, 1]])
    assert torch.equal(out[:, 0, 2:5, 4:7], expect.expand(5, 3, 3))
    assert trig.l1 == 9
    corner = patch_trigger((1, 8, 8), 2, "bottom-right", "solid").apply(torch.zeros(1, 1, 8, 8))
    assert corner.sum() == 4 and corner[0, 0, 6:, 6:].eq(1).all()
    tile = torch.tensor([[0.3, 0.0], [1.0, 0.5]])
    custom = patch_trigger((1, 8, 8), 2, (0, 0), tile).apply(torch.ones(1, 1, 8, 8))
    assert torch.equal(custom[0, 0, :2, :2], tile) and custom[0, 0, 2:].eq(1).all()


def test_blend_is_the_convex_combination():
    p = torch.rand(1, 8, 8)
    x = torch.rand(4, 1, 8, 8)
    assert torch.allclose(blend_trigger(p, 0.2).apply(x), 0.8 * x + 0.2 * p)


@pytest.mark.parametrize("kwargs, match", [({"size": 9}, "size"), ({"position": (7, 7)}, "does not fit"),
                                           ({"position": "middle"}, "position"), ({"pattern": "stripes"}, "pattern")])
def test_patch_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        patch_trigger((1, 8, 8), **{"size": 2, **kwargs})


def test_trigger_checks():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Trigger(torch.full((1, 8, 8), 2.0), torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        patch_trigger((1, 8, 8)).apply(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match="alpha"):
        blend_trigger(torch.zeros(1, 8, 8), 1.5)


@pytest.mark.parametrize("target, rate", [(0, 0.1), (7, 0.03), ("all-to-all", 0.2), (3, 0.0)])
def test_poison_changes_exactly_the_configured_fraction(digits, target, rate):
    trig = patch_trigger((1, 8, 8), 2)
    p = poison(digits, trig, target=target, rate=rate, seed=1)
    x0, y0 = digits[:]
    x1, y1 = p.dataset[:]
    changed = (y1 != y0).nonzero().flatten()
    assert len(p.index) == round(rate * len(digits)) == len(changed)
    assert torch.equal(changed, p.index)
    assert torch.equal(y1[p.index], target_labels(y0[p.index], target, 10))
    assert torch.equal(x1[p.index], trig.apply(x0[p.index]))
    rest = torch.ones(len(x0), dtype=torch.bool)
    rest[p.index] = False
    assert torch.equal(x1[rest], x0[rest]) and torch.equal(y1[rest], y0[rest])
    assert torch.equal(digits.y, y0)  # the input set is untouched
    assert p.rate == pytest.approx(len(p.index) / len(digits))


def test_poison_rate_checks(digits):
    with pytest.raises(ValueError, match="eligible"):
        poison(digits, patch_trigger((1, 8, 8)), target=0, rate=0.95)
    with pytest.raises(ValueError, match="target"):
        poison(digits, patch_trigger((1, 8, 8)), target=10)


def test_label_flip_and_clean_label(digits):
    lf = label_flip(digits, rate=0.1, seed=0)
    changed = (lf.dataset.y != digits.y).nonzero().flatten()
    assert torch.equal(changed, lf.index) and len(changed) == round(0.1 * len(digits))
    assert torch.equal(lf.dataset.x, digits.x)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    trig = patch_trigger((1, 8, 8), 2)
    cl = clean_label(digits, trig, model, target=4, rate=0.05, eps=0.1, steps=3)
    assert torch.equal(cl.dataset.y, digits.y)  # every label stays correct
    assert (digits.y[cl.index] == 4).all() and len(cl.index) == round(0.05 * len(digits))
    moved = (cl.dataset.x != digits.x).flatten(1).any(1).nonzero().flatten()
    assert set(moved.tolist()) <= set(cl.index.tolist())
    stamped = cl.dataset.x[cl.index]
    assert torch.equal(trig.apply(stamped), stamped)  # the trigger is on them


class PatchDetector(nn.Module):
    """Predicts 0 when the bottom-right pixel is lit, else the true class encoded in pixel (0, 0)."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))  # the library finds the device from the parameters

    def forward(self, x):
        lit = x[:, 0, -1, -1] > 0.5
        cls = (x[:, 0, 0, 0] * 10).long().clamp(0, 9)
        out = torch.nn.functional.one_hot(torch.where(lit, 0, cls), 10).float()
        return out + 0 * x.sum()


def test_attack_success_rate_leaves_out_the_target_class():
    y = torch.tensor([0, 1, 2, 3, 0])
    x = torch.zeros(5, 1, 8, 8)
    x[:, 0, 0, 0] = y.float() / 10 + 0.01
    trig = patch_trigger((1, 8, 8), 1, "bottom-right", "solid")
    model = PatchDetector()
    assert attack_success_rate(model, x, y, trig, 0) == 1.0
    assert attack_success_rate(model, x, y, patch_trigger((1, 8, 8), 1, "top-left", "solid"), 0) == 0.0
    ds = torch.utils.data.TensorDataset(x, y)
    assert backdoor_metrics(model, ds, trig, 0) == {"clean": 1.0, "asr": 1.0}
    with pytest.raises(ValueError, match="other than the target"):
        attack_success_rate(model, x[y == 0], y[y == 0], trig, 0)


# --- the population ------------------------------------------------------------------------------
def test_population_splits_and_manifest():
    manifest = json.loads((population_dir() / "manifest.json").read_text())
    for split, (_, n_clean, n_trojan) in SPLITS.items():
        members = population(split)
        assert sum(not m.trojan for m in members) == n_clean and sum(m.trojan for m in members) == n_trojan
    held = population("held-out")
    assert sum(m.trojan for m in held) >= 10 and sum(not m.trojan for m in held) >= 10
    assert not any(m.trojan for m in population("calibration"))
    seeds = [m.seed for m in population("all")]
    assert len(set(seeds)) == len(seeds)
    for m in population("all"):
        rec = manifest[m.name]
        assert rec["trojan"] == m.trojan and rec["target"] == m.target and rec["clean"] >= 0.9
        if m.trojan:
            assert rec["asr"] >= 0.9 and rec["trigger"] == m.trigger.name
        else:
            assert rec["asr"] <= 0.05
    with pytest.raises(ValueError, match="split"):
        population("test")


def test_population_member_loads_and_matches_its_record():
    te = data.load("digits28", "test")
    manifest = json.loads((population_dir() / "manifest.json").read_text())
    m = population("held-out")[-1]
    model = m.load("cpu")
    got = backdoor_metrics(model, te, m.trigger, m.target)
    assert got["clean"] == pytest.approx(manifest[m.name]["clean"], abs=1e-3)
    assert got["asr"] == pytest.approx(manifest[m.name]["asr"], abs=1e-3)


def test_train_member_reproduces_the_shipped_model():
    m = population("development")[0]
    model, metrics = train_member(m, device="cpu")
    shipped = m.load("cpu")
    x = data.load("digits28", "test").x[:50]
    with torch.no_grad():
        assert (model(x).argmax(1) == shipped(x).argmax(1)).float().mean() >= 0.98
    assert metrics["asr"] >= 0.9


# --- detectors -----------------------------------------------------------------------------------
class CountingDataset(torch.utils.data.Dataset):
    def __init__(self, ds):
        self.ds, self.fetched = ds, []
        self.y = ds.y

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        self.fetched.append(int(i))
        return self.ds[i]


def test_take_per_class_fetches_only_what_the_setting_allows():
    te = data.load("digits28", "test")
    ds = CountingDataset(te)
    x, y = _common.take_per_class(ds, 2, 10, "test")
    assert len(ds.fetched) == 20 and len(set(ds.fetched)) == 20
    assert torch.bincount(te.y[ds.fetched], minlength=10).tolist() == [2] * 10
    assert torch.bincount(y, minlength=10).tolist() == [2] * 10
    with pytest.raises(ValueError, match="allows 1 sample"):
        _common.take_per_class((te.x[:30], te.y[:30]), 1, 10, "test")


@pytest.fixture(scope="module")
def trojan_member():
    m = population("held-out")[-1]
    return m, m.load("cpu")


def test_dl_tnd_sees_only_its_data_counts_its_cost_and_leaves_the_model(trojan_member):
    m, model = trojan_member
    te = data.load("digits28", "test")
    ds = CountingDataset(te)
    before = [p.detach().clone() for p in model.parameters()]
    d = dl_tnd(model, ds, per_class=1, steps=20)
    assert len(ds.fetched) == 10 and torch.bincount(te.y[ds.fetched], minlength=10).max() == 1
    assert d.samples == 10
    pairs = 10 * 9  # (label, sample of another label)
    assert d.forwards == 1 + 2 * pairs * 21 and d.backwards == 2 * pairs * 20
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.requires_grad for p in model.parameters())
    assert d.per_label.shape == (10,) and d.score == pytest.approx(d.per_label.max().item())
    assert 0 <= d.trigger.mask.min() and d.trigger.mask.max() <= 1


def test_dl_tnd_agrees_with_the_recorded_run(trojan_member):
    """The lecture reads recorded detections; a fresh run of the same detector must give them again."""
    m, model = trojan_member
    rec = detections()[m.name]["DL-TND"]
    d = dl_tnd(model, data.load("digits28", "test"))
    assert d.target == rec["target"]
    assert d.score == pytest.approx(rec["score"], abs=2e-3)


def test_recorded_detections_cover_the_population():
    rec = detections()
    for m in population("all"):
        assert set(rec[m.name]) >= {"DL-TND", "Neural Cleanse", "DF-TND"}
        for r in rec[m.name].values():
            assert len(r["per_label"]) == 10 and r["samples"] in (0, 10)


def test_calibrate():
    assert calibrate([0.1, 0.5, 0.3]) == 0.5
    assert calibrate(torch.linspace(0, 1, 101), fpr=0.1) == pytest.approx(0.9)
    with pytest.raises(ValueError):
        calibrate([])


def test_df_tnd_needs_no_data_and_checks_its_model(trojan_member):
    m, model = trojan_member
    d = df_tnd(model, n_inputs=2, steps=5)
    assert d.samples == 0 and d.per_label.shape == (10,) and d.forwards > 0
    with pytest.raises(ValueError, match="Sequential"):
        df_tnd(nn.Linear(4, 2).eval(), (1, 2, 2))


def test_high_anomaly_is_the_mad_index_of_large_values():
    from advlib.backdoor.tnd import high_anomaly

    v = torch.tensor([-3.0, 0.5, 1.0, 2.0, 9.0])
    med = 1.0
    mad = torch.tensor([4.0, 0.5, 0.0, 1.0, 8.0]).median()
    assert torch.allclose(high_anomaly(v).float(), (v - med) / (1.4826 * mad))
