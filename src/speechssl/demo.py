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
from speechssl.downstream.config import BenchConfig, parse_regime, settings_for_task, with_overrides
from speechssl.models.objectives import OBJECTIVES
from speechssl.pretrain.config import PretrainConfig, wavlablm_tiny_recipe

STAGES = 6


def _demo_pretrain() -> PretrainConfig:
    # The recipe that learned most in a few CPU minutes (docs/pretraining.md, "What learns
    # on 2 CPU cores"): tiny WavLabLM-style HuBERT on MFCC k-means targets with denoising and
    # a language-balanced second stage. The demo points hubert.targets at the set its targets
    # stage builds, and the noise bank at the corpus's own.
    return wavlablm_tiny_recipe()


@dataclass
class DemoTargetsConfig:
    upstream: str = param("mfcc", help="upstream whose frames are clustered (HuBERT iteration 1: mfcc)")
    k: int = param(100, min=2, help="k-means clusters")
    max_fit_frames: int = param(100_000, min=100, help="train frames sampled to fit k-means")


def _demo_bench() -> BenchConfig:
    # Small probes and few epochs: the demo shows the pipeline in minutes, not the best scores.
    cfg = BenchConfig()
    cfg.train_hours = 0.5
    # Early stopping on half of dev: the dev features of every upstream are computed once and
    # read every epoch; half of the 0.3 h is enough to pick an epoch and saves a minute.
    cfg.dev_hours = 0.15
    cfg.train.max_epochs = 3
    # 40 s updates (not 160): ~135 probe updates instead of ~39 in the same compute, so the
    # probes fit rather than stop inside their warmup (docs/pretraining.md, "What learns").
    cfg.train.batch_seconds = 40.0
    cfg.train.warmup_updates = 20
    cfg.probe_cfg.hidden = 64
    cfg.probe_cfg.embed_dim = 64
    return cfg


# Sequence tasks need more, smaller updates and a higher learning rate than classification
# before CTC leaves its all-blank phase (docs/benchmark.md, "Small budgets").
_SEQUENCE_SETTINGS = ["train.max_epochs=8", "train.patience=20", "train.lr=1e-2", "train.batch_seconds=20",
                      "asr.beam_size=2"]
SEQUENCE_TASKS = ("asr", "asr_lid", "pr", "sf", "sa", "ast")


@dataclass
class DemoBenchConfig:
    upstreams: list[str] = param(
        default_factory=lambda: ["mfcc", "ge2e", "random_init", "pretrained"],
        help="upstreams to compare; 'pretrained' = the checkpoint of the pretrain stage, "
        "'random_init' = the same architecture with its initial weights",
    )
    runs: list[str] = param(
        default_factory=lambda: [
            "lid:mean_linear", "lid:xvector", "asv:xvector", "asv:cosine", "er:asp_linear", "ic:mean_linear",
        ],
        help="task:probe pairs run for every upstream",
    )
    sequence_upstreams: list[str] = param(
        default_factory=lambda: ["mfcc", "pretrained"], help="upstreams of sequence_runs (the costlier tasks)"
    )
    sequence_runs: list[str] = param(
        # Slot filling is left out: a slot's tag depends on the intent, and on 0.5 h of train
        # (8 languages) every probe tried stays below chance (best dev F1 0.11, BiLSTM, 30
        # epochs); it needs all 2.1 h (BiLSTM: test F1 0.58, chance 0.15), which costs more
        # than the demo's whole benchmark budget (RESULTS.md, issue 13). The sweep
        # configs/sweeps/probe_families.yaml runs it.
        # asr_lid: character ASR as ML-SUPERB 2.0's joint ASR + LID ([lang] text), scored per
        # language with its spread (docs/multilingual.md); same cost as plain ASR.
        default_factory=lambda: ["asr_lid:cnn_ctc", "pr:cnn_ctc", "sa:cnn_ctc", "ast:cnn_ctcattn"],
        help="task:probe pairs run for sequence_upstreams only",
    )
    run_upstreams: dict[str, list[str]] = param(
        # MFCC's translation stays below chance at this budget and its decoding is the demo's
        # slowest run (RESULTS.md, issue 13); the sweep runs it.
        default_factory=lambda: {"ast:cnn_ctcattn": ["pretrained"]},
        help="task:probe -> the upstreams it runs for, overriding upstreams / sequence_upstreams",
    )
    adapted_runs: dict[str, list[str]] = param(
        default_factory=lambda: {"lid:mean_linear": ["full"]},
        help="task:probe -> adaptation regimes run for the pretrained encoder (docs/adaptation.md)",
    )
    adapted_settings: list[str] = param(
        # An adapted upstream recomputes its features on every batch (no cache): a smaller
        # train subset and early stopping on a dev subset keep the run near a minute (its
        # health monitors are the frozen run's: the same upstream before adaptation).
        default_factory=lambda: ["train_hours=0.1", "dev_hours=0.05", "train.lr=5e-3", "train.batch_seconds=20",
                                 "health_utterances=0"],
        help="dotted overrides of `settings` for the adapted runs",
    )
    settings: BenchConfig = field(default_factory=_demo_bench)
    task_settings: dict[str, list[str]] = param(
        default_factory=lambda: {
            **{task: list(_SEQUENCE_SETTINGS) for task in SEQUENCE_TASKS},
            # French -> English: train_hours counts French audio (all of train's 0.13 h); the
            # test pass decodes greedily (a beam search per utterance costs minutes on CPU).
            "ast": [*_SEQUENCE_SETTINGS, "asr.beam_size=1"],
            # ML-SUPERB's worst-15 is every one of the corpus's 8 languages: the worst 3 say more.
            "asr_lid": [*_SEQUENCE_SETTINGS, "asr.worst_languages=3"],
        },
        help="per-task dotted overrides of `settings`",
    )


@dataclass
class DemoConfig:
    corpus: SynthConfig = field(default_factory=SynthConfig)
    batch_seconds: float = param(60.0, gt=0, help="seconds of audio per batch in the data check")
    targets: DemoTargetsConfig = field(default_factory=DemoTargetsConfig)
    pretrain: PretrainConfig = field(default_factory=_demo_pretrain)
    bench: DemoBenchConfig = field(default_factory=DemoBenchConfig)


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
        _stage_targets(cfg, data_dir, out_dir),
        _stage_pretrain(cfg, data_dir, out_dir),
        _stage_bench(cfg, data_dir, out_dir),
        _stage_report(cfg, out_dir),
    ]
    print()
    print("demo finished; outputs:")
    for r in results:
        print(f"  {r.name:<12} {r.status:<7} {r.seconds:7.1f}s  {r.output}")
    print(f"  {'config':<12} {'':<7} {'':>8}  {out_dir / 'config.yaml'}")
    return results


def _stage_corpus(cfg: DemoConfig, data_dir: Path, workers: int) -> StageResult:
    from speechssl.data.synth import format_summary, synthesize_corpus

    _banner(f"1/{STAGES} corpus: synthetic multilingual speech (eSpeak NG)")
    start = time.perf_counter()
    existed = (data_dir / "corpus.json").is_file()
    info = synthesize_corpus(cfg.corpus, data_dir, workers=workers)
    print(format_summary(info))
    return StageResult("corpus", "reused" if existed else "ran", time.perf_counter() - start, data_dir)


def _stage_data_check(cfg: DemoConfig, data_dir: Path, out_dir: Path) -> StageResult:
    from speechssl.data.check import check_corpus

    _banner(f"2/{STAGES} data check: manifests, audio decoding, duration-bucketed batches")
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


def _targets_dir(cfg: DemoConfig, data_dir: Path, out_dir: Path, *, progress: bool = False) -> Path:
    """The demo's target set (built on first use, then reused: the build is keyed by its inputs)."""
    from speechssl.targets import build_targets

    return build_targets(
        cfg.targets.upstream, data_dir, out_dir / "targets", k=cfg.targets.k,
        conv_layers=cfg.pretrain.encoder.conv_layers, splits=("train", "dev"),
        max_fit_frames=cfg.targets.max_fit_frames, seed=cfg.pretrain.seed,
        cache_dir=out_dir / "feature_cache", progress=progress,
    )


def _needs_targets(cfg: DemoConfig) -> bool:
    return OBJECTIVES[cfg.pretrain.objective].model.needs_targets


def _stage_targets(cfg: DemoConfig, data_dir: Path, out_dir: Path) -> StageResult:
    from speechssl.targets import TargetSet, format_summary
    from speechssl.targets.quality import evaluate_target_set, format_quality, write_quality

    _banner(f"3/{STAGES} targets: k-means of {cfg.targets.upstream} frames, labels per encoder frame (HuBERT)")
    start = time.perf_counter()
    if not _needs_targets(cfg):
        print(f"objective {cfg.pretrain.objective} needs no targets")
        return StageResult("targets", "skipped", time.perf_counter() - start, out_dir)
    existed = (out_dir / "targets").is_dir() and any((out_dir / "targets").iterdir())
    path = _targets_dir(cfg, data_dir, out_dir, progress=True)
    print(format_summary(TargetSet.open(path)))
    quality = path / "quality.json"
    if not quality.is_file():
        write_quality(evaluate_target_set(path, data_dir, "dev"))
        existed = False
    print(format_quality(json.loads(quality.read_text())["dev"]))
    return StageResult("targets", "reused" if existed else "ran", time.perf_counter() - start, path)


def _stage_pretrain(cfg: DemoConfig, data_dir: Path, out_dir: Path) -> StageResult:
    from dataclasses import replace

    from speechssl.pretrain import pretrain, read_metrics
    from speechssl.pretrain.checkpoint import step_checkpoints

    _banner(f"4/{STAGES} pretrain: tiny HuBERT + denoising (WavLabLM-style), and its random-init twin")
    start = time.perf_counter()
    run_dir = out_dir / "pretrain"
    data = replace(cfg.pretrain.data, dir=str(data_dir))
    if data.mixing.noise_dir:
        data = replace(data, mixing=replace(data.mixing, noise_dir=str(data_dir / "noise")))
    train_cfg = replace(cfg.pretrain, data=data)
    if _needs_targets(cfg):
        section = OBJECTIVES[train_cfg.objective].section
        targets = str(_targets_dir(cfg, data_dir, out_dir))
        train_cfg = replace(train_cfg, **{section: replace(getattr(train_cfg, section), targets=[targets])})
    finished = any(step == train_cfg.total_steps for step, _ in step_checkpoints(run_dir / "checkpoints"))
    # The baseline every pretrained number is judged against: same architecture, same
    # initialisation, no updates (the step-0 checkpoint).
    pretrain(train_cfg, out_dir / "random_init", init_only=True, progress=False)
    # pretrain() resumes from the run's newest checkpoint, so a finished run returns at once.
    result = pretrain(train_cfg, run_dir)
    records = read_metrics(run_dir, "valid") or read_metrics(run_dir, "train")
    if records:
        final = records[-1]
        print(f"step {final['step']}: {final['split']} {result.summary}")
    status = "reused" if finished else "ran"
    return StageResult("pretrain", status, time.perf_counter() - start, result.last_checkpoint or run_dir)


def _stage_bench(cfg: DemoConfig, data_dir: Path, out_dir: Path) -> StageResult:
    from dataclasses import replace

    from speechssl.benchmark.matrix import score_matrix
    from speechssl.benchmark.store import ResultStore
    from speechssl.downstream.runner import format_result, run_bench
    from speechssl.errors import ConfigError

    _banner(f"5/{STAGES} benchmark: the pretrained encoder against baselines (frozen, cached features), "
            "and fine-tuned (full)")
    start = time.perf_counter()
    bench_dir = out_dir / "bench"
    checkpoint = out_dir / "pretrain"
    rows = []
    statuses = set()
    store = ResultStore(out_dir / "results.db")  # every run is recorded; the report stage reads it
    plan = [(u, r) for u in cfg.bench.upstreams for r in cfg.bench.runs]
    plan += [(u, r) for u in cfg.bench.sequence_upstreams for r in cfg.bench.sequence_runs]
    plan = [(u, r, "frozen") for u, r in plan if u in cfg.bench.run_upstreams.get(r, [u])]
    plan += [("pretrained", r, regime) for r, regimes in cfg.bench.adapted_runs.items() for regime in regimes]
    for upstream, run, regime in plan:
        spec = {"pretrained": f"ckpt:{checkpoint}", "random_init": f"ckpt:{out_dir / 'random_init'}"}.get(
            upstream, upstream
        )
        task, _, probe = run.partition(":")
        if not probe:
            raise ConfigError(f"bench.runs: expected task:probe, got {run!r}")
        settings = settings_for_task(cfg.bench.settings, task, cfg.bench.task_settings)
        if regime != "frozen":
            settings = with_overrides(settings, [*cfg.bench.adapted_settings, *parse_regime(regime)],
                                      prefix="bench.adapted_settings")
        bench_cfg = replace(settings, upstream=spec, task=task, probe=probe, data=str(data_dir),
                            cache=replace(settings.cache, dir=str(out_dir / "feature_cache")))
        name = f"{upstream}/{task}-{probe}" + ("" if regime == "frozen" else f"-{regime}")
        print(f"-- {name}", flush=True)
        run_dir = bench_dir / name
        result = run_bench(bench_cfg, run_dir, progress=False)
        statuses.add("reused" if result.get("reused") else "ran")
        print(format_result(result), flush=True)
        store.add_result(result, result_path=run_dir / "result.json", upstream_label=upstream)
        rows.append((upstream if regime == "frozen" else f"{upstream} ({regime})", task, probe, result))
    store.close()
    summary = bench_dir / "summary.md"
    summary.write_text(score_matrix([r[3] for r in rows], labels=[r[0] for r in rows]) + "\n")
    print()
    print(summary.read_text())
    status = "ran" if "ran" in statuses else "reused"
    return StageResult("benchmark", status, time.perf_counter() - start, summary)


def _stage_report(cfg: DemoConfig, out_dir: Path) -> StageResult:
    from speechssl.benchmark.report import write_report
    from speechssl.benchmark.store import ResultStore

    _banner(f"6/{STAGES} report: leaderboards, probe robustness, per-language errors, cost, plots")
    start = time.perf_counter()
    with ResultStore(out_dir / "results.db") as store:
        rows, runs = store.scores(), store.runs()
    paths = write_report(out_dir / "report", rows, runs, pretrain_dirs=[out_dir / "pretrain"],
                         title="speechssl demo report")
    for kind, path in paths.items():
        print(f"{kind:<5} {path}")
    return StageResult("report", "ran", time.perf_counter() - start, paths["html"])


def _banner(text: str) -> None:
    print(f"\n=== {text}", flush=True)
