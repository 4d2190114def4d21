"""advlib: the library of the course "Holistic Adversarial Robustness for Deep Learning".

``threat`` is the threat-model core every part shares (norms, projections, margins, input checks,
chunking). Subpackages follow the parts of the course: ``data`` (bundled and downloadable data
sets), ``models`` and ``train`` (small architectures, a plain training loop and the registry of
robust-training recipes), ``zoo`` (shipped, reproducible checkpoints), ``attacks`` (Part 1:
white-box attacks), ``backdoor`` (Parts 1b and 4b: poisoning, backdoors, Trojan detection and
repair), ``zo`` and ``blackbox`` (Part 2: zeroth-order optimisation and black-box
attacks), ``reprogram`` (Part 3: model reprogramming), ``defenses`` (Part 4: robust training,
input transformations, the ensemble evaluation), ``verify`` (Part 5: certificates),
``applications`` (Part 6: contrastive explanations, watermarks, model extraction, membership
inference), ``report`` (the holistic robustness report of the capstone), ``course`` (environment
check, exercises and their grader, explorers, figures).
"""
from . import (  # noqa: F401  (public subpackages)
    applications,
    attacks,
    backdoor,
    blackbox,
    data,
    defenses,
    models,
    report,
    reprogram,
    threat,
    train,
    verify,
    zo,
    zoo,
)
from .profiles import PROFILES, Profile, profile
from .runtime import device, seed_everything

__version__ = "0.1.0"
__all__ = ["PROFILES", "Profile", "profile", "device", "seed_everything", "threat", "attacks", "backdoor", "blackbox",
           "zo", "data", "defenses", "models", "train", "verify", "zoo", "reprogram", "applications", "report",
           "__version__"]
