"""The transfer attack: one query per example, success judged by the victim's answers, examples in
the surrogate attack's threat model, and far stronger than noise of the same size."""
import pytest
import torch

import advlib
from advlib.blackbox import BlackBox, transfer

N_DIGITS28 = 100


def test_transfer_costs_one_query_and_reports_the_victims_verdict(zoo_model, digits28):
    x, y = digits28
    victim, surrogate = zoo_model("digits28-cnn"), zoo_model("digits28-mlp")
    bb = BlackBox(victim, output="label")
    x_adv = transfer(surrogate, bb, x, y, eps=0.15, steps=20)
    assert bb.queries == len(x) and bb.log.queries.tolist() == [1] * len(x)
    assert (x_adv - x).abs().max() <= 0.15 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    fooled = advlib.train.predict(victim, x_adv) != y
    assert torch.equal(bb.log.success, fooled)
    assert torch.equal(bb.log.first_success[fooled], torch.ones(int(fooled.sum()), dtype=torch.long))
    noise = (x + 0.15 * torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(0)).mul(2).sub(1))
    noise_rate = (advlib.train.predict(victim, noise.clamp(0, 1)) != y).float().mean().item()
    assert fooled.float().mean().item() > 0.5 > noise_rate + 0.3


def test_transfer_with_another_attack_and_bad_input(zoo_model, digits28):
    x, y = digits28
    victim, surrogate = zoo_model("digits28-cnn"), zoo_model("digits28-mlp")
    bb = BlackBox(victim, output="scores")
    x_adv = transfer(surrogate, bb, x[:10], y[:10], eps=1.5, norm="l2", steps=10)
    assert advlib.threat.lp_norm((x_adv - x[:10]).flatten(1), "l2").max() <= 1.5 + 1e-4
    with pytest.raises(ValueError, match="wrap it first"):
        transfer(surrogate, victim, x, y, eps=0.1)
    with pytest.raises(ValueError, match="surrogate"):
        transfer(bb, bb, x, y, eps=0.1)
    with pytest.raises(ValueError, match="eps"):
        transfer(surrogate, bb, x, y, eps=-1)
