"""Downstream metrics against hand-computed cases and against scikit-learn."""

import math

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from speechssl.downstream.metrics import accuracy, eer, eer_threshold, error_rates, macro_f1, min_dcf

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
