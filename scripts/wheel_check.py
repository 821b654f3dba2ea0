"""`make wheel-check`: the wheel installs beside a user's own torch and runs a small benchmark.

Online (PyPI for the [bench] dependencies), several minutes, not part of the tests. In a
temporary directory it

1. builds the wheel with ``python -m build`` from a copy of the source tree (``pip wheel``
   if the build package is missing);
2. makes a fresh venv and installs torch there first (``--torch``, default the pinned CPU
   wheel ``torch==2.13.0``), then records torch's version, the hash of its RECORD file and
   the size and mtime of its largest shared library;
3. ``pip install '<wheel>[bench]'`` and checks that torch is exactly as recorded (not
   reinstalled, not upgraded) and that ``speechssl`` is imported from the venv, not from
   this checkout;
4. runs ``speechssl corpus synth`` for a tiny corpus and ``speechssl bench --upstream mfcc
   --task lid`` on it with a small budget, and reads the result;
5. then two pretraining updates, ``export-hf`` of that checkpoint (transformers) and a
   ``bench`` of the export as an ``hf:`` upstream: the paths where the installed torch and
   the [bench] packages meet.

Each step prints ``PASS ...`` or ``FAIL ...``; the exit code is 1 if any failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAILED: list[str] = []


def report(ok: bool, what: str) -> bool:
    print(f"{'PASS' if ok else 'FAIL'} {what}", flush=True)
    if not ok:
        FAILED.append(what)
    return ok


def run(cmd: list[str], *, cwd: Path | None = None, env: dict | None = None, log: Path | None = None,
        timeout: float = 3600) -> subprocess.CompletedProcess:
    started = time.time()
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if log is not None:
        with log.open("a") as handle:
            handle.write(f"$ {' '.join(map(str, cmd))}  ({time.time() - started:.0f} s, rc {proc.returncode})\n")
            handle.write(proc.stdout + proc.stderr + "\n")
    return proc


def tail(proc: subprocess.CompletedProcess, n: int = 8) -> str:
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return "\n".join("    " + line for line in lines[-n:])


def build_wheel(work: Path, log: Path) -> Path | None:
    tree = work / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, tree / name)
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
    dist = work / "dist"
    if importlib.util.find_spec("build") is not None:
        how = "python -m build --wheel"
        proc = run([sys.executable, "-m", "build", "--wheel", "--outdir", dist, tree], log=log)
    else:  # `make` installs build (the dev extra); run by hand without it, pip builds the same wheel
        how = "pip wheel (the build package is not installed)"
        proc = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", dist, tree], log=log)
    wheels = sorted(dist.glob("speechssl-*.whl"))
    if not report(proc.returncode == 0 and len(wheels) == 1, f"{how}: {wheels[0].name if wheels else '-'}"):
        print(tail(proc))
        return None
    return wheels[0]


def torch_fingerprint(python: Path) -> dict:
    """Version, RECORD hash, and size/mtime of the largest library of the installed torch."""
    code = """
import hashlib, json, pathlib
from importlib import metadata
dist = metadata.distribution("torch")
record = [f for f in dist.files if f.name == "RECORD"][0]
libs = [f for f in dist.files if f.name.endswith(".so") or ".so." in f.name]
big = max(libs, key=lambda f: f.locate().stat().st_size)
st = big.locate().stat()
print(json.dumps({"version": dist.version,
                  "record_sha256": hashlib.sha256(record.locate().read_bytes()).hexdigest(),
                  "library": str(big), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                  "location": str(dist.locate_file(""))}))
"""
    proc = run([python, "-c", code])
    if proc.returncode != 0:
        return {"error": tail(proc)}
    return json.loads(proc.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--torch", default="torch==2.13.0", help="torch requirement installed first (default torch==2.13.0)")
    parser.add_argument("--torch-pip-args", default="", help="extra pip arguments for the torch install only")
    parser.add_argument("--python", default=sys.executable, help="interpreter the venv is made with")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="speechssl-wheel-check-"))
    log = work / "log.txt"
    print(f"working in {work} (full log: {log})", flush=True)
    try:
        wheel = build_wheel(work, log)
        if wheel is None:
            return 1

        venv = work / "venv"
        proc = run([args.python, "-m", "venv", venv], log=log)
        python = venv / "bin" / "python"
        if not report(proc.returncode == 0, f"fresh venv ({run([python, '-V']).stdout.strip()})"):
            print(tail(proc))
            return 1
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.update(OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}")

        started = time.time()
        proc = run([python, "-m", "pip", "install", "--quiet", *args.torch_pip_args.split(), args.torch], env=env, log=log)
        before = torch_fingerprint(python)
        if not report(proc.returncode == 0 and "version" in before,
                      f"pip install {args.torch}: torch {before.get('version', '?')} ({time.time() - started:.0f} s)"):
            print(tail(proc))
            return 1

        started = time.time()
        proc = run([python, "-m", "pip", "install", "--quiet", f"{wheel}[bench]"], env=env, log=log)
        if not report(proc.returncode == 0, f"pip install {wheel.name}[bench] ({time.time() - started:.0f} s)"):
            print(tail(proc))
            return 1
        after = torch_fingerprint(python)
        kept = {k: before.get(k) for k in ("version", "record_sha256", "size", "mtime_ns")}
        now = {k: after.get(k) for k in kept}
        report(kept == now, f"torch kept: {after.get('version')} (RECORD sha256 {str(after.get('record_sha256'))[:12]}, "
                            f"{Path(str(after.get('library'))).name} mtime unchanged)" if kept == now
                            else f"torch changed: {kept} -> {now}")
        proc = run([python, "-m", "pip", "check"], env=env, log=log)
        print(f"note: pip check: {(proc.stdout + proc.stderr).strip().splitlines()[-1] if (proc.stdout + proc.stderr).strip() else 'ok'}")

        where = run([python, "-c", "import speechssl; print(speechssl.__file__)"], cwd=work, env=env)
        report(where.returncode == 0 and str(venv) in where.stdout,
               f"speechssl imported from the venv: {where.stdout.strip() or tail(where)}")

        speechssl = venv / "bin" / "speechssl"
        corpus = work / "corpus"
        started = time.time()
        proc = run([speechssl, "corpus", "synth", "--out", corpus, "--hours", "0.05", "--workers", "2",
                    "speakers=12", "trials=200"], cwd=work, env=env, log=log)
        info = corpus / "corpus.json"
        ok = proc.returncode == 0 and info.is_file()
        utts = sum(s.get("utterances", 0) for s in json.loads(info.read_text())["splits"].values()) if ok else 0
        if not report(ok, f"speechssl corpus synth --hours 0.05: {utts} utterances ({time.time() - started:.0f} s)"):
            print(tail(proc))
            return 1

        started = time.time()
        out = work / "bench"
        proc = run([speechssl, "bench", "--upstream", "mfcc", "--task", "lid", "--data", corpus, "--out", out,
                    "--store", work / "results.db", "--no-progress", "train.max_epochs=3"], cwd=work, env=env, log=log)
        result_path = out / "result.json"
        ok = proc.returncode == 0 and result_path.is_file()
        metrics = json.loads(result_path.read_text()).get("metrics", {}) if ok else {}
        shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, (int, float)))[:120]
        if not report(ok, f"speechssl bench --upstream mfcc --task lid: {shown} ({time.time() - started:.0f} s)"):
            print(tail(proc, 15))

        # The other paths torch and [bench] meet: a pretraining update (autocast, GradScaler,
        # checkpoints), the transformers export, and that export as an hf: upstream.
        started = time.time()
        pre = work / "pretrain"
        proc = run([speechssl, "pretrain", "--data", corpus, "--out", pre, "--no-progress", "steps=2", "valid_every=0",
                    "save_every=2", "health_utterances=0", "batch_seconds=6", "data.micro_batch_seconds=6",
                    "data.crop_seconds=1.5", "data.num_workers=0", "tensorboard=false"], cwd=work, env=env, log=log)
        ckpt = pre / "checkpoints" / "best.pt"
        if not report(proc.returncode == 0 and ckpt.is_file(), f"speechssl pretrain (2 updates) ({time.time() - started:.0f} s)"):
            print(tail(proc))
        else:
            exported = work / "exported"
            proc = run([speechssl, "export-hf", ckpt, "--out", exported], cwd=work, env=env, log=log)
            if not report(proc.returncode == 0, "speechssl export-hf (transformers)"):
                print(tail(proc))
            else:
                started = time.time()
                out = work / "bench_hf"
                proc = run([speechssl, "bench", "--upstream", f"hf:{exported}", "--task", "lid", "--data", corpus,
                            "--out", out, "--no-store", "--no-progress", "train.max_epochs=1"],
                           cwd=work, env=env, log=log)
                if not report(proc.returncode == 0 and (out / "result.json").is_file(),
                              f"speechssl bench --upstream hf:<export> --task lid ({time.time() - started:.0f} s)"):
                    print(tail(proc))
        final = torch_fingerprint(python)
        report(final.get("record_sha256") == before.get("record_sha256"), f"torch still {final.get('version')} after the runs")
    finally:
        if args.keep or FAILED:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{'FAIL' if FAILED else 'PASS'} wheel-check ({len(FAILED)} failed)")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
