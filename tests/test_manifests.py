import gzip
import json

import numpy as np
import pytest
import soundfile as sf

from speechssl.data.manifests import available_splits, load_cuts, read_corpus_info
from speechssl.errors import ManifestError


def _write_corpus(root, records):
    (root / "manifests").mkdir(parents=True, exist_ok=True)
    with gzip.open(root / "manifests" / "cuts_train.jsonl.gz", "wt") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")


def _record(cut_id="u1", source="audio/u1.flac"):
    return {
        "id": cut_id, "start": 0, "duration": 1.0, "channel": 0, "type": "MonoCut",
        "supervisions": [{"id": cut_id, "recording_id": cut_id, "start": 0, "duration": 1.0, "channel": 0,
                          "text": "hello", "language": "en", "speaker": "s1"}],
        "recording": {"id": cut_id, "sources": [{"type": "file", "channels": [0], "source": source}],
                      "sampling_rate": 16000, "num_samples": 16000, "duration": 1.0, "channel_ids": [0]},
    }


def test_relative_audio_paths_resolve_against_the_corpus_dir(tmp_path):
    (tmp_path / "audio").mkdir()
    sf.write(tmp_path / "audio" / "u1.flac", np.zeros(16000, np.float32), 16000)
    _write_corpus(tmp_path, [_record()])
    cuts = load_cuts(tmp_path, "train")
    assert available_splits(tmp_path) == ["train"]
    source = cuts[0].recording.sources[0].source
    assert source == str((tmp_path / "audio" / "u1.flac").resolve())


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.pop("duration"), "missing field 'duration'"),
        (lambda r: r["recording"].pop("sampling_rate"), "recording of cut 'u1' is missing field 'sampling_rate'"),
        (lambda r: r["supervisions"][0].pop("recording_id"), "supervision of cut 'u1' is missing field"),
        (lambda r: r.update(duration=-1), "non-positive duration"),
    ],
)
def test_manifest_with_missing_or_bad_field(tmp_path, mutate, message):
    record = _record()
    mutate(record)
    _write_corpus(tmp_path, [record])
    with pytest.raises(ManifestError, match=message) as info:
        load_cuts(tmp_path, "train")
    assert "cuts_train.jsonl.gz:1" in str(info.value)


def test_duplicate_ids_and_bad_json(tmp_path):
    _write_corpus(tmp_path, [_record(), _record()])
    with pytest.raises(ManifestError, match="duplicate cut ids"):
        load_cuts(tmp_path, "train")
    with gzip.open(tmp_path / "manifests" / "cuts_train.jsonl.gz", "wt") as handle:
        handle.write("{not json\n")
    with pytest.raises(ManifestError, match=":1: not valid JSON"):
        load_cuts(tmp_path, "train")


def test_missing_split_lists_available_ones(tmp_path):
    _write_corpus(tmp_path, [_record()])
    with pytest.raises(ManifestError, match="available splits: train"):
        load_cuts(tmp_path, "test")
    with pytest.raises(ManifestError, match="no manifests under"):
        load_cuts(tmp_path / "elsewhere", "train")


def test_corpus_info_errors(tmp_path):
    with pytest.raises(ManifestError, match="data directory not found"):
        read_corpus_info(tmp_path / "nope")
    with pytest.raises(ManifestError, match="corpus.json: missing"):
        read_corpus_info(tmp_path)
