"""Scale-out of pretraining: 2-process gloo DDP, SIGTERM/SIGUSR2 checkpoints, submitit requeue.

All runs share one tiny config with updates of 12 s = 2 micro-batches of 6 s: one process
accumulates 2 micro-batches, two DDP processes take one each. Every process runs on one thread,
so runs of the same layout are bit-for-bit comparable across processes.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest
import torch

from conftest import TINY_RUN, TINY_W2V2

from speechssl.cli import main
from speechssl.config import load_config
from speechssl.errors import ConfigError
from speechssl.pretrain import PretrainConfig, pretrain, read_metrics
from speechssl.pretrain.checkpoint import load_checkpoint, step_checkpoints
from speechssl.pretrain.launch import executor_parameters, make_executor, submit_pretrain, wait_for_job
from speechssl.pretrain.mfu import VOLATILE_RECORD_KEYS
from speechssl.pretrain.signals import SAVE, StopSignals

ROOT = Path(__file__).resolve().parents[1]
STEPS = 10
FIRST_SAVE = 3  # preempt once step_00000003.pt exists
RUN = [*TINY_W2V2, "wav2vec2.num_negatives=10", *TINY_RUN, "data.valid_split=", f"steps={STEPS}",
       f"save_every={FIRST_SAVE}", "keep_last=10", "batch_seconds=12", "data.micro_batch_seconds=6"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}


def run_args(corpus: Path, *extra: str) -> list[str]:
    return [*RUN, f"data.dir={corpus}", *extra]


def comparable(records: list[dict]) -> list[dict]:
    """Records without the wall-clock fields, the only ones that may differ between identical runs."""
    return [{k: v for k, v in r.items() if k not in VOLATILE_RECORD_KEYS} for r in records]


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(out / f"checkpoints/step_{STEPS:08d}.pt")["model"]


def assert_identical_runs(a: Path, b: Path) -> None:
    assert comparable(read_metrics(a)) == comparable(read_metrics(b))
    wa, wb = final_weights(a), final_weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def wait_for(path: Path, what: str, timeout: float = 120.0, alive=lambda: True) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline and alive(), f"{what} never wrote {path.name}"
        time.sleep(0.02)


def child_pids(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent:
            found.append(int(stat.parent.name))
    return found


def process_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").partition("=")[::2] for item in raw if b"=" in item)


@pytest.fixture(scope="module")
def single(tiny_corpus, tmp_path_factory) -> Path:
    """One process, 2 micro-batches per update, never interrupted: the reference."""
    out = tmp_path_factory.mktemp("single") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pretrain(load_config(PretrainConfig, None, run_args(tiny_corpus)), out, progress=False)
    finally:
        torch.set_num_threads(threads)
    return out


RANK_SCRIPT = """
import hashlib, os, sys
from pathlib import Path
import torch
from speechssl.config import load_config
from speechssl.memory import bound_shape_caches
from speechssl.pretrain import PretrainConfig
from speechssl.pretrain.trainer import Trainer

bound_shape_caches()
out = Path(sys.argv[1])
trainer = Trainer(load_config(PretrainConfig, None, sys.argv[2:]), out, progress=False)
try:
    trainer.run(fresh=False)
    weights = trainer.model.state_dict()
    digest = hashlib.sha256(b"".join(weights[k].numpy().tobytes() for k in sorted(weights)))
    (out / f"rank{os.environ['RANK']}.sha256").write_text(digest.hexdigest())
finally:
    trainer.close()
"""


@pytest.fixture(scope="module")
def ddp(tiny_corpus, tmp_path_factory) -> Path:
    """``torchrun --standalone --nproc_per_node 2`` on gloo, each rank recording a hash of its weights."""
    tmp = tmp_path_factory.mktemp("ddp")
    script = tmp / "rank.py"
    script.write_text(RANK_SCRIPT)
    out = tmp / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
         str(out), *run_args(tiny_corpus)],
        env=ENV, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


# ---------------------------------------------------------------- DDP


def test_ddp_gloo_two_ranks_agree_and_equal_one_process_accumulating(ddp, single):
    assert [s for s, _ in step_checkpoints(ddp / "checkpoints")][-1] == STEPS
    rank0, rank1 = (ddp / "rank0.sha256").read_text(), (ddp / "rank1.sha256").read_text()
    assert rank0 == rank1, "the two ranks ended with different weights"
    saved = final_weights(ddp)
    assert hashlib.sha256(b"".join(saved[k].numpy().tobytes() for k in sorted(saved))).hexdigest() == rank0
    # 2 processes x 1 micro-batch = 1 process x 2 micro-batches (trainer docstring): the same
    # batches, masks and noise, so the same per-micro-batch gradients; DDP's (g0 / 2 + g1 / 2) is
    # the accumulated g0 / 2 + g1 / 2, bit for bit (halving is exact, a sum of two commutes). With
    # more processes or a world size that is not a power of two only rounding may differ.
    # hours_by_language is rank 0's count x world size under DDP (TrainState): an estimate.
    def same(records):
        return [{k: v for k, v in r.items() if k != "hours_by_language"} for r in comparable(records)]

    assert len(read_metrics(ddp)) == STEPS
    assert same(read_metrics(ddp)) == same(read_metrics(single))
    reference = final_weights(single)
    assert all(torch.equal(reference[k], saved[k]) for k in saved)


# ---------------------------------------------------------------- signals in a plain run


def test_sigterm_finishes_the_update_checkpoints_and_resumes_exactly(tiny_corpus, tmp_path, single, one_thread):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "speechssl.cli", "pretrain", "--out", str(out), "--no-progress",
                             *run_args(tiny_corpus)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    wait_for(out / f"checkpoints/step_{FIRST_SAVE:08d}.pt", "the run", alive=lambda: proc.poll() is None)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "got SIGTERM: finishing this update" in stderr
    stopped = max(s for s, _ in step_checkpoints(out / "checkpoints"))
    assert FIRST_SAVE <= stopped < STEPS, stderr
    assert f"pretrain: stopped by SIGTERM after update {stopped}; checkpoint" in stderr
    assert load_checkpoint(out / f"checkpoints/step_{stopped:08d}.pt")["train_state"]["step"] == stopped
    assert [r["step"] for r in read_metrics(out)] == list(range(1, stopped + 1))

    result = pretrain(load_config(PretrainConfig, None, run_args(tiny_corpus)), out, progress=False)
    assert result.state.step == STEPS
    assert_identical_runs(out, single)


def test_save_signal_checkpoints_mid_run_and_training_continues(tiny_corpus, tmp_path, single, one_thread,
                                                               monkeypatch):
    from speechssl.pretrain.trainer import Trainer

    original = Trainer._update

    def update(self, model, stream, step):
        if step == 4:
            os.kill(os.getpid(), signal.SIGUSR1)  # handled at the next bytecode: mid-update
        return original(self, model, stream, step)

    monkeypatch.setattr(Trainer, "_update", update)
    previous = signal.getsignal(signal.SIGUSR1)
    out = tmp_path / "run"
    cfg = load_config(PretrainConfig, None, run_args(tiny_corpus, "save_every=100"))
    result = pretrain(cfg, out, progress=False, stop_signals={signal.SIGUSR1: SAVE})
    assert result.state.step == STEPS
    assert [s for s, _ in step_checkpoints(out / "checkpoints")] == [5, STEPS]
    assert signal.getsignal(signal.SIGUSR1) is previous  # handlers restored
    assert_identical_runs(out, single)


def test_second_stop_signal_falls_back_to_the_previous_handler():
    calls = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: calls.append(signum))
    try:
        with StopSignals({signal.SIGUSR1: "stop"}) as stop:
            os.kill(os.getpid(), signal.SIGUSR1)
            assert stop.requested == ("stop", signal.SIGUSR1) and calls == []
            os.kill(os.getpid(), signal.SIGUSR1)
            assert calls == [signal.SIGUSR1]
        os.kill(os.getpid(), signal.SIGUSR1)
        assert calls == [signal.SIGUSR1] * 2
    finally:
        signal.signal(signal.SIGUSR1, previous)


# ---------------------------------------------------------------- submitit


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_submitit_local_two_task_job_requeues_on_preemption_and_resumes_exactly(tiny_corpus, tmp_path, ddp,
                                                                               monkeypatch):
    """The `--executor submitit-local` path: 2 tasks (gloo DDP through submitit's JobEnvironment),
    SIGUSR2 (SLURM's pre-timeout signal) to rank 1 only after the first checkpoint: both ranks
    stop after the same update, rank 0 checkpoints, submitit requeues, the new attempt resumes
    from that checkpoint, and the run ends bit for bit like the uninterrupted torchrun run."""
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))  # else seeded by the job id (submitit's default)
    out = tmp_path / "run"
    cfg = load_config(PretrainConfig, None, [*run_args(tiny_corpus), "slurm.tasks_per_node=2", "slurm.gpus_per_node=0",
                                             "slurm.cpus_per_task=1", "slurm.time_min=30"])
    job = submit_pretrain(cfg, out, executor="submitit-local")
    controller = job._process
    wait_for(out / f"checkpoints/step_{FIRST_SAVE:08d}.pt", "the job", alive=lambda: controller.poll() is None)
    tasks = {int(process_env(pid).get("SUBMITIT_LOCAL_GLOBALID", -1)): pid for pid in child_pids(controller.pid)}
    assert set(tasks) == {0, 1}, tasks
    os.kill(tasks[1], signal.SIGUSR2)
    outcome = wait_for_job(job)
    assert outcome["step"] == STEPS and outcome["last_checkpoint"].endswith(f"step_{STEPS:08d}.pt")

    logs = {path.name: path.read_text() for path in Path(job.paths.folder).glob("*_log.*")}
    rank0_out, rank0_err = logs[f"{job.job_id}_0_log.out"], logs[f"{job.job_id}_0_log.err"]
    assert "Requeued job" in rank0_out, rank0_out
    assert "this job is preempted" in rank0_err + rank0_out
    assert "got SIGUSR2" in logs[f"{job.job_id}_1_log.err"]
    stopped = [line for line in rank0_err.splitlines() if "requeueing through submitit" in line]
    assert len(stopped) == 1 and stopped[0].startswith("pretrain: SIGUSR2 after update "), rank0_err
    step = int(stopped[0].split("after update ")[1].split(":")[0])
    assert FIRST_SAVE <= step < STEPS
    assert f"pretrain: resuming at step {step};" in rank0_err  # the requeued attempt, from the checkpoint
    assert_identical_runs(out, ddp)


# ---------------------------------------------------------------- parameters and CLI


def test_slurm_options_become_sbatch_flags(tmp_path):
    from submitit.slurm.slurm import SlurmExecutor

    cfg = load_config(PretrainConfig, None, [
        "slurm.partition=gpu", "slurm.account=speech", "slurm.qos=high", "slurm.nodes=2", "slurm.gpus_per_node=8",
        "slurm.cpus_per_task=10", "slurm.mem_gb=400", "slurm.time_min=720", "slurm.extra={mail-type: END}"])
    with mock.patch.object(SlurmExecutor, "affinity", return_value=1):  # as if srun were installed
        ex = make_executor(cfg, tmp_path / "run", "slurm")
    text = ex._executor._make_submission_file_text("python -m submitit.core._submit F", "uid")
    for flag in ("--partition=gpu", "--account=speech", "--qos=high", "--nodes=2", "--ntasks-per-node=8",
                 "--gpus-per-node=8", "--cpus-per-task=10", "--mem=400GB", "--time=720", "--signal=USR2@120",
                 "--mail-type=END", "--job-name=speechssl-pretrain-run"):
        assert f"#SBATCH {flag}\n" in text, flag
    assert ex._executor.max_num_timeout == cfg.slurm.max_timeouts
    with pytest.raises(ConfigError, match="nodes=2"):
        executor_parameters(cfg.slurm, "local", "x")


def test_cli_submits_with_slurm_options(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_submit(cfg, out_dir, *, executor, fresh):
        seen.update(cfg=cfg, out=out_dir, executor=executor, fresh=fresh)
        return mock.Mock(job_id="4242", paths=mock.Mock(folder=Path(out_dir) / "submitit/4242"))

    monkeypatch.setattr("speechssl.pretrain.launch.submit_pretrain", fake_submit)
    code = main(["pretrain", "--out", str(tmp_path / "run"), "--executor", "slurm", "--slurm", "partition=gpu",
                 "--slurm", "nodes=2", "--slurm", "gpus_per_node=4", "--fresh", "steps=7"])
    assert code == 0
    assert (seen["executor"], seen["fresh"], seen["cfg"].steps) == ("slurm", True, 7)
    assert (seen["cfg"].slurm.partition, seen["cfg"].slurm.nodes, seen["cfg"].slurm.gpus_per_node) == ("gpu", 2, 4)
    assert "submitted pretraining job 4242 (slurm, 2 node(s) x 4 process(es))" in capsys.readouterr().out
    assert main(["pretrain", "--out", str(tmp_path / "run"), "--executor", "slurm", "--slurm", "partition"]) == 2
    assert main(["pretrain", "--out", str(tmp_path / "run"), "--executor", "slurm", "--init-only"]) == 2
