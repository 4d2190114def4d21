"""Lecture 50's helpers: the reference answers agree with the formulas, by hand, and with the library
(:func:`advlib.attacks.shrink` in the PN's box, :func:`advlib.attacks.group_shrink`,
:func:`advlib.attacks.group_sparsity`, :func:`advlib.attacks.group_ids`), and the exercise checks accept
right answers, reject typical wrong ones with the right hint and report a stub as not attempted."""
import pytest
import torch

from advlib.attacks import group_ids, group_shrink, group_sparsity, shrink
from advlib.course import ExerciseError
from advlib.course import explanations as ex


def stub(*args, **kwargs):
    raise NotImplementedError


# ------------------------------------------------------------------------------------------ references
def test_reference_pn_step_by_hand_and_as_the_librarys_shrink_in_the_pn_box():
    x0 = torch.tensor([[[[0.0, 0.0, 0.0, 0.5, 0.5]]]])
    allowed = torch.tensor([[[[True, True, True, False, True]]]])
    z = torch.tensor([[[[0.05, 0.6, 1.8, 0.9, 0.2]]]])
    got = ex.reference_pn_step(z, x0, 0.1, allowed)
    # within beta -> x0; up by more -> z - beta; past 1 -> 1; not allowed -> x0; below x0 -> x0
    assert torch.allclose(got, torch.tensor([[[[0.0, 0.5, 1.0, 0.5, 0.5]]]]))
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(6, 1, 8, 8, generator=g) * (torch.rand(6, 1, 8, 8, generator=g) < 0.5)
    for allowed in (x0 == 0, torch.rand(6, 1, 8, 8, generator=g) < 0.5):
        z = x0 + torch.randn(6, 1, 8, 8, generator=g)
        for beta in (0.0, 0.1, 0.5):
            hi = torch.where(allowed, torch.ones_like(x0), x0)
            assert torch.allclose(ex.reference_pn_step(z, x0, beta, allowed), shrink(z, x0, beta, lo=x0, hi=hi))


def test_reference_group_shrink_by_hand_and_as_the_library():
    ids = torch.tensor([[[0, 0], [1, 1]]])
    a = torch.tensor([[[[3.0, 4.0], [0.3, 0.4]]]])  # norms 5 and 0.5
    got = ex.reference_group_shrink(a, ids, 1.0)
    assert torch.allclose(got, torch.tensor([[[[2.4, 3.2], [0.0, 0.0]]]]))  # 5 -> 4 along (3, 4) / 5; 0.5 -> 0
    assert torch.equal(ex.reference_group_shrink(torch.zeros(2, 1, 2, 2), ids, 0.5), torch.zeros(2, 1, 2, 2))
    g = torch.Generator().manual_seed(1)
    for shape, size, t in (((1, 8, 8), 2, 0.3), ((3, 7, 5), 3, 0.8), ((1, 28, 28), 2, 0.1)):
        a = 0.3 * torch.randn(3, *shape, generator=g)
        ids = group_ids(shape, size)
        assert torch.equal(ex.tile_ids(shape, size), ids)
        assert torch.allclose(ex.reference_group_shrink(a, ids, t), group_shrink(a, ids, t), atol=1e-6)


def test_reference_group_sparsity_by_hand_and_as_the_library():
    ids = ex.tile_ids((1, 4, 4), 2)
    d = torch.zeros(2, 1, 4, 4)
    d[0, 0, 0, 0], d[0, 0, 3, 3] = 0.2, -0.3  # groups 0 and 3 touched
    assert ex.reference_group_sparsity(d, ids, 1e-3).tolist() == [0.5, 0.0]
    g = torch.Generator().manual_seed(2)
    d = torch.randn(5, 1, 8, 8, generator=g) * (torch.rand(5, 1, 8, 8, generator=g) < 0.2)
    ids = group_ids((1, 8, 8), 2)
    assert torch.allclose(ex.reference_group_sparsity(d, ids), group_sparsity(d, ids).double())


def test_checks_accept_the_references_and_the_library(capsys):
    ex.check_pn_step(ex.reference_pn_step, strict=True)
    ex.check_pn_step(lambda z, x0, b, al: shrink(z, x0, b, lo=x0, hi=torch.where(al, torch.ones_like(x0), x0)),
                     strict=True)
    ex.check_group_shrink(ex.reference_group_shrink, strict=True)
    ex.check_group_shrink(group_shrink, strict=True)
    ex.check_group_sparsity(ex.reference_group_sparsity, strict=True)
    ex.check_group_sparsity(group_sparsity, strict=True)
    assert capsys.readouterr().out.count("correct") == 6


def test_checks_report_a_stub_and_fail_it_when_strict(capsys):
    for check in (ex.check_pn_step, ex.check_group_shrink, ex.check_group_sparsity):
        check(stub)
        assert "not attempted yet" in capsys.readouterr().out
        with pytest.raises(ExerciseError, match="stub"):
            check(stub, strict=True)


# ------------------------------------------------------------------------------------------ exercise 1
def _pn_step(kind):
    def pn_step(z, x0, beta, allowed):
        d = z - x0
        if kind == "ead":  # EAD's symmetric operator on [0, 1], no mask
            return torch.where(d > beta, (z - beta).clamp(max=1), torch.where(d < -beta, (z + beta).clamp(min=0), x0))
        if kind == "ead_masked":
            out = torch.where(d > beta, (z - beta).clamp(max=1), torch.where(d < -beta, (z + beta).clamp(min=0), x0))
            return torch.where(allowed, out, x0)
        if kind == "no_mask":
            return torch.where(d > beta, (z - beta).clamp(max=1), x0)
        if kind == "hard":
            return torch.where(allowed & (d > beta), z.clamp(max=1), x0)
        if kind == "no_clip":
            return torch.where(allowed & (d > beta), z - beta, x0)
        if kind == "project_only":
            return torch.where(allowed, torch.minimum(torch.maximum(z, x0), torch.ones_like(z)), x0)
        if kind == "towards_zero":  # right too: in the box [x0, 1] with x0 >= 0 it is the same step
            soft = z.sign() * (z.abs() - beta).clamp(min=0)
            return torch.where(allowed, torch.maximum(soft, x0).clamp(max=1), x0)
        if kind == "in_place":
            z.clamp_(max=1)
        if kind == "shape":
            return torch.where(allowed & (d > beta), (z - beta).clamp(max=1), x0)[0]
        if kind == "list":
            return torch.where(allowed & (d > beta), (z - beta).clamp(max=1), x0).tolist()
        if kind == "off":  # thresholds at 2 beta
            return torch.where(allowed & (d > 2 * beta), (z - beta).clamp(max=1), x0)
        return torch.where(allowed & (z - x0 > beta), (z - beta).clamp(max=1), x0)
    return pn_step


def test_check_pn_step_accepts_right_answers(capsys):
    ex.check_pn_step(_pn_step("right"), strict=True)
    ex.check_pn_step(_pn_step("towards_zero"), strict=True)  # soft-threshold, then project onto [x0, hi]
    assert capsys.readouterr().out.count("correct") == 2


@pytest.mark.parametrize("kind, hint", [("ead", "EAD's operator"), ("ead_masked", "lower end is x0"),
                                        ("no_mask", "mask is ignored"), ("hard", "hard threshold"),
                                        ("no_clip", "clip the survivors at 1"), ("project_only", "projection onto"),
                                        ("in_place", "in place"),
                                        ("shape", "expected a tensor of shape"), ("list", "return a tensor"),
                                        ("off", "not the PN step")])
def test_check_pn_step_rejects_wrong_answers_with_the_right_hint(kind, hint):
    with pytest.raises(ExerciseError, match=hint):
        ex.check_pn_step(_pn_step(kind))


# ------------------------------------------------------------------------------------------ exercise 2
def _shrink(kind):
    def shrink_groups(a, ids, t):
        flat, gid = a.flatten(1), ids.flatten()
        sq = torch.zeros(len(a), int(gid.max()) + 1, dtype=a.dtype).index_add_(1, gid, flat.pow(2))
        norm = sq.sqrt()
        if kind == "elementwise":
            return a.sign() * (a.abs() - t).clamp(min=0)
        if kind == "nan":  # max(||a_G|| - t, 0) / ||a_G||: 0 / 0 on a group that is all zero
            return (flat * ((norm - t).clamp(min=0) / norm)[:, gid]).view_as(a)
        safe = norm.clamp_min(1e-12)
        if kind == "no_clamp":
            return (flat * (1 - t / safe)[:, gid]).view_as(a)
        if kind == "squared":
            return (flat * (1 - t / safe.pow(2)).clamp(min=0)[:, gid]).view_as(a)
        if kind == "whole":
            return a * (1 - t / flat.norm(dim=1).clamp_min(1e-12)).clamp(min=0).view(-1, 1, 1, 1)
        if kind == "pooled":
            pooled = sq.sum(0).sqrt().clamp_min(1e-12)
            return (flat * (1 - t / pooled).clamp(min=0)[gid]).view_as(a)
        if kind == "hard":
            return (flat * (norm > t)[:, gid]).view_as(a)
        if kind == "inverted":
            return (flat * (1 - norm / t).clamp(min=0)[:, gid]).view_as(a) if t > 0 else a.clone()
        if kind == "in_place":
            a.mul_(1.0)
            a[:, :, 0, 0] = 0
        if kind == "shape":
            return (flat * (1 - t / safe).clamp(min=0)[:, gid])
        if kind == "off":
            return (flat * (1 - 0.5 * t / safe).clamp(min=0)[:, gid]).view_as(a)
        return (flat * (1 - t / safe).clamp(min=0)[:, gid]).view_as(a)
    return shrink_groups


def _loop_answer(a, ids, t):
    out = a.clone()
    for g in ids.unique():
        member = (ids == g).expand_as(a)
        norm = a.pow(2).where(member, torch.zeros_like(a)).flatten(1).sum(1).sqrt()
        scale = torch.where(norm > t, 1 - t / norm.clamp_min(1e-12), torch.zeros_like(norm))
        out = torch.where(member, a * scale.view(-1, 1, 1, 1), out)
    return out


def test_check_group_shrink_accepts_right_answers(capsys):
    ex.check_group_shrink(_shrink("right"), strict=True)
    ex.check_group_shrink(_loop_answer, strict=True)
    assert capsys.readouterr().out.count("correct") == 2


@pytest.mark.parametrize("kind, hint", [("elementwise", "on its own"), ("nan", "NaN"), ("no_clamp", "clamped at 0"),
                                        ("squared", "not by its square"), ("whole", "whole input"),
                                        ("pooled", "per example"), ("hard", "soft, not a hard"),
                                        ("inverted", r"not 1 - \|\|a_G\|\|_2 / t"), ("in_place", "in place"),
                                        ("shape", "expected a tensor of shape"), ("off", "not the block")])
def test_check_group_shrink_rejects_wrong_answers_with_the_right_hint(kind, hint):
    with pytest.raises(ExerciseError, match=hint):
        ex.check_group_shrink(_shrink(kind))


# ------------------------------------------------------------------------------------------ exercise 3
def _sparsity(kind):
    def sparsity(delta, ids, tol):
        flat, gid = delta.flatten(1), ids.flatten()
        n_groups = int(gid.max()) + 1
        norms = torch.zeros(len(delta), n_groups, dtype=delta.dtype).index_add_(1, gid, flat.pow(2)).sqrt()
        if kind == "pixels":
            return (flat.abs() > tol).float().mean(1)
        if kind == "count":
            return (norms > tol).float().sum(1)
        if kind == "over_features":
            return (norms > tol).float().sum(1) / flat.shape[1]
        if kind == "any_pixel":
            peak = torch.zeros(len(delta), n_groups).scatter_reduce_(1, gid.expand(len(delta), -1), flat.abs(),
                                                                     "amax")
            return (peak > tol).float().mean(1)
        if kind == "geq":
            return (norms >= tol).float().mean(1)
        if kind == "untouched":
            return (norms <= tol).float().mean(1)
        if kind == "batch":
            return (norms > tol).float().mean()
        if kind == "float":
            return float((norms > tol).float().mean())
        if kind == "column":
            return (norms > tol).float().mean(1, keepdim=True)
        if kind == "in_place":
            delta.abs_()
        if kind == "off":
            return (norms > 2 * tol).float().mean(1)
        return (norms > tol).float().mean(1)
    return sparsity


def test_check_group_sparsity_accepts_a_right_answer(capsys):
    ex.check_group_sparsity(_sparsity("right"), strict=True)
    assert "correct" in capsys.readouterr().out


@pytest.mark.parametrize("kind, hint", [("pixels", "fraction of \\*features\\*"), ("count", "divide by the number"),
                                        ("over_features", "not of features"), ("any_pixel", "its L2 norm exceeds"),
                                        ("geq", "strictly greater"), ("untouched", "left untouched"),
                                        ("batch", "whole batch"), ("float", "return a tensor"),
                                        ("column", "expected a tensor of shape"), ("in_place", "in place"),
                                        ("off", "Hint: the L2 norm")])
def test_check_group_sparsity_rejects_wrong_answers_with_the_right_hint(kind, hint):
    with pytest.raises(ExerciseError, match=hint):
        ex.check_group_sparsity(_sparsity(kind))
