"""How much padding does duration bucketing save?

Compares, for one epoch under the same seconds-per-batch budget:

* ``bucketed``: speechssl's DurationBucketSampler (seed 004's bins + priority queue,
  spread-breaking cuts re-binned so every cut is kept);
* ``seed004-discard``: the same batching with the paper's rule instead (no spread check
  while filling, then batches spreading more than ``--max-spread`` seconds are dropped);
* ``random``: shuffle everything and fill each batch greedily up to the budget;
* ``lhotse-dynbucket``: lhotse's DynamicBucketingSampler(max_duration=budget), a field peer.
  Note that lhotse applies max_duration to the *padded* duration (cuts x longest cut),
  a stricter reading of the same number than our sum of real durations.

Padding waste = padded samples / total samples of the ``B x max_len`` tensors at 16 kHz.
The last line is ``ratio: X`` = random waste / bucketed waste.

    python benchmarks/bucketing.py                       # data/synth, split train
    python benchmarks/bucketing.py --librispeech-like    # 281k cuts, 0.8-30 s
    python benchmarks/bucketing.py --librispeech-like --quick
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from lhotse import CutSet, MonoCut
from lhotse.dataset import DynamicBucketingSampler

from speechssl.data.sampler import DurationBucketSampler, PlanStats
from speechssl.errors import ConfigError

LIBRISPEECH_UTTERANCES = 281_241  # train-960
QUICK_CUTS = 20_000


@dataclass
class Row:
    name: str
    stats: PlanStats
    seconds_taken: float  # wall time to plan the epoch


def librispeech_like(n: int, seed: int) -> CutSet:
    """Lognormal durations clipped to LibriSpeech's 0.83-30 s range, mean ~12-13 s."""
    rng = np.random.default_rng(seed)
    durations = np.clip(rng.lognormal(mean=math.log(12.0), sigma=0.45, size=n), 0.83, 30.0)
    return CutSet.from_cuts(
        MonoCut(id=f"ls{i:06d}", start=0.0, duration=round(float(d), 2), channel=0) for i, d in enumerate(durations)
    )


def random_batches(durations: Sequence[float], budget: float, seed: int) -> list[list[float]]:
    order = list(durations)
    random.Random(seed).shuffle(order)
    batches: list[list[float]] = []
    batch: list[float] = []
    total = 0.0
    for d in order:
        if batch and total + d > budget:
            batches.append(batch)
            batch, total = [], 0.0
        batch.append(d)
        total += d
    return batches + [batch] if batch else batches


def seed004_discard(cuts: CutSet, args: argparse.Namespace, bin_size: int) -> list[list[float]]:
    """The paper's rule: fill without a spread limit, then drop batches that spread too much."""
    unlimited = DurationBucketSampler(
        cuts, batch_seconds=args.batch_seconds, bin_size=bin_size, queue_size=args.queue_size,
        max_spread_seconds=1e9, seed=args.seed,
    )
    by_id = {c.id: c.duration for c in cuts}
    batches = [[by_id[i] for i in b] for b in unlimited.plan(epoch=0, all_ranks=True)]
    return [b for b in batches if max(b) - min(b) <= args.max_spread]


def lhotse_batches(cuts: CutSet, budget: float, seed: int) -> list[list[float]]:
    # Its warning about eager CutSets concerns memory, which does not matter here.
    warnings.filterwarnings("ignore", message=".*eagerly read CutSet.*")
    sampler = DynamicBucketingSampler(cuts, max_duration=budget, shuffle=True, seed=seed, world_size=1, rank=0)
    sampler.set_epoch(0)
    return [[c.duration for c in batch] for batch in sampler]


def timed(name: str, plan: Callable[[], list[list[float]]]) -> Row:
    start = time.perf_counter()
    batches = plan()
    elapsed = time.perf_counter() - start
    return Row(name, PlanStats.from_durations(batches), elapsed)


def load_cuts(args: argparse.Namespace) -> tuple[CutSet, str]:
    if args.librispeech_like:
        n = QUICK_CUTS if args.quick else LIBRISPEECH_UTTERANCES
        return librispeech_like(n, args.seed), f"LibriSpeech-like lognormal, {n} cuts"
    path = Path(args.data) / "manifests" / f"cuts_{args.split}.jsonl.gz"
    if not path.exists():
        print(f"no corpus at {path}; run `speechssl corpus synth --out {args.data}` first (or use --librispeech-like)")
        sys.exit(2)
    cuts = CutSet.from_file(path).to_eager()
    if args.quick and len(cuts) > QUICK_CUTS:
        cuts = cuts.subset(first=QUICK_CUTS)
    return cuts, f"{path} ({len(cuts)} cuts)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/synth", help="corpus dir with manifests/ (default: data/synth)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--batch-seconds", type=float, default=60.0, help="audio budget per batch")
    parser.add_argument("--bin-size", type=int, default=None,
                        help="default: the sampler's automatic size (about ten batches per bin, at most 5000)")
    parser.add_argument("--queue-size", type=int, default=50)
    parser.add_argument("--max-spread", type=float, default=10.0, help="longest - shortest cut per batch (s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--librispeech-like", action="store_true", help="synthetic 0.8-30 s cuts, not --data")
    parser.add_argument("--quick", action="store_true", help=f"at most {QUICK_CUTS} cuts: a few seconds")
    args = parser.parse_args(argv)

    cuts, source = load_cuts(args)
    durations = [c.duration for c in cuts]
    corpus_seconds = math.fsum(durations)

    def bucketed(bin_size: int | None) -> Callable[[], list[list[float]]]:
        def plan() -> list[list[float]]:
            sampler = DurationBucketSampler(
                cuts, batch_seconds=args.batch_seconds, bin_size=bin_size, queue_size=args.queue_size,
                max_spread_seconds=args.max_spread, seed=args.seed,
            )
            return [[c.duration for c in batch] for batch in sampler]
        return plan

    try:
        bin_size = DurationBucketSampler(
            cuts, batch_seconds=args.batch_seconds, bin_size=args.bin_size, queue_size=args.queue_size
        ).bin_size
        first = timed("bucketed", bucketed(bin_size))
    except ConfigError as exc:
        print(f"error: {exc}")
        return 2
    rows = [
        first,
        # The paper's constant bin size, which only suits corpora of LibriSpeech's size.
        timed("bucketed-bins5000", bucketed(5000)),
        timed("seed004-discard", lambda: seed004_discard(cuts, args, bin_size)),
        timed("random", lambda: random_batches(durations, args.batch_seconds, args.seed)),
        timed("lhotse-dynbucket", lambda: lhotse_batches(cuts, args.batch_seconds, args.seed)),
    ]

    print(f"corpus: {source}, {corpus_seconds / 3600:.1f} h, durations {min(durations):.2f}-{max(durations):.2f} s")
    print(
        f"budget {args.batch_seconds:g} s/batch, bin_size {bin_size}, queue {args.queue_size}, "
        f"max spread {args.max_spread:g} s, seed {args.seed}"
    )
    columns = ["batches", "cuts/b", "s/b", "max s", "spread", "waste", "kept", "time"]
    header = f"{'method':<18}" + "".join(f"{c:>8}" for c in columns)
    print(header)
    print("-" * len(header))
    for row in rows:
        s = row.stats
        print(
            f"{row.name:<18}{s.num_batches:>8}{s.mean_cuts_per_batch:>8.1f}{s.mean_seconds_per_batch:>8.1f}"
            f"{s.max_seconds_per_batch:>8.1f}{s.max_spread_seconds:>8.1f}{100 * s.padding_waste:>7.1f}%"
            f"{100 * s.total_seconds / corpus_seconds:>7.1f}%{row.seconds_taken:>7.2f}s"
        )
    waste = {row.name: row.stats.padding_waste for row in rows}
    print(f"ratio: {waste['random'] / waste['bucketed']:.2f}" if waste["bucketed"] > 0 else "ratio: inf")
    return 0


if __name__ == "__main__":
    sys.exit(main())
