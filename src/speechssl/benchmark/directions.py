"""Which way is better, read from a metric's name.

Error rates and costs are lower-is-better; accuracies and scores are higher-is-better.
The name is matched case-insensitively on its leading word, so ``cer_beam``,
``WER-clean`` and ``eer@vox1`` resolve like ``cer``, ``wer`` and ``eer``. An unknown name
returns None: the caller must then be told (the import format has an override column).
"""

from __future__ import annotations

import re

LOWER_IS_BETTER = frozenset(
    {"wer", "cer", "per", "ser", "der", "eer", "mindcf", "dcf", "loss", "mse", "mae", "rmse",
     "error", "err", "ter", "seconds", "time", "flops", "macs", "params", "energy", "co2", "kwh",
     "slot_value_cer"}
)
HIGHER_IS_BETTER = frozenset(
    {"acc", "accuracy", "f1", "macro_f1", "bleu", "chrf", "precision", "recall", "auc",
     "map", "ndcg", "mos", "score", "slu_f1", "sf1", "corr", "pearson", "spearman",
     "uar", "slot_type_f1", "pos_accuracy", "pos_accuracy_aligned", "lid_accuracy"}
)



def metric_direction(metric: str) -> bool | None:
    """True if higher is better, False if lower is better, None if the name is unknown."""
    name = metric.strip().lower()
    if name in HIGHER_IS_BETTER:
        return True
    if name in LOWER_IS_BETTER:
        return False
    # A known multi-word name with a suffix (slot_type_f1_beam), longest first; then the
    # leading word (cer_beam, WER-clean).
    for known in sorted(HIGHER_IS_BETTER | LOWER_IS_BETTER, key=len, reverse=True):
        if "_" in known and re.match(re.escape(known) + r"[^a-z0-9]", name):
            return known in HIGHER_IS_BETTER
    lead = re.split(r"[^a-z0-9]", name, maxsplit=1)[0]
    if lead in HIGHER_IS_BETTER:
        return True
    if lead in LOWER_IS_BETTER:
        return False
    return None
