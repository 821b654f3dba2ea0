"""Shared fixtures: a tiny synthetic corpus, generated once per test session."""

import os
import tempfile
from pathlib import Path

import pytest

from speechssl.data.synth import SynthConfig, synthesize_corpus

# All 8 languages and every split with >= 2 utterances each, 4 test speakers for
# ASV trials, and only ~80 utterances so that it synthesises in a few seconds.
TINY_CORPUS = SynthConfig(hours=0.05, speakers=12, trials=200)


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
