"""wav2vec 2.0 objective: span masking, Gumbel quantizer, contrastive logits, full loss."""

import math

import pytest
import torch
import torch.nn.functional as F

from speechssl.config import check
from speechssl.errors import ConfigError
from speechssl.models import EncoderConfig, conv_stack
from speechssl.models.objectives import (
    ContrastiveConfig,
    GumbelQuantizer,
    Wav2Vec2Pretraining,
    contrastive_logits,
    span_mask,
)


def small_encoder(**overrides) -> EncoderConfig:
    fields = dict(
        conv_layers=conv_stack(32), conv_norm="layer_norm", hidden=32, layers=2, heads=2, ffn=64,
        pos_conv_kernel=16, pos_conv_groups=4, layerdrop=0.0,
    )
    fields.update(overrides)
    cfg = EncoderConfig(**fields)
    check(cfg)
    return cfg


def small_objective(**overrides) -> ContrastiveConfig:
    fields = dict(codebook_entries=16, codevector_dim=16, final_dim=16, num_negatives=10)
    fields.update(overrides)
    cfg = ContrastiveConfig(**fields)
    check(cfg)
    return cfg


# ---------------------------------------------------------------- masking


def test_masked_fraction_on_long_inputs_is_about_49_percent():
    torch.manual_seed(0)
    mask = span_mask(torch.full((400,), 1000), 1000, mask_prob=0.65, mask_length=10, min_masks=2)
    assert mask.float().mean().item() == pytest.approx(0.49, abs=0.02)


def test_padding_is_never_masked_and_short_utterances_get_min_spans():
    torch.manual_seed(1)
    lengths = torch.tensor([200, 50, 12, 3, 0])
    mask = span_mask(lengths, 200, mask_prob=0.65, mask_length=10, min_masks=2)
    for row, length in enumerate(lengths.tolist()):
        assert not mask[row, length:].any(), f"row {row} masks padding"
    assert mask[2].sum() >= 10  # two spans fit only partly, but something is masked
    assert mask[3, :3].sum() >= 2  # 2 spans start at distinct frames of a 3-frame utterance
    assert not mask[4].any()


def test_mask_is_deterministic_under_a_seed():
    torch.manual_seed(7)
    a = span_mask(torch.tensor([300, 120]), 300, mask_prob=0.65, mask_length=10)
    torch.manual_seed(7)
    b = span_mask(torch.tensor([300, 120]), 300, mask_prob=0.65, mask_length=10)
    assert torch.equal(a, b)


# ---------------------------------------------------------------- quantizer


def test_quantizer_picks_codewords_and_measures_perplexity():
    torch.manual_seed(0)
    quantizer = GumbelQuantizer(in_dim=8, groups=2, entries=5, codevector_dim=6).eval()
    x = torch.randn(40, 8)
    quantized, codes, perplexity = quantizer(x, temperature=2.0)
    assert quantized.shape == (40, 6) and codes.shape == (40, 2)
    book = quantizer.codevectors.view(2, 5, 3)
    expected = torch.cat([book[0, codes[:, 0]], book[1, codes[:, 1]]], dim=1)
    torch.testing.assert_close(quantized, expected)
    assert torch.equal(codes, quantizer.weight_proj(x).view(40, 2, 5).argmax(-1))
    assert ((1.0 <= perplexity) & (perplexity <= 5.0 + 1e-4)).all()

    with torch.no_grad():  # uniform logits: perplexity = number of entries
        quantizer.weight_proj.weight.zero_()
    _, _, flat = quantizer(x, temperature=2.0)
    torch.testing.assert_close(flat, torch.full((2,), 5.0), atol=1e-3, rtol=0)


def test_training_quantizer_is_straight_through():
    torch.manual_seed(0)
    quantizer = GumbelQuantizer(in_dim=8, groups=2, entries=5, codevector_dim=6).train()
    x = torch.randn(10, 8, requires_grad=True)
    quantized, codes, _ = quantizer(x, temperature=1.0)
    book = quantizer.codevectors.view(2, 5, 3)
    # forward values are exact codewords (hard choice) ...
    torch.testing.assert_close(quantized[:, :3], book[0, codes[:, 0]])
    quantized.sum().backward()
    # ... while gradients reach the logits through the soft probabilities.
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_gumbel_temperature_anneals_to_its_floor():
    cfg = ContrastiveConfig()
    assert cfg.gumbel_temperature(0) == 2.0
    assert cfg.gumbel_temperature(1000) == pytest.approx(2.0 * 0.999995**1000)
    assert cfg.gumbel_temperature(10_000_000) == 0.5
    assert cfg.chance_loss == pytest.approx(math.log(101))


def test_objective_config_is_validated():
    with pytest.raises(ConfigError, match="divisible"):
        small_objective(codevector_dim=15, codebook_groups=2)


# ---------------------------------------------------------------- contrastive logits


def test_contrastive_logits_draw_distractors_from_the_same_utterance():
    torch.manual_seed(3)
    mask = torch.zeros(3, 30, dtype=torch.bool)
    mask[0, 2:14] = True
    mask[1, 5:25] = True
    mask[2, 7] = True  # a single masked frame: no distractor possible
    n = int(mask.sum())
    context, targets = torch.randn(n, 8), torch.randn(n, 8)
    codes = torch.arange(n)[:, None]  # all distinct: no distractor equals its target
    logits, usable = contrastive_logits(context, targets, codes, mask, num_negatives=25, logit_temp=0.1)
    assert logits.shape == (n, 26)

    rows = mask.nonzero(as_tuple=True)[0]
    cos = F.cosine_similarity(context[:, None, :], targets[None, :, :], dim=-1) / 0.1  # [n, n]
    for i in range(n):
        same = (rows == rows[i]).nonzero().flatten().tolist()
        if len(same) < 2:
            assert not usable[i]
            continue
        assert usable[i]
        assert logits[i, 0].item() == pytest.approx(cos[i, i].item(), abs=1e-5)
        allowed = torch.stack([cos[i, j] for j in same if j != i])
        for value in logits[i, 1:]:
            assert (allowed - value).abs().min() < 1e-5, "a distractor came from another utterance or itself"


def test_distractor_with_the_targets_codes_is_excluded():
    torch.manual_seed(0)
    mask = torch.ones(1, 12, dtype=torch.bool)
    context, targets = torch.randn(12, 4), torch.randn(12, 4)
    same_codes = torch.zeros(12, 2, dtype=torch.long)
    logits, usable = contrastive_logits(context, targets, same_codes, mask, num_negatives=5, logit_temp=0.1)
    assert usable.all()
    assert torch.isinf(logits[:, 1:]).all() and (logits[:, 1:] < 0).all()
    loss = F.cross_entropy(logits, torch.zeros(12, dtype=torch.long))
    assert loss.item() == pytest.approx(0.0)


# ---------------------------------------------------------------- full objective


def test_pretraining_loss_at_init_is_near_chance_and_reaches_every_parameter():
    torch.manual_seed(0)
    objective = small_objective()
    model = Wav2Vec2Pretraining(small_encoder(), objective).train()
    waves = torch.randn(3, 16000)
    lengths = torch.tensor([16000, 12000, 8000])
    out = model(waves, lengths, num_updates=0)
    stats = out.stats
    assert torch.isfinite(out.loss)
    assert abs(stats["contrastive"].item() - objective.chance_loss) < 0.5
    assert 0.3 < stats["masked_fraction"].item() < 0.7
    expected = stats["contrastive"] + 0.1 * stats["diversity"] + 10.0 * stats["penalty"]
    torch.testing.assert_close(out.loss.detach(), expected)
    out.loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert missing == []


def test_loss_ignores_padding():
    torch.manual_seed(0)
    model = Wav2Vec2Pretraining(small_encoder(dropout=0.0, attention_dropout=0.0, feature_dropout=0.0),
                                small_objective(target_dropout=0.0)).eval()
    wave = torch.randn(1, 12000)
    padded = torch.cat([wave, torch.randn(1, 4000) * 5], dim=1)  # loud junk as padding
    torch.manual_seed(11)
    alone = model(wave, torch.tensor([12000])).stats
    torch.manual_seed(11)
    batch = model(padded, torch.tensor([12000])).stats
    for key in ("contrastive", "penalty", "accuracy", "masked_frames"):
        torch.testing.assert_close(alone[key], batch[key], atol=1e-5, rtol=1e-5)
