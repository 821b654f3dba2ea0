"""ASR text utilities: normaliser, character tokenizer and CTC decoders."""

import itertools
import json
import math

import numpy as np
import pytest
import torch

from speechssl.downstream.text import (
    BLANK,
    UNK,
    CharTokenizer,
    SymbolTokenizer,
    TextNormalizer,
    ctc_beam_decode,
    ctc_beam_search,
    ctc_greedy_decode,
)
from speechssl.errors import ConfigError, SpeechSSLError

# ----------------------------------------------------------------------------- normaliser


def test_normalizer_defaults():
    norm = TextNormalizer()
    assert norm("  Hello,   World!  ") == "hello world"
    assert norm("Été à Paris.") == "été à paris"  # accents kept
    assert norm("L'heure, c’est «là»") == "l'heure c'est là"  # apostrophes inside words kept
    assert norm("'quoted' rock-'n'-roll") == "quoted rock n roll"  # not inside a word
    assert norm("hello,world") == "hello world"  # punctuation separates words
    assert norm("¿Qué? ¡Sí!") == "qué sí"
    assert norm("") == ""


def test_normalizer_nfc():
    decomposed = "e\u0301te\u0301"  # e + combining acute, twice
    assert len(decomposed) == 5
    out = TextNormalizer()(decomposed)
    assert out == "\u00e9t\u00e9" and len(out) == 3


def test_normalizer_options():
    assert TextNormalizer(lowercase=False)("Hello, World") == "Hello World"
    assert TextNormalizer(remove_punctuation=False)("Hi,  there!") == "hi, there!"
    assert TextNormalizer(keep_apostrophe=False)("l'heure") == "l heure"


# ----------------------------------------------------------------------------- tokenizer


def test_tokenizer_vocab_and_round_trip():
    tok = CharTokenizer.from_texts(["ba c", "ab"])
    assert tok.vocab == [BLANK, UNK, " ", "a", "b", "c"]
    assert len(tok) == 6
    assert (tok.blank_id, tok.unk_id, tok.space_id) == (0, 1, 2)
    assert tok.encode("cab a") == [5, 3, 4, 2, 3]
    assert tok.decode(tok.encode("cab a")) == "cab a"
    assert tok.decode([0, 5, 0, 3]) == "ca"  # blanks skipped
    # Deterministic: order of the training texts does not matter.
    assert CharTokenizer.from_texts(["ab", "ba c"]) == tok


def test_tokenizer_unknown_and_space():
    tok = CharTokenizer.from_texts(["abc"])  # no space in training, still in the vocabulary
    assert tok.encode("a é") == [3, 2, tok.unk_id]
    assert tok.decode(tok.encode("a é")) == "a <unk>"
    with pytest.raises(ValueError, match="outside"):
        tok.decode([99])


def test_tokenizer_save_load():
    tok = CharTokenizer.from_texts(["l'heure été", "x"])
    data = json.loads(json.dumps(tok.to_dict()))
    assert CharTokenizer.from_dict(data) == tok
    with pytest.raises(SpeechSSLError):
        CharTokenizer.from_dict({"type": "bpe"})
    with pytest.raises(SpeechSSLError):
        CharTokenizer.from_dict({"type": "char", "vocab": ["a", "b"]})
    with pytest.raises(SpeechSSLError, match="empty"):
        CharTokenizer.from_texts(["", " "])


def test_tokenizer_vocabulary_checks():
    with pytest.raises(SpeechSSLError, match="must start with"):
        CharTokenizer([BLANK, " ", UNK, "a"])
    with pytest.raises(SpeechSSLError, match="single characters"):
        CharTokenizer([BLANK, UNK, " ", "ab"])
    with pytest.raises(SpeechSSLError, match="duplicate"):
        CharTokenizer([BLANK, UNK, " ", "a", "a"])


# ----------------------------------------------------------------------------- symbol tokenizer


def test_symbol_tokenizer_vocab_and_round_trip():
    phones = [["tʃ", "a", "t"], ["a", "ŋ"]]
    tok = SymbolTokenizer.from_sequences(phones)
    assert tok.vocab == [BLANK, UNK, "a", "t", "tʃ", "ŋ"]  # sorted; no space forced in
    assert len(tok) == 6
    assert (tok.blank_id, tok.unk_id) == (0, 1)
    assert tok.encode(["tʃ", "a", "t"]) == [4, 2, 3]  # "tʃ" is one symbol, not "t" + "ʃ"
    assert tok.decode(tok.encode(["tʃ", "a", "t"])) == ["tʃ", "a", "t"]
    assert tok.decode([0, 4, 0, 0, 2]) == ["tʃ", "a"]  # blanks skipped, no CTC collapsing
    assert tok.decode([2, 2]) == ["a", "a"]
    assert tok.decode([]) == []
    assert SymbolTokenizer.from_sequences(reversed(phones)) == tok  # order of the data does not matter
    assert repr(tok) == "SymbolTokenizer(6 symbols)"


def test_symbol_tokenizer_characters_and_tags():
    target = list("to ") + ["<place>", " "] + list("paris") + [" ", "</place>"]
    tok = SymbolTokenizer.from_sequences([target, list("hi")])
    assert tok.vocab[:3] == [BLANK, UNK, " "]
    assert "<place>" in tok.vocab and "</place>" in tok.vocab
    assert tok.decode(tok.encode(target)) == target
    # Unseen symbols (a new tag, a new character) become <unk>, which decodes literally.
    assert tok.encode(["<city>", "é", "h"]) == [tok.unk_id, tok.unk_id, tok.vocab.index("h")]
    assert tok.decode(tok.encode(["<city>"])) == [UNK]
    with pytest.raises(ValueError, match="outside"):
        tok.decode([len(tok)])


def test_symbol_tokenizer_save_load():
    tok = SymbolTokenizer.from_sequences([["<NOUN>", " ", "é"], ["ʁ"]])
    data = json.loads(json.dumps(tok.to_dict()))
    assert data["type"] == "symbols"
    assert SymbolTokenizer.from_dict(data) == tok
    # A character tokenizer is a different kind of saved tokenizer, even with equal entries.
    chars = CharTokenizer.from_texts(["ab"])
    same_entries = SymbolTokenizer(chars.vocab)
    assert same_entries != chars and chars != same_entries
    with pytest.raises(SpeechSSLError, match="symbols"):
        SymbolTokenizer.from_dict(chars.to_dict())
    with pytest.raises(SpeechSSLError):
        CharTokenizer.from_dict(data)


def test_symbol_tokenizer_bad_inputs():
    with pytest.raises(SpeechSSLError, match="empty"):
        SymbolTokenizer.from_sequences([[], []])
    with pytest.raises(SpeechSSLError, match="reserved"):
        SymbolTokenizer.from_sequences([["a", UNK]])
    with pytest.raises(SpeechSSLError, match="reserved"):
        SymbolTokenizer.from_sequences([[BLANK]])
    with pytest.raises(SpeechSSLError, match="non-empty"):
        SymbolTokenizer.from_sequences([["a", ""]])
    with pytest.raises(SpeechSSLError, match="must start with"):
        SymbolTokenizer(["a", "b"])
    with pytest.raises(SpeechSSLError, match="duplicate"):
        SymbolTokenizer([BLANK, UNK, "a", "a"])
    with pytest.raises(SpeechSSLError, match="non-empty strings"):
        SymbolTokenizer([BLANK, UNK, 3])


# ----------------------------------------------------------------------------- CTC


def _log(p):
    return np.log(np.asarray(p, dtype=np.float64))


def test_greedy_decode_collapses_repeats_and_blanks():
    # Frame argmax: a a _ a b b _ _ b  (blank=0, a=1, b=2) -> a a b b
    path = [1, 1, 0, 1, 2, 2, 0, 0, 2]
    post = np.full((len(path), 3), 0.1)
    post[np.arange(len(path)), path] = 0.8
    lp = _log(post)
    assert ctc_greedy_decode(lp) == [[1, 1, 2, 2]]
    # Batched torch input with lengths: the second item stops after 4 frames.
    batch = torch.tensor(np.stack([lp, lp]))
    assert ctc_greedy_decode(batch, torch.tensor([9, 4])) == [[1, 1, 2, 2], [1, 1]]
    assert ctc_greedy_decode(batch, [0, 9]) == [[], [1, 1, 2, 2]]


def test_beam_equals_greedy_on_peaked_posteriors():
    rng = np.random.default_rng(0)
    for _ in range(5):
        path = rng.integers(0, 6, 40)
        post = np.full((40, 6), 0.004)
        post[np.arange(40), path] = 0.98
        lp = _log(post)
        assert ctc_beam_search(lp, beam_size=4) == ctc_greedy_decode(lp)[0]


def test_beam_finds_the_most_probable_labelling_where_greedy_does_not():
    # T = 2, V = {blank, a}, p(blank) = .6, p(a) = .4 in both frames.
    # Best path "_ _" -> "" with .36, but "a" collects "a a", "a _", "_ a": .16 + .24 + .24 = .64.
    lp = _log([[0.6, 0.4], [0.6, 0.4]])
    assert ctc_greedy_decode(lp) == [[]]
    assert ctc_beam_search(lp, beam_size=2) == [1]
    nbest = ctc_beam_search(lp, beam_size=4, return_nbest=True)
    assert [ids for ids, _ in nbest] == [[1], []]  # "aa" is impossible in 2 frames: not listed
    assert math.exp(nbest[0][1]) == pytest.approx(0.64)
    assert math.exp(nbest[1][1]) == pytest.approx(0.36)
    assert ctc_beam_search(torch.tensor(lp), beam_size=2) == [1]  # torch input too


def _brute_force_labelling_probs(post: np.ndarray, blank: int = 0) -> dict[tuple, float]:
    """Sum of alignment probabilities per labelling, over all V**T alignments."""
    frames, vocab = post.shape
    probs: dict[tuple, float] = {}
    for path in itertools.product(range(vocab), repeat=frames):
        merged = [c for i, c in enumerate(path) if i == 0 or c != path[i - 1]]
        label = tuple(c for c in merged if c != blank)
        probs[label] = probs.get(label, 0.0) + math.prod(post[t, c] for t, c in enumerate(path))
    return probs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_scores_are_exact_labelling_probabilities(seed):
    rng = np.random.default_rng(seed)
    post = rng.dirichlet(np.ones(3), size=4)  # T = 4, V = 3
    exact = _brute_force_labelling_probs(post)
    # At most 1 + 2 + 4 + 8 + 16 = 31 labellings: a beam of 64 keeps them all.
    nbest = ctc_beam_search(np.log(post), beam_size=64, return_nbest=True)
    got = {tuple(ids): math.exp(score) for ids, score in nbest}
    assert got.keys() == {k for k, v in exact.items() if v > 0}
    for label, p in exact.items():
        assert got[label] == pytest.approx(p, rel=1e-9, abs=1e-15)
    assert sum(got.values()) == pytest.approx(1.0)
    best = max(exact, key=exact.get)
    assert tuple(ctc_beam_search(np.log(post), beam_size=8)) == best


def test_beam_pruning_and_batch():
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(3, 30, 10)) * 3
    lp = torch.log_softmax(torch.tensor(logits), dim=-1)
    lengths = [30, 12, 0]
    out = ctc_beam_decode(lp, lengths, beam_size=8)
    assert out[2] == []
    for b, n in enumerate(lengths):
        assert out[b] == ctc_beam_search(lp[b, :n], beam_size=8)
    # A threshold that prunes everything but the frame's best symbol is greedy decoding.
    assert ctc_beam_search(lp[0], beam_size=8, prune_logprob=0.0) == ctc_greedy_decode(lp[0])[0]
    # Beam of 1 with one candidate per frame is greedy too.
    assert ctc_beam_search(lp[1, :12], beam_size=1) == ctc_greedy_decode(lp[1, :12])[0]


def test_decoder_bad_inputs():
    lp = _log([[0.5, 0.5]])
    with pytest.raises(ConfigError, match="beam_size"):
        ctc_beam_search(lp, beam_size=0)
    with pytest.raises(ValueError, match=r"\[T, V\]"):
        ctc_beam_search(lp[None])
    with pytest.raises(ValueError, match="lengths"):
        ctc_greedy_decode(lp[None], [5])
    with pytest.raises(ValueError, match="batch"):
        ctc_beam_decode(lp[None], [1, 1])
