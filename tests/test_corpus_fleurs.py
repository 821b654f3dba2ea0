"""FLEURS: a mini copy of the hub release (``<code>/{train,dev,test}.tsv`` without header,
``<code>/audio/<split>/*.wav`` at 16 kHz), in three languages sharing FLoRes sentence ids."""

import json
import os

import numpy as np
import pytest
import soundfile as sf

from speechssl.corpora import CorpusError, prepare
from speechssl.data.manifests import load_cuts

RATE = 16000
SENTENCES = {  # FLoRes sentence id -> (French, Mandarin, English) raw transcriptions
    "1001": ("Bonjour, le monde.", "你好，世界。", "Hello, world."),
    "1002": ("Il pleut à Paris.", "巴黎在下雨。", "It rains in Paris."),
    "1003": ("C'est l'été !", "现在是夏天！", "It is summer!"),
    "2001": ("Le chat dort.", "猫在睡觉。", "The cat sleeps."),
    "3001": ("Fin du test.", "测试结束。", "End of the test."),
    "3002": ("Encore une phrase.", "再来一句。", "One more sentence."),
}
CODES = ("fr_fr", "cmn_hans_cn", "en_us")
# split -> (sentence id, wav number, gender); sentence 1001 is read twice (two wavs), and wav 3
# is listed under two sentence ids (as happens in the release).
PLAN = {
    "train": [("1001", 1, "FEMALE"), ("1001", 2, "MALE"), ("1002", 3, "MALE"), ("1003", 3, "MALE")],
    "dev": [("2001", 4, "OTHER")],
    "test": [("3001", 5, "FEMALE"), ("3002", 6, "MALE")],
}


def normalize(text):
    return "".join(ch for ch in text.lower() if ch.isalnum() or ch in " '").strip()


def make_fleurs(base, codes=CODES, *, extracted_in_language_folder=False):
    """base/<code>/...; returns {wav path relative to base: seconds}."""
    seconds = {}
    for li, code in enumerate(codes):
        column = CODES.index(code)
        for split, lines in PLAN.items():
            audio = base / code / (split if extracted_in_language_folder else f"audio/{split}")
            audio.mkdir(parents=True, exist_ok=True)
            rows = []
            for sid, number, gender in lines:
                name = f"{li}{number:03d}7441182.wav"
                length = 0.3 + 0.1 * number
                if not (audio / name).exists():
                    rng = np.random.default_rng(number)
                    sf.write(audio / name, (0.1 * rng.standard_normal(int(length * RATE))).astype("float32"), RATE,
                             subtype="PCM_16")
                seconds[(audio / name).relative_to(base).as_posix()] = length
                raw = SENTENCES[sid][column]
                norm = normalize(raw)
                chars = " ".join("|".join(norm.split())) + " |"
                rows.append("\t".join([sid, name, raw, norm, chars, str(int(length * RATE)), gender]))
            if split == "train":
                rows.append(rows[0])  # a line repeated verbatim
            (base / code / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return seconds


def test_fleurs_all_languages(tmp_path):
    root = tmp_path / "fleurs"
    seconds = make_fleurs(root)
    out = tmp_path / "out"
    info = prepare("fleurs", root, out)
    assert info["languages"] == sorted(CODES) and info["skipped"] == [] and info["trials"] == {}
    assert info["duplicate_lines"] == 3 and "unknown" in info["speakers"]
    cuts = {s: list(load_cuts(out, s)) for s in ("train", "dev", "test")}
    assert {s: len(c) for s, c in cuts.items()} == {"train": 12, "dev": 3, "test": 6}
    assert info["splits"]["train"]["languages"] == {"cmn": 4, "en": 4, "fr": 4}
    by_id = {c.id: c for cs in cuts.values() for c in cs}
    for cut in by_id.values():
        source = cut.recording.sources[0].source
        assert cut.duration == pytest.approx(seconds[source.split("/fleurs/")[1]], abs=1e-3)
        assert cut.recording.sampling_rate == RATE and cut.supervisions[0].speaker is None
    first = by_id["fr_fr-train-00017441182"].supervisions[0]
    assert first.text == "bonjour le monde" and first.custom["raw_text"] == "Bonjour, le monde."
    assert first.language == "fr" and first.custom["locale"] == "fr_fr" and first.custom["sentence_id"] == "1001"
    assert first.gender == "f" and first.custom["num_samples"] == int(0.4 * RATE)
    # wav 3 listed under two sentence ids: two utterances of the same file, ids kept unique.
    again = by_id["fr_fr-train-00037441182-2"]
    assert again.supervisions[0].custom["sentence_id"] == "1003"
    assert again.recording.sources[0].source == by_id["fr_fr-train-00037441182"].recording.sources[0].source
    dev = by_id["cmn_hans_cn-dev-10047441182"].supervisions[0]
    assert dev.language == "cmn" and dev.gender is None and dev.custom["gender_label"] == "OTHER"
    assert "translations" not in dev.custom


def test_fleurs_snapshot_raw_text_and_translations(tmp_path):
    snapshot = tmp_path / "google-fleurs"
    make_fleurs(snapshot / "data")  # a snapshot of the hub repository: data/<code>/...
    (snapshot / "README.md").write_text("FLEURS\n")
    out = tmp_path / "out"
    info = prepare("fleurs", snapshot, out, language="fr_fr", text="raw", translate_to="en_us,cmn_hans_cn")
    assert info["languages"] == ["fr_fr"] and info["translations"] == {"en_us": 7, "cmn_hans_cn": 7}
    test = {c.id: c.supervisions[0] for c in load_cuts(out, "test")}
    sup = test["fr_fr-test-00057441182"]
    assert sup.text == "Fin du test." and sup.custom["normalized_text"] == "fin du test"
    assert sup.custom["translations"] == {"en": "End of the test.", "cmn": "测试结束。"}
    assert sup.language == "fr"
    # One language folder as ROOT, with the audio archives extracted straight into it.
    single = tmp_path / "single"
    make_fleurs(single, codes=("en_us",), extracted_in_language_folder=True)
    info = prepare("fleurs", single / "en_us", tmp_path / "out2", splits="test")
    assert list(info["splits"]) == ["test"] and info["splits"]["test"]["languages"] == {"en": 2}


def test_fleurs_partial_tree_names_everything_missing(tmp_path):
    root = tmp_path / "fleurs"
    make_fleurs(root)
    (root / "fr_fr" / "dev.tsv").unlink()
    for wav in (root / "en_us" / "audio" / "test").iterdir():
        wav.unlink()
    (root / "en_us" / "audio" / "test").rmdir()
    (root / "cmn_hans_cn" / "audio" / "train" / "10017441182.wav").unlink()
    with pytest.raises(CorpusError) as error:
        prepare("fleurs", root, tmp_path / "out", translate_to="de_de")
    message = str(error.value)
    assert message.count("\n  - ") == 4, message
    assert "missing file fr_fr/dev.tsv" in message
    assert "missing directory en_us/audio/test/" in message
    assert "cmn_hans_cn/train.tsv: 2 of 5 listed wav files are missing from cmn_hans_cn/audio/train/" in message
    assert "translate_to=de_de" in message
    with pytest.raises(CorpusError, match="missing directory de_de/"):
        prepare("fleurs", root, tmp_path / "out", language="de_de")
    with pytest.raises(CorpusError, match="text="):
        prepare("fleurs", root, tmp_path / "out", text="cased")


def test_fleurs_unreadable_wav_is_listed(tmp_path):
    root = tmp_path / "fleurs"
    make_fleurs(root, codes=("fr_fr",))
    bad = root / "fr_fr" / "audio" / "test" / "00067441182.wav"
    bad.write_bytes(b"RIFF" + os.urandom(40))
    info = prepare("fleurs", root, tmp_path / "out")
    assert [(s["id"], s["file"]) for s in info["skipped"]] == [("fr_fr-test-00067441182", str(bad.resolve()))]
    assert len(load_cuts(tmp_path / "out", "test")) == 1
    assert json.loads((tmp_path / "out" / "corpus.json").read_text())["skipped"][0]["reason"].startswith("not readable")
