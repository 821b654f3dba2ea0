"""Pretraining on SLURM (or submitit's local executor) through submitit, with requeue.

``speechssl pretrain CONFIG --out DIR --executor slurm --slurm partition=gpu --slurm nodes=2``
submits one job of ``slurm.nodes`` x ``tasks_per_node`` processes (one per GPU). Each process
runs :class:`PretrainJob`, which exports the torch.distributed rendezvous (MASTER_ADDR/PORT,
RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE) from submitit's ``JobEnvironment`` and calls
:func:`speechssl.pretrain.pretrain`: the trainer's torchrun path, unchanged.

Preemption and time limits. SLURM sends SIGUSR2 ``slurm.signal_delay_s`` seconds before the
time limit (submitit's ``--signal``); submitit's own handler would checkpoint the callable and
requeue at once. While training runs, the trainer takes the signal instead: it finishes the
update in progress, writes a step checkpoint (every rank agrees on which update), and only then
hands over to submitit's handler, which calls :meth:`PretrainJob.checkpoint` and requeues the
job. The requeued job is the same callable on the same ``--out``: the trainer resumes from its
newest checkpoint (model, optimizer, scaler, sampler position, step counter), exactly as a rerun
of the command would. SIGTERM (sent first when SLURM preempts a job, and ignored by submitit)
makes the trainer write a checkpoint after the current update and keep going, so a kill that
follows loses at most one update. Nothing but the output directory carries state between
attempts.

Only :class:`SlurmConfig` is needed at import time (it is a section of ``PretrainConfig``);
submitit and torch are imported when a job is submitted or run.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speechssl.config import param
from speechssl.errors import ConfigError

EXECUTORS = ("local", "slurm", "submitit-local")
"""``local`` runs in this process (as torchrun's worker if under torchrun); the other two go
through submitit (``submitit-local``: submitit's local executor, same code path, for tests)."""


@dataclass
class SlurmConfig:
    """Where and how ``--executor slurm`` runs (also read by ``submitit-local`` where it applies)."""

    partition: str = param("", help="SLURM partition (empty = the cluster default)")
    account: str = param("", help="SLURM account to charge (empty = your default)")
    qos: str = param("", help="SLURM quality of service (empty = the default)")
    constraint: str = param("", help="SLURM node features, e.g. a100 (empty = any)")
    time_min: int = param(1440, gt=0, help="time limit of each job attempt, minutes (a requeue starts a new one)")
    nodes: int = param(1, min=1, help="nodes; the world size is nodes x tasks_per_node")
    gpus_per_node: int = param(1, min=0, help="GPUs per node")
    tasks_per_node: int = param(0, min=0, help="processes per node (0 = one per GPU, or 1 without GPUs)")
    cpus_per_task: int = param(8, min=1, help="CPU cores per process (also its torch threads)")
    mem_gb: float = param(0.0, min=0.0, help="memory per node, GB (0 = the cluster default)")
    signal_delay_s: int = param(
        120, min=10, help="SIGUSR2 this many seconds before the time limit: room for one update + a checkpoint"
    )
    max_timeouts: int = param(20, min=0, help="requeues after hitting the time limit (preemptions do not count)")
    extra: dict[str, Any] = param(
        default_factory=dict, help="more sbatch options, e.g. {mail-type: END, exclusive: true}"
    )

    def processes_per_node(self) -> int:
        return self.tasks_per_node or max(1, self.gpus_per_node)


@dataclass
class PretrainJob:
    """The callable a submitit job runs: one pretraining process of a (possibly multi-node) run.

    Checkpointable the submitit way (it has :meth:`checkpoint`): on preemption or timeout
    submitit pickles what :meth:`checkpoint` returns and requeues it. The state that matters
    lives in ``out_dir``; the callable only carries the config.
    """

    config: dict[str, Any]
    out_dir: str
    threads: int = 0

    def __call__(self) -> dict[str, Any]:
        import submitit
        import torch

        from speechssl.config import from_dict
        from speechssl.pretrain.config import PretrainConfig
        from speechssl.pretrain.signals import SAVE, STOP, TrainingInterrupted, signal_name
        from speechssl.pretrain.trainer import pretrain

        env = submitit.JobEnvironment()
        export_rendezvous(env)
        if self.threads:
            torch.set_num_threads(self.threads)
        cfg = from_dict(PretrainConfig, self.config)
        preempt = env._usr_sig()  # SIGUSR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise
        actions = {signal.SIGTERM: SAVE, preempt: STOP}
        try:
            result = pretrain(cfg, self.out_dir, progress=False, stop_signals=actions)
        except TrainingInterrupted as exc:
            print(f"pretrain: {signal_name(exc.signum)} after update {exc.step}: checkpoint {exc.checkpoint} "
                  "written; requeueing through submitit", file=sys.stderr, flush=True)
            handler = signal.getsignal(preempt)  # submitit's again, now that the trainer is done
            if env.global_rank == 0 and callable(handler):
                # submitit's preemption path: calls self.checkpoint(), pickles it, requeues the
                # job and exits. Other ranks just return; the requeue restarts all of them.
                handler(preempt, None)
            if env.global_rank == 0:
                raise
            return {"interrupted": True, "step": exc.step, "checkpoint": str(exc.checkpoint)}
        return {
            "step": result.state.step,
            "last_checkpoint": str(result.last_checkpoint) if result.last_checkpoint else None,
            "best_checkpoint": str(result.best_checkpoint) if result.best_checkpoint else None,
            "summary": result.summary,
            "hours_seen": result.state.seconds_seen / 3600,
        }

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called by submitit on preemption/timeout: the same run again; the requeued job
        resumes from the newest checkpoint in ``out_dir``."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(PretrainJob(self.config, self.out_dir, threads=self.threads))


def export_rendezvous(env: Any) -> None:
    """torch.distributed's env:// variables from submitit's job environment (several tasks only)."""
    if env.num_tasks <= 1:
        return
    from submitit.helpers import TorchDistributedEnvironment

    rendezvous = TorchDistributedEnvironment()  # port: MASTER_PORT if set, else seeded by the job id
    if env.cluster == "local":
        rendezvous.master_addr = "127.0.0.1"
    # The trainer picks cuda:LOCAL_RANK, so every task keeps seeing all of the node's GPUs.
    rendezvous.export(set_cuda_visible_devices=False, overwrite=True)


def executor_parameters(slurm: SlurmConfig, cluster: str, name: str) -> dict[str, Any]:
    """submitit ``AutoExecutor.update_parameters`` keywords for ``slurm`` on ``cluster``."""
    params: dict[str, Any] = {
        "name": name,
        "timeout_min": slurm.time_min,
        "nodes": slurm.nodes,
        "tasks_per_node": slurm.processes_per_node(),
        "cpus_per_task": slurm.cpus_per_task,
        "gpus_per_node": slurm.gpus_per_node,
    }
    if slurm.mem_gb:
        params["mem_gb"] = slurm.mem_gb
    if cluster == "slurm":
        params["slurm_signal_delay_s"] = slurm.signal_delay_s
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(slurm, key):
                params[f"slurm_{key}"] = getattr(slurm, key)
        if slurm.extra:
            params["slurm_additional_parameters"] = dict(slurm.extra)
    elif slurm.nodes > 1:
        raise ConfigError(f"slurm.nodes={slurm.nodes}: submitit-local runs on this machine only (nodes=1)")
    return params


def make_executor(cfg: Any, out_dir: str | Path, executor: str = "slurm") -> Any:
    """The submitit ``AutoExecutor`` for run ``cfg`` -> ``out_dir`` with ``cfg.slurm``'s resources.

    Logs and submitit's pickles go to ``out_dir/submitit/<job id>/``.
    """
    if executor not in EXECUTORS or executor == "local":
        raise ConfigError(f"executor must be slurm or submitit-local here, got {executor!r}")
    try:
        import submitit
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ConfigError("the slurm executor needs submitit (pip install submitit)") from exc
    out = Path(out_dir)
    cluster = "local" if executor == "submitit-local" else "slurm"
    s: SlurmConfig = cfg.slurm
    ex = submitit.AutoExecutor(folder=out / "submitit" / "%j", cluster=cluster,
                               **{f"{cluster}_max_num_timeout": s.max_timeouts})
    ex.update_parameters(**executor_parameters(s, cluster, f"speechssl-pretrain-{out.resolve().name}"))
    return ex


def submit_pretrain(cfg: Any, out_dir: str | Path, *, executor: str = "slurm", fresh: bool = False) -> Any:
    """Submit the pretraining run ``cfg`` -> ``out_dir`` as one submitit job; returns the job."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("--executor submits a job from a login node; do not run it under torchrun")
    from speechssl.config import check, to_dict

    check(cfg)
    ex = make_executor(cfg, out_dir, executor)
    if fresh:
        # Here, once: a job that SLURM itself requeues (preemption) reruns its original pickle,
        # which must resume, not start over. The same deletions as Trainer.run(fresh=True).
        for name in ("checkpoints", "tensorboard"):
            shutil.rmtree(Path(out_dir) / name, ignore_errors=True)
    return ex.submit(PretrainJob(to_dict(cfg), str(out_dir), threads=cfg.slurm.cpus_per_task))


def wait_for_job(job: Any) -> dict[str, Any]:
    """Block until ``job`` (from :func:`submit_pretrain`) ends, requeues included; rank 0's result.

    A failed or abandoned job raises :class:`~speechssl.errors.SpeechSSLError` naming its logs.
    """
    from speechssl.errors import SpeechSSLError

    try:
        results = job.results()
    except Exception as exc:  # noqa: BLE001 - submitit's FailedJobError / UncompletedJobError
        last = str(exc).strip().splitlines()[-1:] or [type(exc).__name__]
        raise SpeechSSLError(f"pretraining job {job.job_id} failed: {last[0]} (logs: {job.paths.folder})") from exc
    return results[0]
