"""What every black-box attack must do, checked on all of them at once (``advlib.blackbox.ATTACKS``):
the queries it is charged are exactly the evaluations the model made (a counter inside the model),
no example goes past its allowance, the result lies in the box (and in the eps ball of an L-inf
attack), every success it reports is adversarial on the model itself, and bad calls get clear errors.
"""
import pytest
import torch
from torch import nn

import advlib
from advlib.blackbox import ATTACKS, BlackBox

N_DIGITS28 = 6
ALLOWANCE = 500


class Counted(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.evaluated = model, 0
        self.in_shape = model.in_shape

    def forward(self, x):
        self.evaluated += len(x)
        return self.model(x)


def _call(name, bb, x, y, **kw):
    a = ATTACKS[name]
    extra = {"eps": 0.2} if a.norm == "linf" else {}
    return a.fn(bb, x, y, queries=ALLOWANCE, **extra, **kw)


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("targeted", [False, True])
def test_counts_allowance_box_and_success(name, targeted, zoo_model, digits28):
    x, y = digits28
    model = Counted(zoo_model("digits28-cnn")).eval()
    labels = (y + 1) % 10 if targeted else y
    bb = BlackBox(model, output=ATTACKS[name].output)
    kw = {}
    if targeted and name in ("boundary", "opt", "sign_opt", "hop_skip_jump"):
        # a targeted hard-label attack starts from an input of the target class
        test = advlib.data.load("digits28", "test")
        kw["x_init"] = torch.stack([test.x[test.y == t][0] for t in labels.tolist()])
    x_adv = _call(name, bb, x, labels, targeted=targeted, **kw)
    log = bb.log
    assert bb.queries == model.evaluated == int(log.queries.sum())
    assert (log.queries <= ALLOWANCE).all()
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    if ATTACKS[name].norm == "linf":
        assert (x_adv - x).abs().max() <= 0.2 + 1e-5
    pred = model.model(x_adv).argmax(1)
    hit = (pred == labels) if targeted else (pred != labels)
    ok = log.success
    assert (log.first_success[ok] <= log.queries[ok]).all() and (log.first_success[~ok] == -1).all()
    if ATTACKS[name].norm == "l2":  # minimal-distortion attacks return their best adversarial point ...
        assert hit[ok].all(), (name, hit, ok)
        d = advlib.threat.lp_norm((x_adv - x).flatten(1), "l2")
        # ... the hard-label ones pushed 0.1% off the decision boundary (_hard.confirm), so that the
        # label does not flip with the rounding of another batch
        assert (d[ok] >= log.best[ok] - 1e-5).all() and (d[ok] <= log.best[ok] * 1.002 + 1e-5).all(), (d, log.best)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_bad_calls(name, zoo_model, digits28):
    x, y = digits28
    model = zoo_model("digits28-cnn")
    with pytest.raises(ValueError, match="wrap it first"):
        _call(name, model, x, y)
    if ATTACKS[name].output == "scores":
        with pytest.raises(ValueError, match="score-based"):
            _call(name, BlackBox(model, output="label"), x, y)
    bb = BlackBox(model, output=ATTACKS[name].output)
    with pytest.raises(ValueError, match="inputs must lie in"):
        _call(name, bb, x * 3, y)
    with pytest.raises(ValueError, match="one label per input"):
        _call(name, bb, x, y[:2])
    with pytest.raises(ValueError, match="labels must lie in"):
        _call(name, bb, x, y + 10)
    with pytest.raises(ValueError, match="queries"):
        ATTACKS[name].fn(bb, x, y, queries=0, **({"eps": 0.1} if ATTACKS[name].norm == "linf" else {}))


def test_the_registry_names_every_attack_of_the_package():
    import advlib.blackbox as B

    assert {a.fn.__name__ for a in ATTACKS.values()} <= set(B.__all__)
    assert {"zoo_attack", "autozoom", "nes", "bandits", "zo_signsgd", "square", "boundary", "opt", "sign_opt",
            "hop_skip_jump"} == {a.fn.__name__ for a in ATTACKS.values()}
