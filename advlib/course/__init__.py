"""Helpers for the lecture notebooks: the environment check, exercise checks, shared figures.

Exercise pattern used in every lecture: the learner fills a function in an exercise cell, then
runs a check cell, which says "not attempted yet" for a stub that raises ``NotImplementedError``
and otherwise tests the answer from first principles with a hint when it is wrong. A hidden
solution cell follows and runs the same check with ``strict=True``, so CI proves every check
passes on its solution. ``python -m advlib.course strip`` removes the solutions for homework, and
``python -m advlib.course grade`` grades what comes back (:mod:`advlib.course.grading`). The
interactive explorers of lectures 0, 1, 10 and 40 are in :mod:`advlib.course.explorers`.
"""
from __future__ import annotations

import platform
import sys

from .exercises import ExerciseError, attempt, or_reference

__all__ = ["check_environment", "attempt", "or_reference", "ExerciseError"]


def check_environment(verbose: bool = True) -> dict:
    """Report versions, the device, the profile and the offline assets; raise if any is broken."""
    import numpy
    import sklearn
    import torch
    import torchvision

    import advlib

    dev = advlib.device()
    info = {
        "python": platform.python_version(),
        "advlib": advlib.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "scikit-learn": sklearn.__version__,
        "device": str(dev) + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""),
        "torch threads": torch.get_num_threads(),
        "profile": advlib.profile().name,
        "data cache": str(advlib.data.cache_dir()),
    }
    shipped = advlib.zoo.manifest()
    for name in shipped:  # loads and checks the SHA-256 of every shipped checkpoint
        advlib.zoo.load(name, "cpu")
    info["shipped models"] = ", ".join(f"{n} ({r['test_accuracy']:.1%})" for n, r in shipped.items())
    info["bundled data"] = ", ".join(s.name for s in advlib.data.catalogue() if s.offline)
    if verbose:
        width = max(map(len, info))
        print("\n".join(f"{k:>{width}} : {v}" for k, v in info.items()), file=sys.stdout)
    return info
