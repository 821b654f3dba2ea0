"""How fast does a tiny wav2vec 2.0 leave the log(K+1) plateau? One run per variant.

Each variant is `speechssl pretrain configs/pretrain/w2v2_tiny.yaml` with a few
overrides, run for ``--steps`` updates on the synthetic corpus. A run has *escaped*
at the first logged step where the contrastive loss (mean of the last 3 records) is at
least ``--margin`` nats below chance, log(K+1), and the accuracy of picking the true
target among K+1 candidates is at least ``--min-accuracy``. Printed per variant: the
escape step and wall minutes (or "-"), and the final contrastive loss and accuracy.

    python benchmarks/pretrain_plateau.py --steps 150 --only baseline,lr2e-3
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/pretrain/w2v2_tiny.yaml"

# name -> overrides on top of configs/pretrain/w2v2_tiny.yaml
VARIANTS: dict[str, list[str]] = {
    "baseline": [],
    "hf-like": ["optim.lr=5e-4", "optim.clip_norm=5", "data.crop_seconds=4"],
    "lr2e-3": ["optim.lr=2e-3"],
    "lr1e-4": ["optim.lr=1e-4"],
    "clip1": ["optim.clip_norm=1"],
    "negatives20": ["wav2vec2.num_negatives=20"],
    "codebook64": ["wav2vec2.codebook_entries=64"],
    "cnn-grad0.1": ["encoder.feature_grad_mult=0.1"],
    "penalty0": ["wav2vec2.penalty_weight=0"],
    "crop2s": ["data.crop_seconds=2"],
    "batch30": ["batch_seconds=30", "data.micro_batch_seconds=30"],
    "warmup0": ["optim.warmup_steps=0"],
    "normalize": ["data.normalize_waveform=true"],
    "diversity1": ["wav2vec2.diversity_weight=1.0"],
    "diversity1-lr2e-3": ["wav2vec2.diversity_weight=1.0", "optim.lr=2e-3"],
    "diversity1-neg20": ["wav2vec2.diversity_weight=1.0", "wav2vec2.num_negatives=20"],
    "diversity1-crop2s": ["wav2vec2.diversity_weight=1.0", "data.crop_seconds=2"],
}


def escape_step(
    records: list[dict], chance: float, margin: float, min_accuracy: float, min_perplexity: float
) -> dict | None:
    for i in range(len(records)):
        window = records[max(0, i - 2) : i + 1]
        loss = sum(r["contrastive"] for r in window) / len(window)
        accuracy = sum(r["accuracy"] for r in window) / len(window)
        perplexity = min(min(r["perplexity"]) for r in window)
        if len(window) == 3 and loss <= chance - margin and accuracy >= min_accuracy and perplexity >= min_perplexity:
            return records[i]
    return None


def run_variant(name: str, overrides: list[str], args: argparse.Namespace) -> dict:
    out = Path(args.out) / name
    command = [
        sys.executable, "-m", "speechssl.cli", "pretrain", str(CONFIG), "--out", str(out), "--fresh",
        "--no-progress", "--data", args.data, f"steps={args.steps}", "log_every=5", "valid_every=0",
        f"save_every={args.steps}", "tensorboard=false", f"seed={args.seed}", *args.extra, *overrides,
    ]
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        return {"name": name, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    negatives = next((int(o.split("=")[1]) for o in overrides if o.startswith("wav2vec2.num_negatives=")), 100)
    chance = math.log(negatives + 1)
    entries = next((int(o.split("=")[1]) for o in overrides if o.startswith("wav2vec2.codebook_entries=")), 320)
    hit = escape_step(train, chance, args.margin, args.min_accuracy, args.min_perplexity * entries)
    last = train[-1]
    return {
        "name": name,
        "overrides": " ".join(overrides) or "(none)",
        "chance": chance,
        "escape_step": hit["step"] if hit else None,
        "escape_minutes": hit["wall_seconds"] / 60 if hit else None,
        "final_contrastive": last["contrastive"],
        "final_accuracy": last["accuracy"],
        "final_perplexity": last["perplexity"],
        "wall_minutes": wall / 60,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/synth")
    parser.add_argument("--out", default="runs/plateau")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    parser.add_argument("--margin", type=float, default=0.5, help="nats below log(K+1) that count as escaped")
    parser.add_argument("--min-accuracy", type=float, default=0.10)
    parser.add_argument("--min-perplexity", type=float, default=0.1,
                        help="fraction of each group's codebook entries that must stay in use")
    parser.add_argument("extra", nargs="*", help="overrides applied to every variant")
    args = parser.parse_args()

    names = [n for n in args.only.split(",") if n] or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    print(f"{'variant':<18} {'escape step':>11} {'minutes':>8} {'final ctr':>9} {'chance':>6} {'final acc':>9} "
          f"{'final ppl':>9}  overrides")
    for name in names:
        row = run_variant(name, VARIANTS[name], args)
        if "error" in row:
            print(f"{name:<18} error: {row['error']}")
            continue
        step = row["escape_step"] if row["escape_step"] is not None else "-"
        minutes = f"{row['escape_minutes']:.1f}" if row["escape_minutes"] is not None else "-"
        ppl = "/".join(f"{p:.0f}" for p in row["final_perplexity"])
        print(
            f"{name:<18} {step!s:>11} {minutes:>8} {row['final_contrastive']:>9.3f} {row['chance']:>6.3f} "
            f"{row['final_accuracy']:>9.3f} {ppl:>9}  {row['overrides']}",
            flush=True,
        )
        with (Path(args.out) / "results.jsonl").open("a") as handle:
            handle.write(json.dumps({**row, "steps": args.steps, "extra": args.extra}) + "\n")


if __name__ == "__main__":
    main()
