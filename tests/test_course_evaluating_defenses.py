"""Lecture 31's helpers: the exercise checks accept right answers (and the library's own pieces),
reject typical wrong ones with the right hint and report a stub as not attempted; the logit scaling
masks the cross-entropy's gradient and not the predictions; the checklist table."""
import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advlib.course import ExerciseError
from advlib.course import evaluating_defenses as ex
from advlib.defenses.apgd import dlr_loss
from advlib.defenses.transforms import bit_depth, bpda


def stub(*args):
    raise NotImplementedError


# ------------------------------------------------------------------------------------------ helpers
def test_scaled_logits_keeps_predictions_and_saturates_the_softmax():
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Flatten(), nn.Linear(16, 10)).eval()
    inner.in_shape = (1, 4, 4)
    scaled = ex.ScaledLogits(inner, 1e4)
    x = torch.rand(20, 1, 4, 4)
    y = inner(x).argmax(1)
    assert torch.equal(scaled(x).argmax(1), y) and scaled.in_shape == (1, 4, 4) and not scaled.training
    xs = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(scaled(xs), y, reduction="sum"), xs)
    xi = x.clone().requires_grad_(True)
    (gi,) = torch.autograd.grad(F.cross_entropy(inner(xi), y, reduction="sum"), xi)
    assert (g == 0).float().mean() > 0.9 and (gi != 0).all()  # the CE gradient vanishes in float32
    for bad in (0, -1.0, float("inf"), True):
        with pytest.raises(ValueError, match="positive finite"):
            ex.ScaledLogits(inner, bad)
    with pytest.raises(ValueError, match="nn.Module"):
        ex.ScaledLogits(lambda z: z, 2.0)


def test_checklist_table():
    table = ex.checklist_table([("reaches 0", [("1%", True), ("60%", False)])], ["pgd", "bit depth"])
    lines = table.splitlines()
    assert lines[0].split() == ["check", "pgd", "bit", "depth"]
    assert "ok" in lines[2] and "FAIL" in lines[2] and lines[2].index("ok") < lines[2].index("FAIL")
    with pytest.raises(ValueError, match="1 cells for 2 models"):
        ex.checklist_table([("x", [("1%", True)])], ["a", "b"])


# ------------------------------------------------------------------------------------------ exercise 1
def _st_right(transform):
    return lambda x: x + (transform(x) - x).detach()


def test_straight_through_check(capsys):
    ex.check_straight_through(_st_right, strict=True)
    ex.check_straight_through(lambda transform: bpda(transform), strict=True)  # the library's BPDA
    ex.check_straight_through(stub)
    assert "not attempted" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="stub"):
        ex.check_straight_through(stub, strict=True)
    cases = {
        "rounding's own gradient": lambda t: t,  # no BPDA at all: zero gradient through the rounding
        "forward value is x itself": lambda t: (lambda x: x),
        "does not require grad": lambda t: (lambda x: t(x).detach()),
        "transform's own": lambda t: t if t is ex._affine else _st_right(t),  # autograd through the affine map
        "plus the transform's own": lambda t: (lambda x: x - x.detach() + t(x)),
        "return a function": lambda t: t(torch.zeros(1, 1)),
        "in place": lambda t: functools.partial(_inplace, t=t),
    }
    for hint, answer in cases.items():
        with pytest.raises(ExerciseError, match=hint):
            ex.check_straight_through(answer)


def _inplace(x, t):
    out = x + (t(x) - x).detach()
    x.data.zero_()
    return out


# ------------------------------------------------------------------------------------------ exercise 2
def _eot_right(model, x, y, transform, samples, *, reduction="sum", scale=1.0, calls=1, mean_logits=False,
              summed=False):
    xr = x.repeat(samples, *[1] * (x.dim() - 1)).requires_grad_(True)
    yr = y.repeat(samples)
    if calls == 1:
        out = model(transform(xr))
    else:
        out = torch.cat([model(transform(part)) for part in xr.chunk(calls)])
    if mean_logits:
        logp = F.log_softmax(out, 1).view(samples, len(x), -1).mean(0)
        loss = F.nll_loss(logp, y, reduction="sum")
    else:
        loss = F.cross_entropy(out, yr, reduction=reduction)
    (g,) = torch.autograd.grad(loss, xr)
    return scale * g.view(samples, *x.shape).sum(0) / (1 if summed else samples)


def test_eot_gradient_check(capsys):
    ex.check_eot_gradient(_eot_right, strict=True)
    ex.check_eot_gradient(ex.reference_eot_gradient, strict=True)
    ex.check_eot_gradient(stub)
    assert "not attempted" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="stub"):
        ex.check_eot_gradient(stub, strict=True)
    cases = {
        "times too large": functools.partial(_eot_right, summed=True),
        "batch size": functools.partial(_eot_right, reduction="mean"),
        "wrong sign": functools.partial(_eot_right, scale=-1.0),
        "one call": functools.partial(_eot_right, calls=2),
        "averaged prediction": functools.partial(_eot_right, mean_logits=True),
        "never called": lambda model, x, y, transform, samples: torch.zeros_like(x),
        "shape of x": lambda model, x, y, transform, samples: _eot_right(model, x, y, transform, samples)[0],
        "requires grad": lambda model, x, y, transform, samples: _eot_right(model, x, y, transform,
                                                                            samples).requires_grad_(True),
        "per example": lambda model, x, y, transform, samples: _eot_right(model, x, y, transform, samples + 1),
        "not copies": lambda model, x, y, transform, samples: _eot_right(model, x * 0.9, y, transform, samples),
    }
    for hint, answer in cases.items():
        with pytest.raises(ExerciseError, match=hint):
            ex.check_eot_gradient(answer)


def test_reference_eot_gradient_is_the_gradient_of_the_mean_loss():
    """Against a loop over the draws, with a transform whose draws are replayed from one seed."""
    model = ex._linear_model()
    x, y = torch.rand(3, 1, 4, 4), torch.tensor([0, 2, 4])
    got = ex.reference_eot_gradient(model, x, y, ex._Recorder(7), 5)
    rec = ex._Recorder(7)
    xr = x.repeat(5, 1, 1, 1).requires_grad_(True)
    losses = F.cross_entropy(model(rec(xr)), y.repeat(5), reduction="none")
    want = torch.stack([torch.autograd.grad(losses[j * 3 + i], xr, retain_graph=True)[0][j * 3 + i]
                        for i in range(3) for j in range(5)]).view(3, 5, 1, 4, 4).mean(1)
    assert torch.allclose(got, want, atol=1e-6)
    with pytest.raises(ValueError, match="samples"):
        ex.reference_eot_gradient(model, x, y, ex._Recorder(7), 0)


def test_eot_gradient_check_sees_a_frozen_draw():
    """One draw used for every sample (the transform called on the batch once, its output repeated)
    draws too few transformations per example."""
    def frozen(model, x, y, transform, samples):
        xg = x.clone().requires_grad_(True)
        t = transform(xg).repeat(samples, *[1] * (x.dim() - 1))
        (g,) = torch.autograd.grad(F.cross_entropy(model(t), y.repeat(samples), reduction="sum"), xg)
        return g / samples
    with pytest.raises(ExerciseError, match="drew \\[1, 1, 1, 1\\] transformations"):
        ex.check_eot_gradient(frozen)


# ------------------------------------------------------------------------------------------ exercise 3
def _dlr_right(z, y):
    s = z.sort(1, descending=True).values
    z_y = z.gather(1, y[:, None]).squeeze(1)
    other = z.masked_fill(F.one_hot(y, z.shape[1]).bool(), -torch.inf).amax(1)
    return -(z_y - other) / (s[:, 0] - s[:, 2] + 1e-12)


def test_dlr_check(capsys):
    ex.check_dlr(_dlr_right, strict=True)
    ex.check_dlr(dlr_loss, strict=True)  # the library's APGD loss
    ex.check_dlr(stub)
    assert "not attempted" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="stub"):
        ex.check_dlr(stub, strict=True)

    def without_denominator(z, y):
        z_y = z.gather(1, y[:, None]).squeeze(1)
        return -(z_y - z.masked_fill(F.one_hot(y, z.shape[1]).bool(), -torch.inf).amax(1))

    def second_largest(z, y):
        s = z.sort(1, descending=True).values
        return without_denominator(z, y) / (s[:, 0] - s[:, 1] + 1e-12)

    def max_with_y(z, y):
        s = z.sort(1, descending=True).values
        return -(z.gather(1, y[:, None]).squeeze(1) - s[:, 0]) / (s[:, 0] - s[:, 2] + 1e-12)

    cases = {"sign is flipped": lambda z, y: -_dlr_right(z, y), "without the denominator": without_denominator,
             "third": second_largest, "leave out the true class": max_with_y,
             "shape": lambda z, y: _dlr_right(z, y)[:, None], "wrong value": lambda z, y: _dlr_right(z, y) + 0.1}
    for hint, answer in cases.items():
        with pytest.raises(ExerciseError, match=hint):
            ex.check_dlr(answer)


def test_dlr_check_tests_invariance():
    """A loss that matches on the check's logits but not once they are rescaled is caught."""
    def clipped(z, y):
        return _dlr_right(z, y) if z.abs().max() < 40 else torch.zeros(len(z), dtype=z.dtype)
    with pytest.raises(ExerciseError, match="multiplying the logits by 50"):
        ex.check_dlr(clipped)


def test_the_library_bit_depth_is_what_exercise_1_rounds():
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(ex._bits3(x), bit_depth(x, 3))
