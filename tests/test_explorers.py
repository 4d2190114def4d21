"""The lectures' interactive explorers (advlib.course.explorers), driven from code: set a control's
``.value`` (or click a button), then check ``shown`` against an independent computation and that the
figure changed; the invariants each one illustrates; bad input; and the static fallback that the book
shows instead of the widget (the PNG in the display bundle, chosen by book/_config.yml's priorities).
"""
from __future__ import annotations

import base64
import copy
import inspect
from pathlib import Path

import pytest
import torch
import yaml
from IPython.core.formatters import DisplayFormatter
from torch import nn

import advlib.verify as V
from advlib.attacks import lp_norm, pgd
from advlib.course import explorers
from advlib.course.explorers import BigCheckGame, CertifiedBallExplorer, EpsilonExplorer, ZOExplorer
from advlib.train import predict

N_DIGITS = 40
WIDGET = "application/vnd.jupyter.widget-view+json"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cnn(zoo_model):
    return zoo_model("digits-cnn")


@pytest.fixture(scope="module")
def eps_explorer(cnn, digits):
    return EpsilonExplorer(cnn, *digits)


@pytest.fixture(scope="module")
def ball():
    return CertifiedBallExplorer()


@pytest.fixture(scope="module")
def zo_explorer():
    return ZOExplorer()


@pytest.fixture(scope="module")
def game(cnn, digits):
    return BigCheckGame(cnn, *digits, eps=0.2, digits=3)


def test_the_module_exports_the_four_explorers_only():
    assert explorers.__all__ == ["EpsilonExplorer", "CertifiedBallExplorer", "ZOExplorer", "BigCheckGame"]
    own = [n for n, v in vars(explorers).items() if not n.startswith("_") and (inspect.isclass(v) or
                                                                               inspect.isfunction(v))
           and v.__module__ == explorers.__name__]
    assert sorted(own) == sorted(explorers.__all__)


# ---------------------------------------------------------------------------------------- EpsilonExplorer
def test_epsilon_explorer_shows_pgd_at_the_controls(eps_explorer, cnn, digits):
    ex, (x, y) = eps_explorer, digits
    assert set(ex.shown) == {"prediction", "clean_prediction", "probabilities", "norm_of_delta", "eps", "norm"}
    for index, eps in ((3, 0.3), (7, 0.05)):
        before = ex.image.value
        ex.index.value, ex.eps.value = index, eps
        assert ex.image.value != before and ex.image.value[:8] == b"\x89PNG\r\n\x1a\n"
        x_adv = pgd(cnn, x[index : index + 1], y[index : index + 1], eps=eps, steps=ex.steps, random_start=False)
        with torch.no_grad():
            p = cnn(x_adv).softmax(1)[0]
        assert ex.shown["eps"] == eps and ex.shown["norm"] == "linf"
        assert ex.shown["clean_prediction"] == int(predict(cnn, x[index : index + 1]))
        assert ex.shown["prediction"] == int(p.argmax())
        assert torch.allclose(torch.tensor(ex.shown["probabilities"]), p, atol=1e-6)
        assert ex.shown["norm_of_delta"] <= eps + 1e-6
    assert sum(ex.shown["probabilities"]) == pytest.approx(1, abs=1e-5) and len(ex.shown["probabilities"]) == 10


def test_epsilon_explorer_rescales_the_budget_with_the_norm(eps_explorer):
    ex = eps_explorer
    ex.norm.value, ex.eps.value = "linf", 0.1
    ex.norm.value = "l2"
    assert ex.eps.max == pytest.approx(3.0) and ex.eps.value == pytest.approx(0.6)  # the same fraction of the range
    assert ex.shown["norm"] == "l2" and ex.shown["eps"] == pytest.approx(0.6)
    assert ex.shown["norm_of_delta"] <= 0.6 + 1e-5
    ex.norm.value = "l1"
    assert ex.eps.max == pytest.approx(10.0) and ex.shown["norm_of_delta"] <= ex.eps.value + 1e-4
    ex.norm.value = "linf"
    assert ex.eps.max == pytest.approx(0.5) and ex.eps.value == pytest.approx(0.1)
    ex.eps.value = 0.0
    assert ex.shown["norm_of_delta"] == 0 and ex.shown["prediction"] == ex.shown["clean_prediction"]


def test_epsilon_explorer_rejects_bad_input(cnn, digits):
    x, y = digits
    with pytest.raises(ValueError, match="train mode"):
        EpsilonExplorer(copy.deepcopy(cnn).train(), x, y)
    with pytest.raises(ValueError, match="N x C x H x W"):
        EpsilonExplorer(cnn, x[0], y)
    with pytest.raises(ValueError, match="label"):
        EpsilonExplorer(cnn, x, y[:-1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        EpsilonExplorer(cnn, x * 2, y)


# ---------------------------------------------------------------------------------------- CertifiedBallExplorer
def _drawn_radius(ex, gid: str) -> float:
    (patch,) = [p for p in ex.figure.axes[0].patches if p.get_gid() == gid]
    return patch.get_width() / 2 if ex.shown["norm"] == "linf" else patch.get_radius()


def test_certified_ball_shows_crown_and_pgd(ball):
    ex = ball
    assert set(ex.shown) == {"point", "prediction", "certified_radius", "attack_point", "attack_succeeded", "eps",
                             "norm"}
    p = torch.tensor([ex.shown["point"]])
    assert ex.shown["point"] == pytest.approx((ex.x1.value, ex.x2.value))
    assert ex.shown["prediction"] == int(predict(ex.model, p))
    want = float(V.certified_radius(ex.model, p, norm="linf", method="crown", hi=1.0))
    assert ex.shown["certified_radius"] == pytest.approx(want) and want > 0
    assert _drawn_radius(ex, "certified ball") == pytest.approx(ex.shown["certified_radius"])
    assert _drawn_radius(ex, "eps ball") == pytest.approx(ex.shown["eps"])
    assert ex.shown["attack_succeeded"]  # the default ε-ball crosses the boundary, and PGD finds the crossing
    before = ex.image.value
    ex.norm.value = "l2"
    assert ex.image.value != before
    assert _drawn_radius(ex, "certified ball") == pytest.approx(ex.shown["certified_radius"])
    ex.norm.value = "linf"


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_no_attack_succeeds_inside_the_certified_ball(ball, norm):
    ex = ball
    ex.norm.value = norm
    for a, b in ((0.6, 0.6), (0.25, 0.3), (0.8, 0.2)):
        ex.x1.value, ex.x2.value = a, b
        r = ex.shown["certified_radius"]
        assert r == pytest.approx(_drawn_radius(ex, "certified ball"))
        assert V.certify(ex.model, torch.tensor([ex.shown["point"]]), eps=r, norm=norm).all()  # a proof at r
        for eps in (r, 0.5 * r):
            ex.eps.value = eps
            assert ex.shown["eps"] == pytest.approx(eps)
            assert not ex.shown["attack_succeeded"], f"PGD changed the class inside the certified {norm} ball"
            moved = torch.tensor([ex.shown["attack_point"]]) - torch.tensor([ex.shown["point"]])
            assert float(lp_norm(moved, norm)) <= eps + 1e-6
    ex.x1.value, ex.x2.value, ex.eps.value, ex.norm.value = 0.6, 0.6, 0.15, "linf"


def test_certified_ball_takes_a_model_of_the_plane_in_eval_mode():
    torch.manual_seed(0)
    linear = nn.Sequential(nn.Linear(2, 3)).eval()
    ex = CertifiedBallExplorer(linear)
    assert ex.data is None and ex.shown["prediction"] in (0, 1, 2)
    with pytest.raises(ValueError, match="train mode"):
        CertifiedBallExplorer(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="does not accept"):
        CertifiedBallExplorer(nn.Sequential(nn.Linear(3, 2)).eval())


# ---------------------------------------------------------------------------------------- ZOExplorer
def test_zo_explorer_counts_its_queries():
    calls = []
    h = torch.linspace(0.5, 2.0, 16, dtype=torch.float64)

    def f(z):
        calls.append(len(z))
        return 0.5 * (h * z.flatten(1) ** 2).sum(1)

    x = torch.linspace(-1, 1, 16, dtype=torch.float64).view(4, 4)
    ex = ZOExplorer(f, x)
    assert torch.allclose(ex.grad, (h * x.flatten()).view(4, 4))  # autograd's gradient is the true one
    for q in (1, 7, 50):
        calls.clear()
        ex.q.value = q
        assert ex.shown["q"] == q and ex.shown["queries"] == sum(calls) == q + 1  # forward form: f(x) once, q more
    before = ex.image.value
    ex.beta.value = 0.1
    assert ex.shown["beta"] == pytest.approx(0.1) and ex.image.value != before
    assert -1 <= ex.shown["cosine"] <= 1 and ex.shown["relative_error"] >= 0


def test_zo_explorer_error_falls_with_q(zo_explorer):
    ex = zo_explorer
    assert set(ex.shown) == {"q", "beta", "cosine", "relative_error", "queries"}
    ex.beta.value = 1e-3
    errors = {}
    for q in (1, 200):
        ex.q.value, ex.seed = q, 0
        errors[q] = []
        for _ in range(4):  # seeds 1, 2, 3, 4: deterministic
            before = ex.image.value
            ex.redraw.click()
            assert ex.image.value != before and ex.shown["queries"] == q + 1
            errors[q].append(ex.shown["relative_error"])
    mean = {q: sum(v) / len(v) for q, v in errors.items()}
    assert mean[200] < 0.5 * mean[1], mean
    assert ex.shown["cosine"] > 0.5  # 200 directions in 64 dimensions point the right way


def test_zo_explorer_rejects_bad_input():
    with pytest.raises(ValueError, match="both f and x"):
        ZOExplorer(lambda z: z.sum(1))
    with pytest.raises(ValueError, match="autograd"):
        ZOExplorer(lambda z: torch.as_tensor(z.detach().numpy().sum(1)), torch.zeros(3))
    with pytest.raises(ValueError, match="one value per point"):
        ZOExplorer(lambda z: z, torch.zeros(3))


# ---------------------------------------------------------------------------------------- BigCheckGame
def _reading(model, images) -> int:
    return int("".join(str(d) for d in predict(model, images).tolist()))


def test_big_check_credits_what_the_model_reads(game, cnn):
    g = game
    g.reset()
    assert set(g.shown) == {"amount", "credited", "profit", "pgd_credited", "pgd_profit", "score", "painted"}
    assert g.amount == int("".join(map(str, g.labels))) and g.labels[0] != 0
    assert predict(cnn, g.x).tolist() == g.labels and g.shown["credited"] == g.amount and g.shown["profit"] == 0
    gen = torch.Generator().manual_seed(0)
    mine = torch.zeros(3, 8, 8)
    for n in range(1, 13):
        k, r, c = (int(torch.randint(0, m, (1,), generator=gen)) for m in (3, 8, 8))
        value = (-1, 1)[n % 2]
        before, seen = bytes(g.image.value), (g.x + 0.2 * mine[:, None]).clamp(0, 1)
        g.paint(k, r, c, value)
        mine[k, r, c] = value
        assert g.shown["painted"] == int((mine != 0).sum())
        painted = (g.x + 0.2 * mine[:, None]).clamp(0, 1)  # the bank's view, recomputed here
        if not torch.equal(painted, seen):  # (painting -eps on a pixel at 0 changes nothing)
            assert bytes(g.image.value) != before
        assert g.shown["credited"] == _reading(cnn, painted)
        assert g.shown["profit"] == g.shown["credited"] - g.amount
    delta = g.painted_images() - g.x
    assert delta.abs().max() <= 0.2 + 1e-6 and g.painted_images().min() >= 0 and g.painted_images().max() <= 1
    g.paint(0, 0, 0, 0)
    g.reset()
    assert g.shown["painted"] == 0 and g.shown["credited"] == g.amount


def test_big_check_buttons_cycle_through_the_ball_vertices(game):
    g = game
    g.reset()
    g.digit.value = 1
    for want in (1, -1, 0, 1):
        g.cells[2][5].click()
        assert int(g.signs[1, 2, 5]) == want and g.cells[2][5].description == {1: "+", -1: "−", 0: ""}[want]
    assert g.shown["painted"] == 1
    g.reset_button.click()
    assert g.shown["painted"] == 0 and not g.signs.any()
    g.digit.value = 0
    with pytest.raises(ValueError, match="-1, 0 or"):
        g.paint(0, 0, 0, 2)
    with pytest.raises(ValueError, match="row in 0..7"):
        g.paint(0, 8, 0, 1)


def test_big_check_compares_with_targeted_pgd(game, cnn):
    g = game
    assert g.shown["pgd_profit"] >= 0
    assert g.shown["pgd_credited"] == _reading(cnn, g.pgd_images)
    assert g.shown["pgd_profit"] == g.shown["pgd_credited"] - g.amount
    assert (g.pgd_images - g.x).abs().max() <= 0.2 + 1e-6 and 0 <= g.pgd_images.min() <= g.pgd_images.max() <= 1
    assert all(a >= b for a, b in zip(predict(cnn, g.pgd_images).tolist(), g.labels))  # never a smaller digit
    g.paint(0, 3, 3, 1)
    want = g.shown["profit"] / g.shown["pgd_profit"] if g.shown["pgd_profit"] else None
    assert g.shown["score"] == want
    before = g.image.value
    g.compare.value = True
    assert g.image.value != before
    g.compare.value = False
    g.reset()


def test_big_check_without_a_pgd_profit_has_no_score(cnn, digits):
    g = BigCheckGame(cnn, *digits, eps=1e-4, digits=2)
    assert g.shown["pgd_profit"] == 0 and g.shown["score"] is None and g.amount >= 10


def test_big_check_paints_blocks_on_large_images(zoo_model, digits28):
    g = BigCheckGame(zoo_model("digits28-cnn"), *digits28, digits=2)
    assert (g.block, g.rows, g.cols) == (2, 14, 14) and len(g.cells) == 14
    g.paint(1, 13, 13, -1)
    assert g.shown["painted"] == 4  # one button, a 2 x 2 block of pixels


def test_big_check_rejects_bad_input(cnn, digits):
    x, y = digits
    with pytest.raises(ValueError, match="train mode"):
        BigCheckGame(copy.deepcopy(cnn).train(), x, y)
    with pytest.raises(ValueError, match="eps"):
        BigCheckGame(cnn, x, y, eps=0)
    with pytest.raises(ValueError, match="digits"):
        BigCheckGame(cnn, x, y, digits=0)
    with pytest.raises(ValueError, match="10 classes"):
        BigCheckGame(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval(), x, y % 3)
    with pytest.raises(ValueError, match="read correctly"):
        BigCheckGame(cnn, x[:2], y[:2], digits=3)


# ---------------------------------------------------------------------------------------- the static fallback
def test_the_display_bundle_carries_the_widget_and_the_figure(eps_explorer, ball, zo_explorer, game):
    for ex in (eps_explorer, ball, zo_explorer, game):
        data, _ = DisplayFormatter().format(ex)  # what IPython puts in the cell's output
        assert {WIDGET, "text/plain", "image/png"} <= set(data)
        assert base64.b64decode(data["image/png"]) == ex.image.value


def _book_priority(builder: str) -> list[str]:
    """myst-nb's rule: its base priorities for ``builder``, overridden by book/_config.yml; lowest first."""
    from myst_nb.core.render import get_mime_priority

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "book" / "_config.yml").read_text())
    return get_mime_priority(builder, [tuple(o) for o in config["sphinx"]["config"]["nb_mime_priority_overrides"]])


@pytest.mark.parametrize("builder", ["html", "dirhtml", "singlehtml"])
def test_the_book_renders_the_figure_not_the_widget(eps_explorer, builder):
    data, _ = DisplayFormatter().format(eps_explorer)
    priority = _book_priority(builder)
    assert next(m for m in priority if m in data) == "image/png"
    # a widget without a figure (a progress bar) still renders as a widget
    assert next(m for m in priority if m in {WIDGET, "text/plain"}) == WIDGET

