"""The IEMOCAP recipe on a mini tree in the real IEMOCAP_full_release layout: per-turn wavs,
EmoEvaluation summary blocks with annotator lines, transcriptions, five sessions."""

import json
import shutil

import pytest
from conftest import write_recording

from speechssl.cli import main
from speechssl.corpora import CorpusError, prepare
from speechssl.data.manifests import load_cuts

RATE = 16000  # IEMOCAP sentences/wav: 16 kHz mono 16-bit PCM

# dialog suffix -> [(turn suffix, category, text)]; every session gets both dialogs.
DIALOGS = {
    "impro01": [("F000", "neu", "Excuse me."), ("M000", "exc", "Do you have your forms?"),
                ("F001", "fru", "Yeah."), ("M001", "ang", "Let me see them.")],
    "script01_1": [("F000", "sad", "What's he going to say?"), ("M000", "hap", "Maybe we should tell him."),
                   ("M001", "xxx", "Well.")],
}
ANNOTATIONS = "C-E2:\tNeutral;\t()\nC-E3:\tNeutral;\t()\nC-F1:\tNeutral;\t(curious)\nA-E3:\tval 3; act 2; dom  2;\t()\n"



def make_iemocap(root):
    """Five sessions, 7 labelled turns each (5 in the 4-class setup); returns utterance id -> seconds."""
    lengths = {}
    for n in range(1, 6):
        session = root / f"Session{n}"
        for d, (suffix, turns) in enumerate(DIALOGS.items()):
            dialog = f"Ses{n:02d}{'FM'[d]}_{suffix}"
            summary = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
            transcript = []
            t = 6.2901
            for k, (turn, category, text) in enumerate(turns):
                utt = f"{dialog}_{turn}"
                seconds = round(0.3 + 0.05 * ((n + k) % 5), 2)
                write_recording(session / "sentences" / "wav" / dialog / f"{utt}.wav", seconds, RATE,
                                seed=n * 10 + d * 5 + k, subtype="PCM_16")
                lengths[utt] = seconds
                vad = f"[{2.5 + 0.5 * k:.4f}, {2.0 + k:.4f}, {3.0:.4f}]"
                summary += [f"[{t:.4f} - {t + seconds:.4f}]\t{utt}\t{category}\t{vad}", ANNOTATIONS]
                transcript.append(f"{utt} [{t:08.4f}-{t + seconds:08.4f}]: {text}")
                t += seconds + 1.0
            labels = session / "dialog" / "EmoEvaluation"
            labels.mkdir(parents=True, exist_ok=True)
            (labels / f"{dialog}.txt").write_text("\n".join(summary) + "\n")
            # Per-annotator files in subfolders, and macOS resource forks: not label files.
            (labels / "Categorical").mkdir(exist_ok=True)
            (labels / "Categorical" / f"{dialog}_e2_cat.txt").write_text(f"{dialog}_F000 :Neutral state; ()\n")
            (labels / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07junk")
            (session / "dialog" / "transcriptions").mkdir(parents=True, exist_ok=True)
            (session / "dialog" / "transcriptions" / f"{dialog}.txt").write_text("\n".join(transcript) + "\n")
    return lengths


def _cuts(out, split):
    return {c.id: c for c in load_cuts(out, split)}


def test_fold1_four_classes_speakers_text_and_durations(tmp_path):
    lengths = make_iemocap(tmp_path / "iemocap")
    info = prepare("iemocap", tmp_path / "iemocap", tmp_path / "out")
    train, dev, test = (_cuts(tmp_path / "out", s) for s in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (16, 4, 5)  # 25 of 35 turns in the 4 classes, dev = 20% of 20
    assert info["excluded"] == {"fru": 5, "xxx": 5}
    assert {c.supervisions[0].custom["fold_session"] for c in test.values()} == {1}
    assert {c.supervisions[0].speaker for c in test.values()} == {"Ses01F", "Ses01M"}
    assert not {c.supervisions[0].custom["fold_session"] for c in {**train, **dev}.values()} & {1}
    sup = test["Ses01F_impro01_M000"].supervisions[0]
    assert sup.custom["emotion"] == "hap" and sup.custom["emotion_original"] == "exc"  # excited merged into happy
    assert sup.speaker == "Ses01M" and sup.gender == "m" and sup.language == "en"  # the turn's actor, not the dialog's
    assert sup.text == "Do you have your forms?" and sup.custom["improvised"] is True
    assert sup.custom["dialog"] == "Ses01F_impro01"
    assert (sup.custom["valence"], sup.custom["arousal"], sup.custom["dominance"]) == (3.0, 3.0, 3.0)
    script = test["Ses01M_script01_1_F000"].supervisions[0]
    assert script.speaker == "Ses01F" and script.custom["emotion"] == "sad" and script.custom["improvised"] is False
    emotions = {c.supervisions[0].custom["emotion"] for cuts in (train, dev, test) for c in cuts.values()}
    assert emotions == {"neu", "hap", "sad", "ang"}
    for cuts in (train, dev, test):
        for c in cuts.values():
            assert c.duration == pytest.approx(lengths[c.id], abs=1e-4) and c.recording.sampling_rate == RATE
    assert info["splits"]["test"]["emotions"] == {"ang": 1, "hap": 2, "neu": 1, "sad": 1}
    assert "test = Session1" in info["split_note"] and info["skipped"] == []


def test_other_fold_through_cli_and_release_folder_root(tmp_path):
    make_iemocap(tmp_path / "corpora" / "IEMOCAP_full_release")
    args = ["prepare", "iemocap", str(tmp_path / "corpora"), "--option", "fold=3"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    test = _cuts(tmp_path / "a", "test")
    assert {c.supervisions[0].custom["fold_session"] for c in test.values()} == {3} and len(test) == 5
    dev = _cuts(tmp_path / "a", "dev")
    assert set(dev) == set(_cuts(tmp_path / "b", "dev"))  # seeded: the same dev set every time
    assert {c.supervisions[0].custom["fold_session"] for c in dev.values()} <= {1, 2, 4, 5}
    info = json.loads((tmp_path / "a" / "corpus.json").read_text())
    assert info["fold"] == 3 and info["release_folder"] == "IEMOCAP_full_release"
    other = prepare("iemocap", tmp_path / "corpora", tmp_path / "c", fold="3", seed="1", dev_ratio="0.25")
    assert other["splits"]["dev"]["utterances"] == 5


def test_partial_tree_names_everything_missing(tmp_path):
    make_iemocap(tmp_path / "iemocap")
    shutil.rmtree(tmp_path / "iemocap" / "Session4")
    shutil.rmtree(tmp_path / "iemocap" / "Session2" / "dialog" / "EmoEvaluation")
    (tmp_path / "iemocap" / "Session5" / "sentences" / "wav" / "Ses05F_impro01" / "Ses05F_impro01_M001.wav").unlink()
    (tmp_path / "iemocap" / "Session5" / "sentences" / "wav" / "Ses05F_impro01" / "Ses05F_impro01_F001.wav").unlink()
    with pytest.raises(CorpusError) as raised:
        prepare("iemocap", tmp_path / "iemocap", tmp_path / "out")
    message = str(raised.value)
    assert "missing directory Session4/ (IEMOCAP session 4" in message
    assert "missing directory Session2/dialog/EmoEvaluation/ (session 2 emotion labels)" in message
    # Only the 4-class turn counts (F001 is 'fru', left out anyway).
    assert "1 labelled 4-class utterance(s) of session 5 have no wav (first: " \
           "Session5/sentences/wav/Ses05F_impro01/Ses05F_impro01_M001.wav)" in message
    assert message.count("\n  - ") == 3
    with pytest.raises(CorpusError, match="fold \\(the test session\\) must be between 1 and 5"):
        prepare("iemocap", tmp_path / "iemocap", tmp_path / "out", fold=6)
    with pytest.raises(CorpusError, match="not a directory"):
        prepare("iemocap", tmp_path / "nowhere", tmp_path / "out")


def test_unreadable_wav_is_listed_in_skipped(tmp_path):
    make_iemocap(tmp_path / "iemocap")
    bad = tmp_path / "iemocap" / "Session2" / "sentences" / "wav" / "Ses02M_script01_1" / "Ses02M_script01_1_F000.wav"
    bad.write_bytes(b"")
    info = prepare("iemocap", tmp_path / "iemocap", tmp_path / "out")
    assert info["skipped"] == [{"id": "Ses02M_script01_1_F000", "file": str(bad.resolve()), "reason": "empty file"}]
    assert json.loads((tmp_path / "out" / "corpus.json").read_text())["skipped"] == info["skipped"]
    assert sum(s["utterances"] for s in info["splits"].values()) == 24
