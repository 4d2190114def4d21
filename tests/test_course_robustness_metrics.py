"""The checks of lecture 42 accept right answers, reject typical wrong ones with the right hint."""
import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from advlib.course import ExerciseError, robustness_metrics
from advlib.verify.clever import reverse_weibull_fit


def stub(*args):
    raise NotImplementedError


# ------------------------------------------------------------------------------------------------ exercise 1
def _ball(direction="gauss", power=True, centred=True, scale=True):
    def sample(x0, radius, n):
        d = x0.numel()
        if direction == "gauss":
            z = torch.randn(n, d, dtype=x0.dtype)
        elif direction == "rand":  # not isotropic
            z = torch.rand(n, d, dtype=x0.dtype)
        else:  # the cube's corners pull normalised directions
            z = torch.rand(n, d, dtype=x0.dtype) * 2 - 1
        u = z / z.norm(dim=1, keepdim=True)
        r = radius * torch.rand(n, 1, dtype=x0.dtype) ** (1 / d if power else 1.0)
        delta = (u * r if scale else u * radius).view(n, *x0.shape)
        return x0 + delta if centred else delta
    return sample


def test_sample_l2_ball_check(capsys):
    robustness_metrics.check_sample_l2_ball(_ball(), strict=True)
    robustness_metrics.check_sample_l2_ball(stub)
    assert "not attempted" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="stub"):
        robustness_metrics.check_sample_l2_ball(stub, strict=True)
    with pytest.raises(ExerciseError, match=r"near the centre.*U\^\(1/d\)"):  # radius R * U
        robustness_metrics.check_sample_l2_ball(_ball(power=False))
    with pytest.raises(ExerciseError, match="on the sphere"):
        robustness_metrics.check_sample_l2_ball(_ball(scale=False))
    with pytest.raises(ExerciseError, match="not centred"):
        robustness_metrics.check_sample_l2_ball(_ball(centred=False))
    with pytest.raises(ExerciseError, match="torch.randn"):
        robustness_metrics.check_sample_l2_ball(_ball(direction="rand"))
    with pytest.raises(ExerciseError, match="circle"):
        robustness_metrics.check_sample_l2_ball(_ball(direction="cube"))
    with pytest.raises(ExerciseError, match="a cube is not a ball"):
        robustness_metrics.check_sample_l2_ball(lambda x0, r, n: x0 + (torch.rand(n, *x0.shape) * 2 - 1) * r)
    with pytest.raises(ExerciseError, match="normalise"):  # an unnormalised Gaussian
        robustness_metrics.check_sample_l2_ball(lambda x0, r, n: x0 + r * torch.randn(n, *x0.shape))
    with pytest.raises(ExerciseError, match="shape"):
        robustness_metrics.check_sample_l2_ball(lambda x0, r, n: _ball()(x0, r, n).flatten(1))

    def channels_as_d(x0, radius, n):  # d = x0.shape[0] instead of the number of coordinates
        z = torch.randn(n, x0.numel())
        r = radius * torch.rand(n, 1) ** (1 / x0.shape[0])
        return x0 + (z / z.norm(dim=1, keepdim=True) * r).view(n, *x0.shape)

    with pytest.raises(ExerciseError, match=r"x0\.numel\(\)"):
        robustness_metrics.check_sample_l2_ball(channels_as_d)


# ------------------------------------------------------------------------------------------------ exercise 2
def _clever(axis=1, which=1, clip_low=True, clip_high=True, divide=True):
    def score(margin, norms, radius):
        fit = reverse_weibull_fit(norms.max(axis=axis))
        value = margin / fit[which] if divide else margin * fit[which]
        if clip_low:
            value = max(value, 0.0)
        return min(value, radius) if clip_high else value
    return score


def test_clever_from_gradients_check(capsys):
    robustness_metrics.check_clever_from_gradients(_clever(), strict=True)
    robustness_metrics.check_clever_from_gradients(robustness_metrics.reference_clever_score, strict=True)
    robustness_metrics.check_clever_from_gradients(lambda m, g, r: np.float32(_clever()(m, g, r)), strict=True)
    robustness_metrics.check_clever_from_gradients(stub)
    assert "not attempted" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="stub"):
        robustness_metrics.check_clever_from_gradients(stub, strict=True)
    with pytest.raises(ExerciseError, match="largest gradient norm"):
        robustness_metrics.check_clever_from_gradients(lambda m, g, r: min(max(m / g.max(), 0.0), r))
    with pytest.raises(ExerciseError, match="wrong axis"):
        robustness_metrics.check_clever_from_gradients(_clever(axis=0))
    with pytest.raises(ExerciseError, match="wrong parameter"):
        robustness_metrics.check_clever_from_gradients(_clever(which=2))
    with pytest.raises(ExerciseError, match="negative"):
        robustness_metrics.check_clever_from_gradients(_clever(clip_low=False))
    with pytest.raises(ExerciseError, match="capped at R"):
        robustness_metrics.check_clever_from_gradients(_clever(clip_high=False))
    with pytest.raises(ExerciseError, match="multiplied"):
        robustness_metrics.check_clever_from_gradients(_clever(divide=False))
    with pytest.raises(ExerciseError, match="one number"):
        robustness_metrics.check_clever_from_gradients(lambda m, g, r: [1.0, 2.0])


def test_clever_from_gradients_on_a_model_agrees_with_the_library():
    """The lecture's recipe — gradient_norms, batch maxima, reverse Weibull — is the library's CLEVER."""
    from advlib.verify import clever

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3)).eval()
    x0 = torch.rand(1, 4, 4)
    with torch.no_grad():
        c = model(x0[None]).argmax(1)
    j = (c + 1) % 3
    norms = robustness_metrics.gradient_norms(model, x0, int(c), int(j), n_batches=30, batch_size=64)
    assert norms.shape == (30, 64) and (norms >= 0).all()
    res = clever(model, x0[None], target=j, n_batches=30, batch_size=64)
    with torch.no_grad():
        z = model(x0[None])[0]
    ours = _clever()(float(z[c] - z[j]), norms, 2.0)
    assert math.isclose(ours, res.score.item(), rel_tol=0.15)  # different samples, same estimate


def test_weibull_figure():
    import matplotlib

    matplotlib.use("Agg")
    norms = 3.0 * (1 - 0.6 * np.random.default_rng(0).random((40, 32)) ** 0.5)
    fig = robustness_metrics.plot_weibull_fit(norms, reverse_weibull_fit(norms.max(1)), title="t")
    assert len(fig.axes) == 2


# ------------------------------------------------------------------------------------------------ exercise 3
def _cp(kind="right"):
    def lower(k, n, alpha):
        k = np.asarray(k)
        ks = np.maximum(k, 1)
        if kind == "right":
            return np.where(k > 0, stats.beta.ppf(alpha, ks, n - k + 1), 0.0)
        if kind == "nan":
            return stats.beta.ppf(alpha, k, n - k + 1)
        if kind == "two-sided":
            return np.where(k > 0, stats.beta.ppf(alpha / 2, ks, n - k + 1), 0.0)
        if kind == "off-by-one":
            return np.where(k > 0, stats.beta.ppf(alpha, ks, np.maximum(n - k, 1)), 0.0)
        if kind == "upper":
            return np.where(k < n, stats.beta.ppf(1 - alpha, k + 1, np.maximum(n - k, 1)), 1.0)
        if kind == "wald":
            p = k / n
            return p - stats.norm.ppf(1 - alpha) * np.sqrt(p * (1 - p) / n)
        return k / n
    return lower


def test_clopper_pearson_lower_check(capsys):
    from advlib.verify import clopper_pearson_lower

    robustness_metrics.check_clopper_pearson_lower(_cp(), strict=True)
    robustness_metrics.check_clopper_pearson_lower(clopper_pearson_lower, strict=True)  # the library's
    robustness_metrics.check_clopper_pearson_lower(lambda k, n, a: torch.as_tensor(_cp()(k, n, a)), strict=True)
    robustness_metrics.check_clopper_pearson_lower(stub)
    assert "not attempted" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="stub"):
        robustness_metrics.check_clopper_pearson_lower(stub, strict=True)
    with pytest.raises(ExerciseError, match="k = 0"):
        robustness_metrics.check_clopper_pearson_lower(_cp("nan"))
    with pytest.raises(ExerciseError, match="two-sided"):
        robustness_metrics.check_clopper_pearson_lower(_cp("two-sided"))
    with pytest.raises(ExerciseError, match="off by one"):
        robustness_metrics.check_clopper_pearson_lower(_cp("off-by-one"))
    with pytest.raises(ExerciseError, match="upper"):
        robustness_metrics.check_clopper_pearson_lower(_cp("upper"))
    with pytest.raises(ExerciseError, match="Wald"):
        robustness_metrics.check_clopper_pearson_lower(_cp("wald"))
    with pytest.raises(ExerciseError, match="estimate k / n"):
        robustness_metrics.check_clopper_pearson_lower(_cp("estimate"))
    with pytest.raises(ExerciseError, match="one bound per count"):
        robustness_metrics.check_clopper_pearson_lower(lambda k, n, a: _cp()(k, n, a)[:1])
