"""advlib.applications.watermark from first principles: the key's gradients against autograd key by
key, the embedding loss against its hinge and zero once every margin is met; a digits-cnn marked by
a few epochs of fine-tuning gives its bits back white-box and through a score box (coordinate
differences at exactly 2N queries a key; random directions better the more of them), costs little
accuracy, and an unmarked model or a foreign key gives chance-level bits."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import advlib
from advlib.applications import (
    Watermark,
    bit_error,
    embed,
    extract,
    extract_blackbox,
    key_gradients,
    make_watermark,
    watermark_loss,
)
from advlib.blackbox import BlackBox

SHAPE = (1, 8, 8)
EPOCHS = 4


@pytest.fixture(scope="module")
def wm():
    return make_watermark(SHAPE, n_bits=32, n_keys=16, seed=0)


@pytest.fixture(scope="module")
def marked(cnn, digits_splits, wm):
    """digits-cnn fine-tuned with the mark (lam 1, margin 0.5, lr 1e-3) for EPOCHS epochs."""
    model = copy.deepcopy(cnn)
    history = embed(model, digits_splits["train"], wm, epochs=EPOCHS, progress=False)
    assert len(history["loss"]) == EPOCHS and not model.training
    return model


def test_make_watermark():
    a = make_watermark(SHAPE, n_bits=20, n_keys=5, n_classes=7, seed=3)
    assert a.keys.shape == (5, *SHAPE) and a.classes.shape == (5,) and a.coords.shape == (20,) and a.bits.shape == (20,)
    assert a.keys.min() >= 0.25 and a.keys.max() <= 0.75 and a.classes.max() < 7
    assert len(a.coords.unique()) == 20 and a.coords.max() < 64 and set(a.bits.tolist()) == {-1.0, 1.0}
    b, c = make_watermark(SHAPE, n_bits=20, n_keys=5, n_classes=7, seed=3), make_watermark(SHAPE, n_bits=20, seed=4)
    assert all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("keys", "classes", "coords", "bits"))
    assert not torch.equal(a.keys[:1], c.keys[:1])
    with pytest.raises(ValueError, match="exceed"):
        make_watermark(SHAPE, n_bits=65)
    with pytest.raises(ValueError, match="low < high"):
        make_watermark(SHAPE, low=0.0)
    with pytest.raises(ValueError, match="n_keys"):
        make_watermark(SHAPE, n_keys=0)


def test_key_gradients_and_the_loss_against_their_definitions(cnn, wm):
    g = key_gradients(cnn, wm)
    assert g.shape == (16, 32)
    for k in (0, 7, 15):  # one key at a time, by autograd on the flat input
        x = wm.keys[k:k + 1].clone().requires_grad_(True)
        F.log_softmax(cnn(x), 1)[0, wm.classes[k]].backward()
        torch.testing.assert_close(g[k], x.grad.flatten()[wm.coords], atol=1e-6, rtol=1e-5)
    for m in (0.1, 0.5, 2.0):  # the mean hinge over keys and bits
        hinge = sum(max(0.0, m - float(wm.bits[j] * g[k, j])) for k in range(16) for j in range(32)) / (16 * 32)
        assert watermark_loss(cnn, wm, m).item() == pytest.approx(hinge, rel=1e-5, abs=1e-7)
    # it is differentiable in the weights (double back-propagation)
    net = copy.deepcopy(cnn)
    watermark_loss(net, wm, 2.0).backward()
    assert sum(float(p.grad.abs().sum()) for p in net.parameters() if p.grad is not None) > 0


def test_watermark_loss_is_zero_when_every_margin_is_met():
    """A linear model whose gradients are known: log p_c(x) of logits W x + b has the input gradient
    W_c - sum_i p_i W_i; with two classes, W_1 = -W_0 = v/2 and class 1 it is (1 - p_1) v."""
    wm = make_watermark(SHAPE, n_bits=10, n_keys=4, n_classes=1, seed=0)
    wm = Watermark(wm.keys, torch.ones(4, dtype=torch.long), wm.coords, wm.bits)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    v = torch.zeros(64)
    v[wm.coords] = 4.0 * wm.bits  # the right sign on every marked coordinate, 0 elsewhere
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([-v / 2, v / 2]))
        model[1].bias.zero_()
    model.eval()
    g = key_gradients(model, wm)
    with torch.no_grad():
        p1 = F.softmax(model(wm.keys), 1)[:, 1]
    torch.testing.assert_close(g, (1 - p1)[:, None] * v[wm.coords][None], atol=1e-6, rtol=1e-5)
    met = float((wm.bits * g).min())
    assert met > 0
    assert watermark_loss(model, wm, margin=met * 0.999).item() == 0.0
    assert watermark_loss(model, wm, margin=met * 1.5).item() > 0
    assert bit_error(extract(model, wm), wm) == 0.0
    flipped = Watermark(wm.keys, wm.classes, wm.coords, -wm.bits)
    assert bit_error(extract(model, flipped), flipped) == 1.0


def test_embedding_makes_white_box_extraction_exact_at_small_cost(cnn, marked, wm, digits_splits):
    test = digits_splits["test"]
    before, after = advlib.train.accuracy(cnn, test), advlib.train.accuracy(marked, test)
    ber_before, ber_after = bit_error(extract(cnn, wm), wm), bit_error(extract(marked, wm), wm)
    print(f"test accuracy {before:.3f} -> {after:.3f}; white-box BER {ber_before:.3f} -> {ber_after:.3f}; "
          f"watermark loss {watermark_loss(cnn, wm).item():.3f} -> {watermark_loss(marked, wm).item():.3f}")
    assert ber_after == 0.0 and ber_before > 0.2
    assert after >= before - 0.02
    assert watermark_loss(marked, wm).item() < 0.5 * watermark_loss(cnn, wm).item()
    bits = extract(marked, wm)
    assert set(bits.unique().tolist()) <= {-1.0, 1.0} and bits.shape == (32,)


def test_blackbox_coordinate_extraction_is_exact_at_2N_queries_a_key(marked, wm):
    box = BlackBox(marked, "scores")
    bits, queries = extract_blackbox(box, wm)
    assert bit_error(bits, wm) == 0.0
    assert queries == 2 * 32 * 16 == box.queries
    bits1, q1 = extract_blackbox(box, wm, n_keys=1)
    assert q1 == 2 * 32 and box.queries == 2 * 32 * 17
    # the estimate is the key's true gradient: its signs are those of the exact gradient of key 0
    exact = torch.sign(key_gradients(marked, wm)[0])
    confident = key_gradients(marked, wm)[0].abs() > 1e-2
    assert (bits1 == exact)[confident].all()
    # a box capped below 2N queries a key refuses the extraction
    with pytest.raises(advlib.blackbox.QueryBudgetExceeded):
        extract_blackbox(BlackBox(marked, "scores", budget=2 * 32 - 1), wm, n_keys=1)


def test_random_direction_extraction_improves_with_q(marked, wm):
    errors, box = {}, BlackBox(marked, "scores")
    for q in (4, 64):
        errs = []
        for seed in range(4):
            before = box.queries
            bits, queries = extract_blackbox(box, wm, q=q, seed=seed)
            assert queries == 2 * q * 16 == box.queries - before
            errs.append(bit_error(bits, wm))
        errors[q] = sum(errs) / len(errs)
    print(f"random-direction BER over 4 seeds: q=4 {errors[4]:.3f}, q=64 {errors[64]:.3f}")
    assert errors[4] > errors[64] + 0.1 and errors[64] <= 0.05
    a, _ = extract_blackbox(box, wm, q=8, seed=1)
    b, _ = extract_blackbox(box, wm, q=8, seed=1)
    assert torch.equal(a, b)


def test_unmarked_models_and_foreign_keys_give_chance_level_bits(cnn, marked):
    """Over 40 random watermarks the mean bit error is within a 4-sigma binomial interval of 1/2, for
    the unmarked model and for the marked one read with keys that are not its own."""
    n_marks, n_bits = 40, 32
    half_width = 4 * math.sqrt(0.25 / (n_marks * n_bits))
    for model in (cnn, marked):
        ber = [bit_error(extract(model, w), w) for w in
               (make_watermark(SHAPE, n_bits=n_bits, n_keys=16, seed=100 + s) for s in range(n_marks))]
        mean = sum(ber) / n_marks
        print(f"mean BER over {n_marks} foreign watermarks: {mean:.3f} (+-{half_width:.3f})")
        assert abs(mean - 0.5) < half_width


def test_extract_blackbox_bad_input(marked, wm):
    with pytest.raises(ValueError, match="probabilities"):
        extract_blackbox(BlackBox(marked, "label"), wm)
    with pytest.raises(ValueError, match=r"\[h, 1 - h\]"):
        extract_blackbox(BlackBox(marked, "scores"), wm, h=0.3)  # the keys lie in [0.25, 0.75]
    edge = Watermark(wm.keys.clone(), wm.classes, wm.coords, wm.bits)
    edge.keys[3, 0, 2, 2] = 1.0
    with pytest.raises(ValueError, match=r"\[h, 1 - h\]"):
        extract_blackbox(BlackBox(marked, "scores"), edge)
    with pytest.raises(ValueError, match="n_keys"):
        extract_blackbox(BlackBox(marked, "scores"), wm, n_keys=17)
    with pytest.raises(ValueError, match="q"):
        extract_blackbox(BlackBox(marked, "scores"), wm, q=0)
    with pytest.raises(ValueError, match="h"):
        extract_blackbox(BlackBox(marked, "scores"), wm, h=0.0)
    with pytest.raises(ValueError, match="lam"):
        embed(copy.deepcopy(marked), None, wm, lam=0)
    train_mode = copy.deepcopy(marked).train()
    with pytest.warns(UserWarning, match="train mode"):
        extract(train_mode, wm)


def test_bit_error():
    wm = make_watermark(SHAPE, n_bits=8, n_keys=1, seed=0)
    assert bit_error(wm.bits, wm) == 0.0 and bit_error(-wm.bits, wm) == 1.0
    half = wm.bits.clone()
    half[:4] *= -1
    assert bit_error(half, wm) == 0.5
    zero = wm.bits.clone()
    zero[0] = 0.0  # an undecided bit is an error
    assert bit_error(zero, wm) == 1 / 8
