"""Fluent Speech Commands: a mini tree in the real layout and CSV formats."""

import csv
import io
import json
import shutil
import uuid

import numpy as np
import pytest
import soundfile as sf

from speechssl.corpora import CorpusError, prepare
from speechssl.data.manifests import load_cuts

RATE = 16000  # FSC: 16 kHz mono 16-bit WAV
DATASET = "fluent_speech_commands_dataset"
HEADER = ["", "path", "speakerId", "transcription", "action", "object", "location"]
PHRASES = [  # transcription, action, object, location (real FSC phrasings)
    ("Turn on the lights", "activate", "lights", "none"),
    ("Switch on the kitchen lights", "activate", "lights", "kitchen"),
    ("Turn the heat down in the bedroom", "decrease", "heat", "bedroom"),
    ("Change language", "change language", "none", "none"),
    ("Set my device language to Chinese", "change language", "Chinese", "none"),
    ("Bring me my shoes, please", "bring", "shoes", "none"),  # a comma: quoted in the CSV
]
SPEAKERS = {"train": ["2BqVo8kVB2Skwgyb", "2ojo7YRL7Gck83Z3"], "dev": ["35v28XaVEns4WXOv"],
            "test": ["4aGjX3AG5xcxeL7a", "52XVOeXMXYuaElyw"]}
DEMOGRAPHICS = {"2BqVo8kVB2Skwgyb": ("native", "English (Canada)", "English (Canada)", "female", "22-40"),
                "2ojo7YRL7Gck83Z3": ("advanced", "Telugu", "English (United States)", "male", "41-65"),
                "35v28XaVEns4WXOv": ("native", "English (United States)", "English (United States)", "male", "65+"),
                "4aGjX3AG5xcxeL7a": ("native", "English (United States)", "English (United States)", "female",
                                     "22-40")}  # 52XVOeXMXYuaElyw: no demographics row


def make_fsc(parent, *, per_speaker=3):
    """The FSC tree under parent/fluent_speech_commands_dataset; returns {utterance id: (row, seconds)}."""
    base = parent / DATASET
    (base / "data").mkdir(parents=True)
    made = {}
    k = 0
    for split, filename in (("train", "train_data.csv"), ("dev", "valid_data.csv"), ("test", "test_data.csv")):
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(HEADER)
        index = 0
        for speaker in SPEAKERS[split]:
            for j in range(per_speaker):
                name = str(uuid.UUID(int=k + 1))
                rel = f"wavs/speakers/{speaker}/{name}.wav"
                seconds = 0.3 + 0.04 * k
                rng = np.random.default_rng(k)
                wave = 0.2 * rng.standard_normal(int(round(seconds * RATE)))
                (base / rel).parent.mkdir(parents=True, exist_ok=True)
                sf.write(base / rel, wave.astype("float32"), RATE, subtype="PCM_16")
                phrase = PHRASES[k % len(PHRASES)]
                row = [index, rel, speaker, *phrase]
                writer.writerow(row)
                made[name] = (split, dict(zip(HEADER[1:], row[1:])), seconds)
                index += 1
                k += 1
        (base / "data" / filename).write_text(text.getvalue())
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["speakerId", "Self-reported fluency level ", "First Language spoken",  # sic: trailing space
                     "Current language used for work/school", "gender", "ageRange"])
    writer.writerows([speaker, *fields] for speaker, fields in DEMOGRAPHICS.items())
    (base / "data" / "speaker_demographics.csv").write_text(text.getvalue())
    return made


def test_fsc_splits_intents_speakers_and_durations(tmp_path):
    made = make_fsc(tmp_path / "fsc")
    info = prepare("fsc", tmp_path / "fsc", tmp_path / "out")  # ROOT = the parent of the dataset dir
    cuts = {split: {c.id: c for c in load_cuts(tmp_path / "out", split)} for split in ("train", "dev", "test")}
    assert {s: len(c) for s, c in cuts.items()} == {"train": 6, "dev": 3, "test": 6}
    assert info["skipped"] == [] and info["repeated_ids"] == 0 and info["demographics"] is True
    assert info["splits"]["test"]["speakers"] == 2
    for name, (split, row, seconds) in made.items():
        cut = cuts[split][name]
        sup = cut.supervisions[0]
        assert cut.duration == pytest.approx(seconds, abs=1e-4) and cut.recording.sampling_rate == RATE
        assert sup.text == row["transcription"] and sup.speaker == row["speakerId"] and sup.language == "en"
        assert sup.custom["intent"] == f"{row['action']}_{row['object']}_{row['location']}"
        assert (sup.custom["action"], sup.custom["object"], sup.custom["location"]) == (
            row["action"], row["object"], row["location"])
        assert cut.recording.sources[0].source.endswith(row["path"])
    intents = {c.supervisions[0].custom["intent"] for split in cuts.values() for c in split.values()}
    assert {"activate_lights_kitchen", "change language_none_none", "change language_Chinese_none",
            "bring_shoes_none"} <= intents
    assert any(c.supervisions[0].text == "Bring me my shoes, please" for c in cuts["train"].values())
    genders = {c.supervisions[0].speaker: c.supervisions[0].gender for s in cuts.values() for c in s.values()}
    assert genders == {"2BqVo8kVB2Skwgyb": "f", "2ojo7YRL7Gck83Z3": "m", "35v28XaVEns4WXOv": "m",
                       "4aGjX3AG5xcxeL7a": "f", "52XVOeXMXYuaElyw": None}
    telugu = next(c.supervisions[0] for c in cuts["train"].values() if c.supervisions[0].speaker == "2ojo7YRL7Gck83Z3")
    assert telugu.custom["first_language"] == "Telugu" and telugu.custom["age_range"] == "41-65"
    assert telugu.custom["fluency"] == "advanced" and telugu.custom["work_language"] == "English (United States)"

    # ROOT = the dataset directory itself gives the same manifests; without demographics, no gender.
    (tmp_path / "fsc" / DATASET / "data" / "speaker_demographics.csv").unlink()
    info2 = prepare("fsc", tmp_path / "fsc" / DATASET, tmp_path / "out2")
    assert info2["splits"]["train"]["intents"] == info["splits"]["train"]["intents"]
    assert {c.supervisions[0].gender for c in load_cuts(tmp_path / "out2", "test")} == {None}


def test_fsc_names_everything_missing_at_once(tmp_path):
    make_fsc(tmp_path / "fsc")
    base = tmp_path / "fsc" / DATASET
    (base / "data" / "valid_data.csv").unlink()
    shutil.rmtree(base / "wavs")
    test_csv = base / "data" / "test_data.csv"
    test_csv.write_text("\n".join(line.rsplit(",", 1)[0] for line in test_csv.read_text().splitlines()) + "\n")
    with pytest.raises(CorpusError) as raised:
        prepare("fsc", tmp_path / "fsc", tmp_path / "out")
    message = str(raised.value)
    assert f"missing file {DATASET}/data/valid_data.csv (the dev split)" in message
    assert f"missing directory {DATASET}/wavs/speakers/" in message
    assert "test_data.csv: missing column(s) location" in message
    assert "wav files listed" not in message  # the missing wavs/ says it all
    # Many listed files absent (a wrong or half-unpacked wavs/): named per split with a count.
    make_fsc(tmp_path / "fsc2")
    shutil.rmtree(tmp_path / "fsc2" / DATASET / "wavs" / "speakers" / "2ojo7YRL7Gck83Z3")
    with pytest.raises(CorpusError, match="3 of the 6 wav files listed in train_data.csv \\(train\\) are missing"):
        prepare("fsc", tmp_path / "fsc2", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="missing directory data/ .*\n.*missing directory wavs/speakers/"):
        prepare("fsc", tmp_path / "empty", tmp_path / "out")


def test_fsc_lists_unreadable_audio(tmp_path):
    made = make_fsc(tmp_path / "fsc")
    name, (split, row, _) = next(iter(made.items()))
    (tmp_path / "fsc" / DATASET / row["path"]).write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(30))
    info = prepare("fsc", tmp_path / "fsc", tmp_path / "out")
    assert [(s["id"], s["file"].endswith(row["path"])) for s in info["skipped"]] == [(name, True)]
    assert len(load_cuts(tmp_path / "out", split)) == 5
    saved = json.loads((tmp_path / "out" / "corpus.json").read_text())
    assert saved["skipped"][0]["reason"].startswith("not readable audio")
