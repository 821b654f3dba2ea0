"""Upstreams: the registry, the baselines, GE2E, HF directories and our checkpoints (tiny, CPU, offline)."""

import importlib.metadata
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import TINY_W2V2, assert_upstream_contract, noise_batch

from speechssl.config import load_config, to_dict
from speechssl.errors import ConfigError, SpeechSSLError
from speechssl.models.objectives import Wav2Vec2Pretraining
from speechssl.pretrain import PretrainConfig
from speechssl.pretrain.checkpoint import FORMAT, save_atomic, step_path
from speechssl.upstream import Upstream, build_upstream, known_upstreams, register_upstream
from speechssl.upstream.baseline import add_deltas, delta_scales, num_frames

TOL = 1e-5

# lhotse's mel-scale helpers under NumPy 2 (the reference modules built in these tests)
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning"),
    pytest.mark.usefixtures("one_thread"),
]


def has_resemblyzer() -> bool:
    try:
        importlib.metadata.distribution("resemblyzer")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_ge2e = pytest.mark.skipif(not has_resemblyzer(), reason="resemblyzer wheel (GE2E weights) not installed")


# ---------------------------------------------------------------- tiny models on disk

TINY_HF = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
    conv_dim=(32, 32), conv_kernel=(10, 3), conv_stride=(5, 2), conv_bias=False,
    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    hidden_dropout=0.0, attention_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0,
)


def save_hf(directory: Path, cls_name: str, *, feat_extract_norm="layer", extractor: dict | None = None,
            seed=0, **overrides) -> Path:
    import transformers

    config_cls = getattr(transformers, cls_name.replace("Model", "Config"))
    config = config_cls(**{**TINY_HF, "feat_extract_norm": feat_extract_norm, **overrides})
    torch.manual_seed(seed)
    model = getattr(transformers, cls_name)(config).eval()
    with torch.no_grad():  # non-trivial norm weights/biases, so a skipped norm would show
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(directory)
    if extractor is not None:
        transformers.Wav2Vec2FeatureExtractor(**extractor).save_pretrained(directory)
    return directory


LAYER_NORM_EXTRACTOR = dict(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                            return_attention_mask=True)


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {
        "wav2vec2": save_hf(root / "w2v", "Wav2Vec2Model", extractor=LAYER_NORM_EXTRACTOR),
        "wavlm": save_hf(root / "wavlm", "WavLMModel", extractor=LAYER_NORM_EXTRACTOR, num_buckets=8,
                         max_bucket_distance=40),
        "stable": save_hf(root / "stable", "Wav2Vec2Model", extractor=LAYER_NORM_EXTRACTOR,
                          do_stable_layer_norm=True),
        # wav2vec2-base style: GroupNorm CNN and no preprocessor config at all
        "group": save_hf(root / "group", "Wav2Vec2Model", feat_extract_norm="group"),
    }


def save_checkpoint(path: Path, *overrides: str, seed=0) -> Path:
    """A checkpoint as the trainer writes it (only the keys load_pretraining_model reads)."""
    cfg = load_config(PretrainConfig, None, [*TINY_W2V2, *overrides])
    torch.manual_seed(seed)
    model = Wav2Vec2Pretraining(cfg.encoder, cfg.wav2vec2)
    return save_atomic({"format": FORMAT, "config": to_dict(cfg), "model": model.state_dict()}, path)


@pytest.fixture(scope="module")
def ckpt_file(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt")


# ---------------------------------------------------------------- registry


def test_known_upstreams_lists_every_spec_form():
    assert known_upstreams() == ["mfcc", "fbank", "ge2e", "hf:<dir or hub id>", "ckpt:<path>", "tuned:<bench run dir>",
                                  "fuse:<mode>:<spec>+<spec>"]


def test_unknown_name_lists_the_known_ones_with_a_suggestion():
    with pytest.raises(ConfigError) as err:
        build_upstream("mfc")
    message = str(err.value)
    assert "unknown upstream 'mfc'" in message
    assert "known: mfcc, fbank, ge2e, hf:<dir or hub id>, ckpt:<path>" in message
    assert "did you mean 'mfcc'" in message
    with pytest.raises(ConfigError, match="did you mean 'hf:<dir or hub id>'"):
        build_upstream("hff:/x")
    with pytest.raises(ConfigError, match="known:"):
        build_upstream("wav2vec2")


def test_malformed_specs_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"needs an argument: hf:<dir or hub id>"):
        build_upstream("hf")
    with pytest.raises(ConfigError, match=r"needs an argument: ckpt:<path>"):
        build_upstream("ckpt:  ")
    with pytest.raises(ConfigError, match="takes no argument"):
        build_upstream("mfcc:13")
    with pytest.raises(ConfigError, match="non-empty"):
        build_upstream("")
    # A bare path is not a spec, but the message says how to make it one.
    with pytest.raises(ConfigError, match="prefix it with ckpt:"):
        build_upstream(str(tmp_path))


def test_missing_paths_name_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    for spec in (f"hf:{missing}", f"ckpt:{missing}"):
        with pytest.raises(ConfigError, match=re.escape(str(missing))):
            build_upstream(spec)
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path} is not an HF model directory (no config.json)")):
        build_upstream(f"hf:{tmp_path}")
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path} contains no best.pt or step_*.pt")):
        build_upstream(f"ckpt:{tmp_path}")


def test_register_upstream_adds_a_builder():
    class Constant(Upstream):
        frame_rate, num_layers, feature_dim = 100.0, 1, 2

        def forward(self, waveforms, lengths):
            raise NotImplementedError

        def fingerprint(self):
            return "constant"

    register_upstream("constant-test")(Constant)
    try:
        built = build_upstream("constant-test")
        assert isinstance(built, Constant) and built.name == "constant-test" and not built.training
        assert "constant-test" in known_upstreams()
    finally:
        from speechssl import upstream

        del upstream._REGISTRY["constant-test"]


def test_importing_the_registry_does_not_import_heavy_backends():
    code = ("import sys, speechssl.upstream; heavy = {'transformers', 'lhotse'} & set(sys.modules); "
            "assert not heavy, sorted(heavy)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---------------------------------------------------------------- every upstream: shapes and padding invariance

UPSTREAM_KINDS = ["mfcc", "fbank", "ge2e", "hf-wav2vec2", "hf-wavlm", "ckpt"]


def make_upstream(kind: str, hf_dirs, ckpt_file) -> Upstream:
    if kind == "ge2e" and not has_resemblyzer():
        pytest.skip("resemblyzer wheel (GE2E weights) not installed")
    spec = {"hf-wav2vec2": f"hf:{hf_dirs['wav2vec2']}", "hf-wavlm": f"hf:{hf_dirs['wavlm']}",
            "ckpt": f"ckpt:{ckpt_file}"}.get(kind, kind)
    return build_upstream(spec)


@pytest.mark.parametrize("kind", UPSTREAM_KINDS)
def test_output_contract_and_padding_invariance(kind, hf_dirs, ckpt_file, no_network):
    upstream = make_upstream(kind, hf_dirs, ckpt_file)
    assert_upstream_contract(upstream, kind, TOL)


# ---------------------------------------------------------------- baselines


def test_baseline_frame_counts_match_lhotse():
    from lhotse.features.kaldi.layers import Wav2LogFilterBank

    reference = Wav2LogFilterBank()
    for n in (400, 479, 480, 559, 560, 7001, 16000, 16079, 16080):
        assert reference(torch.randn(1, n)).shape[1] == int(num_frames(torch.tensor([n]))) == (n + 80) // 160
    assert num_frames(torch.tensor([0, 10])).tolist() == [1, 1]


def test_fbank_equals_lhotse_on_each_utterance_alone_then_cmn():
    from lhotse.features.kaldi.layers import Wav2LogFilterBank

    fbank = build_upstream("fbank", device="cpu")
    assert all(b.device.type == "cpu" for b in fbank.buffers()) and not list(fbank.parameters())
    assert (fbank.frame_rate, fbank.num_layers, fbank.feature_dim, fbank.num_params) == (100.0, 1, 80, 0)
    waves, lengths = noise_batch((16000, 7001))
    out = fbank(waves, lengths)
    for i, n in enumerate(lengths.tolist()):
        ref = Wav2LogFilterBank()(waves[i : i + 1, :n])[0]
        ref = ref - ref.mean(dim=0)
        torch.testing.assert_close(out.layers[0][i, : ref.shape[0]], ref, atol=1e-4, rtol=1e-5)
        assert out.layers[0][i, : out.lengths[i]].mean(dim=0).abs().max() < 1e-4


def test_mfcc_has_static_delta_and_delta_delta_blocks():
    mfcc = build_upstream("mfcc")
    assert (mfcc.frame_rate, mfcc.num_layers, mfcc.feature_dim) == (100.0, 1, 39)
    waves, lengths = noise_batch((16000,))
    feats = mfcc(waves, lengths).layers[0][0]
    # statics are CMN'd; the delta filters sum to zero so the deltas are too, up to edge effects
    assert feats[:, :13].mean(dim=0).abs().max() < 1e-4
    t = 50  # an interior frame: delta = sum_j j (c[t+j] - c[t-j]) / 10
    static = feats[:, :13]
    delta = sum(j * (static[t + j] - static[t - j]) for j in (1, 2)) / 10
    torch.testing.assert_close(feats[t, 13:26], delta, atol=1e-4, rtol=1e-4)


def test_kaldi_delta_filters_and_edge_clamping():
    first, second = delta_scales()[1:]
    torch.testing.assert_close(first, torch.tensor([-2, -1, 0, 1, 2], dtype=torch.float64) / 10)
    torch.testing.assert_close(second, torch.tensor([4, 4, 1, -4, -10, -4, 1, 4, 4], dtype=torch.float64) / 100)
    # edges repeat the utterance's own first/last frame, never the padding after it
    feats = torch.arange(6, dtype=torch.float32).view(1, 6, 1).repeat(2, 1, 1)
    feats[1, 4:] = 100.0  # padding of the second utterance (length 4)
    out = add_deltas(feats, torch.tensor([6, 4]))
    assert out.shape == (2, 6, 3)
    # frame 3 of a 4-frame ramp: c[t+1], c[t+2] clamp to c[3] = 3 -> (1*(3-2) + 2*(3-1)) / 10
    assert out[1, 3, 1].item() == pytest.approx((1 * (3 - 2) + 2 * (3 - 1)) / 10)
    assert out[0, 3, 1].item() == pytest.approx(1.0)  # full ramp interior: slope 1


# ---------------------------------------------------------------- GE2E


def _slaney_mel(hz: float) -> float:
    # Slaney's Auditory Toolbox, written out independently of speechssl.upstream.ge2e
    return hz * 3 / 200 if hz < 1000 else 15 + math.log(hz / 1000) * 27 / math.log(6.4)


def _slaney_hz(mel: float) -> float:
    return mel * 200 / 3 if mel < 15 else 1000 * math.exp((mel - 15) * math.log(6.4) / 27)


def _reference_mel(wave: np.ndarray) -> np.ndarray:
    """librosa.feature.melspectrogram(sr=16000, n_fft=400, hop=160, n_mels=40), loop by loop."""
    n_fft, hop = 400, 160
    peaks = [_slaney_hz(m) for m in np.linspace(0, _slaney_mel(8000), 42)]
    bins = np.arange(n_fft // 2 + 1) * 16000 / n_fft
    filters = np.zeros((40, bins.size))
    for m in range(40):
        lo, mid, hi = peaks[m], peaks[m + 1], peaks[m + 2]
        for k, f in enumerate(bins):
            if lo <= f <= mid:
                filters[m, k] = (f - lo) / (mid - lo)
            elif mid < f <= hi:
                filters[m, k] = (hi - f) / (hi - mid)
        filters[m] *= 2 / (hi - lo)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    padded = np.concatenate([np.zeros(n_fft // 2), wave.astype(np.float64), np.zeros(n_fft // 2)])
    frames = 1 + len(wave) // hop
    power = np.stack([np.abs(np.fft.rfft(padded[i * hop : i * hop + n_fft] * window)) ** 2 for i in range(frames)])
    return power @ filters.T


def test_slaney_filterbank_properties():
    from speechssl.upstream.ge2e import hz_to_mel, mel_to_hz, slaney_mel_filterbank

    assert float(hz_to_mel(1000.0)) == pytest.approx(15.0)
    assert float(hz_to_mel(6400.0)) == pytest.approx(42.0)  # 27 mel per factor 6.4 above 1 kHz
    assert float(hz_to_mel(500.0)) == pytest.approx(7.5)  # linear below 1 kHz
    hz = np.array([0.0, 300.0, 999.0, 1000.0, 3000.0, 8000.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(hz)), hz, atol=1e-9)
    fb = slaney_mel_filterbank()
    assert fb.shape == (40, 201) and fb.dtype == np.float32 and (fb >= 0).all()
    # area normalisation: height 2 / (f_hi - f_lo), so every triangle has unit area in Hz
    np.testing.assert_allclose(fb.sum(axis=1) * 40.0, 1.0, atol=0.05)
    assert (fb.max(axis=1) > 0).all()  # no empty filter at 40 mels / 400-point FFT


@needs_ge2e
def test_ge2e_mel_features_match_a_numpy_reference():
    ge2e = build_upstream("ge2e")
    gen = np.random.default_rng(0)
    t = np.arange(12345) / 16000
    wave = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * gen.standard_normal(t.size)).astype(np.float32)
    # loud enough that the -30 dBFS volume normalisation (increase only) leaves it alone
    mel, frame_lengths = ge2e.features(torch.from_numpy(wave)[None], torch.tensor([wave.size]))
    ref = _reference_mel(wave)
    assert mel.shape == (1, 1 + 12345 // 160, 40) == (1, *ref.shape) and frame_lengths.tolist() == [ref.shape[0]]
    np.testing.assert_allclose(mel[0].numpy(), ref, rtol=1e-3, atol=1e-4 * ref.max())


@needs_ge2e
def test_ge2e_volume_normalisation_raises_quiet_audio_to_minus_30_dbfs():
    from speechssl.upstream.ge2e import normalize_volume

    waves, lengths = noise_batch((8000, 4000), scale=1.0)
    waves[0] *= 1e-3  # -60 dBFS: raised to -30
    waves[1] *= 0.5  # about -6 dBFS: left alone (increase only)
    out = normalize_volume(waves, lengths)
    rms0 = out[0, :8000].square().mean().sqrt()
    assert 20 * math.log10(rms0) == pytest.approx(-30.0, abs=1e-3)
    torch.testing.assert_close(out[1], waves[1])
    assert out[1, 4000:].abs().max() == 0
    assert torch.isfinite(normalize_volume(torch.zeros(1, 100), torch.tensor([100]))).all()


@needs_ge2e
def test_ge2e_metadata_and_embedding_equal_resemblyzers_network():
    from speechssl.upstream.ge2e import weights_path

    ge2e = build_upstream("ge2e")
    assert (ge2e.frame_rate, ge2e.num_layers, ge2e.feature_dim) == (100.0, 3, 256)
    lstm_params = 4 * 256 * (40 + 256) + 2 * 4 * 256 * (256 + 256) + 3 * 2 * 4 * 256  # weights + both biases
    assert ge2e.num_params == lstm_params + 256 * 256 + 256 == 1_423_616
    # Resemblyzer's VoiceEncoder: one 3-layer nn.LSTM and relu(linear(h_n[-1])), L2-normalised
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)["model_state"]
    lstm = torch.nn.LSTM(40, 256, 3, batch_first=True)
    linear = torch.nn.Linear(256, 256)
    lstm.load_state_dict({k[len("lstm."):]: v for k, v in state.items() if k.startswith("lstm.")})
    linear.load_state_dict({k[len("linear."):]: v for k, v in state.items() if k.startswith("linear.")})
    waves, lengths = noise_batch((16000, 7001))
    with torch.no_grad():
        ours = ge2e.embed(waves, lengths)
        for i, n in enumerate(lengths.tolist()):
            mel, _ = ge2e.features(waves[i : i + 1, :n], lengths[i : i + 1])
            _, (hidden, _) = lstm(mel)
            ref = torch.relu(linear(hidden[-1]))
            ref = ref / ref.norm(dim=1, keepdim=True)
            torch.testing.assert_close(ours[i], ref[0], atol=1e-5, rtol=1e-5)
    assert ours.norm(dim=1).sub(1).abs().max() < 1e-5
    assert ge2e.fingerprint() == build_upstream("ge2e").fingerprint()


@needs_ge2e
def test_ge2e_same_speaker_is_closer_than_different_speakers(tiny_corpus):
    ge2e = build_upstream("ge2e")
    speakers, waves = [], []
    for spk_dir in sorted((tiny_corpus / "audio" / "test").iterdir()):
        for path in sorted(spk_dir.glob("*.flac"))[:3]:
            wave, rate = sf.read(path, dtype="float32")
            assert rate == 16000
            speakers.append(spk_dir.name)
            waves.append(torch.from_numpy(wave))
    assert len(set(speakers)) >= 3
    lengths = torch.tensor([w.numel() for w in waves])
    batch = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        batch[i, : w.numel()] = w
    with torch.no_grad():
        emb = ge2e.embed(batch, lengths)
    cos = emb @ emb.T
    labels = np.array(speakers)
    same = (labels[:, None] == labels[None, :]) & ~np.eye(len(labels), dtype=bool)
    diff = labels[:, None] != labels[None, :]
    same_mean, diff_mean = cos[torch.from_numpy(same)].mean(), cos[torch.from_numpy(diff)].mean()
    assert same_mean > diff_mean + 0.02, (same_mean, diff_mean)


def test_ge2e_without_the_wheel_says_how_to_install(monkeypatch):
    from speechssl.upstream import ge2e

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(ge2e.importlib.metadata, "distribution", missing)
    with pytest.raises(SpeechSSLError, match=r"pip install --no-deps resemblyzer==0\.1\.4"):
        build_upstream("ge2e")


# ---------------------------------------------------------------- HF directories


def _hf_direct(directory: Path, cls_name: str, waves, lengths, *, mask: bool, normalize: bool):
    import transformers

    from speechssl.data.collate import normalize_waveforms

    model = getattr(transformers, cls_name).from_pretrained(directory, local_files_only=True).eval()
    if normalize:
        waves = normalize_waveforms(waves, lengths)
    attention = (torch.arange(waves.shape[1])[None] < lengths[:, None]).long() if mask else None
    with torch.no_grad():
        return model, model(waves, attention_mask=attention, output_hidden_states=True)


@pytest.mark.parametrize("key,cls_name", [("wav2vec2", "Wav2Vec2Model"), ("wavlm", "WavLMModel")])
def test_hf_layers_equal_the_models_hidden_states(key, cls_name, hf_dirs, no_network):
    upstream = build_upstream(f"hf:{hf_dirs[key]}")
    assert upstream.do_normalize and upstream.use_attention_mask
    assert (upstream.num_layers, upstream.feature_dim, upstream.frame_rate) == (3, 32, 1600.0)
    waves, lengths = noise_batch((4000, 2501))
    with torch.no_grad():
        out = upstream(waves, lengths)
    model, ref = _hf_direct(hf_dirs[key], cls_name, waves, lengths, mask=True, normalize=True)
    assert upstream.num_params == sum(p.numel() for p in model.parameters())
    expected_lengths = model._get_feat_extract_output_lengths(lengths)
    assert out.lengths.tolist() == expected_lengths.tolist() == [399, 249]
    assert len(out.layers) == len(ref.hidden_states) == 3
    for ours, theirs in zip(out.layers, ref.hidden_states):
        for i, n in enumerate(out.lengths.tolist()):
            torch.testing.assert_close(ours[i, :n], theirs[i, :n], atol=TOL, rtol=TOL)


def test_hf_stable_layer_norm_last_layer_is_the_normalised_output(hf_dirs, no_network):
    upstream = build_upstream(f"hf:{hf_dirs['stable']}")
    waves, lengths = noise_batch((4000,))
    with torch.no_grad():
        out = upstream(waves, lengths)
    _, ref = _hf_direct(hf_dirs["stable"], "Wav2Vec2Model", waves, lengths, mask=True, normalize=True)
    torch.testing.assert_close(out.layers[0], ref.hidden_states[0], atol=TOL, rtol=TOL)
    torch.testing.assert_close(out.layers[-1], ref.last_hidden_state, atol=TOL, rtol=TOL)
    assert (ref.hidden_states[-1] - ref.last_hidden_state).abs().max() > 1e-2  # transformers 5: pre-norm


def test_hf_group_norm_model_gets_zero_padding_and_no_mask(hf_dirs, no_network):
    upstream = build_upstream(f"hf:{hf_dirs['group']}")  # no preprocessor_config.json
    assert not upstream.do_normalize and not upstream.use_attention_mask
    waves, lengths = noise_batch((4000, 2501))
    with torch.no_grad():
        out = upstream(waves, lengths)
    _, ref = _hf_direct(hf_dirs["group"], "Wav2Vec2Model", waves, lengths, mask=False, normalize=False)
    for ours, theirs in zip(out.layers, ref.hidden_states):
        for i, n in enumerate(out.lengths.tolist()):
            torch.testing.assert_close(ours[i, :n], theirs[i, :n], atol=TOL, rtol=TOL)


def test_hf_preprocessor_config_is_respected(tmp_path, no_network):
    # layer-norm CNN but an extractor that says no normalisation and no mask: the file wins
    directory = save_hf(tmp_path / "m", "Wav2Vec2Model", extractor={**LAYER_NORM_EXTRACTOR, "do_normalize": False,
                                                                     "return_attention_mask": False})
    upstream = build_upstream(f"hf:{directory}")
    assert not upstream.do_normalize and not upstream.use_attention_mask
    wrong_rate = save_hf(tmp_path / "r", "Wav2Vec2Model", extractor={**LAYER_NORM_EXTRACTOR, "sampling_rate": 8000})
    with pytest.raises(ConfigError, match=r"expects 8000 Hz"):
        build_upstream(f"hf:{wrong_rate}")


def test_hf_rejects_models_without_audio_hidden_states(tmp_path, no_network):
    import transformers

    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32)
    transformers.BertModel(config).save_pretrained(tmp_path / "bert")
    expected = f"{tmp_path / 'bert'} holds a BertModel (bert), not a waveform encoder"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        build_upstream(f"hf:{tmp_path / 'bert'}")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'empty'} has no weights")):
        build_upstream(f"hf:{tmp_path / 'empty'}")


def test_hf_fingerprint_follows_the_weights(tmp_path, no_network):
    directory = save_hf(tmp_path / "m", "Wav2Vec2Model", extractor=LAYER_NORM_EXTRACTOR, seed=0)
    before = build_upstream(f"hf:{directory}").fingerprint()
    assert build_upstream(f"hf:{directory}").fingerprint() == before
    save_hf(directory, "Wav2Vec2Model", extractor=LAYER_NORM_EXTRACTOR, seed=1)  # new weights, same config
    assert build_upstream(f"hf:{directory}").fingerprint() != before


# ---------------------------------------------------------------- our checkpoints


def test_ckpt_layers_are_the_encoders_states(ckpt_file):
    from speechssl.pretrain.checkpoint import load_pretraining_model

    upstream = build_upstream(f"ckpt:{ckpt_file}")
    assert (upstream.num_layers, upstream.feature_dim, upstream.frame_rate) == (3, 32, 50.0)
    assert not hasattr(upstream, "quantizer") and not any("quantizer" in k for k in upstream.state_dict())
    model, _ = load_pretraining_model(ckpt_file)
    assert upstream.num_params == model.encoder.num_parameters()
    waves, lengths = noise_batch((16000, 7001))
    with torch.no_grad():
        out = upstream(waves, lengths)
        ref = model.encoder(waves, lengths)
    assert out.lengths.tolist() == ref.frame_lengths.tolist() == [49, 21]
    for ours, theirs in zip(out.layers, ref.layer_states, strict=True):
        for i, n in enumerate(out.lengths.tolist()):
            torch.testing.assert_close(ours[i, :n], theirs[i, :n], atol=TOL, rtol=TOL)


def test_ckpt_normalises_when_the_run_did(tmp_path):
    path = save_checkpoint(tmp_path / "n.pt", "data.normalize_waveform=true")
    upstream = build_upstream(f"ckpt:{path}")
    assert upstream.normalize
    waves, lengths = noise_batch((8000,))
    with torch.no_grad():
        quiet, loud = upstream(waves, lengths), upstream(10 * waves, lengths)
    torch.testing.assert_close(quiet.layers[-1], loud.layers[-1], atol=1e-4, rtol=1e-4)


def test_ckpt_run_directory_resolution_and_fingerprint(tmp_path):
    from speechssl.upstream.native import resolve_checkpoint

    ckpt_dir = tmp_path / "run" / "checkpoints"
    save_checkpoint(step_path(ckpt_dir, 2), seed=0)
    latest = save_checkpoint(step_path(ckpt_dir, 10), seed=1)
    assert resolve_checkpoint(tmp_path / "run") == resolve_checkpoint(ckpt_dir) == latest
    by_dir = build_upstream(f"ckpt:{tmp_path / 'run'}")
    assert by_dir.fingerprint() == build_upstream(f"ckpt:{latest}").fingerprint()
    best = save_checkpoint(ckpt_dir / "best.pt", seed=2)
    assert resolve_checkpoint(tmp_path / "run") == best
    before = build_upstream(f"ckpt:{best}").fingerprint()
    save_checkpoint(best, seed=3)
    assert build_upstream(f"ckpt:{best}").fingerprint() != before
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SpeechSSLError, match="junk.pt"):
        build_upstream(f"ckpt:{tmp_path / 'junk.pt'}")
