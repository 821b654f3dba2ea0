"""``speechssl demo``: every stage that exists, end to end, on the synthetic corpus.

The demo is idempotent: a stage whose outputs exist (for the same config) is
reused, so re-running it is cheap. Each new pipeline stage adds one step here.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from speechssl.config import config_hash, param, save_config
from speechssl.data.synth import SynthConfig


@dataclass
class DemoConfig:
    corpus: SynthConfig = field(default_factory=SynthConfig)
    batch_seconds: float = param(60.0, gt=0, help="seconds of audio per batch in the data check")


@dataclass
class StageResult:
    name: str
    status: str  # "ran" or "reused"
    seconds: float
    output: Path


def run_demo(cfg: DemoConfig, *, out_dir: Path, data_dir: Path, workers: int = 2) -> list[StageResult]:
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out_dir / "config.yaml")
    results = [
        _stage_corpus(cfg, data_dir, workers),
        _stage_data_check(cfg, data_dir, out_dir),
    ]
    print()
    print("demo finished; outputs:")
    for r in results:
        print(f"  {r.name:<12} {r.status:<7} {r.seconds:7.1f}s  {r.output}")
    print(f"  {'config':<12} {'':<7} {'':>8}  {out_dir / 'config.yaml'}")
    return results


def _stage_corpus(cfg: DemoConfig, data_dir: Path, workers: int) -> StageResult:
    from speechssl.data.synth import format_summary, synthesize_corpus

    _banner("1/2 corpus: synthetic multilingual speech (eSpeak NG)")
    start = time.perf_counter()
    existed = (data_dir / "corpus.json").is_file()
    info = synthesize_corpus(cfg.corpus, data_dir, workers=workers)
    print(format_summary(info))
    return StageResult("corpus", "reused" if existed else "ran", time.perf_counter() - start, data_dir)


def _stage_data_check(cfg: DemoConfig, data_dir: Path, out_dir: Path) -> StageResult:
    from speechssl.data.check import check_corpus

    _banner("2/2 data check: manifests, audio decoding, duration-bucketed batches")
    start = time.perf_counter()
    output = out_dir / "data_check.json"
    key = {"corpus": config_hash(cfg.corpus), "batch_seconds": cfg.batch_seconds}
    if output.is_file() and json.loads(output.read_text()).get("key") == key:
        print(f"reusing {output}")
        return StageResult("data check", "reused", time.perf_counter() - start, output)
    report = check_corpus(data_dir, batch_seconds=cfg.batch_seconds)
    print(report.summary())
    tmp = output.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, **report.to_dict()}, indent=2))
    tmp.replace(output)
    return StageResult("data check", "ran", time.perf_counter() - start, output)


def _banner(text: str) -> None:
    print(f"\n=== {text}", flush=True)
