"""Profiles, device choice and seeding."""
import pytest
import torch

import advlib
from advlib import data, zoo


def test_default_profile_is_fast(monkeypatch):
    monkeypatch.delenv("ADVLIB_PROFILE", raising=False)
    assert advlib.profile().name == "fast"


def test_profile_from_environment(monkeypatch):
    monkeypatch.setenv("ADVLIB_PROFILE", "full")
    assert advlib.profile().name == "full"
    assert advlib.profile("fast").name == "fast"  # an explicit name wins


def test_unknown_profile_says_what_exists(monkeypatch):
    monkeypatch.setenv("ADVLIB_PROFILE", "huge")
    with pytest.raises(ValueError, match=r"unknown profile 'huge'.*\['fast', 'full'\]"):
        advlib.profile()


@pytest.mark.parametrize("name", sorted(advlib.PROFILES))
def test_profiles_name_real_data_and_models(name):
    p = advlib.PROFILES[name]
    assert p.dataset in data.SPECS and p.series in data.SPECS
    assert all(m in zoo.ENTRIES for m in p.models)
    assert all(zoo.ENTRIES[m].dataset == p.dataset for m in p.models)
    assert list(p.eps_grid) == sorted(p.eps_grid) and p.eps_grid[0] == 0
    assert p.n_eval > 0 and p.attack_steps > 0 and p.batch_size > 0
    # Part 4's defenses: the standard model is the profile's CNN, the others name their own recipe
    assert p.defense_models["standard"] == p.models[0]
    for method, m in p.defense_models.items():
        e = zoo.ENTRIES[m]
        assert e.dataset == p.dataset and e.arch == zoo.ENTRIES[p.models[0]].arch, m
        assert e.robust == ("" if method == "standard" else method), m
        if e.robust in ("pgd", "trades"):
            assert e.robust_kwargs["eps"] == p.defense_eps, m


def test_fast_profile_needs_nothing_downloaded():
    p = advlib.PROFILES["fast"]
    assert data.SPECS[p.dataset].offline and data.SPECS[p.series].offline
    assert all(zoo.ENTRIES[m].shipped for m in p.models)
    assert all(zoo.ENTRIES[m].shipped for m in p.defense_models.values())


def test_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.delenv("ADVLIB_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert advlib.device().type == "cpu"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert advlib.device().type == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert advlib.device().type == "cuda"


def test_device_override_and_clear_error(monkeypatch):
    monkeypatch.setenv("ADVLIB_DEVICE", "cpu")
    assert advlib.device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("ADVLIB_DEVICE", "cuda")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        advlib.device()


def test_seed_everything_repeats_runs():
    advlib.seed_everything(3)
    a = torch.rand(5), torch.randn(2, 2)
    g = advlib.seed_everything(3)
    b = torch.rand(5), torch.randn(2, 2)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError):
        advlib.seed_everything(-1)
