"""The threat-model core (advlib.threat) against first principles, and the clear errors every
public attack gives for the bad inputs a new user sends."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import advlib
from advlib import attacks as A
from advlib import threat as T


# ---------------------------------------------------------------------------------------------- norms
@pytest.mark.parametrize("given_, name", [("linf", "linf"), ("inf", "linf"), (math.inf, "linf"), ("L2", "l2"),
                                          (2, "l2"), (2.0, "l2"), ("l1", "l1"), (1, "l1")])
def test_parse_norm_accepts_names_and_orders(given_, name):
    assert T.parse_norm(given_) == name


@pytest.mark.parametrize("bad", ["l3", 3, "max", None, True, -math.inf, "l0"])
def test_parse_norm_refuses_others_naming_the_choices(bad):
    with pytest.raises(ValueError, match=r"norm must be one of \('linf', 'l2', 'l1'\)"):
        T.parse_norm(bad, "who")


def test_parse_norm_allows_l0_for_distortions():
    assert T.parse_norm("l0", allowed=T.NORMS + ("l0",)) == "l0"


@pytest.mark.parametrize("norm", T.NORMS)
def test_dual_norm_is_the_support_function_of_the_unit_ball(norm):
    """Hölder with equality: max_{||d||_p <= 1} a.d = ||a||_q, attained at an explicit d."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 3, 4, generator=g)
    flat = a.flatten(1)
    if norm == "linf":
        d = flat.sign()
    elif norm == "l2":
        d = flat / flat.norm(dim=1, keepdim=True)
    else:
        d = torch.zeros_like(flat).scatter(1, flat.abs().argmax(1, keepdim=True), 1.0) * flat.sign()
    assert torch.allclose(T.lp_norm(d, norm), torch.ones(5), atol=1e-6)
    assert torch.allclose((a.flatten(1) * d).sum(1), T.dual_norm(a, norm), atol=1e-5)
    # and no random point of the unit ball does better
    r = torch.randn(2000, 12, generator=g)
    r = T.project(r * 3, 1.0, norm)
    assert ((flat @ r.T).amax(1) <= T.dual_norm(a, norm) + 1e-5).all()


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(T.NORMS), st.integers(0, 2**31 - 1), st.floats(0.0, 3.0))
def test_project_is_the_closest_point_of_the_ball(norm, seed, eps):
    g = torch.Generator().manual_seed(seed)
    delta = torch.randn(6, 1, 3, 3, generator=g) * 2
    p = T.project(delta, eps, norm)
    assert (T.lp_norm(p, norm) <= eps * (1 + 1e-5) + 1e-5).all()
    assert torch.allclose(T.project(p, eps, norm), p, atol=1e-5)  # idempotent
    # closer than any other point of the ball we try (the projection is the nearest point)
    others = T.project(delta + 0.5 * torch.randn(50, *delta.shape, generator=g), eps, norm)
    d_p = (delta - p).flatten(1).norm(dim=1)
    d_o = (delta - others).flatten(2).norm(dim=2)
    assert (d_p <= d_o + 1e-5).all()


@pytest.mark.parametrize("norm", T.NORMS)
def test_project_with_one_radius_per_example_equals_one_call_each(norm):
    g = torch.Generator().manual_seed(3)
    delta = torch.randn(7, 1, 4, 4, generator=g)
    eps = torch.linspace(0, 2, 7)
    batched = T.project(delta, eps, norm)
    single = torch.cat([T.project(delta[i:i + 1], float(eps[i]), norm) for i in range(7)])
    assert torch.allclose(batched, single, atol=1e-6)


def test_clip_box_keeps_the_point_in_the_box_and_only_shrinks():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(8, 1, 4, 4, generator=g).round()  # pixels at 0 and 1
    delta = torch.randn(8, 1, 4, 4, generator=g)
    d = T.clip_box(x, delta)
    assert ((x + d) >= 0).all() and ((x + d) <= 1).all()
    assert (d.abs() <= delta.abs() + 1e-7).all()


def test_margin_sign_says_whether_the_label_changed():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 5.0]])
    y = torch.tensor([0, 1])
    gap = T.margin(logits, y, kappa=math.inf)
    assert gap.tolist() == [2.0, -3.0]
    assert T.margin(logits, y, kappa=1.0).tolist() == [2.0, -1.0]
    t = torch.tensor([2, 2])  # targeted: < 0 once the target is on top
    assert T.margin(logits, t, targeted=True, kappa=math.inf).tolist() == [3.0, -3.0]


def test_chunks_cover_the_range_within_the_budget():
    for n, per, budget in [(10, 3, 7), (1, 10**9, 5), (100, 1, 100), (0, 5, 5), (17, 4, 16)]:
        parts = list(T.chunks(n, per, budget))
        assert [i for s in parts for i in range(n)[s]] == list(range(n))
        assert all(s.stop - s.start >= 1 for s in parts)
        assert all((s.stop - s.start) * per <= budget for s in parts) or per > budget


# --------------------------------------------------------------------------------------------- checks
@pytest.mark.parametrize("eps", [-0.1, math.nan, math.inf, "a", "0.1", None, True])
def test_check_budget_refuses_bad_radii(eps):
    with pytest.raises(ValueError, match="eps must be"):
        T.check_budget(eps, "who")


def test_check_budget_positive_refuses_zero():
    assert T.check_budget(0.0, "who") == 0.0
    with pytest.raises(ValueError, match="c must be a finite number > 0"):
        T.check_budget(0.0, "who", name="c", positive=True)


def test_check_budget_per_example():
    assert T.check_budget(torch.tensor([0.1, 0.2]), "who", 2).shape == (2,)
    with pytest.raises(ValueError, match=r"one value per input \(shape \(3,\)\)"):
        T.check_budget(torch.tensor([0.1, 0.2]), "who", 3)
    with pytest.raises(ValueError, match="finite and >= 0"):
        T.check_budget(torch.tensor([0.1, -1.0]), "who", 2)


# --------------------------------------------- bad inputs to every public attack: clear errors from advlib
@pytest.fixture(scope="module", params=["digits-cnn", "digits-mlp"])
def setup(request):
    model = advlib.zoo.load(request.param, "cpu")
    te = advlib.data.load("digits", "test")
    return model, te.x[:4], te.y[:4]


def test_a_model_without_a_recorded_input_shape_is_still_checked():
    """A plain nn.Sequential (no ``in_shape``): the forward pass itself is the check."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    x = torch.rand(3, 1, 8, 8)
    assert T.check_model_input(model, x, "who") == 10
    with pytest.raises(ValueError, match=r"does not accept inputs of shape \(1, 28, 28\) \(torch says"):
        T.check_model_input(model, torch.rand(3, 1, 28, 28), "who")
    with pytest.raises(ValueError, match=r"takes as one input, not a batch; .* x\[None\]"):
        T.check_model_input(model, torch.rand(8, 8), "who")


def _attacks():
    transform = A.random_transform()
    return {
        "fgsm": lambda m, x, y: A.fgsm(m, x, y, eps=0.1),
        "pgd": lambda m, x, y: A.pgd(m, x, y, eps=0.1, steps=2),
        "cw_l2": lambda m, x, y: A.cw_l2(m, x, y, steps=2, search_steps=1),
        "ead": lambda m, x, y: A.ead(m, x, y, steps=2, search_steps=1),
        "minimal_pgd": lambda m, x, y: A.minimal_pgd(m, x, y, steps=2, search_steps=1),
        "jsma": lambda m, x, y: A.jsma(m, x, y),
        "universal": lambda m, x, y: A.universal(m, x, y, eps=0.1, steps=2),
        "eot_pgd": lambda m, x, y: A.eot_pgd(m, x, y, eps=0.1, steps=2, transform=transform, samples=2),
        "minmax_ensemble": lambda m, x, y: A.minmax_ensemble([m, m], x, y, eps=0.1, steps=2),
    }


BAD_INPUTS = {
    "no batch dimension": (lambda x, y: (x[0], y[:1]), r"one input of this model, not of a batch; a single input "
                                                         r"needs a batch dimension: x\[None\]"),
    "wrong image size": (lambda x, y: (torch.nn.functional.interpolate(x, size=(28, 28)), y),
                         r"does not accept inputs of shape \(1, 28, 28\): it was built for \(1, 8, 8\)"),
    "NaN": (lambda x, y: (torch.where(torch.arange(x.numel()).view_as(x) == 5, math.nan, x), y),
            r"contains NaN or infinite values \(1 entries, in inputs \[0\]\)"),
    "empty batch": (lambda x, y: (x[:0], y[:0]), r"empty batch"),
    "uint8 image": (lambda x, y: ((x * 255).to(torch.uint8), y), r"floating point .* x\.float\(\) / 255"),
    "out of range": (lambda x, y: (x * 255, y), r"inputs must lie in \[0\.0, 1\.0\]"),
    "float labels": (lambda x, y: (x, y.float()), r"y must be a 1-D integer tensor"),
    "labels out of range": (lambda x, y: (x, y + 10), r"labels must lie in 0\.\.9"),
}


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=str)
@pytest.mark.parametrize("attack", _attacks(), ids=str)
def test_every_attack_refuses_bad_input_clearly(setup, attack, bad):
    model, x, y = setup
    make, message = BAD_INPUTS[bad]
    xb, yb = make(x.clone(), y.clone())
    with pytest.raises(ValueError, match=message) as info:
        _attacks()[attack](model, xb, yb)
    assert str(info.value).startswith(attack.split("_ensemble")[0]) or attack in str(info.value)
