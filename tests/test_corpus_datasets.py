"""``speechssl corpus datasets``: several datasets per language and nested few-shot train splits."""

import json
import os
import time
from collections import Counter, defaultdict

import numpy as np
import pytest

from speechssl.cli import main
from speechssl.data.datasets import derive_datasets, parse_shot, shot_label
from speechssl.data.manifests import load_cuts
from speechssl.errors import ConfigError

DATASETS = ("clean", "telephone", "reverb")
# Pairs of the tiny corpus hold ~2 train utterances of 1.5-4.5 s: 3 s and 6 s shots cut into them.
SHOTS = ("3s", "6s")
SPLITS = ("train", "dev", "test")


@pytest.fixture(scope="module")
def derived(tiny_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("derived") / "ml"
    info = derive_datasets(tiny_corpus, out, datasets=DATASETS, shots=SHOTS, seed=0, workers=2, progress=False)
    return out, info


def _sup(cut):
    return cut.supervisions[0]


def _source_cuts(tiny_corpus):
    return {split: {c.id: c for c in load_cuts(tiny_corpus, split)} for split in SPLITS}


def test_every_utterance_in_exactly_one_dataset_with_its_labels(tiny_corpus, derived):
    out, info = derived
    source = _source_cuts(tiny_corpus)
    for split in SPLITS:
        cuts = load_cuts(out, split)
        seen = Counter(_sup(c).custom["source_id"] for c in cuts)
        assert set(seen) == set(source[split]) and set(seen.values()) == {1}, split
        for cut in cuts:
            sup, original = _sup(cut), _sup(source[split][_sup(cut).custom["source_id"]])
            assert sup.custom["dataset"] in DATASETS
            assert (sup.text, sup.language, sup.speaker, sup.gender) == \
                (original.text, original.language, original.speaker, original.gender)
            assert sup.custom["intent"] == original.custom["intent"]
            assert sup.custom["translations"] == original.custom["translations"]
    assert info["datasets"] == list(DATASETS)
    assert info["shots"] == {"3s": 3.0, "6s": 6.0}


def test_datasets_are_balanced_per_split_and_language(derived):
    out, info = derived
    for split in SPLITS:
        per_language = defaultdict(Counter)
        for cut in load_cuts(out, split):
            per_language[_sup(cut).language][_sup(cut).custom["dataset"]] += 1
        for language, counts in per_language.items():
            sizes = [counts[d] for d in DATASETS]
            assert max(sizes) - min(sizes) <= 1, (split, language, counts)
            total = sum(sizes)
            if total >= len(DATASETS):  # enough utterances: every dataset present
                assert min(sizes) >= 1, (split, language, counts)
            for dataset in DATASETS:
                listed = f"{split}/{language}/{dataset}" in info["missing_pairs"]
                assert listed == (counts[dataset] == 0)
        # The dealing continues across languages, so the split's totals are balanced too.
        totals = [sum(c[d] for c in per_language.values()) for d in DATASETS]
        assert max(totals) - min(totals) <= 1, (split, totals)


def _high_band_share(wave, rate=16000, cutoff=4000.0):
    power = np.abs(np.fft.rfft(wave)) ** 2
    freqs = np.fft.rfftfreq(len(wave), 1 / rate)
    return float(power[freqs > cutoff].sum() / power.sum())


def test_degraded_audio(tiny_corpus, derived):
    out, _ = derived
    source = _source_cuts(tiny_corpus)
    telephone_share, clean_share, reverb = [], [], 0
    for split in SPLITS:
        for cut in load_cuts(out, split):
            sup = _sup(cut)
            original = source[split][sup.custom["source_id"]]
            wave, clean = cut.load_audio()[0], original.load_audio()[0]
            assert len(wave) == len(clean)
            if sup.custom["dataset"] == "clean":
                np.testing.assert_array_equal(wave, clean)
                # hard-linked, not copied (tmp dirs share one file system)
                assert os.path.samefile(cut.recording.sources[0].source, original.recording.sources[0].source)
            elif sup.custom["dataset"] == "telephone":
                telephone_share.append(_high_band_share(wave))
                clean_share.append(_high_band_share(clean))
            else:
                reverb += 1
                assert not np.allclose(wave, clean, atol=1e-3)
            assert np.max(np.abs(wave)) <= np.max(np.abs(clean)) + 1e-3  # rescaled to the source's peak
    assert telephone_share and reverb
    # A phone line keeps 300-3400 Hz: almost nothing above 4 kHz, unlike the source.
    assert max(telephone_share) < 1e-3, telephone_share
    assert np.median(clean_share) > 20 * max(telephone_share)


def test_shots_are_nested_within_budget_and_labelled(derived):
    out, info = derived
    train = {c.id: c for c in load_cuts(out, "train")}
    small = {c.id for c in load_cuts(out, "train_3s")}
    large = {c.id for c in load_cuts(out, "train_6s")}
    assert small < large <= set(train), "train_3s inside train_6s inside train"
    assert small, "some utterances fit 3 s"
    for ids, budget in ((small, 3.0), (large, 6.0)):
        per_pair = defaultdict(float)
        for cut_id in ids:
            per_pair[(_sup(train[cut_id]).language, _sup(train[cut_id]).custom["dataset"])] += train[cut_id].duration
        assert max(per_pair.values()) <= budget + 1e-6
    for cut_id, cut in train.items():
        expected = "3s" if cut_id in small else "6s" if cut_id in large else None
        assert _sup(cut).custom.get("shots") == expected, cut_id
    # A few-shot cut is the train cut itself: same labels, audio and duration.
    for cut in load_cuts(out, "train_3s"):
        assert cut.to_dict() == train[cut.id].to_dict()
    assert info["splits"]["train_3s"]["utterances"] == len(small)
    assert info["hours"]["train_6s"]["total"] == pytest.approx(sum(train[i].duration for i in large) / 3600, abs=1e-4)


def test_ids_are_unique_and_new(tiny_corpus, derived):
    out, _ = derived
    source_ids = {i for cuts in _source_cuts(tiny_corpus).values() for i in cuts}
    cut_ids, recording_ids = [], []
    for split in SPLITS:
        for cut in load_cuts(out, split):
            cut_ids.append(cut.id)
            recording_ids.append(cut.recording.id)
            assert cut.id.startswith(_sup(cut).custom["dataset"] + "__")
            assert f"/{_sup(cut).custom['dataset']}/" in cut.recording.id
    assert len(set(cut_ids)) == len(cut_ids) and len(set(recording_ids)) == len(recording_ids)
    assert not (set(cut_ids) | set(recording_ids)) & source_ids


def test_loads_as_a_corpus_and_describes_hours(derived):
    out, info = derived
    cuts = load_cuts(out, "train_6s")
    for cut in cuts:
        assert cut.load_audio().shape[-1] > 0
    assert json.loads((out / "corpus.json").read_text()) == info
    assert not (out / ".datasets-incomplete").exists()
    for split in (*SPLITS, "train_3s", "train_6s"):
        table = info["hours"][split]
        assert set(table["datasets"]) == set(DATASETS)
        assert table["total"] == pytest.approx(sum(table["datasets"].values()), abs=1e-3)
        assert set(table["languages"]) == set(info["languages"])


def test_rerun_reuses_and_is_byte_identical(tiny_corpus, derived, tmp_path, capsys):
    out, info = derived
    stamp = (out / "corpus.json").stat().st_mtime_ns
    start = time.perf_counter()
    again = derive_datasets(tiny_corpus, out, datasets=DATASETS, shots=SHOTS, seed=0, workers=2)
    assert time.perf_counter() - start < 5
    assert again == info and (out / "corpus.json").stat().st_mtime_ns == stamp
    assert "reusing" in capsys.readouterr().err
    # Another directory, one worker: the same degraded files, byte for byte.
    other = tmp_path / "again"
    derive_datasets(tiny_corpus, other, datasets=DATASETS, shots=["6s", "3s"], seed=0, workers=1, progress=False)
    files = sorted(p.relative_to(out) for p in (out / "audio").rglob("*.flac"))
    assert files == sorted(p.relative_to(other) for p in (other / "audio").rglob("*.flac"))
    for rel in files:
        assert (out / rel).read_bytes() == (other / rel).read_bytes(), rel
    # Other settings in a finished directory: refused, unless overwrite.
    with pytest.raises(ConfigError, match="other settings"):
        derive_datasets(tiny_corpus, other, datasets=DATASETS, shots=SHOTS, seed=1, progress=False)
    redone = derive_datasets(tiny_corpus, other, datasets=DATASETS, shots=SHOTS, seed=1, workers=1, progress=False,
                             overwrite=True)
    assert redone["derived"]["seed"] == 1 and redone["derived"]["settings_hash"] != info["derived"]["settings_hash"]
    assert {_sup(c).custom["source_id"] for c in load_cuts(other, "train")} == \
        {_sup(c).custom["source_id"] for c in load_cuts(out, "train")}


def test_interrupted_run_resumes(tiny_corpus, tmp_path, monkeypatch, capsys):
    import speechssl.corpora.base as base

    out = tmp_path / "ml"

    def crash(*args, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(base, "write_corpus", crash)
    with pytest.raises(RuntimeError, match="interrupted"):
        derive_datasets(tiny_corpus, out, datasets=("clean", "telephone"), shots=("3s",), workers=1, progress=False)
    assert (out / ".datasets-incomplete").exists() and not (out / "corpus.json").exists()
    written = {p: p.stat().st_mtime_ns for p in (out / "audio" / "telephone").rglob("*.flac")}
    assert written
    monkeypatch.undo()
    info = derive_datasets(tiny_corpus, out, datasets=("clean", "telephone"), shots=("3s",), workers=1)
    assert "did not finish; resuming" in capsys.readouterr().err
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in written.items()), "finished files are kept"
    assert not (out / ".datasets-incomplete").exists()
    assert info["splits"]["train"]["datasets"].keys() == {"clean", "telephone"}
    # A changed setting on an unfinished directory starts over instead of mixing settings.
    (out / ".datasets-incomplete").write_text(json.dumps({"settings_hash": "0" * 16}))
    derive_datasets(tiny_corpus, out, datasets=("clean", "telephone"), shots=("3s",), workers=1)
    assert "starting over" in capsys.readouterr().err


@pytest.mark.parametrize("label, seconds", [("30s", 30.0), ("1min", 60.0), ("4min", 240.0), ("10min", 600.0),
                                            ("1h", 3600.0), ("90s", 90.0), ("2.5s", 2.5), ("90min", 5400.0)])
def test_shot_labels_round_trip(label, seconds):
    assert parse_shot(label) == seconds
    assert shot_label(seconds) == label
    assert parse_shot(shot_label(seconds)) == seconds


def test_shot_parsing_accepts_units_and_numbers():
    assert parse_shot("1.5h") == 5400.0 and parse_shot(" 10 MIN ") == 600.0 and parse_shot(45) == 45.0


@pytest.mark.parametrize("kwargs, message", [
    ({"datasets": ("clean", "radio")}, "unknown dataset 'radio'.*choose from clean, telephone, reverb, noise"),
    ({"datasets": ("clean", "clean")}, "clean given more than once"),
    ({"datasets": ()}, "give at least one"),
    ({"shots": ("-1min",)}, "must be positive"),
    ({"shots": (-5,)}, "must be a positive"),
    ({"shots": ("0s",)}, "must be a positive"),
    ({"shots": ("5x",)}, r"shot '5x': expected a number with a unit s, min or h"),
    ({"workers": 0}, "workers must be an integer >= 1"),
    ({"seed": -1}, "seed must be a non-negative integer"),
])
def test_bad_settings_are_config_errors(tiny_corpus, tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        derive_datasets(tiny_corpus, tmp_path / "out", progress=False, **kwargs)
    assert not (tmp_path / "out").exists(), "nothing written before the settings are checked"


def test_bad_directories_are_config_errors(tiny_corpus, tmp_path):
    with pytest.raises(ConfigError, match="source corpus directory not found"):
        derive_datasets(tmp_path / "missing", tmp_path / "out", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"no manifests/cuts_\{train,dev,test\}"):
        derive_datasets(tmp_path / "empty", tmp_path / "out", progress=False)
    with pytest.raises(ConfigError, match="is the source corpus itself"):
        derive_datasets(tiny_corpus, tiny_corpus, progress=False)
    foreign = tmp_path / "foreign"
    (foreign / "manifests").mkdir(parents=True)
    with pytest.raises(ConfigError, match="not written by `speechssl corpus datasets`"):
        derive_datasets(tiny_corpus, foreign, progress=False)


def test_cli(tiny_corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = "ml"  # relative, as typed on a command line
    argv = ["corpus", "datasets", str(tiny_corpus), "--out", out, "--datasets", "clean,noise",
            "--shots", "3s", "--workers", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "train_3s" in printed and "noise" in printed and f"corpus: {out}" in printed
    assert {_sup(c).custom["dataset"] for c in load_cuts(out, "train")} == {"clean", "noise"}
    assert main(["corpus", "check", out]) == 0  # every manifest and audio file reads
    assert "all audio files decoded cleanly" in capsys.readouterr().out
    assert main(argv) == 0
    assert "reusing" in capsys.readouterr().err
    assert main(["corpus", "datasets", str(tiny_corpus), "--out", str(tmp_path / "x"), "--shots", "5x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: shot '5x'") and "\n" not in err
