"""CoVoST 2: covost_v2.<src>_<tgt>.tsv translation tables over Common Voice clips (mp3, 48 kHz)."""

import numpy as np
import pytest
import soundfile as sf

from speechssl.corpora import CorpusError, prepare
from speechssl.data.manifests import load_cuts
from speechssl.downstream.tasks.asv import read_trials

RATE = 48000  # Common Voice 4 clips: mp3 at 48 kHz (soundfile here writes MP3, so the fakes are real mp3)


def _mp3(path, seconds, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.3 * np.sin(2 * np.pi * 180 * t) + 0.05 * rng.standard_normal(t.size)).astype("float32"),
             RATE, format="MP3")


def _tsv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")


# (clip number, client, CoVoST split)
CLIPS = [(1, "c1", "train"), (2, "c1", "train_covost"), (3, "c2", "train"), (4, "c3", "dev"),
         (5, "c4", "test"), (6, "c4", "test"), (7, "c5", "test"), (8, "c5", "test")]


def make_fr_en(root):
    """The released fr_en table (path, translation, split) + Common Voice's fr/validated.tsv and clips."""
    seconds = {}
    for n, client, _ in CLIPS:
        seconds[f"common_voice_fr_{n:08d}"] = 0.4 + 0.05 * n
        _mp3(root / "fr" / "clips" / f"common_voice_fr_{n:08d}.mp3", 0.4 + 0.05 * n, seed=n)
    _tsv(root / "covost_v2.fr_en.tsv", ["path", "translation", "split"],
         [[f"common_voice_fr_{n:08d}.mp3", f"English {n}, \\\"quoted\\\".", split] for n, _, split in CLIPS]
         + [["common_voice_fr_00000099.mp3", "excluded row", "other"]])
    _tsv(root / "fr" / "validated.tsv", ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender",
                                          "accent"],
         [[client, f"common_voice_fr_{n:08d}.mp3", f"Phrase {n} \"entre guillemets\".", "2", "0", "twenties",
           "female" if n % 2 else "male", "france"] for n, client, _ in CLIPS]
         + [["c9", "common_voice_fr_00000099.mp3", "hors", "2", "0", "", "", ""]])
    return seconds


def test_covost2_joins_common_voice_and_keeps_official_splits(tmp_path):
    seconds = make_fr_en(tmp_path / "cv")
    info = prepare("covost2", tmp_path / "cv", tmp_path / "out", source="fr", target="en")
    cuts = {s: list(load_cuts(tmp_path / "out", s)) for s in ("train", "dev", "test")}
    assert [len(cuts[s]) for s in ("train", "dev", "test")] == [3, 1, 4]
    assert info["other_split_rows"] == {"other": 1} and not info["skipped"]
    assert info["splits"]["test"] == {"utterances": 4, "speakers": 2, "languages": {"fr": 4}}
    by_id = {c.id: c for split in cuts.values() for c in split}
    sup = by_id["common_voice_fr_00000002"].supervisions[0]
    assert sup.text == 'Phrase 2 "entre guillemets".' and sup.language == "fr"
    assert sup.custom == {"translations": {"en": 'English 2, "quoted".'}, "covost_split": "train_covost"}
    assert sup.speaker == "c1" and sup.gender == "m"
    assert by_id["common_voice_fr_00000003"].supervisions[0].gender == "f"
    for utt, cut in by_id.items():
        assert cut.recording.sampling_rate == RATE
        assert cut.duration == pytest.approx(seconds[utt], abs=0.03)
    trials = read_trials(tmp_path / "out" / "trials" / "asv_test.tsv")
    speaker = {c.id: c.supervisions[0].speaker for c in cuts["test"]}
    assert trials and {label for *_, label in trials} == {0, 1}
    assert all((speaker[a] == speaker[b]) == bool(label) for a, b, label in trials)
    # One table in ROOT: source and target are found from its name.
    assert prepare("covost2", tmp_path / "cv", tmp_path / "out2")["targets"] == ["en"]


def test_covost2_table_with_all_columns_and_several_targets(tmp_path):
    root = tmp_path / "cv"
    header = ["path", "sentence", "translation", "client_id", "split"]
    rows = {t: [[f"common_voice_en_{n}.mp3", f"Sentence {n}.", f"{t} {n}", f"spk{n % 2}", split]
                for n, split in [(1, "train"), (2, "train"), (3, "dev"), (4, "test")]] for t in ("de", "ja")}
    rows["ja"] = rows["ja"][:3]  # the ja table lacks the test row
    for t, table in rows.items():
        _tsv(root / f"covost_v2.en_{t}.tsv", header, table)
    clips = tmp_path / "cv" / "corpora" / "en-clips"
    for n in range(1, 5):
        _mp3(clips / f"common_voice_en_{n}.mp3", 0.5, seed=n)
    info = prepare("covost2", root, tmp_path / "out", source="en", target="de,ja", clips="corpora/en-clips")
    assert info["sentence_from"] == "covost table" and info["targets"] == ["de", "ja"]
    train = {c.id: c.supervisions[0] for c in load_cuts(tmp_path / "out", "train")}
    assert train["common_voice_en_1"].custom["translations"] == {"de": "de 1", "ja": "ja 1"}
    assert train["common_voice_en_1"].speaker == "spk1" and train["common_voice_en_1"].text == "Sentence 1."
    test = list(load_cuts(tmp_path / "out", "test"))
    assert test[0].supervisions[0].custom["translations"] == {"de": "de 4"}
    with pytest.raises(CorpusError, match="give --option source=XX --option target=YY"):
        prepare("covost2", root, tmp_path / "out2")  # two tables: which one?


def test_covost2_reads_the_per_split_tables_of_get_covost_splits(tmp_path):
    root = tmp_path / "cv"
    header = ["path", "sentence", "translation", "client_id"]
    for n, split in enumerate(["train", "dev", "test"]):
        _tsv(root / f"covost_v2.en_tr.{split}.tsv", header,
             [[f"common_voice_en_{n}.mp3", f"Sentence {n}.", f"Cümle {n}.", "spk"]])
        _mp3(root / "en" / "clips" / f"common_voice_en_{n}.mp3", 0.5, seed=n)
    info = prepare("covost2", root, tmp_path / "out")  # source/target from the file names
    assert (info["source"], info["targets"]) == ("en", ["tr"])
    assert {s: e["utterances"] for s, e in info["splits"].items()} == {"train": 1, "dev": 1, "test": 1}
    dev = list(load_cuts(tmp_path / "out", "dev"))[0].supervisions[0]
    assert dev.custom == {"translations": {"tr": "Cümle 1."}, "covost_split": "dev"} and dev.text == "Sentence 1."


def test_covost2_names_everything_missing_at_once(tmp_path):
    root = tmp_path / "cv"
    make_fr_en(root)
    for clip in (root / "fr" / "clips").iterdir():
        clip.unlink()
    (root / "fr" / "clips").rmdir()
    (root / "fr" / "validated.tsv").unlink()
    with pytest.raises(CorpusError) as raised:
        prepare("covost2", root, tmp_path / "out", source="fr", target="en,de")
    message = str(raised.value)
    assert "missing file covost_v2.fr_de.tsv" in message
    assert "fr/clips/ (Common Voice clips of 'fr'" in message
    assert "validated.tsv (Common Voice validated.tsv: covost_v2.fr_en.tsv has no sentence/client_id" in message
    make_fr_en(root)
    _tsv(root / "covost_v2.fr_en.tsv", ["path", "translation"], [["common_voice_fr_00000001.mp3", "x"]])
    with pytest.raises(CorpusError, match="covost_v2.fr_en.tsv: missing column\\(s\\) split"):
        prepare("covost2", root, tmp_path / "out", source="fr", target="en")


def test_covost2_missing_and_unreadable_clips(tmp_path):
    root = tmp_path / "cv"
    make_fr_en(root)
    (root / "fr" / "clips" / "common_voice_fr_00000003.mp3").unlink()
    (root / "fr" / "clips" / "common_voice_fr_00000004.mp3").write_bytes(b"ID3" + bytes(40))
    with pytest.raises(CorpusError, match="1 of 8 clips named in covost_v2.fr_en.tsv do not exist"):
        prepare("covost2", root, tmp_path / "out", source="fr", target="en")
    info = prepare("covost2", root, tmp_path / "out", source="fr", target="en", allow_missing="true")
    reasons = {s["id"]: s["reason"] for s in info["skipped"]}
    assert reasons["common_voice_fr_00000003"] == "file not found"
    assert "common_voice_fr_00000004" in reasons and len(reasons) == 2
    assert info["splits"]["train"]["utterances"] == 2 and "dev" not in info["splits"]
