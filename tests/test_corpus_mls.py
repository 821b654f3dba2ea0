"""mls recipe on a mini Multilingual LibriSpeech tree in the real layout: mls_french/ with
16 kHz FLAC and limited-supervision lists, mls_polish_opus/ with Ogg Opus files."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechssl.corpora import CorpusError, prepare
from speechssl.data.manifests import load_cuts

RATE = 16000

METAINFO = """\
 SPEAKER   |   GENDER   | PARTITION  |  MINUTES   |  BOOK ID   |             TITLE              |            CHAPTER
  1406     |     F      |   train    |   12.345   |   1028     | Les Misérables | Livre premier - Un juste
  2223     |     M      |   train    |   10.001   |   1146     | Contes | Le Petit Poucet
  2506     |     M      |    dev     |   9.123    |   11731    | Fables | La Cigale et la Fourmi
  2544     |     F      |    test    |   8.400    |   2011     | Poèmes | Demain, dès l'aube
  2587     |     M      |    test    |   8.200    |   1947     | Lettres | Lettre I
  6590     |     F      |   train    |   11.000   |   5410     | Pan Tadeusz | Księga pierwsza
  9152     |     M      |    dev     |   7.500    |   5409     | Ballady | Romantyczność
  7177     |     F      |    test    |   7.200    |   7188     | Lalka | Tom I
  9256     |     M      |    test    |   7.100    |   7189     | Faraon | Wstęp
"""

# language dir -> split -> [(speaker, book, number of utterances)]
TREE = {
    "mls_french": {
        "train": [("1406", "1028", 6), ("2223", "1146", 4)],
        "dev": [("2506", "11731", 2)],
        "test": [("2544", "2011", 2), ("2587", "1947", 2)],
    },
    "mls_polish_opus": {
        "train": [("6590", "5410", 3)],
        "dev": [("9152", "5409", 1)],
        "test": [("7177", "7188", 1), ("9256", "7189", 1)],
    },
}
# train/limited_supervision lists of mls_french (ids as MLS writes them)
HANDLES = {f"1hr/{i}": [f"1406_1028_{i:06d}"] for i in range(6)} | {"9hr": ["2223_1146_000000", "2223_1146_000001"]}


def _samples(mls_id: str) -> int:
    return 4800 + (sum(map(ord, mls_id)) * 53) % 9600


def make_mls(root: Path) -> dict[str, dict[str, str]]:
    """The tree; returns our utterance id (``<iso>_<mls id>``) -> transcript, per split."""
    texts: dict[str, dict[str, str]] = {"train": {}, "dev": {}, "test": {}}
    for lang_dir, splits in TREE.items():
        opus = lang_dir.endswith("_opus")
        iso = "pl" if "polish" in lang_dir else "fr"
        base = root / lang_dir
        base.mkdir(parents=True)
        (base / "metainfo.txt").write_text(METAINFO, encoding="utf-8")
        (base / "README").write_text("MLS\n")
        for split, books in splits.items():
            lines, segments = [], []
            for speaker, book, count in books:
                for i in range(count):
                    mls_id = f"{speaker}_{book}_{i:06d}"
                    text = f"la phrase numéro {i} du livre {book} lue par {speaker}"
                    lines.append(f"{mls_id}\t{text}")
                    segments.append(f"{mls_id}\thttp://www.archive.org/download/x/y_64kb.mp3\t{10 + i}.5\t{20 + i}.25")
                    texts[split][f"{iso}_{mls_id}"] = text
                    path = base / split / "audio" / speaker / book / (mls_id + (".opus" if opus else ".flac"))
                    path.parent.mkdir(parents=True, exist_ok=True)
                    noise = np.random.default_rng(i).normal(0, 0.1, _samples(mls_id)).astype("float32")
                    if opus:
                        sf.write(path, noise, RATE, format="OGG", subtype="OPUS")
                    else:
                        sf.write(path, noise, RATE, format="FLAC")
            (base / split / "transcripts.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
            (base / split / "segments.txt").write_text("\n".join(segments) + "\n", encoding="utf-8")
    for fold, ids in HANDLES.items():
        path = root / "mls_french" / "train" / "limited_supervision" / fold / "handles.txt"
        path.parent.mkdir(parents=True)
        path.write_text("\n".join(ids) + "\n")
    (root / "mls_lm_french").mkdir()  # the LM release: ignored
    return texts


def _check(out: Path, split: str, texts: dict[str, str]):
    cuts = load_cuts(out, split)
    assert sorted(c.id for c in cuts) == sorted(texts)
    for cut in cuts:
        sup = cut.supervisions[0]
        iso, mls_id = cut.id.split("_", 1)
        assert sup.text == texts[cut.id]
        assert sup.language == iso
        assert sup.speaker == mls_id.split("_")[0]
        assert sup.custom["mls_id"] == mls_id and sup.custom["book"] == mls_id.split("_")[1]
        assert cut.duration == pytest.approx(_samples(mls_id) / RATE, abs=1e-3)
    return cuts


def test_mls_all_languages(tmp_path):
    texts = make_mls(tmp_path / "mls")
    out = tmp_path / "out"
    info = prepare("mls", tmp_path / "mls", out)
    assert {s: e["utterances"] for s, e in info["splits"].items()} == {"dev": 3, "test": 6, "train": 13}
    assert info["splits"]["train"]["languages"] == {"fr": 10, "pl": 3}
    assert info["splits"]["test"]["speakers"] == 4
    assert info["languages"]["french"] == {"iso": "fr", "dir": str(tmp_path / "mls" / "mls_french"), "audio": "flac"}
    assert info["languages"]["polish"]["audio"] == "opus"
    assert info["limited_supervision"] is None and info["skipped"] == []
    for split in ("train", "dev", "test"):
        _check(out, split, texts[split])
    train = {c.id: c.supervisions[0] for c in load_cuts(out, "train")}
    assert train["fr_1406_1028_000003"].custom["limited_supervision"] == "1hr/3"
    assert train["fr_2223_1146_000001"].custom["limited_supervision"] == "9hr"
    assert "limited_supervision" not in train["fr_2223_1146_000003"].custom
    assert train["fr_1406_1028_000000"].gender == "f" and train["fr_2223_1146_000000"].gender == "m"
    assert train["pl_6590_5410_000000"].gender == "f"
    # trials within a language only
    rows = [r.split("\t") for r in (out / "trials" / "asv_test.tsv").read_text().splitlines()[1:]]
    assert rows and all(a[:3] == b[:3] for a, b, _ in rows)
    labels = [int(r[2]) for r in rows]
    assert labels.count(1) == labels.count(0)


@pytest.mark.parametrize("limited, count", [("10min", 1), ("1h", 6), ("9h", 2), ("10h", 8)])
def test_mls_limited_supervision(tmp_path, limited, count):
    texts = make_mls(tmp_path)
    out = tmp_path / "out"
    info = prepare("mls", tmp_path, out, language="fr", limited_supervision=limited)
    assert info["limited_supervision"] == limited
    assert {s: e["utterances"] for s, e in info["splits"].items()} == {"dev": 2, "test": 4, "train": count}
    cuts = load_cuts(out, "train")
    assert all(c.supervisions[0].custom["limited_supervision"] for c in cuts)
    _check(out, "dev", {k: v for k, v in texts["dev"].items() if k.startswith("fr_")})


def test_mls_root_is_one_language_dir_and_options(tmp_path):
    texts = make_mls(tmp_path)
    out = tmp_path / "out"
    info = prepare("mls", tmp_path / "mls_polish_opus", out, splits="dev,test")
    assert sorted(info["splits"]) == ["dev", "test"]
    _check(out, "test", {k: v for k, v in texts["test"].items() if k.startswith("pl_")})
    info = prepare("mls", tmp_path, out, language="french,polish", splits="test")
    assert info["splits"]["test"]["languages"] == {"fr": 4, "pl": 2}
    # both releases of one language: the FLAC one is used
    shutil.copytree(tmp_path / "mls_french", tmp_path / "mls_french_opus")
    info = prepare("mls", tmp_path, out, language="french", splits="dev")
    assert info["languages"]["french"]["audio"] == "flac"
    assert info["languages"]["french"]["ignored"] == "mls_french_opus"


def test_mls_partial_tree_one_error_names_everything(tmp_path):
    make_mls(tmp_path)
    shutil.rmtree(tmp_path / "mls_french" / "dev")
    (tmp_path / "mls_french" / "test" / "transcripts.txt").unlink()
    (tmp_path / "mls_polish_opus" / "train" / "audio" / "6590" / "5410" / "6590_5410_000001.opus").unlink()
    (tmp_path / "mls_french" / "train" / "limited_supervision" / "9hr" / "handles.txt").unlink()
    with pytest.raises(CorpusError) as err:
        prepare("mls", tmp_path, tmp_path / "out", language="all", limited_supervision="10h")
    message = str(err.value)
    assert "mls_french/dev/" in message
    assert "mls_french/test/transcripts.txt" in message
    assert "6590_5410_000001.opus" in message
    # polish has no limited-supervision lists at all, french lacks one
    assert "mls_polish_opus/train/limited_supervision/" in message
    assert "mls_french/train/limited_supervision/9hr/handles.txt" in message
    assert not (tmp_path / "out").exists()

    with pytest.raises(CorpusError) as err:
        prepare("mls", tmp_path, tmp_path / "out", language="german,klingon")
    assert "mls_german/" in str(err.value) and "klingon" in str(err.value)
    with pytest.raises(CorpusError, match="limited_supervision"):
        prepare("mls", tmp_path, tmp_path / "out", limited_supervision="5h")
    with pytest.raises(CorpusError, match="no mls_<language>/"):
        prepare("mls", tmp_path / "mls_lm_french", tmp_path / "out")


def test_mls_unreadable_audio_is_skipped(tmp_path):
    make_mls(tmp_path)
    bad = tmp_path / "mls_polish_opus" / "dev" / "audio" / "9152" / "5409" / "9152_5409_000000.opus"
    bad.write_bytes(b"OggS garbage")
    broken = tmp_path / "mls_french" / "dev" / "audio" / "2506" / "11731" / "2506_11731_000001.flac"
    broken.write_bytes(b"\x00" * 100)
    out = tmp_path / "out"
    info = prepare("mls", tmp_path, out, splits="dev")
    assert sorted(s["id"] for s in info["skipped"]) == ["fr_2506_11731_000001", "pl_9152_5409_000000"]
    assert json.loads((out / "corpus.json").read_text())["skipped"] == info["skipped"]
    assert [c.id for c in load_cuts(out, "dev")] == ["fr_2506_11731_000000"]
