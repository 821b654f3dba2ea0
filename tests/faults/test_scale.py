"""Scale of the data layer (issue 17 item 6): a huge manifest is read lazily and planned fast.

The measurements run ``benchmarks/data_scale.py`` in a fresh process, so its peak RSS is
the data layer's alone (``ru_maxrss`` of a pytest process that already ran other tests
says nothing). Bounds:

* time: planning one epoch from the manifest (scan it into a ``CutIndex`` + plan with the
  pretraining sampler) takes under 60 s of CPU per million cuts (measured: ~12 s of CPU
  for 1 M cuts). CPU time, not wall time, because the suite shares its cores with
  other jobs; the wall time is asserted against three times that.
* memory: the scan + plan may grow the RSS by at most 64 MB + 600 bytes per cut, i.e.
  636 MB at 1 M cuts (measured: ~200 MB, ~200 B per cut: id string, float64 duration,
  int16 language, and the epoch's plan as lists of ints). Materialising the cuts as
  lhotse objects, as ``load_cuts`` does, costs ~1.7 KB per cut (~1.7 GB at 1 M), so
  the bound fails if planning ever builds Cut objects again.
* the lazy read of every cut (``iter_cuts``) grows the RSS by less than 64 MB at any size.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from speechssl.data.manifests import CutIndex, iter_cuts, load_cuts
from speechssl.data.sampler import DurationBucketSampler
from speechssl.errors import ConfigError, ManifestError

ROOT = Path(__file__).resolve().parents[2]
BENCHMARK = ROOT / "benchmarks" / "data_scale.py"

CPU_SECONDS_PER_MILLION = 60.0
FIXED_MB = 64.0
BYTES_PER_CUT = 600
READ_GROWTH_MB = 64.0


def _benchmark(num_cuts: int, tmp_path: Path, *extra: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(BENCHMARK), "--cuts", str(num_cuts), "--dir", str(tmp_path / "corpus"), "--json",
               *extra]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    print(done.stdout)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _check_bounds(result: dict, num_cuts: int) -> None:
    cpu_limit = max(5.0, CPU_SECONDS_PER_MILLION * num_cuts / 1e6)
    assert result["scan_and_plan_cpu_seconds"] < cpu_limit, result
    assert result["scan_and_plan_seconds"] < 3 * cpu_limit, result
    memory_limit = FIXED_MB + num_cuts * BYTES_PER_CUT / 2**20
    assert result["scan_and_plan_peak_growth_mb"] < memory_limit, result
    assert result["read"]["peak_growth_mb"] < READ_GROWTH_MB, result
    assert result["plan"]["batches"] > 0


def test_50k_cut_manifest_plans_fast_in_bounded_memory_and_as_from_cuts(tmp_path):
    result = _benchmark(50_000, tmp_path, "--eager")
    _check_bounds(result, 50_000)
    assert result["eager_plan"]["same_plan"] is True


@pytest.mark.faults
def test_million_cut_manifest_is_read_lazily_and_planned_in_seconds(tmp_path):
    result = _benchmark(1_000_000, tmp_path)
    _check_bounds(result, 1_000_000)


# ---------------------------------------------------------------- the compact path, unit by unit


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    sys.path.insert(0, str(BENCHMARK.parent))
    try:
        from data_scale import write_synthetic_manifest
    finally:
        sys.path.remove(str(BENCHMARK.parent))
    out = tmp_path_factory.mktemp("scale")
    write_synthetic_manifest(out, 3000, seed=1)
    return out


CONFIGS = [
    dict(batch_seconds=120.0, max_cut_seconds=15.0),
    dict(batch_seconds=60.0, world_size=3, rank=2, group_size=2, seed=5),
    dict(batch_seconds=120.0, language_alpha=0.5, max_cut_seconds=15.0),
    dict(batch_seconds=120.0, language_alpha=0.0, epoch_seconds=40_000.0, seed=3),
]


@pytest.mark.parametrize("config", CONFIGS, ids=["plain", "ddp", "alpha0.5", "alpha0-epoch"])
def test_sampler_from_cut_index_plans_and_resumes_exactly_as_from_cuts(corpus, config):
    cuts = list(load_cuts(corpus, "train"))
    from_cuts = DurationBucketSampler(cuts, **config)
    index = CutIndex.from_manifest(corpus, "train")
    from_index = DurationBucketSampler(index, **config)
    assert from_index._cuts is None  # no cut object is held
    for epoch in (0, 1):
        assert from_index.plan(epoch) == from_cuts.plan(epoch)
        assert from_index.plan_stats(epoch) == from_cuts.plan_stats(epoch)
        assert from_index.seconds_by_language(epoch) == from_cuts.seconds_by_language(epoch)
    assert from_index.state_dict() == from_cuts.state_dict()

    # A state saved mid-epoch by the cut-backed sampler loads into the index-backed one.
    from_cuts.set_epoch(1)
    stream = iter(from_cuts)
    for _ in range(2):
        next(stream)
    state = from_cuts.state_dict()
    from_index.load_state_dict(state)
    assert from_index.state_dict() == state
    assert CutIndex.from_cuts(cuts).ids == index.ids


def test_sampler_from_cut_index_refuses_to_iterate_with_a_clear_error(corpus):
    sampler = DurationBucketSampler(CutIndex.from_manifest(corpus, "train"), batch_seconds=120.0)
    with pytest.raises(ConfigError, match="built from a CutIndex"):
        next(iter(sampler))


def test_cut_index_min_seconds_and_languages(corpus):
    index = CutIndex.from_manifest(corpus, "train", min_seconds=10.0)
    assert len(index) > 0 and (index.durations >= 10.0).all()
    assert set(index.language_names) == {"en", "fr", "de", "es", "it", "nl", "pt", "cs"}
    assert all(language is not None for language in index.languages)
    with pytest.raises(ManifestError, match="no cuts of at least 30"):
        CutIndex.from_manifest(corpus, "train", min_seconds=30.0)


def _write_manifest(folder: Path, lines: list[str]) -> None:
    (folder / "manifests").mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / "manifests" / "cuts_train.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))


def _cut_line(cut_id: str, source: str, duration: float = 1.0) -> str:
    return json.dumps({
        "id": cut_id, "start": 0.0, "duration": duration, "channel": 0, "supervisions": [],
        "recording": {"id": cut_id, "sources": [{"type": "file", "channels": [0], "source": source}],
                      "sampling_rate": 16000, "num_samples": int(duration * 16000), "duration": duration},
        "type": "MonoCut",
    })


def test_iter_cuts_is_lazy_a_bad_record_surfaces_only_when_reached(tmp_path):
    _write_manifest(tmp_path, [_cut_line("a", "audio/a.wav"), "{not json"])
    stream = iter_cuts(tmp_path, "train")
    assert next(stream).id == "a"
    with pytest.raises(ManifestError, match=r":2: not valid JSON"):
        next(stream)


def test_cut_index_and_load_cuts_refuse_duplicate_ids(tmp_path):
    _write_manifest(tmp_path, [_cut_line("a", "x.wav"), _cut_line("a", "y.wav")])
    with pytest.raises(ManifestError, match="duplicate cut ids"):
        CutIndex.from_manifest(tmp_path, "train")
    with pytest.raises(ManifestError, match="duplicate cut ids"):
        load_cuts(tmp_path, "train")


def test_cut_index_checks_records_like_load_cuts(tmp_path):
    _write_manifest(tmp_path, [_cut_line("a", "x.wav"), json.dumps({"id": "b", "start": 0.0, "duration": 1.0})])
    with pytest.raises(ManifestError, match=r":2: cut 'b' is missing field 'recording'"):
        CutIndex.from_manifest(tmp_path, "train")


def test_cached_path_resolution_matches_full_resolve_with_symlinks(tmp_path):
    """Resolving directories once per folder gives what resolving every path gave."""
    real = tmp_path / "real"
    (real / "spk1").mkdir(parents=True)
    (real / "spk1" / "a.wav").write_bytes(b"")
    (real / "target.wav").write_bytes(b"")
    corpus = tmp_path / "corpus"
    (corpus / "audio").mkdir(parents=True)
    (corpus / "audio" / "spk1").symlink_to(real / "spk1")  # a linked folder
    (corpus / "audio" / "b.wav").symlink_to(real / "target.wav")  # a linked file
    sources = ["audio/spk1/a.wav", "audio/b.wav", "audio/spk1/../b.wav", "audio/./spk1/a.wav", "audio/missing.wav"]
    _write_manifest(corpus, [_cut_line(f"c{i}", s) for i, s in enumerate(sources)])
    got = [c.recording.sources[0].source for c in iter_cuts(corpus, "train")]
    assert got == [str((corpus / s).resolve()) for s in sources]
