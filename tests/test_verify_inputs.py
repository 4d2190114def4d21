"""Bad input to every public function of advlib.verify is refused by advlib itself, with the threat-model
core's message (advlib.threat): a single image without its batch dimension, an image of the wrong size for
the model, NaN, an empty batch, 8-bit images; and the verify calling convention is keyword-only."""
import math

import pytest
import torch

import advlib.verify as V

N_DIGITS = 6  # the shared `digits` fixture (tests/conftest.py)

BAD_INPUTS = {
    "no batch dimension": (lambda x, y: (x[0], y[:1]), r"batch dimension: x\[None\]"),
    "wrong image size": (lambda x, y: (torch.nn.functional.interpolate(x, size=(28, 28)), y),
                         r"does not accept inputs of shape \(1, 28, 28\)"),
    "NaN": (lambda x, y: (torch.where(torch.arange(x.numel()).view_as(x) == 5, math.nan, x), y),
            r"contains NaN or infinite values"),
    "empty batch": (lambda x, y: (x[:0], y[:0]), r"empty batch"),
    "uint8 image": (lambda x, y: ((x * 255).to(torch.uint8), y), r"floating point .*x\.float\(\) / 255"),
    "out of the box": (lambda x, y: (x * 255, y), r"inputs must lie in"),
    "labels out of range": (lambda x, y: (x, y + 10), r"labels must lie in 0\.\.9"),
}

CALLS = {
    "bounds": lambda m, x, y: V.bounds(m, x, y, eps=0.02),
    "propagate": lambda m, x, y: V.propagate(m, x, y, eps=0.02, method="ibp"),
    "certify": lambda m, x, y: V.certify(m, x, y, eps=0.02),
    "certified_radius": lambda m, x, y: V.certified_radius(m, x, y, steps=2),
    "certified_accuracy": lambda m, x, y: V.certified_accuracy(m, x, y, eps=0.02),
    "clever": lambda m, x, y: V.clever(m, x, y, n_batches=2, batch_size=2),
    "Smoothed.certify": lambda m, x, y: V.Smoothed(m, 0.25).certify(x, n0=2, n=4),
    "Smoothed.predict": lambda m, x, y: V.Smoothed(m, 0.25).predict(x, n=4),
    "certify_rotation": lambda m, x, y: V.certify_rotation(m, x, y, max_degrees=1.0),
    "rotation_attack": lambda m, x, y: V.rotation_attack(m, x, y, max_degrees=1.0),
}
NO_LABELS = ("Smoothed.certify", "Smoothed.predict")  # the smoothed classifier takes no labels


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=str)
@pytest.mark.parametrize("call", CALLS, ids=str)
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_every_verify_function_refuses_bad_input_clearly(digits, models, call, bad, arch):
    if bad == "labels out of range" and call in NO_LABELS:
        pytest.skip("no labels to check")
    model = models[f"digits-{arch}"]
    make, message = BAD_INPUTS[bad]
    xb, yb = make(*digits)
    with pytest.raises(ValueError, match=message) as info:
        CALLS[call](model, xb, yb)
    assert str(info.value).startswith(call), str(info.value)  # says which function refused


def test_the_good_input_passes(digits, mlp):
    """The same calls on the untouched batch run (so the refusals above are about the input)."""
    for call in CALLS.values():
        call(mlp, *digits)


def test_the_radius_and_options_are_keyword_only(digits, mlp):
    x, y = digits
    for call in (lambda: V.bounds(mlp, x, y, 0.1), lambda: V.certify(mlp, x, y, 0.1),
                 lambda: V.certified_radius(mlp, x, y, "l2"), lambda: V.certified_accuracy(mlp, x, y, 0.1),
                 lambda: V.ibp_loss(mlp, x, y, 0.1), lambda: V.certify_rotation(mlp, x, y, 5.0),
                 lambda: V.clever(mlp, x, y, "l2"), lambda: V.Smoothed(mlp, 0.25).certify(x, 10)):
        with pytest.raises(TypeError):
            call()


def test_ibp_loss_refuses_bad_input(digits, mlp):
    x, y = digits
    for xb, yb, message in ((x[:0], y[:0], "empty batch"), ((x * 255).to(torch.uint8), y, "floating point"),
                            (x.clone().fill_(math.nan), y, "NaN"), (x, y + 10, r"labels must lie in 0\.\.9"),
                            (torch.nn.functional.interpolate(x, size=(28, 28)), y, "does not accept inputs"),
                            (x[0], y[:1], r"needs a batch dimension: x\[None\]")):
        with pytest.raises(ValueError, match=message):
            V.ibp_loss(mlp, xb, yb, eps=0.1)
    mlp.train()  # a training model is checked without being switched to eval mode
    try:
        with pytest.raises(ValueError, match="needs a batch dimension"):
            V.ibp_loss(mlp, x[0], y[:1], eps=0.1)
        assert mlp.training
    finally:
        mlp.eval()
