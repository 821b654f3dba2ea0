"""Export to / import from HF transformers HuBERT checkpoints (tiny models, CPU, offline)."""

import json
from pathlib import Path

import pytest
import torch

from conftest import TINY_W2V2

from speechssl.cli import main
from speechssl.config import load_config, to_dict
from speechssl.errors import ConfigError, SpeechSSLError
from speechssl.models import EncoderConfig, SpeechEncoder, conv_stack
from speechssl.models.hf import (
    encoder_config_from_hf,
    encoder_to_hubert,
    export_hubert,
    hubert_config_from,
    hubert_to_encoder,
    import_hf,
    import_hf_pretraining,
    objective_config_from_hf,
)
from speechssl.models.objectives import build_objective
from speechssl.pretrain import PretrainConfig
from speechssl.pretrain.checkpoint import FORMAT, save_atomic
from speechssl.upstream import build_upstream

transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file  # noqa: E402


from hf_helpers import TOL, assert_states_match, padded_batch, randomized  # noqa: E402


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    torch.set_num_threads(1)


def small(**overrides) -> EncoderConfig:
    # Narrow, two layers; an even positional kernel exercises HF's SamePad trim.
    fields = dict(
        conv_layers=conv_stack(32), conv_norm="layer_norm", hidden=64, layers=2, heads=4, ffn=128,
        pos_conv_kernel=16, pos_conv_groups=4,
    )
    fields.update(overrides)
    return EncoderConfig(**fields)






def load_hubert(path: Path):
    model, info = transformers.HubertModel.from_pretrained(path, output_loading_info=True, local_files_only=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return model.eval()




# ---------------------------------------------------------------- configs


def test_hubert_config_sets_hubert_switches_and_round_trips():
    enc = small(style="pre_ln", conv_bias=True, feature_grad_mult=0.1, layerdrop=0.2, activation_dropout=0.05,
                feature_dropout=0.05)
    hf = hubert_config_from(enc, do_normalize=True)
    assert isinstance(hf, transformers.HubertConfig) and hf.model_type == "hubert"
    assert hf.feat_proj_layer_norm is True and hf.conv_pos_batch_norm is False
    assert hf.do_stable_layer_norm and hf.feat_extract_norm == "layer" and hf.conv_bias
    assert (hf.conv_kernel, hf.conv_stride) == ([10, 3, 3, 3, 3, 2, 2], [5, 2, 2, 2, 2, 2, 2])
    assert (hf.hidden_size, hf.num_hidden_layers, hf.num_attention_heads, hf.intermediate_size) == (64, 2, 4, 128)
    assert (hf.feat_proj_dropout, hf.layerdrop, hf.activation_dropout) == (0.05, 0.2, 0.05)
    assert encoder_config_from_hf(hf) == enc
    assert encoder_config_from_hf(json.loads(hf.to_json_string())) == enc
    group = small(conv_norm="group_norm", conv_layers=conv_stack(32, frame_ms=40))
    assert hubert_config_from(group).feat_extract_norm == "group"
    assert encoder_config_from_hf(hubert_config_from(group)) == group
    with pytest.raises(ConfigError, match="no wav2vec 2.0 quantizer"):
        objective_config_from_hf(hf)
    with pytest.raises(ConfigError, match="padding"):
        hubert_config_from(small(conv_layers=conv_stack(32, padded=True)))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"feat_proj_layer_norm": False}, "feat_proj_layer_norm"),
        ({"conv_pos_batch_norm": True}, "conv_pos_batch_norm"),
        ({"hidden_act": "relu"}, "hidden_act"),
        ({"model_type": "wavlm"}, "'wavlm' is not supported"),
    ],
)
def test_unsupported_hubert_variants_are_refused(change, message):
    data = json.loads(hubert_config_from(small()).to_json_string())
    data.update(change)
    with pytest.raises(ConfigError, match=message):
        encoder_config_from_hf(data)


# ---------------------------------------------------------------- export -> transformers.HubertModel


@pytest.mark.parametrize(
    "overrides",
    [{}, {"conv_layers": conv_stack(32, frame_ms=40)}, {"style": "pre_ln", "conv_bias": True}],
    ids=["post_ln", "post_ln_40ms", "pre_ln"],
)
def test_layer_norm_export_matches_hubert_on_padded_batch(tmp_path, overrides):
    model = randomized(SpeechEncoder(small(**overrides)))
    out_dir = export_hubert(model, tmp_path / "export")
    assert sorted(p.name for p in out_dir.iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    config = json.loads((out_dir / "config.json").read_text())
    assert config["model_type"] == "hubert" and config["architectures"] == ["HubertModel"]
    pre = json.loads((out_dir / "preprocessor_config.json").read_text())
    assert pre["feature_extractor_type"] == "Wav2Vec2FeatureExtractor" and pre["return_attention_mask"] is True
    assert "masked_spec_embed" in load_file(str(out_dir / "model.safetensors"))

    hf = load_hubert(out_dir)
    waves, lengths, attention_mask = padded_batch()
    with torch.no_grad():
        ours = model(waves, lengths)
        ref = hf(waves, attention_mask=attention_mask, output_hidden_states=True)
        alone = hf(waves[1:, : lengths[1]], output_hidden_states=True)
    frames = int(ours.frame_lengths[1])
    assert 0 < frames < ours.padding_mask.shape[1]
    # HF really masks the padding: its short row equals that utterance run alone.
    torch.testing.assert_close(ref.last_hidden_state[1, :frames], alone.last_hidden_state[0], atol=TOL, rtol=0)
    assert_states_match(ours, ref, hf, pre_ln=model.cfg.style == "pre_ln")


def test_group_norm_export_matches_hubert(tmp_path):
    # HF's GroupNorm pools over the padding too (its convention for such models is zero
    # padding and no mask), so compare unpadded batches, and our padding-aware batch
    # against HF on each utterance alone.
    model = randomized(SpeechEncoder(small(conv_norm="group_norm")), seed=3)
    out_dir = export_hubert(model, tmp_path / "export")
    assert json.loads((out_dir / "preprocessor_config.json").read_text())["return_attention_mask"] is False
    hf = load_hubert(out_dir)
    assert hf.config.feat_extract_norm == "group"
    waves, _, _ = padded_batch((7000, 7000), seed=4)  # two different utterances, no padding
    with torch.no_grad():
        ours = model(waves)
        ref = hf(waves, output_hidden_states=True)
    assert_states_match(ours, ref, hf, pre_ln=False)

    waves, lengths, _ = padded_batch((8000, 5600), seed=6)
    with torch.no_grad():
        ours = model(waves, lengths)
        for i, n in enumerate(lengths.tolist()):
            alone = hf(waves[i : i + 1, :n], output_hidden_states=True)
            frames = int(ours.frame_lengths[i])
            assert alone.hidden_states[0].shape[1] == frames
            for k, (ref_k, got_k) in enumerate(zip(alone.hidden_states, ours.layer_states, strict=True)):
                diff = (ref_k[0] - got_k[i, :frames]).abs().max().item()
                assert diff <= TOL, f"utterance {i}, hidden state {k}: max abs diff {diff}"


@pytest.mark.parametrize("conv_norm", ["layer_norm", "group_norm"])
def test_in_memory_conversion_both_ways(conv_norm):
    model = randomized(SpeechEncoder(small(conv_norm=conv_norm)), seed=5)
    hf = encoder_to_hubert(model)
    assert isinstance(hf, transformers.HubertModel) and not hf.training
    torch.testing.assert_close(hf.masked_spec_embed, model.mask_embedding, atol=0, rtol=0)
    waves, lengths, attention_mask = padded_batch((6000,))
    with torch.no_grad():
        assert_states_match(model(waves), hf(waves, output_hidden_states=True), hf, pre_ln=False)
    back = hubert_to_encoder(hf)
    assert back.cfg == model.cfg and not back.training
    for key, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    with pytest.raises(TypeError, match="SpeechEncoder"):
        encoder_to_hubert(hf)
    with pytest.raises(TypeError, match="HubertModel"):
        hubert_to_encoder(model)


# ---------------------------------------------------------------- import


def test_import_round_trip_and_transformers_made_head_model(tmp_path):
    model = randomized(SpeechEncoder(small(style="pre_ln")), seed=7)
    out_dir = export_hubert(model, tmp_path / "export", do_normalize=True)
    assert json.loads((out_dir / "preprocessor_config.json").read_text())["do_normalize"] is True
    back = import_hf(out_dir)
    assert back.cfg == model.cfg
    for key, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    with pytest.raises(SpeechSSLError, match="no quantizer weights"):
        import_hf_pretraining(out_dir)

    # A head model saved by transformers itself: the encoder under hubert., plus lm_head.
    torch.manual_seed(0)
    ctc = transformers.HubertForCTC(hubert_config_from(small())).eval()
    ctc.save_pretrained(tmp_path / "ctc")
    assert any(k.startswith("hubert.") for k in load_file(str(tmp_path / "ctc" / "model.safetensors")))
    encoder = import_hf(tmp_path / "ctc")
    waves, lengths, attention_mask = padded_batch()
    with torch.no_grad():
        ours = encoder(waves, lengths)
        ref = ctc.hubert(waves, attention_mask=attention_mask, output_hidden_states=True)
    assert_states_match(ours, ref, ctc.hubert, pre_ln=False)
    assert hubert_to_encoder(ctc).cfg == encoder.cfg  # a head model converts in memory too


# ---------------------------------------------------------------- hf: upstream and CLI


def save_checkpoint(path: Path, *overrides: str, seed=0) -> Path:
    """A checkpoint as the trainer writes it (the keys load_pretraining_model reads)."""
    cfg = load_config(PretrainConfig, None, [*TINY_W2V2, *overrides])
    torch.manual_seed(seed)
    model = randomized(build_objective(cfg.objective, cfg.encoder, cfg), seed=seed)
    return save_atomic({"format": FORMAT, "config": to_dict(cfg), "model": model.state_dict()}, path)


def test_cli_export_hubert_loads_through_the_hf_upstream_like_the_checkpoint(tmp_path, capsys, no_network):
    ckpt = save_checkpoint(tmp_path / "best.pt", "data.normalize_waveform=true")
    out = tmp_path / "hubert"
    assert main(["export-hf", str(ckpt), "--out", str(out), "--format", "hubert"]) == 0
    assert "HubertModel" in capsys.readouterr().out
    load_hubert(out)
    assert json.loads((out / "preprocessor_config.json").read_text())["do_normalize"] is True

    exported = build_upstream(f"hf:{out}")
    native = build_upstream(f"ckpt:{ckpt}")
    assert type(exported.model).__name__ == "HubertModel"
    assert exported.do_normalize and exported.use_attention_mask
    assert (exported.num_layers, exported.feature_dim, exported.frame_rate) == (
        native.num_layers, native.feature_dim, native.frame_rate)
    waves, lengths, _ = padded_batch((16000, 7001))
    with torch.no_grad():
        a, b = exported(waves, lengths), native(waves, lengths)
    assert a.lengths.tolist() == b.lengths.tolist()
    for i, (x, y) in enumerate(zip(a.layers, b.layers, strict=True)):
        torch.testing.assert_close(x, y, atol=TOL, rtol=0, msg=f"layer {i}")
    assert exported.fingerprint() != native.fingerprint()

    # auto (the default) keeps a wav2vec 2.0 checkpoint in the wav2vec 2.0 layout ...
    w2v = tmp_path / "w2v"
    assert main(["export-hf", str(ckpt), "--out", str(w2v)]) == 0
    assert json.loads((w2v / "config.json").read_text())["architectures"] == ["Wav2Vec2ForPreTraining"]


def test_cli_export_of_a_hubert_run(tmp_path, capsys, no_network):
    from speechssl.pretrain.checkpoint import load_pretraining_model

    # The target sets need not exist: the config carries the label counts.
    ckpt = save_checkpoint(tmp_path / "best.pt", "objective=hubert", f"hubert.targets=[{tmp_path / 'gone'}]",
                           "hubert.num_classes=[8]", "hubert.final_dim=16", seed=3)
    model, _ = load_pretraining_model(ckpt)
    auto = tmp_path / "auto"
    assert main(["export-hf", str(ckpt), "--out", str(auto)]) == 0  # auto: a HuBERT run exports as HuBERT
    assert "HubertModel" in capsys.readouterr().out
    hf = load_hubert(auto)
    waves, lengths, attention_mask = padded_batch()
    with torch.no_grad():
        ours = model.encoder(waves, lengths)
        ref = hf(waves, attention_mask=attention_mask, output_hidden_states=True)
    assert_states_match(ours, ref, hf, pre_ln=False)
    torch.testing.assert_close(hf.masked_spec_embed, model.encoder.mask_embedding, atol=0, rtol=0)
    # ... and --format wav2vec2 gives its encoder as a Wav2Vec2Model
    w2v = tmp_path / "w2v"
    assert main(["export-hf", str(ckpt), "--out", str(w2v), "--format", "wav2vec2"]) == 0
    assert json.loads((w2v / "config.json").read_text())["architectures"] == ["Wav2Vec2Model"]
    for key, value in import_hf(w2v).state_dict().items():
        assert torch.equal(value, model.encoder.state_dict()[key]), key
