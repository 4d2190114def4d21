"""Part 4a's training recipes (TRADES, SPROUT, CAT; PGD and IBP live in test_train / test_verify)
from first principles, and data-parallel training under torchrun against one process."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import advlib
from advlib import zoo
from advlib.defenses import cat_training, sprout_labels, sprout_training, trades_loss, trades_training
from advlib.models import build
from advlib.train import RECIPES, fit, recipe, soft_cross_entropy

REPO = Path(__file__).resolve().parents[1]


def _mlp(seed=0):
    torch.manual_seed(seed)
    return build("mlp", in_shape=(1, 8, 8), hidden=(32,), n_classes=10)


@pytest.fixture(scope="module")
def small_train():
    tr = advlib.data.load("digits", "train")
    return torch.utils.data.TensorDataset(tr.x[:256], tr.y[:256])


def test_the_recipes_are_registered_and_the_zoo_names_only_registered_ones():
    for name in ("pgd", "trades", "sprout", "cat", "ibp"):
        assert name in RECIPES
    for e in zoo.entries():
        if e.robust:
            assert e.robust in RECIPES, e.name
            recipe(e.robust, **e.robust_kwargs)  # its parameters are accepted


# ---------------------------------------------------------------------------------------------- TRADES
def test_trades_at_beta_zero_is_standard_training(small_train):
    a, b = _mlp(), _mlp()
    h_std = fit(a, small_train, epochs=2, batch_size=64, progress=False)
    r = trades_training(eps=0.1, beta=0.0, steps=3)
    h_tr = fit(b, small_train, epochs=2, batch_size=64, recipe=r, progress=False)
    assert h_std["loss"] == pytest.approx(h_tr["loss"], abs=1e-6)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


def test_trades_loss_is_ce_plus_beta_times_a_kl_that_the_inner_attack_raises(small_train):
    model = _mlp().eval()
    x, y = small_train[:64]
    ce = F.cross_entropy(model(x), y)
    torch.manual_seed(1)
    l0 = trades_loss(model, x, y, eps=0.1, beta=0.0, steps=5)
    assert l0.item() == pytest.approx(ce.item(), abs=1e-6)
    torch.manual_seed(1)
    l6 = trades_loss(model, x, y, eps=0.1, beta=6.0, steps=5)
    torch.manual_seed(1)
    l6_noattack = trades_loss(model, x, y, eps=0.1, beta=6.0, steps=1, alpha=0.0)  # KL at the start point only
    assert l6 > l6_noattack > ce - 1e-6  # the KL term is >= 0 and the ascent raised it


def test_trades_rejects_bad_parameters():
    with pytest.raises(ValueError, match="beta"):
        trades_training(eps=0.1, beta=-1)
    with pytest.raises(ValueError, match="eps"):
        trades_training(eps=-0.1)


# ---------------------------------------------------------------------------------------------- SPROUT
def test_sprout_labels_are_distributions():
    torch.manual_seed(0)
    y = F.one_hot(torch.randint(0, 10, (200,)), 10).float()
    y_mix = 0.3 * y + 0.7 * y[torch.randperm(200)]
    for beta in (torch.full((10,), 0.05), torch.rand(10) * 3 + 0.01):
        for alpha in (0.0, 0.3, 1.0):
            q = sprout_labels(y_mix, beta, alpha)
            assert (q >= 0).all() and torch.allclose(q.sum(1), torch.ones(200), atol=1e-5)
    assert torch.equal(sprout_labels(y_mix, torch.ones(10), 0.0), y_mix)


def test_sprout_beta_moves_up_its_gradient(small_train):
    model = _mlp().train()
    r = sprout_training(beta_lr=0.5)
    x, y = small_train[:64]
    before = None
    for step in range(3):
        torch.manual_seed(step)
        value = r.loss(model, x, y, 0.0)
        if before is None:
            before = r.state.history[0]
        g = r.state.last_grad
        assert g.abs().sum() > 0
        assert torch.allclose(r.state.history[-1], (r.state.history[-2] + 0.5 * g).clamp_min(0.01))
        # the same draws give the same loss and gradient: recompute it with autograd at the old beta
        torch.manual_seed(step)
        beta = r.state.history[-2].clone().requires_grad_(True)
        xn = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
        lam = torch.distributions.Beta(1.0, 1.0).sample().item()
        partner = torch.randperm(len(x))
        one_hot = F.one_hot(y, 10).float()
        again = soft_cross_entropy(model(lam * xn + (1 - lam) * xn[partner]),
                                   sprout_labels(lam * one_hot + (1 - lam) * one_hot[partner], beta, 0.1))
        (g2,) = torch.autograd.grad(again, beta)
        assert again.item() == pytest.approx(value.item(), rel=1e-5)
        torch.testing.assert_close(g2, g, rtol=1e-4, atol=1e-6)
        # ascent: a small step along the gradient raises the loss, to first order
        assert (g2 * g).sum() > 0
    assert not torch.equal(before, r.state.beta)


def test_sprout_trains_without_attacks_and_keeps_beta_positive(small_train):
    r = sprout_training(beta_lr=50.0)  # a huge rate drives some concentrations to the floor
    h = fit(_mlp(), small_train, epochs=2, batch_size=64, recipe=r, progress=False)
    assert (r.state.beta >= 0.01).all() and len(r.state.history) == 1 + 2 * 4
    assert h["loss"][-1] < h["loss"][0]


# ---------------------------------------------------------------------------------------------- CAT
def test_cat_radii_stay_within_bounds_and_grow_where_the_model_holds(small_train):
    r = cat_training(eps_max=0.1, eta=0.02, steps=3)
    model = _mlp()
    fit(model, small_train, epochs=3, batch_size=64, recipe=r, progress=False)
    eps = r.state.eps
    assert len(eps) == len(small_train)
    assert (eps >= 0).all() and (eps <= 0.1 + 1e-7).all()
    assert eps.max() > 0  # some samples were pushed further
    # every radius is a multiple of eta: it moved by +-eta per visit, clipped at the bounds
    k = eps / 0.02
    assert torch.allclose(k, k.round(), atol=1e-4) or torch.allclose(eps.clamp(max=0.1 - 1e-6), eps)


def test_cat_labels_are_smoothed_by_c_times_eps(small_train):
    """With eps_i at its maximum and c eps_max = 1 the label is a pure Dirichlet(1) draw: the loss
    against it must differ from the clean cross-entropy; with c = 0 it is the clean one-hot CE."""
    x, y = small_train[:32]
    model = _mlp().eval()
    r0 = cat_training(eps_max=0.1, c=0.0, steps=1)
    r0.state.grow(32)
    r0.state.eps[:] = 0.0  # zero radius: no perturbation, labels one-hot
    value = r0.loss(model, x, y, 0.0, index=torch.arange(32))
    assert value.item() == pytest.approx(F.cross_entropy(model(x), y).item(), abs=1e-5)
    with pytest.raises(ValueError, match="c \\* eps_max"):
        cat_training(eps_max=0.1, c=20.0)


# ---------------------------------------------------------------------------------------------- torchrun
DDP_SCRIPT = r'''
import json, sys, torch
import advlib
from advlib.models import build
from advlib.train import fit, init_distributed, recipe
import torch.distributed as dist
dev = init_distributed()
tr = advlib.data.load("digits", "train")
data = torch.utils.data.TensorDataset(tr.x[:300], tr.y[:300])
out = {}
for name in ("standard", "pgd"):
    torch.manual_seed(0)
    model = build("mlp", in_shape=(1, 8, 8), hidden=(32,), n_classes=10)
    r = recipe("pgd", eps=0.1, steps=3) if name == "pgd" else None
    out[name] = fit(model, data, epochs=4, batch_size=50, lr=3e-3, recipe=r, progress=False)["loss"]
    out[name + "_weights"] = sum(p.double().sum().item() for p in model.parameters())
if not dist.is_initialized() or dist.get_rank() == 0:
    print("RESULT " + json.dumps(out))
'''


def _run(cmd, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    assert len(line) == 1, res.stdout[-2000:]
    return json.loads(line[0][len("RESULT "):])


def test_two_process_torchrun_gives_the_one_process_loss_curve(tmp_path):
    script = tmp_path / "ddp_fit.py"
    script.write_text(DDP_SCRIPT)
    one = _run([sys.executable, str(script)], tmp_path)
    torchrun = Path(sys.executable).with_name("torchrun")
    two = _run([str(torchrun), "--standalone", "--nproc_per_node=2", str(script)], tmp_path)
    # no random draws inside the training step: the same mini-batches, averaged gradients, the same curve
    assert two["standard"] == pytest.approx(one["standard"], rel=1e-4)
    assert two["standard_weights"] == pytest.approx(one["standard_weights"], rel=1e-4)
    # PGD's random starts are drawn per process: the same curve within the noise of those draws
    assert two["pgd"] == pytest.approx(one["pgd"], rel=0.05)
    assert two["pgd"][-1] < two["pgd"][0]
