"""Text side of the sequence tasks: transcript normalisation, CTC vocabularies and decoding.

The probes are trained with CTC over characters (ASR) or over other single symbols: IPA
phones, or characters mixed with tag symbols (see :mod:`speechssl.downstream.tagging`). No
word pieces, no language model. Decoders accept torch tensors or numpy arrays of
log-probabilities (the output of ``log_softmax``), and return plain lists of ids, so that
what leaves this module is JSON-able and device-free.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import numpy as np
import torch

from speechssl.errors import ConfigError, SpeechSSLError

__all__ = [
    "BLANK",
    "UNK",
    "CharTokenizer",
    "SymbolTokenizer",
    "TextNormalizer",
    "ctc_beam_decode",
    "ctc_beam_search",
    "ctc_greedy_decode",
]

BLANK = "<blank>"
UNK = "<unk>"

# Apostrophes that may sit inside a word; the typographic ones are mapped to ASCII so that
# "l’heure" and "l'heure" are the same word to the tokenizer and to WER.
_APOSTROPHES = frozenset("'\u2019\u02bc")


# --------------------------------------------------------------------------- normalisation


@dataclass(frozen=True)
class TextNormalizer:
    """Maps a transcript to the form the model is trained on and scored against.

    Applied to training targets and to both sides of WER/CER, so that the error rate does
    not count differences the model was never asked to produce (case, punctuation, Unicode
    composition). Accents are kept: in most of our languages they distinguish words.

    Always done: Unicode NFC (a decomposed "e" + U+0301 and a precomposed "é" become the same
    single character) and whitespace collapsing. Punctuation is every Unicode category P*
    character; it is replaced by a space rather than deleted, so "hello,world" stays two
    words. With ``keep_apostrophe`` an apostrophe between two letters or digits survives
    (as ASCII "'"): "l'heure", "don't".
    """

    lowercase: bool = True
    remove_punctuation: bool = True
    keep_apostrophe: bool = True

    def __call__(self, text: str) -> str:
        if not isinstance(text, str):
            raise TypeError(f"TextNormalizer expects str, got {type(text).__name__}")
        text = unicodedata.normalize("NFC", text)
        if self.lowercase:
            text = text.lower()
        if self.remove_punctuation:
            text = self._strip_punctuation(text)
        # Lower-casing can decompose (e.g. "İ" -> "i" + combining dot), hence NFC again.
        return " ".join(unicodedata.normalize("NFC", text).split())

    def _strip_punctuation(self, text: str) -> str:
        out = []
        last = len(text) - 1
        for i, ch in enumerate(text):
            if not unicodedata.category(ch).startswith("P"):
                out.append(ch)
            elif (
                self.keep_apostrophe
                and ch in _APOSTROPHES
                and 0 < i < last
                and text[i - 1].isalnum()
                and text[i + 1].isalnum()
            ):
                out.append("'")
            else:
                out.append(" ")
        return "".join(out)


# --------------------------------------------------------------------------- tokenizers


_Vocabulary = TypeVar("_Vocabulary", bound="_CTCVocabulary")  # typing.Self is Python 3.11+


class _CTCVocabulary:
    """What the CTC tokenizers share: a fixed list of entries, the blank at id 0 and
    ``<unk>`` at id 1, validation, decoding of ids and the JSON round trip.

    Subclasses set ``kind`` (the ``"type"`` written by :meth:`to_dict`), ``noun`` (for
    messages), ``reserved`` (the entries that must come first), and :meth:`_is_entry` with
    ``entry_rule`` saying in words what it accepts.
    """

    blank_id = 0
    unk_id = 1
    kind: ClassVar[str]
    noun: ClassVar[str]
    reserved: ClassVar[tuple[str, ...]]
    entry_rule: ClassVar[str]

    def __init__(self, vocab: Sequence[str]):
        vocab = list(vocab)
        head = list(self.reserved)
        if vocab[: len(head)] != head:
            expected = ", ".join(map(repr, head))
            raise SpeechSSLError(f"a {self.noun} vocabulary must start with {expected}; got {vocab[: len(head)]!r}")
        # Entries before duplicates: set() below needs hashable entries.
        bad = [entry for entry in vocab[len(head) :] if not self._is_entry(entry)]
        if bad:
            raise SpeechSSLError(f"{self.noun} vocabulary entries must be {self.entry_rule}, got {bad[:5]!r}")
        if len(set(vocab)) != len(vocab):
            raise SpeechSSLError(f"{self.noun} vocabulary has duplicate entries")
        self.vocab: list[str] = vocab
        self._ids = {entry: i for i, entry in enumerate(vocab)}

    @staticmethod
    def _is_entry(entry: object) -> bool:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.vocab)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.vocab == other.vocab  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} symbols)"

    def _entries(self, ids: Iterable[int]) -> list[str]:
        """The entries of ``ids`` with the blanks left out; an id outside the vocabulary is
        a ValueError (it means the model and the tokenizer do not belong together)."""
        out = []
        n = len(self.vocab)
        for i in ids:
            i = int(i)
            if not 0 <= i < n:
                raise ValueError(f"id {i} is outside the vocabulary of {n} symbols")
            if i != self.blank_id:
                out.append(self.vocab[i])
        return out

    def to_dict(self) -> dict:
        """JSON-able description, saved with results so predictions can be decoded later."""
        return {"type": self.kind, "vocab": list(self.vocab)}

    @classmethod
    def from_dict(cls: type[_Vocabulary], data: dict) -> _Vocabulary:
        if not isinstance(data, dict) or data.get("type") != cls.kind or not isinstance(data.get("vocab"), list):
            raise SpeechSSLError(
                f"not a saved {cls.noun} tokenizer (expected {{'type': {cls.kind!r}, 'vocab': [...]}})"
            )
        return cls(data["vocab"])


class CharTokenizer(_CTCVocabulary):
    """Character vocabulary for CTC: id 0 is the blank, id 1 ``<unk>``, id 2 the space.

    Built from the training transcripts only, so a character first seen at test time maps
    to ``<unk>`` instead of silently growing the output layer. The remaining characters are
    sorted, so the same transcripts always give the same ids and a saved probe can be
    decoded later from ``to_dict()`` alone. The space is always in the vocabulary (it is the
    word boundary WER needs), even if no training transcript contains one.
    """

    space_id = 2
    kind = "char"
    noun = "character"
    reserved = (BLANK, UNK, " ")
    entry_rule = "single characters"

    @staticmethod
    def _is_entry(entry: object) -> bool:
        return isinstance(entry, str) and len(entry) == 1

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> CharTokenizer:
        """Vocabulary of every character in ``texts`` (already normalised)."""
        chars: set[str] = set()
        for text in texts:
            chars.update(text)
        chars.discard(" ")
        if not chars:
            raise SpeechSSLError("cannot build a character vocabulary: the training transcripts are empty")
        return cls([*cls.reserved, *sorted(chars)])

    def encode(self, text: str) -> list[int]:
        """Ids of the characters of ``text``; unseen characters become ``unk_id``."""
        return [self._ids.get(ch, self.unk_id) for ch in text]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of a label sequence; blanks are skipped, ``<unk>`` is written out literally.

        No CTC collapsing here (use a decoder first), and no whitespace clean-up: that is
        left to scoring, which collapses whitespace anyway.
        """
        return "".join(self._entries(ids))


class SymbolTokenizer(_CTCVocabulary):
    """Vocabulary of *symbols* for CTC: id 0 is the blank, id 1 ``<unk>``, then the sorted
    symbols seen in training.

    A symbol is any non-empty string that the model emits as one unit: a character, an IPA
    phone such as ``"tʃ"``, or a tag such as ``"<city>"`` or ``"<NOUN>"`` (see
    :mod:`speechssl.downstream.tagging`). Sequences are lists of symbols, never strings
    split by the tokenizer, so multi-character symbols cannot be confused with their
    characters. Unlike :class:`CharTokenizer` no symbol is forced in: a task that needs the
    space as a word boundary has it in its training targets.
    """

    kind = "symbols"
    noun = "symbol"
    reserved = (BLANK, UNK)
    entry_rule = "non-empty strings"

    @staticmethod
    def _is_entry(entry: object) -> bool:
        return isinstance(entry, str) and entry != ""

    @classmethod
    def from_sequences(cls, sequences: Iterable[Sequence[str]]) -> SymbolTokenizer:
        """Vocabulary of every symbol in ``sequences`` (the training targets).

        ``<blank>`` and ``<unk>`` may not occur in the targets: the first is CTC's own
        symbol and the second would make an unknown symbol look like a known one.
        """
        symbols: set[str] = set()
        for sequence in sequences:
            symbols.update(sequence)
        reserved = symbols.intersection(cls.reserved)
        if reserved:
            raise SpeechSSLError(f"training targets contain the reserved symbol(s) {sorted(reserved)!r}")
        bad = [s for s in symbols if not cls._is_entry(s)]
        if bad:
            raise SpeechSSLError(f"symbols must be non-empty strings, got {bad[:5]!r}")
        if not symbols:
            raise SpeechSSLError("cannot build a symbol vocabulary: the training targets are empty")
        return cls([*cls.reserved, *sorted(symbols)])

    def encode(self, symbols: Iterable[str]) -> list[int]:
        """Ids of ``symbols``; unseen symbols become ``unk_id``."""
        return [self._ids.get(symbol, self.unk_id) for symbol in symbols]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Symbols of a label sequence; blanks are skipped, ``<unk>`` is kept as a symbol.

        No CTC collapsing here: use a decoder first.
        """
        return self._entries(ids)


# --------------------------------------------------------------------------- CTC decoding


def _as_numpy(log_probs) -> np.ndarray:
    if isinstance(log_probs, torch.Tensor):
        return log_probs.detach().to("cpu", torch.float64).numpy()
    return np.asarray(log_probs, dtype=np.float64)


def _lengths(lengths, batch: int, frames: int) -> list[int]:
    if lengths is None:
        return [frames] * batch
    if isinstance(lengths, torch.Tensor):
        lengths = lengths.detach().cpu().tolist()
    elif isinstance(lengths, (int, np.integer)):
        lengths = [int(lengths)]
    lengths = [int(n) for n in np.asarray(lengths).reshape(-1)]
    if len(lengths) != batch:
        raise ValueError(f"{len(lengths)} lengths for a batch of {batch}")
    if any(not 0 <= n <= frames for n in lengths):
        raise ValueError(f"lengths must be in [0, {frames}], got {lengths}")
    return lengths


def _collapse(path: np.ndarray, blank: int) -> list[int]:
    """CTC's many-to-one map: merge runs of the same symbol, then drop blanks."""
    if path.size == 0:
        return []
    keep = np.ones(path.size, dtype=bool)
    keep[1:] = path[1:] != path[:-1]
    keep &= path != blank
    return path[keep].tolist()


def ctc_greedy_decode(log_probs, lengths=None, blank: int = 0) -> list[list[int]]:
    """Best-path decoding: argmax per frame, merge repeats, drop blanks.

    ``log_probs`` is [B, T, V] or [T, V] (the latter gives a one-element list). The argmax
    runs where the tensor lives, so only [B, T] ids cross to the CPU. Best path is the most
    probable *alignment*, not the most probable labelling; see :func:`ctc_beam_search`.
    """
    if isinstance(log_probs, torch.Tensor):
        if log_probs.dim() not in (2, 3):
            raise ValueError(f"log_probs must be [B, T, V] or [T, V], got shape {tuple(log_probs.shape)}")
        paths = log_probs.argmax(dim=-1).cpu().numpy()
    else:
        arr = np.asarray(log_probs)
        if arr.ndim not in (2, 3):
            raise ValueError(f"log_probs must be [B, T, V] or [T, V], got shape {arr.shape}")
        paths = arr.argmax(axis=-1)
    if paths.ndim == 1:
        paths = paths[None]
    lens = _lengths(lengths, paths.shape[0], paths.shape[1])
    return [_collapse(paths[b, :n], blank) for b, n in enumerate(lens)]


def _logaddexp(a: float, b: float) -> float:
    # On Python floats this is several times faster than np.logaddexp on scalars.
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    if a > b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))


def ctc_beam_search(
    log_probs,
    beam_size: int = 8,
    blank: int = 0,
    prune_logprob: float | None = None,
    return_nbest: bool = False,
) -> list[int] | list[tuple[list[int], float]]:
    """CTC prefix beam search (Hannun et al., 2014) without a language model.

    Greedy decoding picks the most probable alignment; what we want is the most probable
    labelling, whose probability is the sum over all alignments that collapse to it. The
    prefix search keeps, for each candidate prefix, the log-probability of all alignments
    so far that end in a blank (``pb``) and that end in its last symbol (``pnb``), which is
    what is needed to extend it correctly: a repeated symbol only starts a new label after
    a blank. With a beam and per-frame candidate set large enough to hold every prefix, the
    scores are the exact labelling log-probabilities.

    ``log_probs``: [T, V] log-probabilities (log_softmax output), torch or numpy.
    Per frame only the ``beam_size`` most probable symbols are tried, and of those only the
    ones with log-probability >= ``prune_logprob`` (if given; the frame's best symbol is
    always kept), which is where nearly all the speed comes from on peaked CTC posteriors.

    Returns the best id sequence, or with ``return_nbest`` up to ``beam_size``
    ``(ids, log_prob)`` pairs, best first.
    """
    if isinstance(beam_size, bool) or not isinstance(beam_size, (int, np.integer)) or beam_size < 1:
        raise ConfigError(f"beam_size must be a positive integer, got {beam_size!r}")
    lp = _as_numpy(log_probs)
    if lp.ndim != 2:
        raise ValueError(f"log_probs must be [T, V], got shape {lp.shape}")
    frames, vocab = lp.shape
    if not 0 <= blank < vocab:
        raise ValueError(f"blank id {blank} is outside the vocabulary of {vocab} symbols")
    if np.isnan(lp).any():
        raise ValueError("log_probs contain NaN")

    # Candidate symbols of every frame at once, best first.
    k = min(beam_size, vocab)
    top = np.argpartition(-lp, k - 1, axis=1)[:, :k] if k < vocab else np.tile(np.arange(vocab), (frames, 1))
    top_lp = np.take_along_axis(lp, top, axis=1)
    order = np.argsort(-top_lp, axis=1, kind="stable")
    top, top_lp = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_lp, order, axis=1)

    neg_inf = -math.inf
    # prefix -> [log P(prefix, ends in blank), log P(prefix, ends in its last symbol)]
    beams: dict[tuple[int, ...], list[float]] = {(): [0.0, neg_inf]}
    for t in range(frames):
        cands = list(zip(top[t].tolist(), top_lp[t].tolist()))
        if prune_logprob is not None:
            cands = cands[:1] + [(c, p) for c, p in cands[1:] if p >= prune_logprob]
        nxt: dict[tuple[int, ...], list[float]] = {}
        for prefix, (pb, pnb) in beams.items():
            p_total = _logaddexp(pb, pnb)
            last = prefix[-1] if prefix else None
            for c, p in cands:
                if c == blank:
                    # Any alignment of the prefix followed by a blank: prefix unchanged.
                    entry = nxt.setdefault(prefix, [neg_inf, neg_inf])
                    entry[0] = _logaddexp(entry[0], p_total + p)
                    continue
                extended = prefix + (c,)
                entry = nxt.setdefault(extended, [neg_inf, neg_inf])
                if c == last:
                    # "a" + "a" only makes "aa" if a blank separated them ...
                    entry[1] = _logaddexp(entry[1], pb + p)
                    # ... otherwise it merges into the same "a".
                    same = nxt.setdefault(prefix, [neg_inf, neg_inf])
                    same[1] = _logaddexp(same[1], pnb + p)
                else:
                    entry[1] = _logaddexp(entry[1], p_total + p)
        scored = sorted(nxt.items(), key=lambda kv: _logaddexp(*kv[1]), reverse=True)
        beams = dict(scored[:beam_size])

    nbest = sorted(((list(prefix), _logaddexp(pb, pnb)) for prefix, (pb, pnb) in beams.items()), key=lambda x: -x[1])
    # Labellings no alignment can produce (e.g. "aa" in two frames) have -inf: not candidates.
    nbest = [item for item in nbest if item[1] > neg_inf] or nbest[:1]
    if return_nbest:
        return nbest
    return nbest[0][0]


def ctc_beam_decode(
    log_probs, lengths=None, beam_size: int = 8, blank: int = 0, prune_logprob: float | None = None
) -> list[list[int]]:
    """:func:`ctc_beam_search` over a [B, T, V] batch, each item cut to its length.

    The batch is moved to the CPU once; the search itself is sequential Python.
    """
    lp = _as_numpy(log_probs)
    if lp.ndim != 3:
        raise ValueError(f"log_probs must be [B, T, V], got shape {lp.shape}")
    lens = _lengths(lengths, lp.shape[0], lp.shape[1])
    return [
        ctc_beam_search(lp[b, :n], beam_size=beam_size, blank=blank, prune_logprob=prune_logprob)
        for b, n in enumerate(lens)
    ]
