"""The checks of lecture 03 accept right answers, reject typical wrong ones with the right hint, and
report a stub as not attempted; the random baseline of its universal-perturbation sweep."""
import pytest
import torch
from torch import nn

import advlib.attacks as A
from advlib.course import ExerciseError
from advlib.course import universal as ex


def stub(*args):
    raise NotImplementedError


def _simplex(v):  # the sorting algorithm of Duchi et al. (2008), written out for one vector
    u = v.sort(descending=True).values
    css = u.cumsum(0) - 1
    rho = int(((u - css / torch.arange(1, len(v) + 1, dtype=v.dtype)) > 0).sum())
    return (v - css[rho - 1] / rho).clamp(min=0)


def test_simplex_check(capsys):
    ex.check_project_simplex(_simplex, strict=True)
    ex.check_project_simplex(A.project_simplex, strict=True)  # the library's batched version agrees
    ex.check_project_simplex(stub)
    assert "not attempted" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="stub"):
        ex.check_project_simplex(stub, strict=True)
    with pytest.raises(ExerciseError, match="sum to|not the closest point"):  # clip, then renormalise
        ex.check_project_simplex(lambda v: v.clamp(min=0) / v.clamp(min=0).sum().clamp(min=1e-12))
    with pytest.raises(ExerciseError, match="not the closest point"):  # a softmax lies on the simplex too
        ex.check_project_simplex(lambda v: v.softmax(0))
    with pytest.raises(ExerciseError, match="sum to"):  # only the non-negativity constraint
        ex.check_project_simplex(lambda v: v.clamp(min=0))
    with pytest.raises(ExerciseError, match="negative weights"):  # only the sum constraint (the hyperplane)
        ex.check_project_simplex(lambda v: v - (v.sum() - 1) / len(v))
    with pytest.raises(ExerciseError, match="shape"):
        ex.check_project_simplex(lambda v: _simplex(v)[None])


def _step(sign=1.0, gamma_term=True, project=True):
    def weight_step(w, f, beta, gamma):
        grad = f - gamma * (w - 1.0 / len(w)) if gamma_term else f
        out = w + sign * beta * grad
        return _simplex(out) if project else out
    return weight_step


def test_weight_step_check(capsys):
    ex.check_weight_step(_step(), strict=True)
    ex.check_weight_step(stub)
    assert "not attempted" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="stub"):
        ex.check_weight_step(stub, strict=True)
    with pytest.raises(ExerciseError, match=r"go \*up\*"):  # descent on the weights instead of ascent
        ex.check_weight_step(_step(sign=-1.0))
    with pytest.raises(ExerciseError, match="the gradient of"):  # forgets the regulariser's gradient
        ex.check_weight_step(_step(gamma_term=False))
    with pytest.raises(ExerciseError, match="not on the simplex"):  # forgets to project onto the simplex
        ex.check_weight_step(_step(project=False))
    with pytest.raises(ExerciseError, match="shape"):  # a number instead of a weight vector
        ex.check_weight_step(lambda w, f, beta, gamma: _step()(w, f, beta, gamma).sum())


def _fool_rate(clip=True, only_correct=True):
    def fool_rate(model, x, y, delta):
        with torch.no_grad():
            ok = model(x).argmax(1) == y if only_correct else torch.ones_like(y, dtype=torch.bool)
            x_adv = (x + delta).clamp(0, 1) if clip else x + delta
            pred = model(x_adv).argmax(1)
        return (pred[ok] != y[ok]).float().mean().item()
    return fool_rate


def test_fool_rate_check(capsys):
    ex.check_fool_rate(_fool_rate(), strict=True)
    ex.check_fool_rate(stub)
    assert "not attempted" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="stub"):
        ex.check_fool_rate(stub, strict=True)
    with pytest.raises(ExerciseError, match="clip"):  # lets pixels leave [0, 1]
        ex.check_fool_rate(_fool_rate(clip=False))
    with pytest.raises(ExerciseError, match="count only the inputs the model gets right"):
        ex.check_fool_rate(_fool_rate(only_correct=False))
    with pytest.raises(ExerciseError, match="float"):  # one flag per input instead of a fraction
        ex.check_fool_rate(lambda m, x, y, d: m((x + d).clamp(0, 1)).argmax(1) != y)


def _linear_model(seed=0):
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(3, 16, generator=g))
        model[1].bias.zero_()
    x = torch.rand(40, 1, 4, 4, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:5] = (y[:5] + 1) % 3  # a few inputs the model gets wrong: they must not count
    return model, x, y


def test_random_sign_fool_rates_are_success_rates_of_random_sign_patterns():
    model, x, y = _linear_model()
    rates = ex.random_sign_fool_rates(model, x, y, 0.3, 6, torch.Generator().manual_seed(7))
    assert rates.shape == (6,) and ((rates >= 0) & (rates <= 1)).all()
    signs = torch.randint(0, 2, (6, *x.shape[1:]), generator=torch.Generator().manual_seed(7)) * 2 - 1
    want = torch.tensor([A.success_rate(model, x, A.apply_universal(x, 0.3 * s.float()), y) for s in signs])
    assert torch.allclose(rates, want)
    assert rates.std() > 0  # different sign patterns fool different inputs
    again = ex.random_sign_fool_rates(model, x, y, 0.3, 6, torch.Generator().manual_seed(7))
    assert torch.equal(rates, again)
    assert (ex.random_sign_fool_rates(model, x, y, 0.0, 3) == 0).all()


def test_random_sign_fool_rates_refuses_bad_arguments():
    model, x, y = _linear_model()
    with pytest.raises(ValueError, match="draws"):
        ex.random_sign_fool_rates(model, x, y, 0.1, 0)
    with pytest.raises(ValueError, match="eps"):
        ex.random_sign_fool_rates(model, x, y, -0.1, 3)
