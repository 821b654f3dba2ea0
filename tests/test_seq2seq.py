"""Hybrid CTC-attention probe: the CTC prefix scorer, joint beam search, training and decoding."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from speechssl.downstream.config import ProbeConfig
from speechssl.downstream.probes.encoders import ENCODERS
from speechssl.downstream.probes.seq2seq import CTCAttentionHead, CTCPrefixScorer

BLANK = 0


def collapse(path: tuple[int, ...]) -> list[int]:
    """CTC's many-to-one map: merge repeats, drop blanks."""
    out = []
    previous = None
    for symbol in path:
        if symbol != previous and symbol != BLANK:
            out.append(symbol)
        previous = symbol
    return out


def brute_force_prefix(log_probs: torch.Tensor, prefix: list[int]) -> float:
    """log of the summed probability of all alignments whose collapsed output starts with ``prefix``."""
    frames, vocab = log_probs.shape
    total = 0.0
    for path in itertools.product(range(vocab), repeat=frames):
        if collapse(path)[: len(prefix)] == prefix:
            total += math.exp(sum(float(log_probs[t, s]) for t, s in enumerate(path)))
    return math.log(total) if total > 0 else -math.inf


def ctc_sequence_log_prob(log_probs: torch.Tensor, labels: list[int]) -> float:
    """log P(labels) under CTC, from torch's CTC loss."""
    if not labels:
        return float(log_probs[:, BLANK].sum())
    loss = F.ctc_loss(log_probs[:, None], torch.tensor([labels]), torch.tensor([log_probs.shape[0]]),
                      torch.tensor([len(labels)]), blank=BLANK, reduction="sum")
    return -float(loss)


def random_log_probs(frames: int, vocab: int, seed: int, sharpness: float = 2.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.log_softmax(sharpness * torch.randn(frames, vocab, generator=generator, dtype=torch.float64), dim=-1)


# ---------------------------------------------------------------- CTC prefix scorer
@pytest.mark.parametrize("frames", [3, 4])
def test_prefix_score_matches_brute_force(frames):
    log_probs = random_log_probs(frames, 3, seed=frames)
    scorer = CTCPrefixScorer(log_probs, blank=BLANK, eos=3)
    for prefix in ([], [1], [2], [1, 1], [1, 2], [2, 1], [2, 2], [1, 2, 1], [1, 1, 1], [2, 2, 2, 2]):
        assert scorer.prefix_score(prefix) == pytest.approx(brute_force_prefix(log_probs, prefix), abs=1e-9), prefix


@pytest.mark.parametrize("frames", [3, 4])
def test_full_sequence_score_matches_ctc_loss(frames):
    log_probs = random_log_probs(frames, 3, seed=10 + frames)
    scorer = CTCPrefixScorer(log_probs, blank=BLANK, eos=3)
    for labels in ([], [1], [2], [1, 1], [1, 2], [2, 1, 2], [1, 1, 2]):
        expected = ctc_sequence_log_prob(log_probs, labels)
        assert scorer.sequence_score(labels) == pytest.approx(expected, abs=1e-9), labels


def test_extend_is_vectorised_over_prefixes_and_candidates():
    """One call scoring two prefixes x all candidates (eos included) agrees with the one-at-a-time path."""
    log_probs = random_log_probs(4, 3, seed=7)
    scorer = CTCPrefixScorer(log_probs, blank=BLANK, eos=3)
    prefixes = [[1], [2]]
    _, states = scorer.extend(scorer.initial_state(), torch.tensor([-1]), 0, torch.tensor([[1, 2]]))
    candidates = torch.tensor([[1, 2, 3], [3, 2, 1]])
    scores, _ = scorer.extend(states[:, :, 0, :], torch.tensor([1, 2]), 1, candidates)
    for row, prefix in enumerate(prefixes):
        for column, candidate in enumerate(candidates[row].tolist()):
            if candidate == 3:
                expected = ctc_sequence_log_prob(log_probs, prefix)
            else:
                expected = brute_force_prefix(log_probs, prefix + [candidate])
            assert float(scores[row, column]) == pytest.approx(expected, abs=1e-9)


def test_prefix_longer_than_the_utterance_is_impossible():
    scorer = CTCPrefixScorer(random_log_probs(2, 3, seed=1), blank=BLANK, eos=3)
    assert scorer.prefix_score([1, 2, 1]) == -math.inf
    assert scorer.prefix_score([1, 1]) == -math.inf  # a repeat needs a blank in between: 3 frames


# ---------------------------------------------------------------- joint beam search on known scores
VOCAB = 3  # blank, 1, 2
EOS = VOCAB


def stub_model(ctc_log_probs: torch.Tensor, attention: dict[tuple[int, ...], torch.Tensor]) -> CTCAttentionHead:
    """A probe whose CTC log-probabilities are the input itself and whose decoder reads a table
    ``prefix (labels only) -> log-probabilities over the VOCAB + 1 decoder ids``."""
    cfg = ProbeConfig(hidden=4, heads=1, dropout=0.0, ctc_weight=0.3)
    model = CTCAttentionHead(ENCODERS["identity"](VOCAB, cfg), VOCAB, cfg).double().eval()
    with torch.no_grad():
        model.ctc_out.weight.copy_(torch.eye(VOCAB))
        model.ctc_out.bias.zero_()

    def attention_log_probs(memory: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return torch.stack([attention[tuple(row[1:])] for row in tokens.tolist()])

    model._attention_log_probs = attention_log_probs  # type: ignore[method-assign]
    return model


def random_attention(max_length: int, seed: int) -> dict[tuple[int, ...], torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    table = {}
    for length in range(max_length + 1):
        for prefix in itertools.product(range(1, VOCAB), repeat=length):
            table[prefix] = F.log_softmax(2.0 * torch.randn(VOCAB + 1, generator=generator, dtype=torch.float64), -1)
    return table


def joint_score(labels: list[int], ctc_log_probs, attention, weight: float) -> float:
    """(1 - λ) log p_att(labels <eos>) + λ log p_ctc(labels): what a finished hypothesis scores."""
    history = labels + [EOS]
    att = sum(float(attention[tuple(labels[:i])][token]) for i, token in enumerate(history))
    score = weight * ctc_sequence_log_prob(ctc_log_probs, labels) if weight > 0 else 0.0
    return score + (1 - weight) * att if weight < 1 else score


def best_by_enumeration(ctc_log_probs, attention, weight: float, max_length: int) -> list[int]:
    hypotheses = [list(h) for n in range(max_length + 1) for h in itertools.product(range(1, VOCAB), repeat=n)]
    return max(hypotheses, key=lambda h: joint_score(h, ctc_log_probs, attention, weight))


@pytest.mark.parametrize("weight", [0.0, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wide_beam_finds_the_best_joint_score(weight, seed):
    max_length, frames = 3, 5
    ctc_log_probs = random_log_probs(frames, VOCAB, seed=100 + seed, sharpness=1.0)
    attention = random_attention(max_length, seed)
    model = stub_model(ctc_log_probs, attention)
    decoded = model.decode(ctc_log_probs[None], torch.tensor([frames]), beam_size=16, ctc_weight=weight,
                           max_length=max_length)
    assert decoded == [best_by_enumeration(ctc_log_probs, attention, weight, max_length)]


def test_length_bonus_favours_longer_hypotheses():
    max_length, frames = 3, 5
    ctc_log_probs = random_log_probs(frames, VOCAB, seed=5, sharpness=1.0)
    attention = random_attention(max_length, seed=5)
    model = stub_model(ctc_log_probs, attention)
    bonus = 3.0

    def with_bonus(h: list[int]) -> float:
        return joint_score(h, ctc_log_probs, attention, 0.3) + bonus * len(h)

    hypotheses = [list(h) for n in range(max_length + 1) for h in itertools.product(range(1, VOCAB), repeat=n)]
    decoded = model.decode(ctc_log_probs[None], torch.tensor([frames]), beam_size=16, ctc_weight=0.3,
                           max_length=max_length, length_bonus=bonus)
    assert decoded == [max(hypotheses, key=with_bonus)]
    assert len(decoded[0]) > len(best_by_enumeration(ctc_log_probs, attention, 0.3, max_length))


def test_greedy_falls_into_a_garden_path_that_beam_search_avoids():
    uniform = torch.full((4, VOCAB), math.log(1 / VOCAB), dtype=torch.float64)
    log = math.log
    attention = {
        (): torch.tensor([-math.inf, log(0.55), log(0.45), -math.inf], dtype=torch.float64),
        # after "1" nothing is likely; after "2" the decoder is sure it is done
        (1,): torch.tensor([-math.inf, log(0.35), log(0.35), log(0.3)], dtype=torch.float64),
        (2,): torch.tensor([-math.inf, log(0.005), log(0.005), log(0.99)], dtype=torch.float64),
    }
    for first, second in itertools.product((1, 2), repeat=2):
        attention[(first, second)] = torch.tensor([-math.inf, log(0.1), log(0.1), log(0.8)], dtype=torch.float64)
    model = stub_model(uniform, attention)
    lengths = torch.tensor([4])
    greedy = model.decode(uniform[None], lengths, beam_size=1, ctc_weight=0.0, max_length=2)
    beam = model.decode(uniform[None], lengths, beam_size=4, ctc_weight=0.0, max_length=2)
    assert greedy[0][0] == 1
    assert beam == [[2]] == [best_by_enumeration(uniform, attention, 0.0, 2)]


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_eos_first_decodes_to_the_empty_sequence(weight):
    # CTC all but certain of blanks, decoder of <eos>: the best hypothesis is empty.
    ctc_log_probs = F.log_softmax(torch.tensor([[6.0, 0.0, 0.0]] * 4, dtype=torch.float64), dim=-1)
    attention = random_attention(4, seed=3)
    attention[()] = torch.tensor([-math.inf, -6.0, -6.0, -0.01], dtype=torch.float64)
    model = stub_model(ctc_log_probs, attention)
    for beam in (1, 3):
        assert model.decode(ctc_log_probs[None], torch.tensor([4]), beam_size=beam, ctc_weight=weight) == [[]]


# ---------------------------------------------------------------- the real module
def small_probe(encoder: str = "mlp", in_dim: int = 16, vocab: int = 8, **overrides) -> CTCAttentionHead:
    cfg = ProbeConfig(**{"hidden": 32, "heads": 4, "dropout": 0.0, "num_layers": 1, "decoder_layers": 2, **overrides})
    return CTCAttentionHead(ENCODERS[encoder](in_dim, cfg), vocab, cfg)


def test_forward_gives_ctc_logits_and_ids():
    model = small_probe(encoder="bilstm")
    logits, lengths = model(torch.randn(2, 7, 16), torch.tensor([7, 5]))
    assert logits.shape == (2, 7, 8) and lengths.tolist() == [7, 5]
    assert model.sos_eos == 8 and model.att_out.out_features == 9


def test_loss_with_separate_decoder_targets():
    torch.manual_seed(0)
    model = small_probe()
    x, lengths = torch.randn(2, 9, 16), torch.tensor([9, 6])
    ctc_targets = [[1, 2, 3], [4, 5]]
    translation = [[6, 7], [7, 6, 5, 4]]  # another text, other lengths, in the same vocabulary
    loss = model.loss(x, lengths, ctc_targets, translation)
    assert torch.isfinite(loss)
    assert not torch.allclose(loss, model.loss(x, lengths, ctc_targets))
    loss.backward()
    assert model.ctc_out.weight.grad is not None and model.att_out.weight.grad is not None
    with pytest.raises(ValueError):
        model.loss(x, lengths, [[0, 1], [2]])  # the blank is no target


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_loss_skips_the_unweighted_branch(weight):
    model = small_probe(ctc_weight=weight)
    model.loss(torch.randn(2, 6, 16), torch.tensor([6, 4]), [[1, 2], [3]]).backward()
    assert (model.ctc_out.weight.grad is None) == (weight == 0.0)
    assert (model.att_out.weight.grad is None) == (weight == 1.0)


def test_padding_does_not_change_decoding():
    torch.manual_seed(1)
    model = small_probe(encoder="bilstm").eval()
    x = torch.randn(2, 10, 16)
    alone = model.decode(x[1:, :6], torch.tensor([6]), beam_size=3, max_length=5)
    batched = model.decode(x, torch.tensor([10, 6]), beam_size=3, max_length=5)
    assert batched[1] == alone[0]
    assert all(0 not in ids and model.sos_eos not in ids and len(ids) <= 5 for ids in batched)


def test_overfits_a_tiny_batch():
    torch.manual_seed(0)
    model = small_probe(encoder="mlp", ctc_weight=0.3, label_smoothing=0.1)
    x, lengths = torch.randn(3, 14, 16), torch.tensor([14, 11, 9])
    targets = [[1, 2, 3, 4], [5, 5, 6], [7, 1]]  # a repeated label, and lengths that differ
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(200):
        optimizer.zero_grad()
        model.loss(x, lengths, targets).backward()
        optimizer.step()
    model.eval()
    assert model.decode(x, lengths, beam_size=4, ctc_weight=0.3) == targets
    assert model.decode(x, lengths, beam_size=4, ctc_weight=0.0) == targets
    assert model.decode(x, lengths, beam_size=1) == targets
    # Teacher forcing reads the reference prefix, so a fitted model reproduces it in one pass;
    # an untrained one ends at its first <eos> and never writes the blank.
    assert model.teacher_forced_decode(x, lengths, targets) == targets
    fresh = small_probe(encoder="mlp", ctc_weight=0.3).eval()
    for hypothesis, target in zip(fresh.teacher_forced_decode(x, lengths, targets), targets):
        assert len(hypothesis) <= len(target) + 1 and 0 not in hypothesis
