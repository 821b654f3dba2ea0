"""VoxPopuli: a mini ``transcribed_data/`` tree as ``voxpopuli.get_asr_data`` writes it
(``asr_<split>.tsv`` with a header, segments in ``<year>/<id>.ogg``, 16 kHz Ogg Vorbis)."""

import json
import os

import numpy as np
import pytest
import soundfile as sf

from speechssl.cli import main
from speechssl.corpora import CorpusError, prepare
from speechssl.data.manifests import load_cuts
from speechssl.downstream.tasks.asv import read_trials

RATE = 16000
HEADER = ["id", "raw_text", "normalized_text", "speaker_id", "split", "gender", "is_gold_transcript", "accent"]
HEADER_OLD = HEADER[:6]  # before the accented-English release
# split -> (session, speaker, gender); the year of a segment is the first four characters of its id.
PLAN = {
    "train": [("20180418-0900-PLENARY-3", "101", "male"), ("20180418-0900-PLENARY-3", "101", "male"),
              ("20190116-0900-PLENARY-7", "102", "female"), ("20190116-0900-PLENARY-7", "102", "None")],
    "dev": [("20190116-0900-PLENARY-7", "103", "female")],
    "test": [("20190312-0900-PLENARY-12", "104", "male"), ("20190312-0900-PLENARY-12", "104", "male"),
             ("20190312-0900-PLENARY-12", "105", "female"), ("20190312-0900-PLENARY-12", "105", "female")],
}
RAW = ["Madam President, thank you.", "I agree with Mr Smith.", "We voted 12 times.", "The debate is closed.",
       "Next item.", "Thank you very much!", "(Applause)", "That is all.", "Good evening."]


def make_voxpopuli(root, langs=("en", "de", "en_accented")):
    """ROOT/transcribed_data/<lang>/...; returns {segment id: seconds}."""
    seconds = {}
    for li, lang in enumerate(langs):
        folder = root / "transcribed_data" / lang
        folder.mkdir(parents=True)
        (folder / f"asr_{lang}.tsv.gz").write_bytes(b"")  # the downloaded annotations: not read
        header = HEADER_OLD if lang == "de" else HEADER
        k = 0
        for split, plan in PLAN.items():
            rows = []
            if lang.endswith("_accented") and split != "test":
                plan = []  # accented English: a test set only
            for session, speaker, gender in plan:
                code = lang.split("_")[0]
                segment = f"{session}-{code}_{session[:8]}-09:{10 + k:02d}:00_{k}"
                length = 0.5 + 0.05 * k
                path = folder / segment[:4] / f"{segment}.ogg"
                path.parent.mkdir(exist_ok=True)
                rng = np.random.default_rng(100 * li + k)
                sf.write(path, (0.1 * rng.standard_normal(int(length * RATE))).astype("float32"), RATE,
                         format="OGG", subtype="VORBIS")
                seconds[segment if lang == code else f"{lang}-{segment}"] = length
                raw = RAW[k]
                norm = raw.lower().replace(",", "").replace(".", "").replace("!", "")
                accent = {"104": "fr", "105": "de"}.get(speaker, "None") if lang != code else "None"
                values = {"id": segment, "raw_text": raw, "normalized_text": norm,
                          "speaker_id": str(int(speaker) + 100 * li), "split": split, "gender": gender,
                          "is_gold_transcript": "True" if lang != code else "False", "accent": accent}
                rows.append("\t".join(values[h] for h in header))
                k += 1
            (folder / f"asr_{split}.tsv").write_text("\n".join(["\t".join(header), *rows]) + "\n", encoding="utf-8")
    return seconds


def test_voxpopuli_all_languages(tmp_path):
    seconds = make_voxpopuli(tmp_path / "vp")
    out = tmp_path / "out"
    info = prepare("voxpopuli", tmp_path / "vp", out)
    assert info["languages"] == ["de", "en", "en_accented"] and info["skipped"] == []
    assert info["rows"]["en_accented/train"] == 0
    cuts = {s: list(load_cuts(out, s)) for s in ("train", "dev", "test")}
    assert {s: len(c) for s, c in cuts.items()} == {"train": 8, "dev": 2, "test": 12}
    assert info["splits"]["test"]["languages"] == {"de": 4, "en": 8}
    for cut in (c for cs in cuts.values() for c in cs):
        assert cut.duration == pytest.approx(seconds[cut.id], abs=1e-3) and cut.recording.sampling_rate == RATE
    by_id = {c.id: c.supervisions[0] for cs in cuts.values() for c in cs}
    first = by_id["20180418-0900-PLENARY-3-en_20180418-09:10:00_0"]
    assert first.text == "madam president thank you" and first.custom["raw_text"] == "Madam President, thank you."
    assert first.speaker == "101" and first.gender == "m" and first.language == "en"
    assert first.custom["is_gold_transcript"] is False and "accent" not in first.custom
    assert by_id["20190116-0900-PLENARY-7-en_20190116-09:13:00_3"].gender is None  # gender "None"
    german = by_id["20190116-0900-PLENARY-7-de_20190116-09:12:00_2"]
    assert german.language == "de" and german.speaker == "202" and "is_gold_transcript" not in german.custom
    accented = by_id["en_accented-20190312-0900-PLENARY-12-en_20190312-09:10:00_0"]
    assert accented.language == "en" and accented.custom["subset"] == "en_accented"
    assert accented.custom["accent"] == "fr" and accented.custom["is_gold_transcript"] is True
    sources = {c.recording.sources[0].source for c in cuts["test"]}
    assert any(s.endswith("transcribed_data/en/2019/20190312-0900-PLENARY-12-en_20190312-09:15:00_5.ogg")
               for s in sources)
    trials = read_trials(out / "trials" / "asv_test.tsv")
    assert {label for *_, label in trials} == {0, 1} and info["splits"]["test"]["speakers"] == 6
    assert all(by_id[a].language == by_id[b].language for a, b, _ in trials)


def test_voxpopuli_language_folder_raw_text_via_cli(tmp_path):
    make_voxpopuli(tmp_path / "vp", langs=("en", "de"))
    out = tmp_path / "out"
    assert main(["prepare", "voxpopuli", str(tmp_path / "vp" / "transcribed_data" / "en"), "--out", str(out),
                 "--option", "text=raw", "--option", "splits=train,test"]) == 0
    info = json.loads((out / "corpus.json").read_text())
    assert set(info["splits"]) == {"train", "test"} and info["languages"] == ["en"]
    train = {c.id: c.supervisions[0] for c in load_cuts(out, "train")}
    assert train["20190116-0900-PLENARY-7-en_20190116-09:12:00_2"].text == "We voted 12 times."
    # ROOT = transcribed_data/, one language asked.
    info = prepare("voxpopuli", tmp_path / "vp" / "transcribed_data", tmp_path / "out2", language="de")
    assert info["languages"] == ["de"] and sum(s["utterances"] for s in info["splits"].values()) == 9


def test_voxpopuli_partial_tree_names_everything_missing(tmp_path):
    make_voxpopuli(tmp_path / "vp", langs=("en", "de"))
    data = tmp_path / "vp" / "transcribed_data"
    (data / "de" / "asr_dev.tsv").unlink()
    for ogg in (data / "en" / "2019").iterdir():
        ogg.unlink()
    (data / "en" / "2019").rmdir()
    with pytest.raises(CorpusError) as error:
        prepare("voxpopuli", tmp_path / "vp", tmp_path / "out", language="en,de,fr")
    message = str(error.value)
    assert message.count("\n  - ") == 5, message  # fr folder, de dev list, en audio of three lists
    assert "missing directory transcribed_data/fr/" in message
    assert "missing file transcribed_data/de/asr_dev.tsv" in message
    assert "transcribed_data/en/asr_train.tsv: the audio of 2 of 4 lines is missing (first: " \
           "transcribed_data/en/2019/20190116-0900-PLENARY-7-en_20190116-09:12:00_2.ogg" in message
    assert "transcribed_data/en/asr_test.tsv: the audio of 4 of 4 lines" in message
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="get_asr_data"):
        prepare("voxpopuli", tmp_path / "empty", tmp_path / "out")


def test_voxpopuli_unreadable_segment_is_listed(tmp_path):
    make_voxpopuli(tmp_path / "vp", langs=("en",))
    bad = tmp_path / "vp" / "transcribed_data" / "en" / "2019" / "20190312-0900-PLENARY-12-en_20190312-09:16:00_6.ogg"
    bad.write_bytes(b"OggS" + os.urandom(50))
    info = prepare("voxpopuli", tmp_path / "vp", tmp_path / "out")
    assert [(s["id"], s["file"]) for s in info["skipped"]] == [(bad.stem, str(bad.resolve()))]
    assert len(load_cuts(tmp_path / "out", "test")) == 3
    # The trials never name the skipped segment.
    assert all(bad.stem not in line for line in (tmp_path / "out" / "trials" / "asv_test.tsv").read_text().splitlines())
