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
from speechssl.errors import SpeechSSLError

DEFAULT_DATA_DIR = Path("data/synth")
DEFAULT_DEMO_DIR = Path("runs/demo")
DEFAULT_PRETRAIN_DIR = Path("runs/pretrain")


# ---------------------------------------------------------------- handlers


def _cmd_corpus_synth(args: argparse.Namespace) -> int:
    from speechssl.config import load_config
    from speechssl.data.synth import SynthConfig, format_summary, synthesize_corpus

    overrides = list(args.overrides)
    if args.hours is not None:
        overrides.append(f"hours={args.hours}")
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.languages:
        overrides.append(f"languages=[{args.languages}]")
    if args.augment:
        overrides.append(f"augment=[{args.augment}]")
    cfg = load_config(SynthConfig, args.config, overrides)
    info = synthesize_corpus(cfg, args.out, workers=args.workers, overwrite=args.overwrite)
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


def _cmd_demo(args: argparse.Namespace) -> int:
    from speechssl.config import load_config
    from speechssl.demo import DemoConfig, run_demo

    cfg = load_config(DemoConfig, args.config, args.overrides)
    run_demo(cfg, out_dir=args.out, data_dir=args.data, workers=args.workers)
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from speechssl.config import load_config
    from speechssl.pretrain import PretrainConfig, pretrain

    overrides = list(args.overrides)
    config_file = args.config_file
    if config_file is not None and "=" in config_file.name and not config_file.exists():
        # No CONFIG given: argparse put the first KEY=VALUE into its slot.
        overrides.insert(0, str(config_file))
        config_file = None
    if args.data is not None:
        overrides.append(f"data.dir={args.data}")
    cfg = load_config(PretrainConfig, config_file, overrides)
    result = pretrain(cfg, args.out, fresh=args.fresh, progress=not args.no_progress)
    summary = result.last_valid or result.last_train
    if summary:
        print(
            f"step {result.state.step}: {summary['split']} loss {summary['loss']:.3f} "
            f"(contrastive {summary['contrastive']:.3f}, accuracy {summary['accuracy']:.3f}); "
            f"{result.state.seconds_seen / 3600:.2f} h of audio seen in {result.state.wall_seconds:.0f} s"
        )
    print(f"checkpoint: {result.last_checkpoint}")
    if result.best_checkpoint:
        print(f"best: {result.best_checkpoint} (step {result.state.best_step})")
    return 0


def _cmd_export_hf(args: argparse.Namespace) -> int:
    from speechssl.models.hf import export_hf
    from speechssl.pretrain.checkpoint import load_pretraining_model

    model, cfg = load_pretraining_model(args.checkpoint)
    out = export_hf(model, args.out, do_normalize=cfg.data.normalize_waveform, overwrite=args.overwrite,
                    encoder_only=args.encoder_only)
    print(f"wrote {out} (load with transformers.Wav2Vec2Model.from_pretrained or speechssl's import_hf)")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from speechssl.config import load_config
    from speechssl.downstream.config import BenchConfig
    from speechssl.downstream.runner import format_result, run_bench

    overrides = list(args.overrides)
    for key in ("upstream", "task", "probe", "data"):
        value = getattr(args, key)
        if value is not None:
            overrides.append(f"{key}={value}")
    cfg = load_config(BenchConfig, args.config, overrides)
    result = run_bench(cfg, args.out, fresh=args.fresh, progress=not args.no_progress)
    print(format_result(result))
    return 0


# ---------------------------------------------------------------- parser


def _add_common(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS keeps a subcommand's default from clobbering a --debug given before the verb.
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks on errors")


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

    return {"bench": bench, "corpus-synth": synth, "demo": demo, "pretrain": pretrain}


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
    pre.add_argument("--no-progress", action="store_true", help="no progress bar")
    pre.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                     help="dotted config overrides, e.g. optim.lr=1e-3 steps=500 (see `speechssl config-keys pretrain`)")
    pre.set_defaults(handler=_cmd_pretrain)

    export = verbs.add_parser(
        "export-hf", help="write a pretraining checkpoint as a transformers Wav2Vec2 directory",
        description="Convert a speechssl pretraining checkpoint (runs/.../checkpoints/*.pt) into "
                    "config.json + model.safetensors + preprocessor_config.json that "
                    "transformers' Wav2Vec2Model / Wav2Vec2ForPreTraining .from_pretrained(DIR) load.")
    _add_common(export)
    export.add_argument("checkpoint", type=Path, help="checkpoint file, e.g. runs/pretrain/checkpoints/best.pt")
    export.add_argument("--out", type=Path, required=True, help="output directory")
    export.add_argument("--encoder-only", action="store_true",
                        help="only the encoder (Wav2Vec2Model keys), without quantizer and projection heads")
    export.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    export.set_defaults(handler=_cmd_export_hf)

    bench = verbs.add_parser(
        "bench", help="train and score a probe on one downstream task for one upstream",
        description="Benchmark an upstream on a downstream task: the frozen upstream's layers are "
                    "cached on disk, a probe is trained on the train split with early stopping on dev, "
                    "and test metrics go to RUN_DIR/result.json. Re-running the same config reuses "
                    "the result (--fresh retrains).")
    _add_common(bench)
    bench.add_argument("--upstream", default=None, help="mfcc | fbank | ge2e | hf:<local dir> | ckpt:<path>")
    bench.add_argument("--task", default=None, help="asr | lid | asv")
    bench.add_argument("--probe", default=None, help="probe family (default: the task's)")
    bench.add_argument("--data", default=None, help=f"manifest directory (default {DEFAULT_DATA_DIR})")
    bench.add_argument("--out", type=Path, default=None, help="run directory (default runs/bench/<upstream>/<task>-...)")
    bench.add_argument("--fresh", action="store_true", help="retrain even if the run directory has this result")
    bench.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_overrides(bench)
    bench.set_defaults(handler=_cmd_bench)

    keys = verbs.add_parser("config-keys", help="list the config keys of a verb with types, defaults and limits")
    _add_common(keys)
    keys.add_argument("verb", choices=sorted(_config_classes()), help="which config")
    keys.set_defaults(handler=_cmd_config_keys)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
        if debug:
            traceback.print_exc()
        else:
            print(f"error: unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)",
                  file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
