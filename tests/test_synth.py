"""The synthetic corpus: layout, label invariants, held-out sentences, determinism, reuse."""

import csv
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import load_manifest

from speechssl.data.synth import SynthConfig, augment, content, format_summary, synthesize_corpus
from speechssl.data.synth.content import numbers
from speechssl.data.synth.content.grammar import UPOS, detokenize
from speechssl.data.synth.content.slots import SLOT_FORMS, render_slot, slot_values
from speechssl.data.synth.corpus import SPLITS, make_trials
from speechssl.errors import ConfigError


def _info(corpus: Path) -> dict:
    return json.loads((corpus / "corpus.json").read_text())


@pytest.fixture(scope="module")
def tiny_config(tiny_corpus) -> SynthConfig:
    """The config the tiny corpus was made with, as recorded in its corpus.json."""
    return SynthConfig(**_info(tiny_corpus)["config"])


def _supervisions(corpus: Path, split: str) -> list:
    return list(load_manifest(corpus / "manifests" / f"supervisions_{split}.jsonl.gz"))


def _all_supervisions(corpus: Path) -> dict[str, list]:
    return {split: _supervisions(corpus, split) for split in SPLITS}


# ---------------------------------------------------------------- corpus layout and counts


def test_manifests_load_and_agree_with_corpus_json(tiny_corpus, tiny_config):
    info = _info(tiny_corpus)
    assert info["sample_rate"] == 16000 and info["config"]["languages"] == tiny_config.languages
    for split in SPLITS:
        recordings = load_manifest(tiny_corpus / "manifests" / f"recordings_{split}.jsonl.gz")
        supervisions = load_manifest(tiny_corpus / "manifests" / f"supervisions_{split}.jsonl.gz")
        cuts = load_manifest(tiny_corpus / "manifests" / f"cuts_{split}.jsonl.gz")
        n = info["splits"][split]["utterances"]
        assert len(recordings) == len(supervisions) == len(cuts) == n > 0
        # One cut per utterance, with the same id as its recording and supervision.
        assert {c.id for c in cuts} == {r.id for r in recordings} == {s.id for s in supervisions}
        for cut in cuts:
            assert len(cut.supervisions) == 1 and cut.duration == cut.recording.duration
            assert cut.recording.sources[0].source == f"audio/{split}/{cut.supervisions[0].speaker}/{cut.id}.flac"


def test_every_split_has_every_language(tiny_corpus, tiny_config):
    info = _info(tiny_corpus)
    for split, sups in _all_supervisions(tiny_corpus).items():
        counts = Counter(s.language for s in sups)
        assert set(counts) == set(tiny_config.languages), split
        assert min(counts.values()) >= tiny_config.min_utterances
        assert counts == Counter(info["splits"][split]["languages"])


def test_label_sets_cover_the_labels(tiny_corpus):
    labels = _info(tiny_corpus)["label_sets"]
    assert len(labels["emotion"]) >= 4 and len(labels["intent"]) >= 10
    assert set(labels["pos_tags"]) <= UPOS
    for sups in _all_supervisions(tiny_corpus).values():
        for s in sups:
            assert s.custom["emotion"] in labels["emotion"]
            assert s.custom["intent"] in labels["intent"]
            assert {slot["type"] for slot in s.custom["slots"]} <= set(labels["slot_types"])
            assert set(s.custom["pos"]) <= set(labels["pos_tags"])
            assert set(s.custom["phonemes"].split()) <= set(labels["phonemes"][s.language])
            assert s.gender in labels["gender"]


def test_test_speakers_are_unseen(tiny_corpus):
    sups = _all_supervisions(tiny_corpus)
    test = {s.speaker for s in sups["test"]}
    seen = {s.speaker for s in sups["train"] + sups["dev"]}
    assert test and seen and not test & seen
    declared = _info(tiny_corpus)["speakers"]
    assert {s["id"] for s in declared["test"]} == test
    assert {s["gender"] for s in declared["test"]} == {"f", "m"}


def test_held_out_sentences_never_occur_in_train(tiny_corpus):
    sups = _all_supervisions(tiny_corpus)
    train_texts = {s.text for s in sups["train"]}
    train_translations = {t for s in sups["train"] for t in s.custom["translations"].values()}
    train_meanings = {s.custom["meaning_id"] for s in sups["train"]}
    for split in ("dev", "test"):
        for s in sups[split]:
            assert s.text not in train_texts and s.text not in train_translations
            assert s.custom["meaning_id"] not in train_meanings


def test_asv_trials_use_test_cuts_and_are_balanced(tiny_corpus):
    with open(tiny_corpus / "trials" / "asv_test.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    speaker = {s.id: s.speaker for s in _supervisions(tiny_corpus, "test")}
    labels = Counter(row["label"] for row in rows)
    assert set(labels) == {"0", "1"} and labels["0"] == labels["1"]
    assert len(rows) == _info(tiny_corpus)["trials"]["count"]
    for row in rows:
        assert row["enroll"] in speaker and row["test"] in speaker and row["enroll"] != row["test"]
        assert (speaker[row["enroll"]] == speaker[row["test"]]) == (row["label"] == "1")
    pairs = [frozenset((row["enroll"], row["test"])) for row in rows]
    assert len(set(pairs)) == len(pairs)


def test_audio_is_16k_mono_flac_matching_the_manifest(tiny_corpus):
    cuts = load_manifest(tiny_corpus / "manifests" / "cuts_dev.jsonl.gz")
    for cut in cuts:
        path = tiny_corpus / cut.recording.sources[0].source
        info = sf.info(str(path))
        assert (info.format, info.subtype, info.samplerate, info.channels) == ("FLAC", "PCM_16", 16000, 1)
        assert info.frames == cut.recording.num_samples
        wave, _ = sf.read(str(path), dtype="float32")
        assert 0.3 <= np.abs(wave).max() <= 1.0
        assert 0.8 <= cut.duration <= 8.0


def test_words_pos_slots_and_text_are_consistent(tiny_corpus):
    for sups in _all_supervisions(tiny_corpus).values():
        for s in sups:
            words, pos = s.custom["words"], s.custom["pos"]
            assert len(words) == len(pos) and set(pos) <= UPOS
            assert detokenize(words) == s.text
            assert s.text == s.text.lower() and not re.search(r"[0-9]", s.text)
            for slot in s.custom["slots"]:
                assert 0 <= slot["start_word"] < slot["end_word"] <= len(words)
                assert detokenize(words[slot["start_word"]:slot["end_word"]]) == slot["value"]
            assert s.custom["phonemes"] and not re.search("[ˈˌ()]", s.custom["phonemes"])


def test_translations_exist_for_every_language(tiny_corpus, tiny_config):
    for sups in _all_supervisions(tiny_corpus).values():
        for s in sups:
            translations = s.custom["translations"]
            assert list(translations) == tiny_config.languages
            assert translations[s.language] == s.text
            assert all(text and not re.search(r"[0-9]", text) for text in translations.values())


def test_emotions_differ_in_level(tiny_corpus):
    peaks: dict[str, list[float]] = {}
    for sup in _supervisions(tiny_corpus, "train"):
        wave, _ = sf.read(str(tiny_corpus / "audio" / "train" / sup.speaker / f"{sup.id}.flac"))
        peaks.setdefault(sup.custom["emotion"], []).append(float(np.abs(wave).max()))
    assert np.mean(peaks["angry"]) > np.mean(peaks["neutral"]) > np.mean(peaks["sad"])


def test_summary_mentions_every_split(tiny_corpus):
    text = format_summary(_info(tiny_corpus))
    assert all(split in text for split in SPLITS) and "ASV trials" in text


# ---------------------------------------------------------------- determinism, reuse, errors


def test_same_seed_gives_identical_files(tiny_corpus, tmp_path, tiny_config):
    """Rendered in one process instead of two: scheduling must not change a single byte."""
    again = tmp_path / "again"
    synthesize_corpus(tiny_config, again, workers=1, progress=False)
    for split in SPLITS:
        for kind in ("recordings", "supervisions", "cuts"):
            name = f"manifests/{kind}_{split}.jsonl.gz"
            assert (again / name).read_bytes() == (tiny_corpus / name).read_bytes(), name
    first = sorted(p.relative_to(tiny_corpus) for p in (tiny_corpus / "audio").rglob("*.flac"))
    assert first == sorted(p.relative_to(again) for p in (again / "audio").rglob("*.flac"))
    for rel in first:
        assert (again / rel).read_bytes() == (tiny_corpus / rel).read_bytes(), rel
    assert (again / "trials/asv_test.tsv").read_bytes() == (tiny_corpus / "trials/asv_test.tsv").read_bytes()
    assert _info(again) == _info(tiny_corpus)


def test_other_seed_gives_other_corpus(tmp_path):
    texts = []
    for seed in (0, 1):
        cfg = SynthConfig(hours=0.001, speakers=8, languages=["en"], seed=seed)
        synthesize_corpus(cfg, tmp_path / str(seed), workers=1, progress=False)
        texts.append([s.text for split in SPLITS for s in _supervisions(tmp_path / str(seed), split)])
    assert texts[0] != texts[1]


def test_existing_corpus_is_reused_and_other_configs_refused(tiny_corpus, tmp_path, tiny_config):
    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, corpus)
    stamps = {p: p.stat().st_mtime_ns for p in corpus.rglob("*") if p.is_file()}
    assert synthesize_corpus(tiny_config, corpus, progress=False) == _info(tiny_corpus)
    assert stamps == {p: p.stat().st_mtime_ns for p in corpus.rglob("*") if p.is_file()}

    other = SynthConfig(hours=0.001, speakers=8, languages=["en"], seed=3)
    with pytest.raises(ConfigError, match="overwrite"):
        synthesize_corpus(other, corpus, progress=False)
    info = synthesize_corpus(other, corpus, workers=1, progress=False, overwrite=True)
    assert info["languages"] == ["en"] and _info(corpus) == info
    # The old audio went with the old corpus.
    on_disk = {p.stem for p in (corpus / "audio").rglob("*.flac")}
    assert on_disk == {s.id for split in SPLITS for s in _supervisions(corpus, split)}


def test_interrupted_run_is_not_reused(tiny_corpus, tmp_path, tiny_config):
    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, corpus)
    (corpus / "manifests" / "cuts_test.jsonl.gz").unlink()
    info = synthesize_corpus(tiny_config, corpus, workers=1, progress=False)
    assert (corpus / "manifests" / "cuts_test.jsonl.gz").is_file() and info == _info(tiny_corpus)


def test_unknown_language_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"'xx'.*'en'.*'cs'"):
        synthesize_corpus(SynthConfig(languages=["en", "xx"]), tmp_path / "out", progress=False)
    with pytest.raises(ConfigError, match="augment"):
        synthesize_corpus(SynthConfig(augment=["echo"]), tmp_path / "out", progress=False)
    with pytest.raises(ConfigError, match="speakers"):
        synthesize_corpus(SynthConfig(speakers=3), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_refuses_to_write_into_a_foreign_directory(tmp_path):
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "mine.wav").write_bytes(b"")
    with pytest.raises(ConfigError, match="not written by"):
        synthesize_corpus(SynthConfig(hours=0.001, speakers=8, languages=["en"]), tmp_path, progress=False)
    assert (tmp_path / "audio" / "mine.wav").exists()


def test_augmentations_are_applied_and_recorded(tmp_path):
    cfg = SynthConfig(hours=0.001, speakers=8, languages=["en", "cs"], augment=["noise", "reverb", "telephone"],
                      augment_prob=1.0)
    info = synthesize_corpus(cfg, tmp_path / "aug", workers=1, progress=False)
    sups = [s for split in SPLITS for s in _supervisions(tmp_path / "aug", split)]
    assert info["augmentation"]["applied"] == {name: len(sups) for name in cfg.augment}
    assert info["trials"]["target"] > 0  # even this tiny corpus has two utterances per test speaker
    for s in sups:
        assert s.custom["augment"] == cfg.augment
        assert set(s.custom["augment_params"]) == set(cfg.augment)
        assert 5.0 <= s.custom["augment_params"]["noise"]["snr_db"] <= 25.0


# ---------------------------------------------------------------- content and signal processing


def test_every_template_renders_with_tags_in_every_language():
    rng = np.random.default_rng(0)
    for intent in content.INTENT_NAMES:
        all_meanings = content.meanings(intent)
        for meaning in (all_meanings[i] for i in rng.choice(len(all_meanings), 5)):
            for lang in content.LANGUAGES:
                for template in range(content.num_templates(meaning, lang)):
                    sentence = content.render(meaning, lang, template)
                    assert len(sentence.words) == len(sentence.pos) and set(sentence.pos) <= UPOS
                    assert [s.type for s in sentence.slots] and {s.type for s in sentence.slots} == \
                        {t for t, _ in meaning.slots}


def test_slot_surface_forms_are_unambiguous():
    """Two concepts sharing a surface form would make distinct meanings render the same sentence."""
    for slot_type in content.SLOT_TYPE_NAMES:
        for lang in content.LANGUAGES:
            for form in SLOT_FORMS.get(slot_type, ("",)):
                surfaces = Counter(
                    " ".join(t.word for t in (p.prefix + p.value + p.suffix))
                    for p in (render_slot(slot_type, v, lang, form) for v in slot_values(slot_type))
                )
                assert max(surfaces.values()) == 1, (slot_type, lang, surfaces.most_common(1))


def test_meaning_splits_are_disjoint_and_cover_every_intent():
    pools = content.split_meanings(dev_fraction=0.1, test_fraction=0.2)
    for intent in content.INTENT_NAMES:
        ids = {split: {m.id for m in pools[split][intent]} for split in SPLITS}
        assert all(ids.values())
        assert not ids["train"] & ids["dev"] and not ids["train"] & ids["test"] and not ids["dev"] & ids["test"]
    # Enough material that ASR is not memorisation.
    assert sum(len(content.meanings(i)) for i in content.INTENT_NAMES) > 10_000


@pytest.mark.parametrize(
    "lang, phrase, expected",
    [
        ("fr", numbers.duration("fr", 1, "min"), "d'une minute"),
        ("de", numbers.clock_time("de", 7, 30), "um halb acht"),
        ("es", numbers.clock_time("es", 12, 45), "a la una menos cuarto"),
        ("it", numbers.clock_time("it", 1, 0), "all'una"),
        ("nl", numbers.people("nl", 22 - 20), "voor twee personen"),
        ("pt", numbers.people("pt", 2), "para duas pessoas"),
        ("cs", numbers.duration("cs", 5, "min"), "na pět minut"),
        ("cs", numbers.duration("cs", 3, "h"), "na tři hodiny"),
        ("cs", numbers.clock_time("cs", 2, 5), "ve dvě nula pět"),
    ],
)
def test_number_words_agree(lang, phrase, expected):
    assert detokenize(t.word for t in phrase.prefix + phrase.value + phrase.suffix) == expected


def test_cardinals():
    assert numbers.cardinal("fr", 21, "f") == "vingt et une"
    assert numbers.cardinal("de", 27) == "siebenundzwanzig"
    assert numbers.cardinal("nl", 22) == "tweeëntwintig"
    assert numbers.cardinal("it", 38) == "trentotto"
    assert numbers.cardinal("es", 21, "m") == "veintiún"


def test_trials_shrink_to_stay_balanced():
    rng = np.random.default_rng(0)
    trials = make_trials([("a1", "A"), ("a2", "A"), ("b1", "B")], 100, rng)
    assert sorted(label for *_, label in trials) == [0, 1]


def test_telephone_band_limits_and_noise_hits_the_snr():
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    tones = np.sin(2 * np.pi * 1000 * t) + np.sin(2 * np.pi * 6000 * t)
    narrow, _ = augment.telephone(tones, rng)
    spectrum = np.abs(np.fft.rfft(narrow))
    assert spectrum[6000] < 0.01 * spectrum[1000]

    speech = np.sin(2 * np.pi * 200 * t)
    noisy, params = augment.add_noise(speech, rng)
    snr = 10 * np.log10(np.mean(speech ** 2) / np.mean((noisy - speech) ** 2))
    assert abs(snr - params["snr_db"]) < 0.5

    wet, params = augment.add_reverb(np.r_[1.0, np.zeros(15999)], rng)
    assert np.abs(wet[8000:]).sum() < np.abs(wet[:8000]).sum() and np.abs(wet[100:2000]).max() > 0
