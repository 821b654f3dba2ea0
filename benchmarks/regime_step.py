"""Training-step cost of each adaptation regime, relative to frozen probing of the same upstream.

One fixed batch of noise audio (``--batch`` utterances of ``--seconds`` s), the benchmark's
own pieces (``apply_regime``, the layer-weighted featurizer, a frame-wise linear probe,
AdamW over the probe and the upstream's trained weights), ``--steps`` timed updates after
two warm-up ones. Each (upstream, regime) runs in a fresh process, so that its peak memory
(process RSS on CPU, ``max_memory_allocated`` on CUDA) is its own. Frozen = the upstream
under ``inference_mode`` and only the probe trains, what a benchmark run does when its
features are not cached.

    .venv/bin/python benchmarks/regime_step.py                      # demo encoder + random HF twin
    .venv/bin/python benchmarks/regime_step.py --upstreams hf:runs/hf-random-tiny --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

REGIMES = ["frozen", "full", "full+checkpointing", "partial-bottom2", "partial-middle2", "partial-top2", "adapter",
           "lora"]


def one(spec: str, regime: str, *, batch: int, seconds: float, steps: int, device: str, threads: int) -> dict:
    import torch

    from speechssl.config import load_config
    from speechssl.downstream.adaptation import apply_regime
    from speechssl.downstream.config import BenchConfig, parse_regime
    from speechssl.downstream.cost import PeakMemory
    from speechssl.downstream.featurizer import Featurizer
    from speechssl.upstream import build_upstream

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    label, _, extra = regime.partition("+")
    overrides = parse_regime(label) + (["adapt.gradient_checkpointing=true"] if extra == "checkpointing" else [])
    cfg = load_config(BenchConfig, None, [f"upstream={spec}", *overrides])
    upstream = build_upstream(spec)
    adaptation = apply_regime(upstream, cfg)
    upstream = upstream.to(device)
    featurizer = Featurizer(upstream.num_layers).to(device)
    probe = torch.nn.Linear(upstream.feature_dim, 64).to(device)
    own = list(featurizer.parameters()) + list(probe.parameters())
    trained = [p for p in upstream.parameters() if p.requires_grad]
    groups = [{"params": own, "lr": 1e-3}] + ([{"params": trained, "lr": 1e-4}] if trained else [])
    optimizer = torch.optim.AdamW(groups)
    samples = int(seconds * 16000)
    waves = torch.randn(batch, samples, device=device) * 0.1
    lengths = torch.full((batch,), samples, device=device)
    # Fixed random frame targets: the loss only has to exercise the whole graph.
    upstream.train(bool(trained))

    def step() -> None:
        if trained:
            out = upstream(waves, lengths)
        else:
            with torch.inference_mode():
                out = upstream(waves, lengths)
            out.layers = [x.clone() for x in out.layers]
        logits = probe(featurizer(torch.stack(out.layers)))
        targets = torch.zeros(logits.shape[:2], dtype=torch.long, device=device)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):
        step()
    times = []
    with PeakMemory(torch.device(device)) as peak:
        for _ in range(steps):
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            step()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return {"upstream": spec, "regime": regime, "tunable": adaptation.tunable_params + sum(p.numel() for p in own),
            "step_s": statistics.median(times), "peak_mb": peak.mb, "memory": peak.kind}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstreams", nargs="+", default=["ckpt:runs/demo/pretrain", "hf:runs/hf-random-tiny"])
    parser.add_argument("--regimes", nargs="+", default=REGIMES)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", nargs=2, metavar=("SPEC", "REGIME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    options = dict(batch=args.batch, seconds=args.seconds, steps=args.steps, device=args.device, threads=args.threads)
    if args.one:
        print(json.dumps(one(*args.one, **options)))
        return
    print(f"batch {args.batch} x {args.seconds:g} s, {args.steps} timed steps (median), {args.device}, "
          f"{args.threads} threads; each row in a fresh process")
    print("| upstream | regime | tunable params | step s | × frozen | peak MB | × frozen |")
    print("|---|---|---|---|---|---|---|")
    for spec in args.upstreams:
        frozen = None
        for regime in args.regimes:
            command = [sys.executable, __file__, "--one", spec, regime, *sum(([f"--{k}", str(v)]
                                                                              for k, v in options.items()), [])]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                print(f"| {spec} | {regime} | failed: {done.stderr.strip().splitlines()[-1]} |||||")
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            frozen = frozen or row
            peak = row["peak_mb"] or float("nan")
            print(f"| {spec} | {regime} | {row['tunable']:,} | {row['step_s']:.3f} | "
                  f"{row['step_s'] / frozen['step_s']:.2f} | {peak:.0f} | {peak / (frozen['peak_mb'] or peak):.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
