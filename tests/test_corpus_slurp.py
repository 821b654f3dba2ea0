"""SLURP: a mini tree in the real layout (SLURP repository checkout + unpacked audio tarballs)."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from speechssl.cli import main
from speechssl.corpora import CorpusError, prepare
from speechssl.corpora.slurp import parse_annotation
from speechssl.data.manifests import load_cuts

RATE = 16000  # SLURP audio: 16 kHz mono FLAC


def _flac(path, seconds, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * RATE))) / RATE
    wave = 0.3 * np.sin(2 * np.pi * (180 + 20 * seed) * t) + 0.03 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave.astype("float32"), RATE, format="FLAC", subtype="PCM_16")


def _entry(slurp_id, sentence, annotation, scenario, action, files, intent=None, entities=()):
    tokens = [{"surface": w, "id": i, "lemma": w, "pos": "NN"} for i, w in enumerate(sentence.split())]
    return {
        "slurp_id": slurp_id, "sentence": sentence, "sentence_annotation": annotation,
        "intent": intent or f"{scenario}_{action}", "action": action, "tokens": tokens, "scenario": scenario,
        "recordings": [{"file": f, "wer": 0.0, "ent_wer": None if not entities else 0.0, "status": "correct"}
                       for f in files],
        "entities": [{"span": list(span), "type": t} for t, span in entities],
    }


TRAIN = [
    _entry(4489, "wake me up at eight o'clock", "wake me up at [time : eight] o'clock", "alarm", "set",
           ["audio-1502099775-headset.flac", "audio-1502099775.flac", "audio--1504194195-headset.flac"],
           entities=[("time", [4])]),
    _entry(16423, "send email to robert, what time is dinner", "send email to [person : robert], what time is dinner",
           "email", "sendemail", ["audio-1501692547-headset.flac", "audio-1501692547.flac"],
           entities=[("person", [3, 4])]),
    # The same recording listed under a second entry: kept once.
    _entry(16424, "send email to robert what time is dinner", "send email to [person : robert] what time is dinner",
           "email", "sendemail", ["audio-1501692547.flac"], entities=[("person", [3])]),
]
DEVEL = [
    _entry(12149, "olly book a ticket to paris on eurostar at five pm this friday",
           "olly book a ticket to [place_name : paris] on [transport_name : eurostar] at [time : five pm] "
           "[date : this Friday]", "transport", "ticket", ["audio-1490200450-headset.flac"],
           entities=[("place_name", [5]), ("transport_name", [7]), ("time", [9, 10]), ("date", [11, 12])]),
    # The jsonl "intent" field disagrees with scenario_action here (as on ~1.5% of real lines).
    _entry(962, "increase the brightness of the lights", "increase the brightness of the lights", "iot", "hue_lightup",
           ["audio-1490356953-headset.flac", "audio-1490356953.flac"], intent="hue_lightup"),
]
TEST = [
    _entry(9054, "event reminder mona tuesday", "event reminder [event_name : mona] [date : tuesday]", "calendar",
           "set", ["audio-1497872916-headset.flac", "audio-1497872916.flac"],
           entities=[("event_name", [2]), ("date", [3])]),
    _entry(15503, "tweet complain at comcast", "[media_type : tweet] complain [business_name : @comcast]", "social",
           "post", ["audio-1490356230-headset.flac"], entities=[("media_type", [0]), ("business_name", [2, 3])]),
]
SYNTH = [
    _entry(4489, "wake me up at eight o'clock", "wake me up at [time : eight] o'clock", "alarm", "set",
           ["audio-1502099775.flac"], entities=[("time", [4])]),  # same name as a real file: own id
]
USRID = {"1502099775": "FO-460", "-1504194195": "UNK-323", "1501692547": "ME-101", "1490200450": "FE-488",
         "1490356953": "MO-222", "1497872916": "FE-333"}  # 1490356230: not in metadata.json


def make_slurp(root):
    """The SLURP tree; returns {relative audio path: seconds}."""
    meta = root / "dataset" / "slurp"
    meta.mkdir(parents=True)
    for name, entries in (("train", TRAIN), ("devel", DEVEL), ("test", TEST), ("train_synthetic", SYNTH)):
        (meta / f"{name}.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    metadata = {}
    for entry in TRAIN + DEVEL + TEST:
        recordings = metadata.setdefault(str(entry["slurp_id"]), {"nlub_id": 1, "recordings": {}, "status": "correct"})
        for rec in entry["recordings"]:
            number = rec["file"][len("audio-"):-len(".flac")].replace("-headset", "")
            if number in USRID:
                recordings["recordings"][rec["file"]] = {"ansid": 1, "recid": 2, "status": "correct",
                                                          "usrid": USRID[number]}
    (meta / "metadata.json").write_text(json.dumps(metadata, indent=1))
    seconds = {}
    files = sorted({("slurp_real", r["file"]) for e in TRAIN + DEVEL + TEST for r in e["recordings"]}
                   | {("slurp_synth", r["file"]) for e in SYNTH for r in e["recordings"]})
    for k, (folder, name) in enumerate(files):
        relative = f"audio/{folder}/{name}"
        seconds[relative] = 0.3 + 0.05 * k
        _flac(root / relative, seconds[relative], k)
    return seconds


def _cuts(out, split):
    return {c.id: c for c in load_cuts(out, split)}


def test_slurp_labels_slots_speakers_and_durations(tmp_path):
    seconds = make_slurp(tmp_path / "slurp")
    info = prepare("slurp", tmp_path / "slurp", tmp_path / "out")
    train, dev, test = (_cuts(tmp_path / "out", s) for s in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (5, 3, 3)  # one utterance per recording
    assert info["duplicate_recordings"] == 1 and info["skipped"] == [] and info["unparsed_annotations"] == 0
    assert not any(c.supervisions[0].custom["synthetic"] for c in train.values())  # synthetic=false by default
    for cuts in (train, dev, test):
        for cut in cuts.values():
            relative = cut.recording.id
            assert cut.duration == pytest.approx(seconds[relative], abs=1e-4)
            assert cut.recording.sampling_rate == RATE
            assert cut.supervisions[0].custom["recording"] == relative.split("/")[-1]

    wake = train["audio-1502099775-headset"].supervisions[0]
    assert wake.text == "wake me up at eight o'clock" and wake.language == "en"
    assert wake.custom["intent"] == "alarm_set" and wake.custom["scenario"] == "alarm"
    assert wake.custom["action"] == "set" and wake.custom["headset"] is True
    assert wake.custom["words"] == ["wake", "me", "up", "at", "eight", "o'clock"]
    assert wake.custom["slots"] == [{"type": "time", "start_word": 4, "end_word": 5}]
    assert (wake.speaker, wake.gender, wake.custom["native_english"]) == ("FO-460", "f", False)
    assert train["audio-1502099775"].supervisions[0].custom["headset"] is False
    unknown = train["audio--1504194195-headset"].supervisions[0]
    assert unknown.speaker == "UNK-323" and unknown.gender is None and "native_english" not in unknown.custom
    robert = train["audio-1501692547"].supervisions[0]
    assert robert.custom["slurp_id"] == 16423  # the first entry listing the file wins
    assert robert.custom["words"][3] == "robert," and robert.custom["slots"] == [
        {"type": "person", "start_word": 3, "end_word": 4}]
    assert (robert.speaker, robert.gender, robert.custom["native_english"]) == ("ME-101", "m", True)

    olly = dev["audio-1490200450-headset"].supervisions[0]
    assert olly.custom["words"] == olly.text.split()  # the sentence's casing ("friday"), not the annotation's
    assert [(s["type"], s["start_word"], s["end_word"]) for s in olly.custom["slots"]] == [
        ("place_name", 5, 6), ("transport_name", 7, 8), ("time", 9, 11), ("date", 11, 13)]
    lights = dev["audio-1490356953"].supervisions[0]
    assert lights.custom["intent"] == "iot_hue_lightup" and lights.custom["intent_field"] == "hue_lightup"
    assert lights.custom["slots"] == [] and "intent_field" not in olly.custom

    tweet = test["audio-1490356230-headset"].supervisions[0]
    assert tweet.speaker is None and tweet.gender is None  # not in metadata.json
    assert tweet.custom["words"] == ["tweet", "complain", "@comcast"]  # word counts differ: the annotation's
    assert tweet.custom["slots"][1] == {"type": "business_name", "start_word": 2, "end_word": 3}
    assert info["annotation_words_differ"] == 1
    assert info["splits"]["dev"]["intents"] == {"iot_hue_lightup": 2, "transport_ticket": 1}


def test_slurp_options_synthetic_and_headset_only(tmp_path):
    make_slurp(tmp_path / "slurp")
    # Through the CLI: options arrive as strings.
    assert main(["prepare", "slurp", str(tmp_path / "slurp"), "--out", str(tmp_path / "out"),
                 "--option", "synthetic=true", "--option", "headset_only=yes"]) == 0
    train, dev, test = (_cuts(tmp_path / "out", s) for s in ("train", "dev", "test"))
    assert sorted(train) == ["audio--1504194195-headset", "audio-1501692547-headset", "audio-1502099775-headset",
                             "synth-audio-1502099775"]
    assert all(c.supervisions[0].custom["headset"] for c in list(dev.values()) + list(test.values()))
    synth = train["synth-audio-1502099775"].supervisions[0]
    assert synth.custom["synthetic"] is True and synth.speaker is None and synth.custom["intent"] == "alarm_set"
    assert "slurp_synth" in train["synth-audio-1502099775"].recording.sources[0].source
    info = json.loads((tmp_path / "out" / "corpus.json").read_text())
    assert info["options"] == {"synthetic": True, "headset_only": True}
    with pytest.raises(CorpusError, match="headset_only='maybe' is not a boolean"):
        prepare("slurp", tmp_path / "slurp", tmp_path / "out2", headset_only="maybe")


def test_slurp_names_everything_missing_at_once(tmp_path):
    root = tmp_path / "slurp"
    make_slurp(root)
    (root / "dataset" / "slurp" / "devel.jsonl").unlink()
    shutil.rmtree(root / "audio" / "slurp_real")
    with pytest.raises(CorpusError) as raised:
        prepare("slurp", root, tmp_path / "out", synthetic=True)
    message = str(raised.value)
    assert "dataset/slurp/devel.jsonl" in message and "audio/slurp_real/" in message
    assert "slurp_synth" not in message  # that one is there
    # synthetic=true without the synthetic material: both named.
    root2 = tmp_path / "slurp2"
    make_slurp(root2)
    (root2 / "dataset" / "slurp" / "train_synthetic.jsonl").unlink()
    shutil.rmtree(root2 / "audio" / "slurp_synth")
    prepare("slurp", root2, tmp_path / "out")  # not needed by default
    with pytest.raises(CorpusError) as raised:
        prepare("slurp", root2, tmp_path / "out", synthetic="true")
    assert "train_synthetic.jsonl" in str(raised.value) and "audio/slurp_synth/" in str(raised.value)
    # Many listed recordings absent (a wrong audio folder): named with the split and a count.
    (root2 / "audio" / "slurp_real" / "audio-1497872916.flac").unlink()
    with pytest.raises(CorpusError, match="1 of the 3 real recordings of test are missing"):
        prepare("slurp", root2, tmp_path / "out")


def test_slurp_lists_unreadable_audio_and_accepts_audio_beside_dataset(tmp_path):
    root = tmp_path / "slurp"
    make_slurp(root)
    (root / "audio" / "slurp_real" / "audio-1497872916.flac").write_bytes(b"fLaC" + bytes(40))
    shutil.move(root / "audio" / "slurp_real", root / "slurp_real")  # SpeechBrain's layout
    info = prepare("slurp", root, tmp_path / "out")
    assert [s["id"] for s in info["skipped"]] == ["audio-1497872916"]
    assert len(load_cuts(tmp_path / "out", "test")) == 2


def test_parse_annotation_edge_cases():
    assert parse_annotation("[date : today][time : five]") == (
        ["todayfive"], [{"type": "date", "start_word": 0, "end_word": 1}])  # glued: one word, first slot
    assert parse_annotation("play [song : ] now") == (["play", "now"], [])
    assert parse_annotation("set [time five am]") is None
    assert parse_annotation("set [time : five am") is None
    words, slots = parse_annotation("remind me [date : tomorrow] at [time : ten : thirty]")
    assert words[-3:] == ["ten", ":", "thirty"] and slots[1] == {"type": "time", "start_word": 4, "end_word": 7}


def test_slurp_lists_a_few_absent_recordings_as_skipped(tmp_path, monkeypatch):
    """The official audio lacks a handful of listed files (SLURP issue #2): under the 1% tolerance
    they are listed in corpus.json "skipped", not a tree error (tolerance raised to fit a mini tree)."""
    import speechssl.corpora.slurp as slurp

    root = tmp_path / "slurp"
    make_slurp(root)
    (root / "audio" / "slurp_real" / "audio-1501692547-headset.flac").unlink()
    monkeypatch.setattr(slurp, "MISSING_TOLERANCE", 0.25)
    info = prepare("slurp", root, tmp_path / "out")
    assert [(s["id"], s["reason"]) for s in info["skipped"]] == [("audio-1501692547-headset", "file not found")]
    assert len(load_cuts(tmp_path / "out", "train")) == 4
