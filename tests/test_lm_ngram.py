"""Word n-gram LM: interpolated Kneser-Ney checked by hand, normalisation, ARPA round trip."""

import math
from fractions import Fraction

import pytest

from speechssl.errors import ConfigError
from speechssl.lm import ArpaModel, NGramModel, arpa_unigrams

# The hand corpus. With boundaries the sentences are
#   <s> a b </s>      <s> a c </s>      <s> b a </s>
HAND = [s.split() for s in ["a b", "a c", "b a"]]

# A larger corpus with repeated n-grams, so that Ney's discounts are estimated (not the
# fallback) at every order, and with words seen in several contexts.
CORPUS = [
    s.split()
    for s in [
        "the cat sat on the mat",
        "the dog sat on the log",
        "a cat sat on a mat",
        "the cat ate the fish",
        "a dog ate a bone",
        "the dog sat",
        "the cat sat",
        "on the mat the cat sat",
        "a fish",
        "the mat",
    ]
]


def p(model, word, *context):
    return 10 ** model.log10_prob(word, list(context))


# ----------------------------------------------------------------------------- by hand


def test_hand_counts_and_discounts():
    m = NGramModel.fit(HAND, order=3)
    # Trigrams (highest order: raw counts), each seen once:
    #   <s> a b, a b </s>, <s> a c, a c </s>, <s> b a, b a </s>
    assert m.adjusted[3] == {g: 1 for g in [
        ("<s>", "a", "b"), ("a", "b", "</s>"), ("<s>", "a", "c"),
        ("a", "c", "</s>"), ("<s>", "b", "a"), ("b", "a", "</s>"),
    ]}  # fmt: skip
    # n1 = 6, n2 = 0: Ney's D = 6/6 = 1 is degenerate -> fallback 0.5.
    assert m.discounts[3] == 0.5
    # Bigrams. Starting at <s>: raw counts, <s> a = 2 (sentences 1, 2), <s> b = 1.
    # Others: continuation counts = distinct left words in the trigrams:
    #   a b <- {<s>}, b </s> <- {a}, a c <- {<s>}, c </s> <- {a}, b a <- {<s>}, a </s> <- {b}
    assert m.adjusted[2] == {
        ("<s>", "a"): 2, ("<s>", "b"): 1, ("a", "b"): 1, ("b", "</s>"): 1,
        ("a", "c"): 1, ("c", "</s>"): 1, ("b", "a"): 1, ("a", "</s>"): 1,
    }  # fmt: skip
    # n1 = 7, n2 = 1: D2 = 7 / (7 + 2*1) = 7/9.
    assert m.discounts[2] == pytest.approx(7 / 9)
    # Unigrams: continuation counts = distinct left words in the bigrams:
    #   a <- {<s>, b} = 2, b <- {a, <s>} = 2, c <- {a} = 1, </s> <- {b, c, a} = 3
    assert m.adjusted[1] == {("a",): 2, ("b",): 2, ("c",): 1, ("</s>",): 3}
    # n1 = 1 (c), n2 = 2 (a, b): D1 = 1 / (1 + 2*2) = 1/5.
    assert m.discounts[1] == pytest.approx(0.2)


def test_hand_probabilities():
    m = NGramModel.fit(HAND, order=3)
    F = Fraction
    # Unigram level: A = 2+2+1+3 = 8, N1+(.) = 4 types, V = {a, b, c, </s>, <unk>} (|V| = 5).
    #   gamma() = D1 * 4 / 8 = 1/5 * 1/2 = 1/10; uniform floor = 1/10 * 1/5 = 1/50
    floor = F(1, 10) / 5
    p1 = {
        "a": (2 - F(1, 5)) / 8 + floor,  # 1.8/8 + 0.02 = 0.245
        "b": (2 - F(1, 5)) / 8 + floor,  # 0.245
        "c": (1 - F(1, 5)) / 8 + floor,  # 0.8/8 + 0.02 = 0.12
        "</s>": (3 - F(1, 5)) / 8 + floor,  # 2.8/8 + 0.02 = 0.37
        "<unk>": floor,  # never seen: only the floor, 0.02
    }
    assert sum(p1.values()) == 1
    for w, expected in p1.items():
        assert p(m, w) == pytest.approx(float(expected), abs=1e-12)
    assert p1["a"] == F(245, 1000)

    d2 = F(7, 9)
    # Bigram context "a": a b = 1, a c = 1, a </s> = 1 -> A = 3, N1+ = 3, gamma = 7/9 * 3/3.
    #   p(b | a) = (1 - 7/9)/3 + 7/9 * 0.245 = 2/27 + 0.190556 = 0.264630
    p2_b_a = (1 - d2) / 3 + d2 * p1["b"]
    p2_c_a = (1 - d2) / 3 + d2 * p1["c"]  # 2/27 + 7/9 * 0.12 = 0.167407
    p2_a_a = d2 * p1["a"]  # unseen: 7/9 * 0.245 = 0.190556
    assert p(m, "b", "a") == pytest.approx(float(p2_b_a), abs=1e-12)
    assert p(m, "a", "a") == pytest.approx(float(p2_a_a), abs=1e-12)
    # Bigram context "<s>": <s> a = 2, <s> b = 1 -> A = 3, N1+ = 2, gamma = 7/9 * 2/3 = 14/27.
    #   p(a | <s>) = (2 - 7/9)/3 + 14/27 * 0.245 = 11/27 + 0.127037 = 0.534444
    p2_a_bos = (2 - d2) / 3 + F(14, 27) * p1["a"]
    assert p(m, "a", "<s>") == pytest.approx(float(p2_a_bos), abs=1e-12)
    assert float(p2_a_bos) == pytest.approx(0.534444, abs=1e-6)

    # Trigram context "<s> a": <s> a b = 1, <s> a c = 1 -> A = 2, N1+ = 2, gamma = 0.5 * 2/2.
    #   p(b | <s> a) = (1 - 0.5)/2 + 0.5 * p(b | a) = 0.25 + 0.132315 = 0.382315
    #   p(a | <s> a) = 0.5 * p(a | a) = 0.095278            (unseen trigram)
    assert p(m, "b", "<s>", "a") == pytest.approx(float(F(1, 4) + p2_b_a / 2), abs=1e-12)
    assert p(m, "c", "<s>", "a") == pytest.approx(float(F(1, 4) + p2_c_a / 2), abs=1e-12)
    assert p(m, "a", "<s>", "a") == pytest.approx(float(p2_a_a / 2), abs=1e-12)
    assert p(m, "b", "<s>", "a") == pytest.approx(0.382315, abs=1e-6)

    # A whole sentence: "a b" = p(a | <s>) p(b | <s> a) p(</s> | a b), where
    #   p(</s> | b) = (1 - 7/9)/2 + 7/9 * 0.37 = 1/9 + 0.287778 = 0.398889   (A(b) = 2)
    #   p(</s> | a b) = (1 - 0.5)/1 + 0.5 * 0.398889 = 0.699444               (A(a b) = 1)
    p2_eos_b = (1 - d2) / 2 + d2 * p1["</s>"]
    p3_eos_ab = F(1, 2) + p2_eos_b / 2
    expected = math.log10(p2_a_bos) + math.log10(F(1, 4) + p2_b_a / 2) + math.log10(p3_eos_ab)
    assert m.sentence_log10(["a", "b"]) == pytest.approx(expected, abs=1e-12)


def test_unknown_word_is_unk():
    m = NGramModel.fit(HAND, order=3)
    assert m.log10_prob("zebra", ["a"]) == m.log10_prob("<unk>", ["a"])
    # An unknown context word is <unk>, an unseen context: backs off to the shorter one.
    assert m.log10_prob("b", ["zebra", "a"]) == m.log10_prob("b", ["a"])
    assert m.log10_prob("b", ["zebra"]) == m.log10_prob("b", [])
    assert m.sentence_log10(["zebra"]) == pytest.approx(
        m.log10_prob("<unk>", ["<s>"]) + m.log10_prob("</s>", ["<s>", "<unk>"])
    )


# ----------------------------------------------------------------------------- normalisation


CONTEXTS = [
    [], ["a"], ["the"], ["cat"], ["<s>"], ["zebra"],
    ["<s>", "the"], ["the", "cat"], ["cat", "sat"], ["sat", "on"], ["zebra", "the"],
    ["<s>", "the", "cat"], ["the", "cat", "sat"], ["on", "the", "mat"], ["x", "y", "z"],
]  # fmt: skip


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_distributions_sum_to_one(order, tmp_path):
    m = NGramModel.fit(CORPUS, order=order)
    arpa = ArpaModel.read(m.write_arpa(tmp_path / "lm.arpa"))
    outcomes = m.predictable  # every word, </s> and <unk>
    assert "<s>" not in outcomes and {"</s>", "<unk>"} <= set(outcomes)
    for context in CONTEXTS + [["a", "b"], ["<s>", "a"]]:
        for model in (m, arpa):
            total = sum(10 ** model.log10_prob(w, context) for w in outcomes)
            assert total == pytest.approx(1.0, abs=1e-6), (order, context)
    hand = NGramModel.fit(HAND, order=order)
    for context in [[], ["a"], ["<s>"], ["<s>", "a"], ["b", "a"], ["c"]]:
        assert sum(p(hand, w, *context) for w in hand.predictable) == pytest.approx(1.0)


def test_discounts_are_ney_estimates_on_a_real_corpus():
    m = NGramModel.fit(CORPUS, order=3)
    for n in (1, 2, 3):
        values = list(m.adjusted[n].values())
        n1, n2 = values.count(1), values.count(2)
        assert n1 > 0 and n2 > 0
        assert m.discounts[n] == pytest.approx(n1 / (n1 + 2 * n2))


# ----------------------------------------------------------------------------- ARPA


def test_arpa_header_and_sections(tmp_path):
    m = NGramModel.fit(HAND, order=3)
    path = m.write_arpa(tmp_path / "hand.arpa")
    text = path.read_text()
    # 1-grams: a, b, c + <s>, </s>, <unk>; 2-grams and 3-grams: the 8 and 6 counted above.
    assert "ngram 1=6\nngram 2=8\nngram 3=6\n" in text
    assert text.index("\\1-grams:") < text.index("\\2-grams:") < text.index("\\3-grams:")
    assert text.rstrip().endswith("\\end\\")
    entries = {f[1]: f[0] for f in (line.split("\t") for line in text.splitlines()) if len(f) > 1}
    assert float(entries["<s>"]) == -99  # never predicted, as in SRILM and KenLM
    assert float(entries["<unk>"]) == pytest.approx(math.log10(0.02))  # the uniform floor
    # No temp file left beside it.
    assert [f.name for f in tmp_path.iterdir()] == ["hand.arpa"]
    assert sorted(arpa_unigrams(path)) == ["a", "b", "c"]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_arpa_round_trip_scores(order, tmp_path):
    m = NGramModel.fit(CORPUS, order=order)
    arpa = ArpaModel.read(m.write_arpa(tmp_path / "lm.arpa"))
    assert arpa.order == order and arpa.vocab == m.vocab
    # Seen n-grams, unseen ones (backoff through one or more orders) and unknown words.
    for context in CONTEXTS:
        for word in m.predictable + ["zebra"]:
            assert arpa.log10_prob(word, context) == pytest.approx(
                m.log10_prob(word, context), abs=1e-6
            ), (word, context)
    for sentence in CORPUS + [["cat", "the", "sat", "zebra"], [], ["mat", "mat", "on"]]:
        assert arpa.sentence_log10(sentence) == pytest.approx(m.sentence_log10(sentence), abs=1e-6)
    assert arpa.perplexity(CORPUS) == pytest.approx(m.perplexity(CORPUS), rel=1e-6)


def test_backoff_weights_are_the_standard_conversion(tmp_path):
    """bow(h) = (1 - sum_seen p(w|h)) / (1 - sum_seen p_lower(w|h')) for every context."""
    m = NGramModel.fit(CORPUS, order=3)
    arpa = ArpaModel.read(m.write_arpa(tmp_path / "lm.arpa"))
    assert arpa.log10_bows
    for context, log_bow in arpa.log10_bows.items():
        seen = [g[-1] for g in arpa.log10_probs if len(g) == len(context) + 1 and g[:-1] == context]
        assert seen
        num = 1 - sum(p(m, w, *context) for w in seen)
        den = 1 - sum(p(m, w, *context[1:]) for w in seen)
        assert log_bow == pytest.approx(math.log10(num / den), abs=1e-6), context


def test_perplexity_definition():
    m = NGramModel.fit(HAND, order=2)
    total = sum(m.sentence_log10(s) for s in HAND)
    tokens = sum(len(s) + 1 for s in HAND)  # words + </s>
    assert m.perplexity(HAND) == pytest.approx(10 ** (-total / tokens))


def test_write_is_atomic_replace(tmp_path):
    path = tmp_path / "lm.arpa"
    path.write_text("old")
    NGramModel.fit(HAND, order=2).write_arpa(path)
    assert ArpaModel.read(path).order == 2


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("order", [0, -1, 2.0, True, "3"])
def test_bad_order(order):
    with pytest.raises(ConfigError, match="order"):
        NGramModel.fit(HAND, order=order)


@pytest.mark.parametrize(
    "sentences, match",
    [
        ([], "empty corpus"),
        (iter(()), "empty corpus"),
        (["a b"], "string"),
        ([["a", ""]], "non-empty"),
        ([["a b"]], "whitespace"),
        ([["a", "</s>"]], "boundaries"),
    ],
)
def test_bad_corpus(sentences, match):
    with pytest.raises(ConfigError, match=match):
        NGramModel.fit(sentences, order=2)


def test_bad_arpa_files(tmp_path):
    bad = tmp_path / "bad.arpa"
    bad.write_text("\\data\\\nngram 1=2\n\n\\1-grams:\n-1.0\t<s>\n\n\\end\\\n")
    with pytest.raises(ConfigError, match="declares 2 1-grams"):
        ArpaModel.read(bad)
    bad.write_text("\\data\\\nngram 1=1\n\n\\1-grams:\n-1.0\n")
    with pytest.raises(ConfigError, match="line 5"):
        ArpaModel.read(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        ArpaModel.read(tmp_path / "missing.arpa")
    bad.write_text("hello\n")
    with pytest.raises(ConfigError, match="1-grams"):
        arpa_unigrams(bad)
    bad.write_bytes(b"mmap lm \xff\xfe binary")  # a KenLM binary file is not ARPA text
    with pytest.raises(ConfigError, match="not a text ARPA"):
        ArpaModel.read(bad)
    with pytest.raises(ConfigError, match="not a text ARPA"):
        arpa_unigrams(bad)


# ----------------------------------------------------------------------------- KenLM


@pytest.mark.parametrize("order", [2, 3])
def test_kenlm_reads_our_arpa(order, tmp_path):
    kenlm = pytest.importorskip("kenlm")
    m = NGramModel.fit(CORPUS, order=order)
    path = m.write_arpa(tmp_path / "lm.arpa")
    config = kenlm.Config()
    config.show_progress = False
    config.arpa_complain = kenlm.ARPALoadComplain.NONE
    ken = kenlm.Model(str(path), config)
    assert ken.order == order
    for sentence in CORPUS + [["cat", "the", "sat", "zebra"], [], ["mat", "mat", "on", "a"]]:
        ours = m.sentence_log10(sentence)
        assert ken.score(" ".join(sentence), bos=True, eos=True) == pytest.approx(ours, abs=1e-4)
