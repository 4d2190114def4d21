"""Universal perturbations, the simplex projection, min-max vs average ensemble attacks (Wang et
al. 2021) and EOT (Athalye et al. 2018), on the shipped digits models and one small extra model."""
import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import advlib
from advlib import attacks as A
from advlib.train import predict

N = N_DIGITS = 200  # test points of the strength checks (the shared `digits` fixture reads N_DIGITS)



@pytest.fixture(scope="module")
def extra_model():
    """A third, smaller model (64-32-10 MLP), trained here in a few seconds (seeded)."""
    tr = advlib.data.load("digits", "train")
    advlib.seed_everything(0)
    model = advlib.models.mlp((1, 8, 8), hidden=(32,), mean=[tr.x.mean().item()], std=[tr.x.std().item()])
    advlib.train.fit(model, tr, epochs=12, lr=3e-3, batch_size=64, progress=False)
    assert advlib.train.accuracy(model, *advlib.data.load("digits", "test")[:]) > 0.85
    return model


# ------------------------------------------------------------------------------------ simplex projection

def _project_brute_force(v):
    """The closest point of the simplex, by trying every support S: on S, w = v - theta with
    theta = (sum v_S - 1) / |S|; keep the feasible candidate nearest to v."""
    k = len(v)
    best, best_d = None, float("inf")
    for r in range(1, k + 1):
        for S in itertools.combinations(range(k), r):
            S = list(S)
            theta = (v[S].sum() - 1) / r
            w = torch.zeros_like(v)
            w[S] = v[S] - theta
            if (w >= -1e-12).all():
                d = (w - v).norm().item()
                if d < best_d:
                    best, best_d = w, d
    return best


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False, width=32), min_size=1, max_size=6))
def test_project_simplex_is_the_euclidean_projection(values):
    v = torch.tensor(values, dtype=torch.float64)
    w = A.project_simplex(v)
    assert (w >= 0).all() and abs(w.sum().item() - 1) < 1e-9
    assert torch.allclose(w, _project_brute_force(v), atol=1e-9)
    # the variational inequality that characterises a projection: <v - w, u - w> <= 0 on the simplex
    u = torch.distributions.Dirichlet(torch.ones(len(v), dtype=torch.float64)).sample((50,))
    assert ((u - w) @ (v - w) <= 1e-9).all()


def test_project_simplex_batched_and_idempotent():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(7, 3, 5, generator=g) * 3
    w = A.project_simplex(v)
    assert w.shape == v.shape and (w >= 0).all() and torch.allclose(w.sum(-1), torch.ones(7, 3))
    for i, j in itertools.product(range(7), range(3)):
        assert torch.allclose(w[i, j], A.project_simplex(v[i, j]))
    assert torch.allclose(A.project_simplex(w), w, atol=1e-6)
    onehot = torch.eye(4)
    assert torch.equal(A.project_simplex(onehot), onehot)
    assert torch.allclose(A.project_simplex(torch.zeros(4)), torch.full((4,), 0.25))
    with pytest.raises(ValueError, match="coordinate"):
        A.project_simplex(torch.zeros(3, 0))


# ----------------------------------------------------------------------------------- universal perturbation

@pytest.mark.parametrize("norm,eps", [("linf", 0.2), ("l2", 2.0)])
def test_universal_is_one_perturbation_in_the_ball(models, train_digits, digits, norm, eps):
    model = models["digits-mlp"]
    (x, y), (xt, _) = train_digits, digits
    delta = A.universal(model, x, y, eps=eps, steps=15, norm=norm)
    assert delta.shape == x.shape[1:] and not delta.requires_grad
    assert A.lp_norm(delta[None], norm).item() <= eps * (1 + 1e-5) + 1e-6
    x_adv = A.apply_universal(xt, delta)
    assert x_adv.shape == xt.shape and x_adv.min() >= 0 and x_adv.max() <= 1


@pytest.mark.parametrize("name", ["digits-cnn", "digits-mlp"])
def test_universal_fools_held_out_inputs_far_more_than_noise(models, train_digits, digits, name):
    model, eps = models[name], 0.25
    (x, y), (xt, yt) = train_digits, digits
    delta = A.universal(model, x, y, eps=eps, steps=20)
    fool = (predict(model, A.apply_universal(xt, delta)) != yt).float().mean().item()
    g = torch.Generator().manual_seed(0)
    noise = eps * (torch.randint(0, 2, delta.shape, generator=g) * 2 - 1).float()  # random corner of the ball
    fool_noise = (predict(model, A.apply_universal(xt, noise)) != yt).float().mean().item()
    with torch.no_grad():  # and it raises the loss on inputs it never saw
        ce = torch.nn.functional.cross_entropy
        assert ce(model(A.apply_universal(xt, delta)), yt) > ce(model(A.apply_universal(xt, noise)), yt)
    assert fool > fool_noise + 0.15, (fool, fool_noise)


def test_universal_minibatches_and_targeted(models, train_digits, digits):
    model = models["digits-mlp"]
    (x, _), (xt, yt) = train_digits, digits
    target = torch.full_like(xt[:, 0, 0, 0], 3, dtype=torch.long)
    delta = A.universal(model, x, target[: len(x)], eps=0.3, steps=30, targeted=True, batch_size=50)
    hit = (predict(model, A.apply_universal(xt, delta)) == 3)[yt != 3].float().mean().item()
    base = (predict(model, xt) == 3)[yt != 3].float().mean().item()
    assert hit > base + 0.3, (hit, base)


def test_apply_universal_shape_error():
    with pytest.raises(ValueError, match="shape of one input"):
        A.apply_universal(torch.rand(5, 1, 8, 8), torch.zeros(1, 7, 7))


def test_minmax_universal_across_groups(models, train_digits):
    model = models["digits-mlp"]
    x, y = train_digits
    xs, ys = [x[y == c] for c in range(3)], [y[y == c] for c in range(3)]
    res = A.minmax_universal(model, xs, ys, eps=0.2, steps=10)
    assert res.delta.shape == x.shape[1:] and res.delta.abs().max() <= 0.2 + 1e-6
    assert res.weights.shape == (3,) and abs(res.weights.sum().item() - 1) < 1e-5 and (res.weights >= 0).all()
    assert res.weight_history.shape == (10, 3)


# -------------------------------------------------------------------------------- min-max vs average

def test_minmax_beats_average_on_the_hardest_model(models, extra_model, digits):
    """Wang et al. (2021): at equal eps, steps and step size, the min-max weights raise the attack
    success on the model that is hardest to fool (the worst case over models)."""
    ms = [models["digits-cnn"], models["digits-mlp"], extra_model]
    x, y = digits
    ok = torch.stack([predict(m, x) == y for m in ms]).all(0)  # points every model gets right
    x, y = x[ok], y[ok]
    eps, steps = 0.15, 20
    avg = A.average_ensemble(ms, x, y, eps=eps, steps=steps)
    mm = A.minmax_ensemble(ms, x, y, eps=eps, steps=steps)
    for res in (avg, mm):
        assert res.delta.shape == x.shape and res.delta.abs().max() <= eps + 1e-6
        assert (x + res.delta).min() >= 0 and (x + res.delta).max() <= 1

    def fooled(delta):  # K x N
        return torch.stack([predict(m, x + delta) != y for m in ms]).float()

    f_avg, f_mm = fooled(avg.delta), fooled(mm.delta)
    worst_avg, worst_mm = f_avg.mean(1).min().item(), f_mm.mean(1).min().item()
    assert worst_mm >= worst_avg, (f_avg.mean(1), f_mm.mean(1))
    assert f_mm.min(0).values.mean() >= f_avg.min(0).values.mean()  # inputs that fool all three models
    # the weights: on the simplex, one row per input; the average keeps 1/K
    assert mm.weights.shape == (len(x), 3) and torch.allclose(mm.weights.sum(1), torch.ones(len(x)))
    assert (mm.weights >= 0).all() and mm.weight_history.shape == (steps, len(x), 3)
    assert torch.allclose(avg.weights, torch.full((3,), 1 / 3))


def test_minmax_shared_weights_and_targeted(models, digits):
    ms = [models["digits-cnn"], models["digits-mlp"]]
    x, y = digits
    x, y = x[:100], y[:100]
    target = (y + 1) % 10
    res = A.minmax_ensemble(ms, x, target, eps=0.3, steps=20, targeted=True, per_input=False)
    assert res.weights.shape == (2,) and abs(res.weights.sum().item() - 1) < 1e-5
    for m in ms:
        assert (predict(m, x + res.delta) == target).float().mean() > 0.6


def test_ensemble_input_errors(models, digits):
    x, y = digits
    ms = [models["digits-cnn"], models["digits-mlp"]]
    with pytest.raises(ValueError, match="empty"):
        A.minmax_ensemble([], x, y, eps=0.1, steps=5)
    with pytest.raises(ValueError, match="eps"):
        A.minmax_ensemble(ms, x, y, eps=-0.1, steps=5)
    with pytest.raises(ValueError, match="steps"):
        A.average_ensemble(ms, x, y, eps=0.1, steps=-1)
    with pytest.raises(ValueError, match="beta"):
        A.minmax_ensemble(ms, x, y, eps=0.1, steps=5, beta=-1)
    five = advlib.models.mlp((1, 8, 8), hidden=(8,), n_classes=5).eval()
    with pytest.raises(ValueError, match="same number of classes"):
        A.minmax_ensemble(ms + [five], x, y % 5, eps=0.1, steps=5)
    with pytest.raises(ValueError, match="eps"):
        A.universal(ms[0], x, y, eps=-1, steps=5)
    with pytest.raises(ValueError, match="steps"):
        A.universal(ms[0], x, y, eps=0.1, steps=2.5)
    with pytest.raises(ValueError, match="groups"):
        A.minmax_universal(ms[0], [], [], eps=0.1, steps=5)


# ------------------------------------------------------------------------------------------------ EOT

def test_random_transform_is_differentiable_and_valid():
    g = torch.Generator().manual_seed(0)
    t = A.random_transform(generator=g)
    x = torch.rand(6, 1, 8, 8, requires_grad=True)
    out = t(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert grad.abs().sum() > 0
    same = A.random_transform(max_shift=0, max_rotation=0, brightness=(1, 1))
    assert torch.allclose(same(x), x.detach(), atol=1e-5)  # the identity when nothing is drawn
    with pytest.raises(ValueError):
        A.random_transform(max_rotation=-1)
    with pytest.raises(ValueError, match="N x C x H x W"):
        t(torch.rand(8, 8))


def test_eot_examples_survive_transformations_far_more_than_pgd(models, digits):
    """Athalye et al. (2018): PGD examples that stop at the decision boundary (margin loss) are
    undone by small shifts, rotations and brightness changes; EOT examples of the same budget survive."""
    model = models["digits-cnn"]
    x, y = digits
    x, y = x[:100], y[:100]
    torch.manual_seed(0)
    t = A.random_transform(generator=torch.Generator().manual_seed(1))
    kw = dict(eps=0.15, steps=20, loss="cw")
    x_pgd = A.pgd(model, x, y, **kw)
    x_eot = A.eot_pgd(model, x, y, transform=t, samples=16, **kw)
    assert (x_eot - x).abs().max() <= 0.15 + 1e-6 and x_eot.min() >= 0 and x_eot.max() <= 1
    s_pgd = A.eot_success(model, x_pgd, y, t, samples=32).mean().item()
    s_eot = A.eot_success(model, x_eot, y, t, samples=32).mean().item()
    s_clean = A.eot_success(model, x, y, t, samples=32).mean().item()
    assert s_eot > s_pgd + 0.25 and s_pgd > s_clean, (s_clean, s_pgd, s_eot)


def test_eot_targeted_and_errors(models, digits):
    model = models["digits-cnn"]
    x, y = digits
    x, y = x[:100], y[:100]
    target = (y + 1) % 10
    t = A.random_transform(generator=torch.Generator().manual_seed(2))
    x_eot = A.eot_pgd(model, x, target, eps=0.3, steps=20, transform=t, samples=8, targeted=True)
    hit = A.eot_success(model, x_eot, target, t, samples=16, targeted=True)
    assert hit.shape == (len(x),) and hit.mean() > 0.6
    with pytest.raises(ValueError, match="samples"):
        A.eot_pgd(model, x, y, eps=0.1, steps=5, transform=t, samples=0)
    with pytest.raises(ValueError, match="eps"):
        A.eot_pgd(model, x, y, eps=-0.1, steps=5, transform=t)
