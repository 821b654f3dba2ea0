"""Shared fixtures: a tiny synthetic corpus, generated once per test session."""

import os
import socket
import tempfile
from pathlib import Path

import pytest
import torch

from speechssl.data.synth import SynthConfig, synthesize_corpus

# All 8 languages and every split with >= 2 utterances each, 4 test speakers for
# ASV trials, and only ~80 utterances so that it synthesises in a few seconds.
TINY_CORPUS = SynthConfig(hours=0.05, speakers=12, trials=200)

# Pretraining-config overrides for a very small wav2vec 2.0 (32-d, 2 layers, 16 codewords):
# an update takes a fraction of a second. Test modules import it (`from conftest import`).
TINY_W2V2 = [
    "encoder.conv_layers=[[32,10,5,0],[32,3,2,0],[32,3,2,0],[32,3,2,0],[32,3,2,0],[32,2,2,0],[32,2,2,0]]",
    "encoder.conv_norm=layer_norm",
    "encoder.hidden=32",
    "encoder.layers=2",
    "encoder.heads=2",
    "encoder.ffn=64",
    "encoder.pos_conv_kernel=16",
    "encoder.pos_conv_groups=4",
    "wav2vec2.codebook_entries=16",
    "wav2vec2.codevector_dim=16",
    "wav2vec2.final_dim=16",
]

# Run settings of the small trainer tests: crops of 1.5 s, 6 s updates, one record per update.
TINY_RUN = [
    "data.crop_seconds=1.5",
    "data.micro_batch_seconds=6",
    "data.num_workers=0",
    "batch_seconds=6",
    "optim.warmup_steps=2",
    "optim.lr=1e-3",
    "tensorboard=false",
    "log_every=1",
]


def pytest_configure(config: pytest.Config) -> None:
    # Commands under test record runs in the default result store; keep that out of
    # the checkout's runs/results.db. Tests that care pass --store explicitly.
    os.environ["SPEECHSSL_STORE"] = str(Path(tempfile.mkdtemp(prefix="speechssl-store-")) / "results.db")


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of a tiny corpus (treat as read-only; copy it to modify it)."""
    out = tmp_path_factory.mktemp("tiny_corpus")
    synthesize_corpus(TINY_CORPUS, out, workers=2, progress=False)
    return out


@pytest.fixture
def one_thread():
    """Torch on one thread for the test (modules use it with ``pytestmark``): tiny models
    run faster without thread hand-offs, and parallel test processes do not oversubscribe."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_network(monkeypatch):
    """Loading must work with every socket refused and the hub in offline mode."""

    def refuse(*args, **kwargs):
        raise OSError("network access attempted during an offline test")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def write_recording(path, seconds: float, rate: int = 16000, *, seed: int = 0, channels: int = 1,
                    tone: float | None = None, **soundfile_options) -> None:
    """A short recording for corpus-recipe tests: 0.1-std white noise, plus a 0.3-amplitude sine
    at ``tone`` Hz when given, written by soundfile (format from the suffix unless
    ``format=`` / ``subtype=`` say otherwise); parent folders are created."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.1 * rng.standard_normal(t.size) if tone is None else 0.3 * np.sin(2 * np.pi * tone * t) + \
        0.05 * rng.standard_normal(t.size)
    data = np.stack([wave] * channels, axis=1) if channels > 1 else wave
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data.astype("float32"), rate, **soundfile_options)


def noise_batch(lengths=(16000, 7001), seed=0, scale=0.1):
    """A zero-padded batch of white-noise "utterances" of the given sample counts."""
    gen = torch.Generator().manual_seed(seed)
    waves = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        waves[i, :n] = scale * torch.randn(n, generator=gen)
    return waves, torch.tensor(lengths)


def assert_upstream_contract(upstream, label: str, tol: float = 1e-5) -> None:
    """The upstream interface every upstream keeps: shapes, lengths ~ duration x frame rate,
    padding invariance (a padded row equals the utterance alone, padding is zero), metadata."""
    waves, lengths = noise_batch((16000, 7001, 5200))
    with torch.no_grad():
        out = upstream(waves, lengths)
        alone = upstream(waves[1:2, :7001].clone(), lengths[1:2])
    assert len(out.layers) == upstream.num_layers
    frames = out.layers[0].shape[1]
    for x in out.layers:
        assert x.shape == (3, frames, upstream.feature_dim) and x.dtype == torch.float32
        assert torch.isfinite(x).all()
    assert out.lengths.dtype == torch.int64 and int(out.lengths.max()) == frames
    # ~ duration x frame rate (the CNN models lose a receptive field's worth at the end)
    expected = lengths.double() / 16000 * upstream.frame_rate
    assert ((out.lengths - expected).abs() <= 2).all(), (out.lengths, expected)
    n = int(out.lengths[1])
    assert alone.lengths.tolist() == [n]
    for i, (batched, single) in enumerate(zip(out.layers, alone.layers)):
        assert single.shape[1] == n
        torch.testing.assert_close(batched[1, :n], single[0], atol=tol, rtol=tol, msg=f"{label} layer {i}")
        assert batched[1, n:].abs().max() == 0 and batched[2, int(out.lengths[2]):].abs().max() == 0
    meta = upstream.metadata()
    assert meta["name"] == upstream.name and meta["num_layers"] == upstream.num_layers
    assert len(meta["fingerprint"]) == 16 and meta["fingerprint"] == upstream.fingerprint()
