"""Tagged words and the compact notation the content tables are written in.

Every word of a generated sentence carries a Universal POS tag so that a syntactic
probing task is possible. Tables stay readable by tagging most words through a
per-language lexicon (see :mod:`.pos_lexicon`) and only writing ``word/TAG`` inline
where a word's tag differs from its lexicon entry or from a slot's default.

Slot fillers are written ``prefix|value|suffix``: only ``value`` is the slot span;
``prefix``/``suffix`` hold the words that grammar attaches to the value (articles,
prepositions, a counted noun), e.g. ``"dans la|cuisine"`` or ``"pro|dvě|osoby"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# The 17 Universal Dependencies part-of-speech tags.
UPOS = frozenset(
    "ADJ ADP ADV AUX CCONJ DET INTJ NOUN NUM PART PRON PROPN PUNCT SCONJ SYM VERB X".split()
)

# Written French/Italian attach an elided word to the next one ("l'aéroport",
# "all'una"); UD tokenisation keeps them as separate tokens. Only these tokens are
# joined, so a truncated word such as Italian "po'" keeps its space.
ELIDED = frozenset({"l'", "d'", "j'", "c'", "s'", "qu'", "un'", "all'", "dell'", "nell'", "sull'"})


@dataclass(frozen=True)
class Token:
    word: str
    pos: str


@dataclass(frozen=True)
class SlotPhrase:
    """A rendered slot filler: ``value`` is the span, the rest is grammatical glue."""

    prefix: tuple[Token, ...]
    value: tuple[Token, ...]
    suffix: tuple[Token, ...] = ()


def parse_lexicon(block: str) -> dict[str, str]:
    """Parse lines ``TAG: word word ...`` into ``{word: TAG}``.

    A word listed under two tags is an error: an ambiguous word must be tagged
    inline where it is used, otherwise one of its uses would be silently wrong.
    """
    lexicon: dict[str, str] = {}
    for line in block.strip().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        tag, sep, words = line.partition(":")
        tag = tag.strip()
        if not sep or tag not in UPOS:
            raise ValueError(f"lexicon line {line!r} must start with a UPOS tag and ':'")
        for word in words.split():
            if lexicon.get(word, tag) != tag:
                raise ValueError(f"lexicon word {word!r} listed as both {lexicon[word]} and {tag}")
            lexicon[word] = tag
    return lexicon


def tokenize(text: str, lexicon: Mapping[str, str], default: str | None = None) -> tuple[Token, ...]:
    """Tag the words of ``text``: inline ``/TAG``, else the lexicon, else ``default``."""
    tokens = []
    for item in text.split():
        word, _, tag = item.partition("/")
        tag = tag or lexicon.get(word) or default or ""
        if tag not in UPOS:
            raise ValueError(f"no part-of-speech tag for {word!r} in {text!r}")
        tokens.append(Token(word, tag))
    return tuple(tokens)


def slot_phrase(text: str, lexicon: Mapping[str, str], default: str) -> SlotPhrase:
    """Parse ``prefix|value|suffix`` (prefix and suffix optional).

    Value words fall back to the slot type's ``default`` tag (e.g. PROPN for
    cities); glue words must be in the lexicon, since they are closed-class.
    """
    parts = text.split("|")
    if len(parts) == 1:
        prefix, value, suffix = "", parts[0], ""
    elif len(parts) == 2:
        (prefix, value), suffix = parts, ""
    elif len(parts) == 3:
        prefix, value, suffix = parts
    else:
        raise ValueError(f"slot phrase {text!r} has more than three '|'-separated parts")
    phrase = SlotPhrase(tokenize(prefix, lexicon), tokenize(value, lexicon, default), tokenize(suffix, lexicon))
    if not phrase.value:
        raise ValueError(f"slot phrase {text!r} has an empty value")
    return phrase


def detokenize(words: Iterable[str]) -> str:
    """Orthographic text of a token sequence (elided tokens attach to the next word)."""
    out: list[str] = []
    glue = False
    for word in words:
        if glue:
            out[-1] += word
        else:
            out.append(word)
        glue = word in ELIDED
    return " ".join(out)
