"""Does the RSS of a long pretraining run stay flat? (issue 17 item 6; issue 4 saw 2.4 -> 4.4 GB)

Runs ``speechssl pretrain`` (tiny wav2vec 2.0 on the synthetic corpus by default) with a
record per update (``log_every=1``), reads the main process's resident memory from the
``rss_mb`` field of metrics.jsonl, and prints it at updates 50 / 150 / 300 / 450 (the
same fractions of ``--steps``) with the growth from the first of those to the last.

The RSS after an update moves within a band of a few hundred MB (glibc keeps freed heap
memory; how much of it is resident depends on the last few batches' shapes), so besides
the value at each mark it reports the median and the maximum of the ``--window`` (25)
updates ending there. Growth from the first mark to the last is given for all three; a
trend shows in all of them, the band mostly in the single values and the maxima.
``max_growth_pct`` is the largest RSS of any update after the first mark against the
median of that mark's window. ``--summarize DIR`` re-reads a finished run's metrics.jsonl.

``--compare`` runs twice: ``before`` with ``SPEECHSSL_BOUND_SHAPE_CACHES=0`` (oneDNN's
default per-shape caches, as before the fix) and ``after`` with the fix
(:func:`speechssl.memory.bound_shape_caches`). Outputs go to ``--out/<mode>``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pretrain_rss.py --compare
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pretrain_rss.py --steps 150 --json

Validation, checkpoints other than the last and TensorBoard are off so that the numbers
are those of the training loop; batches are 16 s (the wavlablm_tiny size) to keep a
450-update run to minutes on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKS = (50, 150, 300, 450)  # of a 450-update run; scaled to --steps


def marks_for(steps: int) -> list[int]:
    return sorted({max(1, min(steps, round(steps * m / 450))) for m in MARKS})


def command_for(args: argparse.Namespace, out: Path) -> list[str]:
    speechssl = Path(sys.executable).with_name("speechssl")
    launcher = [str(speechssl)] if speechssl.is_file() else [sys.executable, "-m", "speechssl.cli"]
    return [
        *launcher, "pretrain", args.config, "--out", str(out), "--fresh", "--no-progress",
        f"steps={args.steps}", "log_every=1", "valid_every=0", f"save_every={args.steps}",
        "tensorboard=false", "health_utterances=0",
        f"batch_seconds={args.batch_seconds}", f"data.micro_batch_seconds={args.batch_seconds}",
        f"data.dir={args.data}", *args.override,
    ]


def run_one(args: argparse.Namespace, mode: str) -> dict:
    out = Path(args.out) / mode
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    for name in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):  # the fix's own defaults decide
        env.pop(name, None)
    env["SPEECHSSL_BOUND_SHAPE_CACHES"] = "0" if mode == "before" else "1"
    command = command_for(args, out)
    shown = " ".join(f"{k}={env[k]}" for k in ("OMP_NUM_THREADS", "SPEECHSSL_BOUND_SHAPE_CACHES"))
    print(f"[{mode}] {shown} {' '.join(shlex.quote(c) for c in command)}", flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"[{mode}] pretraining failed (exit {done.returncode})")
    rss = read_rss(out)
    return summarize(rss, args.steps, args.window, mode=mode, seconds=seconds)


def summarize(rss: dict[int, float], steps: int, window: int, *, mode: str = "", seconds: float = 0.0) -> dict:
    """RSS at the marks, window high-water marks and growth from the first mark."""
    marks = marks_for(steps)
    at = {m: rss[m] for m in marks}
    windows = {m: [v for s, v in rss.items() if m - window < s <= m] for m in marks}
    high = {m: max(values) for m, values in windows.items()}
    middle = {m: statistics.median(values) for m, values in windows.items()}
    after_first = [v for s, v in rss.items() if s > marks[0]]
    result = {
        "mode": mode,
        "steps": steps,
        "window": window,
        "seconds": round(seconds, 1),
        "seconds_per_update": round(seconds / steps, 3),
        "rss_mb_first_update": rss[min(rss)],
        "rss_mb_at": {str(m): at[m] for m in marks},
        "rss_mb_window_median": {str(m): round(middle[m], 1) for m in marks},
        "rss_mb_window_max": {str(m): high[m] for m in marks},
        "growth_pct": _pct(at[marks[-1]], at[marks[0]]),
        "median_growth_pct": _pct(middle[marks[-1]], middle[marks[0]]),
        "window_max_growth_pct": _pct(high[marks[-1]], high[marks[0]]),
        "max_growth_pct": _pct(max(after_first, default=middle[marks[0]]), middle[marks[0]]),
    }
    marks_text = "  ".join(f"{m}: {at[m]:.0f} ({middle[m]:.0f}, {high[m]:.0f})" for m in marks)
    print(
        f"[{mode}] RSS MB at update (median, max of the {window} updates up to it): {marks_text}\n"
        f"[{mode}] growth {marks[0]}->{marks[-1]}: {result['growth_pct']:+.1f}% at the marks, "
        f"{result['median_growth_pct']:+.1f}% of the medians, {result['window_max_growth_pct']:+.1f}% of the maxima; "
        f"largest RSS after update {marks[0]}: {result['max_growth_pct']:+.1f}% over its median"
        + (f"; {result['seconds_per_update']:.2f} s/update" if seconds else ""),
        flush=True,
    )
    return result


def read_rss(out: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r["rss_mb"] for r in records if r.get("split") == "train" and "rss_mb" in r}


def _pct(value: float, reference: float) -> float:
    return round(100.0 * (value - reference) / reference, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=450)
    parser.add_argument("--batch-seconds", type=float, default=16.0)
    parser.add_argument("--config", default="configs/pretrain/w2v2_tiny.yaml")
    parser.add_argument("--data", default="data/synth")
    parser.add_argument("--out", default="runs/rss")
    parser.add_argument("--window", type=int, default=25, help="updates per window for median and max (default 25)")
    parser.add_argument("--summarize", type=Path, nargs="+", default=None, metavar="DIR",
                        help="only summarize finished runs (their metrics.jsonl), running nothing")
    parser.add_argument("--compare", action="store_true", help="run before (guard off) and after (guard on)")
    parser.add_argument("--mode", choices=("before", "after"), default="after", help="without --compare")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    parser.add_argument("override", nargs="*", help="more KEY=VALUE overrides for speechssl pretrain")
    args = parser.parse_args(argv)
    print("command: OMP_NUM_THREADS=%s %s" % (
        os.environ.get("OMP_NUM_THREADS", ""), " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])))
    if args.summarize:
        results = []
        for folder in args.summarize:
            rss = read_rss(folder)
            results.append(summarize(rss, max(rss), args.window, mode=str(folder)))
        if args.json:
            print(json.dumps(results, sort_keys=True))
        return 0
    modes = ("before", "after") if args.compare else (args.mode,)
    results = [run_one(args, mode) for mode in modes]
    if args.json:
        print(json.dumps(results if args.compare else results[0], sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
