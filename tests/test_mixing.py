"""Denoising data: the batch mixer, the noise bank, and the corpus's noise manifest and noisy splits."""

import csv
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechssl.config import check
from speechssl.data.manifests import available_splits, load_cuts
from speechssl.data.mixing import BatchMixer, MixingConfig, NoiseBank
from speechssl.data.synth import noise
from speechssl.errors import ConfigError


def _batch(sizes=(16000, 12000, 9000, 4000), seed=0):
    """Random 'speech' with zero padding past each length."""
    g = torch.Generator().manual_seed(seed)
    waves = torch.zeros(len(sizes), max(sizes))
    for i, n in enumerate(sizes):
        waves[i, :n] = torch.randn(n, generator=g) * (0.1 + 0.05 * i)
    return waves, torch.tensor(sizes)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def bank(tiny_corpus):
    return NoiseBank.from_manifest(tiny_corpus / noise.NOISE_DIR, "train")


def _check_items(waves, lengths, mixed, info, cfg):
    """Every invariant of one mixed batch: only the recorded segment changed, inside the bounds."""
    changed = set()
    for item in info["items"]:
        i, start, length, size = item["index"], item["start"], item["length"], int(lengths[item["index"]])
        changed.add(i)
        assert 1 <= length <= max(1, int(cfg.max_segment_ratio * size))
        assert 0 <= start and start + length <= size
        added = (mixed[i] - waves[i]).double()
        assert torch.all(added[:start] == 0) and torch.all(added[start + length:] == 0)
        low, high = cfg.utterance_db if item["kind"] == "utterance" else cfg.noise_snr_db
        assert low <= item["snr_db"] <= high
        measured = 10 * torch.log10(waves[i, :size].double().pow(2).mean() / added[start:start + length].pow(2).mean())
        assert abs(float(measured) - item["snr_db"]) < 0.01
        if item["kind"] == "utterance":
            j, src = item["source"], item["source_start"]
            assert j != i and src + length <= int(lengths[j])
            # The added segment is a scaled copy of the partner's samples.
            seg = waves[j, src:src + length].double()
            gain = (added[start:start + length] * seg).sum() / seg.pow(2).sum()
            assert gain > 0 and torch.allclose(added[start:start + length], gain * seg, atol=1e-6)
    for i in range(len(lengths)):
        assert torch.all(mixed[i, int(lengths[i]):] == 0), "padding must stay exactly zero"
        if i not in changed:
            assert torch.equal(mixed[i], waves[i])


# ---------------------------------------------------------------- the mixer


def test_mixing_respects_bounds_and_never_picks_itself():
    cfg = MixingConfig(prob=1.0, utterance_share=1.0)
    mixer = BatchMixer(cfg)
    partners = set()
    for seed in range(200):
        waves, lengths = _batch(sizes=(16000, 12000, 9000, 4000)[: 2 + seed % 3], seed=seed)
        mixed, info = mixer(waves, lengths, _gen(seed))
        assert info["fraction_mixed"] == info["fraction_utterance"] == 1.0
        _check_items(waves, lengths, mixed, info, cfg)
        partners |= {(item["index"], item["source"]) for item in info["items"]}
    assert all(i != j for i, j in partners)
    assert {(0, 1), (1, 0), (0, 3), (3, 2)} <= partners  # every other utterance gets picked


def test_noise_mixing_hits_the_snr_and_keeps_padding(bank):
    cfg = MixingConfig(prob=1.0, utterance_share=0.0)
    mixer = BatchMixer(cfg, bank)
    snrs = []
    for seed in range(20):
        waves, lengths = _batch(seed=seed)
        mixed, info = mixer(waves, lengths, _gen(seed))
        assert info["fraction_noise"] == 1.0 and all(isinstance(item["source"], str) for item in info["items"])
        _check_items(waves, lengths, mixed, info, cfg)
        snrs.append(info["mean_snr_db"])
    assert -5.0 <= min(snrs) and max(snrs) <= 20.0 and np.std(snrs) > 0


def test_probability_and_share_are_honoured(bank):
    cfg = MixingConfig(prob=0.3, utterance_share=0.5)
    waves, lengths = _batch(sizes=[8000] * 50)
    infos = [BatchMixer(cfg, bank)(waves, lengths, _gen(seed))[1] for seed in range(20)]
    assert 0.2 < np.mean([i["fraction_mixed"] for i in infos]) < 0.4
    assert 0.1 < np.mean([i["fraction_noise"] for i in infos]) < 0.2
    off = BatchMixer(MixingConfig(prob=0.0), bank)(waves, lengths, _gen(0))
    assert torch.equal(off[0], waves) and off[1]["fraction_mixed"] == 0.0 and np.isnan(off[1]["mean_snr_db"])
    assert BatchMixer.from_config(MixingConfig()) is None


def test_single_utterance_batch_uses_noise_or_stays_clean(bank):
    waves, lengths = _batch(sizes=(12000,))
    cfg = MixingConfig(prob=1.0, utterance_share=1.0)
    clean, info = BatchMixer(cfg)(waves, lengths, _gen(0))
    assert torch.equal(clean, waves) and info["fraction_mixed"] == 0.0
    mixed, info = BatchMixer(cfg, bank)(waves, lengths, _gen(0))
    assert [item["kind"] for item in info["items"]] == ["noise"]
    _check_items(waves, lengths, mixed, info, cfg)


def test_mixing_is_deterministic_per_generator_and_leaves_targets_alone(bank):
    cfg = MixingConfig(prob=0.7)
    mixer = BatchMixer(cfg, bank)
    waves, lengths = _batch()
    before = waves.clone()
    targets = torch.randint(0, 100, (4, 50))  # e.g. k-means units per frame
    batch = {"waveforms": waves, "lengths": lengths, "targets": targets.clone()}
    # The trainer-style call: only the waveforms are replaced.
    batch["waveforms"], info = mixer(batch["waveforms"], batch["lengths"], _gen(5))
    assert torch.equal(batch["targets"], targets) and torch.equal(batch["lengths"], lengths)
    assert torch.equal(waves, before), "the input batch is not modified in place"
    again, info_again = mixer(waves, lengths, _gen(5))
    assert torch.equal(again, batch["waveforms"]) and info == info_again
    other = [mixer(waves, lengths, _gen(seed))[0] for seed in range(6, 10)]
    assert any(not torch.equal(o, again) for o in other)


def test_silent_interferer_adds_nothing():
    waves, lengths = _batch(sizes=(8000, 8000))
    waves[1] = 0.0
    mixed, info = BatchMixer(MixingConfig(prob=1.0))(waves, lengths, _gen(0))
    assert torch.equal(mixed[0], waves[0]) and torch.isfinite(mixed).all()
    assert info["fraction_mixed"] == 1.0  # drawn and recorded, but at zero gain


def test_config_rejects_inverted_ranges():
    with pytest.raises(ConfigError, match="utterance_db"):
        check(MixingConfig(utterance_db=(5.0, -5.0)))
    with pytest.raises(ConfigError, match="prob"):
        check(MixingConfig(prob=1.5))


# ---------------------------------------------------------------- the noise bank


def test_noise_bank_segments_have_the_requested_length(bank, tiny_corpus):
    clip = load_cuts(tiny_corpus / noise.NOISE_DIR, "train")[0]
    n_clip = clip.recording.num_samples
    for n in (1, 800, n_clip, 3 * n_clip + 7):
        for u in (0.0, 0.5, 0.999999):
            wave, clip_id = bank.segment(n, u, u)
            assert wave.shape == (n,) and wave.dtype == np.float32 and clip_id
    # Longer than the clip: looped, so the clip repeats with its own period.
    wave, _ = bank.segment(3 * n_clip, 0.0, 0.0)
    assert np.array_equal(wave[:n_clip], wave[n_clip:2 * n_clip]) and np.abs(wave).max() > 0


def test_noise_bank_cache_is_bounded(tiny_corpus):
    per_clip = load_cuts(tiny_corpus / noise.NOISE_DIR, "train")[0].recording.num_samples * 4
    small = NoiseBank.from_manifest(tiny_corpus / noise.NOISE_DIR, "train", cache_mb=2.5 * per_clip / 2**20)
    for k in range(len(small)):
        small.segment(100, (k + 0.5) / len(small), 0.3)
        assert small.cached_bytes <= 2.5 * per_clip
    # A cache smaller than one clip: segments are read straight from the file.
    tiny = NoiseBank.from_manifest(tiny_corpus / noise.NOISE_DIR, "train", cache_mb=0.5 * per_clip / 2**20)
    wave, _ = tiny.segment(1000, 0.0, 0.5)
    assert wave.shape == (1000,) and tiny.cached_bytes == 0
    wave, _ = tiny.segment(3 * per_clip // 4, 0.0, 0.5)  # looped, still not cached
    assert wave.shape == (3 * per_clip // 4,) and tiny.cached_bytes == 0


# ---------------------------------------------------------------- the corpus's noise and noisy splits


def _records(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def test_corpus_has_a_noise_manifest_per_split_without_leakage(tiny_corpus):
    info = json.loads((tiny_corpus / "corpus.json").read_text())["noise"]
    assert available_splits(tiny_corpus / info["dir"]) == ["dev", "test", "train"]
    split_ids = {split: {c.id for c in load_cuts(tiny_corpus, split)} for split in ("train", "dev", "test")}
    for split, ids in split_ids.items():
        clips = load_cuts(tiny_corpus / info["dir"], split)
        kinds = {c.custom["noise_kind"] for c in clips}
        assert kinds == {"white", "pink", "brown", "babble"} and len(clips) == info["splits"][split]["clips"]
        for clip in clips:
            # Babble is made from the clip's own split only.
            assert set(clip.custom["talkers"]) <= ids
            if clip.custom["noise_kind"] == "babble":
                assert 1 <= len(clip.custom["talkers"]) <= noise.BABBLE_TALKERS[1]
    assert "noise_train" not in available_splits(tiny_corpus)


def test_noisy_splits_keep_ids_labels_and_trials(tiny_corpus):
    assert {"dev_noisy", "test_noisy"} <= set(available_splits(tiny_corpus))
    clips = {c.id: c for split in ("dev", "test") for c in load_cuts(tiny_corpus / noise.NOISE_DIR, split)}
    for clean_split, noisy_split in noise.NOISY_SPLITS.items():
        clean = _records(tiny_corpus / "manifests" / f"supervisions_{clean_split}.jsonl.gz")
        noisy = _records(tiny_corpus / "manifests" / f"supervisions_{noisy_split}.jsonl.gz")
        assert [s["id"] for s in clean] == [s["id"] for s in noisy]
        for c, n in zip(clean, noisy):
            mix = n["custom"].pop("noisy")
            assert c == n, "labels must be those of the clean split"
            assert 0.0 <= mix["snr_db"] <= 10.0 and mix["noise"].startswith(f"{clean_split}-")
            assert c["speaker"] not in clips[mix["noise"]].custom["speakers"]
        cuts = {c.id: c for c in load_cuts(tiny_corpus, clean_split)}
        for cut in load_cuts(tiny_corpus, noisy_split):
            assert cut.recording.num_samples == cuts[cut.id].recording.num_samples
            assert f"/audio/{noisy_split}/" in cut.recording.sources[0].source
            wave, _ = sf.read(cut.recording.sources[0].source)
            assert np.abs(wave).max() <= 1.0 and not np.array_equal(wave, sf.read(cuts[cut.id].recording.sources[0].source)[0])
        clean_alignments = tiny_corpus / "manifests" / f"alignments_{clean_split}.jsonl.gz"
        if clean_alignments.is_file():
            assert (tiny_corpus / "manifests" / f"alignments_{noisy_split}.jsonl.gz").read_bytes() == \
                clean_alignments.read_bytes()
    assert (tiny_corpus / "trials" / "asv_test_noisy.tsv").read_bytes() == \
        (tiny_corpus / "trials" / "asv_test.tsv").read_bytes()
    with open(tiny_corpus / "trials" / "asv_test_noisy.tsv", newline="") as handle:
        ids = {c.id for c in load_cuts(tiny_corpus, "test_noisy")}
        assert all(row["enroll"] in ids and row["test"] in ids for row in csv.DictReader(handle, delimiter="\t"))


def test_noise_is_deterministic(tiny_corpus, tmp_path):
    """Rewriting the noise of a copy of the corpus gives the same bytes."""
    info = json.loads((tiny_corpus / "corpus.json").read_text())
    copy = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, copy)
    again = noise.write_noise(copy, info["seed"], tuple(info["config"]["noisy_snr_db"]))
    assert again == info["noise"]
    written = [p.relative_to(tiny_corpus) for p in (tiny_corpus / noise.NOISE_DIR).rglob("*") if p.is_file()]
    written += [p.relative_to(tiny_corpus) for name in noise.NOISY_SPLITS.values()
                for p in (tiny_corpus / "audio" / name).rglob("*.flac")]
    written += [Path(path) for path in noise.expected_files(info["noise"])]
    assert len(written) > 50
    for rel in written:
        assert (copy / rel).read_bytes() == (tiny_corpus / rel).read_bytes(), rel
