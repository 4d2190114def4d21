"""The checks of lecture 43 accept right answers and reject typical wrong ones with the right hint; the
search-tree figure draws every node of a real search."""
import math

import matplotlib
import pytest
import torch

import advlib.verify as V
from advlib.course import ExerciseError, complete
from advlib.verify.exact import random_relu_mlp

matplotlib.use("Agg")


def stub(*args):
    raise NotImplementedError


def test_babsr_score_check(capsys):
    complete.check_babsr_score(complete.reference_babsr_score, strict=True)
    complete.check_babsr_score(stub)
    assert "not attempted" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="stub"):
        complete.check_babsr_score(stub, strict=True)
    with pytest.raises(ExerciseError, match="-inf"):  # every neuron scored
        complete.check_babsr_score(lambda lam, l, u: (-lam).clamp(min=0) * u * (-l) / (u - l))
    with pytest.raises(ExerciseError, match="negative lam"):  # |lam| instead of its negative part
        complete.check_babsr_score(lambda lam, l, u: torch.where((l < 0) & (u > 0), lam.abs() * u * (-l) / (u - l),
                                                                 torch.full_like(l, -math.inf)))
    with pytest.raises(ExerciseError, match="off"):  # the chord's slope instead of its intercept
        complete.check_babsr_score(lambda lam, l, u: torch.where((l < 0) & (u > 0), (-lam).clamp(min=0) * u / (u - l),
                                                                 torch.full_like(l, -math.inf)))


def _ascend_clamped(bound, alpha, steps, lr):  # the torch >= 2.14 pitfall: the parameter read through clamp
    alpha = alpha.clone().requires_grad_(True)
    opt, best = torch.optim.Adam([alpha], lr=lr), None
    for _ in range(steps + 1):
        v = bound(alpha.clamp(0, 1))
        best = v.detach() if best is None else torch.maximum(best, v.detach())
        opt.zero_grad()
        (-v.sum()).backward()
        opt.step()
    return best


def _ascend_unprojected(bound, alpha, steps, lr):
    alpha = alpha.clone().requires_grad_(True)
    opt, best = torch.optim.Adam([alpha], lr=lr), None
    for _ in range(steps + 1):
        v = bound(alpha)
        best = v.detach() if best is None else torch.maximum(best, v.detach())
        opt.zero_grad()
        (-v.sum()).backward()
        opt.step()
    return best


def _ascend_last(bound, alpha, steps, lr):  # the last iterate, not the best
    alpha = alpha.clone().requires_grad_(True)
    opt = torch.optim.Adam([alpha], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        (-bound(alpha).sum()).backward()
        opt.step()
        with torch.no_grad():
            alpha.clamp_(0, 1)
    return bound(alpha).detach() - 1e-3


def test_ascend_check(capsys):
    complete.check_ascend(complete.reference_ascend, strict=True)
    complete.check_ascend(stub)
    assert "not attempted" in capsys.readouterr().out
    for wrong, hint in ((_ascend_clamped, "never left its start"), (_ascend_unprojected, "outside"),
                        (_ascend_last, "best value")):
        with pytest.raises(ExerciseError, match=hint) as err:
            complete.check_ascend(wrong)
        assert "requires_grad_" not in str(err.value)  # a hint, not the solution


def test_search_tree_figure_draws_every_node():
    import matplotlib.pyplot as plt

    model = random_relu_mlp(4, (1, 4, 4), (16, 16, 16), 4, scale=2.0)
    x = torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(4))[2:3]
    r = V.branch_and_bound(model, x, model(x).argmax(1), eps=0.06)
    fig, ax = plt.subplots()
    complete.search_tree_figure(r.trees[0], ax, "t")
    drawn = sum(len(c.get_offsets()) for c in ax.collections)
    assert r.domains[0] > 0 and drawn == len(r.trees[0])
    plt.close(fig)
