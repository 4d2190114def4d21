"""The training loop: it learns, it is seeded, its hooks and checks work."""
import pytest
import torch

import advlib
from advlib.models import mlp
from advlib.train import accuracy, fit, predict, random_crop_flip, random_shift, require_eval


def _train(digits_splits, **kw):
    tr, te = digits_splits["train"], digits_splits["test"]
    torch.manual_seed(0)
    model = mlp((1, 8, 8), hidden=(32,), mean=[0.3], std=[0.4])
    hist = fit(model, tr, te, epochs=kw.pop("epochs", 4), lr=3e-3, batch_size=64, progress=False, **kw)
    return model, hist


def test_fit_learns_and_reports_history(digits_splits):
    model, hist = _train(digits_splits)
    assert not model.training
    assert len(hist["loss"]) == len(hist["test_acc"]) == 4
    assert hist["loss"][-1] < hist["loss"][0]
    assert hist["test_acc"][-1] == pytest.approx(accuracy(model, digits_splits["test"]))
    assert hist["test_acc"][-1] > 0.85


def test_fit_is_reproducible(digits_splits):
    a, _ = _train(digits_splits, seed=5)
    b, _ = _train(digits_splits, seed=5)
    c, _ = _train(digits_splits, seed=6)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


def test_perturb_hook_sees_every_batch(digits_splits):
    calls = []

    def noise(model, x, y):
        calls.append(len(x))
        return (x + 0.05 * torch.randn_like(x)).clamp(0, 1)

    _train(digits_splits, epochs=1, perturb=noise)
    assert sum(calls) == len(digits_splits["train"])


def test_fit_rejects_nonsense(digits_splits):
    with pytest.raises(ValueError):
        fit(mlp(), digits_splits["train"], epochs=0)
    with pytest.raises(ValueError, match="optimizer"):
        fit(mlp(), digits_splits["train"], epochs=1, optimizer="lbfgs")
    x, y = digits_splits["train"][:]
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.4"):
        fit(mlp(n_classes=5), torch.utils.data.TensorDataset(x, y), epochs=1)
    with pytest.raises(ValueError, match="int64"):
        fit(mlp(), torch.utils.data.TensorDataset(x, y.float()), epochs=1)


def test_predict_and_accuracy_agree_across_batch_sizes(digits_splits, monkeypatch):
    model, _ = _train(digits_splits, epochs=1)
    x, y = digits_splits["test"][:]
    whole = predict(model, x)
    monkeypatch.setattr(advlib.threat, "MEMORY_BUDGET", 7 * 64 * 64)  # pieces of 7 inputs
    assert torch.equal(predict(model, x), whole)
    assert torch.equal(whole, model(x).argmax(1))
    assert accuracy(model, x, y) == accuracy(model, digits_splits["test"])
    with pytest.raises(ValueError):
        accuracy(model, x[:0], y[:0])


def test_random_shift_translates_images():
    x = torch.zeros(64, 1, 5, 5)
    x[:, 0, 2, 2] = 1.0  # one lit pixel in the centre
    out = random_shift(None, x, None, pad=1)
    assert out.shape == x.shape
    rows, cols = (out[:, 0] == 1).nonzero()[:, 1], (out[:, 0] == 1).nonzero()[:, 2]
    assert len(rows) == 64 and rows.sub(2).abs().max() <= 1 and cols.sub(2).abs().max() <= 1
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 1  # it really shifts
    assert random_crop_flip(None, torch.rand(8, 3, 32, 32), None).shape == (8, 3, 32, 32)


def test_require_eval_warns_and_switches():
    model = mlp().train()
    with pytest.warns(UserWarning, match="train mode"):
        require_eval(model, "an attack")
    assert not model.training


def test_loss_hook_replaces_the_loss_and_sees_the_progress(digits_splits):
    seen = []

    def loss(model, x, y, progress):
        seen.append(progress)
        return torch.nn.functional.cross_entropy(model(x), y) * 0 + (model(x) ** 2).mean()

    _, hist = _train(digits_splits, epochs=2, loss=loss)
    steps = len(seen) // 2
    assert len(seen) == 2 * steps and seen[0] == 0 and seen == sorted(seen) and seen[-1] < 1
    assert seen[steps] == pytest.approx(0.5)
    assert hist["loss"][-1] < hist["loss"][0]  # it minimised the hook's loss
