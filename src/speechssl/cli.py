"""``speechssl <verb>``: the command-line front door.

Exit codes: 0 ok, 2 usage or config error, 1 runtime failure. Errors print as one
line on stderr; ``--debug`` (anywhere on the line) shows the traceback instead.
Heavy modules are imported inside the handlers so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import Callable, Sequence

from speechssl import __version__
from speechssl.api import DEFAULT_DATA_DIR, DEFAULT_PRETRAIN_DIR, DEFAULT_REPORT_DIR  # light: no torch
from speechssl.errors import ConfigError, SpeechSSLError
from speechssl.memory import bound_shape_caches

DEFAULT_DEMO_DIR = Path("runs/demo")


# ---------------------------------------------------------------- handlers


def _cmd_corpus_synth(args: argparse.Namespace) -> int:
    from speechssl.api import make_synthetic_corpus
    from speechssl.data.synth import format_summary

    overrides = list(args.overrides)
    if args.hours is not None:
        overrides.append(f"hours={args.hours}")
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.languages:
        overrides.append(f"languages=[{args.languages}]")
    if args.augment:
        overrides.append(f"augment=[{args.augment}]")
    info = make_synthetic_corpus(args.out, args.config, overrides=overrides, workers=args.workers,
                                 overwrite=args.overwrite)
    print(format_summary(info))
    print(f"corpus: {args.out}")
    return 0


def _cmd_corpus_check(args: argparse.Namespace) -> int:
    from speechssl.data.check import check_corpus

    report = check_corpus(
        args.data,
        splits=args.split or None,
        skip_bad=args.skip_bad,
        batch_seconds=args.batch_seconds,
    )
    print(report.summary())
    return 0


def _cmd_corpus_datasets(args: argparse.Namespace) -> int:
    from speechssl.data.datasets import derive_datasets, format_summary

    info = derive_datasets(args.source, args.out, datasets=args.datasets, shots=args.shots, seed=args.seed,
                           workers=args.workers, overwrite=args.overwrite)
    print(format_summary(info))
    print(f"corpus: {args.out} (use it as --data {args.out})")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from speechssl.config import load_config
    from speechssl.demo import DemoConfig, run_demo

    cfg = load_config(DemoConfig, args.config, args.overrides)
    run_demo(cfg, out_dir=args.out, data_dir=args.data, workers=args.workers)
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from speechssl.api import pretrain

    overrides = list(args.overrides)
    config_file = args.config_file
    if config_file is not None and "=" in config_file.name and not config_file.exists():
        # No CONFIG given: argparse put the first KEY=VALUE into its slot.
        overrides.insert(0, str(config_file))
        config_file = None
    for item in args.slurm:  # --slurm partition=gpu -> slurm.partition=gpu
        if "=" not in item:
            raise ConfigError(f"--slurm {item}: expected KEY=VALUE, e.g. --slurm partition=gpu")
        overrides.append(f"slurm.{item}")
    if args.executor != "local":
        return _submit_pretraining(args, config_file, overrides)
    from speechssl.pretrain.signals import TrainingInterrupted

    try:
        result = pretrain(config_file, overrides=overrides, out_dir=args.out, data=args.data, fresh=args.fresh,
                          init_only=args.init_only, progress=not args.no_progress)
    except TrainingInterrupted as exc:  # SIGTERM/SIGUSR2: the update was finished and checkpointed
        print(f"pretrain: {exc}", file=sys.stderr)
        return exc.exit_code
    if result.summary:
        split = "valid" if result.last_valid else "train"
        print(
            f"step {result.state.step}: {split} {result.summary}; "
            f"{result.state.seconds_seen / 3600:.2f} h of audio seen in {result.state.wall_seconds:.0f} s"
        )
    print(f"checkpoint: {result.last_checkpoint}")
    if result.best_checkpoint:
        print(f"best: {result.best_checkpoint} (step {result.state.best_step})")
    return 0


def _submit_pretraining(args: argparse.Namespace, config_file: Path | None, overrides: list[str]) -> int:
    from speechssl.api import pretrain_config
    from speechssl.pretrain.launch import submit_pretrain, wait_for_job

    if args.init_only:
        raise ConfigError("--init-only writes one checkpoint here; drop --executor")
    cfg = pretrain_config(config_file, overrides=overrides, data=args.data)
    job = submit_pretrain(cfg, args.out, executor=args.executor, fresh=args.fresh)
    s = cfg.slurm
    print(f"submitted pretraining job {job.job_id} ({args.executor}, {s.nodes} node(s) x "
          f"{s.processes_per_node()} process(es)); logs: {job.paths.folder}; on preemption or timeout it "
          f"requeues itself and resumes from the newest checkpoint in {args.out / 'checkpoints'}")
    if not args.wait:
        return 0
    outcome = wait_for_job(job)
    if outcome.get("summary"):
        print(f"step {outcome['step']}: {outcome['summary']}; {outcome['hours_seen']:.2f} h of audio seen")
    print(f"checkpoint: {outcome.get('last_checkpoint')}")
    return 0


def _cmd_export_hf(args: argparse.Namespace) -> int:
    from speechssl.models.hf import export_hf, export_hubert
    from speechssl.models.objectives import Wav2Vec2Pretraining
    from speechssl.pretrain.checkpoint import load_pretraining_model

    model, cfg = load_pretraining_model(args.checkpoint)
    is_wav2vec2 = isinstance(model, Wav2Vec2Pretraining)
    # auto: a wav2vec 2.0 run keeps its quantizer/heads; any other objective's encoder is HuBERT's network.
    fmt = ("wav2vec2" if is_wav2vec2 else "hubert") if args.format == "auto" else args.format
    normalize = cfg.data.normalize_waveform
    if fmt == "hubert":
        out = export_hubert(model.encoder, args.out, do_normalize=normalize, overwrite=args.overwrite)
        cls = "HubertModel"
    else:
        out = export_hf(model if is_wav2vec2 else model.encoder, args.out, do_normalize=normalize,
                        overwrite=args.overwrite, encoder_only=args.encoder_only)
        cls = "Wav2Vec2Model"
    print(f"wrote {out} (load with transformers.{cls}.from_pretrained or speechssl's import_hf)")
    return 0


def _cmd_export_tuned(args: argparse.Namespace) -> int:
    from speechssl.upstream.tuned import export_tuned

    out = export_tuned(args.run_dir, args.out, merge=args.merge, overwrite=args.overwrite)
    print(f"wrote {out}" + (f" (load with hf:{out})" if args.merge else ""))
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from speechssl.corpora import CorpusError, prepare, summary

    options = {}
    for item in args.option:
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise CorpusError(f"--option expects KEY=VALUE, got {item!r}")
        options[key.strip()] = value.strip()
    if args.metadata is not None:
        options["metadata"] = args.metadata
    info = prepare(args.corpus, args.root, args.out, **options)
    print(summary(info))
    print(f"wrote {args.out} (use it as --data {args.out})")
    return 0


def _cmd_targets(args: argparse.Namespace) -> int:
    import time

    from speechssl.errors import ConfigError
    from speechssl.targets import TargetSet, build_targets, format_summary

    splits = [name.strip() for name in args.splits.split(",")]
    if not all(splits):
        raise ConfigError(f"--splits takes comma-separated split names, got {args.splits!r}")
    started = time.time()
    path = build_targets(
        args.upstream, args.data, args.out, k=args.k, frame_ms=args.frame_ms, layer=args.layer, splits=splits,
        max_fit_frames=args.max_fit_frames, seed=args.seed, cache_dir=args.cache_dir, device=args.device,
        progress=not args.no_progress,
    )
    print(format_summary(TargetSet.open(path), since=started))
    print(f"total {time.time() - started:.1f} s")
    return 0


def _cmd_targets_quality(args: argparse.Namespace) -> int:
    from speechssl.targets.quality import evaluate_target_set, format_quality, write_quality

    result = evaluate_target_set(args.target_dir, args.data, args.split)
    print(format_quality(result))
    print(f"wrote {write_quality(result)}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from speechssl.api import bench
    from speechssl.downstream.runner import format_result

    run = bench(args.upstream, args.task, args.probe, config=args.config, overrides=args.overrides, data=args.data,
                out_dir=args.out, store=args.store, fresh=args.fresh, progress=not args.no_progress)
    print(format_result(run.result))
    if run.run_id is not None:
        print(f"stored as {run.run_id} in {args.store}")
    return 0


def _store_result(result: dict, store_path: Path | None) -> None:
    """Record a bench result in the store (``--no-store`` passes None) and say where."""
    if store_path is None:
        return
    from speechssl.benchmark.store import ResultStore

    with ResultStore(store_path) as store:
        run_id = store.add_result(result)
    print(f"stored as {run_id} in {store_path}")


def _cmd_bench_multilingual(args: argparse.Namespace) -> int:
    from speechssl.config import load_config
    from speechssl.downstream.config import BenchConfig
    from speechssl.downstream.multilingual import check_shots, format_summary, multilingual_overrides, run_dir
    from speechssl.downstream.runner import run_bench

    overrides = multilingual_overrides(upstream=args.upstream, arch=args.arch, framework=args.framework,
                                       regime=args.regime, shots=args.shots, data=args.data, lm_order=args.lm_order)
    cfg = load_config(BenchConfig, args.config, overrides + list(args.overrides))
    check_shots(cfg)
    out = args.out or run_dir(cfg, args.arch, args.framework, args.regime)
    result = run_bench(cfg, out, fresh=args.fresh, progress=not args.no_progress)
    print(format_summary(result))
    _store_result(result, args.store)
    return 0


def _cmd_results(args: argparse.Namespace) -> int:
    from speechssl.benchmark.store import ResultStore

    if args.results_verb == "matrix":
        from speechssl.benchmark.matrix import score_matrix

        results = [_read_result(path) for path in args.files]
        print(score_matrix(results, by_task=args.by_task))
        return 0

    with ResultStore(args.store, create=args.results_verb == "import") as store:
        if args.results_verb == "import":
            for path in args.files:
                counts = store.import_file(path)
                print(f"{path}: {counts['runs']} run(s), {counts['scores']} score(s) into {args.store}")
        elif args.results_verb == "export":
            n = store.export_file(args.file, **_filters(args))
            print(f"wrote {n} score row(s) to {args.file}")
        elif args.results_verb == "regimes":
            from speechssl.benchmark.regimes import format_regime_table, regime_rows

            filters = _filters(args)
            rows = regime_rows(store.runs(**filters, status="finished"), store.scores(**filters))
            print(format_regime_table(rows) if rows else "no finished runs match")
        else:
            runs = store.runs(**_filters(args, status=args.status))
            print(_runs_table(runs, store))
    return 0


def _read_result(path: Path) -> dict:
    import json

    from speechssl.errors import ConfigError

    try:
        result = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read a bench result ({exc})") from None
    if not isinstance(result, dict) or result.get("format") != "speechssl.bench/1":
        raise ConfigError(f"{path}: not a speechssl bench result.json")
    return result


def _filters(args: argparse.Namespace, **more: object) -> dict[str, object]:
    found = {k: getattr(args, k, None) for k in ("task", "upstream", "probe")}
    found.update(more)
    return {k: v for k, v in found.items() if v is not None}


def _runs_table(runs: list[dict], store) -> str:
    if not runs:
        return f"no runs in {store.path}"
    from speechssl.benchmark.store import error_line

    overall = {(s["run_id"], s["metric"]): s["value"] for s in store.scores(language="")}
    lines = [f"{'run_id':<18} {'status':<9} {'task':<6} {'probe':<12} {'seed':>4}  {'upstream':<28} primary"]
    for r in runs:
        primary = ""
        if (r["run_id"], r["primary_metric"]) in overall:
            primary = f"{r['primary_metric']} {overall[(r['run_id'], r['primary_metric'])]:.4f}"
        elif r["status"] == "failed":
            primary = error_line(r["error"])[:60]
        seed = "" if r["seed"] is None else r["seed"]
        lines.append(f"{r['run_id']:<18} {r['status']:<9} {r['task']:<6} {r['probe']:<12} {seed:>4}  "
                     f"{r['upstream'][:28]:<28} {primary}")
    counts = store.count()
    lines.append(", ".join(f"{counts[k]} {k}" for k in ("finished", "failed", "pending", "running") if counts[k]))
    return "\n".join(lines)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from speechssl.benchmark.sweep import SweepConfig, plan_sweep, run_sweep
    from speechssl.config import load_config

    overrides = list(args.overrides)
    for key, value in (("slurm.partition", args.partition), ("slurm.time_min", args.time_min),
                       ("slurm.gpus", args.gpus), ("store", args.store)):
        if value is not None:
            overrides.append(f"{key}={value}")
    cfg = load_config(SweepConfig, args.spec, overrides)
    name = args.spec.stem
    if args.dry_run:
        cells = plan_sweep(cfg, name=name)
        for cell in cells:
            print(f"{cell.key}  {cell.label}  -> {cell.run_dir}")
        print(f"{len(cells)} cells")
        return 0
    report = run_sweep(cfg, name=name, executor=args.executor, workers=args.workers, retry_failed=args.retry_failed)
    print(report.summary())
    return 1 if report.failed or report.interrupted else 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from speechssl.benchmark import stats
    from speechssl.benchmark.store import ResultStore
    from speechssl.errors import ConfigError

    with ResultStore(args.store, create=False) as store:
        rows, superseded = stats.drop_superseded(store.scores(**_filters(args)), store.runs())
    if superseded:
        print(f"note: {len(superseded)} older run(s) with the identity of a newer run left out", file=sys.stderr)
    if args.stats_verb == "robustness":
        pairs = None
        if args.pair:
            pairs = [tuple(item.split(":", 1)) for item in args.pair]
            if any(len(pair) != 2 for pair in pairs):
                raise ConfigError(f"--pair takes PROBE_A:PROBE_B, got {args.pair}")
        results = stats.robustness(rows, metric=args.metric, n_boot=args.boot, pairs=pairs)
        print(stats.format_robustness(results, args.format))
    elif args.stats_verb == "leaderboard":
        print(stats.format_leaderboard(stats.leaderboard(rows, metric=args.metric), args.format))
    elif args.stats_verb == "consensus":
        print(stats.format_consensus(stats.consensus(rows, method=args.method, metric=args.metric), args.format))
    elif args.stats_verb == "multilingual":
        print(stats.format_multilingual(stats.multilingual(rows, metric=args.metric or "cer", worst_n=args.worst),
                                        args.format))
    else:
        print(stats.format_normalised(stats.normalised_score(rows, baseline=args.baseline), args.format))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from speechssl.api import report

    paths = report(args.store, args.out, pretrain_dirs=args.pretrain, title=args.title)
    for kind, path in paths.items():
        print(f"{kind:<5} {path}")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from speechssl.doctor import run_doctor

    return run_doctor(as_json=args.json, sizes=not args.no_sizes)


# ---------------------------------------------------------------- parser


def _add_common(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS keeps a subcommand's default from clobbering a --debug given before the verb.
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks on errors")


def _add_store(parser: argparse.ArgumentParser) -> None:
    from speechssl.benchmark.store import default_store  # sqlite only: cheap

    parser.add_argument("--store", type=Path, default=default_store(),
                        help=f"result store (default {default_store()}; $SPEECHSSL_STORE sets it)")


def _add_row_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default=None, help="only this task")
    parser.add_argument("--upstream", default=None, help="only this upstream")
    parser.add_argument("--probe", default=None, help="only this probe")


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="YAML config file")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted config overrides, e.g. optim.lr=3e-4 (see `speechssl config-keys`)")


def _cmd_config_keys(args: argparse.Namespace) -> int:
    from speechssl.config import describe

    cls = _config_classes()[args.verb]()
    print("\n".join(describe(cls)))
    return 0


def _config_classes() -> dict[str, Callable[[], type]]:
    def synth() -> type:
        from speechssl.data.synth import SynthConfig
        return SynthConfig

    def demo() -> type:
        from speechssl.demo import DemoConfig
        return DemoConfig

    def pretrain() -> type:
        from speechssl.pretrain import PretrainConfig
        return PretrainConfig

    def bench() -> type:
        from speechssl.downstream.config import BenchConfig
        return BenchConfig

    def sweep() -> type:
        from speechssl.benchmark.sweep import SweepConfig
        return SweepConfig

    return {"bench": bench, "corpus-synth": synth, "demo": demo, "pretrain": pretrain, "sweep": sweep}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speechssl",
        description="Pretrain, benchmark and analyse self-supervised speech encoders.",
    )
    parser.add_argument("--version", action="version", version=f"speechssl {__version__}")
    parser.add_argument("--debug", action="store_true", default=False, help="show full tracebacks on errors")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    corpus = verbs.add_parser("corpus", help="make or check a corpus (synthetic default corpus)")
    _add_common(corpus)
    corpus_verbs = corpus.add_subparsers(dest="corpus_verb", metavar="ACTION", required=True)

    synth = corpus_verbs.add_parser(
        "synth", help="generate the synthetic multilingual corpus with eSpeak NG",
        description="Generate a multilingual labelled speech corpus locally with eSpeak NG "
                    "(16 kHz FLAC + lhotse manifests + corpus.json). Deterministic given --seed; "
                    "re-running with the same settings reuses the corpus.")
    _add_common(synth)
    synth.add_argument("--out", type=Path, default=DEFAULT_DATA_DIR, help=f"output directory (default {DEFAULT_DATA_DIR})")
    synth.add_argument("--hours", type=float, default=None, help="hours of audio to generate (default 3)")
    synth.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    synth.add_argument("--languages", default=None, help="comma-separated language codes (default: all 8)")
    synth.add_argument("--augment", default=None, help="comma-separated augmentations: noise,reverb,telephone")
    synth.add_argument("--workers", type=int, default=2, help="synthesis processes (default 2)")
    synth.add_argument("--overwrite", action="store_true", help="replace a corpus made with other settings")
    _add_overrides(synth)
    synth.set_defaults(handler=_cmd_corpus_synth)

    check = corpus_verbs.add_parser(
        "check", help="validate manifests and decode every audio file",
        description="Validate a manifest directory: every manifest field and every audio file is "
                    "checked; prints counts, hours and the padding waste of duration-bucketed batches.")
    _add_common(check)
    check.add_argument("data", type=Path, nargs="?", default=DEFAULT_DATA_DIR, help="manifest directory")
    check.add_argument("--split", action="append", help="split to check (repeatable; default all)")
    check.add_argument("--skip-bad", action="store_true",
                       help="skip unusable audio files and report their count and list instead of failing")
    check.add_argument("--batch-seconds", type=float, default=60.0, help="batch budget for the bucketing report")
    check.set_defaults(handler=_cmd_corpus_check)

    derived = corpus_verbs.add_parser(
        "datasets", help="ML-SUPERB-style datasets per language and few-shot train splits from a corpus",
        description="Put every train/dev/test utterance of SOURCE into one of several datasets (recording "
                    "conditions: clean, telephone, reverb, noise), balanced per split and language, and write "
                    "few-shot train splits train_<shot> per (language, dataset) pair, smaller ones nested in larger "
                    "ones. Deterministic given --seed; re-running with the same settings reuses the output. "
                    "See docs/corpora.md.")
    _add_common(derived)
    derived.add_argument("source", type=Path, metavar="SOURCE", help="corpus directory (e.g. data/synth)")
    derived.add_argument("--out", type=Path, required=True, help="output directory")
    derived.add_argument("--datasets", default="clean,telephone,reverb",
                         help="comma-separated datasets: clean, telephone, reverb, noise (default clean,telephone,reverb)")
    derived.add_argument("--shots", default="1min,4min",
                         help="comma-separated few-shot sizes per (language, dataset), e.g. 10min,1h (default 1min,4min)")
    derived.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    derived.add_argument("--workers", type=int, default=2, help="processes degrading audio (default 2)")
    derived.add_argument("--overwrite", action="store_true", help="replace datasets derived with other settings")
    derived.set_defaults(handler=_cmd_corpus_datasets)

    prep = verbs.add_parser(
        "prepare", help="manifests of a real corpus from its local copy (librispeech, commonvoice, folder, kaldi, ...)",
        description="Check a local corpus tree (everything missing is named at once), then write the manifest "
                    "directory every other command reads: manifests/cuts_<split>.jsonl.gz, corpus.json (counts, "
                    "skipped files) and ASV trial lists. Nothing is downloaded. Corpora, layouts and options: "
                    "docs/corpora.md.")
    _add_common(prep)
    prep.add_argument("corpus", metavar="NAME", help="corpus recipe (see docs/corpora.md; e.g. folder, kaldi, librispeech)")
    prep.add_argument("root", type=Path, metavar="ROOT", help="the corpus's local directory")
    prep.add_argument("--out", type=Path, required=True, help="manifest directory to write")
    prep.add_argument("--metadata", default=None, help="folder: the CSV/TSV describing the recordings")
    prep.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                      help="a recipe option (repeatable), e.g. --option language=fr --option split_set=1h")
    prep.set_defaults(handler=_cmd_prepare)

    demo = verbs.add_parser(
        "demo", help="run every pipeline stage on the synthetic corpus",
        description="Generate (or reuse) the synthetic corpus and run every stage that exists; "
                    "idempotent: re-running reuses finished stages.")
    _add_common(demo)
    demo.add_argument("--out", type=Path, default=DEFAULT_DEMO_DIR, help=f"run directory (default {DEFAULT_DEMO_DIR})")
    demo.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help=f"corpus directory (default {DEFAULT_DATA_DIR})")
    demo.add_argument("--workers", type=int, default=2, help="processes for corpus synthesis (default 2)")
    _add_overrides(demo)
    demo.set_defaults(handler=_cmd_demo)

    pre = verbs.add_parser(
        "pretrain", help="pretrain a wav2vec 2.0 encoder (resumes an interrupted run)",
        description="Pretrain a wav2vec 2.0-style encoder from a YAML config (e.g. "
                    "configs/pretrain/w2v2_tiny.yaml) plus KEY=VALUE overrides. Re-running with the same "
                    "--out continues from the newest checkpoint there. Under torchrun every process "
                    "runs this same command (DDP).")
    _add_common(pre)
    pre.add_argument("config_file", type=Path, nargs="?", default=None, metavar="CONFIG",
                     help="YAML config (default: built-in tiny settings)")
    pre.add_argument("--out", type=Path, default=DEFAULT_PRETRAIN_DIR,
                     help=f"run directory (default {DEFAULT_PRETRAIN_DIR})")
    pre.add_argument("--data", type=Path, default=None, help="manifest directory (sets data.dir)")
    pre.add_argument("--fresh", action="store_true", help="delete earlier checkpoints in --out and start over")
    pre.add_argument("--init-only", action="store_true",
                     help="only write the step-0 checkpoint (initial weights): the random-init baseline of "
                          "this architecture, benchmarked as ckpt:<out>")
    pre.add_argument("--no-progress", action="store_true", help="no progress bar")
    pre.add_argument("--executor", choices=["local", "slurm", "submitit-local"], default="local",
                     help="local: run here (default; under torchrun, as one DDP process); slurm: submit one "
                          "SLURM job through submitit that requeues itself on preemption/timeout; "
                          "submitit-local: the same through submitit's local executor")
    pre.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                     help="job resources, repeatable: partition, account, qos, time_min, nodes, gpus_per_node, "
                          "cpus_per_task, mem_gb, ... (= the config keys slurm.KEY)")
    pre.add_argument("--wait", action="store_true", help="with --executor: block until the job has finished")
    pre.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                     help="dotted config overrides, e.g. optim.lr=1e-3 steps=500 (see `speechssl config-keys pretrain`)")
    pre.set_defaults(handler=_cmd_pretrain)

    export = verbs.add_parser(
        "export-hf", help="write a pretraining checkpoint as a transformers Wav2Vec2 or HuBERT directory",
        description="Convert a speechssl pretraining checkpoint (runs/.../checkpoints/*.pt) into "
                    "config.json + model.safetensors + preprocessor_config.json that "
                    "transformers' Wav2Vec2Model / Wav2Vec2ForPreTraining (or, with --format hubert, "
                    "HubertModel) .from_pretrained(DIR) load.")
    _add_common(export)
    export.add_argument("checkpoint", type=Path, help="checkpoint file, e.g. runs/pretrain/checkpoints/best.pt")
    export.add_argument("--out", type=Path, required=True, help="output directory")
    export.add_argument("--format", choices=("auto", "wav2vec2", "hubert"), default="auto",
                        help="transformers layout: wav2vec2 (with the pretraining heads) or hubert (encoder "
                             "only); auto (default) picks wav2vec2 for a wav2vec 2.0 run, hubert otherwise")
    export.add_argument("--encoder-only", action="store_true",
                        help="only the encoder (Wav2Vec2Model keys), without quantizer and projection heads")
    export.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    export.set_defaults(handler=_cmd_export_hf)

    tuned = verbs.add_parser(
        "export-tuned", help="write a fine-tuning run's adapted upstream: its adapted weights, or merged (--merge)",
        description="A bench run with regime full, partial, adapter or lora saves the upstream weights it trained "
                    "(RUN_DIR/adapted_upstream.safetensors). Without --merge, copy them with an "
                    "adapter_config.json (base upstream + regime) to --out; with --merge, write a full transformers "
                    "model directory (LoRA folded into the base weights; hf:<out> loads it). Adapter runs cannot be "
                    "merged; use them as the upstream tuned:RUN_DIR.")
    _add_common(tuned)
    tuned.add_argument("run_dir", type=Path, help="the bench run directory (holds adapted_upstream.safetensors)")
    tuned.add_argument("--out", type=Path, required=True, help="output directory")
    tuned.add_argument("--merge", action="store_true", help="write a full model with the adaptation merged in")
    tuned.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    tuned.set_defaults(handler=_cmd_export_tuned)

    targets = verbs.add_parser(
        "targets", help="HuBERT pretraining targets: k-means labels of an upstream's frames, per encoder frame",
        description="Cluster one layer of an upstream (mfcc for HuBERT iteration 1, ckpt:<run> or hf:<dir> "
                    "for later ones) with k-means fitted on a sample of the train split, and store per-utterance "
                    "labels at the encoder's frame rate for each split. Features come from the feature cache; "
                    "re-running with the same inputs reuses the set. See docs/pretraining.md, 'Targets'.")
    _add_common(targets)
    targets.add_argument("--upstream", required=True, help="mfcc | fbank | hf:<dir or hub id> | ckpt:<path> ...")
    targets.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help=f"corpus directory (default {DEFAULT_DATA_DIR})")
    targets.add_argument("--out", type=Path, default=Path("runs/targets"),
                         help="directory of target sets; each set is a subdirectory named after its inputs "
                              "(default runs/targets)")
    targets.add_argument("--k", type=int, default=100, help="clusters (default 100)")
    targets.add_argument("--frame-ms", type=int, default=20, choices=[20, 40, 80],
                         help="frame period of the encoder the labels are for (default 20)")
    targets.add_argument("--layer", type=int, default=None, help="upstream layer to cluster (default: the last)")
    targets.add_argument("--splits", default="train,dev", help="splits to label, comma-separated (default train,dev)")
    targets.add_argument("--max-fit-frames", type=int, default=100_000,
                         help="frames sampled from train to fit k-means (default 100000)")
    targets.add_argument("--seed", type=int, default=0, help="seed of the sample and of k-means (default 0)")
    targets.add_argument("--cache-dir", type=Path, default=None, help="feature cache (default runs/feature_cache)")
    targets.add_argument("--device", default=None, help="device for the upstream when features are not cached")
    targets.add_argument("--no-progress", action="store_true", help="no progress bars")
    targets.set_defaults(handler=_cmd_targets)

    quality = verbs.add_parser(
        "targets-quality", help="phone purity, cluster purity and PNMI of a target set against phone alignments",
        description="Compare a target set's per-frame labels with the corpus's phone alignments (the phone under "
                    "each encoder frame's centre): phone and cluster purity, PNMI and cluster usage (HuBERT, "
                    "Sec. IV-D), on all frames and on speech frames only. Prints a table and records it under "
                    "the split in <set>/quality.json.")
    _add_common(quality)
    quality.add_argument("target_dir", type=Path, help="a target set directory (or a directory holding one set)")
    quality.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR,
                         help=f"corpus directory with manifests/alignments_<split>.jsonl.gz (default {DEFAULT_DATA_DIR})")
    quality.add_argument("--split", default="dev", help="split to measure on (default dev)")
    quality.set_defaults(handler=_cmd_targets_quality)

    bench = verbs.add_parser(
        "bench", help="train and score a probe on one downstream task for one upstream",
        description="Benchmark an upstream on a downstream task: the frozen upstream's layers are "
                    "cached on disk, a probe is trained on the train split with early stopping on dev, "
                    "and test metrics go to RUN_DIR/result.json. Re-running the same config reuses "
                    "the result (--fresh retrains).")
    _add_common(bench)
    bench.add_argument("--upstream", default=None, help="mfcc | fbank | ge2e | hf:<dir or hub id> | ckpt:<path>")
    bench.add_argument("--task", default=None,
                       help="asr | asr_lid | pr | lid | asv | er | ic | sf | ast | sa (docs/benchmark.md)")
    bench.add_argument("--probe", default=None, help="probe family (default: the task's)")
    bench.add_argument("--data", default=None, help=f"manifest directory (default {DEFAULT_DATA_DIR})")
    bench.add_argument("--out", type=Path, default=None, help="run directory (default runs/bench/<upstream>/<task>-...)")
    bench.add_argument("--fresh", action="store_true", help="retrain even if the run directory has this result")
    bench.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_store(bench)
    bench.add_argument("--no-store", dest="store", action="store_const", const=None, help="do not record the run")
    _add_overrides(bench)
    bench.set_defaults(handler=_cmd_bench)

    multi = verbs.add_parser(
        "bench-multilingual", help="ML-SUPERB 2.0: joint multilingual ASR + LID with an architecture, regime and shots",
        description="Train one joint ASR + LID model ([lang] text, CTC or CTC-attention) on every language and "
                    "dataset of the corpus and score it as ML-SUPERB 2.0: macro CER, std and worst-N across "
                    "languages, CER range across datasets of a language, macro LID accuracy (docs/multilingual.md).")
    _add_common(multi)
    multi.add_argument("--upstream", required=True, help="mfcc | fbank | hf:<dir or hub id> | ckpt:<path> | tuned:<run>")
    multi.add_argument("--arch", default="transformer",
                       choices=["transformer", "transformer-deep", "conformer", "ebranchformer"],
                       help="downstream architecture (default: the 2-layer Transformer baseline)")
    multi.add_argument("--framework", default="ctc", choices=["ctc", "ctcattn"], help="CTC or hybrid CTC-attention")
    multi.add_argument("--regime", default="frozen", help="frozen | full | partial-bottom|middle|top[K] | adapter | lora")
    multi.add_argument("--shots", default=None,
                       help="few-shot train split train_<SHOTS> per language-dataset pair, e.g. 10min, 1h (default: all)")
    multi.add_argument("--lm-order", type=int, default=None, help="also decode with a word n-gram LM of this order")
    multi.add_argument("--data", default=None, help="corpus with custom.dataset labels (speechssl corpus datasets)")
    multi.add_argument("--out", type=Path, default=None, help="run directory (default runs/multilingual/...)")
    multi.add_argument("--fresh", action="store_true", help="retrain even if the run directory has this result")
    multi.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_store(multi)
    multi.add_argument("--no-store", dest="store", action="store_const", const=None, help="do not record the run")
    _add_overrides(multi)
    multi.set_defaults(handler=_cmd_bench_multilingual)

    results = verbs.add_parser(
        "results", help="the result store: import, export and list runs",
        description="Every bench and sweep run is recorded in a SQLite result store. Results of papers "
                    "or other toolkits come in as a long CSV (required columns upstream,task,probe,metric,"
                    "value; optional seed,language,dataset,regime,split,params,higher_is_better,...), JSONL "
                    "with the same keys, or a bench result.json. See docs/results.md.")
    _add_common(results)
    results_verbs = results.add_subparsers(dest="results_verb", metavar="ACTION", required=True)
    r_import = results_verbs.add_parser("import", help="import CSV/TSV/JSONL rows or bench result.json files")
    r_import.add_argument("files", type=Path, nargs="+", metavar="FILE")
    r_export = results_verbs.add_parser("export", help="write the scores as long CSV or JSONL (by suffix)")
    r_export.add_argument("file", type=Path, metavar="FILE")
    r_matrix = results_verbs.add_parser(
        "matrix", help="upstream x (task, probe) table of bench result.json files, with a chance row")
    r_matrix.add_argument("files", type=Path, nargs="+", metavar="RESULT_JSON")
    r_matrix.add_argument("--by-task", action="store_true", help="one row per task and probe, one column per upstream")
    _add_common(r_matrix)
    r_list = results_verbs.add_parser("list", help="list runs with status and primary score")
    r_list.add_argument("--status", choices=["pending", "running", "finished", "failed"], default=None)
    r_regimes = results_verbs.add_parser(
        "regimes", help="score, tunable parameters, step time and peak memory of every run per adaptation regime")
    for sub in (r_import, r_export, r_list, r_regimes):
        _add_common(sub)
        _add_store(sub)
        if sub is not r_import:
            _add_row_filters(sub)
    results.set_defaults(handler=_cmd_results)

    sweep = verbs.add_parser(
        "sweep", help="run a grid of bench runs; resumable, records every cell in the store",
        description="Run upstreams x task:probe pairs x seeds x grid axes from a YAML spec (see "
                    "configs/sweeps/ and docs/results.md). Cells already finished in the store are "
                    "skipped, so rerunning after a crash or kill resumes; failed cells are rerun with "
                    "--retry-failed.")
    _add_common(sweep)
    sweep.add_argument("spec", type=Path, metavar="SPEC.yaml")
    sweep.add_argument("--workers", type=int, default=1, help="parallel cells with the local executor (default 1)")
    sweep.add_argument("--executor", choices=["local", "slurm", "submitit-local"], default="local",
                       help="local process pool, SLURM through submitit, or submitit's local executor")
    sweep.add_argument("--retry-failed", action="store_true", help="rerun cells that failed before")
    sweep.add_argument("--dry-run", action="store_true", help="print the cells and exit")
    sweep.add_argument("--partition", default=None, help="SLURM partition (slurm.partition)")
    sweep.add_argument("--time-min", type=int, default=None, help="SLURM time limit per job in minutes")
    sweep.add_argument("--gpus", type=int, default=None, help="GPUs per SLURM job")
    sweep.add_argument("--store", type=Path, default=None, help="result store (default: the spec's store key)")
    sweep.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="dotted overrides of the spec, e.g. settings.train_hours=0.1 (see `speechssl config-keys sweep`)")
    sweep.set_defaults(handler=_cmd_sweep)

    stats_parser = verbs.add_parser(
        "stats", help="statistics over the store: leaderboard, probe robustness, consensus, multilingual, score",
        description="robustness: Pearson/Spearman/Kendall correlations of upstream scores between probe "
                    "families per task, with p-values and bootstrap CIs (seed 002, Table 2). consensus: one "
                    "ranking per task over all probe families (Borda count or mean rank) and how often the "
                    "probes' orderings agree (docs/benchmark.md). leaderboard: mean "
                    "+- std over seeds. multilingual: ML-SUPERB 2.0 aggregates over languages. score: "
                    "SUPERB-style normalised overall score. See docs/statistics.md.")
    _add_common(stats_parser)
    stats_verbs = stats_parser.add_subparsers(dest="stats_verb", metavar="STATISTIC", required=True)
    for name in ("robustness", "leaderboard", "consensus", "multilingual", "score"):
        sub = stats_verbs.add_parser(name)
        _add_common(sub)
        _add_store(sub)
        _add_row_filters(sub)
        sub.add_argument("--format", choices=["md", "json", "tex"] + (["csv"] if name == "consensus" else []),
                         default="md")
        if name == "consensus":
            sub.add_argument("--method", choices=["borda", "mean_rank"], default="borda",
                             help="aggregate per-probe ranks by Borda count (default) or mean rank")
        sub.add_argument("--metric", default=None,
                         help="only this metric (default: all; cer for multilingual; the primary one for consensus)")
        sub.add_argument("--boot", type=int, default=1000, help="bootstrap resamples (robustness)")
        sub.add_argument("--pair", action="append", default=[], metavar="A:B",
                         help="robustness: compare probe A (first) with probe B, in this order (repeatable; "
                              "default every pair, by name)")
        sub.add_argument("--worst", type=int, default=3, help="worst-N languages (multilingual)")
        sub.add_argument("--baseline", default="mfcc", help="baseline upstream of the normalised score")
    stats_parser.set_defaults(handler=_cmd_stats)

    report = verbs.add_parser(
        "report", help="write Markdown, self-contained HTML and LaTeX reports of the store",
        description="Leaderboards, normalised score, probe robustness, multilingual aggregates, cost and "
                    "plots (bars, rank scatter, layer-weight heatmaps, per-language CER, loss curves).")
    _add_common(report)
    _add_store(report)
    report.add_argument("--out", type=Path, default=DEFAULT_REPORT_DIR, help=f"output directory (default {DEFAULT_REPORT_DIR})")
    report.add_argument("--pretrain", type=Path, action="append", default=[],
                        help="pretraining run directory whose loss curve to plot (repeatable)")
    report.add_argument("--title", default="speechssl report")
    report.set_defaults(handler=_cmd_report)

    doctor = verbs.add_parser(
        "doctor", help="versions, torch build, GPUs, extras, tools, cache/store locations: paste into bug reports")
    _add_common(doctor)
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.add_argument("--no-sizes", action="store_true", help="skip measuring the caches' sizes on disk")
    doctor.set_defaults(handler=_cmd_doctor)

    keys = verbs.add_parser("config-keys", help="list the config keys of a verb with types, defaults and limits")
    _add_common(keys)
    keys.add_argument("verb", choices=sorted(_config_classes()), help="which config")
    keys.set_defaults(handler=_cmd_config_keys)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Before any convolution runs: caps oneDNN's per-shape caches, which otherwise grow the
    # RSS of CPU runs over variable-length batches by GBs (speechssl.memory).
    bound_shape_caches()
    parser = build_parser()
    # argparse cannot take positionals on both sides of options ("pretrain CFG --out D
    # a=1"): leftovers that look like KEY=VALUE overrides join the verb's overrides.
    args, extra = parser.parse_known_args(argv)  # argparse itself exits 2 on usage errors
    if extra:
        stray = [item for item in extra if item.startswith("-") or "=" not in item]
        if stray or not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
        args.overrides = list(args.overrides) + extra
    debug = getattr(args, "debug", False)
    try:
        return int(args.handler(args) or 0)
    except SpeechSSLError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line, the traceback is one flag away
        from speechssl.extras import missing_extra

        missing = missing_extra(exc)  # an optional package imported without extras.require
        if debug:
            traceback.print_exc()
        if missing is not None:
            print(f"error: {missing}", file=sys.stderr)
            return missing.exit_code
        if not debug:
            print(f"error: unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)",
                  file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
