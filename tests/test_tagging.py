"""Tagged transcripts: writing slot and part-of-speech targets, and reading any hypothesis back."""

import random
import re

import pytest

from speechssl.downstream.tagging import (
    SPACE,
    closing_tag,
    is_tag,
    parse_slots,
    parse_tagged_words,
    plain_text,
    pos_symbols,
    slot_symbols,
    tag,
)


def _symbols(text: str) -> list[str]:
    """Symbols written readably: every ``<name>`` or ``</name>`` is one symbol, the rest characters."""
    out: list[str] = []
    for part in re.split(r"(</?[^<>\s/][^<>\s]*>)", text):
        out.extend([part] if is_tag(part) else list(part))
    return out


# ----------------------------------------------------------------------------- tag symbols


def test_tag_symbols():
    assert tag("city") == "<city>" and closing_tag("city") == "</city>"
    assert tag("NOUN") == "<NOUN>"
    assert is_tag("<city>") and is_tag("</city>") and is_tag("<NOUN>")
    assert _symbols("a<b> </b>") == ["a", "<b>", " ", "</b>"]  # the test helper itself
    for text in ["<", ">", "a", " ", "<>", "</>", "<a b>", "<<a>", "<//a>", "ab"]:
        assert not is_tag(text), text
    for bad in ["", "a b", "/a", "a>", "<a", None]:
        with pytest.raises(ValueError, match="tag names"):
            tag(bad)


# ----------------------------------------------------------------------------- slot filling


def test_slot_symbols_layout():
    words = "book a taxi to the airport".split()
    symbols = slot_symbols(words, [{"type": "place", "start_word": 4, "end_word": 6, "value": "the airport"}])
    assert "".join(symbols) == "book a taxi to <place> the airport </place>"
    assert symbols.count("<place>") == 1 and symbols.count("</place>") == 1
    assert all(len(s) == 1 for s in symbols if not is_tag(s))  # everything else is characters
    # Tags have a space on both sides, and the words are separated by single spaces.
    i = symbols.index("<place>")
    assert symbols[i - 1] == SPACE and symbols[i + 1] == SPACE
    assert symbols[-2:] == [SPACE, "</place>"]


def test_slot_symbols_several_slots_any_order():
    words = "wake me at seven in paris".split()
    slots = [
        {"type": "city", "start_word": 5, "end_word": 6},
        {"type": "time", "start_word": 0, "end_word": 1},
        {"type": "time", "start_word": 3, "end_word": 4},
    ]
    expected = "<time> wake </time> me at <time> seven </time> in <city> paris </city>"
    assert "".join(slot_symbols(words, slots)) == expected
    # Adjacent slots are fine.
    adjacent = [{"type": "a", "start_word": 0, "end_word": 1}, {"type": "b", "start_word": 1, "end_word": 2}]
    assert "".join(slot_symbols(["x", "y"], adjacent)) == "<a> x </a> <b> y </b>"
    assert "".join(slot_symbols(["x", "y"], [])) == "x y"


def test_slot_symbols_bad_references():
    words = ["a", "b", "c"]
    with pytest.raises(ValueError, match="overlap"):
        slot_symbols(words, [{"type": "x", "start_word": 0, "end_word": 2},
                             {"type": "y", "start_word": 1, "end_word": 3}])
    with pytest.raises(ValueError, match="span"):
        slot_symbols(words, [{"type": "x", "start_word": 2, "end_word": 2}])
    with pytest.raises(ValueError, match="span"):
        slot_symbols(words, [{"type": "x", "start_word": 2, "end_word": 4}])
    with pytest.raises(ValueError, match="needs"):
        slot_symbols(words, [{"type": "x", "start_word": 0}])
    with pytest.raises(ValueError, match="slot type"):
        slot_symbols(words, [{"type": "x y", "start_word": 0, "end_word": 1}])
    with pytest.raises(ValueError, match="word 1"):
        slot_symbols(["a", "", "c"], [])


def test_parse_slots_round_trip():
    words = "wake me at seven in new york".split()
    slots = [{"type": "time", "start_word": 3, "end_word": 4}, {"type": "city", "start_word": 5, "end_word": 7}]
    symbols = slot_symbols(words, slots)
    assert parse_slots(symbols) == [("time", "seven"), ("city", "new york")]
    assert plain_text(symbols) == "wake me at seven in new york"
    assert parse_slots(_symbols("no slot here")) == []


def test_parse_slots_malformed_hypotheses():
    # Missing spaces around tags: the value is still the text between them.
    assert parse_slots(_symbols("to<city>paris</city>")) == [("city", "paris")]
    assert plain_text(_symbols("to<city>paris</city>now")) == "to paris now"  # a tag is a word boundary
    # Unmatched opening tag, stray closing tag, closing tag of another type: no slot.
    assert parse_slots(_symbols("<city> paris")) == []
    assert parse_slots(_symbols("paris </city>")) == []
    assert parse_slots(_symbols("<city> paris </time>")) == []
    # Empty value: not a slot, and scanning goes on after the opening tag.
    assert parse_slots(_symbols("<city> </city> <time> noon </time>")) == [("time", "noon")]
    # The nearest closing tag of the same type ends the value (SUPERB's non-greedy match).
    assert parse_slots(_symbols("<city> a </city> b </city>")) == [("city", "a")]
    # A repeated opening tag is text inside the value; it is removed from the value.
    assert parse_slots(_symbols("<city> a <city> b </city>")) == [("city", "a b")]
    # Nested pair: the outer slot wins, inner tags are dropped from its value.
    assert parse_slots(_symbols("<city> new <time> york </time> </city> <time> x </time>")) == [
        ("city", "new york"),
        ("time", "x"),
    ]
    # An opening tag inside an unmatched one is still found.
    assert parse_slots(_symbols("<city> a <time> b </time>")) == [("time", "b")]
    # <unk> reads as an (unmatched) tag.
    assert parse_slots(["<unk>", "a"]) == [] and plain_text(["a", "<unk>", "b"]) == "a b"
    assert parse_slots([]) == [] and plain_text([]) == ""
    assert parse_slots(_symbols("<city> <time> </time> </city>")) == []


# ----------------------------------------------------------------------------- part of speech


def test_pos_symbols_layout_and_round_trip():
    words, pos = ["the", "cat", "sleeps"], ["DET", "NOUN", "VERB"]
    symbols = pos_symbols(words, pos)
    assert "".join(symbols) == "the <DET> cat <NOUN> sleeps <VERB>"
    assert [s for s in symbols if is_tag(s)] == ["<DET>", "<NOUN>", "<VERB>"]
    assert parse_tagged_words(symbols) == list(zip(words, pos))
    assert plain_text(symbols) == "the cat sleeps"
    assert pos_symbols([], []) == []


def test_pos_symbols_bad_references():
    with pytest.raises(ValueError, match="2 words but 1"):
        pos_symbols(["a", "b"], ["DET"])
    with pytest.raises(ValueError, match="word 1"):
        pos_symbols(["a", "b"], ["DET", ""])
    with pytest.raises(ValueError, match="word 0"):
        pos_symbols([" "], ["DET"])


def test_parse_tagged_words_malformed_hypotheses():
    # A word with no tag after it gets None.
    assert parse_tagged_words(_symbols("the <DET> cat")) == [("the", "DET"), ("cat", None)]
    # Several words before one tag: only the last gets it.
    assert parse_tagged_words(_symbols("the big cat <NOUN>")) == [("the", None), ("big", None), ("cat", "NOUN")]
    # A tag right after a word, without the space; a tag at the start; two tags in a row.
    assert parse_tagged_words(_symbols("<DET> the<DET> cat <NOUN> <VERB> runs")) == [
        ("the", "DET"),
        ("cat", "NOUN"),
        ("runs", None),
    ]
    # Extra spaces, closing tags read as tags, <unk> as a tag named "unk".
    assert parse_tagged_words(_symbols("  a   </DET>  b <unk>")) == [("a", "DET"), ("b", "unk")]
    assert parse_tagged_words(_symbols("<NOUN>")) == []
    assert parse_tagged_words([]) == []


def test_parsers_never_raise_on_random_hypotheses():
    rng = random.Random(0)
    alphabet = [" ", "a", "b", "<", ">", "/", "<a>", "</a>", "<b>", "</b>", "<NOUN>", "<unk>", "ab"]
    for _ in range(500):
        symbols = [rng.choice(alphabet) for _ in range(rng.randint(0, 25))]
        for value_type, value in parse_slots(symbols):
            assert value_type in ("a", "b", "NOUN", "unk") and value == " ".join(value.split()) and value
        for word, word_tag in parse_tagged_words(symbols):
            assert word and not any(ch.isspace() for ch in word)
            assert word_tag is None or word_tag in ("a", "b", "NOUN", "unk")
        assert plain_text(symbols) == " ".join(plain_text(symbols).split())
