"""Shared fixtures: a tiny synthetic corpus, generated once per test session."""

import os
import socket
import tempfile
from pathlib import Path

import pytest

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
def no_network(monkeypatch):
    """Loading must work with every socket refused and the hub in offline mode."""

    def refuse(*args, **kwargs):
        raise OSError("network access attempted during an offline test")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
