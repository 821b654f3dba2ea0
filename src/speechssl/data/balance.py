"""Language balance for multilingual pretraining: p_l ∝ n_l^α, balanced subsets, accounting.

XLSR / XLS-R sample language l with probability ``p_l = n_l^α / Σ_k n_k^α`` where n_l is the
amount of audio in language l: α = 1 keeps natural frequencies, α = 0 is uniform over
languages, values in between upsample low-resource languages (XLS-R uses 0.5). WavLabLM
(seed 003) instead continues pretraining on a language-balanced *subset*
(:func:`balanced_subset`).

Balance is measured in **seconds of audio**, not utterance counts: what a pretraining
update consumes is seconds, and languages differ in typical utterance length.

:class:`LanguageStream` draws an epoch's cuts of one language; the sampler
(:class:`~speechssl.data.sampler.DurationBucketSampler` with ``language_alpha``) combines one
stream per language. Nothing here needs torch or lhotse: a cut is anything with ``id``,
``duration`` and lhotse-style ``supervisions``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from speechssl.errors import ConfigError

UNKNOWN_LANGUAGE = "und"  # ISO 639-2 "undetermined": cuts without a language label, in accounting only
_STREAM_TAG = 0x4C414E47  # "LANG": keeps these random streams apart from the sampler's (seed, epoch) stream


def cut_language(cut: Any) -> str | None:
    """The language of a cut's first supervision (the rule of ``collate.supervision_info``), or None."""
    supervisions = getattr(cut, "supervisions", None) or []
    return supervisions[0].language if supervisions else None


def validate_language_alpha(alpha: Any) -> None:
    """ConfigError unless ``alpha`` is a finite number >= 0."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha < 0:
        raise ConfigError(
            f"language alpha must be a finite number >= 0 (1 = natural frequencies, 0 = uniform), got {alpha!r}"
        )


def language_probabilities(hours_by_language: Mapping[str, float], alpha: float) -> dict[str, float]:
    """``p_l = n_l^α / Σ_k n_k^α`` for every language (keys in sorted order).

    The unit of ``n_l`` does not matter (hours or seconds give the same p). ``alpha`` must be
    a finite number >= 0; every amount must be positive and finite.
    """
    validate_language_alpha(alpha)
    if not hours_by_language:
        raise ConfigError("no languages to sample from")
    bad = {lang: n for lang, n in hours_by_language.items() if not (math.isfinite(n) and n > 0)}
    if bad:
        raise ConfigError(f"every language needs a positive, finite amount of audio, got {bad}")
    languages = sorted(hours_by_language)
    # Work in logs relative to the largest language so n^α cannot overflow or underflow.
    logs = np.log(np.asarray([float(hours_by_language[lang]) for lang in languages]))
    weights = np.exp(float(alpha) * (logs - logs.max()))
    probabilities = weights / math.fsum(weights.tolist())
    return {lang: float(p) for lang, p in zip(languages, probabilities)}


def sum_by_language(languages: Iterable[str | None], seconds: Iterable[float]) -> dict[str, float]:
    """Seconds per language from parallel sequences; a missing label counts as ``"und"``.

    For a loaded batch: ``sum_by_language((s.get("language") for s in batch.supervisions),
    (batch.lengths / batch.sample_rate).tolist())`` gives the audio actually fed (after crops).
    """
    totals: dict[str, float] = {}
    for language, duration in zip(languages, seconds, strict=True):
        key = UNKNOWN_LANGUAGE if language is None else str(language)
        totals[key] = totals.get(key, 0.0) + float(duration)
    return dict(sorted(totals.items()))


def seconds_by_language(cuts: Iterable[Any], *, max_cut_seconds: float | None = None) -> dict[str, float]:
    """Seconds of audio per language in ``cuts`` (each cut counted as often as it occurs).

    With ``max_cut_seconds`` (the crop length of pretraining) a cut counts at most that much,
    which is the audio a training step sees of it.
    """
    cap = math.inf if max_cut_seconds is None else float(max_cut_seconds)
    cut_list = list(cuts)
    return sum_by_language((cut_language(c) for c in cut_list), (min(float(c.duration), cap) for c in cut_list))


def balanced_subset(cuts: Iterable[Any], hours_per_language: float, seed: int = 0) -> list[Any]:
    """At most ``hours_per_language`` hours of every language, drawn at random (seeded).

    WavLabLM's stage 2 ("continue on a balanced subset"): each language's cuts are visited in
    a seeded random order and a cut is kept while it still fits under the cap, so a language
    ends up just under the cap (or whole, if it has less). A language's draw depends only on
    ``(seed, language)``, not on the other languages. Cuts keep their input order. Every cut
    needs a language label.
    """
    cap_ok = isinstance(hours_per_language, (int, float)) and not isinstance(hours_per_language, bool)
    if not (cap_ok and math.isfinite(hours_per_language) and hours_per_language > 0):
        raise ConfigError(f"hours_per_language must be a positive number, got {hours_per_language!r}")
    _check_seed(seed)
    cut_list = list(cuts)
    by_language = indices_by_language(cut_list)
    cap = float(hours_per_language) * 3600.0
    keep: list[int] = []
    for language, members in by_language.items():
        total = 0.0
        for index in _rng(seed, language).permutation(members).tolist():
            duration = float(cut_list[index].duration)
            if total + duration <= cap:
                keep.append(index)
                total += duration
    return [cut_list[i] for i in sorted(keep)]


def indices_by_language(cuts: Sequence[Any]) -> dict[str, list[int]]:
    """Positions of the cuts of each language (languages sorted); every cut needs a label."""
    return indices_by_label([cut_language(cut) for cut in cuts])


def indices_by_label(languages: Sequence[str | None]) -> dict[str, list[int]]:
    """:func:`indices_by_language` from the cuts' language labels (None: unlabelled)."""
    groups: dict[str, list[int]] = {}
    unlabelled = 0
    for index, language in enumerate(languages):
        if language is None:
            unlabelled += 1
            continue
        groups.setdefault(str(language), []).append(index)
    if unlabelled:
        # Balancing must not guess: a missing label is usually a manifest bug, not a language.
        raise ConfigError(
            f"{unlabelled} of {len(languages)} cuts have no language (cut.supervisions[0].language); "
            "language balancing needs every cut labelled"
        )
    if not groups:
        raise ConfigError("no cuts to balance")
    return dict(sorted(groups.items()))


class LanguageStream:
    """One language's audio as an endless stream of shuffled passes over its cuts.

    Pass c is a permutation of the language's cuts drawn from ``(seed, language, c)`` (the
    input order when ``shuffle`` is False); the passes are laid end to end on a time axis in
    seconds. Epoch e takes the cuts whose midpoint lies in ``[e·T, (e+1)·T)`` for a per-epoch
    budget of T seconds. Consequences:

    * a downsampled language (T < its audio) is drawn without replacement, and across
      epochs too: every cut is used once before any is used again;
    * an upsampled language repeats each cut about r = T / n times per epoch (⌊r⌋ − 1 to
      ⌈r⌉ + 1: with replacement, but spread evenly rather than at random);
    * consecutive epochs tile the stream exactly, so the seconds drawn over E epochs are
      E·T within one cut, whatever E;
    * the draw of an epoch is a closed-form function of (seed, language, epoch): no state.
    """

    def __init__(self, language: str, members: Sequence[int], durations: Sequence[float], *,
                 shuffle: bool = True) -> None:
        if not members:
            raise ConfigError(f"language {language!r} has no cuts")
        self.language = language
        self.shuffle = shuffle
        self._members = np.asarray(members, dtype=np.int64)
        self._durations = np.asarray([durations[i] for i in members], dtype=np.float64)
        self.seconds = math.fsum(self._durations.tolist())  # length of one pass

    def draw(self, epoch: int, seconds_per_epoch: float, *, seed: int) -> np.ndarray:
        """Positions (into the sampler's cut list) of the cuts drawn for ``epoch``; may repeat."""
        # The same expressions bound consecutive epochs, so they tile the stream exactly.
        start = epoch * seconds_per_epoch
        stop = (epoch + 1) * seconds_per_epoch
        first_pass = int(start // self.seconds)
        last_pass = int(stop // self.seconds)
        if first_pass == last_pass:
            return self._part_of_pass(first_pass, start, stop, seed)
        # Passes strictly inside the window are taken whole: no need to shuffle them.
        return np.concatenate([
            self._part_of_pass(first_pass, start, stop, seed),
            np.tile(self._members, last_pass - first_pass - 1),
            self._part_of_pass(last_pass, start, stop, seed),
        ])

    def _part_of_pass(self, number: int, start: float, stop: float, seed: int) -> np.ndarray:
        """The cuts of pass ``number`` whose midpoint on the stream lies in ``[start, stop)``."""
        if self.shuffle:
            order = _rng(seed, self.language, number).permutation(len(self._members))
        else:
            order = np.arange(len(self._members))
        lengths = self._durations[order]
        midpoints = number * self.seconds + np.cumsum(lengths) - lengths / 2.0
        return self._members[order[(midpoints >= start) & (midpoints < stop)]]


def _rng(seed: int, language: str, *extra: int) -> np.random.Generator:
    # crc32, not hash(): str hashes are salted per process and ranks must agree.
    return np.random.default_rng([seed, _STREAM_TAG, zlib.crc32(language.encode()), *extra])


def _check_seed(seed: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
