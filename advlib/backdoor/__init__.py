"""Training-phase threats (Parts 1b and 4b): poisoning and backdoors, Trojan detection with almost
no data, and sanitisation of a suspect model with a few trusted samples.

- **Attack** (``poison``): a trigger is a mask and a pattern, ``x' = (1 - m) * x + m * p``
  (:func:`patch_trigger`, BadNets; :func:`blend_trigger`); :func:`poison` stamps and relabels a
  fraction of a training set (all-to-one or all-to-all); :func:`label_flip` and :func:`clean_label`
  are the contrasts; :func:`attack_success_rate` and :func:`backdoor_metrics` measure a backdoor.
- **Detection** (``tnd``, ``cleanse``): :func:`dl_tnd` (Wang et al. 2020, one clean sample per
  class), :func:`df_tnd` (its data-free variant) and :func:`neural_cleanse` (Wang et al. 2019) each
  return a :class:`Detection`: verdict, score, suspected target, recovered trigger, cost.
  :func:`population` is a seeded set of clean and Trojan models to judge them on, with a
  calibration split for thresholds (:func:`calibrate`) and a held-out split for reporting.
- **Sanitisation** (``repair``): mode-connectivity repair (Zhao et al. 2020) — :func:`connect` trains
  the control point of a quadratic Bézier curve between two models on trusted data, :func:`sanitise`
  is the whole recipe — and the baselines :func:`fine_tune`, :func:`fine_prune`,
  :func:`train_scratch`, :func:`noisy_model`.

``python -m advlib.backdoor population`` trains the population; ``... detect`` records how the
detectors judge it.
"""
from ._common import Counted, Detection, take_per_class
from .cleanse import MAD_CONSISTENCY, cost_schedule, mad_anomaly, neural_cleanse
from .poison import (
                     Poisoned,
                     Trigger,
                     attack_success_rate,
                     backdoor_metrics,
                     blend_trigger,
                     clean_label,
                     label_flip,
                     patch_trigger,
                     poison,
                     target_labels,
)
from .population import Member, detections, population, train_member
from .repair import (
                     Path,
                     Repair,
                     bezier,
                     channel_activity,
                     choose_t,
                     connect,
                     fine_prune,
                     fine_tune,
                     noisy_model,
                     sanitise,
                     train_scratch,
                     weight_distance,
)
from .tnd import calibrate, df_tnd, dl_tnd, masked_perturbations

__all__ = ["Trigger", "patch_trigger", "blend_trigger", "Poisoned", "poison", "label_flip", "clean_label",
           "target_labels", "attack_success_rate", "backdoor_metrics", "Detection", "take_per_class", "Counted",
           "neural_cleanse", "mad_anomaly", "cost_schedule", "MAD_CONSISTENCY", "dl_tnd", "df_tnd",
           "masked_perturbations", "calibrate", "Member", "population", "train_member", "detections", "bezier", "Path",
           "connect", "choose_t", "sanitise", "Repair", "fine_tune", "fine_prune", "channel_activity", "train_scratch",
           "noisy_model", "weight_distance"]
