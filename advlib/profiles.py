"""The run profiles: one place that says how big every experiment of the course is.

A run is chosen by two independent settings:

* the **profile** (``ADVLIB_PROFILE=fast|full``) says *what* runs: the data set, the zoo models, the
  image size, the radii. ``fast`` (the default) runs offline on the bundled 8x8 digits with the
  shipped zoo models: it is what CI, homework and a laptop use. ``full`` uses MNIST (28x28) and the
  ``mnist-*`` zoo entries: it needs the data set downloaded (``python -m advlib.data fetch mnist``)
  and, in practice, a GPU.
* the **size** (``ADVLIB_SIZE=standard|toy``) says *how much* of it runs. ``standard`` (the default)
  keeps the profile's own budgets; ``toy`` caps the number of test points, attack steps, restarts,
  training epochs and Monte Carlo samples (see :data:`SIZES`) and changes nothing else, so the same
  code paths run on the same data, models and shapes in a few minutes at most per lecture on a CPU.
  The zoo's recipes are not budgets of a run: an on-demand entry is trained with its full recipe
  at any size, so the cache never holds a toy-trained model under a full-profile name.
  ``ADVLIB_PROFILE=full ADVLIB_SIZE=toy`` is how CI exercises the full profile (on small files in
  the real MNIST format, see ``tests/test_full_profile.py``).

Every lecture reads its sizes from :func:`profile` instead of hard-coding them.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

__all__ = ["Profile", "PROFILES", "SIZES", "profile"]


@dataclass(frozen=True)
class Profile:
    """Sizes and names shared by every lecture (later parts add fields here, not in notebooks)."""

    name: str
    #: image data set of the lectures (a name in ``advlib.data.catalogue()``)
    dataset: str
    #: zoo models of the lectures; ``models[0]`` is the default victim, ``models[-1]`` the MLP
    models: tuple[str, ...]
    #: robustly trained versions of the MLP ``models[-1]``, by recipe ("pgd": Madry et al., "ibp": Gowal et al.)
    robust_models: dict[str, str]
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
    #: CLEVER's sampling budget: batches of points per input (Weng et al. 2018 use 500) ...
    clever_batches: int
    #: ... and points per batch (Weng et al. use 1,024)
    clever_batch_size: int
    #: Monte Carlo samples n of randomized smoothing's CERTIFY (Cohen et al. 2019 use 100,000)
    smoothing_samples: int
    #: Part 2 (black box): the 28x28 image data set of the black-box lectures, where dimension reduction has room
    blackbox_dataset: str = "digits28"
    #: ... its zoo models: ``[0]`` the victim behind the API, ``[1]`` the transfer attack's white-box surrogate
    blackbox_models: tuple[str, ...] = ("digits28-cnn", "digits28-mlp")
    #: ... how many test points a black-box attack runs on
    blackbox_points: int = 10
    #: ... the query budgets of the hard-label table (Cheng et al. 2020 report 4k / 8k / 14k on MNIST)
    query_budgets: tuple[int, ...] = (4_000, 8_000, 14_000)
    #: ... the queries each example may spend in ZOO / AutoZOOM (soft-label table)
    zoo_queries: int = 40_000
    #: Part 4 (defenses): the robustly trained versions of the CNN ``models[0]``, by recipe (``"standard"`` is
    #: ``models[0]`` itself); the robust-training lecture compares them
    defense_models: dict = dataclasses.field(default_factory=lambda: {
        "standard": "digits-cnn", "pgd": "digits-cnn-pgd", "trades": "digits-cnn-trades",
        "sprout": "digits-cnn-sprout", "cat": "digits-cnn-cat"})
    #: ... the L-inf radius the defenses are trained for and evaluated at
    defense_eps: float = 0.1
    #: ... iterations of each gradient attack of the ensemble evaluation (AutoAttack uses 100)
    eval_steps: int = 100
    #: ... queries per point of its score-based member, Square (AutoAttack uses 5,000)
    square_queries: int = 5_000
    #: Part 1b / 4b (training-phase threats): the 28x28 data set of the Trojan population (clean and Trojan
    #: models for the detectors, :func:`advlib.backdoor.population`)
    backdoor_dataset: str = "digits28"
    #: ... sizes of the trusted sets of the sanitisation table (the lecture's 2,500 ... 50 on CIFAR-10,
    #: scaled to the 1,297 training digits)
    trusted_sizes: tuple[int, ...] = (500, 200, 100, 50, 20)
    #: ... how many clean and how many Trojan models of each population split a lecture uses (all: 12)
    population_limit: int = 12
    #: Part 3 (reprogramming): the frozen image classifier the breast-cancer task is reprogrammed into
    reprogram_source: str = "digits-cnn"
    #: ... the frozen 1-D source model of V2S (MNIST-1D generates offline in every profile)
    series_source: str = "mnist1d-cnn"
    #: ... training examples per class of the data-limited target tasks
    reprogram_shots: int = 10
    #: ... epochs of every reprogramming and training-from-scratch run (V2S: Adam lr 0.05, batches of 32)
    reprogram_epochs: int = 200
    #: Part 6a (applications): test points of the contrastive explanations and of the structured-attack comparison
    explain_points: int = 100
    #: ... FISTA / ADMM iterations per binary-search round of CEM and StrAttack (the papers run 1,000)
    explain_steps: int = 200
    #: ... query budgets of the model-extraction curve: inputs the victim labels for the copy (a lecture keeps
    #: those that its pool of unlabelled inputs can pay)
    copy_budgets: tuple[int, ...] = (50, 100, 200, 500, 1_000)
    #: ... members, and as many non-members, of each membership-inference evaluation
    membership_points: int = 500
    #: ... epochs of the models a Part 6 lecture trains itself (the watermarked model, the copies, an overfitted model)
    application_epochs: int = 60
    #: Part 6b (other settings): clients of the federated simulations (on ``backdoor_dataset``) ...
    federated_clients: int = 10
    #: ... clients drawn per round (DBA's paper: 10 of 100)
    federated_per_round: int = 10
    #: ... communication rounds of a federated run
    federated_rounds: int = 20
    #: ... generated series of the temporal-dependency lecture's training set (as many again for testing)
    td_series: int = 300
    #: ... epochs of its sequence labeller
    td_epochs: int = 15
    #: Part 5, further: test points of the complete-verification lecture (α-CROWN, branch and bound) ...
    complete_points: int = 500
    #: ... and seconds of branch and bound per model there
    bab_seconds: int = 30
    #: the capstone (lecture 60): test points of each holistic robustness report
    #: (:func:`advlib.report.robustness_report`)
    report_points: int = 100
    #: ... queries per point of its black-box attack
    report_queries: int = 1_000
    #: the seed every lecture starts from
    seed: int = 0
    #: "standard" (the profile's own budgets) or a key of :data:`SIZES` that capped them
    size: str = "standard"

    def __str__(self) -> str:
        rows = [f"{f.name:>17} = {getattr(self, f.name)!r}" for f in dataclasses.fields(self)]
        return f"Profile {self.name!r} ({self.size} size)\n" + "\n".join(rows)


PROFILES: dict[str, Profile] = {
    "fast": Profile(
        name="fast",
        dataset="digits",
        models=("digits-cnn", "digits-mlp"),
        robust_models={"pgd": "digits-mlp-pgd", "ibp": "digits-mlp-ibp"},
        series="gunpoint",
        n_eval=500,
        batch_size=500,
        attack_steps=20,
        restarts=1,
        eps_grid=(0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2),
        train_epochs=30,
        clever_batches=100,
        clever_batch_size=256,
        smoothing_samples=10_000,
    ),
    "full": Profile(
        name="full",
        dataset="mnist",
        models=("mnist-cnn", "mnist-mlp"),
        robust_models={"pgd": "mnist-mlp-pgd", "ibp": "mnist-mlp-ibp"},
        series="gunpoint",
        n_eval=10_000,
        batch_size=1_000,
        attack_steps=100,
        restarts=5,
        eps_grid=(0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3),
        train_epochs=20,
        clever_batches=500,
        clever_batch_size=1024,
        smoothing_samples=100_000,
        blackbox_dataset="mnist",
        blackbox_models=("mnist-cnn", "mnist-mlp"),
        blackbox_points=100,
        zoo_queries=200_000,
        defense_models={"standard": "mnist-cnn", "pgd": "mnist-cnn-pgd", "trades": "mnist-cnn-trades",
                        "sprout": "mnist-cnn-sprout", "cat": "mnist-cnn-cat"},
        defense_eps=0.3,
        backdoor_dataset="mnist",
        trusted_sizes=(2_500, 1_000, 500, 250, 50),
        reprogram_source="mnist-cnn",
        explain_steps=1_000,
        copy_budgets=(100, 500, 1_000, 5_000, 20_000),
        membership_points=5_000,
        application_epochs=20,
        federated_clients=100,
        federated_rounds=100,
        td_series=4_000,
        td_epochs=40,
        complete_points=1_000,
        bab_seconds=300,
        report_points=1_000,
        report_queries=5_000,
    ),
}

#: size overrides: each caps these fields of any profile at the given value (it never raises one);
#: the data set, the models, the radii and the seed stay the profile's
SIZES: dict[str, dict[str, int]] = {
    "standard": {},
    "toy": {
        "n_eval": 100,
        "batch_size": 10,
        "attack_steps": 20,
        "restarts": 1,
        "train_epochs": 2,
        "clever_batches": 10,
        "clever_batch_size": 64,
        "smoothing_samples": 1_000,
        "blackbox_points": 3,
        "zoo_queries": 4_000,
        "eval_steps": 20,
        "square_queries": 500,
        "population_limit": 2,
        "reprogram_epochs": 20,
        "explain_points": 10,
        "explain_steps": 50,
        "membership_points": 100,
        "application_epochs": 3,
        "federated_clients": 10,
        "federated_rounds": 3,
        "td_series": 60,
        "td_epochs": 2,
        "complete_points": 20,
        "bab_seconds": 5,
        "report_points": 20,
        "report_queries": 100,
    },
}


def _choose(value: str | None, variable: str, default: str, known: dict, what: str) -> str:
    chosen = (value or os.environ.get(variable) or default).strip().lower()
    if chosen not in known:
        raise ValueError(f"unknown {what} {chosen!r} (from {'the argument' if value else variable}); "
                         f"choose one of {sorted(known)}, e.g. {variable}={default}")
    return chosen


def profile(name: str | None = None, size: str | None = None) -> Profile:
    """The active profile: ``name``, else ``$ADVLIB_PROFILE``, else ``fast``; at ``size``, else
    ``$ADVLIB_SIZE``, else ``standard`` (the profile's own budgets).

    ``profile("full", "toy")`` is the full profile (MNIST, the ``mnist-*`` models, its radii) with
    every budget capped by ``SIZES["toy"]``.
    """
    chosen = _choose(name, "ADVLIB_PROFILE", "fast", PROFILES, "profile")
    scale = _choose(size, "ADVLIB_SIZE", "standard", SIZES, "size")
    base = PROFILES[chosen]
    caps = {k: min(getattr(base, k), v) for k, v in SIZES[scale].items()}
    return dataclasses.replace(base, size=scale, **caps)
