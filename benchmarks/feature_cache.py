"""Probe-training epoch time with the frozen-feature cache vs recomputing the upstream.

Both arms run in this process on the same cuts, upstream, task, probe and batches:

* **live**: every batch loads its audio, runs the frozen upstream (inference mode) and
  then trains the probe -- what a benchmark without a cache does every epoch;
* **cached**: the upstream's layers were written once to the on-disk cache (fp16,
  memory-mapped); every batch reads them and trains the probe.

Epochs alternate (live, cached, live, cached, ...) so that drifts of a shared machine hit
both arms alike; we report medians. The one-off cache build is timed separately and the
break-even epoch count printed. The last line is ``ratio: X`` = live epoch seconds /
cached epoch seconds (> 1: the cache is faster).

By default the upstream is a randomly initialised wav2vec 2.0 of ``--size`` (compute is
what matters here, not what the weights learned); ``--upstream`` takes any spec
(``hf:<dir>``, ``ckpt:<path>``, ``ge2e``, ``mfcc``).

    .venv/bin/python benchmarks/feature_cache.py --quick          # < 1 min
    .venv/bin/python benchmarks/feature_cache.py --size base --seconds 300 --task asr
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _subset(cuts: list, seconds: float) -> list:
    """The first cuts (in manifest order) adding up to about ``seconds`` of audio."""
    chosen, total = [], 0.0
    for cut in cuts:
        if total >= seconds:
            break
        chosen.append(cut)
        total += float(cut.duration)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", default=None, help="upstream spec (default: a random wav2vec 2.0 of --size)")
    parser.add_argument("--size", choices=["tiny", "base"], default="base")
    parser.add_argument("--task", choices=["lid", "asv", "asr"], default="lid")
    parser.add_argument("--data", default="data/synth")
    parser.add_argument("--seconds", type=float, default=120.0, help="seconds of train audio per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per arm")
    parser.add_argument("--batch-seconds", type=float, default=40.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="30 s of audio, 2 epochs per arm (< 1 min)")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.epochs = 30.0, 2

    import torch

    from speechssl.config import load_config
    from speechssl.data.manifests import load_cuts
    from speechssl.downstream.config import BenchConfig
    from speechssl.downstream.featurizer import Featurizer
    from speechssl.downstream.probes import build_probe
    from speechssl.downstream.runner import FeatureSource, _open_cache
    from speechssl.downstream.tasks import ProbeBatch, task_class
    from speechssl.upstream import build_upstream

    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    if load > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average {load:.1f} on {os.cpu_count()} cores; timings will be noisy", flush=True)

    with tempfile.TemporaryDirectory(prefix="speechssl-cache-bench-") as tmp:
        spec = args.upstream
        if spec is None:
            from random_hf_model import write_random_wav2vec2

            spec = "hf:" + str(write_random_wav2vec2(args.size, Path(tmp) / f"w2v2-{args.size}"))
        cfg = load_config(BenchConfig, None, [
            f"upstream={spec}", f"task={args.task}", f"data={args.data}", f"cache.dir={Path(tmp) / 'cache'}",
            f"train.batch_seconds={args.batch_seconds}", "train.num_workers=0", "cache.max_gb=100",
        ])
        upstream = build_upstream(spec).eval().requires_grad_(False)
        cuts = _subset(list(load_cuts(args.data, "train")), args.seconds)
        task = task_class(args.task)(cfg, Path(args.data))
        task.prepare({"train": cuts, "dev": cuts, "test": cuts})
        layer_ids = list(range(upstream.num_layers))
        device = torch.device("cpu")
        seconds = sum(float(c.duration) for c in cuts)
        meta = upstream.metadata()
        print(f"upstream {spec.split('/')[-1] if args.upstream is None else spec}: {meta['params'] / 1e6:.1f} M params, "
              f"{meta['num_layers']} layers x {meta['feature_dim']}, {meta['frame_rate']:.0f} Hz; "
              f"{len(cuts)} utterances, {seconds:.1f} s of audio; task {args.task}, "
              f"probe {task.default_probe}; {torch.get_num_threads()} threads", flush=True)

        t0 = time.perf_counter()
        cached, info = _open_cache(cfg, upstream, cuts, layer_ids, device, progress=False)
        build_seconds = time.perf_counter() - t0
        print(f"cache build: {build_seconds:.2f} s, {info['bytes'] / 1e6:.1f} MB", flush=True)

        sources = {
            "live": FeatureSource(cuts, upstream=upstream, layer_ids=layer_ids, cached=None, cfg=cfg, device=device),
            "cached": FeatureSource(cuts, upstream=upstream, layer_ids=layer_ids, cached=cached, cfg=cfg, device=device),
        }
        torch.manual_seed(0)
        featurizer = Featurizer(len(layer_ids))
        probe = build_probe(task.default_probe, needs=task.needs, in_dim=upstream.feature_dim,
                            num_outputs=task.num_outputs, cfg=cfg.probe_cfg)
        params = list(featurizer.parameters()) + list(probe.parameters())
        optimizer = torch.optim.AdamW(params, lr=1e-3)

        def epoch(source: FeatureSource, index: int) -> float:
            start = time.perf_counter()
            for batch in source.batches(shuffle=True, epoch=index):
                loss = task.loss(probe, ProbeBatch(featurizer(batch.layers), batch.lengths, batch.cut_ids,
                                                   batch.supervisions))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            return time.perf_counter() - start

        epoch(sources["cached"], 0)  # warm-up: page cache, allocator, oneDNN kernels
        times: dict[str, list[float]] = {"live": [], "cached": []}
        for i in range(args.epochs):
            for arm in ("live", "cached"):
                times[arm].append(epoch(sources[arm], i + 1))
        cached.close()

    live, cache = statistics.median(times["live"]), statistics.median(times["cached"])
    print(f"epoch, live (upstream every batch): {live:.3f} s  (runs: {', '.join(f'{t:.2f}' for t in times['live'])})")
    print(f"epoch, cached features:            {cache:.3f} s  (runs: {', '.join(f'{t:.3f}' for t in times['cached'])})")
    if live > cache:
        print(f"the cache pays for itself after {build_seconds / (live - cache):.1f} epochs")
    print(f"ratio: {live / cache:.1f}")


if __name__ == "__main__":
    main()
