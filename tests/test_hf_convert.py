"""Export to / import from HF transformers wav2vec 2.0 checkpoints (tiny models, CPU, offline)."""

import json
import re
from pathlib import Path

import pytest
import torch

from speechssl.errors import ConfigError, SpeechSSLError
from speechssl.models import EncoderConfig, SpeechEncoder, conv_stack
from speechssl.models.hf import (
    encoder_config_from_hf,
    export_hf,
    hf_config_from,
    import_hf,
    import_hf_pretraining,
    objective_config_from_hf,
)
from speechssl.models.objectives import ContrastiveConfig, Wav2Vec2Pretraining

transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file, save_file  # noqa: E402

HEAD_KEYS = {
    "quantizer.weight_proj.weight",
    "quantizer.weight_proj.bias",
    "quantizer.codevectors",
    "project_q.weight",
    "project_q.bias",
    "project_hid.weight",
    "project_hid.bias",
}

from hf_helpers import TOL, assert_states_match, padded_batch, randomized  # noqa: E402


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    torch.set_num_threads(1)


def small(**overrides) -> EncoderConfig:
    # The tiny preset, narrowed; an even positional kernel exercises HF's SamePad trim.
    # layer_norm front end: HF's GroupNorm pools over padding, so padded-batch equality
    # needs the per-frame norm (group_norm is checked on single utterances).
    fields = dict(
        layers=2, conv_layers=conv_stack(32), hidden=64, heads=4, ffn=128, pos_conv_kernel=16, pos_conv_groups=4,
        conv_norm="layer_norm",
    )
    fields.update(overrides)
    return EncoderConfig.preset("tiny", **fields)


def small_objective(**overrides) -> ContrastiveConfig:
    return ContrastiveConfig(codebook_groups=2, codebook_entries=8, codevector_dim=16, final_dim=16, **overrides)






def hf_load(cls_name: str, path: Path):
    cls = getattr(transformers, cls_name)
    model, info = cls.from_pretrained(path, output_loading_info=True, local_files_only=True)
    return model.eval(), info




# ---------------------------------------------------------------- configs


def test_config_maps_every_field_and_round_trips():
    enc = small(style="pre_ln", conv_bias=True, feature_grad_mult=0.1, layerdrop=0.2, activation_dropout=0.05)
    obj = small_objective(mask_prob=0.5, mask_length=5, min_masks=1, num_negatives=7, logit_temp=0.2,
                          diversity_weight=0.3, target_dropout=0.0, gumbel_temp_max=1.5, penalty_weight=1.0)
    hf = hf_config_from(enc, obj, do_normalize=True)
    assert (hf.conv_dim, hf.conv_kernel, hf.conv_stride) == ([32] * 7, [10, 3, 3, 3, 3, 2, 2], [5, 2, 2, 2, 2, 2, 2])
    assert hf.conv_bias and hf.feat_extract_norm == "layer" and hf.do_stable_layer_norm
    assert hf.feat_extract_activation == hf.hidden_act == "gelu"
    assert (hf.hidden_size, hf.num_hidden_layers, hf.num_attention_heads, hf.intermediate_size) == (64, 2, 4, 128)
    assert (hf.num_conv_pos_embeddings, hf.num_conv_pos_embedding_groups) == (16, 4)
    assert (hf.feat_proj_dropout, hf.hidden_dropout, hf.attention_dropout) == (0.1, 0.1, 0.1)
    assert (hf.activation_dropout, hf.layerdrop) == (0.05, 0.2)
    assert (hf.num_codevector_groups, hf.num_codevectors_per_group, hf.codevector_dim) == (2, 8, 16)
    assert (hf.proj_codevector_dim, hf.num_negatives, hf.contrastive_logits_temperature) == (16, 7, 0.2)
    assert (hf.diversity_loss_weight, hf.feat_quantizer_dropout) == (0.3, 0.0)
    assert (hf.mask_time_prob, hf.mask_time_length, hf.mask_time_min_masks) == (0.5, 5, 1)
    assert encoder_config_from_hf(hf) == enc
    assert objective_config_from_hf(hf) == obj
    # ... also from the plain config.json data, and group norm maps to "group".
    assert encoder_config_from_hf(json.loads(hf.to_json_string())) == enc
    assert hf_config_from(EncoderConfig.preset("base")).feat_extract_norm == "group"
    assert encoder_config_from_hf(hf_config_from(EncoderConfig.preset("base"))) == EncoderConfig.preset("base")


def test_padded_conv_cannot_be_exported(tmp_path):
    cfg = small(conv_layers=conv_stack(32, padded=True))
    with pytest.raises(ConfigError, match="padding"):
        hf_config_from(cfg)
    with pytest.raises(ConfigError, match="padding"):
        export_hf(SpeechEncoder(cfg), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "wav2vec2-conformer", "position_embeddings_type": "relative"}, "wav2vec2-conformer"),
        ({"add_adapter": True}, "add_adapter"),
        ({"adapter_attn_dim": 16}, "adapter_attn_dim"),
        ({"hidden_act": "relu"}, "hidden_act"),
        ({"feat_extract_activation": "gelu_new"}, "feat_extract_activation"),
        ({"layer_norm_eps": 1e-6}, "layer_norm_eps"),
    ],
)
def test_unsupported_hf_variants_are_refused(change, message):
    data = json.loads(hf_config_from(small()).to_json_string())
    data.update(change)
    with pytest.raises(ConfigError, match=message):
        encoder_config_from_hf(data)


# ---------------------------------------------------------------- export -> transformers


@pytest.mark.parametrize(
    "overrides",
    [{}, {"style": "pre_ln", "conv_bias": True}],
    ids=["post_ln", "pre_ln"],
)
def test_export_matches_transformers_on_padded_batch(tmp_path, overrides):
    cfg = small(**overrides)
    assert cfg.conv_norm == "layer_norm"
    model = randomized(SpeechEncoder(cfg))
    out_dir = export_hf(model, tmp_path / "export")
    assert sorted(p.name for p in out_dir.iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    pre = json.loads((out_dir / "preprocessor_config.json").read_text())
    assert pre["feature_extractor_type"] == "Wav2Vec2FeatureExtractor"
    assert (pre["sampling_rate"], pre["feature_size"], pre["padding_value"]) == (16000, 1, 0.0)
    assert pre["return_attention_mask"] is True and pre["do_normalize"] is False

    hf, info = hf_load("Wav2Vec2Model", out_dir)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    waves, lengths, attention_mask = padded_batch()
    with torch.no_grad():
        ours = model(waves, lengths)
        ref = hf(waves, attention_mask=attention_mask, output_hidden_states=True)
        # Sanity: HF really masks the padding (its short row equals the row run alone).
        alone = hf(waves[1:, : lengths[1]], output_hidden_states=True)
    frames = int(ours.frame_lengths[1])
    assert frames < waves.shape[1] // 320
    torch.testing.assert_close(ref.last_hidden_state[1, :frames], alone.last_hidden_state[0], atol=TOL, rtol=0)
    assert_states_match(ours, ref, hf, pre_ln=cfg.style == "pre_ln")
    # (padded frames differ: transformers runs its CNN over the padding, ours skips it)
    valid = ~ours.padding_mask
    torch.testing.assert_close(ref.extract_features[valid], ours.features[valid], atol=TOL, rtol=0)


def test_group_norm_export_matches_transformers_single_utterance(tmp_path):
    # GroupNorm pools over time, so padding changes it (in HF as here): one utterance, no mask.
    cfg = small(conv_norm="group_norm")
    model = randomized(SpeechEncoder(cfg), seed=3)
    out_dir = export_hf(model, tmp_path / "export")
    assert json.loads((out_dir / "preprocessor_config.json").read_text())["return_attention_mask"] is False
    hf, info = hf_load("Wav2Vec2Model", out_dir)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert hf.config.feat_extract_norm == "group"
    waves, _, _ = padded_batch((7000,))
    with torch.no_grad():
        ours = model(waves)
        ref = hf(waves, output_hidden_states=True)
    assert_states_match(ours, ref, hf, pre_ln=False)


def test_pretraining_export_loads_in_both_hf_classes_and_quantizes_alike(tmp_path):
    model = randomized(Wav2Vec2Pretraining(small(), small_objective()), seed=5)
    out_dir = export_hf(model, tmp_path / "export")
    assert set(load_file(str(out_dir / "model.safetensors"))) >= {"wav2vec2.masked_spec_embed"} | HEAD_KEYS

    pre, info = hf_load("Wav2Vec2ForPreTraining", out_dir)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    base, info = hf_load("Wav2Vec2Model", out_dir)
    # Like facebook/wav2vec2-base: the encoder loads fully, the pretraining heads are left over.
    assert not info["missing_keys"] and set(info["unexpected_keys"]) == HEAD_KEYS
    # encoder_only gives a file with exactly Wav2Vec2Model's keys.
    bare, info = hf_load("Wav2Vec2Model", export_hf(model, tmp_path / "bare", encoder_only=True))
    assert not info["missing_keys"] and not info["unexpected_keys"]
    torch.testing.assert_close(bare.masked_spec_embed, model.wav2vec2.mask_embedding, atol=0, rtol=0)

    waves, lengths, attention_mask = padded_batch()
    with torch.no_grad():
        ours = model.wav2vec2(waves, lengths)
        valid = ~ours.padding_mask
        features = ours.features[valid]  # [N, conv_dim]
        quantized, codes, _ = model.quantizer(features, temperature=1.0)
        hf_quantized, _ = pre.quantizer(features[None])
        ref = pre(waves, attention_mask=attention_mask)
    groups, entries = model.cfg.codebook_groups, model.cfg.codebook_entries
    # HF's chosen codeword per group, read back from its output vectors.
    book = pre.quantizer.codevectors.detach().view(groups, entries, -1)
    hf_vectors = hf_quantized[0].view(-1, groups, book.shape[-1])
    hf_codes = torch.stack([torch.cdist(hf_vectors[:, g], book[g]).argmin(dim=-1) for g in range(groups)], dim=1)
    assert torch.equal(hf_codes, codes)
    assert len(set(codes[:, 0].tolist())) > 1  # not a degenerate single-codeword case
    torch.testing.assert_close(hf_quantized[0], quantized, atol=TOL, rtol=0)
    torch.testing.assert_close(ref.projected_quantized_states[valid], model.project_q(quantized), atol=TOL, rtol=0)
    torch.testing.assert_close(
        ref.projected_states[valid], model.project_hid(ours.last_hidden_state[valid]), atol=TOL, rtol=0
    )


def test_export_refuses_non_empty_dir_unless_overwrite(tmp_path):
    model = SpeechEncoder(small())
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        export_hf(model, out)
    assert (out / "keep.txt").exists()
    export_hf(model, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp dirs left behind
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export_hf(model, empty) == empty and (empty / "config.json").is_file()


# ---------------------------------------------------------------- import


def test_import_round_trip_is_exact(tmp_path):
    model = randomized(Wav2Vec2Pretraining(small(style="pre_ln"), small_objective(min_masks=1)), seed=7)
    out_dir = export_hf(model, tmp_path / "export", do_normalize=True)
    back = import_hf_pretraining(out_dir)
    assert back.cfg == model.cfg and back.wav2vec2.cfg == model.wav2vec2.cfg
    ours, theirs = model.state_dict(), back.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key

    encoder = import_hf(out_dir)  # the encoder alone, from the same (prefixed) layout
    assert not encoder.training
    waves, lengths, _ = padded_batch()
    with torch.no_grad():
        a, b, c = model.wav2vec2(waves, lengths), back.wav2vec2(waves, lengths), encoder(waves, lengths)
    for x, y, z in zip(a.layer_states, b.layer_states, c.layer_states):
        assert torch.equal(x, y) and torch.equal(x, z)


def test_import_reads_legacy_names_and_pytorch_bin(tmp_path):
    model = randomized(SpeechEncoder(small()), seed=9)
    out_dir = export_hf(model, tmp_path / "export")
    state = load_file(str(out_dir / "model.safetensors"))
    assert "encoder.pos_conv_embed.conv.parametrizations.weight.original0" in state  # transformers' own names
    renames = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
    legacy = {}
    for key, value in state.items():
        for new, old in renames.items():
            key = key.replace(new, old)
        legacy[key] = value
    (out_dir / "model.safetensors").unlink()
    torch.save(legacy, out_dir / "pytorch_model.bin")
    encoder = import_hf(out_dir)
    for key, value in model.state_dict().items():
        assert torch.equal(encoder.state_dict()[key], value), key
    with pytest.raises(SpeechSSLError, match="no quantizer weights"):
        import_hf_pretraining(out_dir)


def test_import_of_a_transformers_made_checkpoint(tmp_path):
    hf_cfg = hf_config_from(small(style="pre_ln", conv_bias=True))
    torch.manual_seed(0)
    hf = transformers.Wav2Vec2ForCTC(hf_cfg).eval()  # a head model: encoder under wav2vec2., plus lm_head
    hf.save_pretrained(tmp_path / "ctc")
    encoder = import_hf(tmp_path / "ctc")
    waves, lengths, attention_mask = padded_batch()
    with torch.no_grad():
        ours = encoder(waves, lengths)
        ref = hf.wav2vec2(waves, attention_mask=attention_mask, output_hidden_states=True)
    assert_states_match(ours, ref, hf.wav2vec2, pre_ln=True)


def test_import_errors_name_the_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(SpeechSSLError, match=re.escape(str(missing))):
        import_hf(missing)
    with pytest.raises(SpeechSSLError, match="config.json"):
        import_hf(tmp_path)
    (tmp_path / "config.json").write_text(hf_config_from(small()).to_json_string())
    with pytest.raises(SpeechSSLError, match="no weights found"):
        import_hf(tmp_path)
    # Weights that do not fit the config are refused, naming what is wrong.
    exported = load_file(str(export_hf(SpeechEncoder(small()), tmp_path / "e") / "model.safetensors"))
    state = {k: v for k, v in exported.items() if not k.startswith("encoder.layers.1.")}
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(SpeechSSLError, match="missing"):
        import_hf(tmp_path)
