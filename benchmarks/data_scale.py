"""Scale of the data layer: a 1 M-cut manifest, read lazily and planned by the sampler.

Issue 17 item 6. Three steps, each timed with its peak RSS:

1. ``generate``: write a synthetic lhotse cuts manifest of N cuts (jsonl.gz): durations
   drawn uniformly from 1-20 s (whole samples at 16 kHz), 8 languages, one speaker label
   per cut, every recording pointing at one shared 20 s wav file (so every cut is a
   valid, loadable slice of it). Streamed to disk: memory does not grow with N.
2. ``read``: iterate every cut lazily (:func:`speechssl.data.manifests.iter_cuts`, a
   validated ``MonoCut`` per line, one at a time).
3. ``plan``: scan the manifest into a compact :class:`~speechssl.data.manifests.CutIndex`
   (ids, durations, language codes; no Cut objects) and plan one epoch with the
   pretraining sampler (:class:`~speechssl.data.sampler.DurationBucketSampler` with the
   pretraining crop as ``max_cut_seconds``), then its statistics (padding waste).

``--eager`` adds, for comparison, the old way: ``load_cuts`` (every cut as a lhotse
object in memory) and the sampler over that list; at 1 M cuts it needs 1.7 GB and ~50 s.

Peak RSS per step is the largest resident set size seen while the step ran (sampled
every 5 ms from /proc/self/statm by a thread), reported as growth over the RSS before
the step; ``ru_maxrss`` is the process-lifetime peak.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/data_scale.py --cuts 1000000
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/data_scale.py --cuts 50000 --eager --json

The last line with ``--json`` is one JSON object with every number (the tests read it).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shlex
import sys
import tempfile
import threading
import time
import wave
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from speechssl.memory import current_rss_bytes, peak_rss_bytes

LANGUAGES = ("en", "fr", "de", "es", "it", "nl", "pt", "cs")
SAMPLE_RATE = 16_000
MIN_SECONDS = 1.0
MAX_SECONDS = 20.0
SHARED_AUDIO = "audio/shared.wav"
SPLIT = "train"
# configs/pretrain/w2v2_base.yaml's micro-batch and crop (fairseq wav2vec 2.0 BASE: 1.4 M
# samples per GPU, max_sample_size 250 000).
BATCH_SECONDS = 87.5
CROP_SECONDS = 15.625

# ---------------------------------------------------------------------- memory


class PeakSampler:
    """Largest RSS seen while a block runs, polled by a daemon thread every ``interval`` s."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.start = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PeakSampler":
        self.start = self.peak = current_rss_bytes()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, current_rss_bytes())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self.peak = max(self.peak, current_rss_bytes())

    @property
    def growth(self) -> int:
        return self.peak - self.start


@contextmanager
def measured(name: str, results: dict) -> Iterator[dict]:
    extra: dict = {}
    started = time.perf_counter()
    cpu_started = time.process_time()
    with PeakSampler() as sampler:
        yield extra
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    row = {
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu_seconds, 3),
        "rss_before_mb": round(sampler.start / 2**20, 1),
        "peak_rss_mb": round(sampler.peak / 2**20, 1),
        "peak_growth_mb": round(sampler.growth / 2**20, 1),
        **extra,
    }
    results[name] = row
    details = ", ".join(f"{k}={v}" for k, v in extra.items())
    print(
        f"{name:>10}: {seconds:7.2f} s ({cpu_seconds:6.2f} s CPU)   peak RSS {row['peak_rss_mb']:8.1f} MB "
        f"(+{row['peak_growth_mb']:.1f} MB over {row['rss_before_mb']:.1f} MB)" + (f"   {details}" if details else ""),
        flush=True,
    )


# ---------------------------------------------------------------------- the manifest


def write_shared_audio(path: Path, seconds: float = MAX_SECONDS) -> None:
    """A mono 16-bit wav of quiet noise, long enough for the longest cut."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    samples = (rng.standard_normal(int(seconds * SAMPLE_RATE)) * 300).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SAMPLE_RATE)
        handle.writeframes(samples.tobytes())


def write_synthetic_manifest(out_dir: str | Path, num_cuts: int, *, seed: int = 0, chunk: int = 20_000,
                             min_seconds: float = MIN_SECONDS, max_seconds: float = MAX_SECONDS) -> Path:
    """Write ``OUT/manifests/cuts_train.jsonl.gz`` with ``num_cuts`` cuts (see module doc).

    Durations are uniform in ``[min_seconds, max_seconds]`` (at most the 20 s of the
    shared audio file). Returns the manifest path. Lines are formatted from a template
    (``json.dumps`` per cut would take most of the time) and written in chunks, so
    memory stays flat.
    """
    if not 0 < min_seconds <= max_seconds <= MAX_SECONDS:
        raise ValueError(f"durations must satisfy 0 < {min_seconds} <= {max_seconds} <= {MAX_SECONDS}")
    out_dir = Path(out_dir)
    write_shared_audio(out_dir / SHARED_AUDIO)
    path = out_dir / "manifests" / f"cuts_{SPLIT}.jsonl.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    total_samples = int(MAX_SECONDS * SAMPLE_RATE)
    rng = np.random.default_rng(seed)
    template = (
        '{{"id": "{id}", "start": 0.0, "duration": {dur}, "channel": 0, '
        '"supervisions": [{{"id": "{id}", "recording_id": "{id}", "start": 0.0, "duration": {dur}, '
        '"channel": 0, "language": "{lang}", "speaker": "spk{spk:04d}"}}], '
        '"recording": {{"id": "{id}", "sources": [{{"type": "file", "channels": [0], "source": "'
        + SHARED_AUDIO
        + '"}}], "sampling_rate": '
        + str(SAMPLE_RATE)
        + ', "num_samples": '
        + str(total_samples)
        + ', "duration": '
        + repr(MAX_SECONDS)
        + ', "channel_ids": [0]}}, "type": "MonoCut"}}\n'
    )
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as handle:
        for first in range(0, num_cuts, chunk):
            n = min(chunk, num_cuts - first)
            samples = rng.integers(int(min_seconds * SAMPLE_RATE), int(max_seconds * SAMPLE_RATE) + 1, size=n)
            languages = rng.integers(0, len(LANGUAGES), size=n)
            speakers = rng.integers(0, 2000, size=n)
            handle.write(
                "".join(
                    template.format(
                        id=f"syn{first + k:08d}",
                        dur=repr(int(samples[k]) / SAMPLE_RATE),
                        lang=LANGUAGES[languages[k]],
                        spk=int(speakers[k]),
                    )
                    for k in range(n)
                )
            )
    corpus = {"name": "speechssl-data-scale", "sample_rate": SAMPLE_RATE, "languages": list(LANGUAGES),
              "splits": {SPLIT: {"utterances": num_cuts}}}
    (out_dir / "corpus.json").write_text(json.dumps(corpus, indent=2) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------- the steps


def run(num_cuts: int, work_dir: Path, *, eager: bool = False, read: bool = True,
        language_alpha: float | None = None, seed: int = 0) -> dict:
    from speechssl.data.manifests import CutIndex, iter_cuts, load_cuts
    from speechssl.data.sampler import DurationBucketSampler

    results: dict = {"num_cuts": num_cuts, "baseline_rss_mb": round(current_rss_bytes() / 2**20, 1)}
    sampler_kwargs = dict(batch_seconds=BATCH_SECONDS, max_cut_seconds=CROP_SECONDS, seed=seed,
                          language_alpha=language_alpha)

    with measured("generate", results) as extra:
        path = write_synthetic_manifest(work_dir, num_cuts, seed=seed)
        extra["manifest_mb"] = round(path.stat().st_size / 2**20, 1)

    if read:
        with measured("read", results) as extra:
            count = 0
            seconds = 0.0
            for cut in iter_cuts(work_dir, SPLIT):
                count += 1
                seconds += cut.duration
            assert count == num_cuts, (count, num_cuts)
            extra["hours"] = round(seconds / 3600, 1)

    with measured("index", results) as extra:
        index = CutIndex.from_manifest(work_dir, SPLIT)
        extra["index_mb"] = round(index.nbytes / 2**20, 1)

    with measured("plan", results) as extra:
        sampler = DurationBucketSampler(index, **sampler_kwargs)  # plans epoch 0
        extra["batches"] = len(sampler)
        extra["bin_size"] = sampler.bin_size

    with measured("stats", results) as extra:
        stats = sampler.plan_stats()
        extra["padding_waste_pct"] = round(100 * stats.padding_waste, 2)
        extra["cuts_per_batch"] = round(stats.mean_cuts_per_batch, 1)
    assert stats.num_cuts == (num_cuts if language_alpha is None else stats.num_cuts)
    results["scan_and_plan_seconds"] = round(results["index"]["seconds"] + results["plan"]["seconds"], 3)
    results["scan_and_plan_cpu_seconds"] = round(results["index"]["cpu_seconds"] + results["plan"]["cpu_seconds"], 3)
    results["scan_and_plan_peak_growth_mb"] = round(
        max(results["index"]["peak_rss_mb"], results["plan"]["peak_rss_mb"]) - results["index"]["rss_before_mb"], 1
    )
    plan_ids = sampler.plan(0)
    del sampler, index

    if eager:
        with measured("eager_load", results):
            cuts = list(load_cuts(work_dir, SPLIT))
        with measured("eager_plan", results) as extra:
            eager_sampler = DurationBucketSampler(cuts, **sampler_kwargs)
            extra["same_plan"] = eager_sampler.plan(0) == plan_ids
        del eager_sampler, cuts

    results["ru_maxrss_mb"] = round(peak_rss_bytes() / 2**20, 1)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cuts", type=int, default=1_000_000, help="number of cuts (default 1 M)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the manifest (default: a temp dir)")
    parser.add_argument("--eager", action="store_true", help="also time load_cuts + the sampler over Cut objects")
    parser.add_argument("--no-read", action="store_true", help="skip the lazy read of every cut")
    parser.add_argument("--language-alpha", type=float, default=None, help="plan with language balancing")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of all results")
    args = parser.parse_args(argv)

    print("command: OMP_NUM_THREADS=%s %s" % (os.environ.get("OMP_NUM_THREADS", ""),
                                               " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])))
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        results = run(args.cuts, args.dir, eager=args.eager, read=not args.no_read,
                          language_alpha=args.language_alpha)
    else:
        with tempfile.TemporaryDirectory(prefix="speechssl-data-scale-") as tmp:
            results = run(args.cuts, Path(tmp), eager=args.eager, read=not args.no_read,
                          language_alpha=args.language_alpha)
    print(f"scan + plan: {results['scan_and_plan_seconds']:.2f} s ({results['scan_and_plan_cpu_seconds']:.2f} s CPU), "
          f"peak RSS growth "
          f"{results['scan_and_plan_peak_growth_mb']:.1f} MB; process peak (ru_maxrss) {results['ru_maxrss_mb']:.1f} MB")
    if args.json:
        print(json.dumps(results, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
