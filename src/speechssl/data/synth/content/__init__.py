"""What the synthetic corpus says: language-independent meanings rendered as sentences.

A :class:`Meaning` is an intent plus concept ids for its slots
(``weather_query(city=paris,day=monday)``). :func:`render` turns it into a
:class:`Sentence` in any of the 8 languages, with a POS tag per word and slot
spans as word indices. Because meanings are language-independent, every
utterance can carry the same meaning in all other languages (speech translation
targets), and held-out test sentences are obtained by holding out meanings
(:func:`split_meanings`).
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from functools import cache, lru_cache

from speechssl.data.synth.content.grammar import UPOS, Token, detokenize, tokenize
from speechssl.data.synth.content.intents import INTENTS, SLOT_RE, Intent
from speechssl.data.synth.content.pos_lexicon import LEXICON
from speechssl.data.synth.content.slots import LANGUAGES, SLOT_FORMS, SLOT_TYPES, render_slot, slot_values

INTENT_NAMES: tuple[str, ...] = tuple(intent.name for intent in INTENTS)
SLOT_TYPE_NAMES: tuple[str, ...] = tuple(SLOT_TYPES)
POS_TAGS: tuple[str, ...] = tuple(sorted(UPOS))


@dataclass(frozen=True)
class Meaning:
    intent: str
    frame: int
    slots: tuple[tuple[str, str], ...]  # (slot type, concept id), in the frame's order

    @property
    def id(self) -> str:
        """Readable and stable: ``book_taxi(place=airport,time=07:30)``."""
        return f"{self.intent}({','.join(f'{t}={v}' for t, v in self.slots)})"


@dataclass(frozen=True)
class SlotSpan:
    type: str
    value: str  # surface text of the span
    concept: str  # language-independent concept id
    start_word: int  # inclusive
    end_word: int  # exclusive, like a Python slice

    def to_dict(self) -> dict[str, object]:
        return {"type": self.type, "value": self.value, "concept": self.concept,
                "start_word": self.start_word, "end_word": self.end_word}


@dataclass(frozen=True)
class Sentence:
    text: str
    words: tuple[str, ...]
    pos: tuple[str, ...]
    slots: tuple[SlotSpan, ...]


_INTENTS = {intent.name: intent for intent in INTENTS}


def meanings(intent: str) -> list[Meaning]:
    """Every meaning of ``intent``: the product of its slots' values, for each frame."""
    out = []
    for index, frame in enumerate(_INTENTS[intent].frames):
        for values in itertools.product(*(slot_values(t) for t in frame.slots)):
            out.append(Meaning(intent, index, tuple(zip(frame.slots, values))))
    return out


def num_templates(meaning: Meaning, lang: str) -> int:
    return len(_INTENTS[meaning.intent].frames[meaning.frame].templates[lang])


def render(meaning: Meaning, lang: str, template: int = 0) -> Sentence:
    """``meaning`` as a sentence of ``lang`` using template number ``template`` (0 = canonical)."""
    values = dict(meaning.slots)
    words: list[Token] = []
    spans: list[SlotSpan] = []
    for item in _template_items(meaning.intent, meaning.frame, lang, template):
        if isinstance(item, Token):
            words.append(item)
            continue
        slot_type, form = item
        phrase = render_slot(slot_type, values[slot_type], lang, form)
        words.extend(phrase.prefix)
        start = len(words)
        words.extend(phrase.value)
        spans.append(SlotSpan(slot_type, detokenize(t.word for t in phrase.value), values[slot_type],
                              start, len(words)))
        words.extend(phrase.suffix)
    tokens = tuple(t.word for t in words)
    return Sentence(detokenize(tokens), tokens, tuple(t.pos for t in words), tuple(spans))


@cache
def _template_items(intent: str, frame: int, lang: str, template: int) -> tuple[Token | tuple[str, str], ...]:
    """A template parsed once: tagged words and (slot type, form) placeholders."""
    text = _INTENTS[intent].frames[frame].templates[lang][template]
    items: list[Token | tuple[str, str]] = []
    for item in text.split():
        match = SLOT_RE.match(item)
        if match:
            items.append((match.group(1), match.group(2) or ""))
        else:
            items.extend(tokenize(item, LEXICON[lang]))
    return tuple(items)


@lru_cache(maxsize=1)
def pos_tags_in_use() -> tuple[str, ...]:
    """Every POS tag the content can produce (a fixed label set, whatever was sampled)."""
    tags: set[str] = set()
    for intent in INTENTS:
        for index, frame in enumerate(intent.frames):
            for lang in LANGUAGES:
                for template in range(len(frame.templates[lang])):
                    items = _template_items(intent.name, index, lang, template)
                    tags.update(item.pos for item in items if isinstance(item, Token))
    for slot_type in SLOT_TYPE_NAMES:
        for value in slot_values(slot_type):
            for lang in LANGUAGES:
                for form in SLOT_FORMS.get(slot_type, ("",)):
                    phrase = render_slot(slot_type, value, lang, form)
                    tags.update(t.pos for t in phrase.prefix + phrase.value + phrase.suffix)
    return tuple(sorted(tags))


def _hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def split_meanings(dev_fraction: float, test_fraction: float) -> dict[str, dict[str, list[Meaning]]]:
    """Partition every intent's meanings into disjoint train/dev/test pools.

    Meanings are ordered by a hash of their id (not by the seed), so the held-out
    sets are a property of the content, and each split gets at least one meaning
    of every intent. Distinct meanings never render to the same text, so no dev or
    test sentence, in any language, occurs in train.
    """
    pools: dict[str, dict[str, list[Meaning]]] = {"train": {}, "dev": {}, "test": {}}
    for intent in INTENT_NAMES:
        ordered = sorted(meanings(intent), key=lambda m: _hash(m.id))
        n = len(ordered)
        n_test = max(1, round(n * test_fraction))
        n_dev = max(1, round(n * dev_fraction))
        if n_test + n_dev >= n:
            raise ValueError(f"intent {intent} has only {n} meanings; cannot hold out {n_test + n_dev}")
        pools["test"][intent] = ordered[:n_test]
        pools["dev"][intent] = ordered[n_test:n_test + n_dev]
        pools["train"][intent] = ordered[n_test + n_dev:]
    return pools


__all__ = [
    "INTENT_NAMES", "LANGUAGES", "POS_TAGS", "SLOT_TYPE_NAMES", "Intent", "Meaning", "Sentence", "SlotSpan",
    "meanings", "num_templates", "pos_tags_in_use", "render", "split_meanings",
]
