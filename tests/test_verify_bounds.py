"""The bound-propagation engine (IBP, Fast-Lin, CROWN, CNN-Cert) against first principles: sampled
points and PGD inside the ball never leave the bounds; exact radii on linear classifiers; each
activation's lines really bound it; certified radii stay below attack distortions; CROWN is tighter
than IBP and Fast-Lin on the standard zoo MLP. The exact LP / MILP oracle is tests/test_verify_exact.py."""
import math
import warnings

import pytest
import torch
from torch import nn

import advlib
from advlib import attacks as A
from advlib import verify as V
from advlib.models import Normalize, ResidualBlock
from advlib.train import predict

NORMS = ("linf", "l2", "l1")
EPS = {"linf": 0.04, "l2": 0.25, "l1": 0.8}


# ----------------------------------------------------------------------------------------- helpers
def _ball_samples(x0, eps, norm, n, gen):
    """Random points of the ball around each x0 (inside the [0, 1] box): corners, surface, interior."""
    shape = (len(x0), n, *x0.shape[1:])
    if norm == "linf":
        d = torch.rand(shape, generator=gen) * 2 - 1
        d[:, : n // 2] = d[:, : n // 2].sign()  # corners of the box
    else:
        d = torch.randn(shape, generator=gen)
        if norm == "l1":  # sparse directions reach the L1 ball's corners
            d = d * (torch.rand(shape, generator=gen) < 0.1)
        d = d / A.lp_norm(d.flatten(0, 1), norm).clamp(min=1e-12).view(*shape[:2], *[1] * (x0.dim() - 1))
        d = d * torch.rand(*shape[:2], *[1] * (x0.dim() - 1), generator=gen) ** 0.2
    return (x0[:, None] + eps * d).clamp(0, 1)


def _pgd_extremes(model, x0, eps, norm, steps=30):
    """Projected gradient ascent / descent on every output coordinate: points inside the ball that
    push each logit as high and as low as a first-order attacker can."""
    k = model(x0[:1]).shape[1]
    x = x0.repeat_interleave(2 * k, 0)
    sign = torch.tensor([1.0, -1.0]).repeat(k).repeat(len(x0))
    which = torch.arange(k).repeat_interleave(2).repeat(len(x0))
    delta = torch.zeros_like(x, requires_grad=True)
    alpha = 2.5 * eps / steps
    for _ in range(steps):
        out = model(x + delta).gather(1, which[:, None]).squeeze(1)
        (g,) = torch.autograd.grad((sign * out).sum(), delta)
        step = {"linf": g.sign(), "l2": g / A.lp_norm(g, "l2").clamp(min=1e-12).view(-1, *[1] * (g.dim() - 1)),
                "l1": g.sign() * (g.abs() == g.abs().flatten(1).amax(1).view(-1, *[1] * (g.dim() - 1)))}[norm]
        with torch.no_grad():
            delta += alpha * step * (1 if norm != "l1" else 4)
            delta.copy_(A.project(delta, eps, norm))
            delta.copy_((x + delta).clamp(0, 1) - x)
    with torch.no_grad():
        out = model(x + delta).gather(1, which[:, None]).squeeze(1).view(len(x0), k, 2)
    return out[..., 0], out[..., 1]  # highest and lowest value found per logit


def _assert_sound(model, x0, eps, norm, method, gen, tol=1e-4):
    b = V.propagate(model, x0, eps=eps, norm=norm, method=method)
    with torch.no_grad():
        f0 = model(x0)
        samples = _ball_samples(x0, eps, norm, 256, gen)
        fs = model(samples.flatten(0, 1)).view(len(x0), 256, -1)
    assert (b.lower <= f0 + tol).all() and (f0 <= b.upper + tol).all()
    assert (fs >= b.lower[:, None] - tol).all(), (fs - b.lower[:, None]).min()
    assert (fs <= b.upper[:, None] + tol).all(), (fs - b.upper[:, None]).max()
    hi, lo = _pgd_extremes(model, x0, eps, norm)
    assert (hi <= b.upper + tol).all() and (lo >= b.lower - tol).all()
    return b


def _randomise_bn(model, gen):
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
    return model.eval()


def _random_nets():
    torch.manual_seed(0)
    norm = Normalize([0.4], [0.3])
    return {
        "mlp-relu": (advlib.models.mlp((1, 4, 4), (12, 10), 4), (1, 4, 4)),
        "mlp-tanh": (advlib.models.mlp((1, 4, 4), (12, 10), 4, activation="tanh"), (1, 4, 4)),
        "mlp-sigmoid": (advlib.models.mlp((1, 4, 4), (12, 10), 4, activation="sigmoid"), (1, 4, 4)),
        "cnn-bn-pool": (nn.Sequential(norm, nn.Conv2d(1, 4, 3, 1, 1), nn.BatchNorm2d(4), nn.ReLU(),
                                      nn.AvgPool2d(2), nn.Conv2d(4, 6, 3, 2, 1), nn.Tanh(), nn.Flatten(),
                                      nn.Linear(24, 8), nn.BatchNorm1d(8), nn.Sigmoid(), nn.Linear(8, 3)), (1, 8, 8)),
        "resnet": (nn.Sequential(nn.Conv2d(2, 4, 3, 1, 1), nn.ReLU(), ResidualBlock(4, 4), ResidualBlock(4, 6, 2),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)), (2, 8, 8)),
    }


NETS = _random_nets()


def _random_case(name, seed):
    """The random network ``name`` (batch norm statistics randomised) and three inputs of it, the first on
    the corners of [0, 1], where the box clips the ball; and the generator, for further samples."""
    gen = torch.Generator().manual_seed(seed)
    model, shape = NETS[name]
    _randomise_bn(model, gen)
    x0 = torch.rand(3, *shape, generator=gen)
    x0[0] = x0[0].round()
    return model, x0, gen


# ------------------------------------------------------------------------------------------ soundness
@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("norm", NORMS)
def test_bounds_are_sound_on_random_networks_of_every_layer(name, norm):
    model, x0, gen = _random_case(name, 1)
    methods = ("ibp", "crown") if "tanh" in name or "sigmoid" in name or "bn" in name else V.METHODS
    for method in methods:
        b = _assert_sound(model, x0, EPS[norm], norm, method, gen)
        assert torch.isfinite(b.lower).all() and torch.isfinite(b.upper).all()


N_DIGITS = 60  # the shared `digits` fixture (tests/conftest.py): the first 60 held-out digits


@pytest.fixture
def zoo(zoo_model):
    return {n: zoo_model(n) for n in ("digits-mlp", "digits-cnn", "digits-mlp-ibp")}


@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn"])
@pytest.mark.parametrize("method", V.METHODS)
def test_bounds_are_sound_on_the_zoo_models(zoo, digits, name, method):
    x = digits[0][:8]
    for norm in NORMS:
        _assert_sound(zoo[name], x, EPS[norm] / 2, norm, method, torch.Generator().manual_seed(2))


def test_zero_radius_gives_the_logits_themselves(zoo, digits):
    x = digits[0][:10]
    with torch.no_grad():
        f = zoo["digits-cnn"](x)
    for method in V.METHODS:
        lo, hi = V.bounds(zoo["digits-cnn"], x, eps=0.0, method=method)
        assert torch.allclose(lo, f, atol=1e-4) and torch.allclose(hi, f, atol=1e-4)


def test_margin_bounds_are_sound_and_tighter_than_differences_of_logit_bounds(zoo, digits):
    model, (x, y) = zoo["digits-mlp"], digits
    C = V.margin_matrix(y, 10)
    assert torch.equal(C.sum(2), torch.zeros(len(y), 9)) and (C.abs().sum(2) == 2).all()
    b = V.propagate(model, x, y, eps=0.02)
    assert torch.equal(b.lower, V.propagate(model, x, eps=0.02, C=C).lower)  # y means C = margin_matrix(y)
    lo, hi = V.bounds(model, x, eps=0.02)
    naive = lo.gather(1, y[:, None]) - hi  # z_y lower minus z_j upper
    naive = naive[torch.arange(10)[None] != y[:, None]].view(len(y), 9)
    assert (b.lower >= naive - 1e-4).all() and (b.lower > naive + 1e-3).float().mean() > 0.5
    x_adv = A.pgd(model, x, y, eps=0.02, steps=30, loss="cw")
    with torch.no_grad():
        z = model(x_adv)
    margins = (C @ z[:, :, None]).squeeze(2)
    assert (margins >= b.lower - 1e-4).all()


def test_the_linear_pieces_really_bound_each_activation():
    gen = torch.Generator().manual_seed(3)
    l = torch.randn(4000, generator=gen) * 3
    u = l + torch.rand(4000, generator=gen) * 6
    u[:10] = l[:10] + 1e-8  # (nearly) empty intervals
    t = torch.linspace(0, 1, 201)[:, None]
    z = l + t * (u - l)  # 201 points in every interval
    for op, methods in ((nn.ReLU(), ("fastlin", "crown")), (nn.Tanh(), ("crown",)), (nn.Sigmoid(), ("crown",))):
        for method in methods:
            a_lo, b_lo, a_up, b_up = V.relaxation(op, l, u, method)
            assert (a_lo * z + b_lo <= op(z) + 1e-6).all(), (op, method)
            assert (a_up * z + b_up >= op(z) - 1e-6).all(), (op, method)
    a_lo, b_lo, a_up, b_up = V.relaxation(nn.ReLU(), torch.tensor([-1.0, -3.0]), torch.tensor([3.0, 1.0]), "crown")
    assert a_lo.tolist() == [1.0, 0.0] and a_up.tolist() == [0.75, 0.25] and b_up.tolist() == [0.75, 0.75]
    a_lo, *_ = V.relaxation(nn.ReLU(), torch.tensor([-1.0]), torch.tensor([3.0]), "fastlin")
    assert a_lo.item() == 0.75  # Fast-Lin: the lower line is parallel to the upper one


# ------------------------------------------------------------------------------------------ exactness
@pytest.mark.parametrize("norm,dual", [("linf", 1), ("l2", 2), ("l1", math.inf)])
def test_crown_radius_of_a_linear_classifier_is_the_analytic_minimal_distortion(norm, dual):
    gen = torch.Generator().manual_seed(4)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    x = 0.3 + 0.4 * torch.rand(30, 1, 8, 8, generator=gen)  # inside the box: no clipping
    with torch.no_grad():
        z = lin(x)
    y = z.argmax(1)
    W = lin[1].weight.detach()
    gap = z.gather(1, y[:, None]) - z
    dist = gap / (W[y][:, None] - W[None]).norm(p=dual, dim=2)
    want = dist.masked_fill(torch.arange(10)[None] == y[:, None], math.inf).amin(1)
    for method in ("crown", "fastlin", "ibp"):
        got = V.certified_radius(lin, x, y, norm=norm, method=method, steps=40)
        if method == "ibp" and norm != "linf":
            assert (got <= want + 1e-6).all()  # IBP boxes the L2/L1 ball: sound but loose
            continue
        assert torch.allclose(got, want, atol=1e-5), (method, (got - want).abs().max())


# ------------------------------------------------------------------------------------------ the sandwich
def test_certified_radius_is_below_the_distortion_the_attacks_find(zoo, digits):
    x, y = digits
    for name in ("digits-mlp", "digits-cnn"):
        model = zoo[name]
        r_inf = V.certified_radius(model, x[:40], y[:40], norm="linf", method="crown")
        correct = predict(model, x[:40]) == y[:40]
        assert ((r_inf > 0) == correct).all()  # every correctly classified point gets a positive radius
        # L-inf: the smallest eps of a grid at which PGD fools each sample is above its certified radius
        found = torch.full((40,), math.inf)
        for e in reversed(torch.linspace(0.01, 0.3, 30).tolist()):
            fooled = predict(model, A.pgd(model, x[:40], y[:40], eps=e, steps=40, loss="cw")) != y[:40]
            found = torch.where(fooled, torch.full_like(found, e), found)
        assert (found[correct] < math.inf).float().mean() > 0.9
        assert (r_inf[correct] <= found[correct]).all()
        # L2: C&W's distortion of every broken point is above the certified L2 radius
        r_2 = V.certified_radius(model, x[:40], y[:40], norm="l2")
        x_adv = A.cw_l2(model, x[:40], y[:40])
        broken = predict(model, x_adv) != y[:40]
        assert broken[correct].float().mean() > 0.9
        d = A.lp_norm(x_adv - x[:40], "l2")
        assert (r_2[correct & broken] <= d[correct & broken] + 1e-6).all()
        assert (r_2[correct] > 0).all()


def test_crown_is_tighter_than_fastlin_and_ibp_on_the_standard_mlp(zoo, digits):
    x, y = digits
    low = {m: V.propagate(zoo["digits-mlp"], x, y, eps=0.02, method=m).lower for m in V.METHODS}
    assert low["crown"].mean() > low["fastlin"].mean() > low["ibp"].mean()
    assert (low["crown"] >= low["ibp"]).float().mean() > 0.95
    r = {m: V.certified_radius(zoo["digits-mlp"], x, y, method=m, steps=10) for m in V.METHODS}
    assert r["crown"].mean() >= r["fastlin"].mean() > r["ibp"].mean()


def test_crown_can_be_looser_than_ibp_on_an_ibp_trained_network(zoo):
    """The known lesson (e.g. Zhang et al. 2020, CROWN-IBP): IBP training shapes the network for
    intervals, and on it CROWN's relaxation loses to IBP on some margins; never on a standard net."""
    te = advlib.data.load("digits", "test")
    x, y = te.x[:100], te.y[:100]
    frac = {}
    for name in ("digits-mlp", "digits-mlp-ibp"):
        low = {m: V.propagate(zoo[name], x, y, eps=0.1, method=m).lower for m in ("ibp", "crown")}
        frac[name] = (low["ibp"] > low["crown"]).float().mean().item()
    assert frac["digits-mlp"] == 0 and frac["digits-mlp-ibp"] > 0.03


def test_ibp_training_buys_certified_accuracy(zoo):
    te = advlib.data.load("digits", "test")
    x, y = te.x[:200], te.y[:200]
    std = V.certified_accuracy(zoo["digits-mlp"], x, y, eps=0.1, method="crown")
    ibp = V.certified_accuracy(zoo["digits-mlp-ibp"], x, y, eps=0.1, method="ibp")
    assert ibp > std + 0.3


# ------------------------------------------------------------------------------------------ mechanics
def test_given_intermediate_bounds_are_reused_and_chunking_changes_nothing(zoo, digits, monkeypatch):
    x, y = digits
    model = zoo["digits-cnn"]
    b = V.propagate(model, x, y, eps=0.02)
    again = V.propagate(model, x, y, eps=0.02, pre=b.pre)
    assert torch.allclose(again.lower, b.lower, atol=1e-5)
    assert len(b.pre) == 3 and b.pre[0][0].shape == (60, 16, 8, 8)
    monkeypatch.setattr(advlib.threat, "MEMORY_BUDGET", 2 ** 18)  # pieces of a few inputs
    split = V.propagate(model, x, y, eps=0.02)
    assert torch.allclose(split.lower, b.lower, atol=1e-5) and torch.allclose(split.upper, b.upper, atol=1e-5)
    assert torch.equal(V.certify(model, x, y, eps=0.02), b.certified)
    per_sample = V.propagate(model, x[:4], y[:4], eps=torch.tensor([0.0, 0.01, 0.02, 0.03]))
    for i, e in enumerate((0.0, 0.01, 0.02, 0.03)):
        one = V.propagate(model, x[i:i + 1], y[i:i + 1], eps=e)
        assert torch.allclose(one.lower, per_sample.lower[i:i + 1], atol=1e-5)


def test_certify_without_labels_certifies_the_prediction(zoo, digits):
    model, (x, y) = zoo["digits-mlp"], digits
    pred = predict(model, x)
    assert torch.equal(V.certify(model, x, eps=0.02), V.certify(model, x, pred, eps=0.02))
    assert V.certify(model, x, eps=0.0).all()  # the prediction is certified where nothing moves
    assert torch.equal(V.certified_radius(model, x, steps=8), V.certified_radius(model, x, pred, steps=8))
    acc = V.certified_accuracy(model, x, y, eps=0.02)
    assert acc == V.certify(model, x, y, eps=0.02).float().mean().item() <= (pred == y).float().mean().item()


def test_ibp_loss_is_differentiable_and_above_the_clean_loss(zoo, digits):
    model = advlib.models.mlp()
    x, y = digits
    clean = V.ibp_loss(model, x, y, eps=0.0, kappa=0.5)
    robust = V.ibp_loss(model, x, y, eps=0.1, kappa=0.5)
    robust.backward()
    assert robust > clean and all(p.grad is not None for p in model.parameters())
    assert model.training  # the loss of a model being trained leaves it in train mode


def test_bad_input_gets_a_clear_error(zoo, digits):
    """The engine's own refusals (the checks every public function shares are tests/test_verify_inputs.py)."""
    model, (x, y) = zoo["digits-mlp"], digits
    with pytest.raises(ValueError, match="MaxPool2d"):
        V.bounds(nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 2)).eval(), x, eps=0.1)
    with pytest.raises(ValueError, match="LeakyReLU"):
        V.bounds(nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.LeakyReLU()).eval(), x, eps=0.1)
    with pytest.raises(ValueError, match="inputs must lie in"):
        V.bounds(model, x * 2 - 0.5, eps=0.1)
    with pytest.raises(ValueError, match="eps"):
        V.bounds(model, x, eps=-0.1)
    with pytest.raises(ValueError, match="method"):
        V.bounds(model, x, eps=0.1, method="alpha")
    with pytest.raises(ValueError, match="norm"):
        V.bounds(model, x, eps=0.1, norm="l3")
    with pytest.raises(ValueError, match="C must be"):
        V.bounds(model, x, eps=0.1, C=torch.ones(9, 10))
    with pytest.raises(ValueError, match="not both"):
        V.bounds(model, x, y, eps=0.1, C=V.margin_matrix(y, 10))
    with pytest.raises(TypeError):
        V.bounds(model, x, y, 0.1)  # the radius is keyword-only, as in the attacks
    with pytest.raises(ValueError, match="Fast-Lin"):
        V.bounds(advlib.models.mlp(activation="tanh").eval(), x, eps=0.1, method="fastlin")
    with pytest.raises(ValueError, match="must lie in 0..9"):
        V.margin_matrix(torch.tensor([0, 10]), 10)
    with pytest.raises(ValueError, match="AdaptiveAvgPool2d"):
        V.bounds(nn.Sequential(nn.AdaptiveAvgPool2d(3), nn.Flatten(), nn.Linear(9, 2)).eval(), x, eps=0.1)
    with pytest.raises(ValueError, match="steps"):
        V.certified_radius(model, x, y, steps=0)
    with pytest.raises(ValueError, match="hi"):
        V.certified_radius(model, x, y, hi=0.0)
    with pytest.raises(ValueError, match="kappa"):
        V.ibp_loss(model, x, y, eps=0.1, kappa=2.0)
    net = advlib.models.mlp().train()
    with pytest.warns(UserWarning, match="train mode"):
        V.bounds(net, x, eps=0.1)
    assert not net.training
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        V.bounds(model, x, eps=0.1)
