"""Buckeye: sNN/sNNMMx.{wav,words,phones,txt} tracks (ESPS xlabel alignments), cut into segments."""

import json

import pytest
from conftest import write_recording

from speechssl.corpora import CorpusError, prepare
from speechssl.corpora.buckeye import default_split
from speechssl.data.manifests import load_cuts
from speechssl.downstream.tasks.asv import read_trials

RATE = 16000
HEADER = """signal {track}
type 0
color 121
comment created using xlabel Tue Mar 25 12:00:00 2003
font -misc-*-bold-*-*-*-15-*-*-*-*-*-*-*
separator ;
nfields {nfields}
#
"""

# (end time, label) of one track's .words file; a label's start is the previous end.
WORDS = [
    (0.20, "{B_TRANS}; {B_TRANS}; {B_TRANS}; null"),
    (0.50, "okay; ow k ey; k ey; UH"),
    (0.70, "um; ah m; ah m; UH"),
    (0.80, "<SIL>; <SIL>; <SIL>; null"),  # short pause: stays inside the segment
    (1.00, "i; ay; ah; PRP"),
    (1.10, "<CUTOFF-gr=grew>; g r; g r; null"),  # the speaker talking: inside, not a word
    (1.40, "grew; g r uw; g r uw; VBD"),
    (1.70, "<SIL>; <SIL>; <SIL>; null"),
    (2.00, "<VOCNOISE>; <VOCNOISE>; <VOCNOISE>; null"),  # 0.3 + 0.3 s of non-speech: a pause
    (2.30, "up; ah p; ah p; RP"),
    (2.60, "here; h ih r; h ih r; RB"),
    (3.20, "<IVER>; <IVER>; <IVER>; null"),  # the interviewer: always a break
    (3.50, "yeah; y ae; y ae; UH"),
    (3.40, "so; s ow; s ow; RB"),  # timing error (ends before it starts): left out, a break
    (3.80, "right; r ay t; r ay; JJ"),
    (3.90, "{E_TRANS}; {E_TRANS}; {E_TRANS}; null"),
]
PHONES = [(0.20, "{B_TRANS}"), (0.30, "k"), (0.40, "ey;"), (0.50, "ey"), (0.60, "ah"), (0.70, "m"),
          (0.80, "SIL"), (1.00, "ah"), (1.10, "g"), (1.20, "g"), (1.30, "r+1"), (1.40, "uw"), (1.70, "SIL"),
          (2.00, "VOCNOISE"), (2.15, "ah"), (2.30, "p"), (2.40, "h"), (2.50, "ih"), (2.60, "r"),
          (3.20, "IVER"), (3.35, "y"), (3.50, "ae"), (3.60, "r"), (3.70, "ay"), (3.80, "t"), (3.90, "{E_TRANS}")]
SECONDS = 4.0



def make_track(root, track, *, seed=0):
    folder = root / track[:3]
    write_recording(folder / f"{track}.wav", SECONDS, RATE, seed=seed, subtype="PCM_16")
    (folder / f"{track}.words").write_text(HEADER.format(track=track, nfields=4) + "".join(
        f"    {end:.6f}  121 {label}\n" for end, label in WORDS), encoding="latin-1")
    (folder / f"{track}.phones").write_text(HEADER.format(track=track, nfields=1) + "".join(
        f"    {end:.6f}  121 {label}\n" for end, label in PHONES), encoding="latin-1")
    (folder / f"{track}.txt").write_text("okay um i grew up here\nyeah right\n")
    (folder / f"{track}.log").write_text(HEADER.format(track=track, nfields=1) + "    3.900000  121 <VOICE=modal>\n")


def make_buckeye(root):
    # s01: train, s20: dev, s25 + s37: test (the fixed split); s01 has two tracks.
    for seed, track in enumerate(["s0101a", "s0101b", "s2001a", "s2502a", "s3701a"]):
        make_track(root, track, seed=seed)


def test_fixed_split_is_speaker_disjoint_and_balanced():
    split = default_split()
    test = sorted(s for s, x in split.items() if x == "test")
    dev = sorted(s for s, x in split.items() if x == "dev")
    assert test == ["s25", "s27", "s34", "s36", "s37", "s38", "s39", "s40"]
    assert dev == ["s20", "s31", "s33", "s35"] and len(split) == 40


def test_buckeye_segments_labels_and_alignments(tmp_path):
    make_buckeye(tmp_path / "buckeye")
    info = prepare("buckeye", tmp_path / "buckeye", tmp_path / "out")
    cuts = {s: list(load_cuts(tmp_path / "out", s)) for s in ("train", "dev", "test")}
    # Per track: "okay um i grew" | "up here" | "yeah" | "right" (the mistimed "so" breaks and is left out).
    assert [len(cuts[s]) for s in ("train", "dev", "test")] == [8, 4, 8]
    assert info["words_with_bad_timing_left_out"] == 5 and info["tracks"] == 5
    assert info["speakers_by_split"] == {"train": ["s01"], "dev": ["s20"], "test": ["s25", "s37"]}
    assert not info["skipped"]
    first = next(c for c in cuts["train"] if c.id == "s0101a_0000")
    sup = first.supervisions[0]
    assert first.start == pytest.approx(0.2) and first.duration == pytest.approx(1.2)
    assert first.recording.duration == pytest.approx(SECONDS) and first.recording.sampling_rate == RATE
    assert sup.text == "okay um i grew" and sup.speaker == "s01" and sup.gender == "f" and sup.language == "en"
    assert sup.custom["words"] == ["okay", "um", "i", "grew"]
    assert sup.custom["pos"] == ["UH", "UH", "PRP", "VBD"]
    assert sup.custom["word_alignment"] == [[0.0, 0.3, "okay"], [0.3, 0.5, "um"], [0.6, 0.8, "i"],
                                            [0.9, 1.2, "grew"]]
    assert sup.custom["phonemes"] == "k ey ey ah m ah g g r uw"  # "ey;" and "r+1" stripped, SIL dropped
    assert sup.custom["age"] == "young" and sup.custom["track"] == "s0101a"
    second = next(c for c in cuts["train"] if c.id == "s0101a_0001")
    assert second.start == pytest.approx(2.0) and second.duration == pytest.approx(0.6)
    assert second.supervisions[0].custom["phonemes"] == "ah p h ih r"
    assert second.supervisions[0].custom["word_alignment"][1] == [0.3, 0.6, "here"]
    texts = [c.supervisions[0].text for c in sorted(cuts["test"], key=lambda c: c.id)][:4]
    assert texts == ["okay um i grew", "up here", "yeah", "right"]
    assert {c.supervisions[0].gender for c in cuts["test"]} == {"f"}  # s25 and s37 are both women
    trials = read_trials(tmp_path / "out" / "trials" / "asv_test.tsv")
    speaker = {c.id: c.supervisions[0].speaker for c in cuts["test"]}
    assert trials and {label for *_, label in trials} == {0, 1}
    assert all((speaker[a] == speaker[b]) == bool(label) for a, b, label in trials)


def test_buckeye_options_pause_max_duration_and_speakers(tmp_path):
    make_buckeye(tmp_path / "buckeye")
    info = prepare("buckeye", tmp_path / "buckeye", tmp_path / "out", pause="0.7", max_duration="0.7",
                   test_speakers="s01", dev_speakers="20")
    assert info["speakers_by_split"] == {"train": ["s25", "s37"], "dev": ["s20"], "test": ["s01"]}
    train = {c.id: c for c in load_cuts(tmp_path / "out", "train")}
    # pause 0.7: "okay um i grew up here" is one run (1.5 s of words around a 0.6 s pause), cut at its
    # longest gap (the pause) then at the 0.1 s gaps until every piece fits 0.7 s.
    texts = [train[f"s2502a_{i:04d}"].supervisions[0].text for i in range(5)]
    assert texts == ["okay um", "i grew", "up here", "yeah", "right"]
    assert info["segments_cut_for_length"] == 2 * 5  # two cuts in each of the 5 tracks
    assert all(c.duration <= 0.7 + 1e-6 for c in train.values())
    with pytest.raises(CorpusError, match="in both test_speakers and dev_speakers"):
        prepare("buckeye", tmp_path / "buckeye", tmp_path / "out", test_speakers="s01", dev_speakers="s01")


def test_buckeye_names_everything_missing_at_once(tmp_path):
    root = tmp_path / "buckeye"
    make_buckeye(root)
    (root / "s01" / "s0101b.wav").unlink()
    (root / "s20" / "s2001a.phones").unlink()
    with pytest.raises(CorpusError) as raised:
        prepare("buckeye", root, tmp_path / "out")
    message = str(raised.value)
    assert "2 file(s) missing beside their .words file" in message
    assert "s01/s0101b.wav" in message and "s20/s2001a.phones" in message
    zipped = tmp_path / "zipped"
    zipped.mkdir()
    (zipped / "s01.zip").write_bytes(b"PK")
    with pytest.raises(CorpusError, match="found 1 zip archive\\(s\\) such as s01.zip: unzip"):
        prepare("buckeye", zipped, tmp_path / "out")


def test_buckeye_lists_an_unreadable_track(tmp_path):
    root = tmp_path / "buckeye"
    make_buckeye(root)
    (root / "s37" / "s3701a.wav").write_bytes(b"RIFF" + bytes(30))
    info = prepare("buckeye", root, tmp_path / "out")
    assert len(info["skipped"]) == 4 and {s["id"][:6] for s in info["skipped"]} == {"s3701a"}
    assert all("not readable audio" in s["reason"] for s in info["skipped"])
    assert json.loads((tmp_path / "out" / "corpus.json").read_text())["splits"]["test"]["utterances"] == 4
