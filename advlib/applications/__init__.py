"""Part 6: the attack machinery as a tool, and what else a model gives away.

* :mod:`~advlib.applications.cem` — contrastive explanations (pertinent negatives and positives) by
  EAD's elastic-net solver (Dhurandhar et al. 2018);
* structured attacks are :func:`advlib.attacks.strattack` (Xu et al. 2019), beside C&W and EAD;
* :mod:`~advlib.applications.watermark` — an N-bit signature in the input gradients of a key set,
  embedded in training and read back white-box or through a black box by gradient estimation;
* :mod:`~advlib.applications.extraction` — a copy of a black box trained on its answers (Tramèr et
  al. 2016), its agreement with the victim and its use as a transfer surrogate;
* :mod:`~advlib.applications.membership` — threshold membership-inference attacks and their ROC
  (Yeom et al. 2018; Salem et al. 2019);
* :mod:`~advlib.applications.federated` — federated learning with honest and malicious clients,
  robust aggregation (FedAvg, Krum, Multi-Krum, Bulyan, trimmed mean, median) and the distributed
  backdoor attack DBA (Xie et al. 2020);
* :mod:`~advlib.applications.temporal` — temporal-dependency detection of adversarial sequences
  (Yang et al. 2019) on a bidirectional sequence labeller.
"""
from .cem import autoencoder, explain, pertinent_negative, pertinent_positive
from .extraction import agreement, copycat, random_sign_noise
from .federated import (
    AGGREGATORS,
    Client,
    bulyan,
    dba_triggers,
    fedavg,
    flat_params,
    krum,
    krum_scores,
    local_update,
    median,
    multi_krum,
    set_params,
    split_clients,
    train_federated,
    trimmed_mean,
)
from .membership import KINDS, evaluate, membership_scores, roc
from .temporal import Tagger, segment_series, sequence_pgd, step_accuracy, td_score, train_tagger
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
           "bit_error", "split_clients", "fedavg", "krum_scores", "krum", "multi_krum", "bulyan", "trimmed_mean",
           "median", "AGGREGATORS", "Client", "dba_triggers", "train_federated", "local_update", "flat_params",
           "set_params",
           "segment_series", "Tagger", "train_tagger", "sequence_pgd", "td_score", "step_accuracy"]
