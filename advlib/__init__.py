"""advlib: the library of the course "Holistic Adversarial Robustness for Deep Learning".

``threat`` is the threat-model core every part shares (norms, projections, margins, input checks,
chunking). Subpackages follow the parts of the course: ``data`` (bundled and downloadable data
sets), ``models`` and ``train`` (small architectures, a plain training loop and the registry of
robust-training recipes), ``zoo`` (shipped, reproducible checkpoints), ``attacks`` (Part 1:
white-box attacks), ``backdoor`` (Parts 1b and 4b: poisoning, backdoors, Trojan detection and
repair), ``zo`` and ``blackbox`` (Part 2: zeroth-order optimisation and black-box
attacks), ``defenses`` (Part 4: robust-training recipes so far), ``verify`` (Part 5:
certificates), ``course`` (environment check, exercises, figures). Reprogramming and applications
follow in their own parts.
"""
from . import attacks, backdoor, blackbox, data, defenses, models, threat, train, verify, zo, zoo  # noqa: F401  (public subpackages)
from .profiles import PROFILES, Profile, profile
from .runtime import device, seed_everything

__version__ = "0.1.0"
__all__ = ["PROFILES", "Profile", "profile", "device", "seed_everything", "threat", "attacks", "backdoor", "blackbox",
           "zo", "data", "defenses", "models", "train", "verify", "zoo", "__version__"]
