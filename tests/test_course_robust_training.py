"""Lecture 30's helpers: the reference answers agree with the formulas (and with the library's own
TRADES term), and the exercise checks accept right answers, reject typical wrong ones with the
right hint and report a stub as not attempted."""
import pytest
import torch
import torch.nn.functional as F

from advlib.course import ExerciseError
from advlib.course import robust_training as ex
from advlib.defenses.trades import _kl as library_kl


def stub(*args):
    raise NotImplementedError


# ------------------------------------------------------------------------------------------ references
def test_reference_kl_is_the_kl_of_the_softmaxes_and_the_librarys():
    g = torch.Generator().manual_seed(0)
    z, z_adv = torch.randn(20, 10, generator=g, dtype=torch.float64) * 4, torch.randn(20, 10, generator=g,
                                                                                       dtype=torch.float64) * 4
    p, q = z.softmax(1), z_adv.softmax(1)
    want = (p * (p.log() - q.log())).sum(1)
    assert torch.allclose(ex.reference_kl(z, z_adv), want, atol=1e-10)
    assert torch.allclose(library_kl(z, z_adv), want, atol=1e-10)
    assert (ex.reference_kl(z, z_adv) >= 0).all()
    assert torch.allclose(ex.reference_kl(z, z + 3.0), torch.zeros(20, dtype=torch.float64), atol=1e-10)
    assert torch.isfinite(ex.reference_kl(z * 100, z_adv * 100)).all()


def test_reference_mixup_and_cat_update():
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(7, 1, 8, 8, generator=g), torch.randint(0, 10, (7,), generator=g)
    partner = torch.randperm(7, generator=g)
    x_mix, y_mix = ex.reference_mixup(x, y, 0.3, partner, 10)
    assert torch.allclose(x_mix, 0.3 * x + 0.7 * x[partner])
    assert torch.allclose(y_mix.sum(1), torch.ones(7)) and (y_mix >= 0).all()
    assert torch.allclose(y_mix[0, y[0]], torch.tensor(0.3 + 0.7 * float(y[partner[0]] == y[0])))
    eps_i = torch.tensor([0.0, 0.0, 0.05, 0.1, 0.1])
    correct = torch.tensor([True, False, False, True, False])
    assert torch.allclose(ex.reference_cat_update(eps_i, correct, 0.02, 0.1),
                          torch.tensor([0.02, 0.0, 0.03, 0.1, 0.08]))


# ------------------------------------------------------------------------------------------ exercise 1
def _kl_variant(kind):
    def trades_kl(z, z_adv):
        if kind == "reverse":
            z, z_adv = z_adv, z
        log_p, log_q = z.log_softmax(1), z_adv.log_softmax(1)
        if kind == "naive_log":
            log_p, log_q = z.softmax(1).log(), z_adv.softmax(1).log()
        if kind == "cross":
            return -(log_p.exp() * log_q).sum(1)
        out = (log_p.exp() * (log_p - log_q)).sum(1)
        if kind == "mean":
            return out.mean()
        if kind == "detached":
            return out.detach()
        if kind == "half":
            return out / 2
        if kind == "clean_detached":
            log_p = log_p.detach()
            out = (log_p.exp() * (log_p - log_q)).sum(1)
        return out
    return trades_kl


def test_trades_kl_check(capsys):
    ex.check_trades_kl(ex.reference_kl, strict=True)
    ex.check_trades_kl(_kl_variant("right"), strict=True)
    ex.check_trades_kl(lambda z, z_adv: F.kl_div(z_adv.log_softmax(1), z.softmax(1), reduction="none").sum(1),
                       strict=True)
    ex.check_trades_kl(stub)
    assert "not attempted" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="stub"):
        ex.check_trades_kl(stub, strict=True)
    for kind, hint in [("reverse", "not symmetric"), ("cross", "entropy"), ("mean", "one KL per example"),
                       ("naive_log", "log_softmax"), ("detached", "detached"), ("half", "Hint"),
                       ("clean_detached", "both")]:
        with pytest.raises(ExerciseError, match=hint):
            ex.check_trades_kl(_kl_variant(kind))


def test_trades_kl_check_rejects_a_wrong_shape():
    with pytest.raises(ExerciseError, match="shape"):
        ex.check_trades_kl(lambda z, z_adv: ex.reference_kl(z, z_adv)[:, None])


# ------------------------------------------------------------------------------------------ exercise 2
def _mixup_variant(kind):
    def mixup(x, y, lam, partner, n_classes):
        one_hot = F.one_hot(y, n_classes).to(x.dtype)
        x_mix = lam * x + (1 - lam) * x[partner]
        y_mix = lam * one_hot + (1 - lam) * one_hot[partner]
        if kind == "swapped_x":
            x_mix = (1 - lam) * x + lam * x[partner]
        if kind == "integer_labels":
            y_mix = lam * y + (1 - lam) * y[partner]
        if kind == "unmixed_labels":
            y_mix = one_hot
        if kind == "swapped_labels":
            y_mix = (1 - lam) * one_hot + lam * one_hot[partner]
        if kind == "in_place":
            x.mul_(lam).add_((1 - lam) * x[partner])
            x_mix = x
        if kind == "unnormalised":
            y_mix = one_hot + one_hot[partner]
        if kind == "list":
            return [x_mix, y_mix, lam]
        return x_mix, y_mix
    return mixup


def test_mixup_check(capsys):
    ex.check_mixup(ex.reference_mixup, strict=True)
    ex.check_mixup(_mixup_variant("right"), strict=True)
    ex.check_mixup(stub)
    assert "not attempted" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="stub"):
        ex.check_mixup(stub, strict=True)
    for kind, hint in [("swapped_x", "weighs the batch itself"), ("integer_labels", "not a digit"),
                       ("unmixed_labels", "partner's label"), ("swapped_labels", "weights are swapped"),
                       ("in_place", "in place"), ("unnormalised", "sum to"), ("list", "pair")]:
        with pytest.raises(ExerciseError, match=hint):
            ex.check_mixup(_mixup_variant(kind))


# ------------------------------------------------------------------------------------------ exercise 3
def _cat_variant(kind):
    def cat_update(eps_i, correct, eta, eps_max):
        if kind == "reversed":
            return torch.where(correct, eps_i - eta, eps_i + eta).clamp(0, eps_max)
        if kind == "no_lower":
            return torch.where(correct, eps_i + eta, eps_i - eta).clamp(max=eps_max)
        if kind == "no_upper":
            return torch.where(correct, eps_i + eta, eps_i - eta).clamp(min=0)
        if kind == "grow_only":
            return torch.where(correct, eps_i + eta, eps_i).clamp(0, eps_max)
        if kind == "in_place":
            eps_i[correct] += eta
            eps_i[~correct] -= eta
            return eps_i.clamp_(0, eps_max)
        if kind == "multiplicative":
            return torch.where(correct, eps_i * (1 + eta), eps_i * (1 - eta)).clamp(0, eps_max)
        return torch.where(correct, eps_i + eta, eps_i - eta).clamp(0, eps_max)
    return cat_update


def test_cat_update_check(capsys):
    ex.check_cat_update(ex.reference_cat_update, strict=True)
    ex.check_cat_update(_cat_variant("right"), strict=True)
    ex.check_cat_update(stub)
    assert "not attempted" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="stub"):
        ex.check_cat_update(stub, strict=True)
    for kind, hint in [("reversed", "reversed"), ("no_lower", "< 0"), ("no_upper", "> eps_max"),
                       ("grow_only", "shrink"), ("in_place", "in place"), ("multiplicative", "Hint")]:
        with pytest.raises(ExerciseError, match=hint):
            ex.check_cat_update(_cat_variant(kind))
    with pytest.raises(ExerciseError, match="shape"):
        ex.check_cat_update(lambda eps_i, correct, eta, eps_max: float(eps_max))


def test_cat_update_reference_is_the_librarys_rule():
    """The reference rule against cat_training's own: train one step of a tiny model with the recipe
    and replay its radius update from the model's predictions on the PGD points it trained on."""
    from advlib.defenses.cat import cat_training

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x, y = torch.rand(12, 1, 4, 4), torch.randint(0, 3, (12,))
    recipe = cat_training(0.2, eta=0.05, steps=2)
    index = torch.arange(12)
    recipe.state.grow(12)
    recipe.state.eps = torch.full((12,), 0.1)
    before = recipe.state.eps.clone()
    captured = {}
    forward = model.forward

    def spy(inp):
        out = forward(inp)
        captured["logits"] = out.detach()
        return out

    model.forward = spy
    recipe.loss(model, x, y, 0.0, index=index)
    correct = captured["logits"].argmax(1) == y  # the last forward pass is the one on the PGD points
    assert torch.allclose(recipe.state.eps, ex.reference_cat_update(before, correct, 0.05, 0.2), atol=1e-7)
