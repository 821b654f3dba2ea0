"""librispeech and librilight recipes on mini trees in the real layouts (16 kHz mono FLAC)."""

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechssl.corpora import CorpusError, prepare
from speechssl.data.manifests import load_cuts

RATE = 16000

SPEAKERS_TXT = """\
; Each line of this file has the speaker ID, reader sex, subset, minutes and name.
;ID  |SEX| SUBSET           |MINUTES| NAME
19   | F | train-clean-100  | 25.19 | Kara Shallenberg
60   | M | train-clean-100  | 20.18 | |CBW|Simon
84   | F | dev-clean        |  8.02 | Christie Nowak
174  | M | dev-clean        |  8.04 | Peter Eastman
121  | F | test-clean       |  8.03 | Nikolle Doolin
1089 | M | test-clean       |  8.02 | Fred Hart
103  | F | train-clean-100  | 25.00 | Libri-Light clean speaker
"""

# subset -> speaker -> chapter -> number of utterances
LIBRISPEECH = {
    "train-clean-100": {"19": {"198": 2}, "60": {"121082": 1}},
    "dev-clean": {"84": {"121123": 2}, "174": {"50561": 1}},
    "test-clean": {"1089": {"134686": 2}, "121": {"121726": 2}},
}


def _samples(utt: str) -> int:
    """A distinct length (0.3-0.9 s) for each utterance id, so durations are checked per file."""
    return 4800 + (sum(map(ord, utt)) * 37) % 9600


def _write_flac(path: Path, samples: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(seed).normal(0, 0.1, samples).astype("float32")
    sf.write(path, noise, RATE, format="FLAC")


def _chapter(top: Path, speaker: str, chapter: str, count: int) -> dict[str, str]:
    """One <speaker>/<chapter>/ folder with ``count`` utterances; returns id -> transcript."""
    folder = top / speaker / chapter
    texts = {}
    for i in range(count):
        utt = f"{speaker}-{chapter}-{i:04d}"
        texts[utt] = f"TRANSCRIPT {i} OF CHAPTER {chapter} READ BY {speaker} IT'S FINE"
        _write_flac(folder / f"{utt}.flac", _samples(utt), seed=i)
    (folder / f"{speaker}-{chapter}.trans.txt").write_text("".join(f"{u} {t}\n" for u, t in texts.items()))
    return texts


def make_librispeech(parent: Path, subsets=LIBRISPEECH) -> tuple[Path, dict[str, dict[str, str]]]:
    base = parent / "LibriSpeech"
    base.mkdir(parents=True)
    (base / "SPEAKERS.TXT").write_text(SPEAKERS_TXT)
    for name in ("CHAPTERS.TXT", "BOOKS.TXT", "LICENSE.TXT", "README.TXT"):
        (base / name).write_text("; not read\n")
    texts: dict[str, dict[str, str]] = {}
    for subset, speakers in subsets.items():
        texts[subset] = {}
        for speaker, chapters in speakers.items():
            for chapter, count in chapters.items():
                texts[subset].update(_chapter(base / subset, speaker, chapter, count))
    return base, texts


def _check_cuts(out: Path, split: str, texts: dict[str, str]):
    cuts = load_cuts(out, split)
    assert sorted(c.id for c in cuts) == sorted(texts)
    for cut in cuts:
        sup = cut.supervisions[0]
        assert sup.text == texts[cut.id]
        assert sup.language == "en"
        assert sup.speaker == cut.id.split("-")[0]
        assert cut.recording.sampling_rate == RATE
        assert cut.duration == pytest.approx(_samples(cut.id) / RATE, abs=1e-4)
    return cuts


def test_librispeech_all_subsets_from_the_parent_dir(tmp_path):
    base, texts = make_librispeech(tmp_path / "data")
    out = tmp_path / "out"
    info = prepare("librispeech", tmp_path / "data", out)

    assert info["subsets"] == ["train-clean-100", "dev-clean", "test-clean"]
    assert info["root"] == str(base.resolve())
    assert {s: e["utterances"] for s, e in info["splits"].items()} == {
        "dev-clean": 3, "test-clean": 4, "train-clean-100": 3}
    assert info["splits"]["test-clean"]["speakers"] == 2
    assert info["splits"]["dev-clean"]["languages"] == {"en": 3}
    assert info["skipped"] == []
    for subset in LIBRISPEECH:
        cuts = _check_cuts(out, subset, texts[subset])
        for cut in cuts:
            assert cut.supervisions[0].custom["subset"] == subset
            assert cut.supervisions[0].custom["chapter"] == cut.id.split("-")[1]
    genders = {c.supervisions[0].speaker: c.supervisions[0].gender
               for s in LIBRISPEECH for c in load_cuts(out, s)}
    # "60 | M | ... | |CBW|Simon": a name containing '|' does not shift the columns
    assert genders == {"19": "f", "60": "m", "84": "f", "174": "m", "121": "f", "1089": "m"}

    # balanced, seeded ASV trials for the test-* subsets only
    assert set(info["trials"]) == {"test-clean"}
    rows = (out / "trials" / "asv_test-clean.tsv").read_text().splitlines()
    assert rows[0] == "enroll\ttest\tlabel"
    labels = [int(r.split("\t")[2]) for r in rows[1:]]
    assert labels.count(1) == labels.count(0) > 0
    ids = set(texts["test-clean"])
    assert all(r.split("\t")[0] in ids and r.split("\t")[1] in ids for r in rows[1:])
    assert "lm_text" not in info


def test_librispeech_root_is_the_librispeech_dir_and_subsets_option(tmp_path):
    base, texts = make_librispeech(tmp_path)
    (base / "SPEAKERS.TXT").unlink()
    out = tmp_path / "out"
    info = prepare("librispeech", base, out, subsets="dev-clean, test-clean")
    assert sorted(info["splits"]) == ["dev-clean", "test-clean"]
    assert info["trials"]["test-clean"]["count"] > 0
    assert "SPEAKERS.TXT" in info["gender_note"]
    cuts = _check_cuts(out, "dev-clean", texts["dev-clean"])
    assert all(c.supervisions[0].gender is None for c in cuts)


def test_librispeech_partial_tree_one_error_names_everything(tmp_path):
    base, _ = make_librispeech(tmp_path)
    (base / "dev-clean" / "174" / "50561" / "174-50561.trans.txt").unlink()
    (base / "test-clean" / "121" / "121726" / "121-121726-0001.flac").unlink()
    with pytest.raises(CorpusError) as err:
        prepare("librispeech", tmp_path, tmp_path / "out", subsets="dev-clean,test-clean,test-other")
    message = str(err.value)
    assert "test-other/" in message  # a named subset that is missing
    assert "174/50561" in message and "trans.txt" in message
    assert "121-121726-0001" in message
    assert not (tmp_path / "out").exists()

    with pytest.raises(CorpusError, match="unknown subset"):
        prepare("librispeech", base, tmp_path / "out", subsets="train-clean-101")
    with pytest.raises(CorpusError, match="no LibriSpeech subset"):
        prepare("librispeech", tmp_path / "LibriSpeech" / "dev-clean", tmp_path / "out")


def test_librispeech_unreadable_flac_is_listed_as_skipped(tmp_path):
    base, _ = make_librispeech(tmp_path)
    bad = base / "dev-clean" / "84" / "121123" / "84-121123-0001.flac"
    bad.write_bytes(b"fLaC but not really")
    out = tmp_path / "out"
    info = prepare("librispeech", tmp_path, out)
    assert [s["id"] for s in info["skipped"]] == ["84-121123-0001"]
    assert info["skipped"][0]["file"] == str(bad.resolve())
    assert "not readable audio" in info["skipped"][0]["reason"]
    saved = json.loads((out / "corpus.json").read_text())
    assert saved["skipped"] == info["skipped"]
    assert len(load_cuts(out, "dev-clean")) == 2


def test_librispeech_lm_text_is_recorded_not_copied(tmp_path):
    make_librispeech(tmp_path, {"dev-clean": LIBRISPEECH["dev-clean"]})
    lm_dir = tmp_path / "lm"
    lm_dir.mkdir()
    lines = ["A", "TINY", "LM CORPUS OF FIVE LINES", "", "THE LAST WITHOUT A NEWLINE"]
    text = "\n".join(lines)
    plain = lm_dir / "librispeech-lm-norm.txt"
    plain.write_text(text)
    out = tmp_path / "out"
    info = prepare("librispeech", tmp_path, out, lm_text=str(plain))
    assert info["lm_text"] == {"path": str(plain.resolve()), "lines": 5, "bytes": plain.stat().st_size,
                               "gzip": False}
    assert json.loads((out / "corpus.json").read_text())["lm_text"]["lines"] == 5
    assert sorted(p.name for p in out.iterdir()) == ["corpus.json", "manifests"]  # nothing copied

    packed = lm_dir / "librispeech-lm-norm.txt.gz"
    with gzip.open(packed, "wt") as handle:
        handle.write(text + "\n")
    plain.unlink()
    info = prepare("librispeech", tmp_path, out, lm_text=str(lm_dir))  # a directory holding it
    assert info["lm_text"]["path"] == str(packed.resolve())
    assert info["lm_text"]["lines"] == 5 and info["lm_text"]["gzip"] is True

    packed.write_bytes(b"not gzip at all")
    with pytest.raises(CorpusError, match="cannot read the LM text"):
        prepare("librispeech", tmp_path, out, lm_text=str(packed))
    with pytest.raises(CorpusError, match="lm_text=.*no such file"):
        prepare("librispeech", tmp_path, out, lm_text=str(tmp_path / "missing.txt"))


# ---------------------------------------------------------------- librilight


def make_librilight(parent: Path) -> tuple[Path, dict[str, dict[str, str]]]:
    """librispeech_finetuning/1h/{0..5}/{clean,other}/ and 9h/{clean,other}/, one chapter each
    (two in 9h); returns fold -> id -> transcript."""
    base = parent / "librispeech_finetuning"
    texts: dict[str, dict[str, str]] = {}
    for fold in range(6):
        key = f"1h/{fold}"
        texts[key] = {}
        texts[key].update(_chapter(base / key / "clean", str(103 + fold), str(1240 + fold), 1))
        texts[key].update(_chapter(base / key / "other", str(1001 + fold), str(134700 + fold), 2))
    texts["9h"] = {}
    texts["9h"].update(_chapter(base / "9h" / "clean", "200", "126784", 2))
    texts["9h"].update(_chapter(base / "9h" / "other", "2000", "126785", 1))
    (base / "phones").mkdir()
    (base / "phones" / "phone_mapping.json").write_text("{}")
    return base, texts


@pytest.mark.parametrize("split_set, folds", [
    ("10min", ["1h/0"]),
    ("1h", [f"1h/{i}" for i in range(6)]),
    ("10h", [f"1h/{i}" for i in range(6)] + ["9h"]),
])
def test_librilight_split_sets(tmp_path, split_set, folds):
    base, texts = make_librilight(tmp_path)
    out = tmp_path / "out"
    info = prepare("librilight", tmp_path, out, split_set=split_set)
    assert info["root"] == str(base.resolve())
    assert list(info["splits"]) == ["train"]  # no dev/test without librispeech=
    assert info["folds"] == folds and info["librispeech"] is None
    expected = {u: t for f in folds for u, t in texts[f].items()}
    cuts = _check_cuts(out, "train", expected)
    for cut in cuts:
        custom = cut.supervisions[0].custom
        fold = next(f for f in folds if cut.id in texts[f])
        assert custom["fold"] == fold
        assert custom["condition"] in ("clean", "other")
        assert custom["subset"] == {"clean": "train-clean-100", "other": "train-other-500"}[custom["condition"]]


def test_librilight_with_librispeech_dev_test(tmp_path):
    base, _ = make_librilight(tmp_path / "ll")
    ls_base, ls_texts = make_librispeech(tmp_path / "ls")
    out = tmp_path / "out"
    # ROOT = librispeech_finetuning itself; librispeech= the parent of LibriSpeech/
    info = prepare("librilight", base, out, split_set="10min", librispeech=str(tmp_path / "ls"))
    assert sorted(info["splits"]) == ["dev-clean", "test-clean", "train"]
    assert info["librispeech"] == str(ls_base)
    assert info["splits"]["train"]["utterances"] == 3
    _check_cuts(out, "dev-clean", ls_texts["dev-clean"])
    _check_cuts(out, "test-clean", ls_texts["test-clean"])
    assert "train-clean-100" not in info["splits"]  # only dev-*/test-* come from LibriSpeech
    assert info["trials"]["test-clean"]["count"] > 0
    genders = {c.supervisions[0].speaker: c.supervisions[0].gender for c in load_cuts(out, "train")}
    assert genders == {"103": "f", "1001": None}  # SPEAKERS.TXT of the LibriSpeech ROOT


def test_librilight_partial_tree_one_error(tmp_path):
    base, _ = make_librilight(tmp_path)
    shutil.rmtree(base / "1h" / "3")
    shutil.rmtree(base / "9h" / "other")
    stray = base / "1h" / "0" / "clean" / "103" / "1240" / "103-1240-0009.flac"
    _write_flac(stray, 8000)  # audio without a transcript line
    with pytest.raises(CorpusError) as err:
        prepare("librilight", tmp_path, tmp_path / "out", split_set="10h",
                librispeech=str(tmp_path / "no-such-dir"))
    message = str(err.value)
    assert "1h/3/" in message and "9h/other/" in message
    assert "103-1240-0009" in message
    assert "librispeech=" in message and "no-such-dir" in message
    with pytest.raises(CorpusError, match="split_set"):
        prepare("librilight", tmp_path, tmp_path / "out", split_set="5h")
    # 9h and 1h/3 are not needed for the 10-minute set
    stray.unlink()
    info = prepare("librilight", tmp_path, tmp_path / "out", split_set="10min")
    assert info["splits"]["train"]["utterances"] == 3


def test_librilight_unreadable_and_pruned_transcripts(tmp_path):
    base, _ = make_librilight(tmp_path)
    bad = base / "1h" / "0" / "other" / "1001" / "134700" / "1001-134700-0000.flac"
    bad.write_bytes(b"")
    # a transcript line whose audio is not in this fold (Libri-Light prunes them; ignored, counted)
    trans = base / "1h" / "0" / "clean" / "103" / "1240" / "103-1240.trans.txt"
    trans.write_text(trans.read_text() + "103-1240-0042 A LINE OF ANOTHER FOLD\n")
    info = prepare("librilight", tmp_path, tmp_path / "out", split_set="10min")
    assert [(s["id"], s["reason"]) for s in info["skipped"]] == [("1001-134700-0000", "empty file")]
    assert info["transcript_lines_without_audio"] == 1
    assert info["splits"]["train"]["utterances"] == 2
