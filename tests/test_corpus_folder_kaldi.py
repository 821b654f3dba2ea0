"""The generic importers: a folder of recordings + a CSV, and Kaldi data directories."""

import json
import os

import pytest
from conftest import write_recording

from speechssl.cli import main
from speechssl.corpora import CorpusError, prepare
from speechssl.data.manifests import load_cuts
from speechssl.downstream.tasks.asv import read_trials



def make_folder(root, *, speakers=6, per_speaker=6, with_split=False):
    """Recordings as people have them: mixed rates, stereo ogg, nested folders, one corrupt file."""
    rows = ["file,speaker,language,text,emotion" + (",split" if with_split else "")]
    rates = [16000, 8000, 44100, 22050]
    for s in range(speakers):
        language = "en" if s % 2 else "fr"
        for k in range(per_speaker):
            i = s * per_speaker + k
            stereo = k == 0
            name = f"spk{s}/rec_{k}.{'ogg' if stereo else 'wav'}"
            write_recording(root / name, 1.0 + 0.1 * k, rates[i % 4], channels=2 if stereo else 1, seed=i,
                            tone=150 + 40 * s)
            split = (",train" if k < 4 else ",dev" if k == 4 else ",test") if with_split else ""
            rows.append(f"{name},S{s},{language},utterance {k},{['neutral', 'happy'][k % 2]}{split}")
    (root / "broken").mkdir(exist_ok=True)
    (root / "broken" / "bad.wav").write_bytes(b"RIFF" + os.urandom(60))
    rows.append("broken/bad.wav,S0,fr,broken,neutral" + (",train" if with_split else ""))
    (root / "meta.csv").write_text("\n".join(rows) + "\n")
    return root / "meta.csv"


def test_folder_makes_speaker_disjoint_splits_trials_and_lists_bad_files(tmp_path):
    make_folder(tmp_path / "rec")
    info = prepare("folder", tmp_path / "rec", tmp_path / "out", metadata="meta.csv")
    splits = {s: list(load_cuts(tmp_path / "out", s)) for s in ("train", "dev", "test")}
    assert sum(len(c) for c in splits.values()) == 36  # 37 rows, the corrupt one skipped
    assert [s["file"].endswith("bad.wav") for s in info["skipped"]] == [True]
    speakers = {s: {c.supervisions[0].speaker for c in cuts} for s, cuts in splits.items()}
    assert len(speakers["test"]) == 2 and not speakers["test"] & (speakers["train"] | speakers["dev"])
    assert "speaker-disjoint" in info["split_note"]
    stereo = next(c for c in splits["train"] + splits["dev"] + splits["test"] if c.recording.sources[0].source.endswith(".ogg"))
    assert stereo.recording.num_channels == 2 and stereo.duration == pytest.approx(1.0, abs=1e-3)
    rates = {c.recording.sampling_rate for cuts in splits.values() for c in cuts}
    assert rates == {16000, 8000, 44100, 22050}
    first = splits["train"][0].supervisions[0]
    assert first.language in ("en", "fr") and first.custom["emotion"] in ("neutral", "happy")
    trials = read_trials(tmp_path / "out" / "trials" / "asv_test.tsv")
    test_ids = {c.id: c.supervisions[0] for c in splits["test"]}
    assert trials and {label for *_, label in trials} == {0, 1}
    for a, b, label in trials:
        assert (test_ids[a].speaker == test_ids[b].speaker) == bool(label)
        assert test_ids[a].language == test_ids[b].language  # within a language


def test_folder_keeps_given_splits_and_names_what_is_wrong(tmp_path):
    meta = make_folder(tmp_path / "rec", speakers=2, per_speaker=6, with_split=True)
    info = prepare("folder", tmp_path / "rec", tmp_path / "out", metadata=meta)
    assert info["split_note"] == "splits from the metadata"
    assert info["splits"]["train"]["utterances"] == 8
    meta.write_text("path,speaker\nspk0/rec_0.ogg,S0\n")
    with pytest.raises(CorpusError, match="missing column\\(s\\) file"):
        prepare("folder", tmp_path / "rec", tmp_path / "out", metadata=meta)
    meta.write_text("file,split\nspk0/rec_0.ogg,valid\nnope/x.wav,train\n../outside.wav,\n")
    with pytest.raises(CorpusError) as raised:
        prepare("folder", tmp_path / "rec", tmp_path / "out", metadata=meta)
    message = str(raised.value)
    assert "2 of 3 files listed in meta.csv do not exist" in message and "unknown split value(s) valid" in message
    (tmp_path / "outside.wav").write_bytes(b"")
    meta.write_text("file\n../outside.wav\n")
    with pytest.raises(CorpusError, match="outside the corpus root"):
        prepare("folder", tmp_path / "rec", tmp_path / "out", metadata=meta)
    with pytest.raises(CorpusError, match="not a directory"):
        prepare("folder", tmp_path / "missing", tmp_path / "out", metadata=meta)


def test_folder_then_bench_asv_cosine_and_lid_end_to_end(tmp_path, capsys):
    make_folder(tmp_path / "rec")
    assert main(["prepare", "folder", str(tmp_path / "rec"), "--metadata", "meta.csv", "--out",
                 str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert "skipped 1 utterance(s)" in out and "bad.wav" in out
    common = ["--upstream", "mfcc", "--data", str(tmp_path / "data"), "--no-progress", "--no-store",
              f"cache.dir={tmp_path / 'cache'}", "cost.energy=false", "health_utterances=0",
              "train.num_workers=0"]
    assert main(["bench", "--task", "asv", "--probe", "cosine", "--out", str(tmp_path / "asv"), *common]) == 0
    asv = json.loads((tmp_path / "asv" / "result.json").read_text())
    assert 0.0 <= asv["metrics"]["eer"] <= 1.0 and asv["metrics"]["trials"] > 0
    assert main(["bench", "--task", "lid", "--out", str(tmp_path / "lid"), *common, "train.max_epochs=2",
                 "train.batch_seconds=10", "probe_cfg.hidden=8"]) == 0
    lid = json.loads((tmp_path / "lid" / "result.json").read_text())
    assert 0.0 <= lid["metrics"]["accuracy"] <= 1.0 and lid["utterances"]["test"] == 12


# ---------------------------------------------------------------- Kaldi


def make_kaldi(root):
    for split, speakers in (("train", ("a", "b", "c")), ("test", ("d", "e"))):
        data = root / "data" / split
        data.mkdir(parents=True)
        scp, segments, text, utt2spk, utt2lang, spk2gender = [], [], [], [], [], []
        for s in speakers:
            rec = f"{s}_long"
            write_recording(root / "wav" / f"{rec}.flac", 3.0, 16000, seed=ord(s))
            scp.append(f"{rec} wav/{rec}.flac")
            for k in range(3):
                utt = f"{s}-{k}"
                segments.append(f"{utt} {rec} {k * 1.0:.2f} {k * 1.0 + 0.9:.2f}")
                text.append(f"{utt} HELLO WORLD {k}")
                utt2spk.append(f"{utt} {s}")
                utt2lang.append(f"{utt} {'de' if s == 'b' else 'en'}")
            spk2gender.append(f"{s} {'m' if s in 'ace' else 'f'}")
        for name, lines in (("wav.scp", scp), ("segments", segments), ("text", text), ("utt2spk", utt2spk),
                            ("utt2lang", utt2lang), ("spk2gender", spk2gender)):
            (data / name).write_text("\n".join(lines) + "\n")
    return root / "data"


def test_kaldi_data_dirs_with_segments(tmp_path):
    data = make_kaldi(tmp_path / "k")
    info = prepare("kaldi", tmp_path / "k", tmp_path / "out")
    assert info["data_dirs"] == ["test", "train"]
    train = list(load_cuts(tmp_path / "out", "train"))
    assert len(train) == 9
    cut = next(c for c in train if c.id == "b-2")
    sup = cut.supervisions[0]
    assert cut.start == pytest.approx(2.0) and cut.duration == pytest.approx(0.9)
    assert (sup.text, sup.speaker, sup.language, sup.gender) == ("HELLO WORLD 2", "b", "de", "f")
    assert len(read_trials(tmp_path / "out" / "trials" / "asv_test.tsv")) > 0
    # One data dir alone, with its split named by the option.
    single = prepare("kaldi", data / "train", tmp_path / "out1", split="dev", audio_base="../..")
    assert list(single["splits"]) == ["dev"]
    del info


def test_kaldi_refuses_pipes_and_outside_paths_unless_allowed(tmp_path):
    data = make_kaldi(tmp_path / "k")
    (data / "train" / "segments").unlink()
    src = tmp_path / "k" / "wav" / "a_long.flac"
    (data / "train" / "wav.scp").write_text(f"a_long cat {src} |\nb_long wav/b_long.flac\n")
    with pytest.raises(CorpusError, match="1 of 2 entries are pipe commands.*allow_pipes=true"):
        prepare("kaldi", data / "train", tmp_path / "out", audio_base="../..")
    info = prepare("kaldi", data / "train", tmp_path / "out", allow_pipes="true", audio_base="../..")
    assert info["pipes_run"] == 1
    cuts = {c.id: c for c in load_cuts(tmp_path / "out", "train")}
    assert cuts["a_long"].duration == pytest.approx(3.0) and "/audio/" in cuts["a_long"].recording.sources[0].source
    (data / "train" / "wav.scp").write_text(f"a_long {tmp_path / 'elsewhere.flac'}\n")
    write_recording(tmp_path / "elsewhere.flac", 1.0, 16000)
    with pytest.raises(CorpusError, match="outside the corpus root.*allow_outside=true"):
        prepare("kaldi", data / "train", tmp_path / "out", split="train")
    allowed = prepare("kaldi", data / "train", tmp_path / "out", split="train", allow_outside="true")
    assert allowed["splits"]["train"]["utterances"] == 1
    with pytest.raises(CorpusError, match="no wav.scp"):
        prepare("kaldi", tmp_path, tmp_path / "out")


def test_unknown_corpus_and_option_are_refused(tmp_path):
    with pytest.raises(CorpusError, match="did you mean 'librispeech'"):
        prepare("librispeeh", tmp_path, tmp_path / "out")
    with pytest.raises(CorpusError, match="unknown option\\(s\\) language; it takes: metadata, seed"):
        prepare("folder", tmp_path, tmp_path / "out", language="fr")
