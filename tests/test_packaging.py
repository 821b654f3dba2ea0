"""Packaging: the wheel, its metadata and extras, and a core install without any extra.

Offline throughout. A core-only install is simulated in a subprocess whose import system
cannot see the optional packages (a ``sitecustomize`` that hides them from every finder,
so ``import scipy`` fails and ``importlib.util.find_spec("scipy")`` is None, as when it is
not installed; spawned workers inherit it through PYTHONPATH). The wheel is built with
``pip wheel --no-build-isolation`` from a copy of the tree, and ``pip install --dry-run
--no-index`` of it proves that installing it with an extra keeps the installed torch.
The online end-to-end check (fresh venv, real install, a tiny benchmark) is
``make wheel-check`` (scripts/wheel_check.py).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from speechssl import extras
from speechssl.errors import MissingExtraError, SpeechSSLError

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "speechssl"
CORE = {"torch", "numpy", "soundfile", "lhotse", "urllib3", "pyyaml", "tqdm"}
EXTRAS = {"bench", "pretrain", "report", "energy", "slurm", "lm", "ge2e", "all", "dev"}

_HIDE = '''
import os, sys
HIDDEN = set(os.environ["SPEECHSSL_TEST_HIDE"].split(","))

class _Hide:
    """Wraps a meta-path finder: hidden top-level packages are not found."""
    def __init__(self, inner):
        self.inner = inner
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        find = getattr(self.inner, "find_spec", None)
        return find(name, path, target) if find else None
    def __getattr__(self, attr):
        return getattr(self.inner, attr)

sys.meta_path[:] = [_Hide(finder) for finder in sys.meta_path]
'''


def _run_core_only(tmp_path: Path, script: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``script`` in a fresh interpreter that cannot import any optional package."""
    site = tmp_path / "hide_site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_HIDE)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
               SPEECHSSL_TEST_HIDE=",".join(sorted(extras.PACKAGES)), OMP_NUM_THREADS="1",
               SPEECHSSL_STORE=str(tmp_path / "default_store.db"))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)


# Calls speechssl's CLI in-process, verb after verb, and prints one JSON line per call.
_CLI_CALLS = '''
import contextlib, io, json, sys
from speechssl.cli import main

def call(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(argv))
        except SystemExit as exc:  # argparse: --help, --version
            rc = exc.code
    print(json.dumps({"argv": list(argv), "rc": rc, "out": out.getvalue(), "err": err.getvalue()}))
'''


def _calls(proc: subprocess.CompletedProcess) -> dict[str, dict]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {" ".join(c["argv"]): c for c in lines}


# ---------------------------------------------------------------- speechssl.extras


def test_require_names_package_purpose_and_extra():
    with pytest.raises(MissingExtraError) as info:
        extras.require("jiwer_is_not_installed_anywhere", "ASR scoring", extra="bench")
    message = str(info.value)
    assert message == ("jiwer_is_not_installed_anywhere is needed for ASR scoring: "
                       "pip install 'speechssl[bench]'")
    assert isinstance(info.value, SpeechSSLError) and isinstance(info.value, ImportError)
    assert info.value.exit_code == 1 and "\n" not in message


def test_require_uses_the_table_and_returns_the_module():
    assert extras.require("json").dumps([]) == "[]"
    err = extras._error("jiwer", None, None)
    assert str(err) == "jiwer is needed for WER/CER scoring: pip install 'speechssl[bench]'"
    assert "pip install --no-deps 'resemblyzer==0.1.4'" in str(extras._error("resemblyzer", None, None))
    assert "[report]" in str(extras._error("matplotlib", "figures", None))


def test_require_keeps_a_broken_package_s_own_error(tmp_path, monkeypatch):
    # An installed package that fails inside (here: one of *its* imports is missing) is
    # not "not installed": the original error stays, so the real cause is not hidden.
    (tmp_path / "brokenpkg_for_test").mkdir()
    (tmp_path / "brokenpkg_for_test" / "__init__.py").write_text("import a_dependency_nobody_has\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as info:
        extras.require("brokenpkg_for_test", "nothing")
    assert not isinstance(info.value, MissingExtraError)


def test_lazy_import_defers_and_then_raises_one_error():
    lazy = extras.lazy_import("not_installed_either_xyz", "a test", extra="report")
    with pytest.raises(MissingExtraError, match=r"pip install 'speechssl\[report\]'"):
        lazy.anything
    json_lazy = extras.lazy_import("json")
    assert json_lazy.dumps({"a": 1}) == '{"a": 1}' and json_lazy.loads("2") == 2


def test_missing_extra_translates_known_packages_only():
    known = extras.missing_extra(ModuleNotFoundError("No module named 'submitit'", name="submitit"))
    assert str(known) == "submitit is needed for SLURM sweeps: pip install 'speechssl[slurm]'"
    assert extras.missing_extra(ModuleNotFoundError("x", name="not_ours")) is None
    assert extras.missing_extra(ValueError("x")) is None


def test_transformers_refusing_the_installed_torch_is_one_clear_error(monkeypatch):
    """transformers 5 disables its models under torch < 2.6 (speechssl's floor is 2.4)."""
    import types

    fake = types.ModuleType("transformers")
    fake.__version__ = "5.0.0"
    fake_utils = types.ModuleType("transformers.utils")
    fake_utils.is_torch_available = lambda: False
    fake.utils = fake_utils
    monkeypatch.setitem(sys.modules, "transformers", fake)
    monkeypatch.setitem(sys.modules, "transformers.utils", fake_utils)
    err = extras.missing_extra(ImportError("AutoModel requires PyTorch >= 2.6, but PyTorch was not found"))
    import torch

    assert str(err) == (f"transformers 5.0.0 needs torch >= 2.6 for Hugging Face encoders, this environment has "
                        f"torch {torch.__version__}: upgrade torch, or keep it and pip install 'transformers<5'")
    fake_utils.is_torch_available = lambda: True
    assert extras.missing_extra(ImportError("something else")) is None


def test_missing_extra_error_pickles():
    import pickle

    err = extras._error("sklearn", "k-means targets", "pretrain")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is MissingExtraError and str(back) == str(err) and back.name == "sklearn"


def test_check_installed_does_not_import():
    extras.check_installed(["json"], "nothing")
    with pytest.raises(MissingExtraError, match="needed for scoring"):
        extras.check_installed(["json", "no_such_module_abc"], "scoring")


# ---------------------------------------------------------------- a core-only install


def test_core_install_runs_the_light_verbs(tmp_path):
    """`import speechssl`, --help, config-keys and the result store with no extra installed."""
    csv = ROOT / "benchmarks" / "data" / "seed002_table1.csv"
    store = tmp_path / "paper.db"
    proc = _run_core_only(tmp_path, _CLI_CALLS + f'''
hidden = sys.modules["sitecustomize"].HIDDEN
try:
    import scipy
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("the simulation does not hide scipy")
import importlib.util
assert importlib.util.find_spec("sklearn") is None
import speechssl, speechssl.extras, speechssl.cli
call("--help")
call("--version")
for verb in ("bench", "corpus-synth", "demo", "pretrain", "sweep"):
    call("config-keys", verb)
call("results", "import", {str(csv)!r}, "--store", {str(store)!r})
call("results", "list", "--store", {str(store)!r})
loaded = sorted(m for m in sys.modules if m.partition(".")[0] in hidden)
print(json.dumps({{"argv": ["loaded"], "rc": 0, "out": " ".join(loaded), "err": ""}}))
''')
    calls = _calls(proc)
    for argv, c in calls.items():
        assert c["rc"] == 0, (argv, c["err"])
    assert "config-keys" in calls["--help"]["out"]
    assert "optim.lr" in calls["config-keys pretrain"]["out"]
    assert "run(s)" in calls[f"results import {csv} --store {store}"]["out"]
    assert "finished" in calls[f"results list --store {store}"]["out"]
    assert calls["loaded"]["out"] == "", f"optional packages imported by core paths: {calls['loaded']['out']}"


def test_core_install_names_the_extra_a_verb_needs(tmp_path):
    """A verb that needs an extra fails fast with one line naming the package and the extra."""
    csv = ROOT / "benchmarks" / "data" / "seed002_table1.csv"
    store = tmp_path / "paper.db"
    proc = _run_core_only(tmp_path, _CLI_CALLS + f'''
call("results", "import", {str(csv)!r}, "--store", {str(store)!r})
call("stats", "robustness", "--store", {str(store)!r})
call("corpus", "synth", "--out", "synth", "--hours", "0.01")
call("bench", "--upstream", "mfcc", "--task", "lid", "--data", "synth", "--no-store")
''')
    calls = _calls(proc)
    expected = {
        "stats robustness": "error: scipy is needed for rank statistics: pip install 'speechssl[report]'",
        "corpus synth": "error: espeakng-loader is needed for the synthetic corpus (eSpeak NG): "
                        "pip install 'speechssl[bench]'",
        "bench --upstream": "error: scikit-learn is needed for scoring the lid task: pip install 'speechssl[bench]'",
    }
    for prefix, line in expected.items():
        (c,) = [c for argv, c in calls.items() if argv.startswith(prefix)]
        assert c["rc"] == 1, c
        assert c["err"].strip() == line, c["err"]
    assert not (tmp_path / "synth").exists(), "corpus synth must fail before it writes anything"


# ---------------------------------------------------------------- Python versions


def _python310() -> str | None:
    """A working Python 3.10 interpreter (on PATH or under pyenv), or None."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = sorted(pyenv.glob("3.10.*/bin/python3.10"), reverse=True) if pyenv.is_dir() else []
    candidates.append(shutil.which("python3.10"))  # may be a pyenv shim that does not run
    for python in filter(None, candidates):
        try:
            probe = subprocess.run([str(python), "-c", "import sys; print(sys.version_info[:2])"],
                                   capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        if probe.returncode == 0 and probe.stdout.strip() == "(3, 10)":
            return str(python)
    return None


def test_sources_are_python_310_compatible():
    """requires-python says >=3.10: every file compiles there, and every name imported from
    the standard library exists there (typing.Self, tomllib, datetime.UTC are 3.11)."""
    python = _python310()
    if python is None:
        pytest.skip("no Python 3.10 interpreter on this machine")
    imports: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imports.setdefault(node.module, set()).update(a.name for a in node.names)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    imports.setdefault(alias.name, set())
    check = textwrap.dedent('''
        import importlib, importlib.util, json, pathlib, sys
        src, imports = sys.argv[1], json.loads(sys.argv[2])
        problems = []
        for path in sorted(pathlib.Path(src).rglob("*.py")):
            try:
                compile(path.read_text(encoding="utf-8"), str(path), "exec")
            except SyntaxError as exc:
                problems.append(f"{path}: {exc}")
        for module, names in sorted(imports.items()):
            if module.partition(".")[0] not in sys.stdlib_module_names:
                continue
            try:
                mod = importlib.import_module(module)
            except ImportError:
                problems.append(f"no module {module}")
                continue
            problems += [f"{module}.{n}" for n in names if n != "*" and not hasattr(mod, n)
                         and importlib.util.find_spec(f"{module}.{n}") is None]
        print("\\n".join(problems))
    ''')
    out = subprocess.run([python, "-c", check, str(SRC), json.dumps({k: sorted(v) for k, v in imports.items()})],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"not available on Python 3.10:\n{out.stdout}"


# ---------------------------------------------------------------- the wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built offline from a copy of the tree (an in-tree build would leave build/)."""
    tree = tmp_path_factory.mktemp("tree")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, tree / name)
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "--quiet", "-w", str(out), str(tree)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = out.glob("speechssl-*.whl")
    return path


def _metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(zf.read(name).decode("utf-8"))


def _requirements(meta) -> dict[str, dict[str, str]]:
    """extra ("" for the core) -> {distribution name (normalised): full requirement}."""
    found: dict[str, dict[str, str]] = {}
    for req in meta.get_all("Requires-Dist") or []:
        spec, _, marker = req.partition(";")
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", marker)
        name = re.match(r"[A-Za-z0-9._-]+", spec.strip()).group(0)
        found.setdefault(extra.group(1) if extra else "", {})[_norm(name)] = spec.strip()
    return found


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_wheel_metadata(wheel):
    meta = _metadata(wheel)
    reqs = _requirements(meta)
    assert set(reqs[""]) == CORE, reqs[""]
    torch = reqs[""]["torch"].replace(" ", "")
    assert re.fullmatch(r"torch>=[0-9.]+", torch), f"torch must be a lower bound, not {torch}"
    assert meta["Requires-Python"].replace(" ", "") == ">=3.10"
    assert EXTRAS <= set(meta.get_all("Provides-Extra")), meta.get_all("Provides-Extra")
    # [all] is every extra a user runs, except the two installed by hand (lm, ge2e).
    all_extras = re.fullmatch(r"speechssl\[([a-z,]+)\]", reqs["all"]["speechssl"].replace(" ", "")).group(1)
    assert set(all_extras.split(",")) == {"bench", "pretrain", "report", "energy", "slurm"}
    # speechssl.extras.PACKAGES, the table behind the error messages, agrees with pyproject.
    for module, known in extras.PACKAGES.items():
        if module in extras._SPECIAL_HINTS and known.extra == "lm":
            continue  # pyctcdecode: installed --no-deps by `make lm`, not through the extra
        assert _norm(known.distribution) in reqs.get(known.extra, {}), (module, known)


def test_wheel_holds_every_package_file(wheel):
    """Every file under src/speechssl (modules and any data file the code reads) is in the
    wheel, and the console script is declared."""
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        (entry,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_points = zf.read(entry).decode()
    expected = {
        "speechssl/" + p.relative_to(SRC).as_posix()
        for p in SRC.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    assert expected - names == set()
    assert re.search(r"^speechssl\s*=\s*speechssl\.cli:main$", entry_points, re.M)


@pytest.mark.parametrize("extra", ["bench", "all"])
def test_installing_the_wheel_keeps_the_installed_torch(wheel, tmp_path, extra):
    """pip resolves `<wheel>[extra]` against this environment without an index: nothing but
    speechssl itself is to be installed; torch above all stays as it is."""
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--quiet", "--report", str(report),
         f"{wheel}[{extra}]"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    planned = {_norm(item["metadata"]["name"]): item["metadata"]["version"]
               for item in json.loads(report.read_text())["install"]}
    assert set(planned) == {"speechssl"}, planned
