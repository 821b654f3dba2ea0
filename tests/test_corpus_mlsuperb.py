"""ML-SUPERB: <dataset>/<iso639-3>/{wav/*.wav, transcript_{10min,1h}_train.txt, transcript_10min_{dev,test}.txt}."""

import json

import pytest
from conftest import write_recording

from speechssl.corpora import CorpusError, prepare
from speechssl.data.manifests import load_cuts

RATE = 16000



# (dataset, language, utterance-id prefix, separator used in the transcript files)
FOLDERS = [("fleurs", "lit", "fleurs_lit", "\t"), ("fleurs", "swa", "fleurs_swa", " "),
           ("commonvoice", "lit", "cv_lit", " ")]


def make_mlsuperb(root):
    """Per folder: 1h train = 3 utterances (the 10min train = its first 2), dev 1, test 1."""
    seconds = {}
    for f, (dataset, lang, prefix, sep) in enumerate(FOLDERS):
        folder = root / dataset / lang
        ids = [f"{prefix}_{n:06d}" for n in range(5)]
        for n, utt in enumerate(ids):
            seconds[utt] = 0.3 + 0.1 * n
            write_recording(folder / "wav" / f"{utt}.wav", seconds[utt], RATE, seed=10 * f + n, tone=200,
                            subtype="PCM_16")

        def lines(chosen):
            return "".join(f"{utt}{sep}[{lang}]{sep}{lang} words of {utt}, Number {i}.\n" for i, utt in chosen)

        numbered = list(enumerate(ids))
        (folder / "transcript_1h_train.txt").write_text(lines(numbered[:3]), encoding="utf-8")
        (folder / "transcript_10min_train.txt").write_text(lines(numbered[:2]), encoding="utf-8")
        (folder / "transcript_10min_dev.txt").write_text(lines(numbered[3:4]), encoding="utf-8")
        (folder / "transcript_10min_test.txt").write_text(lines(numbered[4:5]) + "\n", encoding="utf-8")
    (root / "README.txt").write_text("ML-SUPERB\n")
    return seconds


def test_mlsuperb_splits_labels_and_durations(tmp_path):
    seconds = make_mlsuperb(tmp_path / "ml")
    info = prepare("mlsuperb", tmp_path / "ml", tmp_path / "out")
    cuts = {s: list(load_cuts(tmp_path / "out", s)) for s in ("train", "dev", "test")}
    assert [len(cuts[s]) for s in ("train", "dev", "test")] == [9, 3, 3]
    assert info["splits"]["train"]["languages"] == {"lit": 6, "swa": 3}
    assert info["datasets"] == ["commonvoice", "fleurs"] and info["shots"] == "1h"
    assert not info["skipped"] and info["trials"] == {}
    by_id = {c.id: c for split in cuts.values() for c in split}
    sup = by_id["fleurs_lit_000001"].supervisions[0]
    assert sup.text == "lit words of fleurs_lit_000001, Number 1."  # tab-separated: the text keeps its spaces
    assert sup.language == "lit" and sup.speaker is None
    assert sup.custom == {"dataset": "fleurs", "shots": "1h"}
    assert by_id["cv_lit_000003"].supervisions[0].custom == {"dataset": "commonvoice"}
    assert by_id["cv_lit_000003"].supervisions[0].text == "lit words of cv_lit_000003, Number 3."
    assert by_id["fleurs_swa_000004"].supervisions[0].language == "swa"
    for utt, cut in by_id.items():
        assert cut.duration == pytest.approx(seconds[utt], abs=1e-4)
        assert cut.recording.sampling_rate == RATE
    assert {c.supervisions[0].custom["dataset"] for c in cuts["test"]} == {"fleurs", "commonvoice"}


def test_mlsuperb_10min_and_filters(tmp_path):
    make_mlsuperb(tmp_path / "ml")
    # The language tag repeated at the start of the text goes; other bracketed tokens stay.
    (tmp_path / "ml" / "fleurs" / "lit" / "transcript_10min_dev.txt").write_text(
        "fleurs_lit_000003 [lit] [lit] labas [noise] rytas\n", encoding="utf-8")
    info = prepare("mlsuperb", tmp_path / "ml", tmp_path / "out", shots="10min", languages="lit")
    dev = {c.id: c.supervisions[0].text for c in load_cuts(tmp_path / "out", "dev")}
    assert dev["fleurs_lit_000003"] == "labas [noise] rytas"
    train = list(load_cuts(tmp_path / "out", "train"))
    assert len(train) == 4 and {c.supervisions[0].language for c in train} == {"lit"}
    assert {c.supervisions[0].custom["shots"] for c in train} == {"10min"}
    assert info["dataset_languages"] == ["commonvoice/lit", "fleurs/lit"]
    prepare("mlsuperb", tmp_path / "ml", tmp_path / "out2", datasets="FLEURS")
    assert {c.supervisions[0].custom["dataset"] for c in load_cuts(tmp_path / "out2", "dev")} == {"fleurs"}
    with pytest.raises(CorpusError, match="dataset\\(s\\) voxforge not under ROOT"):
        prepare("mlsuperb", tmp_path / "ml", tmp_path / "out3", datasets="voxforge")
    with pytest.raises(CorpusError, match="shots='2h'"):
        prepare("mlsuperb", tmp_path / "ml", tmp_path / "out3", shots="2h")


def test_mlsuperb_names_everything_missing_at_once(tmp_path):
    root = tmp_path / "ml"
    make_mlsuperb(root)
    (root / "fleurs" / "swa" / "transcript_10min_dev.txt").unlink()
    for wav in (root / "commonvoice" / "lit" / "wav").iterdir():
        wav.unlink()
    (root / "commonvoice" / "lit" / "wav").rmdir()
    (root / "fleurs" / "lit" / "wav" / "fleurs_lit_000002.wav").unlink()
    with pytest.raises(CorpusError) as raised:
        prepare("mlsuperb", root, tmp_path / "out")
    message = str(raised.value)
    assert "missing file fleurs/swa/transcript_10min_dev.txt" in message
    assert "missing directory commonvoice/lit/wav/" in message
    assert "1 of 9 wav files named in the transcripts do not exist" in message  # fleurs: 5 + 4 (no dev list)
    assert "fleurs/lit/wav/fleurs_lit_000002.wav" in message
    with pytest.raises(CorpusError, match="no <dataset>/<iso639-3>/ folders"):
        prepare("mlsuperb", tmp_path, tmp_path / "out")  # ROOT one level too high
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CorpusError, match="no <dataset>/<iso639-3>/ folders"):
        prepare("mlsuperb", empty, tmp_path / "out")


def test_mlsuperb_lists_unreadable_and_allowed_missing_audio(tmp_path):
    root = tmp_path / "ml"
    make_mlsuperb(root)
    (root / "fleurs" / "swa" / "wav" / "fleurs_swa_000000.wav").write_bytes(b"RIFF\x00\x00garbage")
    (root / "commonvoice" / "lit" / "wav" / "cv_lit_000004.wav").unlink()
    info = prepare("mlsuperb", root, tmp_path / "out", allow_missing="true")
    reasons = {s["id"]: s["reason"] for s in info["skipped"]}
    assert set(reasons) == {"fleurs_swa_000000", "cv_lit_000004"}
    assert reasons["cv_lit_000004"] == "file not found" and "not readable audio" in reasons["fleurs_swa_000000"]
    saved = json.loads((tmp_path / "out" / "corpus.json").read_text())
    assert len(saved["skipped"]) == 2
    assert len(list(load_cuts(tmp_path / "out", "train"))) == 8
