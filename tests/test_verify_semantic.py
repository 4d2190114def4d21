"""The rotation certificate (Semantify-NN style): the rotation itself, sound per-pixel boxes, and
certified angles that no rotation on a fine grid beats."""
import math

import pytest
import torch

import advlib
from advlib.train import predict
from advlib.verify import semantic as S


@pytest.fixture(scope="module")
def digits():
    te = advlib.data.load("digits", "test")
    return te.x[:40], te.y[:40]


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
    l, u = S.rotation_box(x, lo, hi, samples=4)
    for a in torch.linspace(lo, hi, 401).tolist():
        r = S.rotate(x, a)
        assert (r >= l - 1e-6).all() and (r <= u + 1e-6).all(), a
    assert (u - l).mean() < 0.1 * (hi - lo) + 1e-3  # and it is not trivially wide
    with pytest.raises(ValueError, match="lo <= hi"):
        S.rotation_box(x, 1.0, 0.0)


def test_certified_angle_is_below_the_grid_attack_and_holds_on_a_fine_grid(digits):
    x, y = digits
    model = advlib.zoo.load("digits-mlp", "cpu")
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
    assert math.isinf(S.rotation_attack(model, x[:1] * 0, torch.tensor([predict(model, x[:1] * 0).item()]),
                                        max_degrees=5.0)[0])
