"""The reference libraries used as cross-check oracles are installed beside the course and run on
a zoo model (the attack issues compare against them at equal budgets)."""
import warnings

import pytest
import torch

import advlib

EPS = 0.1


@pytest.fixture(scope="module")
def victim():
    te = advlib.data.load("digits", "test")
    return advlib.zoo.load("digits-mlp", "cpu"), te.x[:64], te.y[:64]


def _in_ball(x_adv, x):
    x_adv = torch.as_tensor(x_adv)
    return (x_adv - x).abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1


def test_torchattacks(victim):
    import torchattacks

    model, x, y = victim
    x_adv = torchattacks.PGD(model, eps=EPS, alpha=0.01, steps=10)(x, y)
    assert _in_ball(x_adv, x) and (model(x_adv).argmax(1) != y).any()


def test_foolbox(victim):
    import foolbox

    model, x, y = victim
    _, x_adv, success = foolbox.attacks.LinfPGD(steps=10, abs_stepsize=0.01)(
        foolbox.PyTorchModel(model, bounds=(0, 1)), x, y, epsilons=EPS)
    assert _in_ball(x_adv, x) and success.any()


def test_art(victim):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from art.attacks.evasion import ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier

    model, x, y = victim
    clf = PyTorchClassifier(model, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=10,
                            clip_values=(0.0, 1.0))
    x_adv = ProjectedGradientDescent(clf, eps=EPS, eps_step=0.01, max_iter=10, verbose=False).generate(x.numpy())
    assert _in_ball(x_adv, x) and (model(torch.as_tensor(x_adv)).argmax(1) != y).any()
