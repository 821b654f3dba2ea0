"""Sweeps: planning, resuming, failures, SIGKILL of the driver, submitit's executor."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from speechssl.benchmark.store import ResultStore
from speechssl.benchmark.sweep import SweepConfig, plan_sweep, run_sweep
from speechssl.config import from_dict, load_config
from speechssl.errors import ConfigError

FAST_SETTINGS = {"train": {"max_epochs": 1, "batch_seconds": 20, "num_workers": 0},
                 "probe_cfg": {"hidden": 8, "embed_dim": 8}, "asr": {"beam_size": 1}}


def _spec(tmp_path: Path, corpus: Path, **over) -> dict:
    spec = {
        "name": "t", "out": str(tmp_path / "sweep"), "store": str(tmp_path / "results.db"),
        "upstreams": ["mfcc", "fbank"], "runs": ["lid:mean_linear", "lid:xvector"], "seeds": [0],
        "settings": {"data": str(corpus), "cache": {"dir": str(tmp_path / "cache")}, **FAST_SETTINGS},
    }
    spec.update(over)
    return spec


def _write(tmp_path: Path, spec: dict) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_plan_crosses_axes_and_validates(tmp_path):
    cfg = from_dict(SweepConfig, {"upstreams": ["mfcc", "fbank"], "runs": ["lid:mean_linear", "asr:mlp_ctc"],
                                  "seeds": [0, 1], "grid": {"featurizer.layer": [None, 0]}, "out": str(tmp_path)})
    cells = plan_sweep(cfg)
    assert len(cells) == 2 * 2 * 2 * 2
    assert len({c.key for c in cells}) == 16 and len({c.run_dir for c in cells}) == 16
    assert {c.cfg.featurizer.layer for c in cells} == {None, 0}
    with pytest.raises(ConfigError, match="unknown bench config key"):
        plan_sweep(from_dict(SweepConfig, {"grid": {"featurizer.layr": [0]}}))
    with pytest.raises(ConfigError, match="task:probe"):
        from_dict(SweepConfig, {"runs": ["lid"]})
    with pytest.raises(ConfigError, match="repeated"):
        from_dict(SweepConfig, {"seeds": [0, 0]})


def test_unfit_cells_are_refused_before_any_work(tmp_path, tiny_corpus):
    cfg = from_dict(SweepConfig, _spec(tmp_path, tiny_corpus, runs=["asv:mean_linear", "lid:ecapa_tdnn"]))
    with pytest.raises(ConfigError, match="invalid cells") as err:
        run_sweep(cfg, log=lambda _: None)
    assert "needs embedding" in str(err.value) and "unknown probe 'ecapa_tdnn'" in str(err.value)
    missing = from_dict(SweepConfig, _spec(tmp_path, tmp_path / "no-corpus"))
    with pytest.raises(ConfigError, match="no-corpus does not exist"):
        run_sweep(missing, log=lambda _: None)
    assert not Path(cfg.store).exists() or ResultStore(cfg.store).count()["pending"] == 0


def test_sweep_runs_resumes_and_records_failures(tmp_path, tiny_corpus):
    spec = _spec(tmp_path, tiny_corpus, upstreams=["mfcc", "hf:/nonexistent/model"], runs=["lid:mean_linear"])
    cfg = from_dict(SweepConfig, spec)
    report = run_sweep(cfg, workers=2, log=lambda _: None)
    assert (report.finished, report.failed) == (1, 1)
    with ResultStore(cfg.store) as store:
        failed = store.runs(status="failed")
        assert len(failed) == 1 and "nonexistent" in failed[0]["error"] and failed[0]["attempts"] == 1
        assert len(store.runs(status="finished")) == 1
    again = run_sweep(cfg, workers=2, log=lambda _: None)
    assert (again.skipped, again.finished, again.failed, again.skipped_failed) == (1, 0, 0, 1)
    retried = run_sweep(cfg, workers=1, retry_failed=True, log=lambda _: None)
    assert retried.failed == 1
    with ResultStore(cfg.store) as store:
        assert store.runs(status="failed")[0]["attempts"] == 2


def _count_cells(store_path: Path) -> tuple[int, int, int]:
    if not store_path.exists():
        return 0, 0, 0
    db = sqlite3.connect(store_path, timeout=30)
    try:
        finished = db.execute("SELECT COUNT(*) FROM runs WHERE status = 'finished'").fetchone()[0]
        runs, distinct = db.execute("SELECT COUNT(*), COUNT(DISTINCT run_id) FROM runs").fetchone()
    except sqlite3.OperationalError:  # schema not created yet
        return 0, 0, 0
    finally:
        db.close()
    return finished, runs, distinct


def test_sweep_survives_sigkill_of_the_driver(tmp_path, tiny_corpus):
    spec = _spec(tmp_path, tiny_corpus, seeds=[0, 1, 2])  # 2 upstreams x 2 probes x 3 seeds = 12 cells
    path = _write(tmp_path, spec)
    store = Path(spec["store"])
    argv = [sys.executable, "-m", "speechssl.cli", "sweep", str(path), "--workers", "2"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    while _count_cells(store)[0] < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "the sweep ended before it could be killed half-way"
    finished_before = _count_cells(store)[0]
    os.kill(proc.pid, signal.SIGKILL)  # the driver only: its pool workers must notice and exit
    proc.wait()
    assert 3 <= finished_before < 12
    # The orphaned workers exit within a few seconds (they watch their parent).
    deadline = time.monotonic() + 20
    while _children_of_session(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _children_of_session(proc.pid)
    cfg = load_config(SweepConfig, path)
    report = run_sweep(cfg, workers=2, log=lambda _: None)
    assert report.failed == 0 and report.skipped >= finished_before and report.skipped + report.finished == 12
    assert _count_cells(store) == (12, 12, 12)


def _children_of_session(sid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,sid="], capture_output=True, text=True).stdout
    return [int(p) for p, s in (line.split() for line in out.splitlines()) if int(s) == sid]


def test_submitit_local_executor(tmp_path, tiny_corpus):
    cfg = from_dict(SweepConfig, _spec(tmp_path, tiny_corpus, upstreams=["mfcc"], runs=["lid:mean_linear"]))
    report = run_sweep(cfg, executor="submitit-local", log=lambda _: None)
    assert (report.finished, report.failed) == (1, 0), report.errors
    assert list((tmp_path / "sweep" / "submitit").iterdir())  # submitit's job folders
    with ResultStore(cfg.store) as store:
        assert store.runs()[0]["source"] == "sweep" and store.scores(metric="accuracy")
