"""Word n-gram language model: interpolated Kneser-Ney estimation, ARPA output and ARPA scoring.

Why our own estimator: the multilingual ASR benchmark wants a small word LM per language
for shallow fusion, and we want its numbers to be checkable by hand rather than trusting a
binary (KenLM's ``lmplz``) that is not always installable. :class:`NGramModel` estimates the
model, :meth:`NGramModel.write_arpa` writes the standard text format that KenLM and
pyctcdecode load, and :class:`ArpaModel` reads any ARPA file back and scores it with
backoff, which is how the tests prove that the written file *is* the estimated model.

Conventions (the same as SRILM and KenLM)
-----------------------------------------
- A sentence ``w1 .. wk`` is scored as ``<s> w1 .. wk </s>``: ``<s>`` is only ever a
  context, never predicted (ARPA log10 probability -99), ``</s>`` is predicted once per
  sentence. Perplexity counts the k words plus ``</s>``.
- The vocabulary is every training word plus ``<s>``, ``</s>`` and ``<unk>``. A word outside
  it, in the predicted position or in the context, is scored as ``<unk>``.

Estimator: interpolated Kneser-Ney with one discount per order
--------------------------------------------------------------
Let N be the order. For an n-gram ``g = h w`` (context h of n-1 words) the *adjusted
count* a(g) is

- the raw count c(g) when n = N, or when g starts with ``<s>`` (nothing can precede it);
- otherwise the continuation count N1+(. g): the number of distinct words v with
  c(v g) > 0, i.e. in how many different contexts g was seen to continue.

The discount of order n is Ney's estimate D_n = n1 / (n1 + 2 n2), n1 and n2 being the
number of n-grams of that order whose adjusted count is 1 and 2. It is used only when both
n1 and n2 are positive: with n1 = 0 it would be 0 (no mass left for unseen words, so some
log probabilities would be -inf) and with n2 = 0 it would be 1 (every singleton wiped out),
so those cases, and the case with no n-grams at all, fall back to D_n = 0.5, which is what
KenLM's ``--discount_fallback`` does for its first discount on tiny corpora.

With A(h) = sum_w a(h w) and N1+(h .) = the number of distinct w with a(h w) > 0::

    p_n(w | h) = max(a(h w) - D_n, 0) / A(h)  +  gamma(h) * p_{n-1}(w | h')
    gamma(h)   = D_n * N1+(h .) / A(h)

where h' is h without its first word; when A(h) = 0 (context never seen at this order),
p_n(w | h) = p_{n-1}(w | h'). The recursion ends at the unigram level, which interpolates
with the uniform distribution over the predictable vocabulary V (every word, ``</s>`` and
``<unk>``; not ``<s>``)::

    p_1(w) = max(a(w) - D_1, 0) / A  +  D_1 * N1+(.) / A * 1 / |V|

``<unk>`` is never seen in training, so a(<unk>) = 0 and it gets exactly the uniform floor
D_1 N1+(.) / (A |V|): a small mass, in proportion to how much the unigram level discounted,
and the same as any other word's share of that floor (KenLM makes the same choice).

ARPA form
---------
The file lists, at order 1, every vocabulary word, and at order n > 1 every n-gram with
a(g) > 0, each with its interpolated probability p_n. A listed n-gram that is the context of
a listed (n+1)-gram carries the backoff weight that makes the backoff reading of the file
reproduce the interpolated model for unseen continuations as well::

    bow(h) = (1 - sum_{w: h w listed} p(w | h)) / (1 - sum_{w: h w listed} p_{n-1}(w | h'))

For an interpolated model this ratio equals gamma(h) exactly (the listed words are the
seen ones and every unseen word gets gamma(h) p_{n-1}), so gamma(h) is what is written:
the closed form, free of the cancellation in ``1 - sum``. The tests check the ratio.
"""

from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from speechssl.errors import ConfigError

__all__ = ["BOS", "EOS", "UNK", "ArpaModel", "NGramModel", "arpa_unigrams"]

BOS = "<s>"
EOS = "</s>"
UNK = "<unk>"

# log10 probability ARPA files give <s>, which is never predicted (SRILM and KenLM write -99).
BOS_LOG10 = -99.0
# Ney's estimate is replaced by this discount when it is 0, 1 or undefined (see module doc).
FALLBACK_DISCOUNT = 0.5


def _check_order(order) -> int:
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ConfigError(f"n-gram order must be an integer >= 1, got {order!r}")
    return order


def _check_sentence(index: int, sentence) -> tuple[str, ...]:
    """One training sentence as a tuple of words; rejects what would corrupt an ARPA file."""
    if isinstance(sentence, str):
        raise ConfigError(
            f"sentence {index} is a string, not a sequence of words: split it first (str.split())"
        )
    words = tuple(sentence)
    for word in words:
        if not isinstance(word, str) or not word or any(ch.isspace() for ch in word):
            raise ConfigError(
                f"sentence {index}: every word must be a non-empty string without whitespace, "
                f"got {word!r}"
            )
        if word in (BOS, EOS):
            raise ConfigError(
                f"sentence {index} contains {word!r}: sentence boundaries are added by the model"
            )
    return words


def _ney_discount(adjusted: dict[tuple[str, ...], int]) -> float:
    """D = n1 / (n1 + 2 n2) over the adjusted counts of one order, or the fallback."""
    histogram = Counter(adjusted.values())
    n1, n2 = histogram.get(1, 0), histogram.get(2, 0)
    if n1 == 0 or n2 == 0:
        return FALLBACK_DISCOUNT
    return n1 / (n1 + 2 * n2)


def _log10(p: float) -> float:
    return math.log10(p) if p > 0 else float("-inf")


class NGramModel:
    """An interpolated Kneser-Ney word n-gram model estimated from tokenised sentences.

    Build it with :meth:`fit`. The attributes ``adjusted`` (per order, n-gram -> adjusted
    count) and ``discounts`` (per order) are public so that tests and reports can show the
    statistics behind each probability; index 0 of both lists is unused so that index n is
    order n.
    """

    def __init__(
        self,
        order: int,
        adjusted: list[dict[tuple[str, ...], int]],
        vocab: Iterable[str],
    ):
        self.order = _check_order(order)
        self.adjusted = adjusted
        self.vocab = frozenset(vocab) | {BOS, EOS, UNK}
        # Predictable words: everything but <s>; the uniform floor is spread over these.
        self.predictable = sorted(self.vocab - {BOS})
        self.discounts = [0.0] + [_ney_discount(adjusted[n]) for n in range(1, order + 1)]
        # Per order: context -> A(h) and context -> N1+(h .).
        self._totals: list[dict[tuple[str, ...], int]] = [{}]
        self._types: list[dict[tuple[str, ...], int]] = [{}]
        for n in range(1, order + 1):
            totals: dict[tuple[str, ...], int] = defaultdict(int)
            types: dict[tuple[str, ...], int] = defaultdict(int)
            for gram, count in adjusted[n].items():
                totals[gram[:-1]] += count
                types[gram[:-1]] += 1
            self._totals.append(dict(totals))
            self._types.append(dict(types))

    # ------------------------------------------------------------------ estimation

    @classmethod
    def fit(cls, sentences: Iterable[Sequence[str]], order: int = 3) -> NGramModel:
        """Count the n-grams of ``sentences`` (each a sequence of words) and estimate the model."""
        order = _check_order(order)
        raw: Counter[tuple[str, ...]] = Counter()  # highest-order n-grams, and those from <s>
        vocab: set[str] = set()
        n_sentences = 0
        for index, sentence in enumerate(sentences):
            words = _check_sentence(index, sentence)
            vocab.update(words)
            n_sentences += 1
            padded = (BOS, *words, EOS)
            for end in range(1, len(padded)):  # position of the predicted word
                for n in range(1, order + 1):
                    start = end - n + 1
                    if start < 0:
                        break
                    # Raw counts are needed for order N, and for n-grams that start at <s>.
                    if n == order or start == 0:
                        raw[padded[start : end + 1]] += 1
            # Every shorter n-gram that is not at <s> has a left neighbour, so its adjusted
            # count comes from the distinct (n+1)-grams; those are collected below.
        if n_sentences == 0:
            raise ConfigError("cannot estimate an n-gram model from an empty corpus")

        adjusted: list[dict[tuple[str, ...], int]] = [{} for _ in range(order + 1)]
        for gram, count in raw.items():
            adjusted[len(gram)][gram] = count
        # Continuation counts, from the top down: each distinct (n+1)-gram v g adds one to g.
        for n in range(order - 1, 0, -1):
            level = adjusted[n]
            for gram in adjusted[n + 1]:
                suffix = gram[1:]  # never starts with <s>, which only opens a sentence
                level[suffix] = level.get(suffix, 0) + 1
        return cls(order, adjusted, vocab)

    # ------------------------------------------------------------------ scoring

    def _word(self, word: str) -> str:
        return word if word in self.vocab else UNK

    def _context(self, context: Sequence[str]) -> tuple[str, ...]:
        if self.order == 1:
            return ()
        return tuple(self._word(w) for w in context)[-(self.order - 1) :]

    def _gamma(self, context: tuple[str, ...]) -> float:
        """Interpolation weight of the lower order after ``context`` (0 if it is unseen)."""
        n = len(context) + 1
        total = self._totals[n].get(context, 0)
        if total == 0:
            return 0.0
        return self.discounts[n] * self._types[n][context] / total

    def _prob(self, word: str, context: tuple[str, ...]) -> float:
        """Interpolated p(word | context) straight from the counts; both already mapped to the
        vocabulary and the context at most order-1 words long."""
        n = len(context) + 1
        total = self._totals[n].get(context, 0)
        if n == 1:
            floor = self._gamma(()) / len(self.predictable)
            return max(self.adjusted[1].get((word,), 0) - self.discounts[1], 0) / total + floor
        lower = self._prob(word, context[1:])
        if total == 0:
            return lower
        count = self.adjusted[n].get((*context, word), 0)
        return max(count - self.discounts[n], 0) / total + self._gamma(context) * lower

    def log10_prob(self, word: str, context: Sequence[str] = ()) -> float:
        """log10 p(word | context); only the last order-1 context words are used."""
        word = self._word(word)
        if word == BOS:
            return BOS_LOG10
        return _log10(self._prob(word, self._context(context)))

    def sentence_log10(self, words: Sequence[str]) -> float:
        """log10 probability of ``<s> words </s>``."""
        return _sentence_log10(self.log10_prob, words, self.order)

    def perplexity(self, sentences: Iterable[Sequence[str]]) -> float:
        """10 ** (-total log10 / tokens), tokens counting each sentence's words and ``</s>``."""
        return _perplexity(self.sentence_log10, sentences)

    # ------------------------------------------------------------------ ARPA output

    def _arpa_entries(self, n: int) -> Iterator[tuple[tuple[str, ...], float, float | None]]:
        """(n-gram, log10 p, log10 bow or None) for every n-gram listed at order n."""
        grams = [(w,) for w in sorted(self.vocab)] if n == 1 else sorted(self.adjusted[n])
        contexts = self._totals[n + 1] if n < self.order else {}
        for gram in grams:
            if gram == (BOS,):
                logp = BOS_LOG10
            else:
                logp = _log10(self._prob(gram[-1], gram[:-1]))
            bow = _log10(self._gamma(gram)) if gram in contexts else None
            yield gram, logp, bow

    def write_arpa(self, path: str | os.PathLike) -> Path:
        """Write the model as an ARPA file, atomically (temp file beside it, then rename)."""
        path = Path(path)
        counts = [len(self.vocab)] + [len(self.adjusted[n]) for n in range(2, self.order + 1)]
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "w", encoding="utf-8") as out:
                out.write("\n\\data\\\n")
                for n, count in enumerate(counts, start=1):
                    out.write(f"ngram {n}={count}\n")
                for n in range(1, self.order + 1):
                    out.write(f"\n\\{n}-grams:\n")
                    for gram, logp, bow in self._arpa_entries(n):
                        line = f"{logp:.8f}\t{' '.join(gram)}"
                        out.write(line if bow is None else f"{line}\t{bow:.8f}")
                        out.write("\n")
                out.write("\n\\end\\\n")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path


# ---------------------------------------------------------------------- shared scoring


def _sentence_log10(log10_prob, words: Sequence[str], order: int) -> float:
    """Sum of log10 p over ``words </s>``, each given the (at most order-1) words before it."""
    if isinstance(words, str):
        raise ConfigError("a sentence to score must be a sequence of words, not a string")
    padded = [BOS, *words, EOS]
    return sum(
        log10_prob(padded[i], padded[max(0, i - order + 1) : i]) for i in range(1, len(padded))
    )


def _perplexity(sentence_log10, sentences: Iterable[Sequence[str]]) -> float:
    total, tokens = 0.0, 0
    for words in sentences:
        words = list(words) if not isinstance(words, str) else words
        total += sentence_log10(words)
        tokens += len(words) + 1
    if tokens == 0:
        raise ConfigError("perplexity needs at least one sentence")
    return 10.0 ** (-total / tokens)


# ---------------------------------------------------------------------- ARPA reading


def _text_lines(path: Path | str) -> Iterator[str]:
    """Stripped lines of a text file; a missing or binary file becomes one ConfigError."""
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                yield line.strip()
    except OSError as exc:
        raise ConfigError(f"cannot read ARPA file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text ARPA file (binary LM files are not read)") from None


class ArpaModel:
    """A backoff n-gram model read from an ARPA file, scored the standard way.

    p(w | h) is the listed probability of ``h w`` if there is one, else bow(h) * p(w | h'),
    bow being 1 (log 0) for a context that is not listed or has no weight. An unknown word
    is scored as ``<unk>``; in a file without ``<unk>`` its log probability is -inf.
    """

    def __init__(
        self,
        order: int,
        log10_probs: dict[tuple[str, ...], float],
        log10_bows: dict[tuple[str, ...], float],
    ):
        self.order = order
        self.log10_probs = log10_probs
        self.log10_bows = log10_bows
        self.vocab = frozenset(g[0] for g in log10_probs if len(g) == 1)

    @classmethod
    def read(cls, path: str | os.PathLike) -> ArpaModel:
        """Parse ``path``; a malformed file raises ConfigError naming the file and line."""
        path = Path(path)
        declared: dict[int, int] = {}
        probs: dict[tuple[str, ...], float] = {}
        bows: dict[tuple[str, ...], float] = {}
        seen: Counter[int] = Counter()
        section = None  # None before \data\, 0 inside it, n inside \n-grams:
        ended = False

        def fail(lineno: int, reason: str):
            raise ConfigError(f"{path}: line {lineno}: {reason}")

        for lineno, line in enumerate(_text_lines(path), start=1):
            if not line or ended:
                continue
            if line == "\\data\\":
                section = 0
            elif line == "\\end\\":
                ended = True
            elif line.startswith("\\") and line.endswith("-grams:"):
                try:
                    section = int(line[1 : -len("-grams:")])
                except ValueError:
                    fail(lineno, f"bad section header {line!r}")
                if section not in declared:
                    fail(lineno, f"section {line!r} is not declared in \\data\\")
            elif section is None:
                continue  # text before \data\ is allowed (comments)
            elif section == 0:
                key, _, value = line.partition("=")
                parts = key.split()
                if len(parts) != 2 or parts[0] != "ngram":
                    fail(lineno, f"expected 'ngram N=count', got {line!r}")
                try:
                    declared[int(parts[1])] = int(value)
                except ValueError:
                    fail(lineno, f"expected 'ngram N=count', got {line!r}")
            else:
                fields = line.split()
                if len(fields) not in (section + 1, section + 2):
                    fail(lineno, f"expected a {section}-gram entry, got {line!r}")
                gram = tuple(fields[1 : section + 1])
                try:
                    probs[gram] = float(fields[0])
                    if len(fields) == section + 2:
                        bows[gram] = float(fields[-1])
                except ValueError:
                    fail(lineno, f"bad number in {line!r}")
                seen[section] += 1
        if not ended or not declared:
            raise ConfigError(f"{path}: not a complete ARPA file (needs \\data\\ ... \\end\\)")
        for n, count in declared.items():
            if seen[n] != count:
                raise ConfigError(
                    f"{path}: \\data\\ declares {count} {n}-grams but the file lists {seen[n]}"
                )
        return cls(max(declared), probs, bows)

    def log10_prob(self, word: str, context: Sequence[str] = ()) -> float:
        """log10 p(word | context) by backoff; only the last order-1 context words are used."""
        known = self.vocab

        def mapped(w: str) -> str:
            return w if w in known else UNK

        word = mapped(word)
        history = tuple(mapped(w) for w in context)[-(self.order - 1) :] if self.order > 1 else ()
        total = 0.0
        while True:
            logp = self.log10_probs.get((*history, word))
            if logp is not None:
                return total + logp
            if not history:
                return float("-inf")  # only reachable for a file without <unk>
            total += self.log10_bows.get(history, 0.0)
            history = history[1:]

    def sentence_log10(self, words: Sequence[str]) -> float:
        """log10 probability of ``<s> words </s>``."""
        return _sentence_log10(self.log10_prob, words, self.order)

    def perplexity(self, sentences: Iterable[Sequence[str]]) -> float:
        """Same definition as :meth:`NGramModel.perplexity`."""
        return _perplexity(self.sentence_log10, sentences)


def arpa_unigrams(path: str | os.PathLike) -> list[str]:
    """The words of an ARPA file's 1-gram section, without ``<s>``, ``</s>`` and ``<unk>``.

    Reads only up to the end of that section, so it is cheap on large files; the decoder
    uses it to tell pyctcdecode which words the LM knows.
    """
    words: list[str] = []
    inside = False
    for line in _text_lines(path):
        if line == "\\1-grams:":
            inside = True
        elif inside and line.startswith("\\"):
            break  # the next section
        elif inside and line:
            fields = line.split()
            if len(fields) >= 2 and fields[1] not in (BOS, EOS, UNK):
                words.append(fields[1])
    if not inside:
        raise ConfigError(f"{path}: no \\1-grams: section, not an ARPA file")
    return words
