"""The Python API: what the ``speechssl`` verbs do, as functions (docs/python_api.md).

Each function here is the code its CLI verb runs -- ``speechssl corpus synth``,
``pretrain``, ``bench`` and ``report`` parse their flags and call these -- so a script
and the command line build the same config from the same YAML file and dotted
overrides and get the same result, errors included: anything a caller can get wrong (an
unknown task, a mistyped override key, a missing corpus) raises
:class:`~speechssl.errors.ConfigError` before any work starts, and failures a user can
act on are :class:`~speechssl.errors.SpeechSSLError`.

``import speechssl.api`` is cheap: torch, lhotse and transformers are imported by the
function that needs them, when it is called.

Configs: every function that runs something takes ``config`` (a YAML file, a mapping of
the same keys, or the config dataclass itself; None = the defaults) and ``overrides``
applied on top of it, either as a mapping of dotted keys to Python values
(``{"train.max_epochs": 2, "languages": ["en", "fr"]}``) or as the CLI's strings
(``["train.max_epochs=2", "languages=[en,fr]"]``). ``speechssl config-keys <verb>`` lists
the keys.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence, TypeVar, Union

from speechssl.benchmark.store import ResultStore
from speechssl.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from speechssl.data.synth import SynthConfig
    from speechssl.downstream.config import BenchConfig
    from speechssl.pretrain import PretrainConfig, PretrainResult
    from speechssl.upstream import Upstream

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_PRETRAIN_DIR",
    "DEFAULT_REPORT_DIR",
    "BenchResult",
    "Overrides",
    "ResultStore",
    "bench",
    "build_config",
    "load_upstream",
    "make_synthetic_corpus",
    "override_items",
    "pretrain",
    "pretrain_config",
    "report",
]

DEFAULT_DATA_DIR = Path("data/synth")
"""Where the synthetic corpus goes by default, and where ``bench`` and ``pretrain`` read data by default."""
DEFAULT_PRETRAIN_DIR = Path("runs/pretrain")
DEFAULT_REPORT_DIR = Path("runs/report")

Overrides = Union[Mapping[str, Any], Sequence[str], None]
"""Dotted config overrides: ``{"optim.lr": 3e-4}`` or ``["optim.lr=3e-4"]`` (None = none)."""
StoreLike = Union[ResultStore, str, os.PathLike]
"""An open :class:`ResultStore`, or the path of its SQLite file."""

T = TypeVar("T")


# ---------------------------------------------------------------- configs


def override_items(overrides: Overrides) -> list[str]:
    """``overrides`` as the CLI's ``key.sub=value`` strings (a list is returned as a copy).

    Mapping values: a ``str`` is kept as written (YAML-parsed when the key's field is not a
    string, as on the command line); other values are written as JSON, which YAML reads
    back as the same number, boolean, null, list or mapping.
    """
    if overrides is None:
        return []
    if isinstance(overrides, str):
        raise ConfigError(f"overrides must be a mapping or a list of key=value strings, got the string {overrides!r}")
    if isinstance(overrides, Mapping):
        items = []
        for key, value in overrides.items():
            if not isinstance(key, str) or not key.strip():
                raise ConfigError(f"override keys must be dotted key strings such as 'train.lr', got {key!r}")
            if isinstance(value, (str, os.PathLike)):
                text = os.fspath(value)
            else:
                text = json.dumps(value, default=str)
            items.append(f"{key}={text}")
        return items
    items = list(overrides)
    bad = [item for item in items if not isinstance(item, str)]
    if bad:
        raise ConfigError(f"override list items must be key=value strings, got {bad[0]!r}")
    return items


def build_config(
    cls: type[T], config: str | os.PathLike | Mapping[str, Any] | T | None = None, overrides: Overrides = None
) -> T:
    """The validated ``cls`` config: defaults <- ``config`` <- ``overrides``.

    ``config`` is a YAML file (read as the CLI's ``--config`` is), a mapping of the same
    keys, an instance of ``cls``, or None. An unknown key, a wrong type or an out-of-range
    value raises :class:`~speechssl.errors.ConfigError` naming the key.
    """
    from speechssl.config import apply_overrides, from_dict, load_config, to_dict

    items = override_items(overrides)
    if config is None or isinstance(config, (str, os.PathLike)):
        return load_config(cls, config, items)
    if isinstance(config, cls):
        data = to_dict(config)
    elif isinstance(config, Mapping):
        data = dict(config)
    else:
        raise ConfigError(f"config must be a YAML path, a mapping or a {cls.__name__}, got {type(config).__name__}")
    return from_dict(cls, apply_overrides(data, items, cls))


# ---------------------------------------------------------------- corpus


def make_synthetic_corpus(
    out: str | os.PathLike = DEFAULT_DATA_DIR,
    config: str | os.PathLike | Mapping[str, Any] | SynthConfig | None = None,
    *,
    overrides: Overrides = None,
    workers: int = 2,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate the synthetic multilingual corpus with eSpeak NG (``speechssl corpus synth``).

    Writes into ``out``: 16 kHz FLAC under ``audio/``, lhotse manifests under
    ``manifests/`` (the corpus directory every other function takes as ``data``), ASV trial
    lists and ``corpus.json``. The same settings in the same ``out`` reuse the corpus
    without work; a corpus made with other settings raises
    :class:`~speechssl.errors.ConfigError` unless ``overwrite``. Keys: ``hours``, ``seed``,
    ``languages``, ``speakers``, ... (``speechssl config-keys corpus-synth``).

    Rendering runs in ``workers`` "spawn" processes, so a script that calls this needs the
    ``if __name__ == "__main__":`` guard.

    Returns the content of ``out/corpus.json`` (counts and hours per split and language).
    """
    from speechssl.data.synth import SynthConfig, synthesize_corpus

    cfg = build_config(SynthConfig, config, overrides)
    return synthesize_corpus(cfg, out, workers=workers, progress=progress, overwrite=overwrite)


# ---------------------------------------------------------------- upstreams


def load_upstream(spec: str, device: torch.device | str | None = None) -> Upstream:
    """The upstream (feature extractor or SSL encoder) named by ``spec``, in eval mode.

    ``spec`` is what ``--upstream`` takes: ``mfcc``, ``fbank``, ``ge2e``,
    ``hf:<model dir or hub id>``, ``ckpt:<checkpoint or pretraining run dir>``, ``tuned:<bench run
    dir>``, ``fuse:<mode>:<spec>+<spec>``. Nothing is written. The returned
    :class:`~speechssl.upstream.Upstream` is a ``torch.nn.Module``:
    ``upstream(waveforms [B, T], lengths [B])`` on 16 kHz audio gives an ``UpstreamOutput``
    with one ``[B, T', D]`` tensor per layer and the valid frames per utterance.
    Parameters keep ``requires_grad`` as loaded. ``device`` defaults to the CPU.
    An unknown or malformed spec raises :class:`~speechssl.errors.ConfigError`.
    """
    from speechssl.memory import bound_shape_caches
    from speechssl.upstream import build_upstream

    bound_shape_caches()  # before the first convolution, as the CLI does
    return build_upstream(spec, device=device)


# ---------------------------------------------------------------- pretraining


def pretrain(
    config: str | os.PathLike | Mapping[str, Any] | PretrainConfig | None = None,
    *,
    overrides: Overrides = None,
    out_dir: str | os.PathLike = DEFAULT_PRETRAIN_DIR,
    data: str | os.PathLike | None = None,
    fresh: bool = False,
    init_only: bool = False,
    progress: bool = True,
) -> PretrainResult:
    """Pretrain an encoder (``speechssl pretrain``): wav2vec 2.0, HuBERT or WavLM-style.

    ``config`` is a YAML file such as ``configs/pretrain/w2v2_tiny.yaml`` (or a mapping or
    :class:`~speechssl.pretrain.PretrainConfig`; None = the built-in tiny settings);
    ``data`` sets ``data.dir`` (default ``data/synth``). A run already in ``out_dir``
    continues from its newest checkpoint; ``fresh`` deletes it first. ``init_only`` writes
    only the step-0 checkpoint (the random-init baseline, usable as ``ckpt:<out_dir>``).

    Writes into ``out_dir``: ``checkpoints/`` (``step_<N>.pt`` and ``best.pt``), the resolved
    ``config.yaml`` and ``metrics.jsonl`` (plus TensorBoard events unless ``tensorboard=false``).

    Returns a :class:`~speechssl.pretrain.PretrainResult`: ``out_dir``, ``state`` (step,
    audio seconds seen, wall time, best step), ``last_checkpoint``, ``best_checkpoint``,
    ``last_train`` / ``last_valid`` (the final metric records) and ``summary`` (one line).
    """
    from speechssl.pretrain import pretrain as run_pretraining

    cfg = pretrain_config(config, overrides=overrides, data=data)
    return run_pretraining(cfg, out_dir, fresh=fresh, progress=progress, init_only=init_only)


def pretrain_config(
    config: str | os.PathLike | Mapping[str, Any] | PretrainConfig | None = None,
    *,
    overrides: Overrides = None,
    data: str | os.PathLike | None = None,
) -> PretrainConfig:
    """The validated :class:`~speechssl.pretrain.PretrainConfig` that :func:`pretrain` runs
    (``config`` + ``overrides``, then ``data`` as ``data.dir``); the SLURM launcher submits it too."""
    from speechssl.pretrain import PretrainConfig

    items = override_items(overrides)
    if data is not None:
        items.append(f"data.dir={os.fspath(data)}")
    return build_config(PretrainConfig, config, items)


# ---------------------------------------------------------------- benchmark


@dataclass(frozen=True)
class BenchResult:
    """One benchmark run as :func:`bench` returns it."""

    result: dict[str, Any]
    """The run's ``result.json``: upstream, task, probe, regime, seed, ``metrics`` (test),
    ``primary_metric``, ``dev``, ``layer_weights``, ``history``, ``cost``, ``config``, ..."""
    run_dir: Path
    """Where the run wrote ``result.json``, the probe (``best.pt``) and its log."""
    run_id: str | None = None
    """The run's id in the result store it was recorded in (None: not recorded)."""

    @property
    def primary_metric(self) -> str:
        """The task's headline metric: ``accuracy`` (lid, er, ic), ``wer`` (asr), ``eer`` (asv), ..."""
        return self.result["primary_metric"]

    @property
    def score(self) -> float:
        """The test score in :attr:`primary_metric`."""
        return self.result["metrics"][self.primary_metric]

    @property
    def higher_is_better(self) -> bool:
        return bool(self.result["higher_is_better"])

    @property
    def metrics(self) -> dict[str, Any]:
        """Every test metric of the run."""
        return self.result["metrics"]

    @property
    def reused(self) -> bool:
        """True when ``run_dir`` already held this config's result and nothing was trained."""
        return bool(self.result.get("reused"))


def bench(
    upstream: str | None = None,
    task: str | None = None,
    probe: str | None = None,
    *,
    config: str | os.PathLike | Mapping[str, Any] | BenchConfig | None = None,
    overrides: Overrides = None,
    data: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    store: StoreLike | None = None,
    fresh: bool = False,
    progress: bool = True,
) -> BenchResult:
    """Benchmark an upstream on a downstream task (``speechssl bench``).

    ``upstream`` is a spec as :func:`load_upstream` takes it; ``task`` one of asr, asr_lid,
    pr, lid, asv, er, ic, sf, sa, ast; ``probe`` a probe family (None = the task's
    default); ``data`` the corpus directory (default ``data/synth``). Each of these, when
    None, comes from ``config`` (or the defaults: mfcc, lid); given, it wins over
    ``config`` and ``overrides``, as the CLI's flags do. The frozen upstream's layers are
    cached on disk (``cache.dir``, default ``runs/feature_cache``), a probe is trained on
    train with early stopping on dev and scored on test.

    Writes ``result.json``, ``best.pt`` (the probe) and ``metrics.jsonl`` into ``out_dir`` (default
    ``runs/bench/<upstream>/<task>-<probe>...-seed<seed>``). A ``result.json`` of the same
    config there is returned without training (``fresh`` retrains). With ``store`` (a
    :class:`ResultStore` or the path of one, created if missing) the run is recorded in it.

    Returns a :class:`BenchResult`. An unknown task, probe or upstream, or a bad override
    key, raises :class:`~speechssl.errors.ConfigError` before any work.
    """
    from speechssl.downstream.config import BenchConfig
    from speechssl.downstream.runner import resolve_run_dir, run_bench
    from speechssl.memory import bound_shape_caches

    items = override_items(overrides)
    for key, value in (("upstream", upstream), ("task", task), ("probe", probe), ("data", data)):
        if value is not None:
            items.append(f"{key}={os.fspath(value)}")
    cfg = build_config(BenchConfig, config, items)
    run_dir = resolve_run_dir(cfg, out_dir)
    bound_shape_caches()  # before the first convolution, as the CLI does
    result = run_bench(cfg, run_dir, fresh=fresh, progress=progress)
    run_id = None
    if store is not None:
        with _opened(store, create=True) as opened:
            run_id = opened.add_result(result)
    return BenchResult(result=result, run_dir=run_dir, run_id=run_id)


# ---------------------------------------------------------------- report


def report(
    store: StoreLike | None = None,
    out_dir: str | os.PathLike = DEFAULT_REPORT_DIR,
    *,
    pretrain_dirs: Sequence[str | os.PathLike] = (),
    title: str = "speechssl report",
) -> dict[str, Path]:
    """Write the report of a result store (``speechssl report``).

    ``store`` is a :class:`ResultStore` or the path of an existing one (None = the default
    store, ``runs/results.db`` or ``$SPEECHSSL_STORE``); ``pretrain_dirs`` are pretraining
    run directories whose loss curves to plot.

    Writes into ``out_dir``: ``report.html`` (one self-contained page), ``report.md`` with
    ``figures/``, and ``tables.tex``. Returns their paths by kind (``{"md": ..., "html":
    ..., "tex": ...}``). A store path that does not exist raises
    :class:`~speechssl.errors.ConfigError` (nothing is created).
    """
    from speechssl.benchmark.report import write_report

    with _opened(store, create=False) as opened:
        rows, runs = opened.scores(), opened.runs()
    return write_report(out_dir, rows, runs, pretrain_dirs=pretrain_dirs, title=title)


@contextmanager
def _opened(store: StoreLike | None, *, create: bool) -> Iterator[ResultStore]:
    """``store`` itself when it is an open :class:`ResultStore` (left open), else the store
    at that path (or the default one), closed afterwards."""
    if isinstance(store, ResultStore):
        yield store
        return
    if store is not None and not isinstance(store, (str, os.PathLike)):
        raise ConfigError(f"store must be a ResultStore or the path of one, got {type(store).__name__}")
    with ResultStore(store, create=create) as opened:
        yield opened
