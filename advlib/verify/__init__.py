"""Verification (Part 5): certificates by bound propagation, CLEVER, randomized smoothing.

One calling convention, that of the attacks with the radius by keyword::

    b = advlib.verify.bounds(model, x, y, eps=0.05, norm="linf", method="crown")   # Bounds
    b.lower            # N x (K-1): lower bounds of the margins z_y - z_j over the ball in [0, 1]
    advlib.verify.certify(model, x, y, eps=0.05)                   # True where certified
    advlib.verify.certified_radius(model, x, y, norm="l2")         # per input, by bisection

``bounds.py`` is the engine (IBP, Fast-Lin, CROWN; convolutions as convolutions, CNN-Cert),
``alpha.py`` optimises CROWN's relaxation (α-CROWN, ``method="alpha-crown"``), ``bab.py`` decides
ReLU networks completely by branch and bound (β-CROWN style),
``certify.py`` turns bounds into certified radii and accuracy, ``semantic.py`` certifies rotations
(Semantify-NN style), ``clever.py`` estimates robustness from extreme value theory, ``smoothing.py``
certifies a smoothed classifier, ``exact.py`` solves tiny networks exactly (LP / MILP) as the
oracle the engine is tested against. Inputs are checked by :mod:`advlib.threat`. The result types:
:class:`Bounds`, :class:`BaBResult`, :class:`CleverResult`, :class:`SmoothedCertificate`, :class:`MILPResult`.
"""
from .alpha import alpha_crown
from .bab import BAB_STATUS, BaBResult, TreeNode, branch_and_bound
from .bounds import (
                        ALL_METHODS,
                        METHODS,
                        Bounds,
                        Node,
                        bounds,
                        initial_alpha,
                        margin_matrix,
                        propagate,
                        relaxation,
                        trace,
)
from .certify import RADIUS_BRACKET, certified_accuracy, certified_radius, certify, ibp_loss
from .clever import CleverResult, clever
from .exact import MILPResult
from .semantic import certify_rotation, rotate, rotation_attack, rotation_box
from .smoothing import (
                        ABSTAIN,
                        Smoothed,
                        SmoothedCertificate,
                        certified_accuracy_curve,
                        clopper_pearson_lower,
                        gaussian_augment,
)

__all__ = ["METHODS", "ALL_METHODS", "Bounds", "Node", "bounds", "margin_matrix", "propagate", "relaxation", "trace",
           "alpha_crown", "initial_alpha", "branch_and_bound", "BaBResult", "TreeNode", "BAB_STATUS",
           "certify", "certified_radius", "certified_accuracy", "ibp_loss", "RADIUS_BRACKET", "clever",
           "CleverResult", "Smoothed", "SmoothedCertificate", "ABSTAIN", "certified_accuracy_curve",
           "clopper_pearson_lower", "gaussian_augment", "MILPResult", "rotate", "rotation_box", "certify_rotation",
           "rotation_attack"]
