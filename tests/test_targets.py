"""HuBERT targets: frame alignment, bounded k-means, the on-disk set, the CLI (tiny, CPU, offline).

The corpus is a dozen short tone-plus-noise files written here, with the awkward cases on
purpose: 0.1 s utterances (one 80 ms frame), lengths just off a stride multiple, 8 kHz and
22.05 kHz recordings (resampled on load) and a cut that starts inside its recording.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet, Recording
from torch import nn

from speechssl.cli import main
from speechssl.data.audio import load_cut_audio
from speechssl.data.collate import CutAudioDataset
from speechssl.data.manifests import load_cuts
from speechssl.errors import ConfigError
from speechssl.models.config import SEED004_CONV, conv_stack
from speechssl.models.feature_extractor import conv_output_lengths
from speechssl.targets import (
    FrameGrid,
    FrameReservoir,
    TargetSet,
    TargetSetError,
    build_targets,
    conv_geometry,
    fit_kmeans,
    loaded_num_samples,
)
from speechssl.targets.alignment import nearest_frames, upstream_layout
from speechssl.upstream import build_upstream

# lhotse's mel-scale helpers under NumPy 2 (the MFCC upstream)
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning"),
    pytest.mark.usefixtures("one_thread"),
]

SR = 16_000
K = 8
# (samples at the file's rate, file rate): short ones, near-stride lengths, resampled ones
TRAIN = [(1600, SR), (1601, SR), (1999, SR), (2719, SR), (5120, SR), (7000, SR), (12_345, SR),
         (20_000, SR), (31_999, SR), (4000, 8000), (11_025, 22_050), (9_000, SR)]
DEV = [(1600, SR), (3333, SR), (16_000, SR), (6400, SR)]


def _write_split(root: Path, split: str, specs: list[tuple[int, int]], rng: np.random.Generator) -> None:
    cuts = []
    for i, (samples, rate) in enumerate(specs):
        t = np.arange(samples) / rate
        tone = 0.2 * np.sin(2 * np.pi * rng.uniform(150, 1500) * t) * (t < t[-1] / 2)
        wave = tone + 0.02 * rng.standard_normal(samples)
        path = root / "audio" / f"{split}{i:02d}.{'flac' if i % 2 else 'wav'}"
        sf.write(path, wave.astype(np.float32), rate)
        cut = Recording.from_file(path, recording_id=f"{split}{i:02d}").to_cut()
        cuts.append(cut)
    if split == "train":  # a cut that starts 0.3 s into its recording
        cuts[-1] = cuts[-1].truncate(offset=0.3, duration=0.2371, preserve_id=True)
    CutSet.from_cuts(cuts).to_file(root / "manifests" / f"cuts_{split}.jsonl.gz")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("targets_corpus")
    (root / "audio").mkdir()
    (root / "manifests").mkdir()
    rng = np.random.default_rng(0)
    _write_split(root, "train", TRAIN, rng)
    _write_split(root, "dev", DEV, rng)
    return root


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One feature cache for the module: MFCCs are computed once, as the command would."""
    return tmp_path_factory.mktemp("feature_cache")


def all_cuts(corpus: Path) -> list:
    return [cut for split in ("train", "dev") for cut in load_cuts(corpus, split)]


def build(corpus: Path, out: Path, cache_dir: Path, **kwargs) -> Path:
    kwargs.setdefault("k", K)
    return build_targets("mfcc", corpus, out, cache_dir=cache_dir, **kwargs)


# ---------------------------------------------------------------- frame geometry


def _gradient_support(conv_layers, num_samples: int, frame: int) -> tuple[int, int]:
    """First and last input sample that output ``frame`` of a real conv stack depends on."""
    convs = []
    for _, kernel, stride, padding in conv_layers:
        conv = nn.Conv1d(1, 1, kernel, stride=stride, padding=padding, bias=False)
        nn.init.ones_(conv.weight)  # positive weights: no path cancels, the support is exact
        convs.append(conv)
    x = torch.zeros(1, 1, num_samples, requires_grad=True)
    nn.Sequential(*convs)(x)[0, 0, frame].backward()
    touched = torch.nonzero(x.grad[0, 0]).flatten()
    return int(touched[0]), int(touched[-1])


@pytest.mark.parametrize("frame_ms", [20, 40, 80])
@pytest.mark.parametrize("padded", [False, True], ids=["plain", "seed004"])
def test_conv_geometry_is_the_receptive_field_of_a_real_conv_stack(frame_ms, padded):
    layers = conv_stack(1, padded=padded, frame_ms=frame_ms)
    geometry = conv_geometry(layers)
    assert geometry.stride == {20: 320, 40: 640, 80: 1280}[frame_ms]
    for frame in (3, 4):  # interior frames: the field is not clipped by the edges
        first, last = _gradient_support(layers, 12_000, frame)
        assert first == frame * geometry.stride - geometry.left_padding
        assert last - first + 1 == geometry.receptive_field
        assert geometry.grid.centres(frame + 1)[frame] == (first + last + 1) / 2
    assert conv_geometry(SEED004_CONV).left_padding == 78


def test_mfcc_frames_are_centred_where_the_grid_says():
    """A short click lights up the MFCC frame whose window centre is nearest to it."""
    mfcc = build_upstream("mfcc")
    grid, expected_frames = upstream_layout(mfcc)
    assert (grid.hop, grid.first_centre) == (160.0, 80.0)
    rng = np.random.default_rng(1)
    n = 8000
    for click in (1000, 1030, 2345, 4321, 6000):
        wave = 1e-4 * rng.standard_normal(n)
        wave[click : click + 8] += 0.8
        with torch.inference_mode():
            out = mfcc(torch.tensor(wave, dtype=torch.float32)[None], torch.tensor([n]))
        loudest = int(out.layers[0][0, :, 0].argmax())  # static c0 ~ log energy
        nearest = nearest_frames(FrameGrid(1.0, click + 4.0), 1, grid, int(out.lengths[0]))[0]
        assert loudest == nearest, click
        assert int(out.lengths[0]) == int(expected_frames(torch.tensor([n]))[0])


@pytest.mark.parametrize("frame_ms, first_mfcc, step", [(20, 1, 2), (40, 2, 4), (80, 4, 8)])
def test_encoder_frame_i_takes_the_documented_mfcc_frame(frame_ms, first_mfcc, step):
    grid, _ = upstream_layout(build_upstream("mfcc"))
    encoder = conv_geometry(conv_stack(1, frame_ms=frame_ms)).grid
    index = nearest_frames(encoder, 50, grid, 10_000)
    assert index.tolist() == [first_mfcc + step * i for i in range(50)]


def test_nearest_frames_is_the_closest_centre_by_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(200):
        source = FrameGrid(float(rng.integers(80, 700)), float(rng.uniform(-300, 700)))
        target = FrameGrid(float(rng.integers(80, 1400)), float(rng.uniform(-300, 700)))
        source_count, target_count = int(rng.integers(1, 60)), int(rng.integers(0, 40))
        index = nearest_frames(target, target_count, source, source_count)
        distance = np.abs(target.centres(target_count)[:, None] - source.centres(source_count)[None, :])
        assert np.allclose(distance[np.arange(target_count), index], distance.min(axis=1))


def test_loaded_num_samples_equals_the_decoded_audio(corpus):
    cuts = all_cuts(corpus)
    assert {cut.recording.sampling_rate for cut in cuts} == {8000, 16_000, 22_050}
    assert any(cut.start > 0 for cut in cuts)
    for cut in cuts:
        assert loaded_num_samples(cut) == len(load_cut_audio(cut)), cut.id


# ---------------------------------------------------------------- labels on the encoder's frames


@pytest.mark.parametrize("frame_ms", [20, 40, 80])
def test_labels_align_with_encoder_frames_for_every_utterance_and_rate(corpus, cache_dir, tmp_path, frame_ms):
    targets = TargetSet.open(build(corpus, tmp_path / "out", cache_dir, frame_ms=frame_ms))
    layers = conv_stack(1, frame_ms=frame_ms)
    targets.check_encoder(conv_stack(768, frame_ms=frame_ms))  # channels do not matter
    mfcc, kmeans = build_upstream("mfcc"), targets.kmeans()
    step, first = {20: (2, 1), 40: (4, 2), 80: (8, 4)}[frame_ms]
    agree = total = 0
    for cut in all_cuts(corpus):
        wave = torch.from_numpy(load_cut_audio(cut))[None]
        frames = int(conv_output_lengths(torch.tensor([wave.shape[1]]), layers)[0])
        labels = targets.labels(cut.id)
        assert len(labels) == frames, cut.id  # exactly the encoder's count, short cuts included
        assert targets.num_samples(cut.id) == wave.shape[1]
        # Recompute from scratch: MFCC of the cut alone (through float16, as cached), nearest frame.
        with torch.inference_mode():
            features = mfcc(wave, torch.tensor([wave.shape[1]])).layers[0][0].numpy()
        direct = kmeans.assign(features.astype(np.float16).astype(np.float32))
        expected = direct[np.minimum(first + step * np.arange(frames), len(direct) - 1)]
        agree += int((labels == expected).sum())
        total += frames
    assert agree >= 0.99 * total  # float rounding may move a frame across a cluster boundary
    assert targets.meta["splits"]["train"]["frames"] + targets.meta["splits"]["dev"]["frames"] == total


def test_batch_of_crops_is_the_label_slice_padded_with_minus_one(corpus, cache_dir, tmp_path):
    targets = TargetSet.open(build(corpus, tmp_path / "out", cache_dir))
    stride = targets.stride
    dataset = CutAudioDataset(max_seconds=0.5, crop_multiple=stride, seed=3)
    cuts = load_cuts(corpus, "train")
    batch = dataset[cuts]
    frame_lengths = conv_output_lengths(batch.lengths, targets.conv_layers)
    max_frames = int(frame_lengths.max()) + 2
    labels = targets.batch(batch.cut_ids, batch.offsets, frame_lengths, max_frames)
    assert labels.shape == (len(cuts), max_frames) and labels.dtype == torch.long
    assert bool((batch.offsets > 0).any())  # some rows really are crops
    for row, (cut_id, offset, length) in enumerate(zip(batch.cut_ids, batch.offsets.tolist(), frame_lengths.tolist())):
        stored = targets.labels(cut_id).astype(np.int64)
        assert labels[row, :length].tolist() == stored[offset // stride : offset // stride + length].tolist()
        assert (labels[row, length:] == -1).all()

    cut_id = "train07"  # 20 000 samples: (20000 - 400) // 320 + 1 = 62 frames
    assert targets.frames(cut_id) == 62
    with pytest.raises(TargetSetError, match="not a multiple of the encoder stride 320"):
        targets.batch([cut_id], torch.tensor([100]), torch.tensor([5]), 10)
    with pytest.raises(TargetSetError, match="runs past its 62 stored labels"):
        targets.batch([cut_id], torch.tensor([320 * 59]), torch.tensor([4]), 10)
    with pytest.raises(TargetSetError, match="'nope' has no targets"):
        targets.batch(["nope"], torch.tensor([0]), torch.tensor([1]), 10)
    with pytest.raises(ConfigError, match="conv layers"):
        targets.check_encoder(conv_stack(768, frame_ms=40))


def test_a_target_set_pickles_by_path(corpus, cache_dir, tmp_path):
    import pickle

    targets = TargetSet.open(build(corpus, tmp_path / "out", cache_dir))
    data = pickle.dumps(targets)
    assert len(data) < 4 * 1024 + len(json.dumps(targets.meta))  # not the labels themselves
    assert np.array_equal(pickle.loads(data).labels("dev02"), targets.labels("dev02"))


# ---------------------------------------------------------------- k-means


def _peak_while_streaming(reservoir: FrameReservoir, blocks: int, block: np.ndarray) -> int:
    tracemalloc.start()
    try:
        for _ in range(blocks):
            reservoir.add(block)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_kmeans_memory_stays_bounded_as_the_corpus_grows():
    block = np.random.default_rng(0).standard_normal((400, 39)).astype(np.float32)  # one 4 s utterance
    small, large = FrameReservoir(5000, 39, seed=0), FrameReservoir(5000, 39, seed=0)
    small.add(block)  # both start full-ish so the buffer itself is not part of the comparison
    large.add(block)
    peak_small = _peak_while_streaming(small, 50, block)  # 20k frames
    peak_large = _peak_while_streaming(large, 500, block)  # 200k frames: 10x the corpus
    assert large.seen == 10 * small.seen - 9 * 400
    assert len(small.sample) == len(large.sample) == 5000
    assert peak_large < 1.2 * peak_small + 64 * 1024, (peak_small, peak_large)
    assert peak_large < 2 * block.nbytes + 256 * 1024  # a block's temporaries, not the stream


def test_reservoir_is_a_uniform_deterministic_sample():
    def sample(seed: int) -> np.ndarray:
        reservoir = FrameReservoir(1000, 1, seed=seed)
        for start in range(0, 40_000, 137):  # blocks of varying phase
            reservoir.add(np.arange(start, min(start + 137, 40_000), dtype=np.float32)[:, None])
        return reservoir.sample[:, 0].copy()

    first = sample(0)
    assert np.array_equal(first, sample(0))
    assert not np.array_equal(first, sample(1))
    assert len(np.unique(first)) == 1000  # no frame twice
    quarters = np.bincount((first // 10_000).astype(int), minlength=4)
    assert quarters.min() > 190 and quarters.max() < 310, quarters  # 250 each, +-~4.5 sigma


def test_fit_is_deterministic_and_standardises():
    rng = np.random.default_rng(0)
    # Two blobs separated only in a tiny-scale dimension: without standardisation the
    # huge-scale noise dimension would decide the clusters.
    blobs = np.concatenate([rng.normal(0, 0.01, 500), rng.normal(0.1, 0.01, 500)])
    data = np.stack([blobs, rng.normal(0, 100.0, 1000)], axis=1).astype(np.float32)
    first, again = fit_kmeans(data, 2, seed=0), fit_kmeans(data, 2, seed=0)
    assert np.array_equal(first.centroids, again.centroids)
    labels = first.assign(data)
    assert (labels[:500] == labels[0]).mean() > 0.9 and (labels[500:] != labels[0]).mean() > 0.9
    with pytest.raises(ConfigError, match="only 1000 frames to fit k=2000"):
        fit_kmeans(data, 2000)


def test_fit_sample_is_capped_at_max_fit_frames(corpus, cache_dir, tmp_path):
    meta = TargetSet.open(build(corpus, tmp_path / "out", cache_dir, max_fit_frames=100)).meta
    assert meta["fit"]["frames_used"] == 100 < meta["fit"]["frames_seen"]


def test_same_seed_same_set_other_seed_other_centroids(corpus, cache_dir, tmp_path):
    first = build(corpus, tmp_path / "a", cache_dir, seed=5)
    again = build(corpus, tmp_path / "b", cache_dir, seed=5)
    other = build(corpus, tmp_path / "a", cache_dir, seed=6)
    assert first.name == again.name and other.name != first.name
    for name in ("labels.npy", "index.json", "kmeans.npz"):
        assert (first / name).read_bytes() == (again / name).read_bytes(), name
    assert not np.array_equal(TargetSet.open(first).kmeans().centroids, TargetSet.open(other).kmeans().centroids)
    with pytest.raises(TargetSetError, match="holds 2 target sets"):
        TargetSet.open(tmp_path / "a")
    assert TargetSet.open(tmp_path / "b").path == again  # a root with one set opens it


# ---------------------------------------------------------------- on disk


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: os.truncate(d / "labels.npy", (d / "labels.npy").stat().st_size - 7), "truncated"),
        (lambda d: _flip_last_byte(d / "labels.npy"), "crc32"),
        (lambda d: _flip_last_byte(d / "kmeans.npz"), "crc32"),
        (lambda d: (d / "COMPLETE").unlink(), "incomplete"),
        (lambda d: (d / "meta.json").write_text((d / "meta.json").read_text().replace('"k": 8', '"k": 9')),
         "meta.json does not match"),
        (lambda d: (d / "index.json").unlink(), "index.json is missing"),
    ],
    ids=["truncated", "flipped-label", "flipped-centroids", "no-complete", "edited-meta", "no-index"],
)
def test_a_damaged_set_is_refused_then_rebuilt(corpus, cache_dir, tmp_path, damage, message):
    path = build(corpus, tmp_path / "out", cache_dir)
    expected = (path / "labels.npy").read_bytes()
    damage(path)
    with pytest.raises(TargetSetError, match=message):
        TargetSet.open(path)
    assert build(corpus, tmp_path / "out", cache_dir) == path  # the builder replaces it
    assert (path / "labels.npy").read_bytes() == expected


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_an_interrupted_build_leaves_no_set(corpus, cache_dir, tmp_path, monkeypatch):
    import speechssl.targets.build as build_module

    real, calls = build_module.align_labels, []

    def crash_on_the_fifth_utterance(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(build_module, "align_labels", crash_on_the_fifth_utterance)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="simulated crash"):
        build(corpus, out, cache_dir)
    assert list(out.iterdir()) == []  # neither a set nor its temp dir
    with pytest.raises(TargetSetError, match="no complete target set"):
        TargetSet.open(out)

    # A builder killed outright leaves its temp dir; the next build sweeps it.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = out / f".tmp-mfcc-L0-k8-20ms-seed0-0123456789ab-{int(dead.stdout)}-deadbeef"
    leftover.mkdir()
    (leftover / "BUILDER").write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout)}))
    monkeypatch.setattr(build_module, "align_labels", real)
    path = build(corpus, out, cache_dir)
    assert [child.name for child in out.iterdir()] == [path.name]
    assert sorted(child.name for child in path.iterdir()) == [
        "COMPLETE", "index.json", "kmeans.npz", "labels.npy", "meta.json"
    ]


def test_bad_arguments_are_config_errors(corpus, cache_dir, tmp_path):
    with pytest.raises(ConfigError, match="layer 1 does not exist: upstream mfcc has 1 layer"):
        build(corpus, tmp_path, cache_dir, layer=1)
    with pytest.raises(ConfigError, match="k must be between 2 and 65536"):
        build(corpus, tmp_path, cache_dir, k=1)
    with pytest.raises(ConfigError, match="max_fit_frames must be an integer >= k"):
        build(corpus, tmp_path, cache_dir, k=50, max_fit_frames=10)
    with pytest.raises(ConfigError, match="not both"):
        build(corpus, tmp_path, cache_dir, frame_ms=40, conv_layers=conv_stack(1))
    with pytest.raises(ConfigError, match="frame_ms must be one of"):
        build(corpus, tmp_path, cache_dir, frame_ms=30)
    with pytest.raises(ConfigError, match="unknown upstream"):
        build_targets("mfc", corpus, tmp_path, cache_dir=cache_dir)


# ---------------------------------------------------------------- iteration 2: a checkpoint's layer


def test_ckpt_layer_targets_follow_the_checkpoints_frames(corpus, cache_dir, tmp_path):
    from conftest import TINY_W2V2

    from speechssl.config import load_config, to_dict
    from speechssl.models.objectives import build_objective
    from speechssl.pretrain import PretrainConfig
    from speechssl.pretrain.checkpoint import FORMAT, save_atomic

    cfg = load_config(PretrainConfig, None, TINY_W2V2)
    torch.manual_seed(0)
    model = build_objective(cfg.objective, cfg.encoder, cfg)
    checkpoint = save_atomic({"format": FORMAT, "config": to_dict(cfg), "model": model.state_dict()}, tmp_path / "best.pt")
    spec = f"ckpt:{checkpoint}"
    with pytest.raises(ConfigError, match="layer 3 does not exist"):
        build_targets(spec, corpus, tmp_path / "out", k=4, layer=3, cache_dir=cache_dir)

    same_rate = TargetSet.open(build_targets(spec, corpus, tmp_path / "out", k=4, layer=1, cache_dir=cache_dir))
    half_rate = TargetSet.open(build_targets(spec, corpus, tmp_path / "out", k=4, layer=1, frame_ms=40, cache_dir=cache_dir))
    assert same_rate.meta["layer"] == 1 and same_rate.path.name.startswith(f"ckpt_{tmp_path.name}_best-L1-k4-20ms-seed0-")
    for cut in all_cuts(corpus):
        full, half = same_rate.labels(cut.id), half_rate.labels(cut.id)
        # 20 ms encoder on a 20 ms upstream: frame for frame; 40 ms: every second one, from 1.
        assert len(full) == int(conv_output_lengths(torch.tensor([loaded_num_samples(cut)]), conv_stack(1))[0])
        assert half.tolist() == full[1::2][: len(half)].tolist()


def test_hf_layer_targets_use_the_models_conv_frames(corpus, cache_dir, tmp_path, no_network):
    import transformers

    config = transformers.Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, conv_dim=(8,) * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, feat_extract_norm="layer",
    )
    torch.manual_seed(0)
    transformers.Wav2Vec2Model(config).save_pretrained(tmp_path / "hf")
    spec = f"hf:{tmp_path / 'hf'}"
    grid, _ = upstream_layout(build_upstream(spec))
    assert grid == conv_geometry(conv_stack(1)).grid  # HF's CNN is the 20 ms stack: centre 320 i + 200
    targets = TargetSet.open(build_targets(spec, corpus, tmp_path / "out", k=4, layer=-2, cache_dir=cache_dir))
    assert targets.meta["layer"] == 1 and targets.path.name.startswith("hf_")
    for cut in all_cuts(corpus):
        assert targets.frames(cut.id) == int(conv_output_lengths(torch.tensor([loaded_num_samples(cut)]), conv_stack(1))[0])


# ---------------------------------------------------------------- the command


def test_cli_builds_then_reuses_and_errors_are_one_line(corpus, cache_dir, tmp_path, capsys):
    argv = ["targets", "--upstream", "mfcc", "--data", str(corpus), "--out", str(tmp_path / "t"), "--k", "8",
            "--cache-dir", str(cache_dir), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "K=8" in out and "cluster usage entropy" in out and "built " in out
    assert "train: 12 utterances" in out and "dev: 4 utterances" in out
    assert main(argv) == 0
    assert "reused " in capsys.readouterr().out

    assert main([*argv, "--layer", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: layer 2 does not exist") and err.count("\n") == 1
    assert main([*argv[:2], "nope", *argv[3:]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown upstream 'nope'") and err.count("\n") == 1
    assert main([*argv, "--splits", "train,,dev"]) == 2
