"""Fixtures shared by the unit tests: the bundled digits and the shipped zoo models, loaded once a
session (each xdist worker has its own session).

``digits`` gives the first ``N_DIGITS`` held-out digits (a module sets ``N_DIGITS``; default 200),
``train_digits`` the first ``N_DIGITS`` training digits; ``models`` the standard pair
(``digits-cnn``, ``digits-mlp``), ``mlp`` / ``cnn`` one of them, ``zoo_model(name)`` any shipped
entry. The models are shared: a test that changes one (train mode, weights) must work on a copy.
"""
import pytest
import torch

import advlib


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module that asks for it (restored after): on a shared 2-core machine a
    second thread that is descheduled makes every small op wait (measured: a 10x to 16x slowdown on
    the GRU and federated tests)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits_splits():
    return {split: advlib.data.load("digits", split) for split in ("train", "test")}


def _first(ds, request):
    n = getattr(request.module, "N_DIGITS", 200)
    return ds.x[:n], ds.y[:n]


@pytest.fixture(scope="module")
def digits(digits_splits, request):
    """``(x, y)``: the first ``N_DIGITS`` held-out digits (N x 1 x 8 x 8 in [0, 1], labels)."""
    return _first(digits_splits["test"], request)


@pytest.fixture(scope="module")
def train_digits(digits_splits, request):
    """``(x, y)``: the first ``N_DIGITS`` training digits."""
    return _first(digits_splits["train"], request)


@pytest.fixture(scope="session")
def digits28_test():
    """The held-out digits at the MNIST shape 28x28 (Part 2's data)."""
    return advlib.data.load("digits28", "test")


@pytest.fixture(scope="module")
def digits28(digits28_test, zoo_model, request):
    """``(x, y)``: the first ``N_DIGITS28`` held-out 28x28 digits (a module sets it; default 50) that
    ``digits28-cnn`` classifies correctly (the points a black-box attack is run on)."""
    n = getattr(request.module, "N_DIGITS28", 50)
    x, y = digits28_test.x, digits28_test.y
    ok = advlib.train.predict(zoo_model("digits28-cnn"), x) == y
    return x[ok][:n], y[ok][:n]


@pytest.fixture(scope="session")
def zoo_model():
    """``zoo_model(name)``: a shipped zoo model on the CPU, in eval mode, loaded once a session."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = advlib.zoo.load(name, "cpu")
        return cache[name].eval()

    return get


@pytest.fixture(scope="session")
def models(zoo_model):
    return {name: zoo_model(name) for name in ("digits-cnn", "digits-mlp")}


@pytest.fixture(scope="session")
def mlp(zoo_model):
    return zoo_model("digits-mlp")


@pytest.fixture(scope="session")
def cnn(zoo_model):
    return zoo_model("digits-cnn")
