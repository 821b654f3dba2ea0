"""CTC beam search with a word n-gram LM (shallow fusion), through pyctcdecode and KenLM.

Why: ML-SUPERB-style multilingual ASR reports character error rates with and without a
language model. The built-in decoders of :mod:`speechssl.downstream.text` have no LM; this
module adds one without writing a second beam search: pyctcdecode scores each hypothesis as

    log p_ctc(prefix)  +  alpha * ln p_lm(words)  +  beta * (number of words)

(``ln`` of KenLM's log10 score), and :meth:`LMDecoder.plain_beam` runs *the same* search with
no LM, so that "beam without LM" and "beam with LM" differ only by the LM term.

Both libraries are optional (``pip install 'speechssl[lm]'``); they are imported when a
decoder is built, and a missing one is a :class:`~speechssl.errors.ConfigError`.

Labels
------
``labels`` are the CTC output symbols in id order; ``labels[0]`` is the blank whatever its
spelling (it is handed to pyctcdecode as ``""``). The others are used verbatim: characters,
the space ``" "`` (pyctcdecode's word delimiter), or multi-character tags such as ``"[en]"``,
which simply become part of the current word, so ``[en]`` followed by ``" "`` is the word
``"[en]"``. The decoder is built from pyctcdecode's ``Alphabet`` directly rather than with
``build_ctcdecoder``, whose label clean-up would rewrite some of our labels (``"|"`` into a
space, ``"<unk>"`` into ``"⁇"``, ``"<pad>"`` into a second blank).

The LM must be trained on text in the form the CTC model emits (same normalisation, tags
as words): pyctcdecode adds a fixed penalty (``unk_score_offset``, -10 in log10) to every
word that is not a unigram of the LM, and to every partial word that starts no LM word.

Quieting pyctcdecode
--------------------
We pass the LM's own words (its 1-grams, read from the ARPA file) as pyctcdecode's unigram
list, which is what its "no known unigrams" warning asks for. Its remaining construction
warnings are about data size ("Only N unigrams passed as vocabulary", under 1000 words,
which is every small test or low-resource LM) and about the kenlm import when only plain
beam search is used; they carry no information for us, so pyctcdecode's logger is raised to
ERROR while it is imported and while the LM is wrapped (:func:`_quiet_pyctcdecode`), and put
back afterwards. KenLM's own stderr notes are switched off through ``kenlm.Config``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from speechssl.errors import ConfigError
from speechssl.lm.ngram import arpa_unigrams

__all__ = ["LM_EXTRA_MESSAGE", "LMDecoder"]

LM_EXTRA_MESSAGE = (
    "n-gram LM decoding needs kenlm and pyctcdecode: `make lm`, or pip install 'speechssl[lm]' && "
    "pip install --no-deps 'pyctcdecode>=0.5' (its numpy<2 pin is stale)"
)


@contextlib.contextmanager
def _quiet_pyctcdecode() -> Iterator[None]:
    """Raise pyctcdecode's logger to ERROR for the duration (see the module docstring)."""
    logger = logging.getLogger("pyctcdecode")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _import_pyctcdecode():
    try:
        with _quiet_pyctcdecode():
            import pyctcdecode
    except ImportError:
        raise ConfigError(LM_EXTRA_MESSAGE) from None
    return pyctcdecode


def _import_kenlm():
    try:
        import kenlm
    except ImportError:
        raise ConfigError(LM_EXTRA_MESSAGE) from None
    return kenlm


def _check_labels(labels: Sequence[str]) -> list[str]:
    """Labels as pyctcdecode gets them: the blank as "", the rest verbatim and unique."""
    if isinstance(labels, str) or len(labels) < 2:
        raise ConfigError("CTC labels must be a list of at least two symbols, the blank first")
    rest = list(labels[1:])
    for label in rest:
        if not isinstance(label, str) or not label:
            raise ConfigError(f"CTC labels other than the blank must be non-empty, got {label!r}")
        if label != " " and any(ch.isspace() for ch in label):
            raise ConfigError(f"CTC label {label!r} contains whitespace (only ' ' itself may)")
    if len(set(rest)) != len(rest) or labels[0] in rest:
        dupes = sorted({x for x in labels if list(labels).count(x) > 1})
        raise ConfigError(f"CTC labels must be unique, repeated: {dupes}")
    return ["", *rest]


def _load_kenlm(kenlm, path: Path):
    """A kenlm.Model of ``path``, without KenLM's progress bar and ARPA notes on stderr."""
    config = kenlm.Config()
    config.show_progress = False
    config.arpa_complain = kenlm.ARPALoadComplain.NONE
    try:
        return kenlm.Model(str(path), config)
    except (OSError, RuntimeError) as exc:
        reason = str(exc)
        if "at least a bigram" in reason:
            reason = "KenLM needs an n-gram order of at least 2"
        raise ConfigError(f"{path}: KenLM cannot load this language model: {reason}") from None


class LMDecoder:
    """pyctcdecode beam search over CTC log-probabilities, with or without an n-gram LM.

    ``LMDecoder(labels, arpa_path, alpha=, beta=, beam_width=)`` fuses the LM of the ARPA
    file; :meth:`plain_beam` builds the same search without one. Call :meth:`close` (or use
    it as a context manager) to drop the LM early: pyctcdecode keeps every decoder's LM in a
    class-level registry until it is cleaned up.
    """

    def __init__(
        self,
        labels: Sequence[str],
        arpa_path: str | os.PathLike | None,
        *,
        alpha: float = 0.5,
        beta: float = 1.0,
        beam_width: int = 16,
    ):
        self.labels = list(labels)
        alphabet_labels = _check_labels(labels)
        if isinstance(beam_width, bool) or not isinstance(beam_width, int) or beam_width < 1:
            raise ConfigError(f"beam_width must be an integer >= 1, got {beam_width!r}")
        self.beam_width = beam_width
        self.alpha, self.beta = float(alpha), float(beta)
        self.arpa_path = None if arpa_path is None else Path(arpa_path)

        if self.arpa_path is not None:
            kenlm = _import_kenlm()  # first: pyctcdecode needs it at import time for LM use
        pyctcdecode = _import_pyctcdecode()
        language_model = None
        if self.arpa_path is not None:
            unigrams = arpa_unigrams(self.arpa_path)
            model = _load_kenlm(kenlm, self.arpa_path)
            with _quiet_pyctcdecode():
                language_model = pyctcdecode.LanguageModel(
                    model, unigrams, alpha=self.alpha, beta=self.beta
                )
        alphabet = pyctcdecode.Alphabet(alphabet_labels, is_bpe=False)
        self._decoder = pyctcdecode.BeamSearchDecoderCTC(alphabet, language_model)

    @classmethod
    def plain_beam(cls, labels: Sequence[str], *, beam_width: int = 16) -> LMDecoder:
        """The same pyctcdecode beam search with no LM (only pyctcdecode is needed)."""
        return cls(labels, None, beam_width=beam_width)

    def set_weights(self, alpha: float, beta: float) -> None:
        """Change the LM weight and word bonus without reloading the LM (dev tuning)."""
        if not self.has_lm:
            raise ConfigError("set_weights: this decoder has no LM")
        self.alpha, self.beta = float(alpha), float(beta)
        self._decoder.reset_params(alpha=self.alpha, beta=self.beta)

    @property
    def has_lm(self) -> bool:
        return self.arpa_path is not None

    def decode(self, log_probs) -> str:
        """Best transcript of one utterance; ``log_probs`` is a [T, V] array (log_softmax).

        Words are joined by single spaces; an utterance with no frames, or whose best path
        is all blanks, decodes to "".
        """
        if hasattr(log_probs, "detach"):  # a torch tensor, without importing torch here
            log_probs = log_probs.detach().cpu().numpy()
        array = np.asarray(log_probs, dtype=np.float64)
        if array.ndim != 2 or array.shape[1] != len(self.labels):
            raise ConfigError(
                f"log_probs must have shape [T, {len(self.labels)}] (one column per label), "
                f"got {list(array.shape)}"
            )
        if np.isnan(array).any():
            raise ConfigError("log_probs contain NaN")
        if array.shape[0] == 0:
            return ""
        return self._decoder.decode(array, beam_width=self.beam_width)

    def decode_batch(self, batch: Sequence) -> list[str]:
        """:meth:`decode` for each [T_i, V] array of ``batch`` (in this process)."""
        return [self.decode(log_probs) for log_probs in batch]

    def close(self) -> None:
        """Remove this decoder's LM from pyctcdecode's class-level registry."""
        decoder = getattr(self, "_decoder", None)
        if decoder is not None:
            decoder.cleanup()

    def __enter__(self) -> LMDecoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        # The registry would otherwise keep the KenLM model alive after the decoder is gone.
        self.close()
