"""advlib.applications.cem (contrastive explanations) and EAD's generalised solver from first
principles: on real digits the pertinent negative adds a few pixels (delta >= 0, only where
allowed) and changes digits-cnn's class by the margin kappa, the pertinent positive is a part of the
input (0 <= PP <= x) that keeps the class on its own; elastic_net with EAD's centre and box is EAD
bit for bit, the projected shrinkage with tensor bounds is its three cases coordinate by
coordinate, and the auto-encoder term pulls the explanations towards the data."""
import copy

import pytest
import torch

from advlib.applications import autoencoder, explain, pertinent_negative, pertinent_positive
from advlib.attacks import ead, elastic_net, margin, shrink

N_DIGITS = 30
STEPS = 100
KAPPA = 0.1  # CEM's default


def _labels(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


@pytest.fixture(scope="module")
def explained(cnn, digits):
    x, _ = digits
    return explain(cnn, x, steps=STEPS)


def test_pertinent_negative_changes_the_class_with_a_few_added_pixels(cnn, digits, explained):
    x, _ = digits
    r = explained
    pn, t0 = r["pn"], r["label"]
    assert torch.equal(t0, _labels(cnn, x)) and torch.equal(r["pn_label"], _labels(cnn, pn))
    assert pn.shape == x.shape and not pn.requires_grad and pn.min() >= 0 and pn.max() <= 1
    delta = pn - x
    assert (delta >= 0).all()  # only additions
    assert (delta[x > 0] == 0).all()  # only on the absent features (the default allowed = x == 0)
    changed = r["pn_label"] != t0
    nnz = (delta > 0).flatten(1).sum(1).float()
    absent = (x == 0).flatten(1).sum(1).float()
    print(f"PN: class changed for {changed.float().mean():.0%}, {nnz.mean():.1f} added pixels of "
          f"{absent.mean():.1f} absent ones, L1 {delta.flatten(1).sum(1).mean():.2f}")
    assert changed.float().mean() >= 0.95
    assert nnz[changed].mean() <= 10 and (nnz[changed] <= 0.5 * absent[changed]).all()  # sparse
    with torch.no_grad():  # ... and by CEM's margin: max_{i != t0} z_i - z_t0 > kappa
        assert (margin(cnn(pn[changed]), t0[changed], kappa=float("inf")) < -KAPPA).all()


def test_pertinent_positive_is_a_part_of_the_input_that_keeps_the_class(cnn, digits, explained):
    x, _ = digits
    r = explained
    pp, t0 = r["pp"], r["label"]
    assert torch.equal(r["pp_label"], _labels(cnn, pp))
    assert (pp >= 0).all() and (pp <= x).all() and pp.max() <= 1  # 0 <= PP <= x
    kept = r["pp_label"] == t0
    nnz, present = (pp > 0).flatten(1).sum(1).float(), (x > 0).flatten(1).sum(1).float()
    print(f"PP: class kept for {kept.float().mean():.0%} with {nnz.mean():.1f} of {present.mean():.1f} present pixels")
    assert kept.float().mean() >= 0.95
    assert nnz[kept].mean() <= 0.5 * present[kept].mean()  # sparse: a minimal sufficient part
    with torch.no_grad():  # on its own, by the margin: z_t0 - max_{i != t0} z_i > kappa
        assert (margin(cnn(pp[kept]), t0[kept], targeted=True, kappa=float("inf")) < -KAPPA).all()
    # the empty part does not do it by itself on most digits: the PP is not the trivial answer
    assert (_labels(cnn, torch.zeros_like(x)) == t0).float().mean() < 0.5


def test_pertinent_negative_respects_a_given_mask(cnn, digits):
    """``allowed`` may also cover present pixels (they may grow, never shrink); nothing else moves."""
    x, _ = digits
    x = x[:12]
    allowed = torch.zeros(1, 8, 8, dtype=torch.bool)
    allowed[:, :4] = True  # the top half of the image
    pn = pertinent_negative(cnn, x, allowed=allowed, steps=STEPS)
    delta = pn - x
    assert (delta >= 0).all() and pn.max() <= 1
    assert (delta[:, :, 4:] == 0).all()
    changed = _labels(cnn, pn) != _labels(cnn, x)
    assert changed.float().mean() >= 0.75
    assert (delta[:, :, :4] > 0).any() and ((delta > 0) & (x > 0)).any()  # present pixels may grow


def test_nothing_found_returns_the_start(cnn, digits):
    x, _ = digits
    x = x[:10]
    pn = pertinent_negative(cnn, x, c=1e-4, steps=2, search_steps=1)
    assert torch.equal(pn, x)  # a tiny constant and two steps change no class
    pp = pertinent_positive(cnn, x, c=1e-4, steps=2, search_steps=1)
    none = _labels(cnn, torch.zeros_like(x)) != _labels(cnn, x)
    assert (pp[none] == 0).all()


def test_elastic_net_with_eads_centre_and_box_is_ead(models, digits):
    x, y = digits
    for model in models.values():
        for kw in (dict(beta=1e-2, c=1.0, kappa=0.0, steps=30, lr=0.01, search_steps=3),
                   dict(beta=5e-2, c=3.0, kappa=0.5, steps=20, lr=0.02, search_steps=2, rule="l1", targeted=True)):
            yy = (y + 1) % 10 if kw.get("targeted") else y
            ref = ead(model, x, yy, **kw)
            assert torch.equal(elastic_net(model, x, yy, x, **kw), ref)
            assert torch.equal(elastic_net(model, x, yy, x, lo=torch.zeros_like(x), hi=torch.ones_like(x), **kw), ref)
            assert (ref != x).any()  # not vacuous: the attack moved something


def test_shrink_with_tensor_bounds_is_its_three_cases():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 1, 5, 5, generator=g)
    lo = x0 - torch.rand(x0.shape, generator=g) * x0  # lo <= x0 <= hi
    hi = x0 + torch.rand(x0.shape, generator=g) * (1 - x0)
    lo.view(-1)[:5], hi.view(-1)[5:10] = x0.view(-1)[:5], x0.view(-1)[5:10]  # some bounds at x0 itself
    z = x0 + 0.6 * torch.randn(x0.shape, generator=g)
    beta = 0.1
    out = shrink(z, x0, beta, lo, hi)
    expect = torch.empty_like(z)
    for i, (zi, ci, li, hi_i) in enumerate(zip(z.flatten().tolist(), x0.flatten().tolist(), lo.flatten().tolist(),
                                               hi.flatten().tolist())):
        if zi - ci > beta:
            expect.view(-1)[i] = min(zi - beta, hi_i)
        elif zi - ci < -beta:
            expect.view(-1)[i] = max(zi + beta, li)
        else:
            expect.view(-1)[i] = ci
    torch.testing.assert_close(out, expect, atol=1e-7, rtol=0)
    assert (out >= lo).all() and (out <= hi).all()
    d = z - x0  # every case occurs
    assert (d > beta).any() and (d < -beta).any() and (d.abs() <= beta).any()
    assert ((z - beta > hi) & (d > beta)).any() and ((z + beta < lo) & (d < -beta)).any()
    # scalar bounds are EAD's box [0, 1]
    torch.testing.assert_close(shrink(z, x0, beta), shrink(z, x0, beta, torch.zeros_like(z), torch.ones_like(z)))


def test_the_autoencoder_term_pulls_explanations_towards_the_data(cnn, digits, digits_splits):
    x, _ = digits
    train = digits_splits["train"].x[:300]
    ae = autoencoder(train, epochs=60)
    assert not ae.training
    with torch.no_grad():
        test_x = digits_splits["test"].x
        rec = ae(test_x)
        mse, baseline = (rec - test_x).pow(2).mean().item(), (test_x - train.mean(0)).pow(2).mean().item()
    assert rec.shape == test_x.shape and rec.min() >= 0 and rec.max() <= 1
    assert mse < 0.3 * baseline  # it learned the digits, far better than their mean image

    def error(v):
        with torch.no_grad():
            return (v - ae(v)).flatten(1).pow(2).sum(1).mean().item()

    out = {}
    for gamma in (0.0, 10.0):
        kw = dict(steps=STEPS, gamma=gamma, autoencoder=ae if gamma else None)
        out[gamma] = pertinent_negative(cnn, x, **kw), pertinent_positive(cnn, x, **kw)
    pn, pp = out[10.0]
    print(f"reconstruction error of PN {error(out[0.0][0]):.2f} -> {error(pn):.2f}, "
          f"PP {error(out[0.0][1]):.2f} -> {error(pp):.2f} with gamma 10")
    assert ((pn - x) >= 0).all() and ((pn - x)[x > 0] == 0).all() and (pp >= 0).all() and (pp <= x).all()
    assert (_labels(cnn, pn) != _labels(cnn, x)).float().mean() >= 0.9
    assert (_labels(cnn, pp) == _labels(cnn, x)).float().mean() >= 0.9
    assert error(pn) < error(out[0.0][0]) and error(pp) < 0.9 * error(out[0.0][1])


def test_bad_input(cnn, digits):
    x, _ = digits
    x = x[:4]
    for fn in (pertinent_negative, pertinent_positive):
        with pytest.raises(ValueError, match="autoencoder"):
            fn(cnn, x, gamma=1.0)
        bad = x.clone()
        bad[0, 0, 0, 0] = float("nan")
        with pytest.raises(ValueError, match="NaN"):
            fn(cnn, bad)
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            fn(cnn, x * 2 + 0.1)
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            fn(cnn, x - 0.5)
        with pytest.raises(ValueError, match="beta"):
            fn(cnn, x, beta=-0.1)
        with pytest.raises(ValueError, match="steps"):
            fn(cnn, x, steps=0)
        with pytest.raises(ValueError):
            fn(cnn, x[0])  # no batch dimension
        model = copy.deepcopy(cnn).train()
        with pytest.warns(UserWarning, match="train mode"):
            fn(model, x, steps=2, search_steps=1)
        assert not model.training  # switched to eval mode, as every attack does
    with pytest.raises(ValueError, match="rule"):
        elastic_net(cnn, x, _labels(cnn, x), x, beta=0.1, c=1.0, kappa=0.0, steps=2, lr=0.01, search_steps=1,
                    rule="l2")
    with pytest.raises(ValueError, match="epochs"):
        autoencoder(x, epochs=0)


def test_explain_passes_the_mask_to_the_negative_only(cnn, digits):
    x, _ = digits
    x = x[:6]
    allowed = torch.zeros(1, 8, 8, dtype=torch.bool)
    allowed[..., :2] = True
    r = explain(cnn, x, allowed=allowed, steps=30, search_steps=2)
    assert set(r) == {"label", "pn", "pn_label", "pp", "pp_label"}
    assert torch.equal(r["pn"], pertinent_negative(cnn, x, allowed=allowed, steps=30, search_steps=2))
    assert torch.equal(r["pp"], pertinent_positive(cnn, x, steps=30, search_steps=2))
    assert ((r["pn"] - x)[..., 2:] == 0).all()
