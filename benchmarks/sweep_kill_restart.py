"""Kill a running sweep with SIGKILL half-way, restart it, and check the store.

Runs ``speechssl sweep SPEC --workers N`` into a fresh output directory and store,
SIGKILLs the driver once ``--kill-after`` cells are finished, checks that its pool
workers exit on their own, reruns the same command, and verifies that every cell is
in the store exactly once, finished. Prints what happened; exits 1 on any failure.

    .venv/bin/python benchmarks/sweep_kill_restart.py configs/sweeps/probes_3x2x2.yaml --workers 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path


def cell_counts(store: Path) -> dict[str, int]:
    if not store.exists():
        return {}
    db = sqlite3.connect(store, timeout=30)
    try:
        rows = db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall()
    except sqlite3.OperationalError:
        return {}
    finally:
        db.close()
    return dict(rows)


def session_processes(sid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,sid="], capture_output=True, text=True).stdout
    return [int(p) for p, s in (line.split() for line in out.splitlines()) if int(s) == sid]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kill-after", type=int, default=None, help="finished cells before the kill (default: half)")
    parser.add_argument("--out", type=Path, default=Path("runs/sweeps/kill_restart"))
    args = parser.parse_args()

    shutil.rmtree(args.out, ignore_errors=True)
    store = args.out / "results.db"
    command = [sys.executable, "-m", "speechssl.cli", "sweep", str(args.spec), "--workers", str(args.workers),
               f"out={args.out}", f"store={store}"]
    plan = subprocess.run(command + ["--dry-run"], capture_output=True, text=True, check=True).stdout
    total = int(plan.strip().splitlines()[-1].split()[0])
    kill_after = args.kill_after or total // 2
    print(f"{total} cells; SIGKILL the driver after {kill_after} finished")

    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(args.out / "first.log", "w") as log:
        driver = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    while cell_counts(store).get("finished", 0) < kill_after and driver.poll() is None:
        time.sleep(0.1)
    if driver.poll() is not None:
        print(f"FAIL: the sweep ended (exit {driver.returncode}) before the kill; see {args.out / 'first.log'}")
        return 1
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    at_kill = cell_counts(store)
    print(f"killed after {time.perf_counter() - started:.1f}s with {at_kill}")
    t0 = time.perf_counter()
    while session_processes(driver.pid) and time.perf_counter() - t0 < 30:
        time.sleep(0.2)
    leftover = session_processes(driver.pid)
    print(f"orphaned workers after the kill: {len(leftover)} (gone after {time.perf_counter() - t0:.1f}s)")

    t0 = time.perf_counter()
    with open(args.out / "second.log", "w") as log:
        rerun = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    print(f"restart: exit {rerun.returncode} after {time.perf_counter() - t0:.1f}s; "
          + (args.out / "second.log").read_text().strip().splitlines()[-1])

    db = sqlite3.connect(store)
    runs, distinct, finished = db.execute(
        "SELECT COUNT(*), COUNT(DISTINCT run_id), SUM(status = 'finished') FROM runs").fetchone()
    per_cell_scores = db.execute("SELECT MIN(n), MAX(n) FROM (SELECT COUNT(*) n FROM scores GROUP BY run_id)").fetchone()
    print(f"store: {runs} runs, {distinct} distinct, {finished} finished; scores per run {per_cell_scores}")
    ok = rerun.returncode == 0 and not leftover and runs == distinct == finished == total
    print("OK: every cell exactly once" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
