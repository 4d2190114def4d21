"""advlib: the library of the course "Holistic Adversarial Robustness for Deep Learning".

Subpackages follow the parts of the course: ``data`` (bundled and downloadable data sets),
``models`` and ``train`` (small architectures and a plain training loop), ``zoo`` (shipped,
reproducible checkpoints), ``attacks`` (Part 1: white-box attacks), ``course`` (environment check,
exercises, figures). Black-box optimisation, reprogramming, defenses and verification follow in
their own parts.
"""
from . import attacks, data, models, train, zoo  # noqa: F401  (public subpackages)
from .profiles import PROFILES, Profile, profile
from .runtime import device, seed_everything

__version__ = "0.1.0"
__all__ = ["PROFILES", "Profile", "profile", "device", "seed_everything", "attacks", "data", "models", "train",
           "zoo", "__version__"]
