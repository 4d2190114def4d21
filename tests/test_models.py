"""Architectures: shapes, normalisation inside the model, clear errors."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from advlib.data.registry import to_mnist_shape
from advlib.models import Normalize, ResidualBlock, build, mlp, resnet, small_cnn


@pytest.mark.parametrize("make, shape", [
    (lambda: mlp((1, 8, 8)), (1, 8, 8)),
    (lambda: mlp((1, 28, 28), hidden=(32,), activation="tanh"), (1, 28, 28)),
    (lambda: small_cnn((1, 8, 8)), (1, 8, 8)),
    (lambda: small_cnn((1, 28, 28), strides=(2, 2)), (1, 28, 28)),
    (lambda: resnet((3, 32, 32), widths=(8, 16, 32)), (3, 32, 32)),
])
def test_models_map_images_to_logits(make, shape):
    model = make().eval()
    out = model(torch.rand(4, *shape))
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    assert isinstance(model[0], Normalize)  # normalisation is the model's own first layer


def test_normalize_is_per_channel_affine():
    layer = Normalize([0.5, 0.0, 1.0], [0.5, 2.0, 1.0])
    x = torch.rand(2, 3, 4, 4)
    want = torch.stack([(x[:, 0] - 0.5) / 0.5, x[:, 1] / 2.0, x[:, 2] - 1.0], 1)
    assert torch.allclose(layer(x), want)
    with pytest.raises(ValueError, match="positive std"):
        Normalize([0.0], [0.0])


def test_cnn_for_mnist_is_the_small_certified_training_net():
    model = small_cnn((1, 28, 28), strides=(2, 2))
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [(16, (4, 4), (2, 2)), (32, (4, 4), (2, 2))]
    assert [m for m in model if isinstance(m, nn.Linear)][0].in_features == 32 * 7 * 7


def test_residual_block_adds_its_shortcut():
    block = ResidualBlock(4, 4).eval()
    assert isinstance(block.shortcut, nn.Identity)
    x = torch.rand(2, 4, 6, 6)
    assert torch.allclose(block(x), torch.relu(block.body(x) + x))
    down = ResidualBlock(4, 8, stride=2).eval()
    assert down(x).shape == (2, 8, 3, 3)


def test_build_by_name_and_errors():
    assert isinstance(build("mlp", in_shape=(1, 8, 8)), nn.Sequential)
    with pytest.raises(ValueError, match="unknown architecture 'vit'"):
        build("vit")
    with pytest.raises(ValueError):
        small_cnn(channels=(8,), strides=(1, 2))


# Property-based: whatever the inputs, the invariants of the building blocks hold.

@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_mnist_shape_keeps_range_and_empty_border(n, seed):
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    y = to_mnist_shape(x)
    assert y.shape == (n, 1, 28, 28) and y.min() >= 0 and y.max() <= 1
    border = torch.ones(28, 28, dtype=torch.bool)
    border[4:24, 4:24] = False
    assert (y[..., border] == 0).all()
    assert y.sum() > 0 if x.sum() > 0 else y.sum() == 0


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=3), st.lists(st.floats(0.05, 3.0), min_size=1, max_size=3))
def test_normalize_inverts_exactly(mean, std):
    k = min(len(mean), len(std))
    layer = Normalize(mean[:k], std[:k])
    x = torch.rand(2, k, 3, 3)
    back = layer(x) * layer.std + layer.mean
    assert torch.allclose(back, x, atol=1e-5)
