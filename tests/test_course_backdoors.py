"""Lecture 04's helpers: the reference answers agree with the definitions and with the library
(:mod:`advlib.backdoor.poison`), and the exercise checks accept right answers, reject typical wrong
ones with the right hint and report a stub as not attempted."""
import pytest
import torch

from advlib.backdoor.poison import attack_success_rate, patch_trigger
from advlib.course import ExerciseError
from advlib.course import backdoors as ex


def stub(*args, **kwargs):
    raise NotImplementedError


# ------------------------------------------------------------------------------------------ references
def test_reference_stamp_is_trigger_apply_and_leaves_the_rest():
    g = torch.Generator().manual_seed(0)
    for shape, s, pos in (((1, 8, 8), 2, (6, 6)), ((3, 9, 11), 3, (1, 7)), ((1, 28, 28), 1, (0, 27))):
        x, tile = torch.rand(4, *shape, generator=g), torch.rand(s, s, generator=g)
        got = ex.reference_stamp_patch(x, tile, *pos)
        assert torch.equal(got, patch_trigger(shape, s, position=pos, pattern=tile).apply(x))
        r, c = pos
        assert torch.equal(got[:, :, r:r + s, c:c + s], tile.expand(4, shape[0], s, s))
        rest = torch.ones(shape, dtype=torch.bool)
        rest[:, r:r + s, c:c + s] = False
        assert torch.equal(got[:, rest], x[:, rest])


def test_reference_asr_by_hand_and_the_librarys():
    y = torch.tensor([0, 0, 1, 2, 3, 9])
    pred = torch.tensor([0, 5, 0, 0, 4, 0])
    assert ex.reference_asr(pred, y, 0, 10) == pytest.approx(3 / 4)  # the two 0s are left out
    # all-to-all: the backdoor's labels are 1, 1, 2, 3, 4, 0; the last two predictions hit them
    assert ex.reference_asr(pred, y, "all-to-all", 10) == pytest.approx(2 / 6)
    # the library's ASR on a model that predicts a fixed function of the input agrees
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(60, 1, 8, 8, generator=g), torch.randint(0, 10, (60,), generator=g)
    trig = patch_trigger(size=2)

    class Fixed(torch.nn.Module):  # predicts the class (4 * x[0, 0, 0] rounded) on any input
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.nn.functional.one_hot((x[:, 0, 0, 0] * 4).round().long(), 10).float() + self.w

    model = Fixed().eval()
    pred = model(trig.apply(x)).argmax(1)
    for target in (0, 2, "all-to-all"):
        assert attack_success_rate(model, x, y, trig, target) == pytest.approx(ex.reference_asr(pred, y, target, 10))


def test_reference_smallest_rate():
    assert ex.reference_smallest_rate([0.1, 0.0, 0.05], [0.95, 0.0, 0.9], 0.9) == 0.05
    assert ex.reference_smallest_rate([0.0, 0.1], [0.0, 0.5], 0.9) is None


# ------------------------------------------------------------------------------------------ exercise 1
def _stamp(kind):
    def stamp_patch(x, tile, row, col):
        s = tile.shape[-1]
        out = x if kind == "in_place" else x.clone()
        if kind == "swapped":
            row, col = col, row
        if kind == "off_by_one":
            out[:, :, row:row + s + 1, col:col + s + 1] = 0
        if kind == "added":
            out[:, :, row:row + s, col:col + s] = (out[:, :, row:row + s, col:col + s] + tile).clamp(0, 1)
        elif kind == "first_channel":
            out[:, :1, row:row + s, col:col + s] = tile
        else:
            out[:, :, row:row + s, col:col + s] = tile
        return out
    return stamp_patch


def test_check_stamp_patch_accepts_the_reference_and_a_mask_formula(capsys):
    ex.check_stamp_patch(ex.reference_stamp_patch, strict=True)

    def by_mask(x, tile, row, col):
        s = tile.shape[-1]
        m, p = torch.zeros_like(x[0]), torch.zeros_like(x[0])
        m[:, row:row + s, col:col + s], p[:, row:row + s, col:col + s] = 1, tile
        return (1 - m) * x + m * p

    ex.check_stamp_patch(by_mask, strict=True)
    assert capsys.readouterr().out.count("correct") == 2


@pytest.mark.parametrize("kind, hint", [("in_place", "in place"), ("swapped", "swapped"),
                                        ("off_by_one", "outside the patch"), ("added", "added"),
                                        ("first_channel", "every channel")])
def test_check_stamp_patch_rejects_wrong_answers_with_the_right_hint(kind, hint):
    with pytest.raises(ExerciseError, match=hint):
        ex.check_stamp_patch(_stamp(kind))


def test_checks_report_a_stub_and_fail_it_when_strict(capsys):
    for check in (ex.check_stamp_patch, ex.check_asr, ex.check_smallest_rate):
        check(stub)
        assert "not attempted yet" in capsys.readouterr().out
        with pytest.raises(ExerciseError, match="stub"):
            check(stub, strict=True)


# ------------------------------------------------------------------------------------------ exercise 2
def _asr(kind):
    def asr(pred, y, target, n_classes):
        wanted = (y + 1) % n_classes if target == "all-to-all" else torch.full_like(y, int(target))
        if kind == "fixed_target":
            wanted = torch.full_like(y, 0 if target == "all-to-all" else int(target))
        ok = pred == wanted
        keep = wanted != y
        if kind == "all_inputs":
            return ok.float().mean().item()
        if kind == "divide_by_n":
            return (ok & keep).float().sum().item() / len(y)
        if kind == "complement":
            return 1 - ok[keep].float().mean().item()
        if kind == "tensor":
            return ok[keep].float().mean()
        return ok[keep].float().mean().item()
    return asr


def test_check_asr_accepts_floats_and_one_element_tensors(capsys):
    ex.check_asr(ex.reference_asr, strict=True)
    ex.check_asr(_asr("tensor"), strict=True)
    assert capsys.readouterr().out.count("correct") == 2


@pytest.mark.parametrize("kind, hint", [("all_inputs", "counted every input"), ("divide_by_n", "divided by all"),
                                        ("fixed_target", "depends on the input"), ("complement", "1 - ASR")])
def test_check_asr_rejects_wrong_answers_with_the_right_hint(kind, hint):
    with pytest.raises(ExerciseError, match=hint):
        ex.check_asr(_asr(kind))


# ------------------------------------------------------------------------------------------ exercise 3
def _smallest(kind):
    def smallest_rate(rates, asr, level):
        pairs = list(zip(rates, asr))
        if kind == "strict":
            hits = [r for r, a in pairs if a > level]
        elif kind == "first":
            hits = [next((r for r, a in pairs if a >= level), None)]
            hits = [h for h in hits if h is not None]
            return hits[0] if hits else None
        elif kind == "asr":
            hits = [a for r, a in pairs if a >= level]
        else:
            hits = [r for r, a in pairs if a >= level]
        if kind == "last_if_none" and not hits:
            return max(rates)
        return min(hits) if hits else None
    return smallest_rate


def test_check_smallest_rate_accepts_the_reference_and_a_measured_curve(capsys):
    ex.check_smallest_rate(ex.reference_smallest_rate, strict=True)
    ex.check_smallest_rate(ex.reference_smallest_rate, curve=((0.0, 0.01, 0.05), (0.0, 0.5, 0.97)), strict=True)
    assert capsys.readouterr().out.count("correct") == 2


@pytest.mark.parametrize("kind, hint", [("strict", ">="), ("first", "order given"), ("asr", "returned an ASR"),
                                        ("last_if_none", "return None")])
def test_check_smallest_rate_rejects_wrong_answers_with_the_right_hint(kind, hint):
    with pytest.raises(ExerciseError, match=hint):
        ex.check_smallest_rate(_smallest(kind))
