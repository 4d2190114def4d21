"""advlib.reprogram from first principles: the program changes the input only where its mask lets it
and places the target where it says; the mappings, losses and distances against their definitions
(scipy's exact 1-D Wasserstein distance, a plain-python DTW, Archimedes' uniform projections); AR and
V2S never touch the frozen source model; BAR reaches it only through a score box, with no gradient
anywhere, its every query counted and its steps following the true gradient of its objective; the
target tasks' few-shot draws and table encoding; and AR learning a real series task."""
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import wasserstein_distance
from torch import nn

import advlib
from advlib import reprogram as rp
from advlib import threat
from advlib.blackbox import BlackBox
from advlib.data import ArrayDataset
from advlib.models import build
from advlib.reprogram.baselines import dtw
from advlib.reprogram.program import FORMS


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _images(n, shape=(1, 5, 6), seed=0):
    """Targets in [0, 1], both ends included."""
    x = torch.rand(n, *shape, generator=_gen(seed))
    x.view(-1)[:2] = torch.tensor([0.0, 1.0])
    return x


def _series(n, length=40, seed=0):
    return 2 * torch.randn(n, 1, length, generator=_gen(seed))


def _target(form, n=4, seed=0):
    """A program's (source, target) shapes and target inputs of that form: images in [0, 1] or series."""
    if form == "tanh":
        return (1, 12, 12), (1, 5, 6), _images(n, seed=seed)
    return (1, 64), (1, 40), _series(n, seed=seed)


class Recorder(nn.Module):
    """A source model that counts the rows it evaluates and records, per forward, whether autograd was
    on and whether its input asked for a gradient: the ground truth of what a method did with it."""

    def __init__(self, model):
        super().__init__()
        self.model, self.rows, self.grad_enabled, self.input_grad = model, 0, [], []
        self.in_shape = model.in_shape

    def forward(self, x):
        self.rows += len(x)
        self.grad_enabled.append(torch.is_grad_enabled())
        self.input_grad.append(x.requires_grad)
        return self.model(x)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_state(model, state):
    now = model.state_dict()
    return set(now) == set(state) and all(torch.equal(now[k], state[k]) for k in state)


# ------------------------------------------------------------------------------------------ Program
@pytest.mark.parametrize("form", FORMS)
def test_mask_outside_leaves_the_target_exactly_placed_at_the_centre(form):
    source, target, x = _target(form)
    prog = rp.Program(source, target, form=form, mask="outside")
    with torch.no_grad():
        prog.W.copy_(5 * torch.randn(source, generator=_gen(1)))  # any W, large
    out = prog(x)
    assert out.shape == (len(x), *source)
    if form == "tanh":  # (12 - 5) // 2 = 3 rows, (12 - 6) // 2 = 3 columns before the target
        assert torch.equal(out[:, :, 3:8, 3:9], x)
        region = torch.zeros(source, dtype=torch.bool)
        region[:, 3:8, 3:9] = True
        # around it the program alone on mid-grey: 1/2 + tanh(W)/2 = sigmoid(2W)
        assert torch.allclose(out[:, ~region], torch.sigmoid(2 * prog.W.detach())[~region].expand(len(x), -1),
                              atol=1e-6)
    else:  # (64 - 40) // 2 = 12 samples before the series, zeros plus W around it
        assert torch.equal(out[:, :, 12:52], x)
        region = torch.zeros(source, dtype=torch.bool)
        region[:, 12:52] = True
        assert torch.equal(out[:, ~region], prog.W.detach()[~region].expand(len(x), -1))
    assert torch.equal(prog.inside.bool(), region) and torch.equal(prog.mask, 1 - region.float())


@pytest.mark.parametrize("form", FORMS)
def test_the_program_changes_the_input_only_where_the_mask_allows(form):
    source, target, x = _target(form)
    mask = (torch.rand(source, generator=_gen(2)) < 0.4).float() * 0.7
    prog = rp.Program(source, target, form=form, mask=mask, init=1.0, seed=3)
    placed, out = prog.place(x), prog(x)
    off = mask == 0
    assert off.any() and (~off).any()
    assert torch.equal(out[:, off], placed[:, off])
    assert (out[:, ~off] != placed[:, ~off]).float().mean() > 0.95  # W ~ N(0, 1) moves (nearly) all of them
    # .free: the flat indices where the mask is nonzero, and the other coordinates of W change nothing
    assert prog.free.tolist() == [i for i, v in enumerate(mask.flatten().tolist()) if v != 0]
    with torch.no_grad():
        prog.W.view(-1)[off.flatten()] += 100.0
    assert torch.equal(prog(x), out)


def test_free_coordinates_of_the_named_masks():
    outside = rp.Program((1, 12, 12), (1, 5, 6))
    assert len(outside.free) == 144 - 30
    assert set(outside.free.tolist()) == {r * 12 + c for r in range(12) for c in range(12)
                                          if not (3 <= r < 8 and 3 <= c < 9)}
    assert outside.free.tolist() == sorted(outside.free.tolist())
    assert torch.equal(rp.Program((1, 64), (1, 40), form="additive", mask="all").free, torch.arange(64))


def test_mask_all_adds_the_program_over_the_target_too():
    x = _images(3)
    prog = rp.Program((1, 12, 12), (1, 5, 6), mask="all", init=0.5, seed=4)
    w = prog.W.detach()
    want = (x + torch.tanh(w[:, 3:8, 3:9]) / 2).clamp(0, 1)
    assert torch.allclose(prog(x)[:, :, 3:8, 3:9], want, atol=1e-6)
    series = rp.Program((1, 64), (1, 40), form="additive", mask="all", init=0.5)
    xs = _series(3)
    assert torch.allclose(series(xs)[:, :, 12:52], xs + series.W.detach()[:, 12:52])


def test_odd_margins_put_the_extra_sample_after_the_target():
    prog = rp.Program((1, 11), (1, 4), form="additive")  # 7 to spare: 3 before, 4 after
    assert prog.inside.flatten().tolist() == [0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0]


def test_tanh_form_stays_in_the_unit_box_whatever_w():
    x = _images(6, shape=(1, 12, 12))
    for mask in ("all", "outside"):
        prog = rp.Program((1, 20, 20), (1, 12, 12), mask=mask)
        with torch.no_grad():
            prog.W.copy_(100 * torch.randn(1, 20, 20, generator=_gen(5)))
        ws = 100 * torch.randn(4, 1, 20, 20, generator=_gen(6))
        for out in (prog(x), prog(x, ws)):
            assert out.min() >= 0 and out.max() <= 1
        assert prog(x).min() == 0 and prog(x).max() == 1  # saturated: the clip does act


@pytest.mark.parametrize("form", FORMS)
def test_a_batch_of_patterns_equals_the_program_with_each(form):
    source, target, x = _target(form, n=5)
    prog = rp.Program(source, target, form=form, mask="all", seed=7)
    ws = torch.randn(3, *source, generator=_gen(8))
    batched = prog(x, ws)
    assert batched.shape == (3, 5, *source)
    each = []
    for w in ws:
        with torch.no_grad():
            prog.W.copy_(w)
        each.append(prog(x))
    assert torch.allclose(batched, torch.stack(each), atol=1e-6)


def test_resize_placement():
    # a constant target resized keeps its value, on exactly the region of the size, centred
    prog = rp.Program((1, 28, 28), (1, 8, 8), placement="resize", size=(16, 16), init=1.0)
    placed = prog.place(torch.full((2, 1, 8, 8), 0.25))
    region = torch.zeros(1, 28, 28, dtype=torch.bool)
    region[:, 6:22, 6:22] = True
    assert torch.allclose(placed[:, region], torch.tensor(0.25)) and torch.equal(placed[:, ~region],
                                                                                   torch.full((2, 28 * 28 - 256), 0.5))
    assert torch.equal(prog.inside.bool(), region) and len(prog.free) == 28 * 28 - 256
    x = _images(2, shape=(1, 8, 8))
    want = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.allclose(prog.place(x)[:, :, 6:22, 6:22], want)
    assert torch.equal(prog(x)[:, :, 6:22, 6:22], prog.place(x)[:, :, 6:22, 6:22])  # mask outside
    # a linear ramp, stretched 2x by linear interpolation, is still a ramp in the interior
    ramp = torch.arange(10.0).view(1, 1, 10)
    series = rp.Program((1, 30), (1, 10), form="additive", placement="resize", size=(20,))
    stretched = series.place(ramp)[0, 0, 5:25]
    assert torch.allclose(torch.diff(stretched)[1:-1], torch.tensor(0.5))
    # the default size is the whole source input: nothing left around the target for the program
    whole = rp.Program((1, 28, 28), (1, 8, 8), placement="resize")
    assert whole.inside.all() and len(whole.free) == 0
    assert torch.allclose(whole.place(torch.full((1, 1, 8, 8), 0.3)), torch.tensor(0.3))


def test_program_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="form"):
        rp.Program((1, 12, 12), (1, 5, 6), form="sigmoid")
    with pytest.raises(ValueError, match="placement"):
        rp.Program((1, 12, 12), (1, 5, 6), placement="corner")
    with pytest.raises(ValueError, match="mask"):
        rp.Program((1, 12, 12), (1, 5, 6), mask="inside")
    with pytest.raises(ValueError, match="mask tensor"):
        rp.Program((1, 12, 12), (1, 5, 6), mask=torch.ones(12, 12))
    with pytest.raises(ValueError, match="does not fit"):
        rp.Program((1, 12, 12), (1, 13, 6))
    with pytest.raises(ValueError, match="does not fit"):
        rp.Program((1, 64), (1, 40), form="additive", placement="resize", size=(65,))
    with pytest.raises(ValueError, match="same channels"):
        rp.Program((3, 12, 12), (1, 5, 6))
    with pytest.raises(ValueError, match="encode"):
        rp.Program((1, 12, 12), (30,))
    prog = rp.Program((1, 12, 12), (1, 5, 6))
    with pytest.raises(ValueError, match=r"N x \(1, 5, 6\)"):
        prog(torch.rand(2, 1, 6, 5))


# ------------------------------------------------------------------------------------------ mappings
def _check_map(lm, n_source, n_target, m=None):
    H = lm.H
    assert H.shape == (n_source, n_target)
    assert torch.allclose(H.sum(0), torch.ones(n_target))  # each target label: an average
    assert ((H > 0).sum(1) <= 1).all()  # no source label serves two target labels
    groups = lm.groups()
    assert sorted(s for g in groups for s in g) == sorted(set(s for g in groups for s in g))
    if m is not None:
        assert [len(g) for g in groups] == [m] * n_target
    p = torch.softmax(torch.randn(7, n_source, generator=_gen(9)), 1)
    want = torch.stack([p[:, g].mean(1) for g in groups], 1)
    assert torch.allclose(lm(p), want, atol=1e-6)


def test_random_many_to_one_and_one_to_one():
    _check_map(rp.random_many_to_one(10, 3, seed=0), 10, 3, m=3)  # default K_s // K_t
    _check_map(rp.random_many_to_one(10, 2, m=4, seed=1), 10, 2, m=4)
    _check_map(rp.one_to_one(10, 4, seed=2), 10, 4, m=1)
    assert rp.random_many_to_one(10, 3, seed=5).groups() == rp.random_many_to_one(10, 3, seed=5).groups()
    draws = {tuple(map(tuple, rp.one_to_one(10, 2, seed=s).groups())) for s in range(10)}
    assert len(draws) > 1  # the seed matters


def test_label_map_by_hand():
    lm = rp.LabelMap([1, -1, 0, 1, 1], 2)
    assert lm.groups() == [[2], [0, 3, 4]]
    p = torch.tensor([[0.1, 0.2, 0.3, 0.3, 0.1]])
    assert torch.allclose(lm(p), torch.tensor([[0.3, 0.5 / 3]]))
    _check_map(lm, 5, 2)
    with pytest.raises(ValueError, match="at least one source label"):
        rp.LabelMap([0, 0, 2], 3)  # target 1 has none
    with pytest.raises(ValueError, match="maps 5 source labels"):
        lm(torch.rand(2, 4))


def _predicting(counts, n_source, seed=0):
    """Source probabilities for inputs whose top-1 source labels follow ``counts[j] = {s: times}``: the
    predicted label gets 0.5, the rest random small shares."""
    g = _gen(seed)
    probs, y = [], []
    for j, c in enumerate(counts):
        for s, times in c.items():
            for _ in range(times):
                p = torch.rand(n_source, generator=g)
                p = 0.5 * p / p.sum()
                p[s] += 0.5
                probs.append(p)
                y.append(j)
    return torch.stack(probs), torch.tensor(y)


def test_frequency_mapping_gives_each_target_label_its_most_predicted_sources():
    # class 0 is mostly predicted as 7 then 2, class 1 as 5 then 0, class 2 as 9 then 3 (and 7 once)
    probs, y = _predicting([{7: 6, 2: 3, 5: 1}, {5: 5, 0: 2}, {9: 4, 3: 3, 7: 1}], 10)
    lm = rp.frequency_mapping(probs, y, 3, m=2)
    assert [sorted(g) for g in lm.groups()] == [[2, 7], [0, 5], [3, 9]]
    _check_map(lm, 10, 3, m=2)
    # a source label both classes prefer goes to the class predicted as it more often; the other takes its next
    probs, y = _predicting([{4: 5, 6: 1}, {4: 3, 8: 2, 1: 1}], 10, seed=1)
    assert rp.frequency_mapping(probs, y, 2, m=1).groups() == [[4], [8]]
    # the default m: as many as fit
    _check_map(rp.frequency_mapping(probs, y, 2), 10, 2, m=5)


def test_impossible_mappings_are_refused():
    for call in (lambda: rp.random_many_to_one(10, 3, m=4), lambda: rp.random_many_to_one(10, 3, m=0),
                 lambda: rp.one_to_one(2, 3), lambda: rp.frequency_mapping(torch.rand(4, 10), torch.arange(4) % 2,
                                                                           2, m=6)):
        with pytest.raises(ValueError, match="lower m"):
            call()


# ------------------------------------------------------------------------------------------ losses
def test_focal_loss_is_cross_entropy_at_gamma_zero_and_smaller_above():
    p = torch.softmax(3 * torch.randn(50, 4, generator=_gen(10)), 1)
    y = torch.randint(0, 4, (50,), generator=_gen(11))
    ce = F.nll_loss(p.log(), y, reduction="none")
    assert torch.allclose(rp.focal_loss(p, y, gamma=0), ce, atol=1e-6)
    assert torch.allclose(rp.focal_loss(p, y, gamma=0, omega=2.5), 2.5 * ce, atol=1e-5)
    pt = p[torch.arange(50), y]
    for gamma in (0.5, 2.0):
        fl = rp.focal_loss(p, y, gamma=gamma)
        assert (fl < ce).all()
        assert torch.allclose(fl / ce, (1 - pt) ** gamma, atol=1e-5)
    # the well-classified example is down-weighted far more than the badly classified one
    two = torch.tensor([[0.95, 0.05], [0.2, 0.8]])
    ratio = rp.focal_loss(two, torch.tensor([0, 0])) / F.nll_loss(two.log(), torch.tensor([0, 0]), reduction="none")
    assert ratio[0] < 0.01 and ratio[1] > 0.6
    with pytest.raises(ValueError, match="gamma"):
        rp.focal_loss(p, y, gamma=-1)


def test_target_loss_means_over_the_batch_and_keeps_leading_axes():
    p = torch.softmax(torch.randn(3, 8, 5, generator=_gen(12)), -1)  # 3 patterns x 8 inputs
    y = torch.randint(0, 5, (8,), generator=_gen(13))
    ce = rp.target_loss(p, y)
    assert ce.shape == (3,)
    assert torch.allclose(ce, torch.stack([F.nll_loss(q.log(), y) for q in p]), atol=1e-6)
    focal = rp.target_loss(p, y, "focal", gamma=2)
    assert torch.allclose(focal, torch.stack([rp.focal_loss(q, y, 2).mean() for q in p]))
    with pytest.raises(ValueError, match="loss must be one of"):
        rp.target_loss(p, y, "hinge")


# ------------------------------------------------------------------------------------------ AR, V2S
@pytest.fixture
def image_source():
    torch.manual_seed(0)
    return build("cnn", in_shape=(1, 12, 12), channels=(4, 8), n_classes=10).eval()


@pytest.fixture
def series_source():
    torch.manual_seed(1)
    return build("cnn1d", in_shape=(1, 64), channels=(4, 8), kernel=5, hidden=16, n_classes=10).eval()


def _labels(n, k=2):
    return torch.arange(n) % k


def test_ar_trains_the_program_only(image_source):
    x, y = _images(12, seed=14), _labels(12)
    before, flags = _state(image_source), [q.requires_grad for q in image_source.parameters()]
    prog = rp.Program((1, 12, 12), (1, 5, 6), seed=2)
    w0 = prog.W.detach().clone()
    rep = rp.ar(image_source, prog, rp.random_many_to_one(10, 2), x, y, epochs=3, batch_size=5)
    assert _same_state(image_source, before)
    assert all(q.grad is None for q in image_source.parameters())
    assert [q.requires_grad for q in image_source.parameters()] == flags  # restored after training
    assert not torch.equal(prog.W.detach(), w0)
    assert len(rep.history["loss"]) == 3 and all(math.isfinite(v) for v in rep.history["loss"])
    # the reprogrammed model is h(softmax(F(program(x))))
    want = rp.random_many_to_one(10, 2)(torch.softmax(image_source(prog(x)), 1))
    assert torch.allclose(rep(x), want, atol=1e-6) and torch.equal(rep.predict(x), want.argmax(1))


def test_v2s_trains_an_additive_program_only(series_source):
    x, y = _series(10, seed=15), _labels(10)
    before = _state(series_source)
    seen = []
    rep = rp.v2s(series_source, x, y, epochs=3, batch_size=4, monitor=lambda r: seen.append(1) or {"n": len(seen)})
    assert _same_state(series_source, before)
    assert all(q.grad is None for q in series_source.parameters())
    prog = rep.program
    assert prog.form == "additive" and prog.source_shape == (1, 64) and torch.equal(prog.mask, torch.ones(1, 64))
    untrained = rp.Program((1, 64), (1, 40), form="additive", mask="all", seed=0)
    assert not torch.equal(prog.W.detach(), untrained.W)
    assert rep.history["n"] == [1, 2, 3]  # the monitor's values, per epoch
    with pytest.raises(ValueError, match="in_shape"):
        rp.v2s(nn.Sequential(nn.Flatten(), nn.Linear(40, 10)), x, y, epochs=1)


def test_training_refuses_bad_targets(image_source):
    prog, lm = rp.Program((1, 12, 12), (1, 5, 6)), rp.one_to_one(10, 2)
    x, y = _images(4), _labels(4)
    with pytest.raises(ValueError, match="target shape"):
        rp.ar(image_source, prog, lm, torch.rand(4, 1, 6, 5), y, epochs=1)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        rp.ar(image_source, prog, lm, bad, y, epochs=1)
    with pytest.raises(ValueError, match="one label per input"):
        rp.ar(image_source, prog, lm, x, y[:3], epochs=1)
    with pytest.raises(ValueError, match="source must be"):
        rp.Reprogrammed(lambda z: z, prog, lm)


# ------------------------------------------------------------------------------------------ BAR
def _bar_setup(n=10, seed=16):
    torch.manual_seed(seed)
    model = Recorder(build("mlp", in_shape=(1, 12, 12), hidden=(16,), n_classes=10).eval()).eval()
    return model, BlackBox(model, "scores"), _images(n, seed=seed), _labels(n)


def test_bar_never_asks_for_a_gradient_and_counts_every_query():
    model, box, x, y = _bar_setup()
    before = _state(model)
    prog = rp.Program((1, 12, 12), (1, 5, 6), seed=3)
    w0 = prog.W.detach().clone()
    lm = rp.initial_mapping(box, prog, x, y, 2, kind="frequency")
    assert box.queries == model.rows == len(x)  # the frequency mapping: one query per training input
    epochs, q, batch = 3, 4, 4
    rep = rp.bar(box, prog, lm, x, y, epochs=epochs, q=q, batch_size=batch, seed=1)
    # every loss value on a mini-batch of B costs B queries: (q + 1) B a step, every epoch all batches
    sizes = [len(b) for b in torch.arange(len(x)).split(batch)]
    assert sizes == [4, 4, 2]
    want = len(x) + epochs * sum((q + 1) * b for b in sizes)
    assert box.queries == model.rows == want
    assert rep.history["queries"] == [len(x) + (e + 1) * (q + 1) * len(x) for e in range(epochs)]
    assert rep.history["queries"][-1] == box.queries
    # no forward of the source ran with autograd on, nor on an input that asked for a gradient
    assert model.grad_enabled and not any(model.grad_enabled) and not any(model.input_grad)
    assert all(p.grad is None for p in model.parameters()) and _same_state(model, before)
    assert not torch.equal(prog.W.detach(), w0)
    fixed = prog.mask == 0  # the coordinates the mask silences are never moved
    assert torch.equal(prog.W.detach()[fixed], w0[fixed])
    # evaluating the result through the box costs queries too
    rep.accuracy(x, y)
    assert box.queries == model.rows == want + len(x)


def test_bar_refuses_a_white_box_or_a_label_only_box():
    model, _, x, y = _bar_setup()
    prog, lm = rp.Program((1, 12, 12), (1, 5, 6)), rp.one_to_one(10, 2)
    with pytest.raises(ValueError, match="must be a BlackBox"):
        rp.bar(model, prog, lm, x, y, epochs=1)
    with pytest.raises(ValueError, match="scores"):
        rp.bar(BlackBox(model, "label"), prog, lm, x, y, epochs=1)
    with pytest.raises(ValueError, match="optimizer"):
        rp.bar(BlackBox(model), prog, lm, x, y, epochs=1, optimizer="rmsprop")
    assert model.rows == 0  # refused before any query


def test_bar_step_follows_the_true_gradient_of_its_objective():
    """One ZO-SGD step on one full batch, with many directions: -step / lr is the ZO estimate, whose mean is
    the gradient of the (smoothed, nearly exact at small beta) objective; autograd on the white box gives it."""
    torch.manual_seed(17)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3), nn.Tanh(), nn.Linear(3, 4)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4)
    x, y = _series(8, length=8, seed=18), _labels(8)
    prog = rp.Program((1, 12), (1, 8), form="additive", mask="outside", init=0.5, seed=4)
    lm = rp.LabelMap([0, 1, 1, 0], 2)
    free = prog.free
    assert free.tolist() == [0, 1, 10, 11]
    w0 = prog.W.detach().clone()
    W = w0.clone().requires_grad_(True)
    loss = rp.target_loss(lm(torch.softmax(model(prog.place(x) + prog.mask * W), 1)), y)
    (true,) = torch.autograd.grad(loss, W)
    true = true.flatten()[free]
    assert true.norm() > 1e-2
    q, lr = 4000, 1e-3
    box = BlackBox(model, "scores", bounds=None)
    rp.bar(box, prog, lm, x, y, epochs=1, batch_size=len(x), q=q, beta=1e-2, lr=lr, optimizer="sgd")
    est = ((w0 - prog.W.detach()) / lr).flatten()[free]
    cos = F.cosine_similarity(est, true, 0)
    assert cos > 0.97, (est, true)
    assert 0.8 < est.norm() / true.norm() < 1.25
    assert box.queries == (q + 1) * len(x)


def test_bar_lowers_its_loss_on_a_toy_task():
    torch.manual_seed(19)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4)).eval()
    x, y = _series(16, length=8, seed=20), _labels(16)
    prog = rp.Program((1, 12), (1, 8), form="additive", mask="all", seed=5)
    rep = rp.bar(BlackBox(model, bounds=None), prog, rp.one_to_one(4, 2), x, y, epochs=15, batch_size=8, q=10,
                 lr=0.05, seed=2)
    assert rep.history["loss"][-1] < rep.history["loss"][0] - 0.05


# ------------------------------------------------------------------------------------------ distances
def test_wasserstein_1d_against_scipy():
    g = _gen(21)
    for n, m in ((7, 11), (13, 5), (9, 9), (1, 4), (200, 317)):
        a = torch.randn(n, 3, generator=g, dtype=torch.float64)
        b = 2 * torch.rand(m, 3, generator=g, dtype=torch.float64)
        got = rp.wasserstein_1d(a, b)
        assert got.shape == (3,)
        want = [wasserstein_distance(a[:, k].numpy(), b[:, k].numpy()) for k in range(3)]
        assert np.allclose(got.numpy(), want, rtol=1e-6, atol=1e-9), (n, m)
        assert torch.allclose(rp.wasserstein_1d(b, a), got)


def test_wasserstein_1d_p2_is_the_quantile_integral():
    a, b = torch.randn(6, 1, generator=_gen(22)).double(), torch.randn(10, 1, generator=_gen(23)).double()
    t = (np.arange(200_000) + 0.5) / 200_000  # midpoint rule over (0, 1) of |F_a^-1(t) - F_b^-1(t)|^2
    qa = np.sort(a[:, 0].numpy())[np.minimum((t * 6).astype(int), 5)]
    qb = np.sort(b[:, 0].numpy())[np.minimum((t * 10).astype(int), 9)]
    assert np.isclose(rp.wasserstein_1d(a, b, p=2).item(), ((qa - qb) ** 2).mean(), rtol=1e-4)


def test_sliced_wasserstein_of_one_distribution_shrinks_with_the_sample():
    g = _gen(24)
    small = rp.sliced_wasserstein(torch.randn(200, 3, generator=g), torch.randn(200, 3, generator=g)).item()
    large = rp.sliced_wasserstein(torch.randn(5000, 3, generator=g), torch.randn(5000, 3, generator=g)).item()
    unequal = rp.sliced_wasserstein(torch.randn(4000, 3, generator=g), torch.randn(5000, 3, generator=g)).item()
    assert 0 < large < small / 2 and large < 0.05 and unequal < 0.05


def test_sliced_wasserstein_of_a_shift():
    """For a pure shift every projection is shifted by theta . s, so SW_1 = E|theta . s| over the projections;
    for theta uniform on the sphere of R^3 the coordinate theta . s / |s| is uniform on [-1, 1] (Archimedes),
    whose mean absolute value is 1/2."""
    a = torch.randn(300, 3, generator=_gen(25), dtype=torch.float64)
    direction = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    direction /= direction.norm()
    sizes = (0.25, 0.5, 1.0, 2.0, 4.0)
    sw = [rp.sliced_wasserstein(a, a + s * direction, projections=4096).item() for s in sizes]
    assert all(u < v for u, v in zip(sw, sw[1:]))
    for s, v in zip(sizes, sw):
        assert v == pytest.approx(s / 2, rel=0.04)
    # SW_2 = (E (theta . s)^2)^(1/2) = |s| / sqrt(3): the second moment of the uniform on [-1, 1] is 1/3
    sw2 = rp.sliced_wasserstein(a, a + 2.0 * direction, projections=4096, p=2).item()
    assert sw2 == pytest.approx(2.0 / math.sqrt(3), rel=0.04)
    # symmetric, and zero between a sample and itself
    b = torch.rand(250, 3, generator=_gen(26), dtype=torch.float64)
    assert rp.sliced_wasserstein(a, b).item() == pytest.approx(rp.sliced_wasserstein(b, a).item(), rel=1e-9)
    assert rp.sliced_wasserstein(a, a[torch.randperm(300, generator=_gen(27))]).item() < 1e-12


def test_sliced_wasserstein_refuses_bad_shapes():
    bad = ((torch.rand(5), torch.rand(5)), (torch.rand(5, 2), torch.rand(5, 3)), (torch.rand(0, 2), torch.rand(3, 2)))
    for a, b in bad:
        with pytest.raises(ValueError, match="point clouds"):
            rp.sliced_wasserstein(a, b)
    with pytest.raises(ValueError, match="projections"):
        rp.sliced_wasserstein(torch.rand(4, 2), torch.rand(4, 2), projections=0)


def test_alignment_is_the_swd_of_the_logits(series_source):
    prog = rp.Program((1, 64), (1, 40), form="additive", mask="outside")
    x = _series(30, seed=28)
    with torch.no_grad():
        same = rp.alignment(series_source, prog, x, prog(x))
        other = rp.alignment(series_source, prog, x, 3 * _series(30, length=64, seed=29))
    assert same == 0 and other > 0


def _dtw_reference(a, b):
    n, m = len(a), len(b)
    d = [[math.inf] * (m + 1) for _ in range(n + 1)]
    d[0][0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i][j] = (a[i - 1] - b[j - 1]) ** 2 + min(d[i - 1][j], d[i][j - 1], d[i - 1][j - 1])
    return d[n][m]


def test_dtw_against_a_plain_dynamic_programme(monkeypatch):
    g = _gen(30)
    a, b = torch.randn(3, 7, generator=g, dtype=torch.float64), torch.randn(4, 5, generator=g, dtype=torch.float64)
    got = dtw(a, b)
    assert got.shape == (3, 4)
    want = [[_dtw_reference(u.tolist(), v.tolist()) for v in b] for u in a]
    assert np.allclose(got.numpy(), want)
    assert torch.allclose(dtw(b, a), got.T)
    monkeypatch.setattr(threat, "MEMORY_BUDGET", 50)  # a few pairs at a time: the same answers
    assert torch.allclose(dtw(a, b), got)
    assert dtw(torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[0.0, 0.0, 1.0, 1.0, 2.0]])).item() == 0  # a warp


def test_dtw_is_zero_on_itself_and_at_most_the_squared_distance():
    x = torch.randn(6, 12, generator=_gen(31), dtype=torch.float64)
    d = dtw(x, x)
    assert torch.equal(d.diagonal(), torch.zeros(6, dtype=torch.float64))
    assert (d >= 0).all() and (d.fill_diagonal_(1.0) > 0).all()
    y = torch.randn(5, 12, generator=_gen(32), dtype=torch.float64)
    assert (dtw(x, y) <= torch.cdist(x, y) ** 2 + 1e-9).all()


# ------------------------------------------------------------------------------------------ tasks
def _toy_dataset():
    y = torch.tensor([0] * 7 + [1] * 4 + [2] * 9)
    return ArrayDataset(torch.arange(20.0)[:, None], y, name="toy", split="train", classes=["a", "b", "c"])


def test_few_shot_draws_exactly_the_shots_reproducibly():
    ds = _toy_dataset()
    state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    one = rp.few_shot(ds, 3, seed=4)
    assert torch.bincount(one.y).tolist() == [3, 3, 3]
    assert torch.equal(ds.y[one.x[:, 0].long()], one.y)  # rows of ds, with their own labels
    assert len(set(one.x[:, 0].tolist())) == 9
    assert torch.equal(rp.few_shot(ds, 3, seed=4).x, one.x)
    assert any(not torch.equal(rp.few_shot(ds, 3, seed=s).x, one.x) for s in range(5, 10))
    assert rp.few_shot(ds, 4, seed=0).n_classes == 3 and rp.few_shot(ds, None) is ds
    assert random.getstate() == state[0] and (np.random.get_state()[1] == state[1][1]).all()
    assert torch.equal(torch.get_rng_state(), state[2])
    for shots in (5, 0):
        with pytest.raises(ValueError, match=r"shots must be 1\.\.4"):
            rp.few_shot(ds, shots)


def test_breast_cancer_task_is_encoded_with_the_training_shots_statistics_only():
    t = rp.task("breast-cancer", shots=10, seed=3)
    assert t.form == "tanh" and t.source == "digits28-cnn" and t.n_classes == 2
    assert t.train.x.shape == (20, 1, 5, 6) and t.test.x.shape == (171, 1, 5, 6)
    assert torch.bincount(t.train.y).tolist() == [10, 10]
    assert t.train.x.min() > 0 and t.train.x.max() < 1 and t.test.x.min() >= 0 and t.test.x.max() <= 1
    # sigmoid^-1 of the encoded training shots: each feature standardised to mean 0, std 1 ...
    z = torch.logit(t.train.x.double().flatten(1))
    assert torch.allclose(z.mean(0), torch.zeros(30, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(z.std(0), torch.ones(30, dtype=torch.float64), atol=1e-3)
    # ... by the statistics of those 20 raw rows, applied to the test split as they are
    raw = rp.few_shot(advlib.data.load("breast-cancer", "train"), 10, seed=3)
    test = advlib.data.load("breast-cancer", "test")
    assert torch.equal(raw.y, t.train.y) and torch.equal(test.y, t.test.y)
    mean, std = raw.x.double().mean(0), raw.x.double().std(0)
    zt = torch.logit(t.test.x.double().flatten(1).clamp(1e-7, 1 - 1e-7))
    want = (test.x.double() - mean) / std
    ok = want.abs() < 8  # where float32 does not saturate the sigmoid
    assert ok.float().mean() > 0.95 and torch.allclose(zt[ok], want[ok], atol=1e-3)
    assert z.mean(0).abs().max() < 1e-4 < zt.mean(0).abs().max()  # the test split is not standardised on itself
    # the series tasks keep their data, for the series source
    s = rp.task("gunpoint", shots=3)
    assert s.form == "additive" and s.source == "mnist1d-cnn" and s.train.x.shape == (6, 1, 150)
    with pytest.raises(ValueError, match="unknown target task"):
        rp.task("iris")


def test_ar_learns_coffee_from_five_shots(zoo_model):
    model = zoo_model("mnist1d-cnn")
    t = rp.task("coffee", shots=5, seed=0)
    x, y = t.train.x, t.train.y
    prog = rp.Program(model.in_shape, x.shape[1:], form="additive", mask="all")
    lm = rp.initial_mapping(model, prog, x, y, 2, kind="one-to-one")
    before = rp.Reprogrammed(model, prog, lm).accuracy(x, y)
    rep = rp.ar(model, prog, lm, x, y, epochs=20, batch_size=4)
    after = rep.accuracy(x, y)
    assert after >= 0.8 and after > before
    assert rep.history["loss"][-1] < rep.history["loss"][0]
    assert rep.accuracy(t.test.x, t.test.y) > 0.6  # and it carries over to the 28 test series
