"""SIGKILL at chosen points (issue 17 items 1-2): every run resumes or reruns to the same end.

Each case runs one ``speechssl`` command in a subprocess through ``tests/faults/inject.py``,
which makes that process SIGKILL itself at the chosen point (half-way through writing a
file, after an update's backward pass, inside the stage switch, ...), then resumes or reruns
the command and checks

* pretraining: the metrics.jsonl records (every loss, bitwise on CPU) and the final weights
  equal an uninterrupted run's, and no torn checkpoint is loaded (the loader takes the newest
  complete one, with a warning for an unreadable one);
* bench, feature cache, targets, sweep, report: the rerun finishes, the result store holds the
  run exactly once, and no partial cache entry, target set, result or report is ever visible
  under its final name.

The uninterrupted reference runs and the resumes run in this process (no interpreter start);
only the killed run needs its own process.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from conftest import TINY_RUN, TINY_W2V2

from speechssl.config import load_config
from speechssl.pretrain import PretrainConfig, pretrain, read_metrics
from speechssl.pretrain.checkpoint import load_checkpoint, step_checkpoints
from speechssl.pretrain.mfu import VOLATILE_RECORD_KEYS

ROOT = Path(__file__).resolve().parents[2]
INJECT = Path(__file__).with_name("inject.py")
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}

pytestmark = pytest.mark.usefixtures("one_thread")

# Where "random" kills land: drawn at import from this seed (FAULTS_SEED=... draws others);
# the drawn update is in the test's id.
RNG = random.Random(int(os.environ.get("FAULTS_SEED", "17")))


def run_killed(fault: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``speechssl ARGS`` with FAULT injected; it must die of SIGKILL (not finish, not fail)."""
    proc = subprocess.run([sys.executable, str(INJECT), fault, *args], env=ENV, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == -signal.SIGKILL, (
        f"{fault}: exit status {proc.returncode}, expected death by SIGKILL\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


# ====================================================================== pretraining

ENCODER = [o for o in TINY_W2V2 if o.startswith("encoder.")]
COMMON = [*TINY_RUN, "data.num_workers=0", "health_utterances=0", "valid_every=3", "save_every=2"]
OBJECTIVES = {
    "wav2vec2": [*TINY_W2V2, "wav2vec2.num_negatives=10", "steps=6"],
    "hubert": [*ENCODER, "encoder.conv_norm=group_norm", "objective=hubert", "hubert.final_dim=16",
               "hubert.mask_prob=0.5", "hubert.unmasked_weight=1.0", "steps=6"],
}
# WavLabLM-style: HuBERT + denoising (utterance and noise mixing) + language-sampled stage 1
# of 3 updates, then 3 on the language-balanced subset (stage 2).
OBJECTIVES["wavlablm"] = [*OBJECTIVES["hubert"][:-1], "steps=3", "stage2.steps=3", "stage2.hours_per_language=0.002",
                          "data.language_alpha=0.5", "data.mixing.prob=0.5"]
TOTAL_STEPS = 6
VOLATILE = set(VOLATILE_RECORD_KEYS)
"""Record fields that measure the machine, not the run (time, memory, throughput, MFU)."""


@pytest.fixture(scope="module")
def targets(tiny_corpus, tmp_path_factory) -> Path:
    from speechssl.targets import build_targets

    out = tmp_path_factory.mktemp("targets")
    return build_targets("mfcc", tiny_corpus, out, k=8, frame_ms=20, splits=("train", "dev"),
                         max_fit_frames=2000, cache_dir=out / "cache")


def pretrain_args(objective: str, corpus: Path, targets: Path | None) -> list[str]:
    args = [*COMMON, *OBJECTIVES[objective], f"data.dir={corpus}"]
    if objective != "wav2vec2":
        args.append(f"hubert.targets=[{targets}]")
    if objective == "wavlablm":
        args.append(f"data.mixing.noise_dir={corpus / 'noise'}")
    return args


_STRAIGHT: dict[str, Path] = {}


def straight_run(objective: str, args: list[str], tmp_path_factory) -> Path:
    """The uninterrupted run of ``objective`` (once per module)."""
    if objective not in _STRAIGHT:
        out = tmp_path_factory.mktemp(f"straight-{objective}") / "run"
        pretrain(load_config(PretrainConfig, None, args), out, progress=False)
        _STRAIGHT[objective] = out
    return _STRAIGHT[objective]


def comparable(run: Path, split: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in read_metrics(run, split)]


def assert_same_run(resumed: Path, straight: Path) -> None:
    """Every logged number (losses bitwise) and the final weights equal the uninterrupted run's."""
    for split in ("train", "valid"):
        assert comparable(resumed, split) == comparable(straight, split), split
    assert [r["step"] for r in read_metrics(resumed)] == list(range(1, TOTAL_STEPS + 1))
    name = f"step_{TOTAL_STEPS:08d}.pt"
    a = load_checkpoint(resumed / "checkpoints" / name)["model"]
    b = load_checkpoint(straight / "checkpoints" / name)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not list((resumed / "checkpoints").glob(".*.tmp")), "a stale temp file survived the resume"


def assert_no_torn_checkpoint(run: Path) -> None:
    """Every checkpoint under its final name loads completely."""
    for path in (run / "checkpoints").glob("*.pt"):
        load_checkpoint(path)


def resume(args: list[str], out: Path) -> None:
    """The rerun of the killed command, in this process, with no fault."""
    with warnings.catch_warnings():
        # No unreadable checkpoint to skip: nothing torn lies under a final name.
        warnings.filterwarnings("error", message="skipping unreadable checkpoint")
        pretrain(load_config(PretrainConfig, None, args), out, progress=False)


def kill_pretraining(fault: str, objective: str, corpus: Path, targets: Path | None, out: Path) -> list[str]:
    args = pretrain_args(objective, corpus, targets)
    run_killed(fault, "pretrain", "--out", str(out), "--no-progress", *args)
    assert_no_torn_checkpoint(out)
    return args


def _half_written(out: Path, name: str) -> Path:
    """The temp file the killed writer left (proof the kill came mid-write), final name absent."""
    assert not (out / "checkpoints" / name).exists()
    (tmp,) = (out / "checkpoints").glob(f".{name}.*.tmp")
    assert tmp.stat().st_size > 0
    return tmp


def test_kill_mid_checkpoint_write_resumes_exactly_and_never_loads_the_torn_file(tiny_corpus, tmp_path,
                                                                              tmp_path_factory):
    """wav2vec 2.0, killed half-way through writing step 4's checkpoint. (a) as left: the torn
    bytes are only a temp file, removed on resume; (b) the torn bytes under the final name (a
    filesystem that lost the rename's atomicity): the loader skips it with a warning and takes
    step 2. Both resume to the same losses and weights as the uninterrupted run."""
    killed = tmp_path / "killed"
    args = kill_pretraining("checkpoint:step_00000004.pt", "wav2vec2", tiny_corpus, None, killed)
    torn = _half_written(killed, "step_00000004.pt")
    assert [s for s, _ in step_checkpoints(killed / "checkpoints")] == [2]
    straight = straight_run("wav2vec2", args, tmp_path_factory)

    renamed = tmp_path / "renamed"
    shutil.copytree(killed, renamed)
    os.replace(renamed / "checkpoints" / torn.name, renamed / "checkpoints" / "step_00000004.pt")

    resume(args, killed)
    assert_same_run(killed, straight)

    with pytest.warns(UserWarning, match="skipping unreadable checkpoint of step 4"):
        pretrain(load_config(PretrainConfig, None, args), renamed, progress=False)
    assert_same_run(renamed, straight)


@pytest.mark.faults
@pytest.mark.parametrize("objective,update",
                         [(o, RNG.randint(1, TOTAL_STEPS)) for o in OBJECTIVES] + [("wavlablm", 5)])
def test_kill_at_a_random_update_resumes_exactly(objective, update, tiny_corpus, targets, tmp_path, tmp_path_factory):
    """Killed after the backward pass of a randomly drawn update (between checkpoints, or
    before the first one), before its optimizer step; and WavLabLM mid stage 2 (update 5)."""
    out = tmp_path / "killed"
    args = kill_pretraining(f"update:{update}", objective, tiny_corpus, targets, out)
    assert len(read_metrics(out)) == update - 1
    resume(args, out)
    assert_same_run(out, straight_run(objective, args, tmp_path_factory))


@pytest.mark.faults
@pytest.mark.parametrize("objective", ["hubert", "wavlablm"])
def test_kill_mid_checkpoint_write_resumes_exactly(objective, tiny_corpus, targets, tmp_path, tmp_path_factory):
    """HuBERT mid step 4's checkpoint; WavLabLM mid step 3's, the stage boundary's checkpoint."""
    name = "step_00000003.pt" if objective == "wavlablm" else "step_00000004.pt"
    out = tmp_path / "killed"
    args = kill_pretraining(f"checkpoint:{name}", objective, tiny_corpus, targets, out)
    _half_written(out, name)
    resume(args, out)
    assert_same_run(out, straight_run(objective, args, tmp_path_factory))


@pytest.mark.faults
def test_kill_mid_best_checkpoint_write_resumes_exactly(tiny_corpus, tmp_path, tmp_path_factory):
    """best.pt (written at validation, step 3) half-written: only its temp file is torn."""
    out = tmp_path / "killed"
    args = kill_pretraining("checkpoint:best.pt", "wav2vec2", tiny_corpus, None, out)
    _half_written(out, "best.pt")
    resume(args, out)
    assert_same_run(out, straight_run("wav2vec2", args, tmp_path_factory))
    load_checkpoint(out / "checkpoints" / "best.pt")


@pytest.mark.faults
def test_kill_inside_the_stage_switch_resumes_exactly(tiny_corpus, targets, tmp_path, tmp_path_factory):
    """WavLabLM-style: killed inside the switch to the language-balanced stage 2 (after the
    boundary checkpoint, with the state and data loader switched, before stage 2's first update)."""
    out = tmp_path / "killed"
    args = kill_pretraining("stage2", "wavlablm", tiny_corpus, targets, out)
    assert [s for s, _ in step_checkpoints(out / "checkpoints")] == [2, 3]
    assert load_checkpoint(out / "checkpoints" / "step_00000003.pt")["train_state"]["stage"] == 1
    resume(args, out)
    straight = straight_run("wavlablm", args, tmp_path_factory)
    assert_same_run(out, straight)
    assert [r["stage"] for r in read_metrics(out)] == [1, 1, 1, 2, 2, 2]


@pytest.mark.faults
def test_kill_mid_metrics_line_resumes_exactly(tiny_corpus, tmp_path, tmp_path_factory):
    """Killed half-way through appending step 5's record: metrics.jsonl ends in a torn line,
    which the resume drops with the other records after its checkpoint (step 4)."""
    out = tmp_path / "killed"
    args = kill_pretraining("metrics:5", "wav2vec2", tiny_corpus, None, out)
    tail = (out / "metrics.jsonl").read_text().splitlines()[-1]
    with pytest.raises(json.JSONDecodeError):
        json.loads(tail)
    resume(args, out)
    assert_same_run(out, straight_run("wav2vec2", args, tmp_path_factory))


# ====================================================================== bench, cache, store

BENCH = ["train.max_epochs=2", "train.batch_seconds=20", "probe_cfg.hidden=8", "probe_cfg.embed_dim=8",
         "train.num_workers=0", "health_utterances=0", "cost.energy=false"]


def bench_argv(corpus: Path, out: Path, store: Path, cache: Path) -> list[str]:
    return ["bench", "--upstream", "mfcc", "--task", "lid", "--probe", "mean_linear", "--data", str(corpus),
            "--out", str(out), "--store", str(store), "--no-progress", f"cache.dir={cache}", *BENCH]


@pytest.fixture(scope="module")
def straight_bench(tiny_corpus, tmp_path_factory) -> dict:
    from speechssl.cli import main

    root = tmp_path_factory.mktemp("bench-straight")
    assert main(bench_argv(tiny_corpus, root / "run", root / "results.db", root / "cache")) == 0
    return json.loads((root / "run" / "result.json").read_text())


def store_runs(store: Path) -> list[dict]:
    from speechssl.benchmark.store import ResultStore

    if not store.exists():
        return []
    with ResultStore(store, create=False) as opened:
        return opened.runs()


def cache_entries(cache: Path) -> tuple[list[Path], list[Path]]:
    """(entries under their final names, temp dirs of builders) of a feature-cache directory."""
    if not cache.is_dir():
        return [], []
    entries = [p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return entries, [p for p in cache.iterdir() if p.name.startswith(".tmp-")]


def assert_nothing_partial(out: Path, cache: Path) -> None:
    """No result, probe weights or cache entry is visible half-written."""
    if (out / "result.json").exists():
        json.loads((out / "result.json").read_text())
    if (out / "best.pt").exists():
        from speechssl.fsutil import safe_torch_load

        safe_torch_load(out / "best.pt", "probe weights")
    entries, _ = cache_entries(cache)
    for entry in entries:
        assert (entry / "COMPLETE").is_file(), f"{entry} is visible without its COMPLETE marker"


BENCH_KILLS = {
    # fault: (where, what the killed run must have left)
    "update:3": "probe training, after update 3's backward pass",
    "write:best.pt": "half-way through writing the probe weights (best.pt)",
    "text:result.json": "half-way through writing result.json",
    "store": "after result.json, before the store records the run",
    "cache-batch:2": "feature caching, after the upstream's 2nd batch",
    "write:index.json": "feature caching, half-way through writing an entry's index.json",
}


@pytest.mark.faults
@pytest.mark.parametrize("fault", list(BENCH_KILLS))
def test_killed_bench_reruns_to_the_same_result_stored_once(fault, tiny_corpus, tmp_path, straight_bench):
    from speechssl.cli import main

    out, store, cache = tmp_path / "run", tmp_path / "results.db", tmp_path / "cache"
    argv = bench_argv(tiny_corpus, out, store, cache)
    run_killed(fault, *argv)
    assert_nothing_partial(out, cache)
    assert store_runs(store) == []
    if fault == "store":
        assert (out / "result.json").is_file()
    else:
        assert not (out / "result.json").exists()
    if fault.startswith(("cache-batch", "write:index")):
        entries, temps = cache_entries(cache)
        assert temps, "the kill did not come during a cache build"
    if fault in ("write:best.pt", "text:result.json"):
        name = fault.split(":")[1]
        assert list(out.glob(f".{name}.tmp-*")), "the kill did not come mid-write"

    assert main(argv) == 0  # the rerun
    runs = store_runs(store)
    assert len(runs) == 1 and runs[0]["status"] == "finished"
    assert main(argv) == 0  # and once more: reused, still one run
    assert len(store_runs(store)) == 1
    result = json.loads((out / "result.json").read_text())
    assert result["metrics"] == straight_bench["metrics"]
    entries, temps = cache_entries(cache)
    assert not temps and len(entries) == 3  # train, dev, test: each once, complete
    assert_nothing_partial(out, cache)


# ====================================================================== targets (k-means, labels)

TARGETS = ["--upstream", "mfcc", "--k", "8", "--max-fit-frames", "2000", "--no-progress"]


@pytest.mark.faults
@pytest.mark.parametrize("fault", ["kmeans", "labels:5", "write:COMPLETE"])
def test_killed_targets_build_leaves_no_readable_set_and_reruns(fault, tiny_corpus, targets, tmp_path):
    """Killed when k-means starts, while labelling the 5th utterance, or half-way through
    writing the set's COMPLETE marker: no set is readable; the rerun builds the same labels as
    an uninterrupted build."""
    from speechssl.cli import main
    from speechssl.targets import TargetSet, TargetSetError

    out = tmp_path / "targets"
    # The features are cached already (by the reference build): the kill hits the targets' own work.
    argv = ["targets", *TARGETS, "--data", str(tiny_corpus), "--out", str(out), "--cache-dir", str(targets.parent / "cache")]
    run_killed(fault, *argv)
    with pytest.raises(TargetSetError):
        TargetSet.open(out)
    if fault != "kmeans":
        assert [p for p in out.iterdir() if p.name.startswith(".tmp-")], "the kill did not come mid-build"
    assert main(argv) == 0
    rebuilt = TargetSet.open(out)
    assert [p.name for p in out.iterdir()] == [rebuilt.path.name]  # the dead builder's temp dir is gone
    reference = TargetSet.open(targets)
    assert rebuilt.key == reference.key
    assert (rebuilt.path / "labels.npy").read_bytes() == (reference.path / "labels.npy").read_bytes()


# ====================================================================== sweep

SWEEP_SETTINGS = {"train": {"max_epochs": 1, "batch_seconds": 20, "num_workers": 0},
                  "probe_cfg": {"hidden": 8, "embed_dim": 8}, "health_utterances": 0, "cost": {"energy": False}}


def _sweep_spec(tmp_path: Path, corpus: Path) -> Path:
    import yaml

    spec = {"name": "faults", "out": str(tmp_path / "sweep"), "store": str(tmp_path / "results.db"),
            "upstreams": ["mfcc", "fbank"], "runs": ["lid:mean_linear"], "seeds": [0, 1],
            "settings": {"data": str(corpus), "cache": {"dir": str(tmp_path / "cache")}, **SWEEP_SETTINGS}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _finished_cells(store: Path) -> int:
    try:
        db = sqlite3.connect(store, timeout=30)
        try:
            return db.execute("SELECT COUNT(*) FROM runs WHERE status = 'finished'").fetchone()[0]
        finally:
            db.close()
    except sqlite3.OperationalError:
        return 0


def _assert_sweep_completes_once(spec: Path, store: Path) -> None:
    from speechssl.benchmark.sweep import SweepConfig, run_sweep
    from speechssl.config import load_config as load

    report = run_sweep(load(SweepConfig, spec), workers=1, log=lambda _: None)
    assert report.failed == 0, report.errors
    runs = store_runs(store)
    assert len(runs) == 4 and len({r["run_id"] for r in runs}) == 4
    assert all(r["status"] == "finished" for r in runs)


@pytest.mark.faults
def test_killed_sweep_driver_reruns_each_cell_once(tiny_corpus, tmp_path):
    """The driver SIGKILLed after its first finished cell (tests/test_sweep.py does it with 12
    cells and 2 workers): the rerun runs only what is missing; every cell is stored once."""
    spec, store = _sweep_spec(tmp_path, tiny_corpus), tmp_path / "results.db"
    proc = subprocess.Popen([sys.executable, "-m", "speechssl.cli", "sweep", str(spec), "--workers", "1"], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while _finished_cells(store) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the sweep ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its pool worker
    proc.wait()
    assert 1 <= _finished_cells(store) < 4
    _assert_sweep_completes_once(spec, store)


@pytest.mark.faults
def test_killed_sweep_worker_reruns_each_cell_once(tiny_corpus, tmp_path):
    """A pool worker SIGKILLed mid-cell (the OOM killer's way): the driver records the lost
    cells as interrupted, not failed, and a plain rerun finishes them; every cell stored once."""
    from speechssl.benchmark.sweep import SweepConfig, run_sweep
    from speechssl.config import load_config as load

    spec, store = _sweep_spec(tmp_path, tiny_corpus), tmp_path / "results.db"
    killed: list[int] = []

    def kill_a_worker(message: str) -> None:
        if message.startswith("  finished") and not killed:
            for pid in _pool_workers(os.getpid()):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    report = run_sweep(load(SweepConfig, spec), workers=1, log=kill_a_worker)
    assert killed and report.finished >= 1 and report.failed == 0
    assert report.interrupted >= 1 and report.finished + report.interrupted == 4
    assert all(error.startswith("interrupted: worker died") for error in report.errors.values())
    assert "(a rerun runs them)" in report.summary()
    assert {r["status"] for r in store_runs(store) if r["status"] != "finished"} == {"pending"}
    _assert_sweep_completes_once(spec, store)


def _pool_workers(parent: int) -> list[int]:
    out = subprocess.run(["ps", "-ww", "-o", "pid=,args=", "--ppid", str(parent)], capture_output=True,
                         text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if "spawn_main" in line]


# ====================================================================== report


def _store_with_runs(store: Path, n: int) -> None:
    from speechssl.benchmark.store import ResultStore

    with ResultStore(store) as opened:
        for i in range(n):
            opened.put_run({"run_id": f"run{i}", "upstream": f"up{i}", "task": "lid", "probe": "mean_linear",
                            "seed": 0, "status": "finished", "source": "bench", "primary_metric": "accuracy"},
                           [{"metric": "accuracy", "value": 0.5 + 0.1 * i, "split": "test"}])


@pytest.mark.parametrize("name", ["report.html", pytest.param("report.md", marks=pytest.mark.faults)])
def test_killed_report_write_keeps_the_old_report_and_reruns(name, tmp_path):
    """Killed half-way through rewriting a report file: the previous complete report stays
    under the name (the torn bytes are only in a temp file); the rerun writes the new one."""
    from speechssl.cli import main

    store, out = tmp_path / "results.db", tmp_path / "report"
    _store_with_runs(store, 1)
    argv = ["report", "--store", str(store), "--out", str(out)]
    assert main(argv) == 0
    before = (out / name).read_text()
    _store_with_runs(store, 2)  # a new run: the report must change
    run_killed(f"text:{name}", *argv, timeout=300)
    assert (out / name).read_text() == before
    assert list(out.glob(f".{name}.tmp-*")), "the kill did not come mid-write"
    assert main(argv) == 0
    after = (out / name).read_text()
    assert after != before and "up1" in after
    if name.endswith(".html"):
        assert after.rstrip().endswith("</html>")
