"""Sweeps: a grid of benchmark runs that survives crashes, kills and reruns.

A sweep spec (YAML, typed by :class:`SweepConfig`) crosses upstreams x ``task:probe``
pairs x seeds x any extra ``grid`` axes (dotted bench-config keys). Each cell is one
:class:`~speechssl.downstream.config.BenchConfig`, keyed by its config hash, which is
also its run id in the result store. Rerunning a sweep skips every cell the store
already holds as finished, so a sweep killed at any point (even SIGKILL) resumes
where it stopped; a cell whose ``result.json`` was written but not yet stored is
picked up without retraining (``run_bench`` reuses a finished result of the same
config). Failed cells are stored with their error and rerun only with
``--retry-failed``. Cells lost with a pool worker that was killed (SIGKILL, the OOM killer:
the whole pool breaks) are not failures of their own: they stay ``pending`` with the error,
and a plain rerun runs them.

Only the driver process writes the store: workers return their result. So the
store may stay on a local disk while SLURM workers run elsewhere, and a worker that
dies never leaves a half-written row.

Executors: ``local`` (a process pool of ``--workers`` processes, each with its share
of the CPU threads) and ``slurm`` through submitit (``--executor slurm``;
``--executor submitit-local`` runs the same code path on this machine, for tests).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from speechssl.benchmark.store import ResultStore, error_line, result_to_records, training_data
from speechssl.config import config_hash, from_dict, param, to_dict
from speechssl.downstream.config import BenchConfig, parse_regime, regime_label, settings_for_task
from speechssl.errors import ConfigError

EXECUTORS = ("local", "slurm", "submitit-local")


@dataclass
class SlurmConfig:
    partition: str = param("", help="SLURM partition (empty = the cluster default)")
    time_min: int = param(60, gt=0, help="time limit of each job, minutes")
    gpus: int = param(0, min=0, help="GPUs per job")
    cpus: int = param(4, gt=0, help="CPU cores per job")
    mem_gb: float = param(16.0, gt=0.0, help="memory per job, GB")
    array_parallelism: int = param(32, gt=0, help="jobs of the array running at once")


@dataclass
class SweepConfig:
    name: str = param("", help="sweep name (default: the spec file's stem)")
    out: str = param("", help="run directories go under here (default: runs/sweeps/<name>)")
    store: str = param("", help="the result store, a SQLite file (default: runs/results.db or $SPEECHSSL_STORE)")
    upstreams: list[str] = param(default_factory=lambda: ["mfcc"], help="upstream specs to compare")
    runs: list[str] = param(default_factory=lambda: ["lid:mean_linear"], help="task:probe pairs run for every upstream")
    seeds: list[int] = param(default_factory=lambda: [0], help="probe training seeds")
    regimes: list[str] = param(
        default_factory=lambda: ["frozen"],
        help="adaptation regimes: frozen, full, partial-bottom|middle|top[K], adapter, lora (settings under adapt.*)",
    )
    grid: dict[str, list[Any]] = param(
        default_factory=dict, help="extra axes: dotted bench keys -> values, e.g. {featurizer.layer: [null, 2]}"
    )
    settings: BenchConfig = field(default_factory=BenchConfig)
    task_settings: dict[str, list[str]] = param(
        default_factory=dict, help="per-task dotted overrides of settings, e.g. {asr: [train.lr=1e-2]}"
    )
    slurm: SlurmConfig = field(default_factory=SlurmConfig)

    def validate(self) -> None:
        for label, values in (("upstreams", self.upstreams), ("runs", self.runs), ("seeds", self.seeds),
                              ("regimes", self.regimes)):
            if not values:
                raise ConfigError(f"{label}: needs at least one entry")
            if len(set(map(str, values))) != len(values):
                raise ConfigError(f"{label}: has repeated entries {values}")
        for run in self.runs:
            task, colon, probe = run.partition(":")
            if not colon or not task or not probe:
                raise ConfigError(f"runs: expected task:probe, got {run!r}")
        for regime in self.regimes:
            parse_regime(regime)
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"grid.{key}: needs a non-empty list of values")


@dataclass
class Cell:
    """One run of the grid."""

    cfg: BenchConfig
    key: str  # config hash = run id in the store
    run_dir: Path
    label: str


def plan_sweep(cfg: SweepConfig, *, name: str = "sweep") -> list[Cell]:
    """Every cell of the grid, validated before any work starts."""
    name = cfg.name or name
    out = Path(cfg.out or f"runs/sweeps/{name}")
    axes = list(cfg.grid.items())
    cells: list[Cell] = []
    for upstream, run, regime, seed, *values in itertools.product(cfg.upstreams, cfg.runs, cfg.regimes, cfg.seeds,
                                                                  *(v for _, v in axes)):
        task, _, probe = run.partition(":")
        data = to_dict(settings_for_task(cfg.settings, task, cfg.task_settings))
        data.update(upstream=upstream, task=task, probe=probe, seed=seed)
        for override in parse_regime(regime):
            key, _, value = override.partition("=")
            _set_dotted(data, key, int(value) if value.isdigit() else value)
        extra = [] if regime == "frozen" else [regime]
        for (key, _), value in zip(axes, values):
            _set_dotted(data, key, value)
            extra.append(f"{key.rsplit('.', 1)[-1]}{value}")
        bench = from_dict(BenchConfig, data, prefix="settings")
        label = "-".join([_slug(upstream), task, probe, *map(_slug, extra), f"seed{seed}"])
        cells.append(Cell(bench, config_hash(bench), out / label, label))
    keys = [c.key for c in cells]
    if len(set(keys)) != len(keys):
        raise ConfigError("the grid has cells with identical configs (a repeated value?)")
    return cells


def check_cells(cells: list[Cell]) -> None:
    """Refuse missing data, unknown upstreams/tasks/probes and unfit task-probe pairs before running anything."""
    from speechssl.downstream.probes import check_probe
    from speechssl.downstream.tasks import task_class
    from speechssl.upstream import parse_spec

    problems = [f"settings.data: data directory {data} does not exist"
                for data in dict.fromkeys(c.cfg.data for c in cells) if not Path(data).is_dir()]
    for cell in cells:
        try:
            parse_spec(cell.cfg.upstream)
            check_probe(cell.cfg.probe, task_class(cell.cfg.task).needs)
        except ConfigError as exc:
            problems.append(f"{cell.label}: {exc}")
    if problems:
        raise ConfigError("sweep has invalid cells:\n  " + "\n  ".join(dict.fromkeys(problems)))


@dataclass
class SweepReport:
    cells: int = 0
    skipped: int = 0  # finished before this invocation
    finished: int = 0
    failed: int = 0
    interrupted: int = 0  # lost with a worker that died (SIGKILL, OOM): left pending, a rerun runs them
    skipped_failed: int = 0  # failed earlier, not retried
    errors: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"{self.cells} cells", f"{self.skipped} already done", f"{self.finished} finished now",
                 f"{self.failed} failed"]
        if self.interrupted:
            parts.append(f"{self.interrupted} interrupted by a dead worker (a rerun runs them)")
        if self.skipped_failed:
            parts.append(f"{self.skipped_failed} failed earlier (rerun with --retry-failed)")
        lines = [", ".join(parts)]
        lines += [f"  {'INTERRUPTED' if err.startswith('interrupted:') else 'FAILED'} {label}: {error_line(err)}"
                  for label, err in self.errors.items()]
        return "\n".join(lines)


def run_sweep(cfg: SweepConfig, *, name: str = "sweep", executor: str = "local", workers: int = 1,
              retry_failed: bool = False, log: Callable[[str], None] = print) -> SweepReport:
    """Run every cell not yet finished in the store; returns what happened."""
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; one of {', '.join(EXECUTORS)}")
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    cells = plan_sweep(cfg, name=name)
    check_cells(cells)
    store = ResultStore(cfg.store or None)
    report = SweepReport(cells=len(cells))
    todo: list[Cell] = []
    for cell in cells:
        known = store.get_run(cell.key)
        if known is not None and known["status"] == "finished":
            report.skipped += 1
        elif known is not None and known["status"] == "failed" and not retry_failed:
            report.skipped_failed += 1
            report.errors[cell.label] = known["error"] or "failed"
        else:
            todo.append(cell)
            store.put_run({"run_id": cell.key, "config_hash": cell.key, "upstream": cell.cfg.upstream,
                           "task": cell.cfg.task, "probe": cell.cfg.probe, "seed": cell.cfg.seed,
                           "regime": regime_label(cell.cfg),
                           "dataset": training_data({"data": cell.cfg.data, "train_split": cell.cfg.train_split}), "status": "pending", "source": "sweep",
                           "result_path": str(cell.run_dir / "result.json")}, replace_scores=False)
    log(f"sweep: {len(cells)} cells, {report.skipped} done, {len(todo)} to run ({executor}, {workers} worker(s))")

    def record(cell: Cell, outcome: dict[str, Any]) -> None:
        if outcome.get("interrupted"):
            # Not the cell's verdict: every cell of a pool whose worker died ends up here.
            report.interrupted += 1
            report.errors[cell.label] = outcome["error"]
            store.set_status(cell.key, "pending", error=outcome["error"], count_attempt=True)
            log(f"  interrupted {cell.label}: {error_line(outcome['error'])} (left pending)")
            return
        if "error" in outcome:
            report.failed += 1
            report.errors[cell.label] = outcome["error"]
            store.set_status(cell.key, "failed", error=outcome["error"], count_attempt=True)
            log(f"  failed   {cell.label}: {error_line(outcome['error'])}")
            return
        run, scores = result_to_records(outcome["result"], source="sweep", result_path=cell.run_dir / "result.json")
        run["run_id"] = cell.key  # the sweep's key, even if the runner's hash differs in a field it fills
        store.put_run(run, scores)
        report.finished += 1
        primary = outcome["result"]["primary_metric"]
        log(f"  finished {cell.label}: {primary} {outcome['result']['metrics'][primary]:.4f} "
            f"({report.skipped + report.finished}/{len(cells)})")

    if todo:
        if executor == "local":
            _run_local(todo, workers, record)
        else:
            _run_submitit(todo, cfg, name, executor, record)
    store.close()
    return report


# ---------------------------------------------------------------- executors


def run_cell(cfg_data: dict[str, Any], run_dir: str, threads: int = 0) -> dict[str, Any]:
    """Worker entry point: one bench run. Returns {"result": ...} or {"error": traceback}."""
    try:
        import torch

        if threads > 0:
            torch.set_num_threads(threads)
        from speechssl.downstream.runner import run_bench

        cfg = from_dict(BenchConfig, cfg_data)
        return {"result": run_bench(cfg, run_dir, progress=False)}
    except Exception:  # noqa: BLE001 - a cell's failure is data for the store, not a crash of the sweep
        return {"error": traceback.format_exc(limit=8)}


def _die_with_parent(parent: int) -> None:
    # A pool worker outliving a SIGKILLed driver would keep training a cell that the
    # restarted sweep runs again; it exits as soon as its parent is gone.
    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(1.0)

    threading.Thread(target=watch, daemon=True).start()


def _run_local(cells: list[Cell], workers: int, record: Callable[[Cell, dict[str, Any]], None]) -> None:
    import multiprocessing

    threads = max(1, (os.cpu_count() or 1) // workers)
    # spawn, not fork: the driver may hold torch/OpenMP state that a fork would corrupt.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_die_with_parent,
                             initargs=(os.getpid(),)) as pool:
        pending: dict[Future, Cell] = {
            pool.submit(run_cell, to_dict(c.cfg), str(c.run_dir), threads): c for c in cells
        }
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                cell = pending.pop(future)
                try:
                    outcome = future.result()
                except BrokenProcessPool as exc:  # a worker was killed (OOM killer, SIGKILL): the pool is gone
                    outcome = {"error": f"interrupted: worker died: {type(exc).__name__}: {exc}", "interrupted": True}
                except Exception as exc:  # noqa: BLE001 - the cell's result could not be returned
                    outcome = {"error": f"worker died: {type(exc).__name__}: {exc}"}
                record(cell, outcome)


def _run_submitit(cells: list[Cell], cfg: SweepConfig, name: str, executor: str,
                  record: Callable[[Cell, dict[str, Any]], None]) -> None:
    from speechssl.extras import require

    submitit = require("submitit", f"the {executor} executor")  # the [slurm] extra
    folder = Path(cfg.out or f"runs/sweeps/{cfg.name or name}") / "submitit" / "%j"
    cluster = "local" if executor == "submitit-local" else "slurm"
    ex = submitit.AutoExecutor(folder=folder, cluster=cluster)
    s = cfg.slurm
    params: dict[str, Any] = {"timeout_min": s.time_min, "cpus_per_task": s.cpus, "mem_gb": s.mem_gb,
                              "gpus_per_node": s.gpus, "name": f"speechssl-{cfg.name or name}"}
    if cluster == "slurm":
        params["slurm_array_parallelism"] = s.array_parallelism
        if s.partition:
            params["slurm_partition"] = s.partition
    ex.update_parameters(**params)
    threads = s.cpus if cluster == "slurm" else 1
    jobs = [ex.submit(run_cell, to_dict(c.cfg), str(c.run_dir), threads) for c in cells]
    pending = dict(zip(jobs, cells))
    while pending:
        for job in [j for j in pending if j.done()]:
            cell = pending.pop(job)
            try:
                outcome = job.result()
            except Exception as exc:  # noqa: BLE001 - job killed, timed out, node failure
                outcome = {"error": f"job {job.job_id} failed: {type(exc).__name__}: {exc}"}
            record(cell, outcome)
        if pending:
            time.sleep(1.0)


# ---------------------------------------------------------------- helpers


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            raise ConfigError(f"grid.{key}: {part!r} is not a section of the bench config")
        node = child
    if parts[-1] not in node:
        raise ConfigError(f"grid.{key}: unknown bench config key (see `speechssl config-keys bench`)")
    node[parts[-1]] = value


def _slug(text: Any) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "._" else "_" for ch in str(text))
    return keep.strip("_") or "x"
