"""Hierarchical random switching (Wang et al., 2019): the random draw per input and block, the
bottom-up training on the digits, and EOT against it."""
import pytest
import torch
from torch import nn

import advlib.defenses.hrs as hrs_module
from advlib.attacks import eot_pgd, eot_success, pgd
from advlib.defenses.hrs import HRS, hrs_cnn, hrs_train
from advlib.models import Normalize
from advlib.threat import check_model_input

N_DIGITS = 500
EPS = 0.1
IDENTITY = lambda x: x  # noqa: E731  (EOT over the model's own randomness)
M, EPOCHS = 2, 12


def _toy(m=3, seed=0):
    """Two blocks of ``m`` linear channels each (4 -> 5 -> 3)."""
    torch.manual_seed(seed)
    return HRS([[nn.Linear(4, 5) for _ in range(m)], [nn.Linear(5, 3) for _ in range(m)]])


# ------------------------------------------------------------------------------------------ the draw
def test_every_forward_draws_a_channel_per_input_and_block():
    model = _toy()
    x = torch.randn(200, 4)
    with torch.no_grad():
        a, b = model(x), model(x)
        assert not torch.equal(a, b) and (a - b).abs().amax(1).gt(0).float().mean() > 0.5
        # a fixed path is the plain composition of its channels, for every input
        for path in [(0, 0), (2, 1), (1, 2)]:
            want = model.blocks[1][path[1]](model.blocks[0][path[0]](x))
            assert torch.equal(model(x, fixed=path), want) and torch.equal(model(x, fixed=path), model(x, fixed=path))
        # per-input paths: input i goes through channels paths[i]
        paths = model.draw(len(x))
        out = model(x, fixed=paths)
        for i in range(0, 200, 17):
            want = model.blocks[1][paths[i, 1]](model.blocks[0][paths[i, 0]](x[i:i + 1]))
            assert torch.allclose(out[i:i + 1], want, atol=1e-6)
    model.fixed = (1, 0)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_draws_are_uniform_and_repeatable_with_a_generator():
    model = _toy(m=4)
    counts = torch.bincount(model.draw(40000)[:, 0], minlength=4).float() / 40000
    assert (counts - 0.25).abs().max() < 0.01  # 5 standard deviations
    x = torch.randn(50, 4)
    with torch.no_grad():
        model.generator = torch.Generator().manual_seed(7)
        a = model(x)
        model.generator = torch.Generator().manual_seed(7)
        assert torch.equal(model(x), a)


def test_one_channel_per_block_is_a_plain_network():
    torch.manual_seed(0)
    layers = [nn.Linear(4, 5), nn.Linear(5, 3)]
    model = HRS([[layer] for layer in layers])
    x = torch.randn(10, 4)
    assert torch.equal(model(x), layers[1](layers[0](x)))


def test_bad_blocks_are_rejected():
    with pytest.raises(ValueError, match="at least one channel"):
        HRS([[nn.Linear(4, 5)], []])
    with pytest.raises(ValueError, match="non-empty list"):
        HRS([])
    with pytest.raises(ValueError, match="single module"):
        HRS([nn.Linear(4, 5)])
    with pytest.raises(ValueError, match="block 0 give outputs of different shapes"):
        HRS([[nn.Linear(4, 5), nn.Linear(4, 6)]], in_shape=(4,))
    unchecked = HRS([[nn.Linear(4, 5), nn.Linear(4, 6)]])  # found at the first forward that mixes them
    with pytest.raises(ValueError, match="different shapes"):
        unchecked(torch.randn(64, 4))
    model = _toy()
    with pytest.raises(ValueError, match="one channel index per block"):
        model(torch.randn(3, 4), fixed=(0, 3))
    with pytest.raises(ValueError, match="one channel index per block"):
        model(torch.randn(3, 4), fixed=(0,))
    with pytest.raises(ValueError, match="N x B"):
        model(torch.randn(3, 4), fixed=torch.zeros(3, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="channels_per_block"):
        hrs_cnn(channels_per_block=0)
    with pytest.raises(ValueError, match="channels_per_block"):
        hrs_cnn(channels_per_block=(2, 2))
    with pytest.raises(ValueError, match="needs an HRS model"):
        hrs_train(nn.Linear(4, 3), None, epochs=1)


def test_hrs_cnn_is_a_small_cnn_split_into_blocks(digits):
    x, _ = digits
    model = hrs_cnn(channels_per_block=(2, 3, 4), mean=[0.3], std=[0.4])
    assert model.in_shape == (1, 8, 8) and model.channels == (2, 3, 4)
    assert all(isinstance(c[0], Normalize) for c in model.blocks[0])
    assert torch.allclose(model.blocks[0][1][0].mean, torch.tensor(0.3)) and torch.allclose(
        model.blocks[0][1][0].std, torch.tensor(0.4))
    assert check_model_input(model.eval(), x, "test") == 10
    with pytest.raises(ValueError, match=r"built for \(1, 8, 8\)"):
        check_model_input(model, torch.rand(2, 1, 9, 9), "test")
    # independently initialised channels
    assert not torch.equal(model.blocks[1][0][0].weight, model.blocks[1][1][0].weight)


# ------------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def trained(digits_splits):
    """hrs_cnn (2 channels per block) trained bottom-up, recording the model's weights before and
    after every stage (``fit`` call)."""
    train, test = digits_splits["train"], digits_splits["test"]
    x_train = train.x
    built, stages = [], []
    real_fit = hrs_module.fit

    def builder():
        built.append(hrs_cnn(channels_per_block=M, mean=[x_train.mean().item()], std=[x_train.std().item()]))
        return built[-1]

    def recording_fit(net, *args, **kwargs):
        before = {k: v.clone() for k, v in built[0].state_dict().items()}
        history = real_fit(net, *args, **kwargs)
        stages.append((before, {k: v.clone() for k, v in built[0].state_dict().items()}))
        return history

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hrs_module, "fit", recording_fit)
        model = hrs_train(builder, train, test, epochs=EPOCHS, progress=False)
    assert model is built[0]
    return model, stages


def test_bottom_up_training_reaches_90_percent(trained, digits):
    model, _ = trained
    x, y = digits
    clean = 1 - eot_success(model, x, y, IDENTITY, samples=32).mean().item()  # expected over the draws
    assert clean >= 0.9, clean
    assert not model.training and all(p.requires_grad for p in model.parameters())
    assert [(h["block"], h["channel"]) for h in model.stage_history] == [(b, j) for b in range(3) for j in range(M)]
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))  # still random after training


def test_each_stage_changes_only_its_channel(trained):
    """Stage (b, j) trains channel j of block b alone: the lower blocks (frozen, switching), the other
    channels and the model's own upper channels (the stage uses fresh copies) keep their weights."""
    model, stages = trained
    assert len(stages) == 3 * M
    for s, (before, after) in enumerate(stages):
        b, j = divmod(s, M)
        mine = f"blocks.{b}.{j}."
        for key in before:
            if key.startswith(mine):
                continue
            assert torch.equal(before[key], after[key]), (s, key)
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(mine) and "weight" in k)


def test_eot_is_stronger_than_plain_pgd_on_hrs(trained, digits):
    """PGD draws one path per input and step; EOT averages the gradient over 8 draws. Measured here
    (500 digits, eps 0.1, 10 steps, accuracy averaged over 64 draws): EOT lowers robust accuracy by
    1-2.5 points -- only that much, because every path alone is about as robust as the switching
    network (the randomness adds little on these models) and PGD's fresh draw at every step is
    already a one-sample EOT."""
    model, _ = trained
    x, y = digits

    def robust(x_adv):
        return 1 - eot_success(model, x_adv, y, IDENTITY, samples=64).mean().item()

    torch.manual_seed(0)
    robust_pgd = robust(pgd(model, x, y, eps=EPS, steps=10))
    robust_eot = robust(eot_pgd(model, x, y, eps=EPS, steps=10, transform=IDENTITY, samples=8))
    assert robust_eot < robust_pgd, (robust_eot, robust_pgd)
