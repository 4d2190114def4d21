"""The run profiles: one place that says how big every experiment of the course is.

``fast`` (the default) runs offline on the bundled digits with the shipped zoo models and small
sample and step counts: it is what CI, homework and a laptop use. ``full`` uses MNIST / CIFAR-10
and budgets close to the papers': it needs the data sets downloaded (``python -m advlib.data fetch
mnist``) and, in practice, a GPU. Select with ``ADVLIB_PROFILE=fast|full``; every lecture reads its
sizes from :func:`profile` instead of hard-coding them.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

__all__ = ["Profile", "PROFILES", "profile"]


@dataclass(frozen=True)
class Profile:
    """Sizes and names shared by every lecture (later parts add fields here, not in notebooks)."""

    name: str
    #: image data set of the lectures (a name in ``advlib.data.catalogue()``)
    dataset: str
    #: zoo models of the lectures; ``models[0]`` is the default victim
    models: tuple[str, ...]
    #: bundled or downloadable time-series data set (reprogramming lectures)
    series: str
    #: how many test points an evaluation uses
    n_eval: int
    #: batch size for evaluation and attacks
    batch_size: int
    #: iterations of an iterative attack (PGD and friends)
    attack_steps: int
    #: random restarts of an attack
    restarts: int
    #: the L-infinity radii of accuracy-versus-epsilon curves
    eps_grid: tuple[float, ...]
    #: epochs when a lecture trains a model itself
    train_epochs: int
    #: the seed every lecture starts from
    seed: int = 0

    def __str__(self) -> str:
        rows = [f"{f.name:>13} = {getattr(self, f.name)!r}" for f in dataclasses.fields(self)]
        return f"Profile {self.name!r}\n" + "\n".join(rows)


PROFILES: dict[str, Profile] = {
    "fast": Profile(
        name="fast",
        dataset="digits",
        models=("digits-cnn", "digits-mlp"),
        series="gunpoint",
        n_eval=500,
        batch_size=500,
        attack_steps=20,
        restarts=1,
        eps_grid=(0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2),
        train_epochs=30,
    ),
    "full": Profile(
        name="full",
        dataset="mnist",
        models=("mnist-cnn", "mnist-mlp"),
        series="gunpoint",
        n_eval=10_000,
        batch_size=1_000,
        attack_steps=100,
        restarts=5,
        eps_grid=(0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3),
        train_epochs=20,
    ),
}


def profile(name: str | None = None) -> Profile:
    """The active profile: ``name``, else ``$ADVLIB_PROFILE``, else ``fast``."""
    chosen = (name or os.environ.get("ADVLIB_PROFILE") or "fast").strip().lower()
    if chosen not in PROFILES:
        raise ValueError(f"unknown profile {chosen!r} (from {'the argument' if name else 'ADVLIB_PROFILE'}); "
                         f"choose one of {sorted(PROFILES)}, e.g. ADVLIB_PROFILE=fast")
    return PROFILES[chosen]
