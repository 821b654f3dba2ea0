"""Downstream metrics against hand-computed cases and against scikit-learn and sacrebleu."""

import math
import random

import numpy as np
import pytest
import sacrebleu
from sklearn.metrics import balanced_accuracy_score, roc_curve

from speechssl.downstream.metrics import (
    accuracy,
    eer,
    eer_threshold,
    error_rates,
    macro_f1,
    min_dcf,
    pos_scores,
    slot_filling_scores,
    token_error_rate,
    translation_scores,
    unweighted_average_recall,
)
from speechssl.downstream.tagging import parse_slots, parse_tagged_words, pos_symbols, slot_symbols

# ----------------------------------------------------------------------------- EER


def _trials(order: str):
    """Scores from a string of T (target) / N (non-target), highest score first."""
    scores = np.arange(len(order), 0, -1, dtype=float)
    labels = [1 if c == "T" else 0 for c in order]
    return scores, labels


def test_eer_hand_case_on_an_operating_point():
    # Order T T N T | N T N N (4 targets, 4 non-targets). Accepting the top k trials:
    #   k:   0    1    2    3    4    5    6    7    8
    #   FAR: 0    0    0   .25  .25  .5   .5   .75  1
    #   FRR: 1   .75  .5   .5   .25  .25  0    0    0
    # FAR = FRR = .25 at k = 4.
    scores, labels = _trials("TTNTNTNN")
    assert eer(scores, labels) == pytest.approx(0.25, abs=1e-12)
    # Threshold: accepting score >= 5 (the 4th highest of 8..1) is that point.
    assert eer_threshold(scores, labels) == pytest.approx(5.0)


def test_eer_perfect_and_inverted():
    scores, labels = _trials("TTTNNN")
    assert eer(scores, labels) == 0.0  # (FAR, FRR) = (0, 0) after the 3 targets
    scores, labels = _trials("NNNTTT")
    assert eer(scores, labels) == 1.0  # (1, 1) after the 3 non-targets


def test_eer_ties_interpolate_along_the_diagonal_segment():
    # One target tied with one non-target: the only points are (0, 1) and (1, 0), the
    # segment between them crosses FAR = FRR at 0.5.
    assert eer([0.3, 0.3], [1, 0]) == pytest.approx(0.5)
    # Scores T=.9, {T, N}=.5 tied, N=.1 (2 targets, 2 non-targets). Points:
    #   (0, 1) -> (0, .5) -> (.5, 0) -> (1, 0)
    # d = FRR - FAR = .5 then -.5 on the middle segment: alpha = .5, EER = 0 + .5 * .5 = .25.
    assert eer([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx(0.25)
    assert eer_threshold([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx(0.7)  # .9 + .5 * (.5 - .9)
    # Input order does not matter, only scores.
    assert eer([0.5, 0.1, 0.9, 0.5], [0, 0, 1, 1]) == pytest.approx(0.25)


def test_eer_uneven_classes_vertical_segment():
    # T N T T N (3 targets, 2 non): (0,1) (0,2/3) (.5,2/3) (.5,1/3) (.5,0) (1,0).
    # d: 1, 2/3, 1/6, -1/6 -> crossing on the vertical segment at FAR = .5, FRR = .5.
    scores, labels = _trials("TNTTN")
    assert eer(scores, labels) == pytest.approx(0.5)


def _sklearn_eer(scores, labels) -> float:
    """Same convention computed from sklearn's ROC (one point per distinct score)."""
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    fnr = 1.0 - tpr
    d = fnr - fpr
    k = int(np.argmax(d <= 0))
    alpha = d[k - 1] / (d[k - 1] - d[k])
    return fpr[k - 1] + alpha * (fpr[k] - fpr[k - 1])


def _brute_force_min_dcf(scores, labels, p_target, c_miss=1.0, c_fa=1.0) -> float:
    scores, labels = np.asarray(scores), np.asarray(labels)
    tar, non = scores[labels == 1], scores[labels == 0]
    _, _, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    best = math.inf
    for thr in thresholds:  # includes +inf (accept nothing) and the lowest score (accept all)
        p_miss = np.mean(tar < thr)
        p_fa = np.mean(non >= thr)
        best = min(best, c_miss * p_miss * p_target + c_fa * p_fa * (1 - p_target))
    return best / min(c_miss * p_target, c_fa * (1 - p_target))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rounded", [False, True])
def test_eer_and_min_dcf_match_sklearn_roc(seed, rounded):
    rng = np.random.default_rng(seed)
    labels = (rng.random(400) < 0.3).astype(int)
    scores = rng.normal(size=400) + 1.2 * labels
    if rounded:  # many ties between targets and non-targets
        scores = np.round(scores, 1)
    assert eer(scores, labels) == pytest.approx(_sklearn_eer(scores, labels), abs=1e-9)
    for p in (0.01, 0.05, 0.5):
        assert min_dcf(scores, labels, p_target=p) == pytest.approx(
            _brute_force_min_dcf(scores, labels, p), abs=1e-9
        )
    assert min_dcf(scores, labels, 0.05, c_miss=10, c_fa=1) == pytest.approx(
        _brute_force_min_dcf(scores, labels, 0.05, 10, 1), abs=1e-9
    )


def test_invariant_to_monotone_transforms():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 300)
    scores = rng.normal(size=300) + labels
    for transformed in (3 * scores - 7, np.exp(scores / 2)):
        assert eer(transformed, labels) == pytest.approx(eer(scores, labels), abs=1e-12)
        assert min_dcf(transformed, labels) == pytest.approx(min_dcf(scores, labels), abs=1e-12)


def test_eer_threshold_reproduces_the_operating_point():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 1000)
    scores = rng.normal(size=1000) + 2 * labels
    thr = eer_threshold(scores, labels)
    far = np.mean(scores[labels == 0] >= thr)
    frr = np.mean(scores[labels == 1] < thr)
    assert abs(far - eer(scores, labels)) < 0.01 and abs(frr - eer(scores, labels)) < 0.01


# ----------------------------------------------------------------------------- minDCF


def test_min_dcf_hand_cases():
    # T T N T N T N N, points (FAR, FRR) as in the EER test. With p_target = .5 and unit
    # costs the normalised DCF is FRR + FAR: 1, .75, .5, .75, .5, .75, .5, .75, 1 -> .5.
    scores, labels = _trials("TTNTNTNN")
    assert min_dcf(scores, labels, p_target=0.5) == pytest.approx(0.5)
    # With p_target = .01 it is FRR + 99 FAR: only FAR = 0 points are competitive -> .5.
    assert min_dcf(scores, labels, p_target=0.01) == pytest.approx(0.5)
    assert min_dcf(*_trials("TTTNNN")) == 0.0
    assert min_dcf(*_trials("NNNTTT")) == pytest.approx(1.0)  # no better than "reject all"


def test_min_dcf_p_target_effect():
    # N T T T T N N N: one non-target above all targets. p_target = .5: FRR + FAR is .25
    # after the 4 targets (FAR .25, FRR 0). p_target = .01: FRR + 99 FAR, the same point
    # costs 24.75 and the best is "reject all" = 1. Rare targets make false alarms costly.
    scores, labels = _trials("NTTTTNNN")
    assert min_dcf(scores, labels, p_target=0.5) == pytest.approx(0.25)
    assert min_dcf(scores, labels, p_target=0.01) == pytest.approx(1.0)
    # Costs: c_miss = 2, c_fa = 1, p = .5 -> DCF = FRR + .5 FAR, normaliser .5 -> 2 FRR + FAR.
    # After the 4 targets: 0 + .25 = .25 (vs 2 for "reject all").
    assert min_dcf(scores, labels, p_target=0.5, c_miss=2.0) == pytest.approx(0.25)


def test_min_dcf_never_above_one():
    rng = np.random.default_rng(5)
    for _ in range(20):
        labels = rng.integers(0, 2, 50)
        labels[:2] = [0, 1]
        scores = rng.normal(size=50) - labels  # anti-correlated on purpose
        for p in (0.001, 0.01, 0.5, 0.9):
            assert 0.0 <= min_dcf(scores, labels, p_target=p) <= 1.0 + 1e-12


@pytest.mark.parametrize(
    "scores, labels, match",
    [
        ([], [], "empty"),
        ([0.1, float("nan")], [1, 0], "NaN"),
        ([0.1, 0.2], [1, 1], "only target"),
        ([0.1, 0.2], [0, 0], "only non-target"),
        ([0.1, 0.2, 0.3], [1, 0], "differ in length"),
        ([0.1, 0.2], [1, 2], "0 .non-target. or 1"),
        ([[0.1, 0.2]], [[1, 0]], "1-D"),
    ],
)
def test_verification_bad_inputs(scores, labels, match):
    for fn in (eer, eer_threshold, min_dcf):
        with pytest.raises(ValueError, match=match):
            fn(scores, labels)


def test_min_dcf_bad_parameters():
    with pytest.raises(ValueError, match="p_target"):
        min_dcf([0.1, 0.2], [0, 1], p_target=1.0)
    with pytest.raises(ValueError, match="positive"):
        min_dcf([0.1, 0.2], [0, 1], c_fa=0)


def test_boolean_labels_accepted():
    assert eer([0.9, 0.1], [True, False]) == 0.0


# ----------------------------------------------------------------------------- classification


def test_accuracy_and_macro_f1_by_hand():
    true = ["a", "a", "b", "b", "c"]
    pred = ["a", "b", "b", "b", "a"]
    assert accuracy(pred, true) == pytest.approx(3 / 5)
    # Per class F1 = 2TP / (2TP + FP + FN):
    #   a: TP 1, FP 1 (pred a, true c), FN 1 (true a, pred b) -> 2/4 = .5
    #   b: TP 2, FP 1, FN 0 -> 4/5 = .8
    #   c: TP 0, FP 0, FN 1 -> 0
    assert macro_f1(pred, true) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert macro_f1(pred, true, labels=["a", "b"]) == pytest.approx(0.65)
    # A class in neither list counts as F1 0 when asked for explicitly.
    assert macro_f1(pred, true, labels=["a", "b", "c", "d"]) == pytest.approx(1.3 / 4)
    assert macro_f1([0, 1, 2], [0, 1, 2]) == 1.0


def test_classification_bad_inputs():
    with pytest.raises(ValueError, match="empty"):
        accuracy([], [])
    with pytest.raises(ValueError, match="length"):
        macro_f1([1, 2], [1])


# ----------------------------------------------------------------------------- ASR


def test_error_rates_by_hand():
    # "the cat sat" vs "the cat sit": 1 substituted word of 3; 1 substituted char ('a'->'i')
    # of 11 characters (spaces count).
    r = error_rates(["the cat sat"], ["the cat sit"])
    assert r["wer"] == pytest.approx(1 / 3)
    assert r["cer"] == pytest.approx(1 / 11)
    # Corpus level: errors summed over utterances, divided by total reference length.
    # Utt 2 "a b" vs "a c d": 1 sub + 1 ins over 2 words; chars "a b" vs "a c d": 1 sub
    # + 2 ins over 3 chars. WER = (1 + 2) / (3 + 2); CER = (1 + 3) / (11 + 3).
    r = error_rates(["the cat sat", "a b"], ["the cat sit", "a c d"])
    assert r["wer"] == pytest.approx(3 / 5)
    assert r["cer"] == pytest.approx(4 / 14)


def test_error_rates_whitespace_and_normalize():
    # Doubled/leading spaces in the hypothesis are not errors.
    assert error_rates(["the cat"], ["  the   cat "]) == {"wer": 0.0, "cer": 0.0}
    r = error_rates(["The Cat"], ["the cat"], normalize=str.lower)
    assert r == {"wer": 0.0, "cer": 0.0}


def test_empty_hypothesis_counts_as_deletions():
    # Utt 1 all deleted (3 words, 11 chars), utt 2 correct (2 words, 3 chars).
    r = error_rates(["the cat sat", "a b"], ["", "a b"])
    assert r["wer"] == pytest.approx(3 / 5)
    assert r["cer"] == pytest.approx(11 / 14)
    assert error_rates(["x"], [""]) == {"wer": 1.0, "cer": 1.0}


def test_error_rates_bad_inputs():
    with pytest.raises(ValueError, match="index 1"):
        error_rates(["a", "  ", "b"], ["a", "b", "c"])
    with pytest.raises(ValueError, match="index 0"):
        error_rates(["!"], ["a"], normalize=lambda s: s.replace("!", ""))
    with pytest.raises(ValueError, match="length"):
        error_rates(["a"], [])
    with pytest.raises(ValueError, match="empty"):
        error_rates([], [])
    with pytest.raises(ValueError, match="hyps\\[0\\]"):
        error_rates(["a"], [None])


# ----------------------------------------------------------------------------- symbol error rate


def test_token_error_rate_by_hand():
    # "tʃ" -> "t" is one substitution (symbols are compared whole), then one inserted "a":
    # 2 edits over 3 + 2 reference phones.
    refs = [["tʃ", "a", "t"], ["a", "ŋ"]]
    assert token_error_rate(refs, [["t", "a", "t"], ["a", "ŋ", "a"]]) == pytest.approx(2 / 5)
    assert token_error_rate(refs, refs) == 0.0
    assert token_error_rate(refs, [[], ["a", "ŋ"]]) == pytest.approx(3 / 5)  # empty hypothesis: deletions
    assert token_error_rate([["a"]], [["b", "c", "d"]]) == 3.0  # insertions can push it above 1
    assert token_error_rate((("a", "b"),), (("b", "a"),)) == 1.0  # any sequences, not only lists


def test_token_error_rate_matches_jiwer_wer():
    rng = random.Random(1)
    phones = ["a", "b", "tʃ", "ŋ", "ɛ"]
    refs = [[rng.choice(phones) for _ in range(rng.randint(1, 12))] for _ in range(40)]
    hyps = [[rng.choice(phones) for _ in range(rng.randint(0, 12))] for _ in range(40)]
    expected = error_rates([" ".join(r) for r in refs], [" ".join(h) for h in hyps])["wer"]
    assert token_error_rate(refs, hyps) == pytest.approx(expected)


def test_token_error_rate_bad_inputs():
    with pytest.raises(ValueError, match="index 1"):
        token_error_rate([["a"], []], [["a"], ["b"]])
    with pytest.raises(ValueError, match="list of symbols"):
        token_error_rate(["a b"], [["a"]])
    with pytest.raises(ValueError, match="length"):
        token_error_rate([["a"]], [])
    with pytest.raises(ValueError, match="empty"):
        token_error_rate([], [])


# ----------------------------------------------------------------------------- UAR


def test_uar_by_hand_and_against_sklearn():
    true = ["a", "a", "a", "a", "b", "b", "c"]
    pred = ["a", "a", "a", "b", "b", "a", "a"]
    # Recalls: a 3/4, b 1/2, c 0/1; the mean gives every class the same weight.
    assert unweighted_average_recall(pred, true) == pytest.approx((3 / 4 + 1 / 2 + 0) / 3)
    assert unweighted_average_recall(pred, true) == pytest.approx(balanced_accuracy_score(true, pred))
    # Always predicting the majority class: 1 / number of classes, whatever the priors.
    assert unweighted_average_recall(["a"] * 7, true) == pytest.approx(1 / 3)
    # A class of the label set that never occurs in true does not count.
    assert unweighted_average_recall(pred, true, labels=["a", "b", "c", "d"]) == pytest.approx(5 / 12)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_uar_matches_sklearn_random(seed):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 5, size=200)
    pred = np.where(rng.random(200) < 0.6, true, rng.integers(0, 6, size=200))  # class 5 only predicted
    expected = balanced_accuracy_score(true, pred)
    assert unweighted_average_recall(pred, true, labels=range(6)) == pytest.approx(expected)


def test_uar_bad_inputs():
    with pytest.raises(ValueError, match="not in labels"):
        unweighted_average_recall([0, 1], [0, 2], labels=[0, 1])
    with pytest.raises(ValueError, match="labels is empty"):
        unweighted_average_recall([0], [0], labels=[])
    with pytest.raises(ValueError, match="length"):
        unweighted_average_recall([0, 1], [0])
    with pytest.raises(ValueError, match="empty"):
        unweighted_average_recall([], [])


# ----------------------------------------------------------------------------- slot filling

# (refs, hyps, slot_type_f1, value edits, value reference characters) of one utterance.
SLOT_CASES = {
    "perfect": ([("city", "paris"), ("time", "noon")], [("city", "paris"), ("time", "noon")], 1.0, 0, 9),
    # P = 1, R = 1/2: F1 = 2/3. The missing "noon" is compared with "": 4 deletions.
    "missing slot": ([("city", "paris"), ("time", "noon")], [("city", "paris")], 2 / 3, 4, 9),
    # P = 1/2, R = 1: F1 = 2/3. A hypothesis slot of a type the reference lacks costs no CER.
    "extra slot": ([("city", "paris")], [("city", "paris"), ("time", "noon")], 2 / 3, 0, 5),
    # No shared type: P = R = 0, F1 = 0; "city" is missing from the hypothesis: 5 deletions.
    "wrong type": ([("city", "paris")], [("country", "paris")], 0.0, 5, 5),
    # Types agree, F1 = 1; "paris" -> "parys" is one substitution.
    "wrong value": ([("city", "paris")], [("city", "parys")], 1.0, 1, 5),
    # Same type set; "noon" has only "six" to pair with (4 edits), "six" finds "six".
    "repeated type": ([("time", "noon"), ("time", "six")], [("time", "six")], 1.0, 4, 7),
    # Of several hypothesis values of the type, the closest is used: "six" over "sax".
    "closest value": ([("time", "six")], [("time", "sax"), ("time", "six")], 1.0, 0, 3),
    # Neither side has slots: F1 1, nothing to count for CER.
    "no slots": ([], [], 1.0, 0, 0),
    # Only the hypothesis has slots: F1 0.
    "spurious slot": ([], [("city", "paris")], 0.0, 0, 0),
}


@pytest.mark.parametrize("case", [c for c in SLOT_CASES if SLOT_CASES[c][4]])
def test_slot_filling_single_utterance_cases(case):
    ref, hyp, f1, edits, chars = SLOT_CASES[case]
    scores = slot_filling_scores([ref], [hyp])
    assert scores["slot_type_f1"] == pytest.approx(f1)
    assert scores["slot_value_cer"] == pytest.approx(edits / chars)


def test_slot_filling_corpus_averages():
    cases = list(SLOT_CASES.values())
    scores = slot_filling_scores([c[0] for c in cases], [c[1] for c in cases])
    # F1 is a mean over utterances; the value CER pools edits and characters over the corpus.
    assert scores["slot_type_f1"] == pytest.approx(np.mean([c[2] for c in cases]))
    assert scores["slot_value_cer"] == pytest.approx(sum(c[3] for c in cases) / sum(c[4] for c in cases))
    assert scores["slot_value_cer"] == pytest.approx(14 / 43)


def test_slot_filling_without_reference_slots():
    scores = slot_filling_scores([[], []], [[], [("city", "paris")]])
    assert scores["slot_type_f1"] == pytest.approx(0.5)
    assert math.isnan(scores["slot_value_cer"])


def test_slot_filling_from_tagged_transcripts():
    words = "fly to new york at noon".split()
    slots = [{"type": "city", "start_word": 2, "end_word": 4}, {"type": "time", "start_word": 5, "end_word": 6}]
    ref = slot_symbols(words, slots)
    hyp = [*"fly to ", "<city>", *" new yirk ", "</city>", *" at noon"]
    scores = slot_filling_scores([parse_slots(ref)], [parse_slots(hyp)])
    # Types {city, time} vs {city}: F1 2/3. Values: "new york" vs "new yirk" 1 edit,
    # "noon" vs "" 4 edits, over 8 + 4 characters.
    assert scores == pytest.approx({"slot_type_f1": 2 / 3, "slot_value_cer": 5 / 12})


def test_slot_filling_bad_inputs():
    with pytest.raises(ValueError, match="empty value"):
        slot_filling_scores([[("city", "")]], [[]])
    with pytest.raises(ValueError, match="pair"):
        slot_filling_scores([[("city",)]], [[]])
    with pytest.raises(ValueError, match=r"hyps\[0\]"):
        slot_filling_scores([[]], [[("city", None)]])
    with pytest.raises(ValueError, match="length"):
        slot_filling_scores([[]], [])
    with pytest.raises(ValueError, match="empty"):
        slot_filling_scores([], [])


# ----------------------------------------------------------------------------- translation


def test_translation_scores_match_sacrebleu():
    refs = ["the cat sat on the mat", "a dog barks at the moon tonight", "we go home now"]
    hyps = ["the cat sat on a mat", "dog barks at moon tonight", "we are going home"]
    scores = translation_scores(refs, hyps)
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert 0 < scores["bleu"] < 100 and 0 < scores["chrf"] < 100
    assert "nrefs:1" in scores["bleu_signature"] and "tok:13a" in scores["bleu_signature"]
    assert f"version:{sacrebleu.__version__}" in scores["chrf_signature"]


def test_translation_scores_known_values():
    refs = ["the cat sat on the mat", "we go home now"]
    identical = translation_scores(refs, refs)
    assert identical["bleu"] == pytest.approx(100.0) and identical["chrf"] == pytest.approx(100.0)
    disjoint = translation_scores(["aaa bbb ccc ddd"], ["xyz uvw rst opq"])
    assert disjoint["bleu"] == 0.0 and disjoint["chrf"] == 0.0
    empty = translation_scores(refs, ["", ""])
    assert empty["bleu"] == 0.0 and empty["chrf"] == 0.0


def test_translation_scores_bad_inputs():
    with pytest.raises(ValueError, match="length"):
        translation_scores(["a"], [])
    with pytest.raises(ValueError, match="empty"):
        translation_scores([], [])
    with pytest.raises(ValueError, match=r"hyps\[0\]"):
        translation_scores(["a"], [["a"]])


# ----------------------------------------------------------------------------- part of speech


def _tagged(text: str) -> list[tuple[str, str | None]]:
    """"the/DET cat/NOUN runs/-" -> [("the", "DET"), ("cat", "NOUN"), ("runs", None)]."""
    pairs = [item.split("/") for item in text.split()]
    return [(word, None if word_tag == "-" else word_tag) for word, word_tag in pairs]


# (ref, hyp, correct tags, aligned reference words, word edits), counted by hand.
POS_CASES = {
    "perfect": ("the/DET cat/NOUN", "the/DET cat/NOUN", 2, 2, 0),
    # "big" deleted: an error for pos_accuracy, not in the aligned denominator.
    "deletion": ("the/DET big/ADJ cat/NOUN", "the/DET cat/NOUN", 2, 2, 1),
    # "very" inserted: costs WER, not POS accuracy.
    "insertion": ("the/DET cat/NOUN", "the/DET very/ADV cat/NOUN", 2, 2, 1),
    # "cat" -> "hat" keeps the right tag (a substituted word is still aligned), "runs" has the wrong tag.
    "substitution": ("a/DET cat/NOUN runs/VERB", "a/DET hat/NOUN runs/NOUN", 2, 3, 1),
    # A word written without a tag is never correctly tagged.
    "untagged": ("cat/NOUN", "cat/-", 0, 1, 0),
    # Two 2-edit alignments: a->c + delete b (tags DET/NOUN differ), or delete a + b->c
    # (NOUN/NOUN agree); the one with more correct tags is used.
    "tie on edits": ("a/DET b/NOUN", "c/NOUN", 1, 1, 2),
    # Two 2-edit alignments with no correct tag: a->b + b->c, or delete a + b=b + insert c;
    # the one with fewer deletions is used (both reference words aligned).
    "tie on tags": ("a/X b/Y", "b/Z c/W", 0, 2, 2),
    "empty hypothesis": ("a/X b/Y", "", 0, 0, 2),
}


@pytest.mark.parametrize("case", list(POS_CASES))
def test_pos_scores_single_utterance_cases(case):
    ref, hyp, correct, aligned, edits = POS_CASES[case]
    words = len(ref.split())
    scores = pos_scores([_tagged(ref)], [_tagged(hyp)])
    assert scores["pos_accuracy"] == pytest.approx(correct / words)
    if aligned:
        assert scores["pos_accuracy_aligned"] == pytest.approx(correct / aligned)
    else:
        assert math.isnan(scores["pos_accuracy_aligned"])
    assert scores["wer"] == pytest.approx(edits / words)


def test_pos_scores_corpus_level():
    cases = [POS_CASES[c] for c in ("deletion", "insertion", "substitution")]
    scores = pos_scores([_tagged(c[0]) for c in cases], [_tagged(c[1]) for c in cases])
    # 8 reference words, 6 correctly tagged, 7 aligned, 3 word edits.
    assert scores == pytest.approx({"pos_accuracy": 6 / 8, "pos_accuracy_aligned": 6 / 7, "wer": 3 / 8})


def _best_alignment_by_enumeration(ref, hyp) -> tuple[int, int, int]:
    """(edits, correct, deletions) by trying every alignment: the reference for the DP."""
    best = None

    def walk(i, j, edits, correct, deletions):
        nonlocal best
        if i == len(ref) and j == len(hyp):
            key = (edits, -correct, deletions)
            best = key if best is None else min(best, key)
            return
        if i < len(ref) and j < len(hyp):
            walk(i + 1, j + 1, edits + (ref[i][0] != hyp[j][0]), correct + (ref[i][1] == hyp[j][1]), deletions)
        if i < len(ref):
            walk(i + 1, j, edits + 1, correct, deletions + 1)
        if j < len(hyp):
            walk(i, j + 1, edits + 1, correct, deletions)

    walk(0, 0, 0, 0, 0)
    return best[0], -best[1], best[2]


def test_pos_alignment_matches_enumeration():
    rng = random.Random(3)
    for _ in range(300):
        ref = [(rng.choice("abc"), rng.choice("XY")) for _ in range(rng.randint(1, 4))]
        hyp = [(rng.choice("abcd"), rng.choice(["X", "Y", None])) for _ in range(rng.randint(0, 4))]
        edits, correct, deletions = _best_alignment_by_enumeration(ref, hyp)
        scores = pos_scores([ref], [hyp])
        assert scores["wer"] == pytest.approx(edits / len(ref))
        assert scores["pos_accuracy"] == pytest.approx(correct / len(ref))
        aligned = len(ref) - deletions
        if aligned:
            assert scores["pos_accuracy_aligned"] == pytest.approx(correct / aligned)


def test_pos_scores_wer_matches_error_rates_and_parsing():
    words = "the cat sat on the mat".split()
    tags = ["DET", "NOUN", "VERB", "ADP", "DET", "NOUN"]
    ref = parse_tagged_words(pos_symbols(words, tags))
    hyp_words = ["the", "cat", "sad", "the", "mat", "now"]
    hyp = parse_tagged_words(pos_symbols(hyp_words, ["DET", "NOUN", "ADJ", "DET", "NOUN", "ADV"]))
    scores = pos_scores([ref], [hyp])
    wer = error_rates([" ".join(words)], ["the cat sad the mat now"])["wer"]
    assert scores["wer"] == pytest.approx(wer) == pytest.approx(3 / 6)  # sad for sat, "on" deleted, "now" inserted
    # Correct: the, cat, the, mat (sat/sad are aligned but VERB != ADJ; "on" is deleted).
    assert scores["pos_accuracy"] == pytest.approx(4 / 6)
    assert scores["pos_accuracy_aligned"] == pytest.approx(4 / 5)


def test_pos_scores_bad_inputs():
    with pytest.raises(ValueError, match="index 0"):
        pos_scores([[]], [[]])
    with pytest.raises(ValueError, match=r"refs\[0\]"):
        pos_scores([[("cat", None)]], [[]])
    with pytest.raises(ValueError, match=r"hyps\[0\]"):
        pos_scores([[("cat", "NOUN")]], [[("cat",)]])
    with pytest.raises(ValueError, match="list of symbols"):
        pos_scores(["cat"], [[]])
    with pytest.raises(ValueError, match="length"):
        pos_scores([[("cat", "NOUN")]], [])
