"""ML-SUPERB 2.0 scoring of joint multilingual ASR + language identification.

A joint model writes ``[iso] text``: the language tag first, then the transcript, so one
CTC (or CTC-attention) decoder does both tasks (ESPnet's ``egs2/ml_superb`` recipe). The
challenge's scoring script defines the numbers this module reproduces:

* normalisation of reference and hypothesis text: every Unicode punctuation character
  (category ``P*``) removed, then upper-cased; for languages written without spaces
  (Mandarin, Japanese, Thai, Cantonese) all whitespace is removed too;
* CER per *utterance* (character edit distance over reference characters, spaces
  included), averaged over a language's utterances -- the per-language CER is a mean of
  utterance CERs, not a corpus-level ratio;
* LID accuracy per language: the share of its utterances whose predicted tag is the
  reference language; the reported LID accuracy is the macro average over languages;
* macro CER: the mean of the per-language CERs; its spread is the *sample* standard
  deviation across languages (Python's ``statistics.stdev``); "worst N" is the mean CER of
  the N languages with the highest CER (ML-SUPERB 2.0 uses N = 15).

Two things the original script does differently, on purpose: an empty hypothesis, or one
without a tag, is a valid wrong answer here (CER 1 on a non-empty reference, LID wrong)
where the script raises; and worst-N over fewer than N languages is the mean of those
languages where the script still divides by 15. The *dataset range* (ML-SUPERB 2.0's
spread between datasets of one language) is max - min of a language's per-dataset CERs.

Pure Python and numpy (no torch): the store, the report and the task share it.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from speechssl.errors import ConfigError

__all__ = [
    "JointItem",
    "edit_distance",
    "NO_SPACE_LANGUAGES",
    "format_tag",
    "normalize_text",
    "parse_tag",
    "score_joint",
    "spread",
    "utterance_cer",
]

# Scored without spaces (the scoring script's list, plus the ISO 639-1 codes of the same languages).
NO_SPACE_LANGUAGES = frozenset({"cmn", "jpn", "tha", "yue", "zh", "ja", "th"})
_TAG = re.compile(r"\[([^\[\]\s]+)\]")


def format_tag(language: str) -> str:
    """The language token a joint model writes first: ``[fra]`` (``[fr]`` for ISO 639-1 data)."""
    return f"[{language}]"


def parse_tag(hypothesis: str) -> tuple[str | None, str]:
    """``(language or None, text)`` of a joint hypothesis such as ``"[fr] bonjour"``.

    The tag must open the hypothesis (leading spaces aside); anything else -- an empty
    string, text without a tag, a tag later in the text -- has no language (None) and the
    whole string as text.
    """
    stripped = hypothesis.lstrip()
    match = _TAG.match(stripped)
    if not match:
        return None, hypothesis.strip()
    return match.group(1), stripped[match.end():].strip()


def normalize_text(text: str, language: str = "") -> str:
    """The scoring normalisation: Unicode punctuation removed, upper case, and no whitespace
    for the languages in :data:`NO_SPACE_LANGUAGES`."""
    if language in NO_SPACE_LANGUAGES:
        text = re.sub(r"\s", "", text)
    text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
    return text.upper()


def edit_distance(ref: str, hyp: str) -> int:
    """Levenshtein distance with unit costs, one numpy row at a time."""
    if not hyp:
        return len(ref)
    if not ref:
        return len(hyp)
    h = np.frombuffer(hyp.encode("utf-32-le"), dtype=np.uint32)
    cols = np.arange(len(h) + 1)
    prev = cols.copy()
    for i, ch in enumerate(ref, start=1):
        cur = np.empty_like(prev)
        cur[0] = i
        # Substitution (or match) and deletion, vectorised over the row ...
        cur[1:] = np.minimum(prev[:-1] + (h != ord(ch)), prev[1:] + 1)
        # ... then insertions, cur[j] = min(cur[j], cur[j-1] + 1), as a running minimum.
        cur = np.minimum.accumulate(cur - cols) + cols
        prev = cur
    return int(prev[-1])


def utterance_cer(reference: str, hypothesis: str, language: str = "") -> float | None:
    """CER of one utterance after :func:`normalize_text`; None when the normalised reference is
    empty (the scoring script skips such utterances)."""
    ref = normalize_text(reference, language)
    if not ref:
        return None
    return edit_distance(ref, normalize_text(hypothesis, language)) / len(ref)


def spread(per_language: Mapping[str, float], *, worst_n: int = 15, higher_is_better: bool = False) -> dict:
    """Macro average, sample std (None for one language) and worst-N mean of per-language scores.

    Worst = highest error (lowest accuracy when ``higher_is_better``); ties by language code.
    """
    if not isinstance(worst_n, int) or isinstance(worst_n, bool) or worst_n < 1:
        raise ConfigError(f"worst_n must be an integer >= 1, got {worst_n!r}")
    if not per_language:
        raise ConfigError("no per-language scores to aggregate")
    values = np.array(list(per_language.values()), dtype=np.float64)
    worst = sorted(per_language, key=lambda lang: (per_language[lang] if higher_is_better else -per_language[lang],
                                                   lang))[:worst_n]
    return {
        "macro": float(values.mean()),
        "std": float(values.std(ddof=1)) if values.size > 1 else None,
        "worst_n": worst_n,
        "worst_mean": float(np.mean([per_language[lang] for lang in worst])),
        "worst_languages": worst,
    }


@dataclass(frozen=True)
class JointItem:
    """One scored utterance: its reference language, dataset and text, and the hypothesis
    as the model wrote it (tag included)."""

    language: str
    reference: str
    hypothesis: str
    dataset: str = ""


def score_joint(items: Iterable[JointItem], *, worst_n: int = 15) -> dict:
    """ML-SUPERB 2.0 scores of joint ASR + LID hypotheses.

    Returns ``cer`` (macro over languages), ``cer_std``, ``cer_worst`` (mean of the
    ``worst_n`` worst languages) and ``worst_languages``, ``lid_accuracy`` (macro over
    languages), ``utterances``, ``skipped`` (empty normalised references), ``per_language``
    ``{language: {cer, lid_accuracy, utterances}}``, ``per_dataset`` ``{dataset: {language:
    {cer, lid_accuracy, utterances}}}`` (only when some item names a dataset) and
    ``dataset_range`` ``{language: max - min CER over its datasets}`` for languages on two
    or more datasets.
    """
    cers: dict[str, list[float]] = defaultdict(list)
    hits: dict[str, list[bool]] = defaultdict(list)
    by_dataset: dict[tuple[str, str], tuple[list[float], list[bool]]] = defaultdict(lambda: ([], []))
    skipped = 0
    for i, item in enumerate(items):
        if not isinstance(item, JointItem):
            raise ConfigError(f"item {i} is a {type(item).__name__}, not a JointItem")
        if not item.language:
            raise ConfigError(f"item {i} has no reference language")
        tag, text = parse_tag(item.hypothesis)
        cer = utterance_cer(item.reference, text, item.language)
        if cer is None:
            skipped += 1
            continue
        correct = tag == item.language
        cers[item.language].append(cer)
        hits[item.language].append(correct)
        if item.dataset:
            pair = by_dataset[(item.dataset, item.language)]
            pair[0].append(cer)
            pair[1].append(correct)
    if not cers:
        raise ConfigError("no utterance with a non-empty reference to score")

    def stats(c: list[float], h: list[bool]) -> dict:
        return {"cer": float(np.mean(c)), "lid_accuracy": float(np.mean(h)), "utterances": len(c)}

    per_language = {lang: stats(cers[lang], hits[lang]) for lang in sorted(cers)}
    cer_spread = spread({lang: s["cer"] for lang, s in per_language.items()}, worst_n=worst_n)
    out = {
        "cer": cer_spread["macro"], "cer_std": cer_spread["std"], "cer_worst": cer_spread["worst_mean"],
        "worst_n": worst_n, "worst_languages": cer_spread["worst_languages"],
        "lid_accuracy": float(np.mean([s["lid_accuracy"] for s in per_language.values()])),
        "utterances": sum(s["utterances"] for s in per_language.values()), "skipped": skipped,
        "per_language": per_language,
    }
    if by_dataset:
        per_dataset: dict[str, dict[str, dict]] = defaultdict(dict)
        for (dataset, lang), (c, h) in sorted(by_dataset.items()):
            per_dataset[dataset][lang] = stats(c, h)
        out["per_dataset"] = dict(per_dataset)
        out["dataset_range"] = dataset_ranges(per_dataset)
    return out


def dataset_ranges(per_dataset: Mapping[str, Mapping[str, Mapping[str, float]]], metric: str = "cer") -> dict[str, float]:
    """``{language: max - min of metric over the datasets it is scored on}``, for languages
    on two or more datasets."""
    values: dict[str, list[float]] = defaultdict(list)
    for languages in per_dataset.values():
        for lang, scores in languages.items():
            v = scores.get(metric)
            if v is not None and math.isfinite(v):
                values[lang].append(float(v))
    return {lang: max(v) - min(v) for lang, v in sorted(values.items()) if len(v) >= 2}
