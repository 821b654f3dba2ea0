"""Downstream metrics: verification (EER, minDCF), classification (accuracy, UAR, macro-F1),
error rates (WER/CER, symbol error rate such as PER), slot filling (SUPERB's slot-type F1
and slot-value CER), translation (BLEU, chrF) and part-of-speech tagging from speech.

Deliberately free of torch: the metrics are computed on plain arrays and lists collected
after evaluation, so they can be unit-tested against scikit-learn and sacrebleu and reused
by scripts that only read saved predictions. Rates and F1 are fractions in [0, 1] (error
rates can exceed 1); BLEU and chrF keep sacrebleu's 0-100 scale.

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

import numpy as np

from speechssl.extras import lazy_import, require

# The [bench] extra; imported on first use, so `import speechssl.downstream.metrics` needs neither.
jiwer = lazy_import("jiwer", "WER/CER scoring")

__all__ = [
    "accuracy",
    "eer",
    "eer_threshold",
    "error_rates",
    "macro_f1",
    "min_dcf",
    "pos_scores",
    "slot_filling_scores",
    "token_error_rate",
    "translation_scores",
    "unweighted_average_recall",
]


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
    f1_score = require("sklearn.metrics", "macro-F1 scoring").f1_score
    return float(f1_score(true, pred, labels=labels, average="macro", zero_division=0))


def unweighted_average_recall(pred, true, labels=None) -> float:
    """Unweighted average recall (UAR): the mean over classes of the fraction of each class's
    utterances predicted correctly, every class weighing the same whatever its size.

    The standard emotion-recognition score (IEMOCAP), equal to scikit-learn's
    ``balanced_accuracy_score``. Only classes that occur in ``true`` are averaged: a class
    with no true utterance has no recall. ``labels``, if given, is the full label set; it
    changes nothing in the value but makes a true label outside it an error instead of a
    class silently scored. Predicting one class for everything gives ``1 / n_classes``.
    """
    pred, true = _paired(pred, true)
    if labels is not None:
        labels = list(labels)
        if not labels:
            raise ValueError("labels is empty")
        unknown = [t for t in dict.fromkeys(true) if t not in labels]
        if unknown:
            raise ValueError(f"true labels not in labels: {unknown[:5]!r}")
    hits: dict = {}
    counts: dict = {}
    for p, t in zip(pred, true):
        counts[t] = counts.get(t, 0) + 1
        hits[t] = hits.get(t, 0) + (p == t)
    return float(np.mean([hits[c] / counts[c] for c in counts]))


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


# --------------------------------------------------------------------------- symbol sequences


def _edit_distance(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance with unit costs between two sequences (strings or lists)."""
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1]


def _paired_sequences(refs, hyps) -> tuple[list[list], list[list]]:
    """refs and hyps as lists of lists, of equal non-zero length, no reference empty.

    A ``str`` is refused as an item: it is a sequence of characters, which is almost always
    a transcript passed where a list of symbols (``text.split()``) was meant.
    """
    refs, hyps = list(refs), list(hyps)
    if len(refs) != len(hyps):
        raise ValueError(f"refs and hyps differ in length: {len(refs)} vs {len(hyps)}")
    if not refs:
        raise ValueError("no utterances: refs and hyps are empty")
    for what, items in (("refs", refs), ("hyps", hyps)):
        for i, item in enumerate(items):
            if isinstance(item, str) or not isinstance(item, Sequence):
                raise ValueError(f"{what}[{i}] is {type(item).__name__}, not a list of symbols")
    refs, hyps = [list(r) for r in refs], [list(h) for h in hyps]
    _reject_empty_references(refs)
    return refs, hyps


def _reject_empty_references(refs: list[list]) -> None:
    # An empty reference has nothing to normalise its errors by (see error_rates).
    empty = [i for i, r in enumerate(refs) if not r]
    if empty:
        shown = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
        raise ValueError(f"reference(s) empty at index {shown}")


def token_error_rate(refs: Sequence[Sequence[str]], hyps: Sequence[Sequence[str]]) -> float:
    """Corpus-level symbol error rate: total Levenshtein edits over total reference symbols.

    Symbols are compared whole (``"tʃ"`` against ``"t"`` is one substitution), so over
    phone sequences this is the phone error rate (PER) as SUPERB computes it (s3prl's
    ``per``: edits over space-separated phones, summed over the corpus). A fraction, lower
    is better; it exceeds 1 when insertions outnumber the reference symbols. An empty
    hypothesis counts as deleting its reference; an empty reference is rejected.
    """
    refs, hyps = _paired_sequences(refs, hyps)
    edits = sum(_edit_distance(r, h) for r, h in zip(refs, hyps))
    return edits / sum(len(r) for r in refs)


# --------------------------------------------------------------------------- slot filling


def _is_string_pair(item: object, second_may_be_none: bool = False) -> bool:
    return (
        isinstance(item, (tuple, list))
        and len(item) == 2
        and isinstance(item[0], str)
        and (isinstance(item[1], str) or (second_may_be_none and item[1] is None))
    )


def _slots_by_type(slots, what: str, index: int) -> dict[str, list[str]]:
    """``{type: [values in order]}``, types in order of first occurrence (SUPERB's slot dict)."""
    grouped: dict[str, list[str]] = {}
    for pair in slots:
        if not _is_string_pair(pair):
            raise ValueError(f"{what}[{index}] holds {pair!r}, not a (type, value) pair of strings")
        slot_type, value = pair
        if what == "refs" and not value:
            raise ValueError(f"refs[{index}] has an empty value for slot type {slot_type!r}")
        grouped.setdefault(slot_type, []).append(value)
    return grouped


def slot_filling_scores(
    refs: Sequence[Sequence[tuple[str, str]]], hyps: Sequence[Sequence[tuple[str, str]]]
) -> dict[str, float]:
    """SUPERB's slot-filling metrics, ``slot_type_f1`` and ``slot_value_cer``, as fractions.

    ``refs[i]`` and ``hyps[i]`` are the ``(type, value)`` slots of utterance i (as
    :func:`speechssl.downstream.tagging.parse_slots` returns them). The definitions follow
    s3prl's ``s3prl/downstream/ctc/metric.py`` (``slot_type_f1``, ``slot_value_cer``; the
    same code is in ``s3prl/metric/slot_filling.py``), which first groups each utterance's
    slots by type, keeping the values in order:

    - ``slot_type_f1``: per utterance, F1 between the *sets* of slot types of reference
      and hypothesis: recall = shared types / reference types, precision = shared types /
      hypothesis types, F1 = 2PR / (P + R) (0 when P + R = 0). An utterance where neither
      side has a slot scores 1, one where only one side has slots scores 0. The result is
      the mean over utterances. Values play no part, nor does how often a type occurs.
      Higher is better; writing no slot at all scores the fraction of slot-less utterances.
    - ``slot_value_cer``: every reference slot value is paired with one hypothesis value:
      among the hypothesis values of the same type, the one with the lowest CER against
      it (the first of equals; a type missing from the hypothesis pairs it with ""). The
      result is the corpus-level CER over these pairs: total character edits over total
      reference value characters (spaces included). Hypothesis slots of types absent from
      the reference, and surplus values, are not counted, so this is not symmetric. Lower
      is better; 1 for a system that finds no slot. As in s3prl, a candidate whose CER is
      100 or more is never chosen (the search starts from CER 100 with ""), which only
      matters for absurdly long values. NaN when the references hold no slot at all.
    """
    refs, hyps = list(refs), list(hyps)
    if len(refs) != len(hyps):
        raise ValueError(f"refs and hyps differ in length: {len(refs)} vs {len(hyps)}")
    if not refs:
        raise ValueError("no utterances: refs and hyps are empty")
    f1s: list[float] = []
    value_edits = 0
    value_chars = 0
    for i, (ref_slots, hyp_slots) in enumerate(zip(refs, hyps)):
        ref = _slots_by_type(ref_slots, "refs", i)
        hyp = _slots_by_type(hyp_slots, "hyps", i)

        if not ref and not hyp:
            f1s.append(1.0)
        elif not ref or not hyp:
            f1s.append(0.0)
        else:
            shared = len(ref.keys() & hyp.keys())
            precision, recall = shared / len(hyp), shared / len(ref)
            f1s.append(2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0)

        for slot_type, ref_values in ref.items():
            for ref_value in ref_values:
                best_value, best_cer = "", 100.0  # s3prl's starting point, kept for identical results
                for hyp_value in hyp.get(slot_type, []):
                    cer = _edit_distance(ref_value, hyp_value) / len(ref_value)
                    if cer < best_cer:
                        best_value, best_cer = hyp_value, cer
                value_edits += _edit_distance(ref_value, best_value)
                value_chars += len(ref_value)

    return {
        "slot_type_f1": float(np.mean(f1s)),
        "slot_value_cer": value_edits / value_chars if value_chars else float("nan"),
    }


# --------------------------------------------------------------------------- translation


def translation_scores(refs: Sequence[str], hyps: Sequence[str]) -> dict[str, float | str]:
    """Corpus BLEU and chrF with sacrebleu's defaults (one reference per utterance).

    BLEU: 13a tokenisation, mixed case, exponential smoothing; chrF: character 6-grams,
    beta 2, no word n-grams. Both on sacrebleu's 0-100 scale, higher is better: identical
    corpora give 100 (BLEU needs at least one 4-gram in the corpus, otherwise it is 0) and
    corpora sharing no n-gram give 0. The signatures (``bleu_signature``,
    ``chrf_signature``) record the settings and the sacrebleu version, which is what
    makes two BLEU numbers comparable. Texts are scored as given (detokenised, normalised
    by the caller, if at all).
    """
    # Imported here: only the translation task needs sacrebleu.
    sacrebleu_metrics = require("sacrebleu.metrics", "BLEU/chrF scoring")
    BLEU, CHRF = sacrebleu_metrics.BLEU, sacrebleu_metrics.CHRF  # noqa: N806

    refs, hyps = list(refs), list(hyps)
    if len(refs) != len(hyps):
        raise ValueError(f"refs and hyps differ in length: {len(refs)} vs {len(hyps)}")
    if not refs:
        raise ValueError("no utterances: refs and hyps are empty")
    for what, texts in (("refs", refs), ("hyps", hyps)):
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"{what}[{i}] is {type(text).__name__}, not str")
    bleu, chrf = BLEU(), CHRF()
    return {
        "bleu": float(bleu.corpus_score(hyps, [refs]).score),
        "chrf": float(chrf.corpus_score(hyps, [refs]).score),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }


# --------------------------------------------------------------------------- part of speech


def _pos_alignment_counts(ref: list[tuple[str, str]], hyp: list[tuple[str, str | None]]) -> tuple[int, int, int]:
    """``(edits, correct tags, deletions)`` of the best word alignment of one utterance.

    Best means: fewest word edits (Levenshtein on words), then among those the most
    reference words aligned to a hypothesis word with the same tag, then the fewest
    deletions. Minimising the triple lexicographically is still a shortest path (the order
    is compatible with adding costs), so one DP pass finds it, and the counts do not depend
    on how a backtrace would break ties.
    """
    # cost[j] = (edits, -correct, deletions) aligning the reference prefix to hyp[:j].
    previous = [(j, 0, 0) for j in range(len(hyp) + 1)]
    for i, (ref_word, ref_tag) in enumerate(ref, 1):
        current = [(i, 0, i)]
        for j, (hyp_word, hyp_tag) in enumerate(hyp, 1):
            edits, negative_correct, deletions = previous[j - 1]
            aligned = (edits + (ref_word != hyp_word), negative_correct - (ref_tag == hyp_tag), deletions)
            edits, negative_correct, deletions = previous[j]
            deleted = (edits + 1, negative_correct, deletions + 1)
            edits, negative_correct, deletions = current[j - 1]
            inserted = (edits + 1, negative_correct, deletions)
            current.append(min(aligned, deleted, inserted))
        previous = current
    edits, negative_correct, deletions = previous[-1]
    return edits, -negative_correct, deletions


def pos_scores(
    refs: Sequence[Sequence[tuple[str, str]]], hyps: Sequence[Sequence[tuple[str, str | None]]]
) -> dict[str, float]:
    """Part-of-speech accuracy of words recognised from speech, and their WER.

    ``refs[i]`` is the ``(word, tag)`` list of utterance i, ``hyps[i]`` the decoded one
    (a tag may be None: a word the model wrote without a tag), as
    :func:`speechssl.downstream.tagging.parse_tagged_words` returns them. The hypothesis
    words are aligned to the reference words by a minimum-edit Levenshtein alignment on
    words; among equally short alignments the one with most correct tags is used, then the
    one with fewest deletions (see :func:`_pos_alignment_counts`). A reference word is
    *aligned* when it is matched or substituted (not deleted), and *correctly tagged* when
    it is aligned to a hypothesis word with the same tag, whether or not the word itself
    was recognised right.

    - ``pos_accuracy``: correctly tagged reference words / all reference words (deleted
      words count as errors, inserted words do not count). Higher is better.
    - ``pos_accuracy_aligned``: correctly tagged / aligned reference words, the tagging
      accuracy on the words the model did produce. NaN if none was aligned.
    - ``wer``: corpus word error rate of the same alignment (edits / reference words).

    Corpus level throughout: sums over utterances, then one division. An empty hypothesis
    is allowed; an empty reference is rejected.
    """
    refs, hyps = _paired_sequences(refs, hyps)
    for what, utterances in (("refs", refs), ("hyps", hyps)):
        for i, pairs in enumerate(utterances):
            for pair in pairs:
                if not _is_string_pair(pair, second_may_be_none=what == "hyps"):
                    raise ValueError(f"{what}[{i}] holds {pair!r}, not a (word, tag) pair")
    edits = correct = aligned = words = 0
    for ref, hyp in zip(refs, hyps):
        ref_edits, ref_correct, deletions = _pos_alignment_counts(ref, hyp)
        edits += ref_edits
        correct += ref_correct
        aligned += len(ref) - deletions
        words += len(ref)
    return {
        "pos_accuracy": correct / words,
        "pos_accuracy_aligned": correct / aligned if aligned else float("nan"),
        "wer": edits / words,
    }
