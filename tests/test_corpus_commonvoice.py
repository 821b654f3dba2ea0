"""Common Voice: a mini release in the real layout (clips/*.mp3 + tab-separated lists with a header).

The clips are real MP3 (48 kHz) where this soundfile/libsndfile can write MP3 (libsndfile >=
1.1.0 lists ``MP3`` in ``soundfile.available_formats()``; 1.2.2 here reads and writes it).
Where it cannot, they are written as WAV under the real ``.mp3`` names: libsndfile picks the
decoder from the file's content, not its name, so the recipe reads them the same way.
"""

import json
import os

import numpy as np
import pytest
import soundfile as sf

from speechssl.cli import main
from speechssl.corpora import CorpusError, prepare
from speechssl.data.manifests import load_cuts
from speechssl.downstream.tasks.asv import read_trials

RATE = 48000
# Recent releases (17.0): sentence_id, sentence_domain, accents, variant.
HEADER_NEW = ["client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes", "down_votes", "age",
              "gender", "accents", "variant", "locale", "segment"]
# Releases 8.0-12.0: no sentence_id/sentence_domain/variant.
HEADER_OLD = ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accents", "locale",
              "segment"]


def write_clip(path, seconds, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    wave = (0.3 * np.sin(2 * np.pi * (180 + 20 * seed) * t) + 0.05 * rng.standard_normal(t.size)).astype("float32")
    path.parent.mkdir(parents=True, exist_ok=True)
    if "MP3" in sf.available_formats():
        try:
            sf.write(path, wave, RATE, format="MP3")
            return
        except (sf.LibsndfileError, RuntimeError, TypeError):
            pass
    sf.write(path, wave, RATE, format="WAV", subtype="PCM_16")  # real name, WAV content (see the docstring)


# (split, speaker, gender as written) per clip; test has two speakers with two clips each.
PLAN = [("train", "a", "male_masculine"), ("train", "a", "male_masculine"), ("train", "b", "female_feminine"),
        ("dev", "c", "do_not_wish_to_say"), ("test", "d", "male_masculine"), ("test", "d", "male_masculine"),
        ("test", "e", "female_feminine"), ("test", "e", "female_feminine")]


def make_release(root, langs=("en", "zh-CN")):
    """ROOT/<lang>/{clips/, train.tsv, dev.tsv, test.tsv, validated.tsv}; returns {clip id: seconds}."""
    durations = {}
    for li, lang in enumerate(langs):
        new = li == 0
        header = HEADER_NEW if new else HEADER_OLD
        lists = {s: [] for s in ("train", "dev", "test")}
        for k, (split, speaker, gender) in enumerate(PLAN):
            n = 1000 * li + k
            name = f"common_voice_{lang}_{n}.mp3"
            seconds = 0.4 + 0.05 * k
            write_clip(root / lang / "clips" / name, seconds, seed=n)
            durations[name[:-4]] = seconds
            client = f"{lang}{speaker}" + "0" * 20
            sentence = 'He said "hello' if k == 0 else f"Sentence number {k}."  # an unbalanced quote, as in CV
            if not new:
                gender = {"male_masculine": "male", "female_feminine": "female"}.get(gender, "other")
            values = {"client_id": client, "path": name, "sentence_id": f"s{k}", "sentence": sentence,
                      "sentence_domain": "", "up_votes": "2", "down_votes": "0", "age": "twenties",
                      "gender": gender, "accents": "England English" if k == 1 else "", "variant": "",
                      "locale": lang, "segment": ""}
            lists[split].append("\t".join(values[h] for h in header))
        for split, rows in lists.items():
            (root / lang / f"{split}.tsv").write_text("\n".join(["\t".join(header), *rows]) + "\n", encoding="utf-8")
        validated = [row for rows in lists.values() for row in rows]
        validated.append("only\tthree\tfields")  # a malformed line: listed in bad_rows, not fatal
        (root / lang / "validated.tsv").write_text("\n".join(["\t".join(header), *validated]) + "\n", encoding="utf-8")
        (root / lang / "invalidated.tsv").write_text("\t".join(header) + "\n", encoding="utf-8")
    return durations


def test_commonvoice_release_all_languages(tmp_path):
    release = tmp_path / "cv-corpus-17.0-2024-03-15"
    durations = make_release(release)
    out = tmp_path / "out"
    info = prepare("commonvoice", release, out)
    assert info["languages"] == ["en", "zh-CN"] and info["skipped"] == []
    cuts = {s: list(load_cuts(out, s)) for s in ("train", "dev", "test")}
    assert {s: len(c) for s, c in cuts.items()} == {"train": 6, "dev": 2, "test": 8}
    for split_cuts in cuts.values():
        for cut in split_cuts:
            assert cut.duration == pytest.approx(durations[cut.id], abs=0.03)
            assert cut.recording.sampling_rate == RATE
            assert cut.recording.sources[0].source.endswith(f"clips/{cut.id}.mp3")
    sup = {c.id: c.supervisions[0] for cs in cuts.values() for c in cs}
    first = sup["common_voice_en_0"]
    assert first.text == 'He said "hello' and first.language == "en" and first.speaker == "ena" + "0" * 20
    assert first.gender == "m" and first.custom["age"] == "twenties" and first.custom["sentence_id"] == "s0"
    assert sup["common_voice_en_1"].custom["accents"] == "England English"
    assert sup["common_voice_en_2"].gender == "f"
    unsaid = sup["common_voice_en_3"]
    assert unsaid.gender is None and unsaid.custom["gender_label"] == "do_not_wish_to_say"
    # An older release's spellings (male/female/other, no sentence_id).
    assert sup["common_voice_zh-CN_1000"].gender == "m" and sup["common_voice_zh-CN_1002"].gender == "f"
    assert sup["common_voice_zh-CN_1003"].custom["gender_label"] == "other"
    older = sup["common_voice_zh-CN_1000"]
    assert older.language == "zh-CN" and "sentence_id" not in older.custom
    assert info["splits"]["test"]["speakers"] == 4 and info["splits"]["train"]["languages"] == {"en": 3, "zh-CN": 3}
    trials = read_trials(out / "trials" / "asv_test.tsv")
    assert {label for *_, label in trials} == {0, 1}
    lang = {c.id: c.supervisions[0].language for c in cuts["test"]}
    assert all(lang[a] == lang[b] for a, b, _ in trials)  # trials stay within a language
    assert info["rows"]["en/train"] == 3 and "bad_rows" not in info  # validated not asked


def test_commonvoice_language_folder_validated_via_cli(tmp_path):
    release = tmp_path / "cv"
    make_release(release, langs=("fr",))
    out = tmp_path / "out"
    assert main(["prepare", "commonvoice", str(release / "fr"), "--out", str(out),
                 "--option", "splits=train,validated"]) == 0
    info = json.loads((out / "corpus.json").read_text())
    assert info["splits"]["train"]["utterances"] == 3 and info["splits"]["validated"]["utterances"] == 8
    validated = list(load_cuts(out, "validated"))
    assert all(c.id.endswith("__validated") for c in validated)  # validated repeats the train clips
    assert info["bad_rows"] == ["fr/validated.tsv:10: 3 fields, expected 13"]
    assert "trials" not in os.listdir(out)  # no test split asked
    # A language list naming folders that are not there.
    with pytest.raises(CorpusError, match="missing directory de/"):
        prepare("commonvoice", release, tmp_path / "out2", language="fr,de")


def test_commonvoice_partial_tree_names_everything_missing(tmp_path):
    release = tmp_path / "cv"
    make_release(release)
    (release / "en" / "dev.tsv").unlink()
    for clip in (release / "zh-CN" / "clips").iterdir():
        clip.unlink()
    (release / "zh-CN" / "clips").rmdir()
    (release / "en" / "clips" / "common_voice_en_4.mp3").unlink()
    with pytest.raises(CorpusError) as error:
        prepare("commonvoice", release, tmp_path / "out")
    message = str(error.value)
    assert message.count("\n  - ") == 3, message  # one error listing all three problems
    assert "missing file en/dev.tsv" in message
    assert "missing directory zh-CN/clips/" in message
    assert "en/test.tsv: 1 of 4 listed clips are missing from en/clips/ (first: common_voice_en_4.mp3)" in message
    with pytest.raises(CorpusError, match="unknown split"):
        prepare("commonvoice", release, tmp_path / "out", splits="train,validation")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="no language folder"):
        prepare("commonvoice", tmp_path / "empty", tmp_path / "out")


def test_commonvoice_unreadable_clip_is_listed(tmp_path):
    release = tmp_path / "cv"
    make_release(release, langs=("en",))
    bad = release / "en" / "clips" / "common_voice_en_5.mp3"
    bad.write_bytes(b"ID3" + os.urandom(40))  # a truncated download
    info = prepare("commonvoice", release, tmp_path / "out")
    assert [(s["id"], s["file"]) for s in info["skipped"]] == [("common_voice_en_5", str(bad.resolve()))]
    assert len(load_cuts(tmp_path / "out", "test")) == 3
    recorded = json.loads((tmp_path / "out" / "corpus.json").read_text())["skipped"]
    assert recorded[0]["id"] == "common_voice_en_5"
