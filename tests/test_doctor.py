"""``speechssl doctor``: the report's sections, failure-proof probes, extras from metadata, sizes."""

import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from speechssl import __version__, cli, doctor

SPEECHSSL = Path(sys.executable).with_name("speechssl")
SECTIONS = {"format", *doctor.PROBES}


@pytest.fixture
def quiet_env(monkeypatch, tmp_path):
    """Doctor's relative defaults and the hub cache point into an empty temp dir."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("SPEECHSSL_STORE", str(tmp_path / "results.db"))
    return tmp_path


def _env(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_CACHE=str(tmp_path / "hub"),
               SPEECHSSL_STORE=str(tmp_path / "results.db"))
    return env


# ---------------------------------------------------------------- in-process


def test_collect_has_every_section(quiet_env):
    report = doctor.collect(sizes=False)
    assert set(report) == SECTIONS and report["format"] == doctor.FORMAT
    assert report["speechssl"]["version"] == __version__
    assert report["python"]["executable"] == sys.executable
    assert report["torch"]["build"] in ("CPU-only",) or report["torch"]["build"].startswith(("CUDA", "ROCm"))
    assert isinstance(report["torch"]["intra_op_threads"], int)
    assert "devices" in report["gpus"]
    assert set(report["packages"]) == set(doctor.KEY_PACKAGES)
    assert report["packages"]["numpy"][0].isdigit()
    assert "core" in report["extras"] and isinstance(report["extras"]["core"]["satisfied"], bool)
    assert set(report["tools"]) == {"espeak_ng", "chromium"}
    for key in ("cwd", "feature_cache", "result_store", "runs", "corpus", "hf_hub_cache"):
        assert key in report["storage"], key
    assert report["storage"]["result_store"]["path"] == str(quiet_env / "results.db")
    assert report["storage"]["hf_hub_cache"]["setting"] == "HF_HUB_CACHE"
    json.dumps(report)  # JSON-ready as it is
    text = doctor.format_report(report)
    for name in doctor.PROBES:
        assert f"\n{name}\n" in text + "\n"


def test_cli_in_process_json_and_text(quiet_env, capsys):
    assert cli.main(["doctor", "--json", "--no-sizes"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == SECTIONS
    assert cli.main(["doctor", "--no-sizes"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("speechssl doctor") and "\ntorch\n" in text and "\nextras\n" in text


@pytest.mark.skipif(doctor._installed_version("espeakng-loader") is None, reason="espeakng-loader not installed")
def test_espeak_is_found():
    tools = doctor.probe_tools()
    espeak = tools["espeak_ng"]
    assert espeak["ok"], espeak  # a declared dependency: the synthetic corpus needs it
    assert espeak["version"][0].isdigit() and Path(espeak["library"]).is_file()
    assert isinstance(tools["chromium"], dict) and "ok" in tools["chromium"]


def test_espeak_missing_names_its_extra(monkeypatch):
    monkeypatch.setattr(doctor, "_installed_version", lambda name: None)
    monkeypatch.setattr(doctor, "_speechssl_requires", lambda: ['espeakng-loader>=0.2; extra == "bench"'])
    espeak = doctor.probe_tools()["espeak_ng"]
    assert espeak["ok"] is False
    assert espeak["detail"] == "espeakng-loader not installed (extra: bench): `speechssl corpus synth` cannot run"
    assert "missing: espeakng-loader not installed" in doctor.format_section("tools", {"espeak_ng": espeak})


def test_stale_metadata_is_flagged(tmp_path):
    meta, pyproject = tmp_path / "METADATA", tmp_path / "pyproject.toml"
    meta.write_text("Name: speechssl")
    pyproject.write_text("[project]")

    class File:
        name = "METADATA"

        def locate(self):
            return meta

    class Dist:
        files = [File()]

    os.utime(meta, (1_000, 1_000))
    assert "newer than the installed metadata" in doctor._metadata_is_stale(Dist, pyproject)
    os.utime(pyproject, (500, 500))
    assert doctor._metadata_is_stale(Dist, pyproject) is None


# ---------------------------------------------------------------- packages and extras


def test_missing_package_shows_as_not_installed(monkeypatch):
    real = doctor._installed_version
    monkeypatch.setattr(doctor, "_installed_version", lambda name: None if name == "jiwer" else real(name))
    monkeypatch.setattr(doctor, "_speechssl_requires", lambda: ["numpy>=1", 'jiwer>=3; extra == "bench"'])
    rows = doctor.probe_packages()
    assert rows["jiwer"] == "not installed (extra: bench)"
    assert rows["kenlm"] in ("not installed",) or rows["kenlm"][0].isdigit()  # installed or not: no hint here
    assert rows["numpy"][0].isdigit()
    extras = doctor.probe_extras()
    assert extras["core"]["satisfied"] is True
    assert extras["bench"] == {"satisfied": False, "missing": ["jiwer: not installed"], "requires": ["jiwer>=3"]}
    text = doctor.format_section("extras", extras)
    assert "[bench]" in text and "no (jiwer: not installed)" in text


def test_extras_from_metadata_markers_versions_and_nesting(monkeypatch):
    versions = {"numpy": "2.0.0", "kenlm": None, "pygtrie": "2.5", "matplotlib": "3.9", "pytest": "8.1"}
    monkeypatch.setattr(doctor, "_installed_version", lambda name: versions.get(name))
    requires = [
        "numpy>=1.26",
        'kenlm>=0.2; extra == "lm"',
        'pygtrie>=2.1; extra == "lm"',
        'matplotlib>=99; extra == "report"',
        'pytest>=8; extra == "dev" and python_version >= "3"',
        'nothere; extra == "dev" and python_version < "3"',  # not needed on this Python
        'speechssl[lm,report]; extra == "all"',
        'speechssl[dev]; extra == "devall"',
    ]
    extras = doctor.probe_extras(requires)
    assert list(extras) == ["core", "all", "dev", "devall", "lm", "report"]
    assert extras["core"]["satisfied"] and extras["core"]["requires"] == ["numpy>=1.26"]
    assert extras["lm"]["missing"] == ["kenlm: not installed"]
    assert extras["report"]["missing"] == ["matplotlib: 3.9 installed, needs >=99"]
    assert not extras["all"]["satisfied"] and len(extras["all"]["missing"]) == 2
    assert extras["dev"]["satisfied"] and extras["dev"]["requires"] == ["pytest>=8"]
    assert extras["devall"]["satisfied"]
    # the real, installed metadata parses too
    assert "core" in doctor.probe_extras()


def test_extras_without_packaging(monkeypatch):
    for mod in ("packaging.requirements", "packaging.specifiers", "packaging.version"):
        monkeypatch.setitem(sys.modules, mod, None)  # import -> ImportError: the small parser
    req = doctor._Req('kenlm[x, y] >= 0.2 ; extra == "lm"')
    assert (req.name, req.extras, req.specifier, req.marker_extras()) == ("kenlm", ["x", "y"], ">=0.2", ["lm"])
    assert req.applies("lm") and not req.applies("")
    monkeypatch.setattr(doctor, "_installed_version", lambda name: {"numpy": "1.0"}.get(name))
    extras = doctor.probe_extras(["numpy>=99", "kenlm; extra == 'lm'"])
    assert extras["core"]["satisfied"]  # presence only without packaging
    assert extras["lm"]["missing"] == ["kenlm: not installed"]


# ---------------------------------------------------------------- failures stay rows


def test_failing_probe_is_a_row_not_a_crash(monkeypatch, quiet_env):
    def boom():
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(doctor, "probe_tools", boom)
    report = doctor.collect(sizes=False)
    assert report["tools"] == {"error": "RuntimeError: boom"}
    assert report["packages"]["numpy"][0].isdigit()  # the others still ran
    out = io.StringIO()
    assert doctor.run_doctor(out=out, sizes=False) == 0
    text = out.getvalue()
    assert "\ntools\n  error: RuntimeError: boom\n" in text and "\nstorage\n" in text
    out = io.StringIO()
    assert doctor.run_doctor(as_json=True, out=out, sizes=False) == 0
    assert json.loads(out.getvalue())["tools"] == {"error": "RuntimeError: boom"}


def test_failing_row_is_a_row(monkeypatch):
    real = doctor._installed_version

    def lookup(name):
        if name == "scipy":
            raise ValueError("corrupt METADATA")
        return real(name)

    monkeypatch.setattr(doctor, "_installed_version", lookup)
    rows = doctor.probe_packages()
    assert rows["scipy"] == "error: ValueError: corrupt METADATA"
    assert rows["numpy"][0].isdigit()
    assert "  scipy             error: ValueError: corrupt METADATA" in doctor.format_section("packages", rows)


def test_hanging_probe_times_out(monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(doctor, "probe_python", lambda: release.wait(30))
    try:
        assert doctor.run_probe("python", timeout=0.2) == {"error": "timed out after 0.2 s (still running; abandoned)"}
    finally:
        release.set()


def test_gpu_rows():
    class Props:
        name, total_memory, major, minor, multi_processor_count = "Fake H100", 80 * 2**30, 9, 0, 132

    class Old(Props):
        name, major, minor = "Fake T4", 7, 5

    class FakeCuda:
        @staticmethod
        def get_device_properties(index):
            return [Props, Old][index]

    class FakeTorch:
        cuda = FakeCuda

    new, old = doctor._cuda_device(FakeTorch, 0), doctor._cuda_device(FakeTorch, 1)
    assert new["bf16"] is True and new["compute_capability"] == "9.0" and new["memory"] == "80.0 GiB"
    assert old["bf16"] is False
    text = doctor.format_section("gpus", {"count": 2, "devices": [new, old, "error: RuntimeError: x"]})
    assert "gpu 0             Fake H100, 80.0 GiB, compute 9.0, bf16 yes" in text
    assert "bf16 no" in text and "error: RuntimeError: x" in text
    none = doctor.format_section("gpus", {"count": 0, "devices": [], "note": "none (CPU-only torch build)"})
    assert none == "gpus\n  note              none (CPU-only torch build)"


# ---------------------------------------------------------------- storage


def test_sizes_of_a_tmp_cache(quiet_env):
    entry = quiet_env / "runs" / "feature_cache" / "abc123"
    entry.mkdir(parents=True)
    (entry / "shard-00000.npy").write_bytes(os.urandom(10_000))
    (entry / "COMPLETE").write_text("abc123")
    (quiet_env / "runs" / "feature_cache" / ".tmp-x-1-ff").mkdir()  # a builder's temp: not an entry
    (quiet_env / "runs" / "demo").mkdir()
    (quiet_env / "runs" / "demo" / "log.txt").write_bytes(os.urandom(3000))
    (quiet_env / "results.db").write_bytes(os.urandom(5000))
    (quiet_env / "results.db-wal").write_bytes(os.urandom(1000))
    blob = quiet_env / "hub" / "models--org--m" / "blobs" / "deadbeef"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(os.urandom(7000))
    snap = quiet_env / "hub" / "models--org--m" / "snapshots" / "0" / "model.bin"
    snap.parent.mkdir(parents=True)
    snap.symlink_to(blob)  # not followed: the blob counts once

    storage = doctor.probe_storage(sizes=True)
    cache = storage["feature_cache"]
    assert cache["path"] == str(quiet_env / "runs" / "feature_cache")
    assert cache["exists"] and cache["complete"] and cache["files"] == 2 and cache["entries"] == 1
    assert 10_000 <= cache["bytes"] < 10_000 + 64 * 1024
    assert cache["max_gb"] > 0 and cache["setting"] == "cache.dir"
    store = storage["result_store"]
    assert store["files"] == 2 and store["bytes"] >= 6000
    runs = storage["runs"]
    assert runs["bytes"] >= 13_000 and runs["largest"][0].startswith("feature_cache/ ")
    assert any(item.startswith("demo/ ") for item in runs["largest"])
    hub = storage["hf_hub_cache"]
    assert hub["repos"] == 1 and 7000 <= hub["bytes"] < 7000 + 64 * 1024
    assert storage["corpus"] == {"path": str(quiet_env / "data" / "synth"), "exists": False, "setting": "--data"}
    text = doctor.format_section("storage", storage)
    assert "1 complete entries" in text and "(does not exist)" in text and "largest: feature_cache/" in text
    assert "bytes" not in doctor.probe_storage(sizes=False)["feature_cache"]


def test_dir_usage_links_and_time_cap(tmp_path):
    (tmp_path / "d").mkdir()
    big = tmp_path / "d" / "a.bin"
    big.write_bytes(os.urandom(8192))
    os.link(big, tmp_path / "d" / "b.bin")  # a hard link: counted once
    (tmp_path / "elsewhere.bin").write_bytes(os.urandom(100_000))
    (tmp_path / "d" / "link").symlink_to(tmp_path / "elsewhere.bin")
    usage = doctor.dir_usage(tmp_path / "d")
    assert usage["complete"] and 8192 <= usage["bytes"] < 8192 + 16 * 1024
    capped = doctor.dir_usage(tmp_path / "d", seconds=-1)
    assert capped["complete"] is False and capped["bytes"] == 0
    missing = doctor.dir_usage(tmp_path / "nope")
    assert missing["bytes"] == 0 and missing["unreadable_dirs"] == 1


def test_human_size_and_hub_location(monkeypatch, tmp_path):
    assert [doctor.human_size(n) for n in (0, 1023, 1536, 5 * 2**30)] == ["0 B", "1023 B", "1.5 KiB", "5.0 GiB"]
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    assert doctor.hf_hub_cache() == (Path.home() / ".cache" / "huggingface" / "hub", "default")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert doctor.hf_hub_cache() == (tmp_path / "xdg" / "huggingface" / "hub", "XDG_CACHE_HOME")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert doctor.hf_hub_cache() == (tmp_path / "hf" / "hub", "HF_HOME")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "c"))
    assert doctor.hf_hub_cache() == (tmp_path / "c", "HF_HUB_CACHE")


# ---------------------------------------------------------------- the installed command


def test_command_text_and_json(tmp_path):
    text = subprocess.run([str(SPEECHSSL), "doctor"], cwd=tmp_path, env=_env(tmp_path), capture_output=True,
                          text=True, timeout=300)
    assert text.returncode == 0, text.stderr
    for header in ("speechssl", "python", "system", "torch", "gpus", "packages", "extras", "tools", "storage"):
        assert f"\n{header}\n" in text.stdout, header
    assert f"version           {__version__}" in text.stdout
    assert "Traceback" not in text.stdout + text.stderr

    js = subprocess.run([str(SPEECHSSL), "doctor", "--json"], cwd=tmp_path, env=_env(tmp_path),
                        capture_output=True, text=True, timeout=300)
    assert js.returncode == 0, js.stderr
    report = json.loads(js.stdout)
    assert set(report) == SECTIONS
    assert Path(report["python"]["executable"]).name.startswith("python")
    assert report["system"]["env"].get("OMP_NUM_THREADS") == "1"
    assert report["torch"]["intra_op_threads"] == 1
    assert report["storage"]["runs"] == {"path": str(tmp_path / "runs"), "exists": False,
                                         "setting": "--out of each verb"}
    assert not any(isinstance(section, dict) and set(section) == {"error"} for section in report.values())
