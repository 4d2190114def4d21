"""Minimum-distance attacks (C&W-L2, EAD, minimal PGD, JSMA), their shared search, and the checks
of lecture 02."""
import math

import pytest
import torch
from torch import nn

import advlib
from advlib.attacks import cw_l2, distortion, ead, jsma, lp_norm, margin, minimal_pgd, pgd, shrink
from advlib.attacks.cw import BinarySearch, EarlyAbort
from advlib.course import ExerciseError, optimisation


class Counted(nn.Module):
    """Counts the forward passes through a model and the inputs they evaluate."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls, self.rows = model, 0, 0

    def forward(self, x):
        self.calls, self.rows = self.calls + 1, self.rows + len(x)
        return self.model(x)


@pytest.fixture(scope="module")
def points(mlp):
    """The first 100 test digits the MLP classifies correctly (96 of them)."""
    te = advlib.data.load("digits", "test")
    x, y = te.x[:100], te.y[:100]
    with torch.no_grad():
        ok = mlp(x).argmax(1) == y
    return x[ok], y[ok]


@pytest.fixture(scope="module")
def cw_run(mlp, points):
    x, y = points
    return cw_l2(mlp, x, y, steps=100)  # the defaults: lr 0.05, 9 search steps


@pytest.fixture(scope="module")
def ead_run(mlp, points):
    x, y = points
    return ead(mlp, x, y, steps=100, rule="en")


def _succ(model, x_adv, y, targeted=False):
    with torch.no_grad():
        pred = model(x_adv).argmax(1)
    return pred == y if targeted else pred != y


def _valid(x_adv, x):
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert not x_adv.requires_grad and x_adv.grad_fn is None
    assert x_adv.min() >= 0 and x_adv.max() <= 1


# --- C&W ---------------------------------------------------------------------------------------

def test_cw_l2_breaks_almost_every_point(mlp, points, cw_run):
    x, y = points
    _valid(cw_run, x)
    assert _succ(mlp, cw_run, y).float().mean() >= 0.99
    assert distortion(x, cw_run)["l2"] < 1.5


def test_cw_moves_pixels_at_0_and_1(mlp, points, cw_run):
    """torchattacks' pitfall: atanh(+-1) is infinite and those pixels never move. Ours do."""
    x, _ = points
    sat = (x == 0) | (x == 1)
    assert sat.float().mean() > 0.4
    assert ((cw_run - x).abs() > 0.05)[sat].sum() > 100


def test_cw_l2_objective_decreases(mlp, points):
    x, y = points[0][:20], points[1][:20]
    hist, counted = [], Counted(mlp).eval()
    cw_l2(counted, x, y, steps=40, search_steps=1, abort_early=False, history=hist)
    assert len(hist) == 40 and hist[0].shape == (20,)
    # one forward pass per Adam step (its logits also judge the iterate) and one for the input check
    assert counted.calls == 40 + 1 and counted.rows == 40 * 20 + 1
    first, last = hist[0], torch.stack(hist[-5:]).mean(0)
    assert (last < first).float().mean() >= 0.9 and last.sum() < 0.5 * first.sum()
    # the first iterate is x itself: the objective is c * margin
    with torch.no_grad():
        assert torch.allclose(first, margin(mlp(x), y), atol=1e-3)


def test_cw_l2_binary_search_finds_smaller_perturbations(mlp, points):
    x, y = points[0][:30], points[1][:30]
    one = cw_l2(mlp, x, y, steps=50, lr=0.05, c=100.0, search_steps=1)
    many = cw_l2(mlp, x, y, steps=50, lr=0.05, c=100.0, search_steps=5)
    s1, s5 = _succ(mlp, one, y), _succ(mlp, many, y)
    both = s1 & s5
    assert s5.sum() >= s1.sum() and both.sum() >= 25
    assert lp_norm(many - x, 2)[both].median() < lp_norm(one - x, 2)[both].median()


def test_cw_l2_targeted_and_kappa(mlp, points):
    x, y = points[0][:40], points[1][:40]
    t = (y + 1) % 10
    x_adv = cw_l2(mlp, x, t, steps=100, lr=0.05, search_steps=5, targeted=True, kappa=2.0)
    _valid(x_adv, x)
    ok = _succ(mlp, x_adv, t, targeted=True)
    assert ok.float().mean() >= 0.9
    with torch.no_grad():  # kappa: the target wins by at least kappa
        assert (margin(mlp(x_adv[ok]), t[ok], targeted=True, kappa=float("inf")) <= -2.0 + 1e-4).all()


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 0.8), ("l1", 3.0)])
def test_minimal_pgd_smallest_radius(mlp, points, norm, eps):
    """Per example: adversarial where it says so, inside the box and the ball it reports, and the
    radius no larger than that of a fixed-eps PGD run (same steps and loss) that succeeded."""
    x, y = points[0][:40], points[1][:40]
    x_adv = minimal_pgd(mlp, x, y, norm=norm, steps=20, search_steps=8)
    _valid(x_adv, x)
    ok, radius = _succ(mlp, x_adv, y), lp_norm(x_adv - x, norm)
    assert ok.float().mean() >= 0.95
    assert (radius[~ok] == 0).all()  # a failure is returned unchanged
    fixed = pgd(mlp, x, y, eps=eps, steps=20, norm=norm, random_start=False, loss="cw")
    fixed_ok = _succ(mlp, fixed, y)
    assert fixed_ok.sum() >= 10  # the comparison is not vacuous
    assert (ok[fixed_ok]).all() and (radius[fixed_ok] <= eps + 1e-5).all()
    # and it is a smallest radius: PGD in a clearly smaller ball fails on most of these points
    shrunk = pgd(mlp, x[ok], y[ok], eps=0.5 * radius[ok], steps=20, norm=norm, random_start=False, loss="cw")
    assert _succ(mlp, shrunk, y[ok]).float().mean() < 0.5


def test_minimal_pgd_drops_points_it_cannot_break(mlp, points):
    x, y = points[0][:8], points[1][:8]
    counted = Counted(mlp).eval()
    x_adv = minimal_pgd(counted, x, y, steps=5, search_steps=4, eps_max=1e-3)  # far too small to break any
    assert torch.equal(x_adv, x) and not _succ(mlp, x_adv, y).any()
    # one round at eps_max, then nothing is left to bisect: 1 input check + (1 check + 5 steps) + 1 evaluation
    assert counted.calls == 1 + 1 + 5 + 1


def test_minimal_pgd_targeted(mlp, points):
    x, y = points[0][:30], points[1][:30]
    t = (y + 1) % 10
    x_adv = minimal_pgd(mlp, x, t, norm="l2", steps=20, search_steps=6, targeted=True)
    ok = _succ(mlp, x_adv, t, targeted=True)
    assert ok.float().mean() >= 0.9
    assert (lp_norm(x_adv - x, "l2")[ok] > 0).all()


def test_cw_l2_matches_foolbox(mlp, points):
    """Foolbox's C&W (the strongest reference, REFERENCES.md) with its default binary search and our
    budget: same steps and step size. Foolbox returns an all-zero image where it fails (and counts
    it as a success when the blank image is misclassified): those are excluded as failures."""
    import foolbox

    x, y = points[0][:60], points[1][:60]
    c_ours, c_theirs = Counted(mlp).eval(), Counted(mlp).eval()
    ours = cw_l2(c_ours, x, y, steps=100, lr=0.05)
    _, theirs, _ = foolbox.attacks.L2CarliniWagnerAttack(steps=100, stepsize=0.05)(
        foolbox.PyTorchModel(c_theirs, bounds=(0, 1)), x, y, epsilons=None)
    theirs = torch.as_tensor(theirs)
    assert c_ours.calls <= c_theirs.calls and c_ours.rows <= c_theirs.rows  # no more model evaluations
    s_ours = _succ(mlp, ours, y)
    s_theirs = _succ(mlp, theirs, y) & (theirs.flatten(1).abs().sum(1) > 0)
    assert s_ours.sum() >= s_theirs.sum()
    both = s_ours & s_theirs
    assert lp_norm(ours - x, 2)[both].median() <= 1.05 * lp_norm(theirs - x, 2)[both].median()


# --- EAD ---------------------------------------------------------------------------------------

def test_shrink_operator():
    x0 = torch.tensor([0.0, 0.5, 0.5, 0.5, 1.0, 0.2])
    z = torch.tensor([0.3, 0.52, 0.9, 0.1, 1.4, -0.5])
    assert torch.allclose(shrink(z, x0, 0.1), torch.tensor([0.2, 0.5, 0.8, 0.2, 1.0, 0.0]))
    assert torch.equal(shrink(z, x0, 0.0), z.clamp(0, 1))


def test_ead_breaks_points_and_is_sparser_than_cw(mlp, points, cw_run, ead_run):
    x, y = points
    _valid(ead_run, x)
    s_ead, s_cw = _succ(mlp, ead_run, y), _succ(mlp, cw_run, y)
    assert s_ead.float().mean() >= 0.97 and s_ead.float().mean() >= s_cw.float().mean() - 0.02
    d_ead, d_cw = distortion(x, ead_run, s_ead), distortion(x, cw_run, s_cw)
    assert d_ead["l1"] < d_cw["l1"] and d_ead["l0"] < d_cw["l0"]


def test_ead_l1_rule_gives_smaller_l1(mlp, points, ead_run):
    x, y = points
    l1_run = ead(mlp, x, y, steps=100, rule="l1")
    s = _succ(mlp, l1_run, y) & _succ(mlp, ead_run, y)
    assert lp_norm(l1_run - x, 1)[s].median() <= lp_norm(ead_run - x, 1)[s].median()


def test_ead_objective_decreases(mlp, points):
    x, y = points[0][:20], points[1][:20]
    hist = []
    ead(mlp, x, y, steps=40, search_steps=1, abort_early=False, history=hist)
    assert len(hist) == 40 and hist[0].shape == (20,)
    with torch.no_grad():
        start = margin(mlp(x), y)  # at x_0 = x the objective is c * f(x)
    last = torch.stack(hist[-5:]).mean(0)
    assert (last < start).float().mean() >= 0.9 and last.sum() < 0.5 * start.sum()


def test_ead_targeted(mlp, points):
    x, y = points[0][:40], points[1][:40]
    t = (y + 3) % 10
    x_adv = ead(mlp, x, t, steps=50, search_steps=5, targeted=True)
    _valid(x_adv, x)
    assert _succ(mlp, x_adv, t, targeted=True).float().mean() >= 0.9


def test_ead_aborts_early_when_converged(mlp, points):
    """C&W's early abort: rounds end before `steps` once the objective stalls, with far less work
    and a result as good (the same or smaller median L0, L1 and L2)."""
    x, y = points
    full, short = Counted(mlp).eval(), Counted(mlp).eval()
    x_full = ead(full, x, y, steps=100, search_steps=3, abort_early=False)
    hist = []
    x_short = ead(short, x, y, steps=100, search_steps=3, history=hist)
    assert len(hist) < 3 * 100 and short.rows < 0.6 * full.rows
    assert torch.isnan(torch.stack(hist)).any()  # examples that converged left their round
    s_full, s_short = _succ(mlp, x_full, y), _succ(mlp, x_short, y)
    assert s_short.sum() >= s_full.sum()
    d_full, d_short = distortion(x, x_full, s_full), distortion(x, x_short, s_short)
    assert all(d_short[k] <= d_full[k] for k in ("l0", "l1", "l2")), (d_short, d_full)


def test_ead_no_more_work_than_torchattacks(mlp, points, ead_run):
    """At the settings of benchmarks/attacks.py (beta, steps, search steps, lr, kappa equal;
    torchattacks' default initial c and abort), advlib's EAD evaluates the model on no more inputs,
    in no more forward passes, and is at least as sparse (median L1 and L0) as torchattacks' EADEN."""
    import torchattacks

    x, y = points
    ours_m, theirs_m = Counted(mlp).eval(), Counted(mlp).eval()
    ours = ead(ours_m, x, y, steps=100)
    theirs = torchattacks.EADEN(theirs_m, kappa=0, lr=0.01, binary_search_steps=9, max_iterations=100,
                                beta=1e-2)(x, y)
    assert torch.equal(ours, ead_run)  # deterministic: the counting wrapper changes nothing
    assert ours_m.calls <= theirs_m.calls and ours_m.rows <= theirs_m.rows, (ours_m.rows, theirs_m.rows)
    s_ours, s_theirs = _succ(mlp, ours, y), _succ(mlp, theirs, y)
    assert s_ours.float().mean() >= s_theirs.float().mean()
    d_ours, d_theirs = distortion(x, ours, s_ours), distortion(x, theirs, s_theirs)
    assert d_ours["l1"] <= d_theirs["l1"] and d_ours["l0"] <= d_theirs["l0"], (d_ours, d_theirs)


def test_ead_at_least_as_good_as_torchattacks_at_c1(mlp, points, ead_run):
    """Both rules against torchattacks started at advlib's initial constant c = 1."""
    import torchattacks

    x, y = points
    for rule, attack in (("en", torchattacks.EADEN), ("l1", torchattacks.EADL1)):
        ours = ead_run if rule == "en" else ead(mlp, x, y, steps=100, rule="l1")
        theirs = attack(mlp, kappa=0, lr=0.01, binary_search_steps=9, max_iterations=100, beta=1e-2,
                        initial_const=1.0)(x, y)
        s_ours, s_theirs = _succ(mlp, ours, y), _succ(mlp, theirs, y)
        assert s_ours.float().mean() >= s_theirs.float().mean() - 0.02
        assert distortion(x, ours, s_ours)["l1"] <= distortion(x, theirs, s_theirs)["l1"], rule


# --- the shared search -------------------------------------------------------------------------

def _logits_for(wins: list[bool]) -> torch.Tensor:
    """Logits of 2 classes for label 0: class 0 leads (no success) or class 1 leads by 1."""
    return torch.tensor([[0.0, 1.0] if w else [1.0, 0.0] for w in wins])


def test_binary_search_on_c():
    x, y = torch.zeros(3, 2), torch.zeros(3, dtype=torch.long)
    s = BinarySearch(x, y, 1.0)
    assert torch.equal(s.best, x) and torch.isinf(s.best_dist).all() and not s.found.any()
    cand = torch.ones(3, 2)
    ok = s.consider(cand, _logits_for([True, False, True]), torch.tensor([2.0, 1.0, 3.0]))
    assert ok.tolist() == [True, False, True] and s.found.tolist() == [True, False, True]
    assert torch.equal(s.best[0], cand[0]) and torch.equal(s.best[1], x[1])
    s.consider(2 * cand[2:], _logits_for([True]), torch.tensor([5.0]), rows=torch.tensor([2]))  # farther: kept out
    assert s.best_dist.tolist() == [2.0, math.inf, 3.0] and torch.equal(s.best[2], cand[2])
    s.next_round()  # success: hi = c = 1, bisect [0, 1]; failure: lo = 1, no upper bound yet: c * 10
    assert s.value.tolist() == [0.5, 10.0, 0.5] and s.lo.tolist() == [0.0, 1.0, 0.0]
    assert not s.hit.any()
    s.consider(cand, _logits_for([False, True, True]), torch.tensor([1.0, 0.5, 2.5]))
    s.next_round()
    assert s.value.tolist() == [0.75, 5.5, 0.25]  # 0 fails at 0.5: (0.5 + 1) / 2; 1 succeeds at 10: (1 + 10) / 2
    assert s.best_dist.tolist() == [2.0, 0.5, 2.5]


def test_binary_search_kappa_and_targeted():
    x, y = torch.zeros(2, 2), torch.tensor([1, 1])
    s = BinarySearch(x, y, 1.0, kappa=0.5, targeted=True)
    logits = torch.tensor([[0.0, 0.4], [0.0, 0.6]])  # the target 1 leads by 0.4 and by 0.6
    assert s.consider(x, logits, torch.zeros(2)).tolist() == [False, True]


def test_binary_search_on_a_radius():
    x, y = torch.zeros(2, 2), torch.zeros(2, dtype=torch.long)
    s = BinarySearch(x, y, 1.0, hi=1.0)  # minimal_pgd: bisect from the start
    s.consider(x, _logits_for([True, False]), torch.tensor([0.3, 0.2]))
    s.next_round(upper=s.best_dist)  # a success bounds the radius by the norm actually used
    assert s.hi.tolist() == pytest.approx([0.3, 1.0]) and s.value.tolist() == pytest.approx([0.15, 1.0])


def test_early_abort():
    a = EarlyAbort(3, steps=20, device="cpu")  # checks every 2 steps, from step 0
    rows = torch.arange(3)
    assert torch.equal(a.check(0, torch.tensor([10.0, 10.0, -10.0]), rows), rows)
    assert torch.equal(a.check(1, torch.tensor([99.0, 99.0, 99.0]), rows), rows)  # not a checkpoint
    # 0 improved by 10%, 1 by less than 0.01%, 2 (negative objective) improved by 1%
    rows = a.check(2, torch.tensor([9.0, 9.9995, -10.1]), rows)
    assert rows.tolist() == [0, 2]
    # the batch total (8 + 9.9995 - 10.1) fell by more than 0.01%: the round goes on
    assert a.check(4, torch.tensor([8.0, -10.1]), rows).tolist() == [0]
    # example 2 stalled; now the total does not fall: the round ends
    assert len(a.check(6, torch.tensor([8.0]), torch.tensor([0]))) == 0


# --- JSMA --------------------------------------------------------------------------------------

@pytest.mark.parametrize("gamma", [0.1, 0.3])
def test_jsma_targeted_budget_and_direction(mlp, points, gamma):
    x, y = points[0][:50], points[1][:50]
    t = (y + 1) % 10
    x_adv = jsma(mlp, x, t, gamma=gamma, targeted=True)
    _valid(x_adv, x)
    changed = (x_adv != x).flatten(1).sum(1)
    assert (changed <= gamma * x[0].numel()).all()
    assert (x_adv >= x).all()  # theta = +1: pixels only increase
    if gamma == 0.3:
        assert _succ(mlp, x_adv, t, targeted=True).float().mean() >= 0.7


def test_jsma_untargeted(mlp, points):
    x, y = points[0][:50], points[1][:50]
    for targets, floor in (("all", 0.95), ("next", 0.6)):
        x_adv = jsma(mlp, x, y, gamma=0.2, targets=targets, theta=0.5)
        _valid(x_adv, x)
        assert ((x_adv - x) >= 0).all() and ((x_adv != x).flatten(1).sum(1) <= 0.2 * 64).all()
        assert _succ(mlp, x_adv, y).float().mean() >= floor


# --- input checks ------------------------------------------------------------------------------

@pytest.mark.parametrize("attack", [cw_l2, ead, jsma, minimal_pgd])
def test_bad_inputs_are_refused(mlp, points, attack):
    x, y = points[0][:4], points[1][:4]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attack(mlp, x * 2 - 0.5, y)
    with pytest.raises(ValueError, match="batch"):
        attack(mlp, x[0, 0, 0], y)
    with pytest.raises(ValueError, match="label"):
        attack(mlp, x, y[:2])


@pytest.mark.parametrize("kwargs, match", [({"c": -1.0}, "c must"), ({"c": 0.0}, "c must"), ({"steps": -3}, "steps"),
                                           ({"search_steps": 0}, "search_steps"), ({"kappa": -1.0}, "kappa"),
                                           ({"lr": 0.0}, "lr")])
def test_bad_parameters_are_refused(mlp, points, kwargs, match):
    x, y = points[0][:4], points[1][:4]
    for attack in (cw_l2, ead):
        with pytest.raises(ValueError, match=match):
            attack(mlp, x, y, **kwargs)


def test_bad_attack_specific_parameters(mlp, points):
    x, y = points[0][:4], points[1][:4]
    with pytest.raises(ValueError, match="rule"):
        ead(mlp, x, y, rule="l2")
    with pytest.raises(ValueError, match="beta"):
        ead(mlp, x, y, beta=-0.1)
    with pytest.raises(ValueError, match="gamma"):
        jsma(mlp, x, y, gamma=1.5)
    with pytest.raises(ValueError, match="theta"):
        jsma(mlp, x, y, theta=-1.0)
    with pytest.raises(ValueError, match="eps"):
        minimal_pgd(mlp, x, y, eps_max=-1.0)
    with pytest.raises(ValueError, match="norm"):
        minimal_pgd(mlp, x, y, norm="l3")
    with pytest.raises(ValueError, match="search_steps"):
        minimal_pgd(mlp, x, y, search_steps=0)


# --- the exercise checks of lecture 02 ---------------------------------------------------------

def _right_margin(logits, y, kappa):
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], -torch.inf).amax(1)
    return (z_y - other).clamp(min=-kappa)


def _right_shrink(z, x0, beta):
    d = z - x0
    return torch.where(d > beta, z - beta, torch.where(d < -beta, z + beta, x0)).clamp(0, 1)


def _stub(*args):
    raise NotImplementedError


def test_cw_margin_check(capsys):
    optimisation.check_cw_margin(_right_margin, strict=True)
    optimisation.check_cw_margin(lambda z, y, k: margin(z, y, kappa=k), strict=True)  # the library's
    optimisation.check_cw_margin(_stub)
    assert "not attempted" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="stub"):
        optimisation.check_cw_margin(_stub, strict=True)
    with pytest.raises(ExerciseError, match="other"):  # max over all classes, y included
        optimisation.check_cw_margin(lambda z, y, k: (z.gather(1, y[:, None]).squeeze(1) - z.amax(1)).clamp(min=-k))
    with pytest.raises(ExerciseError, match="clamped"):
        optimisation.check_cw_margin(lambda z, y, k: _right_margin(z, y, k).clamp(min=0))
    with pytest.raises(ExerciseError, match="sign"):
        optimisation.check_cw_margin(lambda z, y, k: -_right_margin(z, y, k))
    with pytest.raises(ExerciseError, match="shape"):
        optimisation.check_cw_margin(lambda z, y, k: _right_margin(z, y, k).sum())


def test_shrink_check(capsys):
    optimisation.check_shrink(_right_shrink, strict=True)
    optimisation.check_shrink(shrink, strict=True)  # the library's
    optimisation.check_shrink(_stub)
    assert "not attempted" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="towards 0"):
        optimisation.check_shrink(lambda z, x0, b: (z.sign() * (z.abs() - b).clamp(min=0)).clamp(0, 1))
    with pytest.raises(ExerciseError, match=r"\[0, 1\]"):
        optimisation.check_shrink(lambda z, x0, b: torch.where((z - x0).abs() > b, z - b * (z - x0).sign(), x0))
    with pytest.raises(ExerciseError, match="back to x0"):
        optimisation.check_shrink(lambda z, x0, b: (z - b * (z - x0).sign()).clamp(0, 1))
    with pytest.raises(ExerciseError, match="move by beta"):
        optimisation.check_shrink(lambda z, x0, b: torch.where((z - x0).abs() > b, z, x0).clamp(0, 1))


def _right_pair(alpha, beta, domain):
    a, b = alpha[:, None] + alpha[None, :], beta[:, None] + beta[None, :]
    ok = (a > 0) & (b < 0) & domain[:, None] & domain[None, :] & ~torch.eye(len(alpha), dtype=torch.bool)
    score = torch.where(ok, a * -b, torch.zeros_like(a))
    return None if score.max() <= 0 else divmod(int(score.argmax()), len(alpha))


def test_best_pair_check(capsys):
    optimisation.check_best_pair(_right_pair, strict=True)
    optimisation.check_best_pair(_stub)
    assert "not attempted" in capsys.readouterr().out

    def best_singles(alpha, beta, domain):  # the two best pixels on their own are not the best pair
        s = torch.where((alpha > 0) & (beta < 0) & domain, alpha * -beta, torch.zeros_like(alpha))
        return tuple(s.argsort(descending=True)[:2].tolist())

    with pytest.raises(ExerciseError, match="best pair"):
        optimisation.check_best_pair(best_singles)
    with pytest.raises(ExerciseError, match="same pixel"):
        optimisation.check_best_pair(lambda a, b, d: (lambda r: r if r is None else (r[0], r[0]))(_right_pair(a, b, d)))
    with pytest.raises(ExerciseError, match="domain"):
        optimisation.check_best_pair(lambda a, b, d: _right_pair(a, b, torch.ones_like(d)))
    with pytest.raises(ExerciseError, match="None"):
        optimisation.check_best_pair(lambda a, b, d: _right_pair(a, b, d) or (0, 1))
