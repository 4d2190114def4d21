"""White-box attacks (Part 1). One calling convention for all of them::

    x_adv = advlib.attacks.pgd(model, x, y, eps=0.1, steps=20, norm="linf", targeted=False)

Inputs in [0, 1] on the model's device, labels (or targets with ``targeted=True``); the result lies
in [0, 1] and in the attack's threat model. See ``_common.py`` for the shared checks and projections.
"""
from ._common import NORMS, check_inputs, lp_norm, margin, project
from .evaluate import accuracy_vs_eps, distortion, robust_accuracy, success_rate
from .pgd import fgsm, pgd

__all__ = ["NORMS", "check_inputs", "lp_norm", "margin", "project", "fgsm", "pgd", "robust_accuracy",
           "success_rate", "distortion", "accuracy_vs_eps"]
