"""Probe training speed on cached features: seconds per epoch of the BiLSTM and x-vector probes.

Every case is one real :func:`speechssl.downstream.runner.run_bench` (the runner's own
feature cache, batching, featurizer, training loop, dev evaluation after every epoch and
test pass), with the demo's bench settings for its task (``speechssl demo``, stage 5) on a
fixed train subset. Nothing is re-implemented: timers are wrapped around the runner's
pieces for the duration of the run --

* ``data``: waiting for the next batch of ``FeatureSource.batches`` (cache read, padding
  collate, host-to-device copy);
* ``fwd``: the featurizer and ``task.loss`` (probe forward pass and the loss);
* ``bwd``: ``Tensor.backward``;
* ``opt``: gradient clipping (``clip_grad_norm_``) and ``optimizer.step``;
* ``other``: the rest of the runner's epoch timer (zero_grad, finiteness checks, the
  scheduler, loop overhead);

and the dev pass that follows every epoch (``task.evaluate(final=False)``) is timed on its
own. ``epoch s`` is the runner's own epoch timer (``epoch_seconds`` of ``metrics.jsonl``).
Epoch 1 warms the page cache and oneDNN's kernels and is not in the medians.

Upstreams: ``mfcc``, plus the demo's pretrained checkpoint when ``runs/demo/pretrain`` has
one. Their feature caches (under ``--out``) are built on first use and reused afterwards;
the corpus (``--data``) is synthesised like the demo's when it does not exist. Results
are deterministic for a seed and thread count, so ``--save`` one run and ``--baseline``
it in a later one to print a before/after table with the dev/test metrics of both:

    .venv/bin/python benchmarks/probe_epoch.py --save /tmp/before.json      # a few minutes on 2 cores
    .venv/bin/python benchmarks/probe_epoch.py --baseline /tmp/before.json
    .venv/bin/python benchmarks/probe_epoch.py --autocast bf16 --baseline /tmp/before.json
    .venv/bin/python benchmarks/probe_epoch.py --upstreams mfcc --cases asr_lid:bilstm_ctc \
        --train-hours 0.5 --epochs 8          # the demo's sequence-task budget: CER leaves 1.0
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator

DEFAULT_CASES = ["asr_lid:bilstm_ctc", "lid:xvector", "asv:xvector"]
DEMO_CHECKPOINT = Path("runs/demo/pretrain")
BUCKETS = ("data", "fwd", "bwd", "clip", "step")


class Timers:
    """Seconds per bucket: the training buckets are closed into one record per epoch when
    the dev pass that follows the epoch starts; each dev pass gives one record too."""

    def __init__(self) -> None:
        self.current: dict[str, float] = defaultdict(float)
        self.epochs: list[dict[str, float]] = []
        self.dev: list[dict[str, float]] = []

    def add(self, bucket: str, seconds: float) -> None:
        self.current[bucket] += seconds

    @contextlib.contextmanager
    def timed(self, bucket: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(bucket, time.perf_counter() - t0)


@contextlib.contextmanager
def instrumented(task_name: str, timers: Timers, autocast: str) -> Iterator[None]:
    """Timers around the runner's pieces (class attributes patched, restored on exit)."""
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    from speechssl.downstream import runner
    from speechssl.downstream.featurizer import Featurizer
    from speechssl.downstream.tasks import task_class

    task_cls = task_class(task_name)
    saved = [
        (runner.FeatureSource, "batches", runner.FeatureSource.batches),
        (Featurizer, "forward", Featurizer.forward),
        (task_cls, "loss", task_cls.loss),
        (task_cls, "evaluate", task_cls.evaluate),
        (torch.Tensor, "backward", torch.Tensor.backward),
        (torch.nn.utils, "clip_grad_norm_", torch.nn.utils.clip_grad_norm_),
        (runner, "_train_and_score", runner._train_and_score),
    ]
    originals = {(id(owner), name): fn for owner, name, fn in saved}
    # An inherited method is restored by deleting the patch, not by pinning it on the subclass.
    own = {(id(owner), name): name in vars(owner) for owner, name, _ in saved}

    def original(owner, name):
        return originals[(id(owner), name)]

    def batches(self, *, shuffle: bool, epoch: int = 0):
        iterator = original(runner.FeatureSource, "batches")(self, shuffle=shuffle, epoch=epoch)
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                timers.add("data", time.perf_counter() - t0)
                return
            timers.add("data", time.perf_counter() - t0)
            yield batch

    def featurize(self, layers):
        with timers.timed("fwd"):
            return original(Featurizer, "forward")(self, layers)

    def loss(self, probe, batch):
        with timers.timed("fwd"):
            return original(task_cls, "loss")(self, probe, batch)

    def evaluate(self, probe, batches, *, final: bool):
        if final:
            return original(task_cls, "evaluate")(self, probe, batches, final=final)
        # The dev pass closes the training epoch before it.
        timers.epochs.append(dict(timers.current))
        timers.current = defaultdict(float)
        t0 = time.perf_counter()
        try:
            return original(task_cls, "evaluate")(self, probe, batches, final=final)
        finally:
            timers.dev.append({"seconds": time.perf_counter() - t0, **timers.current})
            timers.current = defaultdict(float)

    def backward(self, *args, **kwargs):
        with timers.timed("bwd"):
            return original(torch.Tensor, "backward")(self, *args, **kwargs)

    def clip(*args, **kwargs):
        with timers.timed("clip"):
            return original(torch.nn.utils, "clip_grad_norm_")(*args, **kwargs)

    step_started: list[float] = []

    def before_step(optimizer, args, kwargs):
        step_started.append(time.perf_counter())

    def after_step(optimizer, args, kwargs):
        if step_started:
            timers.add("step", time.perf_counter() - step_started.pop())

    def train_and_score(*args, **kwargs):
        # Only the probe under autocast: the cache is built outside it (its key has no dtype).
        # No cast cache: it lives until the context exits, so across optimizer steps the
        # forward passes would keep reading the first step's bf16 copies of the weights.
        context = (torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False) if autocast == "bf16"
                   else contextlib.nullcontext())
        with context:
            return original(runner, "_train_and_score")(*args, **kwargs)

    handles = [register_optimizer_step_pre_hook(before_step), register_optimizer_step_post_hook(after_step)]
    try:
        runner.FeatureSource.batches = batches
        Featurizer.forward = featurize
        task_cls.loss = loss
        task_cls.evaluate = evaluate
        torch.Tensor.backward = backward
        torch.nn.utils.clip_grad_norm_ = clip
        runner._train_and_score = train_and_score
        yield
    finally:
        for handle in handles:
            handle.remove()
        for owner, name, fn in saved:
            if own[(id(owner), name)]:
                setattr(owner, name, fn)
            else:
                delattr(owner, name)


def bench_config(args: argparse.Namespace, upstream: str, task: str, probe: str, cache_dir: Path):
    """The demo's bench settings for ``task``, on a fixed train subset, for ``--epochs`` epochs."""
    from dataclasses import replace

    from speechssl.demo import DemoBenchConfig
    from speechssl.downstream.config import settings_for_task, with_overrides

    demo = DemoBenchConfig()
    settings = settings_for_task(demo.settings, task, demo.task_settings)
    overrides = [
        f"train_hours={args.train_hours}", f"dev_hours={args.dev_hours}",
        f"train.max_epochs={args.epochs}", f"train.patience={args.epochs}",
        "health_utterances=0", "cost.energy=false", "asr.beam_size=1", "device=cpu", f"seed={args.seed}",
    ]
    if args.hidden:
        overrides.append(f"probe_cfg.hidden={args.hidden}")
    settings = with_overrides(settings, overrides, prefix="probe_epoch")
    return replace(settings, upstream=upstream, task=task, probe=probe, data=str(args.data),
                   cache=replace(settings.cache, dir=str(cache_dir)))


def run_case(args: argparse.Namespace, upstream: str, case: str, out: Path) -> dict[str, Any]:
    import torch

    from speechssl.downstream.runner import run_bench, upstream_slug

    task, _, probe = case.partition(":")
    cfg = bench_config(args, upstream, task, probe, out / "feature_cache")
    timers = Timers()
    run_dir = out / "runs" / upstream_slug(upstream) / f"{task}-{probe}"
    print(f"-- {upstream} / {task} / {probe} (hidden {cfg.probe_cfg.hidden}, {cfg.train.batch_seconds:g} s batches, "
          f"{args.autocast})", flush=True)
    with instrumented(task, timers, args.autocast):
        result = run_bench(cfg, run_dir, fresh=True, progress=False)
    history = result["history"]
    epochs = []
    for record, buckets in zip(history, timers.epochs):
        row = {"seconds": float(record["epoch_seconds"]), **{b: buckets.get(b, 0.0) for b in BUCKETS}}
        row["other"] = row["seconds"] - sum(row[b] for b in BUCKETS)
        epochs.append(row)
    metric = result["primary_metric"]
    return {
        "upstream": upstream, "task": task, "probe": probe, "hidden": cfg.probe_cfg.hidden,
        "batch_seconds": cfg.train.batch_seconds, "autocast": args.autocast, "threads": torch.get_num_threads(),
        "train_hours": result["hours"]["train"], "train_utterances": result["utterances"]["train"],
        "dev_utterances": result["utterances"]["dev"], "updates": result["updates"],
        "epochs": epochs, "dev": [{"seconds": d["seconds"], "data": d.get("data", 0.0)} for d in timers.dev],
        "metric": metric, "dev_history": [r[f"dev_{metric}"] for r in history],
        "train_loss": [r["train_loss"] for r in history],
        "dev_best": result["dev"]["best"], "test": result["metrics"][metric],
    }


def _median(rows: list[dict[str, float]], key: str) -> float:
    timed = rows[1:] or rows  # epoch 1 warms up
    return statistics.median(r[key] for r in timed)


def summary(case: dict[str, Any]) -> dict[str, float]:
    epochs = case["epochs"]
    out = {key: _median(epochs, key) for key in ("seconds", *BUCKETS, "other")}
    out["dev"] = _median(case["dev"], "seconds")
    out["dev_data"] = _median(case["dev"], "data")
    return out


def _label(case: dict[str, Any]) -> str:
    upstream = case["upstream"]
    if upstream.startswith("ckpt:"):
        upstream = "ckpt:" + upstream.rstrip("/").split("/")[-1]
    return f"{upstream} | {case['task']}:{case['probe']}-{case['hidden']}"


def breakdown_table(cases: list[dict[str, Any]]) -> str:
    lines = [
        "| upstream | task:probe | train | epoch s | data | fwd | bwd | opt | other | dev pass s | dev best | test |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case in cases:
        s = summary(case)
        lines.append(
            f"| {_label(case)} | {case['train_hours']:.2f} h, {case['updates'] // len(case['epochs'])} upd/ep "
            f"| {s['seconds']:.2f} | {s['data']:.2f} | {s['fwd']:.2f} | {s['bwd']:.2f} | {s['clip'] + s['step']:.2f} "
            f"| {s['other']:.2f} | {s['dev']:.2f} | {case['metric']} {case['dev_best']:.4f} | {case['test']:.4f} |"
        )
    return "\n".join(lines)


def comparison_table(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> str:
    index = {(c["upstream"], c["task"], c["probe"], c["hidden"]): c for c in before}
    lines = [
        "| upstream | task:probe | epoch s before | epoch s after | speed-up | dev pass s before | after "
        "| dev best before / after | test before / after |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for case in after:
        old = index.get((case["upstream"], case["task"], case["probe"], case["hidden"]))
        if old is None:
            continue
        a, b = summary(case), summary(old)
        lines.append(
            f"| {_label(case)} | {b['seconds']:.2f} | {a['seconds']:.2f} | {b['seconds'] / a['seconds']:.2f}x "
            f"| {b['dev']:.2f} | {a['dev']:.2f} | {case['metric']} {old['dev_best']:.4f} / {case['dev_best']:.4f} "
            f"| {old['test']:.4f} / {case['test']:.4f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/synth"),
                        help="corpus (synthesised like the demo's when it has no corpus.json)")
    parser.add_argument("--upstreams", nargs="+", default=None,
                        help=f"upstream specs (default: mfcc, and ckpt:{DEMO_CHECKPOINT} when the demo has run)")
    parser.add_argument("--cases", nargs="+", default=DEFAULT_CASES, help="task:probe pairs")
    parser.add_argument("--train-hours", type=float, default=0.25, help="fixed train subset (the demo: 0.5)")
    parser.add_argument("--dev-hours", type=float, default=0.15, help="fixed dev subset (the demo's)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per case; the first is a warm-up")
    parser.add_argument("--hidden", type=int, default=None, help="probe width (default: the demo's, 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--autocast", choices=["none", "bf16"], default="none",
                        help="run the probe (training and evaluation) under CPU bf16 autocast")
    parser.add_argument("--out", type=Path, default=Path("runs/probe_epoch"),
                        help="feature caches (reused) and run folders")
    parser.add_argument("--save", type=Path, default=None, help="write the measurements as JSON")
    parser.add_argument("--baseline", type=Path, default=None, help="JSON of an earlier --save: print before/after")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs: at least 2 (the first is a warm-up)")

    import torch

    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    if load > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average {load:.1f} on {os.cpu_count()} cores; timings will be noisy", flush=True)
    if not (args.data / "corpus.json").is_file():
        from speechssl.data.synth import SynthConfig, synthesize_corpus

        synthesize_corpus(SynthConfig(), args.data, workers=args.threads, progress=False)
    upstreams = args.upstreams
    if upstreams is None:
        upstreams = ["mfcc"]
        if any((DEMO_CHECKPOINT / "checkpoints").glob("*")):
            upstreams.append(f"ckpt:{DEMO_CHECKPOINT}")

    cases = [run_case(args, upstream, case, args.out) for upstream in upstreams for case in args.cases]

    print()
    print(f"command: .venv/bin/python benchmarks/probe_epoch.py {shlex.join(sys.argv[1:])}".rstrip())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, autocast {args.autocast}; medians of epochs "
          f"2-{args.epochs} (seconds; opt = clip + step; dev pass = greedy decoding / scoring of the dev subset)")
    print()
    print(breakdown_table(cases))
    if args.baseline is not None:
        before = json.loads(args.baseline.read_text())["cases"]
        print()
        print(comparison_table(before, cases))
    for case in cases:
        print(f"{_label(case)}: dev {case['metric']} per epoch {[round(v, 4) for v in case['dev_history']]}, "
              f"train loss {[round(v, 4) for v in case['train_loss']]}")
    if args.save is not None:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps({"command": sys.argv, "torch": torch.__version__, "cases": cases}, indent=1))
        print(f"saved {args.save}")


if __name__ == "__main__":
    main()
