"""``speechssl doctor``: the environment at a glance, the first thing to paste into a bug report.

What it reports, one section each: speechssl itself (version, where it is imported from,
editable or not, the git commit of a checkout), Python, the system (OS, CPUs, memory and
the threading environment variables), torch (version, CPU-only or CUDA/ROCm build, cuDNN,
MPS, intra-/inter-op threads), the GPUs, the versions of the packages speechssl uses,
which of its extras are satisfied, the external tools (eSpeak NG for the synthetic corpus,
headless Chromium for the report's browser check), and where the feature cache, the
result store, the run directories, the default corpus and the Hugging Face hub cache live,
with their sizes on disk.

Rules it keeps:

- every probe is failure-proof: an exception becomes an ``error: <one line>`` row (a whole
  section's, or one row's), a probe that hangs is abandoned after a timeout, and doctor
  exits 0 whatever it found;
- package versions come from installed metadata (:mod:`importlib.metadata`), never from
  importing the package (``import transformers`` alone takes seconds); torch is the one
  heavy import, because its build, threads and GPUs cannot be read otherwise;
- the extras are read from the installed metadata (``Requires-Dist: x; extra == "e"``) so
  the table stays right whatever the extras become;
- directory sizes are ``du``-like (allocated blocks, hard links once, symlinks not
  followed) and each walk stops after :data:`SIZE_SECONDS`, saying so.

``collect()`` returns the report as a JSON-ready dict (``--json`` prints it);
``format_report()`` renders it as text.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

FORMAT = "speechssl.doctor/1"

# Versions shown in the "packages" section (distribution names, as pip knows them).
KEY_PACKAGES = (
    "torch", "numpy", "scipy", "lhotse", "soundfile", "pyyaml", "transformers", "safetensors",
    "huggingface_hub", "peft", "scikit-learn", "jiwer", "sacrebleu", "matplotlib", "codecarbon",
    "submitit", "kenlm", "pyctcdecode", "espeakng-loader",
)

# Environment variables worth seeing in a bug report (shown only when set).
ENV_VARS = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "CUDA_VISIBLE_DEVICES",
    "PYTORCH_CUDA_ALLOC_CONF", "ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY",
    "SPEECHSSL_STORE", "SPEECHSSL_BOUND_SHAPE_CACHES", "HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE",
    "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
)

# The sections, in order: name -> timeout in seconds (a probe running longer is abandoned).
# Each is computed by the module-level function ``probe_<name>`` (looked up when it runs,
# so a test can replace one).
PROBES: dict[str, float] = {
    "speechssl": 20.0,
    "python": 10.0,
    "system": 10.0,
    "torch": 120.0,
    "gpus": 120.0,
    "packages": 20.0,
    "extras": 20.0,
    "tools": 30.0,
    "storage": 120.0,
}

SIZE_SECONDS = 5.0
"""Time cap of one directory walk; a walk cut short reports what it counted so far."""

SUBPROCESS_SECONDS = 10.0
KEY_WIDTH = 17


# ---------------------------------------------------------------------- helpers


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 200 characters)."""
    text = str(exc).strip().splitlines()
    message = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return message if len(message) <= 200 else message[:197] + "..."


def _error(exc: BaseException) -> str:
    return f"error: {one_line(exc)}"


def _safe(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(...)``, or an ``error: ...`` row when it raises: one row's failure stays that row's."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - doctor reports every failure, it never raises
        return _error(exc)


def human_size(n: int | float | None) -> str:
    """``1536`` -> ``"1.5 KiB"``; binary units like ``du -h``."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"  # pragma: no cover - the loop returns


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed_version(name: str) -> str | None:
    """The installed version of distribution ``name`` (from its metadata), None when absent."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _run(cmd: list[str], cwd: str | Path | None = None) -> str:
    """First line of a short command's output (stdout, else stderr), with a timeout."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=SUBPROCESS_SECONDS,
                          stdin=subprocess.DEVNULL, errors="replace")
    out = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(cmd[0]).name} exited with {proc.returncode}: {out[0] if out else ''}".strip())
    return out[0] if out else ""


# ---------------------------------------------------------------------- probes


def probe_speechssl() -> dict[str, Any]:
    import speechssl

    package_dir = Path(speechssl.__file__).resolve().parent
    info: dict[str, Any] = {"version": speechssl.__version__, "imported_from": str(package_dir)}
    try:
        dist = metadata.distribution("speechssl")
    except metadata.PackageNotFoundError:
        info["install"] = "not installed (running from a source tree on sys.path)"
        dist = None
    if dist is not None:
        if dist.version != speechssl.__version__:
            info["metadata_version"] = f"{dist.version} (differs from the imported package: reinstall)"
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
        editable = bool(direct.get("dir_info", {}).get("editable"))
        info["editable"] = editable
        where = direct.get("url") or str(dist.locate_file(""))
        info["install"] = f"{'editable' if editable else 'regular'} install from {where}"
        if editable and str(where).startswith("file://"):
            stale = _safe(_metadata_is_stale, dist, Path(str(where)[len("file://"):]) / "pyproject.toml")
            if stale:
                info["metadata"] = stale
    repo = next((p for p in (package_dir, *package_dir.parents) if (p / ".git").exists()), None)
    if repo is not None:
        info["git"] = _safe(_git_state, repo)
    return info


def _metadata_is_stale(dist: metadata.Distribution, pyproject: Path) -> str | None:
    """A warning when the checkout's pyproject.toml changed after the install (the extras and
    dependencies doctor reads from the installed metadata are then out of date)."""
    meta = next((f for f in dist.files or () if f.name == "METADATA"), None)
    if meta is None or not pyproject.is_file():
        return None
    if pyproject.stat().st_mtime > Path(str(meta.locate())).stat().st_mtime:
        return "pyproject.toml is newer than the installed metadata: `pip install -e .` refreshes the extras"
    return None


def _git_state(repo: Path) -> str:
    if shutil.which("git") is None:
        return f"checkout at {repo} (git not on PATH)"
    commit = _run(["git", "--no-optional-locks", "rev-parse", "--short=12", "HEAD"], cwd=repo)
    proc = subprocess.run(["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
                          cwd=repo, capture_output=True, text=True, timeout=SUBPROCESS_SECONDS,
                          stdin=subprocess.DEVNULL, errors="replace")
    changed = len([line for line in proc.stdout.splitlines() if line.strip()]) if proc.returncode == 0 else None
    dirty = "status unknown" if changed is None else (f"{changed} modified file(s)" if changed else "clean")
    return f"{commit} ({dirty}) in {repo}"


def probe_python() -> dict[str, Any]:
    in_venv = sys.prefix != getattr(sys, "base_prefix", sys.prefix)
    return {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "venv": sys.prefix if in_venv else None,
    }


def probe_system() -> dict[str, Any]:
    info: dict[str, Any] = {
        "os": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    if hasattr(os, "sched_getaffinity"):
        info["cpus_usable"] = _safe(lambda: len(os.sched_getaffinity(0)))
    quota = _safe(_cgroup_cpu_quota)
    if quota is not None:
        info["cgroup_cpu_limit"] = quota
    info["memory"] = _safe(_memory)
    info["env"] = {name: os.environ[name] for name in ENV_VARS if name in os.environ}
    return info


def _cgroup_cpu_quota() -> float | None:
    """CPUs a cgroup v2 quota allows (``/sys/fs/cgroup/cpu.max``), None when unlimited or absent."""
    path = Path("/sys/fs/cgroup/cpu.max")
    if not path.exists():
        return None
    quota, period = path.read_text().split()[:2]
    return None if quota == "max" else round(int(quota) / int(period), 2)


def _memory() -> str:
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    text = f"{human_size(total)} total"
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        match = re.search(r"^MemAvailable:\s+(\d+) kB", meminfo.read_text(), flags=re.MULTILINE)
        if match:
            text += f", {human_size(int(match.group(1)) * 1024)} available"
    return text


def probe_torch() -> dict[str, Any]:
    start = time.perf_counter()
    import torch

    info: dict[str, Any] = {"version": torch.__version__, "import_seconds": round(time.perf_counter() - start, 2)}
    cuda, hip = getattr(torch.version, "cuda", None), getattr(torch.version, "hip", None)
    info["build"] = f"CUDA {cuda}" if cuda else f"ROCm {hip}" if hip else "CPU-only"
    info["cudnn"] = _safe(lambda: torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
    info["cuda_available"] = _safe(torch.cuda.is_available)
    info["mps_available"] = _safe(lambda: bool(torch.backends.mps.is_available()))
    info["intra_op_threads"] = _safe(torch.get_num_threads)
    info["inter_op_threads"] = _safe(torch.get_num_interop_threads)
    info["mkl"] = _safe(lambda: bool(torch.backends.mkl.is_available()))
    info["mkldnn"] = _safe(lambda: bool(torch.backends.mkldnn.is_available()))
    info["openmp"] = _safe(lambda: bool(torch.backends.openmp.is_available()))
    return info


def probe_gpus() -> dict[str, Any]:
    import torch

    devices: list[Any] = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            devices.append(_safe(_cuda_device, torch, index))
    if _safe(lambda: bool(torch.backends.mps.is_available())) is True:
        devices.append({"index": "mps", "name": "Apple MPS", "bf16": None})
    info: dict[str, Any] = {"count": len(devices), "devices": devices}
    if not devices:
        cuda = getattr(torch.version, "cuda", None) or getattr(torch.version, "hip", None)
        if not cuda:
            info["note"] = "none (CPU-only torch build)"
        else:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            info["note"] = "none (GPU build, but no device visible" + (
                f"; CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ")")
    if shutil.which("nvidia-smi"):
        info["driver"] = _safe(_run, ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    return info


def _cuda_device(torch: Any, index: int) -> dict[str, Any]:
    props = torch.cuda.get_device_properties(index)
    capability = (props.major, props.minor)
    return {
        "index": index,
        "name": props.name,
        "memory_bytes": int(props.total_memory),
        "memory": human_size(props.total_memory),
        "compute_capability": f"{props.major}.{props.minor}",
        "multiprocessors": getattr(props, "multi_processor_count", None),
        # Native bf16 matmuls from Ampere (8.0) on; torch emulates it (slowly) below.
        "bf16": capability >= (8, 0),
    }


def _hints() -> dict[str, list[str]]:
    hints = _safe(_extra_of_package)
    return hints if isinstance(hints, dict) else {}


def probe_packages() -> dict[str, Any]:
    hints = _hints()
    rows: dict[str, Any] = {}
    for name in KEY_PACKAGES:
        rows[name] = _safe(_package_row, name, hints)
    return rows


def _package_row(name: str, hints: dict[str, list[str]]) -> str:
    version = _installed_version(name)
    if version is not None:
        return version
    extras = hints.get(_normalise(name))
    return "not installed" + (f" (extra: {', '.join(extras)})" if extras else "")


def _extra_of_package(requires: list[str] | None = None) -> dict[str, list[str]]:
    """Normalised distribution name -> the extras of speechssl that list it."""
    out: dict[str, list[str]] = {}
    for extra, reqs in _extras_table(requires).items():
        if extra == "core":
            continue
        for req in reqs:
            out.setdefault(_normalise(req.name), []).append(extra)
    return out


# ---------------------------------------------------------------------- extras


class _Req:
    """One ``Requires-Dist`` line: the distribution, its version specifier and its extras."""

    def __init__(self, text: str) -> None:
        self.text = text.strip()
        try:
            from packaging.requirements import Requirement
        except ImportError:
            Requirement = None  # noqa: N806 - the fallback parser below
        if Requirement is not None:
            req = Requirement(self.text)
            self.name = req.name
            self.specifier = str(req.specifier)
            self.extras = sorted(req.extras)
            self.marker = req.marker
            self.marker_text = str(req.marker) if req.marker is not None else ""
        else:
            head, _, marker = self.text.partition(";")
            match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?\s*(.*)", head)
            if match is None:
                raise ValueError(f"cannot parse requirement {self.text!r}")
            self.name = match.group(1)
            self.extras = sorted(e.strip() for e in (match.group(2) or "").split(",") if e.strip())
            rest = match.group(3).strip()
            self.specifier = "" if rest.startswith("@") else rest.strip("()").replace(" ", "")
            self.marker = None
            self.marker_text = marker.strip()

    def marker_extras(self) -> list[str]:
        """The extras named in the marker (``extra == "lm"``, either way round)."""
        found = re.findall(r"""extra\s*==\s*['"]([^'"]+)['"]""", self.marker_text)
        found += re.findall(r"""['"]([^'"]+)['"]\s*==\s*extra""", self.marker_text)
        return sorted({_normalise(e) for e in found})

    def applies(self, extra: str) -> bool:
        """Whether this requirement is needed for ``extra`` ("" for the core) here."""
        if self.marker is not None:
            return bool(self.marker.evaluate({"extra": extra}))
        named = self.marker_extras()
        return extra in named if named else True  # fallback: other marker clauses assumed true


def _speechssl_requires() -> list[str]:
    """The ``Requires-Dist`` lines of the installed speechssl (what pip resolved from pyproject)."""
    try:
        requires = metadata.requires("speechssl")
    except metadata.PackageNotFoundError:
        raise RuntimeError("speechssl is not installed (no metadata): pip install -e . in the checkout") from None
    if requires is None:
        raise RuntimeError("no Requires-Dist in speechssl's metadata")
    return requires


def _extras_table(requires: list[str] | None = None) -> dict[str, list[_Req]]:
    """``{"core": [...], extra: [...]}`` from speechssl's installed metadata (or ``requires``)."""
    if requires is None:
        requires = _speechssl_requires()
    reqs = [_Req(line) for line in requires]
    extras = sorted({extra for req in reqs for extra in req.marker_extras()})
    table: dict[str, list[_Req]] = {"core": [req for req in reqs if not req.marker_extras() and req.applies("")]}
    for extra in extras:
        table[extra] = [req for req in reqs if extra in req.marker_extras() and req.applies(extra)]
    return table


def _requirement_problem(req: _Req) -> str | None:
    """Why ``req`` is not met here (``"kenlm: not installed"``), or None when it is."""
    version = _installed_version(req.name)
    if version is None:
        return f"{req.name}: not installed"
    if req.specifier:
        try:
            from packaging.specifiers import SpecifierSet
            from packaging.version import InvalidVersion
        except ImportError:
            return None  # presence is all the fallback parser can check
        try:
            if not SpecifierSet(req.specifier).contains(version, prereleases=True):
                return f"{req.name}: {version} installed, needs {req.specifier}"
        except InvalidVersion:
            return None
    return None


def _extra_problems(extra: str, table: dict[str, list[_Req]], seen: set[str]) -> list[str]:
    if extra in seen:
        return []
    seen = seen | {extra}
    if extra not in table:
        return [f"[{extra}] is not an extra of the installed speechssl"]
    problems = []
    for req in table[extra]:
        if _normalise(req.name) == "speechssl":  # [all] = speechssl[bench,report,...]
            for nested in req.extras:
                problems += [p for p in _extra_problems(_normalise(nested), table, seen) if p not in problems]
            continue
        problem = _safe(_requirement_problem, req)
        if problem:
            problems.append(problem)
    return problems


def probe_extras(requires: list[str] | None = None) -> dict[str, Any]:
    """``{extra: {"satisfied": bool, "missing": [...], "requires": [...]}}``, "core" first."""
    table = _extras_table(requires)
    out: dict[str, Any] = {}
    for extra, reqs in table.items():
        missing = _safe(_extra_problems, extra, table, set())
        if isinstance(missing, str):  # an error row
            out[extra] = missing
            continue
        out[extra] = {"satisfied": not missing, "missing": missing, "requires": [req.text.split(";")[0].strip()
                                                                                 for req in reqs]}
    return out


# ---------------------------------------------------------------------- tools


def probe_tools() -> dict[str, Any]:
    return {"espeak_ng": _safe(_espeak), "chromium": _safe(_chromium)}


def _espeak() -> dict[str, Any]:
    """The eSpeak NG the synthetic corpus uses: the ``espeakng-loader`` wheel's library
    (:mod:`speechssl.data.synth.espeak` loads it with ctypes; no system package needed)."""
    import ctypes

    version = _installed_version("espeakng-loader")
    if version is None:
        return {"ok": False, "detail": "espeakng-loader " + _package_row("espeakng-loader", _hints())
                + ": `speechssl corpus synth` cannot run"}
    import espeakng_loader

    library, data = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
    if not Path(library).is_file():
        return {"ok": False, "detail": f"library missing at {library}"}
    lib = ctypes.CDLL(library)
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    lib.espeak_Info.restype = ctypes.c_char_p
    engine = (lib.espeak_Info(None) or b"?").decode(errors="replace")
    return {"ok": True, "version": engine, "loader": version, "library": library, "data": data,
            "system_binary": shutil.which("espeak-ng")}


def _chromium() -> dict[str, Any]:
    """Headless Chromium + chromedriver, what the report's browser check needs
    (:mod:`speechssl.benchmark.browser`, looked up where it looks)."""
    from speechssl.benchmark import browser

    chromium, driver = browser._resolve(browser.CHROMIUM), browser._resolve(browser.CHROMEDRIVER)
    info: dict[str, Any] = {"ok": chromium is not None and driver is not None,
                            "chromium": chromium, "chromedriver": driver}
    if chromium is not None:
        info["version"] = _safe(_run, [chromium, "--version"])
    if not info["ok"]:
        missing = [name for name, found in ((browser.CHROMIUM, chromium), (browser.CHROMEDRIVER, driver)) if not found]
        info["detail"] = (f"{', '.join(missing)} not found: the report's browser check is skipped "
                          "(Debian: apt-get install chromium chromium-driver)")
    return info


# ---------------------------------------------------------------------- storage


def dir_usage(path: str | Path, seconds: float = SIZE_SECONDS) -> dict[str, Any]:
    """Disk usage of ``path`` like ``du``: allocated bytes (the apparent size where the
    filesystem reports no blocks), hard links counted once, symlinks not followed.

    Returns ``{"bytes", "files", "complete"}``; ``complete`` is False when the walk stopped
    at the time cap (the counts are then lower bounds) and ``unreadable`` counts directories
    it could not list.
    """
    deadline = time.monotonic() + seconds
    total = files = unreadable = 0
    seen: set[tuple[int, int]] = set()
    stack = [os.fspath(path)]
    complete = True
    while stack:
        if time.monotonic() > deadline:
            complete = False
            break
        current = stack.pop()
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                            continue
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if st.st_nlink > 1:
                        if (st.st_dev, st.st_ino) in seen:
                            continue
                        seen.add((st.st_dev, st.st_ino))
                    blocks = getattr(st, "st_blocks", None)
                    total += blocks * 512 if blocks is not None else st.st_size
                    files += 1
        except OSError:
            unreadable += 1
    out: dict[str, Any] = {"bytes": total, "size": human_size(total), "files": files, "complete": complete}
    if unreadable:
        out["unreadable_dirs"] = unreadable
    return out


def _location(path: Path, sizes: bool, what: str = "dir", **extra: Any) -> dict[str, Any]:
    path = Path(path).expanduser()
    info: dict[str, Any] = {"path": str(path.absolute()), "exists": path.exists()}
    info.update(extra)
    if sizes and path.exists():
        if path.is_dir():
            info.update(dir_usage(path))
        else:
            info.update(_files_usage([path, *[path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal")]]))
    return info


def _files_usage(paths: list[Path]) -> dict[str, Any]:
    total = files = 0
    for p in paths:
        if p.is_file():
            st = p.stat()
            blocks = getattr(st, "st_blocks", None)
            total += blocks * 512 if blocks is not None else st.st_size
            files += 1
    return {"bytes": total, "size": human_size(total), "files": files, "complete": True}


def hf_hub_cache() -> tuple[Path, str]:
    """Where huggingface_hub keeps downloads and which setting said so (its own order:
    ``HF_HUB_CACHE``, the legacy ``HUGGINGFACE_HUB_CACHE``, ``HF_HOME``/hub, then
    ``$XDG_CACHE_HOME``/huggingface/hub, default ``~/.cache/huggingface/hub``)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser(), var
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub", "HF_HOME"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub", "XDG_CACHE_HOME" if xdg else "default"


def default_locations() -> dict[str, Any]:
    """The defaults speechssl's configs and CLI use, relative paths relative to the cwd."""
    from speechssl.benchmark.store import STORE_ENV, default_store
    from speechssl.cli import DEFAULT_DATA_DIR, DEFAULT_DEMO_DIR, DEFAULT_PRETRAIN_DIR
    from speechssl.downstream.config import CacheConfig

    cache = CacheConfig()
    runs = Path(os.path.commonpath([DEFAULT_DEMO_DIR, DEFAULT_PRETRAIN_DIR]))
    return {
        "feature_cache": (Path(cache.dir), {"setting": "cache.dir", "max_gb": cache.max_gb}),
        "result_store": (default_store(), {"setting": f"--store / ${STORE_ENV}"}),
        "runs": (runs, {"setting": "--out of each verb"}),
        "corpus": (DEFAULT_DATA_DIR, {"setting": "--data"}),
    }


def probe_storage(sizes: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"cwd": f"{os.getcwd()} (the relative defaults below resolve here)"}
    locations = _safe(default_locations)
    if isinstance(locations, str):
        out["defaults"] = locations  # error row
        locations = {}
    for name, (path, extra) in locations.items():
        out[name] = _safe(_location, path, sizes, **extra)
    feature_cache = out.get("feature_cache")
    if isinstance(feature_cache, dict) and feature_cache.get("exists"):
        feature_cache["entries"] = _safe(_cache_entries, Path(feature_cache["path"]))
    runs = out.get("runs")
    if sizes and isinstance(runs, dict) and runs.get("exists"):
        runs["largest"] = _safe(_largest_children, Path(runs["path"]))
    hub = _safe(hf_hub_cache)
    if isinstance(hub, str):
        out["hf_hub_cache"] = hub
    else:
        out["hf_hub_cache"] = _safe(_location, hub[0], sizes, setting=hub[1])
        if isinstance(out["hf_hub_cache"], dict) and out["hf_hub_cache"]["exists"]:
            out["hf_hub_cache"]["repos"] = _safe(
                lambda: sum(1 for p in hub[0].iterdir() if p.name.startswith(("models--", "datasets--"))))
    return out


def _cache_entries(root: Path) -> int:
    """Complete feature-cache entries: top-level directories holding ``COMPLETE``."""
    return sum(1 for p in root.iterdir() if not p.name.startswith(".") and (p / "COMPLETE").is_file())


def _largest_children(root: Path, top: int = 6) -> list[str]:
    """The biggest entries right under ``root`` (``"demo 1.2 GiB"``), sharing one time cap."""
    deadline = time.monotonic() + SIZE_SECONDS
    sizes = []
    for child in root.iterdir():
        left = deadline - time.monotonic()
        if left <= 0:
            break
        if child.is_dir() and not child.is_symlink():
            usage = dir_usage(child, seconds=left)
            sizes.append((usage["bytes"], child.name + ("/" if usage["complete"] else "/ (partial)")))
        elif child.is_file():
            sizes.append((_files_usage([child])["bytes"], child.name))
    sizes.sort(reverse=True)
    return [f"{name} {human_size(n)}" for n, name in sizes[:top]]


# ---------------------------------------------------------------------- running


def run_probe(name: str, timeout: float | None = None, **kwargs: Any) -> Any:
    """Section ``name``: ``probe_<name>(**kwargs)`` in a daemon thread, abandoned after
    ``timeout`` seconds; any exception becomes ``{"error": "<one line>"}``."""
    fn = globals()[f"probe_{name}"]
    timeout = PROBES.get(name, 30.0) if timeout is None else timeout
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - SystemExit from a broken import too
            box["error"] = one_line(exc)

    thread = threading.Thread(target=target, name=f"doctor-{name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return {"error": f"timed out after {timeout:g} s (still running; abandoned)"}
    if "error" in box:
        return {"error": box["error"]}
    return box.get("value")


def collect(sizes: bool = True, on_section: Callable[[str, Any], None] | None = None) -> dict[str, Any]:
    """The whole report as a JSON-ready dict; ``on_section(name, value)`` sees each section
    as it is done (the text output streams, so a slow probe does not hide the others)."""
    report: dict[str, Any] = {"format": FORMAT}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in PROBES:
            kwargs = {"sizes": sizes} if name == "storage" else {}
            try:
                report[name] = run_probe(name, **kwargs)
            except Exception as exc:  # noqa: BLE001 - not even the runner may crash doctor
                report[name] = {"error": one_line(exc)}
            if on_section is not None:
                on_section(name, report[name])
    return report


# ---------------------------------------------------------------------- text


def _scalar(value: Any) -> str:
    if value is True:
        return "yes"
    if value is False:
        return "no"
    if value is None:
        return "-"
    return str(value)


def _storage_line(info: dict[str, Any]) -> str:
    text = info["path"]
    if not info.get("exists"):
        text += "  (does not exist)"
    elif "bytes" in info:
        text += f"  {info['size']} in {info['files']} file(s)"
        if not info.get("complete", True):
            text += f" (stopped after {SIZE_SECONDS:g} s: at least this much)"
    details = []
    if isinstance(info.get("entries"), int):
        details.append(f"{info['entries']} complete entries")
    elif isinstance(info.get("entries"), str):
        details.append(info["entries"])
    if isinstance(info.get("repos"), int):
        details.append(f"{info['repos']} repos")
    if info.get("max_gb") is not None:
        details.append(f"cap cache.max_gb={info['max_gb']:g}")
    if info.get("setting") == "default":
        details.append("default; HF_HUB_CACHE or HF_HOME moves it")
    elif info.get("setting"):
        details.append(f"set by {info['setting']}")
    if details:
        text += f"  [{'; '.join(details)}]"
    if isinstance(info.get("largest"), list) and info["largest"]:
        text += "\n" + " " * (KEY_WIDTH + 3) + "largest: " + ", ".join(info["largest"])
    return text


def _section_lines(name: str, section: Any) -> list[str]:
    if isinstance(section, dict) and set(section) == {"error"}:
        return [f"  error: {section['error']}"]
    if not isinstance(section, dict):
        return [f"  {_scalar(section)}"]
    lines = []
    for key, value in section.items():
        if name == "gpus" and key == "devices":
            for dev in value:
                if isinstance(dev, str):
                    lines.append(f"  {'gpu':<{KEY_WIDTH}} {dev}")
                elif dev.get("index") == "mps":
                    lines.append(f"  {'gpu mps':<{KEY_WIDTH}} Apple MPS")
                else:
                    lines.append(f"  {'gpu ' + str(dev['index']):<{KEY_WIDTH}} {dev['name']}, {dev['memory']}, "
                                 f"compute {dev['compute_capability']}, bf16 {_scalar(dev['bf16'])}")
            continue
        if name == "gpus" and key == "count" and section.get("note"):
            continue
        if name == "extras" and isinstance(value, dict):
            status = "yes" if value["satisfied"] else "no (" + "; ".join(value["missing"]) + ")"
            lines.append(f"  {'[' + key + ']' if key != 'core' else 'core':<{KEY_WIDTH}} {status}")
            continue
        if name == "tools" and isinstance(value, dict):
            lines.append(f"  {key:<{KEY_WIDTH}} {_tool_line(key, value)}")
            continue
        if name == "storage" and isinstance(value, dict) and "path" in value:
            lines.append(f"  {key:<{KEY_WIDTH}} {_storage_line(value)}")
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        lines.append(f"  {key:<{KEY_WIDTH}} {_scalar(value)}")
    return lines


def _tool_line(key: str, info: dict[str, Any]) -> str:
    if not info.get("ok"):
        return "missing: " + str(info.get("detail", "not found"))
    if key == "espeak_ng":
        return f"ok, eSpeak NG {info['version']} (espeakng-loader {info['loader']}, {info['library']})"
    version = info.get("version")
    return f"ok, {version if version else ''} ({info['chromium']}, {info['chromedriver']})".replace("ok,  (", "ok (")


def format_section(name: str, section: Any) -> str:
    return "\n".join([name, *_section_lines(name, section)])


def format_report(report: dict[str, Any]) -> str:
    parts = [f"speechssl doctor ({report.get('format', FORMAT)})"]
    for name in PROBES:
        if name in report:
            parts.append(_safe(format_section, name, report[name]))
    return "\n".join(parts)


def run_doctor(as_json: bool = False, sizes: bool = True, out: Any = None) -> int:
    """``speechssl doctor``: print the report (text as it goes, or JSON at the end); exit 0."""
    out = sys.stdout if out is None else out
    if as_json:
        report = collect(sizes=sizes)
        out.write(json.dumps(report, indent=2, default=str) + "\n")
        return 0

    def show(name: str, section: Any) -> None:
        text = _safe(format_section, name, section)
        out.write(text + "\n")
        out.flush()

    out.write(f"speechssl doctor ({FORMAT}): paste all of this into a bug report\n")
    collect(sizes=sizes, on_section=show)
    return 0
