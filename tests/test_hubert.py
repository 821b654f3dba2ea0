"""HuBERT objective: loss on labelled frames only, weights, shapes, and its config checks."""

import pytest
import torch

from speechssl.config import from_dict
from speechssl.errors import ConfigError
from speechssl.models import EncoderConfig, conv_stack
from speechssl.models.objectives import HubertConfig, HubertPretraining, build_objective, span_mask
from speechssl.pretrain.config import PretrainConfig

SR = 16000


def small_encoder() -> EncoderConfig:
    return EncoderConfig.preset(
        "tiny", layers=2, conv_layers=conv_stack(32), hidden=64, heads=4, ffn=128, pos_conv_kernel=16,
        pos_conv_groups=4, dropout=0.0, attention_dropout=0.0, feature_dropout=0.0, layerdrop=0.0,
    )


def model_and_batch(**objective):
    torch.manual_seed(0)
    cfg = HubertConfig(num_classes=[7, 5], final_dim=16, mask_prob=0.5, **objective)
    model = HubertPretraining(small_encoder(), cfg)
    waves = torch.randn(2, SR)
    lengths = torch.tensor([SR, 9000])
    frames = model.encoder.output_lengths(lengths)
    targets = torch.stack([torch.randint(0, 7, (2, 49)), torch.randint(0, 5, (2, 49))], dim=-1)
    targets[1, int(frames[1]):] = -1
    return model, waves, lengths, targets


def loss_with(model, waves, lengths, targets, seed=3):
    torch.manual_seed(seed)  # same masks
    return model(waves, lengths, targets=targets)


def test_loss_is_finite_and_reaches_every_part():
    model, waves, lengths, targets = model_and_batch(unmasked_weight=1.0)
    out = loss_with(model, waves, lengths, targets)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.final_proj.weight.grad.abs().sum() > 0
    assert model.label_embs_concat.grad.abs().sum() > 0
    assert model.hubert.feature_extractor.conv_layers[0].conv.weight.grad.abs().sum() > 0
    for key in ("masked_ce", "unmasked_ce", "masked_accuracy", "unmasked_accuracy", "masked_frames"):
        assert key in out.stats


def test_padding_labels_never_count():
    model, waves, lengths, targets = model_and_batch(unmasked_weight=1.0)
    model.eval()
    base = loss_with(model, waves, lengths, targets).loss
    frames = int(model.encoder.output_lengths(lengths)[1])
    changed = targets.clone()
    changed[1, frames:] = 3  # labels on padding frames must be ignored
    assert torch.equal(loss_with(model, waves, lengths, changed).loss, base)


def test_unmasked_labels_only_matter_with_an_unmasked_weight():
    for weight in (0.0, 1.0):
        model, waves, lengths, targets = model_and_batch(unmasked_weight=weight, penalty_weight=0.0)
        model.eval()  # no dropout: the span mask is the forward pass's first random draw
        frames = model.encoder.output_lengths(lengths)
        torch.manual_seed(3)
        mask = span_mask(frames, 49, mask_prob=0.5, mask_length=10, min_masks=2)
        relabelled = torch.where(mask.unsqueeze(-1) | (targets < 0), targets, (targets + 1) % torch.tensor([7, 5]))
        same = torch.equal(loss_with(model, waves, lengths, targets).loss, loss_with(model, waves, lengths, relabelled).loss)
        assert same == (weight == 0.0)


def test_wrong_label_count_is_refused():
    model, waves, lengths, targets = model_and_batch()
    with pytest.raises(ValueError, match="target sets"):
        model(waves, lengths, targets=targets[..., :1])
    bad = targets.clone()
    bad[0, 0, 0] = 7
    with pytest.raises(ValueError, match="classes"):
        model(waves, lengths, targets=bad)


def test_config_checks_and_registry():
    with pytest.raises(ConfigError, match="needs hubert.targets"):
        from_dict(PretrainConfig, {"objective": "hubert"})
    with pytest.raises(ConfigError, match="nothing to learn"):
        from_dict(HubertConfig, {"masked_weight": 0.0, "unmasked_weight": 0.0})
    cfg = from_dict(PretrainConfig, {"objective": "hubert", "hubert": {"targets": ["x"], "num_classes": [9]}})
    model = build_objective(cfg.objective, small_encoder(), cfg)
    assert isinstance(model, HubertPretraining) and model.label_embs_concat.shape[0] == 9


def test_collapse_warning_needs_a_sustained_floor_and_is_said_once():
    model, *_ = model_and_batch()
    ok = {"masked_accuracy": 0.3, "majority_share": 0.1}
    low = {"masked_accuracy": 0.05, "majority_share": 0.1}
    assert not any(model.check_collapse(i, r) for i, r in enumerate([ok, ok, ok, ok, low]))  # one bad batch
    said = [model.check_collapse(i, low) for i in range(5, 12)]
    assert sum(bool(w) for w in said) == 1 and "majority-label floor" in next(w for w in said if w)[0]
