"""The rotation certificate (Semantify-NN style): the rotation itself, sound per-pixel boxes, and
certified angles that no rotation on a fine grid beats."""
import math

import pytest
import torch

import advlib.verify as V
from advlib.train import predict
from advlib.verify import semantic as S

N_DIGITS = 40  # the shared `digits` fixture (tests/conftest.py): the first 40 held-out digits


def test_rotate_is_a_rotation():
    x = torch.rand(3, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(S.rotate(x, 0.0), x, atol=1e-6)
    assert torch.allclose(S.rotate(x, 90.0), torch.rot90(x, 1, (2, 3)), atol=1e-5)
    assert torch.allclose(S.rotate(S.rotate(x, 90.0), 90.0), torch.rot90(x, 2, (2, 3)), atol=1e-5)
    one = S.rotate(x, torch.tensor([0.0, 90.0, 180.0]))
    assert torch.allclose(one[2], torch.rot90(x[2], 2, (1, 2)), atol=1e-5)


@pytest.mark.parametrize("lo,hi", [(0.0, 0.5), (2.0, 3.0), (-10.0, -5.0)])
def test_rotation_box_contains_every_rotation_in_the_range(digits, lo, hi):
    x = digits[0]
    l, u = S.rotation_box(x, lo, hi, splits=4)
    for a in torch.linspace(lo, hi, 401).tolist():
        r = S.rotate(x, a)
        assert (r >= l - 1e-6).all() and (r <= u + 1e-6).all(), a
    assert (u - l).mean() < 0.1 * (hi - lo) + 1e-3  # and it is not trivially wide
    with pytest.raises(ValueError, match="lo <= hi"):
        S.rotation_box(x, 1.0, 0.0)


@pytest.mark.parametrize("splits", [1, 3])
def test_one_implicit_split_covers_the_whole_range(digits, splits):
    """Few implicit splits: each sub-interval is bounded around its middle, so even one split covers
    both ends of [lo, hi] (bounding around the first angle only would miss the far end)."""
    x = digits[0]
    l, u = S.rotation_box(x, 0.0, 4.0, splits=splits)
    for a in torch.linspace(0.0, 4.0, 161).tolist():
        r = S.rotate(x, a)
        assert (r >= l - 1e-6).all() and (r <= u + 1e-6).all(), a
    narrow, wide = S.rotation_box(x, 0.0, 4.0, splits=4 * splits), (l, u)  # a refinement: each finer piece
    assert (narrow[0] >= wide[0] - 1e-6).all() and (narrow[1] <= wide[1] + 1e-6).all()  # in a coarser one: nested
    per_image = S.rotation_box(x[:2], torch.tensor([0.0, -2.0]), torch.tensor([4.0, 2.0]), splits=splits)
    assert torch.allclose(per_image[0][1:], S.rotation_box(x[1:2], -2.0, 2.0, splits=splits)[0])


def test_certified_angle_is_below_the_grid_attack_and_holds_on_a_fine_grid(digits, mlp):
    x, y = digits
    model = mlp
    correct = predict(model, x) == y
    cert = S.certify_rotation(model, x, y, max_degrees=15.0, piece=0.5)
    attack = S.rotation_attack(model, x, y, max_degrees=30.0, step=0.1)
    assert (cert[~correct] == 0).all()
    assert (cert[correct] <= attack[correct]).all()
    assert cert[correct].mean() > 5  # a real certificate, not 0 everywhere
    for a in torch.linspace(-15, 15, 301).tolist():  # no rotation inside a certified range changes the label
        inside = correct & (cert >= abs(a))
        assert (predict(model, S.rotate(x[inside], a)) == y[inside]).all()
    with pytest.raises(ValueError, match="piece"):
        S.certify_rotation(model, x, y, max_degrees=1.0, piece=2.0)
    assert torch.equal(S.certify_rotation(model, x, max_degrees=15.0), S.certify_rotation(
        model, x, predict(model, x), max_degrees=15.0))  # no labels: the prediction
    assert math.isinf(S.rotation_attack(model, x[:1] * 0, torch.tensor([predict(model, x[:1] * 0).item()]),
                                        max_degrees=5.0)[0])


@pytest.mark.parametrize("splits", [1, 10])
def test_certified_angle_without_explicit_splits_is_sound_and_smaller(digits, mlp, splits):
    """piece=None: one box for [-A, A], A by bisection. Below the grid attack, no grid rotation inside
    it changes the label, and (on this model) far below what explicit 0.5-degree pieces certify."""
    x, y = digits
    model = mlp
    correct = predict(model, x) == y
    one = S.certify_rotation(model, x, y, max_degrees=15.0, piece=None, splits=splits)
    attack = S.rotation_attack(model, x, y, max_degrees=30.0, step=0.1)
    assert (one[~correct] == 0).all() and (one[correct] > 0).all()
    assert (one[correct] <= attack[correct]).all()
    for a in torch.linspace(-one.max().item(), one.max().item(), 101).tolist():
        inside = correct & (one >= abs(a))
        assert (predict(model, S.rotate(x[inside], a)) == y[inside]).all()
    pieces = S.certify_rotation(model, x, y, max_degrees=15.0, piece=0.5, splits=splits)
    assert one[correct].mean() < pieces[correct].mean()


def test_explicit_splits_stop_at_the_first_failing_piece_like_certifying_every_piece(digits, mlp):
    """certify_rotation moves away from 0 in rounds and drops broken sides: the same answer as
    certifying every piece of [-max, max] and counting the unbroken run on each side."""
    x, y = digits
    k, piece = 24, 0.5
    nodes = V.trace(mlp, (1, 8, 8))
    ok = torch.stack([S._certified_on_boxes(nodes, *S.rotation_box(x, j * piece, (j + 1) * piece, splits=4),
                                            V.margin_matrix(y, 10), "crown") for j in range(-k, k)])
    pos, neg = ok[k:], ok[:k].flip(0)
    run = [torch.where(side.all(0), k, (~side).to(torch.long).argmax(0)) for side in (pos, neg)]
    want = torch.minimum(*run).to(x.dtype) * piece
    assert torch.equal(S.certify_rotation(mlp, x, y, max_degrees=k * piece, piece=piece, splits=4), want)
    assert 0 < want.mean() < k * piece  # some sides break inside the range, some do not
