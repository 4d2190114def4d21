"""Part 6: the attack machinery as a tool, and what else a model gives away.

* :mod:`~advlib.applications.cem` — contrastive explanations (pertinent negatives and positives) by
  EAD's elastic-net solver (Dhurandhar et al. 2018);
* structured attacks are :func:`advlib.attacks.strattack` (Xu et al. 2019), beside C&W and EAD;
* :mod:`~advlib.applications.watermark` — an N-bit signature in the input gradients of a key set,
  embedded in training and read back white-box or through a black box by gradient estimation;
* :mod:`~advlib.applications.extraction` — a copy of a black box trained on its answers (Tramèr et
  al. 2016), its agreement with the victim and its use as a transfer surrogate;
* :mod:`~advlib.applications.membership` — threshold membership-inference attacks and their ROC
  (Yeom et al. 2018; Salem et al. 2019).
"""
from .cem import autoencoder, explain, pertinent_negative, pertinent_positive
from .extraction import agreement, copycat, random_sign_noise
from .membership import KINDS, evaluate, membership_scores, roc
from .watermark import (
    Watermark,
    bit_error,
    embed,
    extract,
    extract_blackbox,
    key_gradients,
    make_watermark,
    watermark_loss,
)

__all__ = ["pertinent_negative", "pertinent_positive", "explain", "autoencoder",
           "copycat", "agreement", "random_sign_noise",
           "membership_scores", "roc", "evaluate", "KINDS",
           "Watermark", "make_watermark", "key_gradients", "watermark_loss", "embed", "extract", "extract_blackbox",
           "bit_error"]
