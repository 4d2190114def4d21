"""Defenses (Part 4): robust training, and an evaluation that does not fool itself.

Every robust-training method is a :class:`advlib.train.Recipe` registered by name, so that
:func:`advlib.train.fit` can use it and a zoo entry can name it::

    r = advlib.train.recipe("trades", eps=0.1, beta=6.0)
    advlib.train.fit(model, train, test, epochs=40, recipe=r)

Registered here: ``"pgd"`` (Madry et al., 2018), ``"trades"`` (Zhang et al., 2019), ``"sprout"``
(Cheng et al., 2021), ``"cat"`` (Cheng et al., 2020) and ``"ibp"`` (Gowal et al., 2018). HRS
(Wang et al., 2019) is a model trained in stages: :class:`HRS`, :func:`hrs_cnn`, :func:`hrs_train`.

Input-transformation defenses (feature squeezing, spatial smoothing, random resize-and-pad) and the
adaptive attacks that break them (BPDA, and EOT from :func:`advlib.attacks.eot_pgd`) are in
``transforms``.

A defense is measured with :func:`evaluate`, an AutoAttack-style ensemble (Croce & Hein, 2020):
APGD-CE, APGD-T with the targeted DLR loss, FAB-T and the score-based Square, each run on the points
still standing, the per-point worst case kept::

    ev = advlib.defenses.evaluate(model, x, y, eps=0.1)
    ev.robust_accuracy, ev.per_attack, ev.masking
    print(ev.table())
"""
from .apgd import apgd, apgd_targeted, checkpoints, dlr_loss, dlr_targeted_loss, halve_step, top_targets
from .cat import CatState, cat_training
from .evaluate import AttackResult, Evaluation, Report, evaluate, report
from .fab import fab_targeted, project_boundary
from .hrs import HRS, hrs_cnn, hrs_train
from .recipes import ibp_training, pgd_training
from .sprout import SproutState, sprout_labels, sprout_training
from .trades import trades_loss, trades_training
from .transforms import (
                         FeatureSqueezing,
                         Transformed,
                         bit_depth,
                         bpda,
                         median_smooth,
                         random_resize_pad,
                         soft_bit_depth,
                         spatial_smooth,
)

__all__ = ["pgd_training", "ibp_training", "trades_training", "trades_loss", "sprout_training", "sprout_labels",
           "SproutState", "cat_training", "CatState"]
__all__ += ["HRS", "hrs_cnn", "hrs_train"]
__all__ += ["evaluate", "report", "Evaluation", "Report", "AttackResult", "apgd", "apgd_targeted", "top_targets",
            "checkpoints", "halve_step", "dlr_loss", "dlr_targeted_loss", "fab_targeted", "project_boundary"]
__all__ += ["bit_depth", "soft_bit_depth", "median_smooth", "spatial_smooth", "random_resize_pad", "bpda",
            "Transformed", "FeatureSqueezing"]
