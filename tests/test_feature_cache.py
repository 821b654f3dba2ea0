"""The frozen-feature cache: correctness, reuse, damage recovery, crash safety, disk cap.

Audio is a handful of short random-noise files and the upstream a tiny fixed conv net
(stride 320, 3 "layers"), so every build takes milliseconds.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import Recording
from torch import nn

from speechssl.downstream.cache import (
    FeatureCache,
    cache_key,
    split_fingerprint,
)
from speechssl.errors import ConfigError, SpeechSSLError
from speechssl.upstream.base import Upstream, UpstreamOutput, hash_files

SR = 16_000
DURATIONS = [0.5, 0.7, 0.9, 1.1, 1.3, 1.6]
BATCH_SECONDS = 2.0  # -> 4 batches: [1.6] [1.3] [1.1, 0.9] [0.7, 0.5]
SHARD_BYTES = 4096  # ~85 frames of 3 x 8 float16: several shards per entry
LOGGER = "speechssl.downstream.cache"


class ConvUpstream(Upstream):
    """Fixed random conv front end; its fingerprint hashes a "checkpoint" file."""

    name = "fake-conv"
    frame_rate = 50.0
    num_layers = 3
    feature_dim = 8

    def __init__(self, weights_file: Path, *, fail_on_call=None, nan_length=None, scale=1.0, delay=0.0, calls_log=None):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.conv = nn.Conv1d(1, 8, kernel_size=400, stride=320)
        self.proj = nn.Linear(8, 8)
        with torch.no_grad():
            for param in self.parameters():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
        self.requires_grad_(False)
        self.weights_file = Path(weights_file)
        self.fail_on_call = fail_on_call
        self.nan_length = nan_length
        self.scale = scale
        self.delay = delay
        self.calls_log = calls_log
        self.calls = 0

    def forward(self, waveforms, lengths):
        self.calls += 1
        if self.calls_log is not None:
            with open(self.calls_log, "a") as handle:
                handle.write(f"{os.getpid()}\n")
        if self.delay:
            time.sleep(self.delay)
        if self.fail_on_call == self.calls:
            raise RuntimeError("simulated crash in the upstream")
        hidden = self.conv(waveforms[:, None, :]).transpose(1, 2) * self.scale
        first = torch.tanh(self.proj(hidden))
        layers = [hidden, first, 2 * first + hidden]
        if self.nan_length is not None:
            layers[1] = layers[1].clone()
            layers[1][lengths == self.nan_length] = float("nan")
        out_lengths = torch.clamp((lengths - 400) // 320 + 1, min=0)
        return UpstreamOutput(layers=layers, lengths=out_lengths)

    def fingerprint(self) -> str:
        return hash_files([self.weights_file], extra=self.name)


@pytest.fixture(scope="module")
def cuts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("noise_audio")
    rng = np.random.default_rng(0)
    result = []
    for i, seconds in enumerate(DURATIONS):
        path = folder / f"utt{i}.{'flac' if i % 2 else 'wav'}"
        sf.write(path, (0.1 * rng.standard_normal(int(seconds * SR))).astype(np.float32), SR)
        result.append(Recording.from_file(path, recording_id=f"utt{i}").to_cut())
    return result


@pytest.fixture
def weights(tmp_path):
    path = tmp_path / "checkpoint.bin"
    path.write_bytes(b"weights v1")
    return path


@pytest.fixture
def cache(tmp_path):
    return FeatureCache(tmp_path / "cache", shard_bytes=SHARD_BYTES)


def key_for(cuts, upstream, layers=None, **preprocessing):
    return cache_key(upstream.fingerprint(), split_fingerprint(cuts), layers, preprocessing)


def build(cache, cuts, upstream, layers=None, key=None, **kwargs):
    key = key or key_for(cuts, upstream, layers)
    kwargs.setdefault("batch_seconds", BATCH_SECONDS)
    return cache.get_or_build(key, cuts, upstream, layers=layers, progress=False, **kwargs)


def direct(upstream, cut):
    """The upstream on one utterance alone: [frames, layers, dim] float32."""
    from speechssl.data.audio import load_cut_audio

    wave = torch.from_numpy(load_cut_audio(cut))[None]
    with torch.inference_mode():
        out = upstream(wave, torch.tensor([wave.shape[1]]))
    frames = int(out.lengths[0])
    return torch.stack([layer[0, :frames] for layer in out.layers], dim=1).numpy()


def snapshot(features):
    return {cut_id: np.array(features[cut_id]) for cut_id in features.ids}


def entry_dir(cache, features):
    return cache.root / features.key


def test_build_matches_direct_run_and_reopen_skips_upstream(cache, cuts, weights):
    upstream = ConvUpstream(weights)
    with build(cache, cuts, upstream) as features:
        assert upstream.calls == 4
        assert len(features) == len(cuts) and list(features.ids) == [cut.id for cut in cuts]
        assert features.layers == [0, 1, 2] and features.num_layers == 3
        assert features.feature_dim == 8 and features.frame_rate == 50.0
        assert features.bytes == cache.disk_usage() > 0
        assert len(list(entry_dir(cache, features).glob("shard-*.npy"))) > 1
        first = snapshot(features)
        for cut in cuts:
            stored = features[cut.id]
            assert stored.dtype == np.float16 and not stored.flags.writeable
            expected = direct(upstream, cut)
            assert stored.shape == expected.shape == (features.frames(cut.id), 3, 8)
            np.testing.assert_allclose(stored.astype(np.float32), expected, rtol=2e-3, atol=2e-4)
    calls = upstream.calls
    with build(cache, cuts, upstream) as again:
        assert upstream.calls == calls  # read from disk, the upstream is not run
        for cut_id, array in first.items():
            np.testing.assert_array_equal(again[cut_id], array)
    with pytest.raises(KeyError, match="nope"):
        again["nope"]


def test_new_checkpoint_bytes_give_a_new_entry(cache, cuts, weights):
    upstream = ConvUpstream(weights)
    old_key = key_for(cuts, upstream)
    build(cache, cuts, upstream).close()
    weights.write_bytes(b"weights v2")  # the "checkpoint" changed on disk
    new_key = key_for(cuts, upstream)
    assert new_key != old_key
    calls = upstream.calls
    with build(cache, cuts, upstream) as features:
        assert features.key == new_key and upstream.calls > calls
    assert {entry.key for entry in cache.entries()} == {old_key, new_key}


def test_key_inputs_each_change_the_key(cuts, tmp_path):
    base = cache_key("fp", "split", None, {"sr": 16000})
    assert base == cache_key("fp", "split", None, {"sr": 16000})
    others = [
        cache_key("fp2", "split", None, {"sr": 16000}),
        cache_key("fp", "split2", None, {"sr": 16000}),
        cache_key("fp", "split", [0, 1], {"sr": 16000}),
        cache_key("fp", "split", None, {"sr": 8000}),
    ]
    assert len({base, *others}) == 5
    with pytest.raises(ConfigError, match="JSON"):
        cache_key("fp", "split", None, {"f": object()})

    # The split fingerprint follows the audio file's size (a re-rendered file), not its mtime.
    path = tmp_path / "a.wav"
    sf.write(path, np.zeros(8000, dtype=np.float32), SR)
    cut = Recording.from_file(path, recording_id="a").to_cut()
    before = split_fingerprint([cut])
    os.utime(path, (1, 1))
    assert split_fingerprint([cut]) == before
    sf.write(path, np.zeros(8000, dtype=np.float32), SR, subtype="PCM_24")
    assert split_fingerprint([cut]) != before
    assert split_fingerprint(cuts) != split_fingerprint(list(reversed(cuts)))


def _flip_middle(entry: Path):
    shard = entry / "shard-00000.npy"
    data = bytearray(shard.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    shard.write_bytes(bytes(data))


def _truncate(entry: Path):
    shard = entry / "shard-00001.npy"
    shard.write_bytes(shard.read_bytes()[:-100])


DAMAGE = {
    "flipped bytes": (_flip_middle, "fails its checksum"),
    "truncated shard": (_truncate, "truncated"),
    "missing COMPLETE": (lambda entry: (entry / "COMPLETE").unlink(), "no COMPLETE marker"),
    "deleted index": (lambda entry: (entry / "index.json").unlink(), "index.json is missing"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_entry_is_detected_and_rebuilt(cache, cuts, weights, caplog, damage):
    spoil, reason = DAMAGE[damage]
    upstream = ConvUpstream(weights)
    with build(cache, cuts, upstream) as features:
        good = snapshot(features)
        entry = entry_dir(cache, features)
    spoil(entry)
    calls = upstream.calls
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        with build(cache, cuts, upstream) as rebuilt:
            assert upstream.calls > calls
            for cut_id, array in good.items():
                np.testing.assert_array_equal(rebuilt[cut_id], array)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and reason in warnings[0] and str(entry) in warnings[0]
    assert not [p for p in cache.root.iterdir() if p.name.startswith((".tmp-", ".trash-"))]


def test_size_verification_trusts_content(tmp_path, cuts, weights):
    # The cheap level checks sizes and headers only: a same-size bit flip goes unnoticed.
    upstream = ConvUpstream(weights)
    cache = FeatureCache(tmp_path / "cache", shard_bytes=SHARD_BYTES, verify="size")
    with build(cache, cuts, upstream) as features:
        entry = entry_dir(cache, features)
    _flip_middle(entry)
    calls = upstream.calls
    build(cache, cuts, upstream).close()
    assert upstream.calls == calls
    _truncate(entry)
    build(cache, cuts, upstream).close()
    assert upstream.calls > calls


def test_rebuild_while_this_process_holds_the_entry_fails_clearly(cache, cuts, weights):
    upstream = ConvUpstream(weights)
    features = build(cache, cuts, upstream)
    (entry_dir(cache, features) / "COMPLETE").unlink()
    with pytest.raises(SpeechSSLError, match="still has it open"):
        build(cache, cuts, upstream)
    features.close()
    build(cache, cuts, upstream).close()


def test_crash_mid_build_leaves_nothing_and_next_call_builds(cache, cuts, weights):
    crashing = ConvUpstream(weights, fail_on_call=3)
    key = key_for(cuts, crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        build(cache, cuts, crashing)
    assert crashing.calls == 3
    assert not (cache.root / key).exists()
    assert [p.name for p in cache.root.iterdir()] == [".locks"]  # the temp dir went with the exception

    upstream = ConvUpstream(weights)
    with build(cache, cuts, upstream) as features:
        assert upstream.calls == 4 and len(features) == len(cuts)
        np.testing.assert_allclose(features["utt3"].astype(np.float32), direct(upstream, cuts[3]), rtol=2e-3, atol=2e-4)


def test_abandoned_temp_dirs_are_removed(cache, cuts, weights):
    upstream = ConvUpstream(weights)
    key = key_for(cuts, upstream)
    cache.root.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()

    def leftover(pid, suffix, age=0.0):
        folder = cache.root / f".tmp-{key}-{pid}-{suffix}"
        folder.mkdir()
        (folder / "BUILDER").write_text(f'{{"host": "{socket.gethostname()}", "pid": {pid}}}')
        (folder / "shard-00000.npy").write_bytes(b"\0" * 100)
        if age:
            os.utime(folder, (time.time() - age, time.time() - age))
        return folder

    crashed = leftover(dead.pid, "aaaa")  # SIGKILLed builder: its pid is gone
    silent = leftover(os.getpid(), "bbbb", age=2 * 3600)  # no heartbeat for 2 hours
    live = leftover(os.getpid(), "cccc")  # a builder that is still running
    trash = cache.root / f".trash-{key}-1-dddd"
    trash.mkdir()
    build(cache, cuts, upstream).close()
    assert not crashed.exists() and not silent.exists() and not trash.exists()
    assert live.exists()


def test_disk_cap_evicts_least_recently_used(tmp_path, cuts, weights):
    upstream = ConvUpstream(weights)
    estimate = FeatureCache(tmp_path / "probe", shard_bytes=SHARD_BYTES).estimate_bytes(cuts, upstream)
    keys = [key_for(cuts, upstream, variant=i) for i in range(3)]

    one = FeatureCache(tmp_path / "one", max_bytes=int(1.5 * estimate), shard_bytes=SHARD_BYTES)
    build(one, cuts, upstream, key=keys[0]).close()
    build(one, cuts, upstream, key=keys[1]).close()
    assert [entry.key for entry in one.entries()] == [keys[1]]
    assert one.disk_usage() <= one.max_bytes

    two = FeatureCache(tmp_path / "two", max_bytes=int(2.5 * estimate), shard_bytes=SHARD_BYTES)
    build(two, cuts, upstream, key=keys[0]).close()
    build(two, cuts, upstream, key=keys[1]).close()
    build(two, cuts, upstream, key=keys[0]).close()  # reuse: keys[0] is now the most recent
    build(two, cuts, upstream, key=keys[2]).close()
    assert {entry.key for entry in two.entries()} == {keys[0], keys[2]}
    assert two.disk_usage() <= two.max_bytes


def test_entry_in_use_is_never_evicted(tmp_path, cuts, weights):
    upstream = ConvUpstream(weights)
    estimate = FeatureCache(tmp_path / "probe").estimate_bytes(cuts, upstream)
    cache = FeatureCache(tmp_path / "cache", max_bytes=int(1.5 * estimate), shard_bytes=SHARD_BYTES)
    first_key, second_key = key_for(cuts, upstream, variant=0), key_for(cuts, upstream, variant=1)
    with build(cache, cuts, upstream, key=first_key) as features:
        with pytest.raises(SpeechSSLError, match=f"in use by running jobs: {first_key}"):
            build(cache, cuts, upstream, key=second_key)
        assert features["utt0"].shape[0] > 0
    build(cache, cuts, upstream, key=second_key).close()  # now it may go
    assert [entry.key for entry in cache.entries()] == [second_key]


def test_entry_bigger_than_the_cap_is_refused_before_any_work(tmp_path, cuts, weights):
    upstream = ConvUpstream(weights)
    estimate = FeatureCache(tmp_path / "probe").estimate_bytes(cuts, upstream)
    cache = FeatureCache(tmp_path / "cache", max_bytes=estimate // 2)
    with pytest.raises(SpeechSSLError, match=r"cache\.max_gb.*fewer layers"):
        build(cache, cuts, upstream)
    assert upstream.calls == 0
    # Keeping one layer of three fits.
    with build(cache, cuts, upstream, layers=[2]) as features:
        assert features.layers == [2]


def test_layer_subset_stores_only_those_layers(cache, cuts, weights):
    upstream = ConvUpstream(weights)
    with build(cache, cuts, upstream, layers=[0, -1]) as features:
        assert features.layers == [0, 2] and features.num_layers_kept == 2
        for cut in cuts[:2]:
            expected = direct(upstream, cut)[:, [0, 2]]
            assert features[cut.id].shape == expected.shape
            np.testing.assert_allclose(features[cut.id].astype(np.float32), expected, rtol=2e-3, atol=2e-4)
        subset_bytes = features.metadata["total_bytes"]
    with build(cache, cuts, upstream) as everything:
        assert everything.metadata["total_bytes"] == pytest.approx(1.5 * subset_bytes, rel=0.05)
    with pytest.raises(ConfigError, match="layer 3 does not exist"):
        build(cache, cuts, upstream, layers=[3])


def test_key_of_other_inputs_is_refused(cache, cuts, weights):
    upstream = ConvUpstream(weights)
    key = key_for(cuts, upstream)
    build(cache, cuts, upstream, key=key).close()
    with pytest.raises(ConfigError, match="built from other cuts"):
        build(cache, cuts[:3], upstream, key=key)
    with pytest.raises(ConfigError, match="holds layers"):
        build(cache, cuts, upstream, key=key, layers=[1])
    with pytest.raises(ConfigError, match="hex string"):
        build(cache, cuts, upstream, key="../escape")


def test_nan_from_the_upstream_names_the_cut(cache, cuts, weights):
    upstream = ConvUpstream(weights, nan_length=int(DURATIONS[4] * SR))
    with pytest.raises(SpeechSSLError, match=r"NaN or infinite values for cut 'utt4' \(layer 1"):
        build(cache, cuts, upstream)
    assert [p.name for p in cache.root.iterdir()] == [".locks"]


def test_values_beyond_float16_name_the_cut(cache, cuts, weights):
    upstream = ConvUpstream(weights, scale=1e6)
    with pytest.raises(SpeechSSLError, match=r"beyond float16's range \(\+-65504\) for cut 'utt5' \(layer 0"):
        build(cache, cuts, upstream)


def test_cached_features_pickle_without_the_arrays(cache, cuts, weights):
    with build(cache, cuts, ConvUpstream(weights)) as features:
        blob = pickle.dumps(features)
        assert len(blob) < 20_000
        copy = pickle.loads(blob)
        np.testing.assert_array_equal(copy["utt2"], features["utt2"])


_WORKER = """
import json, logging, os, sys, time
from pathlib import Path
logging.basicConfig(level=logging.INFO)
import numpy as np
sys.path.insert(0, sys.argv[1])
from lhotse import CutSet
from speechssl.downstream.cache import FeatureCache
from test_feature_cache import ConvUpstream, key_for
cuts = list(CutSet.from_file(sys.argv[2]))
upstream = ConvUpstream(sys.argv[3], delay=0.2, calls_log=sys.argv[4])
start = Path(sys.argv[6])
(start.parent / f"ready-{os.getpid()}").touch()
while not start.exists():  # both processes ask for the key at the same moment
    time.sleep(0.01)
with FeatureCache(sys.argv[5], shard_bytes=4096).get_or_build(
    key_for(cuts, upstream), cuts, upstream, batch_seconds=2.0, progress=False
) as features:
    print(json.dumps({cut_id: float(np.asarray(features[cut_id], np.float64).sum()) for cut_id in features.ids}))
"""


def test_concurrent_processes_build_once_and_agree(tmp_path, cuts, weights):
    from lhotse import CutSet

    manifest = tmp_path / "cuts.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(manifest)
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    calls_log = tmp_path / "calls.log"
    go = tmp_path / "go"
    args = [str(Path(__file__).parent), str(manifest), str(weights), str(calls_log), str(tmp_path / "cache"), str(go)]
    procs = [
        subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    deadline = time.time() + 60
    while len(list(tmp_path.glob("ready-*"))) < 2 and time.time() < deadline and all(p.poll() is None for p in procs):
        time.sleep(0.05)
    go.touch()
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    assert outputs[0][0] == outputs[1][0]
    assert sum("waiting for feature cache entry" in err for _, err in outputs) == 1
    builders = set(calls_log.read_text().split())
    assert len(builders) == 1  # one process ran the upstream, the other waited and reused
    assert len(calls_log.read_text().split()) == 4
    root = tmp_path / "cache"
    assert len([p for p in root.iterdir() if not p.name.startswith(".")]) == 1
    assert not [p for p in root.iterdir() if p.name.startswith((".tmp-", ".trash-"))]


def test_lost_rename_race_keeps_the_existing_entry(cache, cuts, weights, caplog):
    """Where flock does not work, two builders can finish the same key: the first rename wins."""
    import shutil

    upstream = ConvUpstream(weights)
    with build(cache, cuts, upstream) as features:
        key, entry, good = features.key, entry_dir(cache, features), snapshot(features)
    build_id = features.metadata["build_id"]

    loser = cache.root / f".tmp-{key}-{os.getpid()}-0001"
    shutil.copytree(entry, loser)
    cache._install(loser, key)  # the existing complete entry stays; the caller discards its copy
    assert loser.exists()
    with build(cache, cuts, upstream) as again:
        assert again.metadata["build_id"] == build_id

    (entry / "index.json").unlink()  # the existing one is damaged: the new copy replaces it
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        cache._install(loser, key)
    assert not loser.exists() and "index.json is missing" in caplog.text
    calls = upstream.calls
    with build(cache, cuts, upstream) as replaced:
        assert upstream.calls == calls
        for cut_id, array in good.items():
            np.testing.assert_array_equal(replaced[cut_id], array)
