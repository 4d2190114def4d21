"""α-CROWN (advlib.verify.alpha) against first principles: every choice of its parameters gives lines that
bound the activation; its bounds stay sound on random networks of every layer (sampling and PGD inside
the ball never leave them); it is never looser than CROWN, equal to it with no steps, strictly tighter on
the zoo, and on a one-hidden-layer network it reaches the triangle LP, its optimum there (the parameters
must move from CROWN's start at the ends of [0, 1], where a clamp would give them no gradient)."""
import pytest
import torch
from test_verify_bounds import EPS, NETS, NORMS, _assert_sound, _random_case
from torch import nn

from advlib import verify as V
from advlib.verify.exact import lp_bound, random_relu_mlp


def test_every_alpha_gives_lines_that_bound_the_activation():
    gen = torch.Generator().manual_seed(0)
    l = torch.randn(4000, generator=gen) * 3
    u = l + torch.rand(4000, generator=gen) * 5
    t = torch.rand(64, 1, generator=gen)
    z = l + t * (u - l)  # 64 points of every interval
    for op in (nn.ReLU(), nn.Tanh(), nn.Sigmoid()):
        for _ in range(3):
            alpha = torch.rand(4000, generator=gen)
            if not isinstance(op, nn.ReLU):
                alpha = (alpha, torch.rand(4000, generator=gen))
            a_lo, b_lo, a_up, b_up = V.relaxation(op, l, u, "crown", alpha)
            f = op(z)
            assert (a_lo * z + b_lo <= f + 1e-5).all() and (f <= a_up * z + b_up + 1e-5).all(), op
        start = V.initial_alpha(op, l, u)
        assert all(torch.equal(p, q) for p, q in zip(V.relaxation(op, l, u, "crown", start),
                                                      V.relaxation(op, l, u, "crown")))


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("norm", NORMS)
def test_alpha_crown_is_sound_and_never_looser_than_crown_on_random_networks(name, norm):
    model, x0, gen = _random_case(name, 3)
    b = _assert_sound(model, x0, EPS[norm], norm, "alpha-crown", gen)
    crown = V.propagate(model, x0, eps=EPS[norm], norm=norm, method="crown")
    assert (b.lower >= crown.lower - 1e-5).all() and (b.upper <= crown.upper + 1e-5).all()
    for (l, u), (cl, cu) in zip(b.pre, crown.pre):
        assert (l >= cl - 1e-5).all() and (u <= cu + 1e-5).all()


def test_no_steps_is_crown_and_steps_tighten_the_zoo_mlp(zoo_model, digits):
    model = zoo_model("digits-mlp")
    x, y = digits[0][:40], digits[1][:40]
    crown = V.bounds(model, x, y, eps=0.05)
    same = V.alpha_crown(model, x, y, eps=0.05, steps=0)
    assert torch.allclose(same.lower, crown.lower, atol=1e-5) and torch.allclose(same.upper, crown.upper, atol=1e-5)
    opt = V.bounds(model, x, y, eps=0.05, method="alpha-crown")
    gain = opt.lower - crown.lower
    assert (gain >= -1e-5).all() and gain.mean() > 0.05, gain.mean()
    last_only = V.alpha_crown(model, x, y, eps=0.05, intermediate=False)
    assert (opt.lower.mean() > last_only.lower.mean()) and (last_only.lower >= crown.lower - 1e-5).all()
    cert = {m: V.certify(model, x, y, eps=0.05, method=m) for m in ("crown", "alpha-crown")}
    assert (cert["alpha-crown"] >= cert["crown"]).all()
    assert torch.equal(cert["alpha-crown"], opt.certified)  # the certification shortcut decides the same


def test_on_one_hidden_layer_alpha_crown_reaches_the_triangle_lp():
    """With one ReLU layer the lower bound is concave in the slopes and its maximum is the LP's (duality):
    a run that left them at CROWN's 0 / 1 would stay below it."""
    for seed in range(3):
        model = random_relu_mlp(seed, (1, 3, 3), (12,), 4, scale=1.5)
        x = torch.rand(2, 1, 3, 3, generator=torch.Generator().manual_seed(seed))
        C = V.margin_matrix(model(x).argmax(1), 4)
        b = V.alpha_crown(model, x, eps=0.15, C=C, steps=200, lr=0.1)
        crown = V.propagate(model, x, eps=0.15, C=C)
        for n in range(2):
            pre = [(l[n].double(), u[n].double()) for l, u in b.pre]
            lp = torch.tensor([lp_bound(model, x[n], c, eps=0.15, pre=pre) for c in C[n]], dtype=torch.float64)
            assert (b.lower[n].double() <= lp + 1e-4).all()  # the LP is the best a linear bound can do
            assert torch.allclose(b.lower[n].double(), lp, atol=2e-3), (b.lower[n], lp)
        assert (b.lower - crown.lower).max() > 1e-3  # and CROWN was not already there


def test_alpha_crown_refuses_bad_options(zoo_model, digits):
    model, x = zoo_model("digits-mlp"), digits[0][:2]
    with pytest.raises(ValueError, match="steps"):
        V.alpha_crown(model, x, eps=0.1, steps=-1)
    with pytest.raises(ValueError, match="lr"):
        V.alpha_crown(model, x, eps=0.1, lr=0)
    with pytest.raises(ValueError, match="optimises the intermediate bounds"):
        V.propagate(model, x, eps=0.1, method="alpha-crown", pre=V.propagate(model, x, eps=0.1).pre)
    with pytest.raises(ValueError, match="alpha-crown"):
        V.bounds(model, x, eps=0.1, method="beta-crown")
