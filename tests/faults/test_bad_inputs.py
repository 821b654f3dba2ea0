"""Bad inputs (issue 17, item 4): each one gets its own test, asserting the error type and a
fragment of its one-line message, or, where the handling is a skip, that the item is listed.

Driven through what a user calls: ``speechssl.cli.main`` (one ``error: ...`` line on stderr,
never a traceback), the audio loaders, ``load_cuts``, ``build_upstream``, the typed configs,
``ResultStore`` and the writers. Documented behaviours that are *not* errors (6-channel and
8 kHz audio, a 2-hour file, extra ``custom`` fields, silence inside ``load_audio``) are pinned
here too, so that a change to them is a decision, not an accident.

Disk-full faults are injected with ``monkeypatch`` into the real write path of each writer
(``OSError(ENOSPC)`` after part of the data is written; SQLite's own "database or disk is
full" for the result store); each must give one line naming the file and "no space", remove
its temp files and leave the previous file intact.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import shutil
import sqlite3
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import write_recording
from speechssl.cli import main
from speechssl.errors import AudioError, ConfigError, ManifestError, SpeechSSLError

SR = 16_000
ROOT = os.geteuid() == 0  # root ignores file permissions: read-only directories are simulated


# ---------------------------------------------------------------- helpers


def cli_error(capsys, argv: list[str], code: int) -> str:
    """Run the CLI, expect exit ``code`` and exactly one ``error:`` line on stderr; return it."""
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == code, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def record(cut_id: str = "u1", source: str = "audio/u1.wav", duration: float = 1.0) -> dict:
    """One lhotse MonoCut record as `speechssl corpus synth` / `prepare` write them."""
    return {
        "id": cut_id, "start": 0, "duration": duration, "channel": 0, "type": "MonoCut",
        "supervisions": [{"id": cut_id, "recording_id": cut_id, "start": 0, "duration": duration, "channel": 0,
                          "text": "hello", "language": "en", "speaker": "s1"}],
        "recording": {"id": cut_id, "sources": [{"type": "file", "channels": [0], "source": source}],
                      "sampling_rate": SR, "num_samples": int(duration * SR), "duration": duration,
                      "channel_ids": [0]},
    }


def write_manifest(data_dir: Path, lines: list, split: str = "train") -> Path:
    """``DATA/manifests/cuts_<split>.jsonl.gz`` of ``lines`` (dicts, or raw text lines)."""
    path = data_dir / "manifests" / f"cuts_{split}.jsonl.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for line in lines:
            handle.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    return path


def enospc(path) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


class FullDisk:
    """A file handle whose writes fail with ENOSPC once ``room`` bytes have been written."""

    def __init__(self, handle, room: int) -> None:
        self.handle, self.room = handle, room

    def write(self, data) -> int:
        if len(data) > self.room:
            self.handle.write(data[: self.room])
            self.room = 0
            raise enospc(self.handle.name)
        self.room -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()


def fill_disk_on_write_text(monkeypatch, prefix: str) -> None:
    """``Path.write_text`` of a file whose name starts with ``prefix`` writes half, then ENOSPC."""
    real = Path.write_text

    def write_text(self, data, *args, **kwargs):
        if self.name.startswith(prefix):
            real(self, data[: len(data) // 2], *args, **kwargs)
            raise enospc(self)
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)


def leftovers(directory: Path, pattern: str = ".*tmp*") -> list[Path]:
    return sorted(directory.rglob(pattern))


@pytest.fixture
def good_wav(tmp_path) -> Path:
    path = tmp_path / "good.wav"
    write_recording(path, 1.0, tone=440.0)
    return path


# ---------------------------------------------------------------- audio: refused with AudioError


def _corrupt(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(5000))


def _truncated_flac(path: Path) -> None:
    write_recording(path.with_suffix(".tmp.flac"), 1.0, tone=440.0)
    data = path.with_suffix(".tmp.flac").read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _truncated_wav(path: Path) -> None:
    write_recording(path.with_suffix(".tmp.wav"), 1.0)
    data = path.with_suffix(".tmp.wav").read_bytes()
    path.write_bytes(data[: len(data) // 2])  # libsndfile alone would return the first half silently


def _cut_header(path: Path) -> None:
    write_recording(path.with_suffix(".tmp.wav"), 1.0)
    path.write_bytes(path.with_suffix(".tmp.wav").read_bytes()[:30])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _zero_samples(path: Path) -> None:
    sf.write(path, np.zeros(0, np.float32), SR)  # a valid 44-byte WAV header, no data
    assert path.stat().st_size > 0


def _all_nan(path: Path) -> None:
    sf.write(path, np.full(SR, np.nan, np.float32), SR, subtype="FLOAT")


def _some_inf(path: Path) -> None:
    wave = 0.1 * np.random.default_rng(0).standard_normal(SR).astype(np.float32)
    wave[[10, 500, 9000]] = [np.inf, -np.inf, np.nan]
    sf.write(path, wave, SR, subtype="FLOAT")


def _text_file(path: Path) -> None:
    path.write_text("utt1 hello world\nutt2 this is a transcript, not audio\n")


def _png(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + np.random.default_rng(1).bytes(400))


def _too_short(path: Path) -> None:
    write_recording(path, 0.05)


def _directory(path: Path) -> None:
    path.mkdir()


REFUSED_AUDIO = {
    # id: (file name, how to make it, message fragment)
    "corrupt-bytes": ("corrupt.wav", _corrupt, "not a readable audio file (Format not recognised)"),
    "truncated-flac": ("truncated.flac", _truncated_flac, "may be truncated or corrupt"),
    "truncated-wav": ("truncated.wav", _truncated_wav, "truncated: the header declares 32000 bytes"),
    "truncated-wav-header": ("header.wav", _cut_header, "not a readable audio file"),
    "empty-file": ("empty.wav", _empty, "file is empty (0 bytes)"),
    "zero-samples": ("zero.wav", _zero_samples, "contains no audio samples"),
    "all-nan-float-wav": ("nan.wav", _all_nan, "all samples are NaN or infinite"),
    "some-nan-inf-samples": ("inf.wav", _some_inf, "3 samples are NaN or infinite"),
    "text-renamed-wav": ("transcript.wav", _text_file, "not a readable audio file (Format not recognised)"),
    "png-renamed-flac": ("picture.flac", _png, "not a readable audio file (Format not recognised)"),
    "too-short-for-encoder": ("short.wav", _too_short, "too short: 0.050s < minimum 0.100s"),
    "directory-not-file": ("folder.wav", _directory, "not a regular file"),
    "missing-file": ("missing.wav", None, "file not found"),
}


@pytest.mark.parametrize("case", list(REFUSED_AUDIO), ids=list(REFUSED_AUDIO))
def test_audio_refused(case, tmp_path):
    from speechssl.data.audio import load_audio

    name, make, fragment = REFUSED_AUDIO[case]
    path = tmp_path / name
    if make is not None:
        make(path)
    with pytest.raises(AudioError) as info:
        load_audio(path)
    message = str(info.value)
    assert fragment in message and message.startswith(str(path) + ": ")
    assert "\n" not in message and "Error opening" not in message  # the path is named once


def test_audio_offset_past_the_end(good_wav):
    from speechssl.data.audio import load_audio

    with pytest.raises(AudioError, match=r"offset 5.000s is past the end \(1.000s\)"):
        load_audio(good_wav, offset=5.0, duration=1.0)


# ---------------------------------------------------------------- audio: documented behaviour


def test_audio_six_channels_are_mixed_down(tmp_path):
    """6-channel audio is accepted and averaged to mono (documented in load_audio)."""
    from speechssl.data.audio import load_audio

    channels = 0.1 * np.random.default_rng(0).standard_normal((SR, 6)).astype(np.float32)
    sf.write(tmp_path / "surround.wav", channels, SR, subtype="FLOAT")
    wave = load_audio(tmp_path / "surround.wav")
    assert wave.shape == (SR,) and wave.dtype == np.float32
    np.testing.assert_allclose(wave, channels.mean(axis=1), atol=1e-6)


def test_audio_8khz_is_resampled_to_16khz(tmp_path):
    """8 kHz audio is accepted and resampled (polyphase) to 16 kHz: a 440 Hz tone stays 440 Hz."""
    from speechssl.data.audio import load_audio

    t = np.arange(8000) / 8000
    sf.write(tmp_path / "phone.wav", (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 8000, subtype="FLOAT")
    wave = load_audio(tmp_path / "phone.wav")
    assert wave.shape == (SR,)
    assert abs(np.argmax(np.abs(np.fft.rfft(wave))) * SR / wave.size - 440) <= 1


def _sparse_wav(path: Path, seconds: int, rate: int = SR) -> None:
    """A valid 16-bit mono WAV of ``seconds`` of silence, written as a sparse file (no data blocks)."""
    data_bytes = seconds * rate * 2
    header = b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    header += b"data" + struct.pack("<I", data_bytes)
    with open(path, "wb") as handle:
        handle.write(header)
        handle.truncate(len(header) + data_bytes)


def test_audio_two_hour_file_is_read_lazily(tmp_path):
    """A 2-hour file is accepted; a cut's window is read by seeking, so memory follows the
    window (1 s here), not the file (230 MB of samples). There is no maximum duration."""
    from speechssl.data.audio import load_audio

    path = tmp_path / "lecture.wav"
    _sparse_wav(path, 2 * 3600)
    assert sf.info(str(path)).duration == 7200
    tracemalloc.start()
    try:
        wave = load_audio(path, offset=3600.0, duration=1.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert wave.shape == (SR,)
    assert peak < 5_000_000, f"reading 1 s of a 2-hour file allocated {peak / 1e6:.1f} MB"


# ---------------------------------------------------------------- audio: through `corpus check`


def _corpus_with(tmp_path: Path, files: dict[str, callable]) -> Path:
    """A manifest directory with one 1-s cut per file; ``files`` maps a cut id to a maker."""
    data = tmp_path / "corpus"
    (data / "audio").mkdir(parents=True)
    records = []
    for cut_id, make in files.items():
        path = data / "audio" / f"{cut_id}.wav"
        make(path)
        records.append(record(cut_id, f"audio/{cut_id}.wav"))
    write_manifest(data, records)
    return data


def _speech(path: Path) -> None:
    write_recording(path, 1.0, tone=300.0)


def _silent(path: Path) -> None:
    sf.write(path, np.zeros(SR, np.float32), SR)


def test_corpus_check_stops_at_a_bad_file_naming_it(tmp_path, capsys):
    data = _corpus_with(tmp_path, {"good": _speech, "broken": _truncated_wav})
    line = cli_error(capsys, ["corpus", "check", str(data)], 1)
    assert "broken.wav: truncated" in line


def test_corpus_check_skip_bad_lists_every_bad_file(tmp_path, capsys):
    files = {"good": _speech, "corrupt": _corrupt, "empty": _empty, "nan": _all_nan,
             "cut": _truncated_wav, "missing": lambda path: None}
    data = _corpus_with(tmp_path, files)
    assert main(["corpus", "check", str(data), "--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "skipped 5 unusable audio file(s)" in out
    for cut_id, fragment in (("corrupt", "not a readable audio file"), ("empty", "file is empty"),
                             ("nan", "NaN or infinite"), ("cut", "truncated"), ("missing", "file not found")):
        assert any(line.strip().startswith(f"{cut_id}: ") and fragment in line for line in out.splitlines()), cut_id
    assert "  good: " not in out


def test_all_silent_recording_is_listed_by_corpus_check(tmp_path, capsys):
    """Digital silence (every sample 0: a dead microphone, a failed export) is listed as bad
    by `corpus check`. load_audio itself accepts silence: a silent stretch of a longer
    recording is ordinary, and a crop may fall on one."""
    from speechssl.data.audio import load_audio

    data = _corpus_with(tmp_path, {"good": _speech, "dead_mic": _silent})
    assert main(["corpus", "check", str(data), "--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "skipped 1 unusable" in out and "dead_mic: " in out and "every sample is zero" in out
    assert not load_audio(data / "audio" / "dead_mic.wav").any()  # the loader's own contract


# ---------------------------------------------------------------- manifests


def _mutated(mutate) -> dict:
    rec = record()
    mutate(rec)
    return rec


BAD_RECORDS = {
    # id: (mutation of a good record, message fragment)
    "missing-cut-field": (lambda r: r.pop("duration"), "cut 'u1' is missing field 'duration'"),
    "missing-recording-field": (lambda r: r["recording"].pop("sources"),
                                "recording of cut 'u1' is missing field 'sources'"),
    "missing-supervision-field": (lambda r: r["supervisions"][0].pop("recording_id"),
                                  "a supervision of cut 'u1' is missing field 'recording_id'"),
    "extra-unknown-cut-field": (lambda r: r.update(speaker_age=31),
                                "unknown MonoCut field 'speaker_age'; put extra data in the cut's 'custom'"),
    "extra-unknown-recording-field": (lambda r: r["recording"].update(mic="usb"),
                                      "unknown Recording field 'mic'"),
    "negative-duration": (lambda r: r.update(duration=-1.5), "non-positive duration -1.5"),
    "nan-duration": (lambda r: r.update(duration=float("nan")), "invalid duration nan"),
    "string-duration": (lambda r: r.update(duration="1.0"), "invalid duration '1.0'"),
    "negative-start": (lambda r: r.update(start=-0.5), "invalid start -0.5"),
    "null-cut-id": (lambda r: r.update(id=None), "cut id must be a non-empty string, got None"),
    "recording-not-an-object": (lambda r: r.update(recording="audio/u1.wav"), "field 'recording' must be an object"),
}


@pytest.mark.parametrize("case", list(BAD_RECORDS), ids=list(BAD_RECORDS))
def test_manifest_bad_record(case, tmp_path):
    from speechssl.data.manifests import load_cuts

    mutate, fragment = BAD_RECORDS[case]
    write_manifest(tmp_path, [record("u0", "audio/u0.wav"), _mutated(mutate)])
    with pytest.raises(ManifestError) as info:
        load_cuts(tmp_path, "train")
    assert fragment in str(info.value)
    assert "cuts_train.jsonl.gz:2: " in str(info.value) and "\n" not in str(info.value)


def test_manifest_extra_fields_under_custom_are_kept(tmp_path):
    """Extra data is accepted where lhotse keeps it, under ``custom`` (unknown top-level keys are refused)."""
    from speechssl.data.manifests import load_cuts

    write_manifest(tmp_path, [_mutated(lambda r: r.update(custom={"speaker_age": 31}))])
    assert load_cuts(tmp_path, "train")[0].custom == {"speaker_age": 31}


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


BAD_FILES = {
    # id: (manifest lines or a bytes writer, message fragment)
    "duplicate-cut-ids": ([record("u1"), record("u2"), record("u1")], "duplicate cut ids (1, e.g. 'u1')"),
    "malformed-json-line": ([record("u1"), '{"id": "u2", "start": 0,'], "cuts_train.jsonl.gz:2: not valid JSON"),
    "json-line-not-an-object": (["[1, 2, 3]"], "cuts_train.jsonl.gz:1: expected a JSON object"),
    "no-cuts": ([], "manifest holds no cuts"),
    "gz-that-is-not-gzip": (lambda path: path.write_text(json.dumps(record()) + "\n"), "not a gzip file"),
    "gz-truncated": (lambda path: path.write_bytes(_half(gzip.compress((json.dumps(record()) + "\n").encode() * 50))),
                     "cannot read (Compressed file ended before the end-of-stream marker was reached)"),
    "not-utf8": (lambda path: path.write_bytes(gzip.compress(b'{"id": "\xff\xfe"}\n')), "not UTF-8 text"),
}


@pytest.mark.parametrize("case", list(BAD_FILES), ids=list(BAD_FILES))
def test_manifest_bad_file(case, tmp_path):
    from speechssl.data.manifests import load_cuts

    content, fragment = BAD_FILES[case]
    path = write_manifest(tmp_path, content if isinstance(content, list) else [])
    if callable(content):
        content(path)
    with pytest.raises(ManifestError) as info:
        load_cuts(tmp_path, "train")
    assert fragment in str(info.value) and str(path) in str(info.value)


def test_manifest_unknown_split_lists_the_known_ones(tmp_path):
    from speechssl.data.manifests import load_cuts

    write_manifest(tmp_path, [record()], split="train")
    write_manifest(tmp_path, [record()], split="dev")
    message = r"cuts_training.jsonl.gz: manifest not found; available splits: dev, train$"
    with pytest.raises(ManifestError, match=message):
        load_cuts(tmp_path, "training")


def test_manifest_unknown_split_on_the_command_line(tmp_path, capsys):
    write_manifest(tmp_path, [record()], split="train")
    line = cli_error(capsys, ["corpus", "check", str(tmp_path), "--split", "tst"], 1)
    assert "manifest not found; available splits: train" in line


def test_corpus_json_that_is_not_json(tmp_path):
    from speechssl.data.manifests import read_corpus_info

    (tmp_path / "corpus.json").write_text('{"name": "mine",\n "splits": \n')
    with pytest.raises(ManifestError, match=r"corpus.json: invalid JSON \(line 3\)"):
        read_corpus_info(tmp_path)


def test_prepare_folder_with_an_unknown_split_value(tmp_path, capsys):
    from speechssl.corpora import CorpusError

    root = tmp_path / "recordings"
    write_recording(root / "a.wav", 0.5)
    write_recording(root / "b.wav", 0.5)
    (root / "meta.csv").write_text("file,split\na.wav,train\nb.wav,training\n")
    line = cli_error(capsys, ["prepare", "folder", str(root), "--metadata", "meta.csv", "--out", str(tmp_path / "out")],
                     CorpusError.exit_code)
    assert "unknown split value(s) training (use train, dev, test or leave empty)" in line
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- upstreams


def test_upstream_unknown_name():
    from speechssl.upstream import build_upstream

    with pytest.raises(ConfigError, match=r"unknown upstream 'wav2vec3'; known: mfcc, fbank"):
        build_upstream("wav2vec3")


def test_upstream_misspelt_name_gets_a_suggestion():
    from speechssl.upstream import build_upstream

    with pytest.raises(ConfigError, match=r"did you mean 'fbank'\?"):
        build_upstream("fbnak")


def test_upstream_unknown_name_on_the_command_line(tmp_path, capsys):
    line = cli_error(capsys, ["bench", "--upstream", "wav2vec3", "--task", "lid", "--data", str(tmp_path),
                              "--out", str(tmp_path / "run"), "--no-store", "cost.energy=false"], 2)
    assert "unknown upstream 'wav2vec3'" in line


def test_upstream_hf_directory_missing(tmp_path):
    from speechssl.upstream import build_upstream

    with pytest.raises(ConfigError, match=r"hf: model directory .*nowhere does not exist"):
        build_upstream(f"hf:{tmp_path / 'nowhere'}")


def test_upstream_hf_directory_without_weights(tmp_path):
    from speechssl.upstream import build_upstream

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "wav2vec2"}))
    with pytest.raises(ConfigError, match=r"has no weights \(model.safetensors or pytorch_model.bin\)"):
        build_upstream(f"hf:{tmp_path}")


def test_upstream_hf_weights_of_another_model_are_refused(tmp_path, no_network):
    """Checkpoint names that match nothing in the model: transformers only logs a note and
    initialises at random; we refuse, so a benchmark never scores a random encoder by mistake."""
    import transformers
    from safetensors.torch import load_file, save_file

    from speechssl.upstream import build_upstream

    config = transformers.Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, conv_dim=(8,) * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, feat_extract_norm="layer",
    )
    transformers.Wav2Vec2Model(config).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    save_file({f"other_model.{k}": v for k, v in load_file(weights).items()}, weights)
    with pytest.raises(ConfigError, match=r"weight tensor\(s\) of its wav2vec2 model are not in the checkpoint"):
        build_upstream(f"hf:{tmp_path}")


def test_upstream_hf_unknown_architecture(tmp_path, no_network):
    from speechssl.upstream import build_upstream

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "speechformer9000", "hidden_size": 8}))
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 16)
    with pytest.raises(ConfigError) as info:
        build_upstream(f"hf:{tmp_path}")
    message = str(info.value)
    assert message.startswith(f"hf: cannot load a transformers model from {tmp_path}: ")
    assert "`speechformer9000`" in message and "does not recognize this architecture" in message
    assert "\n" not in message


def test_upstream_hf_architecture_that_is_not_a_speech_encoder(tmp_path, no_network):
    from transformers import BertConfig, BertModel

    from speechssl.upstream import build_upstream

    BertModel(BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
                         vocab_size=10, max_position_embeddings=8)).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match=r"holds a BertModel \(bert\), not a waveform encoder .*supported: wav2vec2"):
        build_upstream(f"hf:{tmp_path}")


def test_upstream_ckpt_path_missing(tmp_path):
    from speechssl.upstream import build_upstream

    with pytest.raises(ConfigError, match=r"ckpt: .*best_model.pt does not exist"):
        build_upstream(f"ckpt:{tmp_path / 'best_model.pt'}")


def test_upstream_ckpt_directory_without_checkpoints(tmp_path):
    from speechssl.upstream import build_upstream

    with pytest.raises(ConfigError, match=r"contains no best.pt or step_\*.pt checkpoint"):
        build_upstream(f"ckpt:{tmp_path}")


def test_upstream_argument_given_to_a_bare_name():
    from speechssl.upstream import build_upstream

    with pytest.raises(ConfigError, match=r"upstream 'mfcc' takes no argument, got 'mfcc:13'"):
        build_upstream("mfcc:13")


# ---------------------------------------------------------------- configs


def _bench(overrides=(), path=None):
    from speechssl.config import load_config
    from speechssl.downstream.config import BenchConfig

    return load_config(BenchConfig, path, list(overrides))


BAD_OVERRIDES = {
    # id: (config class name, overrides, message fragment)
    "unknown-key": ("bench", ["trian.lr=0.001"], "unknown config key 'trian'; did you mean 'train'?"),
    "unknown-nested-key": ("bench", ["train.max_epoch=3"], "unknown config key 'train.max_epoch'; did you mean"),
    "wrong-type-int": ("bench", ["train.max_epochs=ten"], "train.max_epochs: expected an integer, got 'ten'"),
    "wrong-type-list-for-number": ("bench", ["train.batch_seconds=[1, 2]"], "train.batch_seconds: expected a number"),
    "wrong-type-bool": ("bench", ["featurizer.standardize=maybe"], "featurizer.standardize: expected true/false"),
    "negative-size": ("bench", ["probe_cfg.hidden=-4"], "probe_cfg.hidden: must be > 0, got -4"),
    "negative-seconds": ("bench", ["train.batch_seconds=-1"], "train.batch_seconds: must be > 0.0, got -1.0"),
    "negative-steps": ("pretrain", ["steps=-5"], "steps: must be >= 1, got -5"),
    "probe-heads-not-dividing-hidden": ("bench", ["probe_cfg.hidden=30", "probe_cfg.heads=4"],
                                        "probe_cfg.heads (4) must divide probe_cfg.hidden (30)"),
    "encoder-heads-not-dividing-hidden": ("pretrain", ["encoder.hidden=30", "encoder.heads=4"],
                                          "hidden (30) must be divisible by heads (4)"),
    "dev-plus-test-fraction-over-0.6": ("synth", ["dev_fraction=0.3", "test_fraction=0.4"],
                                        "dev_fraction + test_fraction must leave at least 40% of the hours for train"),
    "lm-order-1": ("bench", ["task=asr", "asr.lm_order=1"], "lm_order: use 2 or more"),
    "unknown-choice": ("bench", ["task=asrr"], "task: must be one of"),
}


@pytest.mark.parametrize("case", list(BAD_OVERRIDES), ids=list(BAD_OVERRIDES))
def test_config_refused(case):
    from speechssl.config import load_config
    from speechssl.data.synth import SynthConfig
    from speechssl.downstream.config import BenchConfig
    from speechssl.pretrain import PretrainConfig

    kind, overrides, fragment = BAD_OVERRIDES[case]
    cls = {"bench": BenchConfig, "pretrain": PretrainConfig, "synth": SynthConfig}[kind]
    with pytest.raises(ConfigError) as info:
        load_config(cls, None, overrides)
    assert fragment in str(info.value) and "\n" not in str(info.value)


BAD_YAML = {
    "yaml-list-not-mapping": (b"- train\n- dev\n", "the top level must be a mapping of keys, got list"),
    "yaml-scalar-not-mapping": (b"lid with mfcc please\n", "the top level must be a mapping of keys, got str"),
    "yaml-syntax-error": (b"train:\n  lr: [0.1, 0.2\n", "invalid YAML (line 3, column 1)"),
    "yaml-unknown-key": (b"train:\n  lr: 0.001\n  max_epoch: 3\n", "unknown config key 'train.max_epoch'"),
    "yaml-section-is-a-value": (b"train: 5\n", "train: expected a mapping of keys, got int"),
    "yaml-binary-file": (b"\xff\xd8\xff\xe0\x00\x10JFIF", "not a YAML text file (not UTF-8)"),
    "yaml-python-tag": (b"upstream: !!python/object/apply:os.system ['true']\n", "invalid YAML (line 1"),
}


@pytest.mark.parametrize("case", list(BAD_YAML), ids=list(BAD_YAML))
def test_config_file_refused(case, tmp_path):
    content, fragment = BAD_YAML[case]
    path = tmp_path / "bench.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        _bench(path=path)
    assert fragment in str(info.value)


def test_config_from_dict_that_is_not_a_mapping():
    from speechssl.config import from_dict
    from speechssl.downstream.config import BenchConfig

    with pytest.raises(ConfigError, match=r"config: expected a mapping of keys, got list"):
        from_dict(BenchConfig, ["upstream", "mfcc"])


def test_config_error_on_the_command_line(tmp_path, capsys):
    config = tmp_path / "bench.yaml"
    config.write_text("- not\n- a mapping\n")
    line = cli_error(capsys, ["bench", "--config", str(config), "--no-store"], 2)
    assert "the top level must be a mapping of keys, got list" in line
    line = cli_error(capsys, ["bench", "trian.lr=1", "--no-store"], 2)
    assert "did you mean 'train'" in line


# ---------------------------------------------------------------- writers: disk full


def test_disk_full_writing_result_json(tiny_corpus, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "result.json").write_text('{"previous": true}\n')
    fill_disk_on_write_text(monkeypatch, ".result.json.tmp")
    line = cli_error(capsys, ["bench", "--upstream", "mfcc", "--task", "lid", "--data", str(tiny_corpus),
                              "--out", str(run), "--no-progress", "--no-store", f"cache.dir={tmp_path / 'cache'}",
                              "train.max_epochs=1", "train.batch_seconds=20", "probe_cfg.hidden=16",
                              "train.num_workers=0", "health_utterances=0", "cost.energy=false"], 1)
    assert f"cannot write {run / 'result.json'}: no space left on device" in line
    assert json.loads((run / "result.json").read_text()) == {"previous": True}
    assert leftovers(run, ".result.json.tmp*") == []


def test_disk_full_writing_the_result_store(tmp_path):
    from speechssl.benchmark.store import ResultStore

    path = tmp_path / "results.db"
    run = {"upstream": "mfcc", "task": "lid", "probe": "linear", "status": "finished", "source": "bench"}
    with ResultStore(path) as store:
        store.put_run(run, [{"metric": "accuracy", "value": 0.5}])
        # SQLite's own SQLITE_FULL: the database may not grow by a single page.
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count = {pages}")
        big = {**run, "upstream": "hf:big", "extra": {"history": "x" * 200_000}}
        with pytest.raises(SpeechSSLError) as info:
            store.put_run(big, [{"metric": "accuracy", "value": 0.9}])
        assert str(info.value) == (f"cannot write result store {path}: no space left on device; "
                                   "the store is unchanged (the transaction was rolled back)")
        assert [r["upstream"] for r in store.runs()] == ["mfcc"]  # the handle still works
    with ResultStore(path, create=False) as store:
        assert [(s["upstream"], s["value"]) for s in store.scores()] == [("mfcc", 0.5)]


def test_disk_full_writing_a_feature_cache_entry(tmp_path, monkeypatch):
    from speechssl.data.manifests import load_cuts
    from speechssl.downstream import cache as cache_module
    from speechssl.downstream.cache import FeatureCache, cache_key, split_fingerprint
    from speechssl.upstream import build_upstream

    data = _corpus_with(tmp_path, {"a": _speech, "b": _speech})
    cuts = load_cuts(data, "train")
    upstream = build_upstream("mfcc")
    key = cache_key(upstream.fingerprint(), split_fingerprint(cuts), None, {"sample_rate": SR})
    real = cache_module.write_file_synced

    def write_file_synced(path, payload):
        if path.name == "index.json":
            with open(path, "wb") as handle:
                FullDisk(handle, len(payload) // 2).write(payload)
        return real(path, payload)

    monkeypatch.setattr(cache_module, "write_file_synced", write_file_synced)
    root = tmp_path / "cache"
    with pytest.raises(SpeechSSLError) as info:
        FeatureCache(root).get_or_build(key, cuts, upstream, progress=False)
    assert str(info.value) == f"cannot write feature cache entry {root / key}: no space left on device"
    assert not (root / key).exists() and leftovers(root, ".tmp-*") == []


def test_disk_full_writing_the_report(tmp_path, monkeypatch):
    from speechssl.benchmark.report import write_report

    out = tmp_path / "report"
    write_report(out, [], [])
    before = (out / "report.html").read_bytes()
    fill_disk_on_write_text(monkeypatch, ".report.html.tmp")
    with pytest.raises(SpeechSSLError) as info:
        write_report(out, [], [], title="second try")
    assert str(info.value) == f"cannot write {out / 'report.html'}: no space left on device"
    assert (out / "report.html").read_bytes() == before
    assert leftovers(out) == []


def test_disk_full_writing_corpus_manifests(tmp_path, monkeypatch, capsys):
    from speechssl.corpora import base

    root, out = tmp_path / "recordings", tmp_path / "prepared"
    for name in ("a", "b", "c", "d"):
        write_recording(root / f"{name}.wav", 0.5, seed=ord(name))
    (root / "meta.csv").write_text("file,split\na.wav,train\nb.wav,train\nc.wav,dev\nd.wav,test\n")
    argv = ["prepare", "folder", str(root), "--metadata", "meta.csv", "--out", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    before = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    real = base._write_jsonl_gz

    def write_jsonl_gz(path, records):
        real(path, records[:1])  # part of the split made it to disk
        raise enospc(path)

    monkeypatch.setattr(base, "_write_jsonl_gz", write_jsonl_gz)
    line = cli_error(capsys, argv, 1)
    assert f"cannot write corpus manifests in {out}: no space left on device" in line
    assert {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
    assert list(tmp_path.glob(".prepared.prepare-*")) == []


def test_disk_full_writing_a_checkpoint(tmp_path, monkeypatch):
    import torch

    from speechssl.pretrain.checkpoint import FORMAT, load_checkpoint, save_atomic

    path = tmp_path / "checkpoints" / "step_00000010.pt"
    save_atomic({"format": FORMAT, "step": 10, "weights": torch.zeros(4)}, path)
    real = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *args, **kwargs: FullDisk(real(fd, *args, **kwargs), 1000))
    with pytest.raises(SpeechSSLError) as info:
        save_atomic({"format": FORMAT, "step": 20, "weights": torch.ones(100_000)}, path)
    monkeypatch.undo()
    assert str(info.value) == f"cannot write checkpoint {path}: no space left on device"
    assert load_checkpoint(path)["step"] == 10
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_disk_full_exporting_results(tmp_path, monkeypatch, capsys):
    from speechssl.benchmark.store import ResultStore

    store = tmp_path / "results.db"
    with ResultStore(store) as opened:
        opened.put_run({"upstream": "mfcc", "task": "lid", "probe": "linear", "status": "finished",
                        "source": "bench"}, [{"metric": "accuracy", "value": 0.5}])
    export = tmp_path / "scores.csv"
    export.write_text("previous export\n")
    fill_disk_on_write_text(monkeypatch, ".scores.csv.tmp")
    line = cli_error(capsys, ["results", "export", str(export), "--store", str(store)], 1)
    assert f"cannot write {export}: no space left on device" in line
    assert export.read_text() == "previous export\n" and leftovers(tmp_path, ".scores.csv.tmp*") == []


# ---------------------------------------------------------------- store and read-only outputs


def test_store_file_that_is_not_sqlite(tmp_path, capsys):
    from speechssl.benchmark.store import ResultStore

    path = tmp_path / "results.db"
    path.write_text("upstream,task,probe,metric,value\nmfcc,lid,linear,accuracy,0.5\n")
    with pytest.raises(ConfigError, match=r"results.db is not a speechssl result store \(file is not a database\)"):
        ResultStore(path)
    line = cli_error(capsys, ["results", "list", "--store", str(path)], 2)
    assert "is not a speechssl result store" in line
    assert path.read_text().startswith("upstream,task,probe")  # not overwritten


@pytest.fixture
def read_only_dir(tmp_path, monkeypatch):
    """A directory nothing can be created in: chmod 0o555, or (as root, which ignores
    permissions) ``PermissionError`` from the calls that create files and folders in it."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    if not ROOT:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return

    def refuse(path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    def inside(path) -> bool:
        return Path(path).absolute().is_relative_to(folder)

    real_mkdir, real_write_text, real_write_bytes = Path.mkdir, Path.write_text, Path.write_bytes
    real_connect = sqlite3.connect

    def mkdir(self, *args, **kwargs):
        if inside(self) and not self.exists():
            refuse(self)
        return real_mkdir(self, *args, **kwargs)

    def connect(database, *args, **kwargs):
        if inside(database) and not Path(database).exists():
            raise sqlite3.OperationalError("unable to open database file")
        return real_connect(database, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: refuse(self) if inside(self) else
                        real_write_text(self, *a, **k))
    monkeypatch.setattr(Path, "write_bytes", lambda self, *a, **k: refuse(self) if inside(self) else
                        real_write_bytes(self, *a, **k))
    monkeypatch.setattr(sqlite3, "connect", connect)
    yield folder


def test_read_only_report_directory(read_only_dir, tmp_path, capsys):
    from speechssl.benchmark.store import ResultStore

    ResultStore(tmp_path / "results.db").close()
    out = read_only_dir / "report"
    line = cli_error(capsys, ["report", "--store", str(tmp_path / "results.db"), "--out", str(out)], 1)
    assert f"cannot write report in {out}: permission denied" in line
    assert list(read_only_dir.iterdir()) == []


def test_read_only_store_directory(read_only_dir):
    from speechssl.benchmark.store import ResultStore

    path = read_only_dir / "results.db"
    with pytest.raises(SpeechSSLError) as info:
        ResultStore(path)
    assert str(info.value) == (f"cannot write result store {path}: cannot open or create the file "
                               "(is its directory writable?)")
    assert list(read_only_dir.iterdir()) == []
