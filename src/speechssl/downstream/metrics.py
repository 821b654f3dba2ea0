"""Downstream metrics: verification (EER, minDCF), classification and ASR error rates.

Deliberately free of torch: the metrics are computed on plain arrays collected after
evaluation, so they can be unit-tested against scikit-learn and reused by scripts that
only read saved scores.

Verification conventions (shared by :func:`eer`, :func:`eer_threshold`, :func:`min_dcf`)
---------------------------------------------------------------------------------------
A trial is *accepted* when ``score >= threshold``; ``labels`` are 1 for target trials
(same speaker) and 0 for non-target trials. The ROC is computed exactly by sorting the
scores: each distinct score value is one operating point, so trials with equal scores are
accepted or rejected together (a tie between a target and a non-target cannot be split by
any threshold). The operating points run from "reject everything" (FAR = 0, FRR = 1) to
"accept everything" (FAR = 1, FRR = 0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jiwer
import numpy as np
from sklearn.metrics import f1_score

__all__ = ["accuracy", "eer", "eer_threshold", "error_rates", "macro_f1", "min_dcf"]


# --------------------------------------------------------------------------- verification


def _validate_trials(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """Scores as float64 and labels as 0/1 int arrays, or a ValueError saying what is wrong.

    Every check here guards a silent failure: NaN sorts arbitrarily, a single class makes
    FAR or FRR 0/0, and mismatched lengths would be broadcast or truncated by numpy.
    """
    try:
        s = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"scores must be numeric: {exc}") from None
    y = np.asarray(labels)
    if s.ndim != 1 or y.ndim != 1:
        raise ValueError(f"scores and labels must be 1-D, got shapes {s.shape} and {y.shape}")
    if s.size != y.size:
        raise ValueError(f"scores and labels differ in length: {s.size} scores, {y.size} labels")
    if s.size == 0:
        raise ValueError("no trials: scores and labels are empty")
    if np.isnan(s).any():
        raise ValueError(f"scores contain {int(np.isnan(s).sum())} NaN value(s)")
    if y.dtype == bool:
        y = y.astype(np.int64)
    if not (np.issubdtype(y.dtype, np.number) and np.isin(y, (0, 1)).all()):
        raise ValueError("labels must be 0 (non-target) or 1 (target)")
    y = y.astype(np.int64)
    n_tar = int(y.sum())
    if n_tar == 0 or n_tar == y.size:
        kind = "target" if n_tar else "non-target"
        raise ValueError(f"need both target and non-target trials, got only {kind} trials")
    return s, y


def _operating_points(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact ROC as (far, frr, thresholds), one point per distinct score plus "reject all".

    ``thresholds[0]`` is +inf and stands for "accept nothing"; ``thresholds[k]`` (k >= 1) is
    the k-th largest distinct score, and point k is the rule ``score >= thresholds[k]``.
    """
    s, y = _validate_trials(scores, labels)
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    n_tar = int(y.sum())
    n_non = y.size - n_tar
    hits = np.cumsum(y_sorted)
    false_alarms = np.cumsum(1 - y_sorted)
    # Last index of each group of equal scores (compare values, not np.diff, so that ties
    # between infinite scores are still ties: inf - inf is NaN).
    last = np.r_[np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), s.size - 1]
    far = np.r_[0.0, false_alarms[last] / n_non]
    frr = np.r_[1.0, (n_tar - hits[last]) / n_tar]
    thresholds = np.r_[np.inf, s_sorted[last]]
    return far, frr, thresholds


def _eer_crossing(far: np.ndarray, frr: np.ndarray) -> tuple[int, float]:
    """Index k of the first point with FRR <= FAR, and the fraction ``alpha`` along k-1 -> k.

    Point 0 always has FRR - FAR = 1 and the last point -1, so the crossing exists and k >= 1.
    """
    d = frr - far
    k = int(np.argmax(d <= 0))
    alpha = d[k - 1] / (d[k - 1] - d[k])
    return k, float(alpha)


def eer(scores, labels) -> float:
    """Equal error rate, in [0, 1] (not percent).

    With finitely many trials FAR and FRR are step functions that rarely meet exactly, so
    "the" EER needs a convention. Here: the ROC points (FAR_k, FRR_k) are joined by straight
    segments and the EER is where that polyline crosses the diagonal FAR = FRR. If k is the
    first point with FRR_k <= FAR_k, the crossing lies on the segment from k-1 to k at
    ``alpha = d[k-1] / (d[k-1] - d[k])`` with ``d = FRR - FAR``, and
    ``EER = FAR[k-1] + alpha * (FAR[k] - FAR[k-1])`` (equal to the FRR there).

    This is exact when an operating point lies on the diagonal, depends only on the order
    of the scores (invariant to any strictly increasing transform), and treats a tie between
    targets and non-targets as a diagonal segment: one target tied with one non-target
    gives 0.5, not 0 or 1.
    """
    far, frr, _ = _operating_points(scores, labels)
    k, alpha = _eer_crossing(far, frr)
    return float(far[k - 1] + alpha * (far[k] - far[k - 1]))


def eer_threshold(scores, labels) -> float:
    """Score threshold (accept ``score >= threshold``) at the EER crossing.

    Interpolated with the same ``alpha`` as :func:`eer` between the thresholds of the two
    bracketing ROC points, i.e. it lies in ``[thresholds[k], thresholds[k-1])``. If the
    crossing is on the first segment (k = 1, whose start is "accept nothing" at +inf), the
    threshold is the highest score. Unlike the EER value, this depends on the score scale:
    it is meant for applying a dev-set operating point to new trials.
    """
    far, frr, thresholds = _operating_points(scores, labels)
    k, alpha = _eer_crossing(far, frr)
    if k == 1 or alpha >= 1.0:
        return float(thresholds[k])
    return float(thresholds[k - 1] + alpha * (thresholds[k] - thresholds[k - 1]))


def min_dcf(scores, labels, p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    """Normalised minimum detection cost (NIST SRE / VoxCeleb convention).

    ``DCF(t) = c_miss * P_miss(t) * p_target + c_fa * P_fa(t) * (1 - p_target)`` is minimised
    over all ROC operating points, "accept nothing" and "accept everything" included, and
    divided by ``min(c_miss * p_target, c_fa * (1 - p_target))``, the cost of the better of
    those two trivial systems. A value of 1 therefore means the scores are no better than
    always deciding the same way, and the result is never above 1.
    """
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    if not (c_miss > 0 and c_fa > 0):
        raise ValueError(f"c_miss and c_fa must be positive, got {c_miss} and {c_fa}")
    far, frr, _ = _operating_points(scores, labels)
    dcf = c_miss * frr * p_target + c_fa * far * (1.0 - p_target)
    c_default = min(c_miss * p_target, c_fa * (1.0 - p_target))
    return float(dcf.min() / c_default)


# --------------------------------------------------------------------------- classification


def _paired(pred, true) -> tuple[list, list]:
    pred, true = list(pred), list(true)
    if len(pred) != len(true):
        raise ValueError(f"pred and true differ in length: {len(pred)} vs {len(true)}")
    if not pred:
        raise ValueError("no predictions: pred and true are empty")
    return pred, true


def accuracy(pred, true) -> float:
    """Fraction of predictions equal to the true label."""
    pred, true = _paired(pred, true)
    return sum(p == t for p, t in zip(pred, true)) / len(pred)


def macro_f1(pred, true, labels=None) -> float:
    """Unweighted mean of per-class F1, so that rare classes count as much as frequent ones.

    ``labels`` defaults to the union of classes seen in ``pred`` and ``true``. Passing the
    full label set matters when some class never occurs in an evaluation split: it then
    contributes an F1 of 0 (``zero_division=0``) instead of silently dropping out.
    """
    pred, true = _paired(pred, true)
    if labels is None:
        labels = set(pred) | set(true)
        try:
            labels = sorted(labels)
        except TypeError:  # mixed label types: the order does not change a macro average
            labels = list(labels)
    labels = list(labels)
    if not labels:
        raise ValueError("labels is empty")
    return float(f1_score(true, pred, labels=labels, average="macro", zero_division=0))


# --------------------------------------------------------------------------- ASR


def error_rates(
    refs: Sequence[str], hyps: Sequence[str], normalize: Callable[[str], str] | None = None
) -> dict[str, float]:
    """Corpus-level word and character error rates, as fractions (not percent).

    Corpus level means total edits over total reference words (characters), which is the
    number ASR papers report, not the mean of per-utterance rates. Before scoring, each
    string goes through ``normalize`` (if given, e.g. a ``TextNormalizer``) and then has its
    whitespace collapsed, so CER does not count doubled or leading spaces, which a CTC
    decoder emits freely and which carry no information.

    An empty hypothesis is allowed and counts as deleting the whole reference. An empty
    reference is rejected: it has no words to normalise the error count by, and jiwer's
    handling of it changed between versions (3.x raises, 4.x counts insertions).
    """
    refs, hyps = list(refs), list(hyps)
    if len(refs) != len(hyps):
        raise ValueError(f"refs and hyps differ in length: {len(refs)} vs {len(hyps)}")
    if not refs:
        raise ValueError("no utterances: refs and hyps are empty")

    def clean(text, what: str, i: int) -> str:
        if not isinstance(text, str):
            raise ValueError(f"{what}[{i}] is {type(text).__name__}, not str")
        if normalize is not None:
            text = normalize(text)
        return " ".join(text.split())

    refs = [clean(r, "refs", i) for i, r in enumerate(refs)]
    hyps = [clean(h, "hyps", i) for i, h in enumerate(hyps)]
    empty = [i for i, r in enumerate(refs) if not r]
    if empty:
        shown = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
        raise ValueError(f"reference(s) empty after normalisation at index {shown}")
    # float(): jiwer 4 returns a plain int in some degenerate cases.
    return {"wer": float(jiwer.wer(refs, hyps)), "cer": float(jiwer.cer(refs, hyps))}
