"""The checks of lectures 40 and 41 accept right answers, reject typical wrong ones with the right hint."""
import pytest
import torch
from torch import nn

import advlib.verify as V
from advlib.course import ExerciseError, verification


def stub(*args):
    raise NotImplementedError


# ------------------------------------------------------------------------------------------------ exercise 1
def _interval(W, b, l, u):
    c, r = (l + u) / 2, (u - l) / 2
    return c @ W.T + b - r @ W.abs().T, c @ W.T + b + r @ W.abs().T


def test_interval_linear_check(capsys):
    verification.check_interval_linear(_interval, strict=True)
    verification.check_interval_linear(stub)
    assert "not attempted" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="stub"):
        verification.check_interval_linear(stub, strict=True)
    with pytest.raises(ExerciseError, match="negative weight"):  # the endpoints pushed through W
        verification.check_interval_linear(lambda W, b, l, u: (l @ W.T + b, u @ W.T + b))
    with pytest.raises(ExerciseError, match="exceed"):  # (upper, lower)
        verification.check_interval_linear(lambda W, b, l, u: _interval(W, b, l, u)[::-1])
    with pytest.raises(ExerciseError, match="bias"):
        verification.check_interval_linear(lambda W, b, l, u: tuple(t - b for t in _interval(W, b, l, u)))
    with pytest.raises(ExerciseError, match="wider"):  # sound but loose: both ends of the input everywhere
        verification.check_interval_linear(lambda W, b, l, u: (_interval(W, b, l, u)[0] - 1, _interval(W, b, l, u)[1]))
    with pytest.raises(ExerciseError, match="too narrow"):
        verification.check_interval_linear(lambda W, b, l, u: ((l + u) / 2 @ W.T + b,) * 2)
    with pytest.raises(ExerciseError, match="x @ W.T"):  # W x with the batch in the wrong place
        verification.check_interval_linear(lambda W, b, l, u: tuple(t.T for t in _interval(W, b, l, u)))
    with pytest.raises(ExerciseError, match="pair"):
        verification.check_interval_linear(lambda W, b, l, u: _interval(W, b, l, u)[0])


# ------------------------------------------------------------------------------------------------ exercise 2
def _crown(l, u, lower=None):
    unstable = (l < 0) & (u > 0)
    slope = torch.where(unstable, u / (u - l).clamp(min=1e-12), (l >= 0).to(l.dtype))
    b_up = torch.where(unstable, -slope * l, torch.zeros_like(l))
    a_lo = torch.where(unstable, lower(l, u) if lower else (u > -l).to(l.dtype), slope)
    return a_lo, torch.zeros_like(l), slope, b_up


def test_crown_relu_check(capsys):
    verification.check_crown_relu(_crown, strict=True)
    verification.check_crown_relu(lambda l, u: V.relaxation(nn.ReLU(), l, u, "crown"), strict=True)  # the library's
    verification.check_crown_relu(stub)
    assert "not attempted" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="Fast-Lin"):
        verification.check_crown_relu(lambda l, u: V.relaxation(nn.ReLU(), l, u, "fastlin"))
    with pytest.raises(ExerciseError, match="wrong way round"):
        verification.check_crown_relu(lambda l, u: _crown(l, u, lambda l, u: (u <= -l).to(l.dtype)))
    with pytest.raises(ExerciseError, match="NaN"):  # the unstable formula applied to every neuron

        def everywhere(l, u):
            s = u / (u - l)
            return (u > -l).to(l.dtype), torch.zeros_like(l), s, -s * l

        verification.check_crown_relu(everywhere)
    with pytest.raises(ExerciseError, match="upper line falls below"):  # the intercept's sign flipped
        verification.check_crown_relu(lambda l, u: (*_crown(l, u)[:3], -_crown(l, u)[3]))
    with pytest.raises(ExerciseError, match="rises above"):  # the upper line twice
        verification.check_crown_relu(lambda l, u: (*_crown(l, u)[2:], *_crown(l, u)[2:]))
    with pytest.raises(ExerciseError, match="not the tightest"):  # a sound but loose upper line
        verification.check_crown_relu(lambda l, u: (*_crown(l, u)[:3], _crown(l, u)[3] + 1))
    with pytest.raises(ExerciseError, match="not CROWN's"):  # slope 1/2 is sound, but nobody's choice
        verification.check_crown_relu(lambda l, u: _crown(l, u, lambda l, u: torch.full_like(l, 0.5)))
    with pytest.raises(ExerciseError, match="one value per neuron"):
        verification.check_crown_relu(lambda l, u: (0.0, 0.0, *_crown(l, u)[2:]))


# ------------------------------------------------------------------------------------------------ exercise 3
def _radius(W, b, x, y, norm, q=None, keep_wrong=False, only_runner_up=False):
    q = q or {"linf": 1, "l2": 2, "l1": float("inf")}[norm]
    z = x @ W.T + b
    gap = z.gather(1, y[:, None]) - z  # N x K
    dw = torch.linalg.vector_norm(W[y][:, None, :] - W[None], ord=q, dim=2)  # N x K
    ratio = (gap / dw).masked_fill(torch.nn.functional.one_hot(y, len(b)).bool(), torch.inf)
    if only_runner_up:
        j = z.masked_fill(torch.nn.functional.one_hot(y, len(b)).bool(), -torch.inf).argmax(1)
        r = ratio.gather(1, j[:, None]).squeeze(1)
    else:
        r = ratio.amin(1)
    return r if keep_wrong else r.clamp(min=0)


def test_linear_certified_radius_check(capsys):
    verification.check_linear_certified_radius(_radius, strict=True)
    verification.check_linear_certified_radius(stub)
    assert "not attempted" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="dual"):  # the ball's own norm instead of its dual
        verification.check_linear_certified_radius(
            lambda W, b, x, y, norm: _radius(W, b, x, y, norm, q={"linf": float("inf"), "l2": 2, "l1": 1}[norm]))
    with pytest.raises(ExerciseError, match="misclassified"):
        verification.check_linear_certified_radius(lambda W, b, x, y, norm: _radius(W, b, x, y, norm, keep_wrong=True))
    with pytest.raises(ExerciseError, match=r"minimum over \*every\*"):
        verification.check_linear_certified_radius(
            lambda W, b, x, y, norm: _radius(W, b, x, y, norm, only_runner_up=True))
    with pytest.raises(ExerciseError, match="NaN"):  # j = y left in the minimum: 0 / 0

        def with_y(W, b, x, y, norm):
            z = x @ W.T + b
            q = {"linf": 1, "l2": 2, "l1": float("inf")}[norm]
            dw = torch.linalg.vector_norm(W[y][:, None, :] - W[None], ord=q, dim=2)
            return ((z.gather(1, y[:, None]) - z) / dw).amin(1).clamp(min=0)

        verification.check_linear_certified_radius(with_y)
    with pytest.raises(ExerciseError, match="shape"):
        verification.check_linear_certified_radius(lambda W, b, x, y, norm: _radius(W, b, x, y, norm)[:, None])


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_the_reference_radius_is_the_librarys_certified_radius(norm):
    """For a linear model CROWN is exact: the check's closed form and the library's bisection agree
    (on points far enough from the edges of [0, 1] that the image box plays no part)."""
    g = torch.Generator().manual_seed(0)
    W, b = torch.randn(4, 10, generator=g), torch.randn(4, generator=g) * 0.3
    x = 0.4 + 0.2 * torch.rand(30, 10, generator=g)
    y = (x @ W.T + b).argmax(1)
    y[:3] = (y[:3] + 1) % 4
    model = nn.Sequential(nn.Linear(10, 4)).eval()
    with torch.no_grad():
        model[0].weight.copy_(W), model[0].bias.copy_(b)
    want = verification.reference_radius(W, b, x, y, norm).float()
    assert (want[:3] == 0).all() and (want[3:] > 0).all()
    inside = want < 0.4  # the ball stays inside the box in every norm
    assert inside.sum() >= 10
    got = V.certified_radius(model, x, y, norm=norm, steps=20, hi=0.5)
    assert torch.allclose(got[inside], want[inside], atol=1e-5)


def test_relaxation_figure():
    import matplotlib

    matplotlib.use("Agg")
    fig = verification.relaxation_figure(V.relaxation)
    assert len(fig.axes) == 4


def test_the_references_pass_their_checks_and_match_the_library():
    """What `or_reference` puts in place of an unattempted exercise is right, and is the library's answer."""
    verification.check_interval_linear(verification.reference_interval_linear, strict=True)
    verification.check_crown_relu(verification.reference_crown_relu, strict=True)
    verification.check_linear_certified_radius(verification.reference_radius, strict=True)
    g = torch.Generator().manual_seed(0)
    l = torch.randn(5, 3, 7, generator=g)
    u = l + 3 * torch.rand(5, 3, 7, generator=g)
    for ours, lib in zip(verification.reference_crown_relu(l, u), V.relaxation(nn.ReLU(), l, u, "crown")):
        assert ours.shape == l.shape and torch.allclose(ours, lib)
    layer = nn.Sequential(nn.Linear(6, 4)).eval()
    x = torch.rand(8, 6, generator=g)
    lo, hi = verification.reference_interval_linear(layer[0].weight, layer[0].bias, (x - 0.1).clamp(min=0),
                                                    (x + 0.1).clamp(max=1))
    lib_lo, lib_hi = V.bounds(layer, x, eps=0.1, method="ibp")
    assert torch.allclose(lo, lib_lo, atol=1e-6) and torch.allclose(hi, lib_hi, atol=1e-6)
