"""Native wav2vec 2.0-style encoder: frame arithmetic, sizes, padding, gradients, layerdrop."""

import math

import pytest
import torch

from speechssl.config import from_dict, to_dict
from speechssl.errors import ConfigError
from speechssl.models import (
    SEED004_CONV,
    WAV2VEC2_CONV,
    EncoderConfig,
    FeatureExtractor,
    build_encoder,
    conv_output_lengths,
    conv_stack,
)

SR = 16000


def tiny(**overrides) -> EncoderConfig:
    return EncoderConfig.preset("tiny", **overrides)


def test_conv_presets_match_wav2vec2():
    assert [k for _, k, _, _ in WAV2VEC2_CONV] == [10, 3, 3, 3, 3, 2, 2]
    assert [s for _, _, s, _ in WAV2VEC2_CONV] == [5, 2, 2, 2, 2, 2, 2]
    assert [p for _, _, _, p in SEED004_CONV] == [3, 1, 1, 1, 1, 0, 0]
    assert all(c == 512 for c, _, _, _ in WAV2VEC2_CONV + SEED004_CONV)


@pytest.mark.parametrize("padded, frames", [(False, 49), (True, 50)])
def test_one_second_gives_expected_frames(padded, frames):
    # Narrow channels: the frame arithmetic does not depend on the width.
    extractor = FeatureExtractor(conv_stack(8, padded=padded)).eval()
    with torch.no_grad():
        out = extractor(torch.randn(1, SR))
    assert out.shape == (1, frames, 8)
    assert conv_output_lengths(torch.tensor([SR]), SEED004_CONV if padded else WAV2VEC2_CONV).item() == frames


@pytest.mark.parametrize("padded", [False, True])
def test_output_lengths_match_actual_outputs(padded):
    extractor = FeatureExtractor(conv_stack(4, padded=padded)).eval()
    for samples in (400, 401, 719, 720, 1234, 3200, 7999, 16000, 16319, 16320):
        with torch.no_grad():
            actual = extractor(torch.randn(1, samples)).shape[1]
        assert extractor.output_lengths(torch.tensor([samples])).item() == actual, samples


def test_too_short_input_gives_zero_frames_not_negative():
    lengths = conv_output_lengths(torch.tensor([0, 1, 399, 400]), WAV2VEC2_CONV)
    assert lengths.tolist() == [0, 0, 0, 1]  # 400 samples = the receptive field


def test_base_parameter_count_close_to_fairseq():
    with torch.device("meta"):
        base = build_encoder("base")
    count = base.num_parameters()
    # Same as HF Wav2Vec2Model base; fairseq's 95.0 M adds the quantizer and the two heads.
    assert count == 94_371_712
    assert abs(count - 95.0e6) / 95.0e6 < 0.01
    assert base.frame_rate == 50.0


def test_presets_follow_the_papers():
    base, large = EncoderConfig.preset("base"), EncoderConfig.preset("large")
    assert (base.hidden, base.layers, base.heads, base.ffn) == (768, 12, 12, 3072)
    assert (base.style, base.conv_norm, base.conv_bias) == ("post_ln", "group_norm", False)
    assert (large.hidden, large.layers, large.heads, large.ffn) == (1024, 24, 16, 4096)
    assert (large.style, large.conv_norm, large.conv_bias) == ("pre_ln", "layer_norm", True)
    assert 1e6 < build_encoder("tiny").num_parameters() < 5e6


def test_config_round_trips_and_validates():
    cfg = tiny()
    assert from_dict(EncoderConfig, to_dict(cfg)) == cfg  # conv layers survive YAML-style lists
    with pytest.raises(ConfigError, match="divisible by heads"):
        tiny(heads=5)
    with pytest.raises(ConfigError, match="conv_layers"):
        from_dict(EncoderConfig, {"conv_layers": [[8, 3, 0, 0]]})
    with pytest.raises(ConfigError, match="unknown encoder preset"):
        EncoderConfig.preset("huge")


@pytest.mark.parametrize("style, conv_norm", [("post_ln", "layer_norm"), ("pre_ln", "group_norm")])
def test_tiny_forward_shapes_and_padding_mask(style, conv_norm):
    cfg = tiny(style=style, conv_norm=conv_norm)
    model = build_encoder(cfg).eval()
    waves = torch.randn(3, SR)
    with torch.no_grad():
        out = model(waves, torch.tensor([SR, 8000, 3200]))
    assert len(out.layer_states) == cfg.layers + 1
    assert all(s.shape == (3, 49, cfg.hidden) for s in out.layer_states)
    assert out.features.shape == (3, 49, cfg.conv_dim)
    assert out.projected.shape == (3, 49, cfg.hidden)
    assert out.frame_lengths.tolist() == [49, 24, 9]
    assert out.padding_mask.dtype == torch.bool
    assert out.padding_mask.sum(dim=1).tolist() == [0, 25, 40]
    assert not out.padding_mask[1, :24].any() and out.padding_mask[1, 24:].all()
    # Without lengths every frame is valid.
    with torch.no_grad():
        full = model(waves)
    assert not full.padding_mask.any() and full.frame_lengths.tolist() == [49, 49, 49]


@pytest.mark.parametrize("style, conv_norm", [("post_ln", "group_norm"), ("pre_ln", "group_norm"), ("post_ln", "layer_norm")])
def test_padding_does_not_change_valid_outputs(style, conv_norm):
    # group_norm pools each utterance's own valid frames only (MaskedGroupNorm).
    torch.manual_seed(0)
    model = build_encoder(tiny(style=style, conv_norm=conv_norm)).eval()
    short, long = torch.randn(1, 8000), torch.randn(1, SR)
    batch = torch.zeros(2, SR)
    batch[0, :8000], batch[1] = short[0], long[0]
    with torch.no_grad():
        alone = model(short)
        padded = model(batch, torch.tensor([8000, SR]))
    frames = int(alone.frame_lengths[0])
    assert padded.frame_lengths[0] == frames
    for a, p in zip(alone.layer_states, padded.layer_states):
        torch.testing.assert_close(p[0, :frames], a[0], atol=1e-5, rtol=0)


def test_fully_padded_row_gives_no_nan():
    model = build_encoder(tiny()).eval()
    with torch.no_grad():
        out = model(torch.randn(2, SR), torch.tensor([SR, 0]))
    assert out.frame_lengths.tolist() == [49, 0]
    assert out.padding_mask[1].all()
    assert all(torch.isfinite(s).all() for s in out.layer_states)


def _cnn_grad(grad_mult: float) -> torch.Tensor | None:
    torch.manual_seed(0)
    model = build_encoder(tiny(feature_grad_mult=grad_mult)).eval()  # eval: no dropout noise
    torch.manual_seed(1)
    model(torch.randn(2, 4000)).last_hidden_state.square().mean().backward()
    return model.feature_extractor.conv_layers[0].conv.weight.grad


def test_feature_grad_mult_scales_only_the_cnn_gradient():
    full, scaled = _cnn_grad(1.0), _cnn_grad(0.1)
    assert full is not None and full.abs().sum() > 0
    torch.testing.assert_close(scaled, 0.1 * full, rtol=1e-4, atol=1e-9)
    assert _cnn_grad(0.0) is None  # frozen CNN


def test_layerdrop_is_off_in_eval_and_keeps_all_states_in_training():
    cfg = tiny(layerdrop=1.0)
    model = build_encoder(cfg)
    waves = torch.randn(2, 4000)
    model.eval()
    with torch.no_grad():
        first, second = model(waves), model(waves)
    for a, b in zip(first.layer_states, second.layer_states):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.allclose(first.layer_states[1], first.layer_states[0])  # layers did run

    model.train()
    with torch.no_grad():
        dropped = model(waves)
    assert len(dropped.layer_states) == cfg.layers + 1
    for state in dropped.layer_states[1:]:  # every layer skipped: the input passes through
        torch.testing.assert_close(state, dropped.layer_states[0], atol=0, rtol=0)


def test_mask_fn_hook_sees_projected_features_and_mask_embedding_trains():
    model = build_encoder(tiny()).eval()
    waves, lengths = torch.randn(2, 8000), torch.tensor([8000, 4000])
    seen = {}

    def mask_fn(x: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        seen["shape"], seen["padded"] = x.shape, padding_mask.sum().item()
        span = torch.zeros(x.shape[:2], dtype=torch.bool)
        span[:, 2:6] = True
        return torch.where(span.unsqueeze(-1), model.mask_embedding.to(x.dtype), x)

    masked = model(waves, lengths, mask_fn=mask_fn)
    with torch.no_grad():
        plain = model(waves, lengths)
    assert seen["shape"] == masked.projected.shape and seen["padded"] == 12
    assert not torch.allclose(masked.last_hidden_state, plain.last_hidden_state)
    masked.last_hidden_state.sum().backward()
    assert model.mask_embedding.grad is not None and model.mask_embedding.grad.abs().sum() > 0


def test_parameter_names_follow_hf_wav2vec2():
    names = {name for name, _ in build_encoder(tiny(conv_bias=True, conv_norm="layer_norm")).named_parameters()}
    expected = {
        "feature_extractor.conv_layers.0.conv.weight",
        "feature_extractor.conv_layers.0.conv.bias",
        "feature_extractor.conv_layers.6.layer_norm.weight",
        "feature_projection.layer_norm.weight",
        "feature_projection.projection.weight",
        "encoder.pos_conv_embed.conv.bias",
        "encoder.layer_norm.weight",
        "encoder.layers.0.attention.q_proj.weight",
        "encoder.layers.0.attention.out_proj.bias",
        "encoder.layers.0.layer_norm.weight",
        "encoder.layers.0.feed_forward.intermediate_dense.weight",
        "encoder.layers.0.feed_forward.output_dense.weight",
        "encoder.layers.0.final_layer_norm.weight",
        "mask_embedding",
    }
    assert expected <= names
    assert any(n.startswith("encoder.pos_conv_embed.conv.parametrizations.weight") for n in names)


def _speech_like(seconds: float, seed: int) -> torch.Tensor:
    """Noise bursts at speech-like levels separated by runs of exact zeros (eSpeak pauses)."""
    g = torch.Generator().manual_seed(seed)
    wave = 0.1 * torch.randn(int(seconds * SR), generator=g)
    n = wave.numel()
    for start in (int(0.1 * n), int(0.45 * n), int(0.8 * n)):
        wave[start : start + int(0.1 * n)] = 0.0  # 30 % digital silence
    return wave


def _first_step_grad_norm(cfg: EncoderConfig, waves: torch.Tensor) -> float:
    torch.manual_seed(0)
    model = build_encoder(cfg).train()
    out = model(waves, torch.full((waves.shape[0],), waves.shape[1]))
    # Any loss that reaches every layer: squared distance of the last layer to a fixed target.
    target = torch.randn(out.last_hidden_state.shape, generator=torch.Generator().manual_seed(1))
    (out.last_hidden_state - target).pow(2).mean().backward()
    return float(torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf")))


def test_digital_silence_gives_ordinary_gradient_norms():
    # With a per-frame LayerNorm front end this crop gave first-step norms of ~1e14 (issue 12);
    # the tiny preset's front end must keep them of the same order as for the same crop
    # where the silence is replaced by a -60 dB noise floor.
    cfg = tiny(dropout=0.0, attention_dropout=0.0, feature_dropout=0.0, layerdrop=0.0)
    silent = torch.stack([_speech_like(2.0, seed) for seed in range(3)])
    floor = 1e-3 * torch.randn(silent.shape, generator=torch.Generator().manual_seed(2))
    noisy = torch.where(silent == 0, floor, silent)
    with_silence = _first_step_grad_norm(cfg, silent)
    with_floor = _first_step_grad_norm(cfg, noisy)
    assert math.isfinite(with_silence)
    assert with_silence < 10 * with_floor, (with_silence, with_floor)
    assert with_silence < 1e3


def _group_norm_per_row(norm, x, lengths):
    """What each utterance gets alone: nn.GroupNorm over its valid frames, zeros after."""
    rows = []
    for row, length in zip(x, lengths.tolist()):
        out = torch.zeros_like(row)
        if length:
            out[:, :length] = torch.nn.functional.group_norm(row[None, :, :length], norm.num_groups, norm.weight,
                                                             norm.bias, norm.eps)[0]
        rows.append(out)
    return torch.stack(rows)


def _random_group_norm(channels):
    """A float64 MaskedGroupNorm with random affine parameters (seeded)."""
    from speechssl.models.feature_extractor import MaskedGroupNorm

    torch.manual_seed(0)
    norm = MaskedGroupNorm(channels, channels).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1.0, 1.0)
    return norm


def test_masked_group_norm_gradients_match_per_utterance_group_norm():
    # The hand-written backward against autograd through nn.GroupNorm run on each row alone,
    # with a large channel mean (the case the two-pass variance is for) and an empty row.
    from speechssl.models.feature_extractor import _MaskedGroupNormFunction

    norm = _random_group_norm(6)
    x = torch.randn(4, 6, 40, dtype=torch.double) * 3 + 50
    lengths = torch.tensor([40, 23, 5, 0])
    valid = (torch.arange(40)[None, :] < lengths[:, None]).double()

    def fused(inputs, weight, bias):
        return _MaskedGroupNormFunction.apply(inputs, valid, weight, bias, norm.eps, None)

    assert torch.autograd.gradcheck(fused, (x.clone().requires_grad_(), norm.weight, norm.bias))
    grad_out = torch.randn_like(x)
    results = []
    for run in (lambda inp: fused(inp, norm.weight, norm.bias), lambda inp: _group_norm_per_row(norm, inp, lengths)):
        norm.zero_grad()
        inputs = x.clone().requires_grad_()
        out = run(inputs)
        out.backward(grad_out)
        results.append((out, inputs.grad, norm.weight.grad.clone(), norm.bias.grad.clone()))
    for ours, reference in zip(*results):
        torch.testing.assert_close(ours, reference)
    assert (results[0][1][1, :, 23:] == 0).all() and (results[0][0][3] == 0).all()


def test_masked_group_norm_keeps_the_parameter_dtype():
    from speechssl.models.feature_extractor import MaskedGroupNorm

    norm = MaskedGroupNorm(4, 4).to(torch.bfloat16)
    x = torch.randn(2, 4, 30, dtype=torch.bfloat16, requires_grad=True)
    norm(x, torch.tensor([30, 12])).float().sum().backward()
    assert norm.weight.grad.dtype == torch.bfloat16 and x.grad.dtype == torch.bfloat16


# ---------------------------------------------------------------- skipping the padding


def _outputs_and_grads(model, waves, lengths, skip_padding):
    model.feature_extractor.skip_padding = skip_padding
    model.encoder.skip_padding = skip_padding
    model.zero_grad()
    out = model(waves, lengths)
    valid = ~out.padding_mask
    loss = sum((state[valid] * (i + 1)).square().mean() for i, state in enumerate(out.layer_states))
    (loss + out.features[valid].sum()).backward()
    states = [state[valid] for state in out.layer_states] + [out.cnn_features[valid]]
    return out, states, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("style, conv_norm", [("post_ln", "group_norm"), ("pre_ln", "group_norm"), ("post_ln", "layer_norm")])
def test_skipping_padding_matches_the_padded_computation(style, conv_norm):
    # Packed CNN row + Transformer on valid frames only: same valid outputs and same
    # gradients as the padded batch, including a row too short for one frame and an empty one.
    torch.manual_seed(0)
    model = build_encoder(tiny(style=style, conv_norm=conv_norm, dropout=0.0, attention_dropout=0.0,
                               layerdrop=0.0, feature_dropout=0.0)).double()
    lengths = torch.tensor([SR, 7001, 3200, 300, 0])
    waves = torch.randn(5, SR, dtype=torch.double) * (torch.arange(SR)[None] < lengths[:, None])
    packed, packed_states, packed_grads = _outputs_and_grads(model, waves, lengths, True)
    padded, padded_states, padded_grads = _outputs_and_grads(model, waves, lengths, False)
    assert packed.frame_lengths.tolist() == padded.frame_lengths.tolist() == [49, 21, 9, 0, 0]
    assert [s.shape for s in packed.layer_states] == [s.shape for s in padded.layer_states]
    for ours, reference in zip(packed_states, padded_states):
        torch.testing.assert_close(ours, reference)
    assert packed_grads.keys() == padded_grads.keys() and len(packed_grads) > 10
    for name in padded_grads:
        torch.testing.assert_close(packed_grads[name], padded_grads[name], msg=name)
    # Padding comes out as zeros in the packed layout.
    assert all((state[packed.padding_mask] == 0).all() for state in packed.layer_states)


def test_packing_is_skipped_when_it_saves_nothing_or_cannot_be_exact():
    from speechssl.models.packing import pack_waveforms

    waves = torch.randn(3, 4000)
    assert pack_waveforms(waves, [4000, 4000, 4000], 320) is None  # nothing to skip
    row, starts = pack_waveforms(waves, [4000, 100, 2000], 320)
    assert starts == [0, 4160, 4480] and row.shape == (1, 1, 6720)  # each start a multiple of 320
    torch.testing.assert_close(row[0, 0, 4160:4260], waves[1, :100])
    assert (row[0, 0, 4260:4480] == 0).all()
    # Short rows: the row is never shorter than the padded width, which the CNN accepts.
    row, _ = pack_waveforms(waves, [10, 10, 10], 320)
    assert row.shape == (1, 1, 4000)
    # Convolutions with padding read across utterance boundaries: no packing there.
    assert not FeatureExtractor(SEED004_CONV).stride_aligned
    assert FeatureExtractor(WAV2VEC2_CONV).stride_aligned


def test_frame_packing_round_trip():
    from speechssl.models.packing import FramePacking

    padding = torch.tensor([[False, False, True], [True, True, True], [False, True, True]])
    packing = FramePacking.from_padding_mask(padding)
    x = torch.arange(18.0).view(3, 3, 2)
    packed = packing.pack(x)
    assert packed.tolist() == [[0.0, 1.0], [2.0, 3.0], [12.0, 13.0]]
    back = packing.unpack(packed)
    assert (back[~padding] == x[~padding]).all() and (back[padding] == 0).all()


def test_masked_group_norm_on_a_packed_row_matches_per_utterance_group_norm():
    from speechssl.models.feature_extractor import _MaskedGroupNormFunction

    norm = _random_group_norm(3)
    segments = ((0, 12), (14, 5), (25, 0), (25, 9))  # gaps at 12-13 and 19-24, an empty one, a tail
    x = torch.randn(1, 3, 40, dtype=torch.double) * 2 + 7

    def packed(inputs, weight, bias):
        return _MaskedGroupNormFunction.apply(inputs, None, weight, bias, norm.eps, segments)

    assert torch.autograd.gradcheck(packed, (x.clone().requires_grad_(), norm.weight, norm.bias))
    out = norm(x, None, segments)
    for start, frames in segments:
        if frames:
            expected = torch.nn.functional.group_norm(x[:, :, start:start + frames], 3, norm.weight, norm.bias, norm.eps)
            torch.testing.assert_close(out[:, :, start:start + frames], expected)
    outside = torch.ones(40, dtype=torch.bool)
    for start, frames in segments:
        outside[start:start + frames] = False
    assert (out[:, :, outside] == 0).all()
