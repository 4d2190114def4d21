"""Part 3: model reprogramming, adversarial ML for good.

A trainable input transformation (:class:`Program`) and an output label mapping (:class:`LabelMap`) make
a frozen source model solve a new, data-poor target task: white box (:func:`ar`), black box through
zeroth-order estimates that count every query (:func:`bar`), and across domains for time series
(:func:`v2s`). :func:`sliced_wasserstein` / :func:`alignment` measure the representation-alignment term
of the reprogramming risk bound. Target tasks and baselines: :mod:`advlib.reprogram.tasks`,
:mod:`advlib.reprogram.baselines`.
"""
from ._common import Reprogrammed, initial_mapping
from .ar import ar
from .bar import bar
from .baselines import classical, linear_probe, scratch
from .losses import focal_loss, target_loss
from .mapping import LabelMap, frequency_mapping, one_to_one, random_many_to_one
from .program import Program
from .swd import alignment, sliced_wasserstein, wasserstein_1d
from .tasks import TASKS, Task, encode_table, few_shot, task
from .v2s import v2s

__all__ = ["Program", "LabelMap", "one_to_one", "random_many_to_one", "frequency_mapping", "initial_mapping",
           "focal_loss", "target_loss", "Reprogrammed", "ar", "bar", "v2s", "wasserstein_1d", "sliced_wasserstein",
           "alignment", "scratch", "linear_probe", "classical", "Task", "TASKS", "task", "few_shot", "encode_table"]
