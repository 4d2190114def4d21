"""White-box attacks (Part 1). One calling convention for all of them::

    x_adv = advlib.attacks.pgd(model, x, y, eps=0.1, steps=20, norm="linf", targeted=False)

Inputs in [0, 1] on the model's device, labels (or targets with ``targeted=True``); the result lies
in [0, 1] and in the attack's threat model. See ``_common.py`` for the shared checks and projections.
"""
from ._common import NORMS, check_inputs, lp_norm, margin, project
from .cw import BinarySearch, EarlyAbort, cw_l2, minimal_pgd
from .ead import ead, elastic_net, shrink
from .eot import eot_pgd, eot_success, random_transform
from .evaluate import accuracy_vs_eps, distortion, robust_accuracy, success_rate
from .jsma import jsma
from .pgd import fgsm, pgd
from .strattack import group_ids, group_norms, group_shrink, group_sparsity, strattack
from .universal import apply_universal, average_ensemble, minmax_ensemble, minmax_universal, project_simplex, universal

__all__ = ["NORMS", "check_inputs", "lp_norm", "margin", "project", "fgsm", "pgd", "robust_accuracy",
           "success_rate", "distortion", "accuracy_vs_eps"]
__all__ += ["universal", "apply_universal", "project_simplex", "minmax_ensemble", "average_ensemble",
            "minmax_universal", "eot_pgd", "eot_success", "random_transform"]
__all__ += ["cw_l2", "minimal_pgd", "ead", "elastic_net", "shrink", "jsma", "BinarySearch", "EarlyAbort"]
__all__ += ["strattack", "group_ids", "group_norms", "group_shrink", "group_sparsity"]
