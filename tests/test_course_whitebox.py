"""The checks of lecture 01 accept right answers, reject typical wrong ones with the right hint."""
import pytest
import torch
import torch.nn.functional as F

from advlib.course import ExerciseError, whitebox


def stub(*args):
    raise NotImplementedError


def _norms(d):
    return d.flatten(1).norm(dim=1).view(-1, *[1] * (d.dim() - 1))


def test_l2_projection_check(capsys):
    whitebox.check_project_l2(lambda d, e: d * torch.clamp(e / _norms(d).clamp(min=1e-12), max=1), strict=True)
    whitebox.check_project_l2(stub)
    assert "not attempted" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="stub"):
        whitebox.check_project_l2(stub, strict=True)
    with pytest.raises(ExerciseError, match="already inside"):  # always rescales onto the sphere
        whitebox.check_project_l2(lambda d, e: d * e / _norms(d).clamp(min=1e-12))
    with pytest.raises(ExerciseError, match="already inside"):  # one norm for the whole batch
        whitebox.check_project_l2(lambda d, e: d * min(1.0, e / max(d.norm().item(), 1e-12)))
    with pytest.raises(ExerciseError, match="norm"):  # forgets to project at all
        whitebox.check_project_l2(lambda d, e: d)
    with pytest.raises(ExerciseError, match="NaN"):  # divides by a zero norm
        whitebox.check_project_l2(lambda d, e: d * torch.clamp(e / _norms(d), max=1))


def _fgsm(sign=1.0, clip=True):
    def fgsm(model, x, y, eps):
        x = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
        out = x + sign * eps * g.sign()
        return (out.clamp(0, 1) if clip else out).detach()
    return fgsm


def test_fgsm_check():
    whitebox.check_fgsm(_fgsm(), strict=True)
    with pytest.raises(ExerciseError, match="down"):
        whitebox.check_fgsm(_fgsm(sign=-1.0))
    with pytest.raises(ExerciseError, match=r"\[0, 1\]"):
        whitebox.check_fgsm(_fgsm(clip=False))
    with pytest.raises(ExerciseError, match="sign"):  # the raw gradient instead of its sign

        def raw(model, x, y, eps):
            x = x.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
            return (x + eps * g / g.abs().max()).clamp(0, 1).detach()

        whitebox.check_fgsm(raw)
    with pytest.raises(ExerciseError, match="requires grad"):
        whitebox.check_fgsm(lambda m, x, y, e: x.clone().requires_grad_(True))


def _margin(z, t):
    return z.masked_fill(F.one_hot(t, z.shape[1]).bool(), -torch.inf).amax(1) - z.gather(1, t[:, None]).squeeze(1)


def test_targeted_margin_check():
    whitebox.check_targeted_margin(_margin, strict=True)
    with pytest.raises(ExerciseError, match="sign"):
        whitebox.check_targeted_margin(lambda z, t: -_margin(z, t))
    with pytest.raises(ExerciseError, match="leave the target out"):
        whitebox.check_targeted_margin(lambda z, t: z.amax(1) - z.gather(1, t[:, None]).squeeze(1))
    with pytest.raises(ExerciseError, match="shape"):
        whitebox.check_targeted_margin(lambda z, t: _margin(z, t)[:, None])


def test_unit_balls_figure():
    import matplotlib

    matplotlib.use("Agg")
    from advlib.attacks import project

    fig = whitebox.unit_balls([[1.5, 0.5], [0.2, 0.1]], project)
    assert len(fig.axes) == 3
