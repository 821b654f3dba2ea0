"""Tagged transcripts: how word-level labels are written as CTC symbol sequences and read back.

Two sequence tasks predict labels attached to words, and both write them into the
transcript as extra symbols, so that one CTC output layer emits the words and their labels
together (the SUPERB recipe for slot filling, used here for part-of-speech tagging too).

Symbol conventions (the only ones the tasks use)
------------------------------------------------
- A transcript is a list of symbols. Every character of a word is one symbol, the space
  between two items is the one-character symbol ``" "`` (:data:`SPACE`), and a tag is a
  single multi-character symbol: ``"<name>"`` (:func:`tag`) or ``"</name>"``
  (:func:`closing_tag`). A one-character symbol is never a tag, so a literal ``"<"`` in
  a word stays a character.
- Tag names are non-empty and contain no whitespace, ``"<"`` or ``">"``, and do not start
  with ``"/"``.
- Slot filling (:func:`slot_symbols`): words joined by single spaces, each slot span
  enclosed by its type's opening and closing tag, with a space on either side of each tag
  like SUPERB's ``B-type ... E-type`` transcripts::

      book a taxi to <place> the airport </place>

- Part of speech (:func:`pos_symbols`): every word is followed by a space and its tag,
  and the word-tag pairs are separated by spaces::

      the <DET> cat <NOUN> sleeps <VERB>

Parsing is for decoded hypotheses, which can be any sequence of symbols the model knows:
stray or unmatched tags, missing spaces, empty words. The parsers never raise on such
input; what they do with each malformation is in their docstrings. The writers, on the
other hand, check their (reference) input and raise ``ValueError`` on malformed labels.

A ``"<unk>"`` symbol (what a tokenizer decodes an unknown id to) reads as a tag named
``unk``: it matches no reference tag and is dropped from the plain text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "SPACE",
    "closing_tag",
    "is_tag",
    "parse_slots",
    "parse_tagged_words",
    "plain_text",
    "pos_symbols",
    "slot_symbols",
    "tag",
]

SPACE = " "
"""The word separator symbol (one space character)."""

_FORBIDDEN_IN_NAMES = frozenset("<>")


# --------------------------------------------------------------------------- tag symbols


def _is_name(name: object) -> bool:
    """Whether ``name`` can be a tag name (the rule in the module docstring)."""
    return (
        isinstance(name, str)
        and name != ""
        and not name.startswith("/")
        and not any(ch.isspace() or ch in _FORBIDDEN_IN_NAMES for ch in name)
    )


def _check_name(name: object, what: str) -> str:
    if not _is_name(name):
        raise ValueError(f"invalid {what} {name!r}: tag names are non-empty, without whitespace, '<' or '>', "
                         "and do not start with '/'")
    return name


def tag(name: str) -> str:
    """The (opening) tag symbol of ``name``: ``"<name>"``."""
    return f"<{_check_name(name, 'tag name')}>"


def closing_tag(name: str) -> str:
    """The closing tag symbol of ``name``: ``"</name>"``."""
    return f"</{_check_name(name, 'tag name')}>"


def is_tag(symbol: str) -> bool:
    """Whether ``symbol`` is a tag (opening or closing) rather than text."""
    return _read_tag(symbol) is not None


def _read_tag(symbol: object) -> tuple[str, bool] | None:
    """``(name, closing)`` if ``symbol`` is a tag symbol, else None (it is text)."""
    if not isinstance(symbol, str) or len(symbol) < 3 or symbol[0] != "<" or symbol[-1] != ">":
        return None
    name = symbol[1:-1]
    closing = name.startswith("/")
    if closing:
        name = name[1:]
    return (name, closing) if _is_name(name) else None


def _text_of(symbol: object) -> str:
    # Decoded symbols are vocabulary strings; str() keeps the parsers total for anything else.
    return symbol if isinstance(symbol, str) else str(symbol)


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _word_symbols(word: object, index: int) -> list[str]:
    if not isinstance(word, str) or not word.strip():
        raise ValueError(f"word {index} is {word!r}: words must be non-empty strings")
    return list(word)


# --------------------------------------------------------------------------- slot filling


def slot_symbols(words: Sequence[str], slots: Sequence[Mapping[str, Any]]) -> list[str]:
    """The slot-filling target of an utterance: its characters with every slot enclosed in tags.

    ``slots`` are mappings with ``"type"``, ``"start_word"`` and ``"end_word"`` (word
    indices, end exclusive; other keys are ignored), in any order. Slots must be non-empty
    and must not overlap: the tag scheme has no way to write nested or crossing spans.
    """
    words = list(words)
    opening: dict[int, str] = {}
    closing: dict[int, str] = {}
    spans = []
    for k, slot in enumerate(slots):
        try:
            slot_type, start, end = slot["type"], slot["start_word"], slot["end_word"]
        except (KeyError, TypeError):
            raise ValueError(f"slot {k} ({slot!r}) needs 'type', 'start_word' and 'end_word'") from None
        _check_name(slot_type, f"slot type in slot {k}")
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(words)):
            raise ValueError(f"slot {k} spans words [{start!r}, {end!r}), not a non-empty span of {len(words)} words")
        spans.append((start, end, slot_type))
    spans.sort()
    for (_, end, first), (start, _, second) in zip(spans, spans[1:]):
        if start < end:
            raise ValueError(f"slots {first!r} and {second!r} overlap")
    for start, end, slot_type in spans:
        opening[start] = tag(slot_type)
        closing[end - 1] = closing_tag(slot_type)

    # Words and tags are items separated by single spaces.
    items: list[list[str]] = []
    for i, word in enumerate(words):
        if i in opening:
            items.append([opening[i]])
        items.append(_word_symbols(word, i))
        if i in closing:
            items.append([closing[i]])
    return _join_items(items)


def _join_items(items: list[list[str]]) -> list[str]:
    symbols: list[str] = []
    for k, item in enumerate(items):
        if k:
            symbols.append(SPACE)
        symbols.extend(item)
    return symbols


def parse_slots(symbols: Sequence[str]) -> list[tuple[str, str]]:
    """``(type, value)`` of every slot in a tagged transcript, in order of the opening tags.

    Reads any symbol sequence the way SUPERB's regular expression ``B-(\\S+) (.+?) E-\\1``
    reads its transcripts: an opening tag ``<t>`` is paired with the *nearest* following
    closing tag ``</t>`` of the same type; the value is the :func:`plain_text` between them
    (other tags removed, as SUPERB removes them from hypothesis values, and whitespace
    collapsed). Scanning resumes after the closing tag, so pairs never overlap and a tag
    pair inside a value is not a slot of its own. An opening tag without a closing one, or
    whose value is empty, is skipped; a closing tag without an opening one is ignored.
    """
    symbols = list(symbols)
    tags = [_read_tag(s) for s in symbols]
    slots: list[tuple[str, str]] = []
    i = 0
    while i < len(symbols):
        if tags[i] is None or tags[i][1]:  # text, or a closing tag with no opening one
            i += 1
            continue
        name = tags[i][0]
        end = next((j for j in range(i + 1, len(symbols)) if tags[j] == (name, True)), None)
        value = "" if end is None else plain_text(symbols[i + 1 : end])
        if not value:  # unmatched, or nothing inside: not a slot
            i += 1
            continue
        slots.append((name, value))
        i = end + 1
    return slots


def plain_text(symbols: Sequence[str]) -> str:
    """The text of a tagged transcript: tags removed, whitespace collapsed.

    What the transcript says regardless of its labels, for WER/CER of a tagging task. A tag
    counts as a word boundary (it is replaced by a space before collapsing), so a hypothesis
    that leaves out the spaces around a tag does not merge the words on either side.
    """
    return _collapse("".join(SPACE if _read_tag(s) is not None else _text_of(s) for s in symbols))


# --------------------------------------------------------------------------- part of speech


def pos_symbols(words: Sequence[str], pos: Sequence[str]) -> list[str]:
    """The part-of-speech target of an utterance: each word, a space, its tag symbol.

    ``pos`` holds one tag name per word (e.g. Universal POS tags ``NOUN``, ``VERB``).
    """
    words, pos = list(words), list(pos)
    if len(words) != len(pos):
        raise ValueError(f"{len(words)} words but {len(pos)} part-of-speech tags")
    items: list[list[str]] = []
    for i, (word, name) in enumerate(zip(words, pos)):
        items.append(_word_symbols(word, i))
        items.append([tag(_check_name(name, f"part-of-speech tag of word {i}"))])
    return _join_items(items)


def parse_tagged_words(symbols: Sequence[str]) -> list[tuple[str, str | None]]:
    """``(word, tag)`` for every word of a part-of-speech tagged transcript.

    Words are the whitespace-separated runs of text between tags (a tag also ends a word,
    with or without a space before it). A tag labels the word just before it, if that word
    has no tag yet; so of several words before one tag only the last gets it, a word with
    no tag after it gets None, and a tag with no untagged word before it (at the start,
    right after another tag) is ignored. Closing tags are read as tags of the same name.
    """
    tagged: list[tuple[str, str | None]] = []
    text: list[str] = []

    def flush_text() -> None:
        tagged.extend((word, None) for word in "".join(text).split())
        text.clear()

    for symbol in symbols:
        read = _read_tag(symbol)
        if read is None:
            text.append(_text_of(symbol))
            continue
        flush_text()
        if tagged and tagged[-1][1] is None:
            tagged[-1] = (tagged[-1][0], read[0])
    flush_text()
    return tagged
