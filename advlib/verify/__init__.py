"""Verification (Part 5): certificates by bound propagation, CLEVER, randomized smoothing.

    lower, upper = advlib.verify.bounds(model, x, eps=0.05, norm="linf", method="crown",
                                        C=advlib.verify.margin_matrix(y, 10))

``bounds.py`` is the engine (IBP, Fast-Lin, CROWN; convolutions as convolutions, CNN-Cert),
``certify.py`` turns bounds into certified radii and accuracy, ``semantic.py`` certifies rotations
(Semantify-NN style), ``clever.py`` estimates robustness
from extreme value theory, ``smoothing.py`` certifies a smoothed classifier, ``exact.py`` solves
tiny networks exactly (LP / MILP) as the oracle the engine is tested against.
"""
from .bounds import METHODS, Bounds, Node, bounds, margin_matrix, propagate, relaxation, trace
from .certify import certified_accuracy, certified_radius, certify, ibp_loss
from .clever import CleverResult, clever
from .semantic import certify_rotation, rotate, rotation_attack, rotation_box
from .smoothing import ABSTAIN, Smoothed, certified_accuracy_curve, clopper_pearson_lower, gaussian_augment

__all__ = ["METHODS", "Bounds", "Node", "bounds", "margin_matrix", "propagate", "relaxation", "trace",
           "certify", "certified_radius", "certified_accuracy", "ibp_loss", "clever", "CleverResult", "Smoothed",
           "ABSTAIN", "certified_accuracy_curve", "clopper_pearson_lower", "gaussian_augment", "rotate", "rotation_box",
           "certify_rotation", "rotation_attack"]
