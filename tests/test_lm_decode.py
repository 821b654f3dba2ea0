"""CTC shallow fusion with an n-gram LM (pyctcdecode + KenLM), and its missing-extra error."""

import importlib.util
import re
import sys

import numpy as np
import pytest

from speechssl.downstream.lm_decode import LM_EXTRA_MESSAGE, LMDecoder
from speechssl.errors import ConfigError
from speechssl.lm import NGramModel

HAVE_LM_EXTRA = all(importlib.util.find_spec(m) for m in ("pyctcdecode", "kenlm"))
needs_lm = pytest.mark.skipif(not HAVE_LM_EXTRA, reason="the lm extra (pyctcdecode, kenlm)")

LABELS = ["<blank>", " ", "a", "c", "e", "h", "k", "t", "s", "[en]"]


def frames(*columns: dict[str, float]) -> np.ndarray:
    """Log-probabilities [T, V]: each frame gives the listed labels their probability and
    shares what is left among the others, far below pyctcdecode's -5 per-token cut-off."""
    out = np.empty((len(columns), len(LABELS)))
    for t, column in enumerate(columns):
        rest = (1.0 - sum(column.values())) / (len(LABELS) - len(column))
        out[t] = [column.get(label, rest) for label in LABELS]
    return np.log(out)


def spelled(text: str, confident: float = 0.99) -> list[dict[str, float]]:
    """One confident frame per symbol of ``text`` (a tag like [en] is one symbol)."""
    return [{symbol: confident} for symbol in re.findall(r"\[en\]|.", text)]


# "the ?at": the first letter of the second word sounds a bit more like "k" than "c".
AMBIGUOUS = frames(*spelled("the "), {"k": 0.55, "c": 0.44}, *spelled("at"))


@pytest.fixture
def arpa(tmp_path):
    # Both spellings are LM words, so the choice is made by n-gram probabilities (not by
    # pyctcdecode's out-of-vocabulary penalty): "cat" follows "the", "kat" never does.
    text = ["the cat sat", "the cat ate", "the cat", "the hat", "kat sat", "[en] the cat"]
    return NGramModel.fit([s.split() for s in text], order=3).write_arpa(tmp_path / "lm.arpa")


@needs_lm
def test_lm_flips_an_acoustically_ambiguous_word(arpa):
    plain = LMDecoder.plain_beam(LABELS, beam_width=8)
    assert plain.decode(AMBIGUOUS) == "the kat"  # acoustics alone: the wrong spelling
    with LMDecoder(LABELS, arpa, alpha=0.5, beta=1.0, beam_width=8) as fused:
        assert fused.has_lm and not plain.has_lm
        assert fused.decode(AMBIGUOUS) == "the cat"
        # Where the acoustics are clear the LM does not overrule them.
        assert fused.decode(frames(*spelled("the hat"))) == "the hat"
    # With the LM weighted out it is the plain search again.
    assert LMDecoder(LABELS, arpa, alpha=0.0, beta=0.0).decode(AMBIGUOUS) == "the kat"


@needs_lm
def test_empty_outputs(arpa):
    blanks = frames(*[{"<blank>": 0.99}] * 6)
    for decoder in (LMDecoder.plain_beam(LABELS), LMDecoder(LABELS, arpa)):
        assert decoder.decode(blanks) == ""
        assert decoder.decode(np.zeros((0, len(LABELS)))) == ""
        assert decoder.decode_batch([blanks, AMBIGUOUS[:0]]) == ["", ""]


@needs_lm
def test_tags_are_words_and_batch(arpa):
    tagged = frames(*spelled("[en] the cat"))
    with LMDecoder(LABELS, arpa) as fused:
        assert fused.decode_batch([tagged, AMBIGUOUS]) == ["[en] the cat", "the cat"]
    # Repeated symbols need a blank between them, as in any CTC decoder.
    plain = LMDecoder.plain_beam(LABELS)
    twice = spelled("[en]") * 2
    assert plain.decode(frames(*twice)) == "[en]"
    assert plain.decode(frames(twice[0], {"<blank>": 0.99}, twice[1])) == "[en][en]"
    assert plain.decode(frames(*spelled("[en] [en]"))) == "[en] [en]"


@needs_lm
def test_bad_inputs(arpa, tmp_path):
    decoder = LMDecoder.plain_beam(LABELS)
    with pytest.raises(ConfigError, match=r"shape \[T, 10\]"):
        decoder.decode(np.zeros((4, 3)))
    with pytest.raises(ConfigError, match="NaN"):
        decoder.decode(np.full((2, len(LABELS)), np.nan))
    unigram = NGramModel.fit([["the", "cat"]], order=1).write_arpa(tmp_path / "uni.arpa")
    with pytest.raises(ConfigError, match="order of at least 2"):
        LMDecoder(LABELS, unigram)
    with pytest.raises(ConfigError, match="cannot read"):
        LMDecoder(LABELS, tmp_path / "missing.arpa")


@pytest.mark.parametrize(
    "labels, match",
    [
        (["<blank>"], "at least two"),
        ("abc", "at least two"),
        (["<blank>", "a", "a"], "unique"),
        (["<blank>", "a", "<blank>"], "unique"),
        (["<blank>", "a", ""], "non-empty"),
        (["<blank>", "a b"], "whitespace"),
    ],
)
def test_bad_labels(labels, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        LMDecoder(labels, tmp_path / "lm.arpa")


def test_bad_beam_width():
    with pytest.raises(ConfigError, match="beam_width"):
        LMDecoder(LABELS, None, beam_width=0)


def test_missing_extra_is_one_clear_error(monkeypatch, tmp_path):
    # A None entry in sys.modules makes `import` raise ImportError, as if not installed.
    monkeypatch.setitem(sys.modules, "pyctcdecode", None)
    monkeypatch.setitem(sys.modules, "kenlm", None)
    with pytest.raises(ConfigError) as err:
        LMDecoder(LABELS, tmp_path / "lm.arpa")
    assert str(err.value) == LM_EXTRA_MESSAGE
    assert "\n" not in LM_EXTRA_MESSAGE and "make lm" in LM_EXTRA_MESSAGE and "--no-deps" in LM_EXTRA_MESSAGE
    with pytest.raises(ConfigError, match="needs kenlm and pyctcdecode"):
        LMDecoder.plain_beam(LABELS)
