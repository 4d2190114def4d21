"""The black box from first principles: it counts exactly the evaluations it makes (a counter inside
the model checks it), enforces its budgets before evaluating, refuses gradients and bad inputs, and
its query log keeps what each attack's cost is measured by."""
import math

import pytest
import torch
from torch import nn

import advlib
from advlib import threat
from advlib.blackbox import BlackBox, QueryBudgetExceeded, QueryLog


class Counted(nn.Module):
    """A model that counts the inputs it evaluates: the ground truth of a query count."""

    def __init__(self, model):
        super().__init__()
        self.model, self.evaluated, self.calls = model, 0, 0
        self.in_shape = getattr(model, "in_shape", None)

    def forward(self, x):
        self.evaluated += len(x)
        self.calls += 1
        return self.model(x)


@pytest.fixture
def counted(zoo_model):
    return Counted(zoo_model("digits-mlp")).eval()


@pytest.fixture(scope="module")
def x(digits):
    return digits[0][:20]


def test_counts_every_evaluation(counted, x):
    bb = BlackBox(counted)
    p = bb(x)
    assert p.shape == (20, 10) and torch.allclose(p.sum(1), torch.ones(20))
    bb.label(x[:3])
    bb.scores(x[:1])
    assert bb.queries == counted.evaluated == 24


def test_chunks_to_memory_and_still_counts(counted, x, monkeypatch):
    monkeypatch.setattr(threat, "MEMORY_BUDGET", 1000)
    bb = BlackBox(counted)
    big = x.repeat(10, 1, 1, 1)
    out = bb(big)
    assert counted.calls > 2  # split into several forward passes
    assert bb.queries == counted.evaluated == 200
    assert torch.allclose(out, torch.softmax(counted.model(big), 1), atol=1e-6)


def test_no_gradient_path(zoo_model, x):
    model = zoo_model("digits-mlp")
    bb = BlackBox(model)
    out = bb(x)
    assert not out.requires_grad and out.grad_fn is None
    with pytest.raises(RuntimeError, match="no gradients"):
        bb(x.clone().requires_grad_())
    with pytest.raises(RuntimeError):
        out.sum().backward()


def test_label_box(counted, x):
    bb = BlackBox(counted, output="label")
    lab = bb(x)
    assert lab.dtype == torch.long and lab.shape == (20,)
    assert torch.equal(lab, counted.model(x).argmax(1))
    with pytest.raises(ValueError, match="only with labels"):
        bb.scores(x)


def test_total_budget_is_enforced_before_evaluating(counted, x):
    bb = BlackBox(counted, budget=25)
    bb(x)
    with pytest.raises(QueryBudgetExceeded, match="budget of 25"):
        bb(x[:6])
    assert bb.queries == counted.evaluated == 20  # the refused batch was not evaluated
    bb(x[:5])
    assert bb.queries == 25


def test_per_example_budget(counted, x):
    bb = BlackBox(counted, per_example=3)
    log = bb.start(x[:4], queries=10)  # the box's cap wins over the attack's allowance
    assert log.allowance == 3
    ids = torch.tensor([0, 0, 1])
    bb(x[:3], ids)
    assert log.queries.tolist() == [2, 1, 0, 0]
    with pytest.raises(QueryBudgetExceeded, match="example 0"):
        bb(x[:2], torch.tensor([0, 0]))
    assert log.queries.tolist() == [2, 1, 0, 0] and counted.evaluated == 3
    assert log.remaining().tolist() == [1, 2, 3, 3]


def test_bad_input(counted, x):
    bb = BlackBox(counted)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bb(x * 2)
    with pytest.raises(ValueError, match="NaN"):
        bb(torch.full_like(x, float("nan")))
    with pytest.raises(ValueError, match="batch dimension"):
        bb(x[0])
    with pytest.raises(ValueError, match="does not accept inputs"):
        bb(torch.rand(2, 1, 28, 28))
    with pytest.raises(ValueError, match="open run"):
        bb(x[:2], torch.tensor([0, 1]))
    bb.start(x[:2])
    with pytest.raises(ValueError, match="ids must"):
        bb(x[:2], torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="output must be"):
        BlackBox(counted, output="logits")
    with pytest.raises(ValueError, match="budget"):
        BlackBox(counted, budget=0)
    with pytest.raises(ValueError, match="nn.Module"):
        BlackBox(lambda z: z)
    assert counted.evaluated == 0


def test_query_log_records_first_success_and_the_distortion_curve():
    x0 = torch.zeros(2, 3)
    log = QueryLog(x0, "l2")
    log.queries += torch.tensor([5, 5])
    log.record(torch.tensor([0, 1]), torch.tensor([[3.0, 4, 0], [1, 0, 0]]), torch.tensor([True, False]))
    log.queries += torch.tensor([5, 5])
    log.record(torch.tensor([0, 1]), torch.tensor([[1.0, 0, 0], [2, 0, 0]]), torch.tensor([True, True]))
    assert log.first_success.tolist() == [5, 10]
    assert log.best.tolist() == [1.0, 2.0]
    assert log.distortion_at(4).tolist() == [math.inf, math.inf]
    assert log.distortion_at(7).tolist() == [5.0, math.inf]
    assert log.distortion_at(10).tolist() == [1.0, 2.0]
    s = log.summary()
    assert s["success_rate"] == 1.0 and s["mean_queries_to_success"] == 7.5 and s["median_l2"] == 1.0
    assert "2 examples" in repr(log)


def test_exported():
    assert advlib.blackbox.BlackBox is BlackBox
    assert "blackbox" in advlib.__all__ and "zo" in advlib.__all__
