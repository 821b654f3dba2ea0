"""Security of everything speechssl loads (issue 17, item 5).

A file a user was handed is data, never code:

* every checkpoint / weights load goes through :func:`speechssl.fsutil.safe_torch_load`
  (``torch.load(weights_only=True)``), safetensors or ``np.load(allow_pickle=False)``; a
  pickle that would run code is refused in one line of ours (torch's own text is a page
  that advises ``weights_only=False``, i.e. running the file);
* nothing in ``src/speechssl`` calls ``eval``/``exec``, unpickles a file, ``yaml.load``s
  unsafely or runs a shell, except the audited cases of :data:`ALLOWED` (a scan of the AST);
* Kaldi pipe commands run only with ``allow_pipes=true``, audio outside ROOT only with
  ``allow_outside=true``;
* manifest paths cannot leave the data directory, and manifests cannot name commands;
* the HTML report escapes every string that comes from data.

The payload used throughout (:class:`_RunsCode`) calls ``os.mkdir(marker)`` when unpickled:
a harmless stand-in for ``os.system``. :func:`test_the_payload_really_runs_code` shows that
it does run under a plain unpickler, so the other tests' "marker absent" means something.
"""

from __future__ import annotations

import ast
import gzip
import html
import json
import os
import re
from pathlib import Path

import pytest
import torch

from conftest import write_recording
from speechssl.errors import ConfigError, SpeechSSLError

SRC = Path(__file__).resolve().parents[2] / "src" / "speechssl"
CKPT_FORMAT = "speechssl.pretrain/1"

# ---------------------------------------------------------------- the payload


class _RunsCode:
    """Unpickling this calls ``os.mkdir(marker)``: what ``os.system(...)`` would be in an attack."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "CODE_WAS_RUN"


def _save_evil(path: Path, marker: Path, layout: str = "checkpoint") -> Path:
    """A ``torch.save`` file shaped like what the loader expects, with the payload inside."""
    payload = _RunsCode(marker)
    obj = {
        "checkpoint": {"format": CKPT_FORMAT, "config": {}, "model": payload},
        "state_dict": {"encoder.weight": payload},
        "ge2e": {"model_state": payload},
    }[layout]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


def _assert_one_line_of_ours(exc: BaseException, marker: Path, *, refused: bool = True) -> str:
    message = str(exc)
    assert isinstance(exc, SpeechSSLError), f"{type(exc).__name__}: {message}"
    assert "\n" not in message, f"multi-line message: {message!r}"
    assert "weights_only=False" not in message and "weights_only" not in message, message
    assert "trusted source" not in message, message  # torch's advice to load it anyway
    if refused:
        assert "refused" in message and "never" in message, message
    # Raised `from None`: an unexpected traceback would not print torch's text either.
    assert exc.__cause__ is None and exc.__suppress_context__, message
    assert not marker.exists(), "the file's code was run"
    return message


def test_the_payload_really_runs_code(tmp_path, marker):
    """The control: unpickled the unsafe way, the file runs its code."""
    path = _save_evil(tmp_path / "evil.pt", marker)
    torch.load(path, weights_only=False)  # only here, in a test, on our own payload
    assert marker.is_dir()


# ---------------------------------------------------------------- 1. every torch.load site


def test_pretraining_resume_refuses_a_checkpoint_that_runs_code(tmp_path, marker):
    from speechssl.pretrain.checkpoint import latest_loadable, load_checkpoint, load_pretraining_model

    ckpt_dir = tmp_path / "run" / "checkpoints"
    evil = _save_evil(ckpt_dir / "step_00000010.pt", marker)
    with pytest.raises(SpeechSSLError) as info:
        load_checkpoint(evil)
    message = _assert_one_line_of_ours(info.value, marker)
    assert message.startswith(f"{evil}: refused: not a plain tensor checkpoint (it names posix.mkdir")
    with pytest.raises(SpeechSSLError) as info:
        load_pretraining_model(evil)
    _assert_one_line_of_ours(info.value, marker)
    # Resume (Trainer._try_resume) walks the step checkpoints newest first: skipped, reported in one line.
    with pytest.warns(UserWarning) as caught:
        assert latest_loadable(ckpt_dir) is None
    (warning,) = [w for w in caught if "step 10" in str(w.message)]
    assert "refused" in str(warning.message) and "\n" not in str(warning.message)
    assert "weights_only" not in str(warning.message) and not marker.exists()


def test_ckpt_upstream_refuses_a_checkpoint_that_runs_code(tmp_path, marker):
    from speechssl.upstream import build_upstream

    run = tmp_path / "run"
    _save_evil(run / "checkpoints" / "best.pt", marker)
    for spec in (f"ckpt:{run}", f"ckpt:{run / 'checkpoints' / 'best.pt'}"):
        with pytest.raises(SpeechSSLError) as info:
            build_upstream(spec)
        _assert_one_line_of_ours(info.value, marker)


def test_bench_probe_checkpoint_refused_through_the_shared_loader(tmp_path, marker):
    """A bench run's ``best.pt`` (probe + featurizer) is written, never loaded, by speechssl
    today; :func:`test_source_has_no_code_execution` keeps any future reader on
    ``safe_torch_load``. Both ways one could feed it back in are refused."""
    from speechssl.fsutil import safe_torch_load
    from speechssl.upstream import build_upstream

    best = _save_evil(tmp_path / "bench" / "asr" / "best.pt", marker, "state_dict")
    with pytest.raises(SpeechSSLError) as info:
        safe_torch_load(best, "probe checkpoint")
    assert "not a plain tensor probe checkpoint" in _assert_one_line_of_ours(info.value, marker)
    with pytest.raises(SpeechSSLError) as info:
        build_upstream(f"ckpt:{best}")
    _assert_one_line_of_ours(info.value, marker)


def test_tuned_upstream_refuses_a_pickle_posing_as_safetensors(tmp_path, marker):
    from speechssl.upstream import build_upstream

    run = tmp_path / "bench-run"
    _save_evil(run / "adapted_upstream.safetensors", marker, "state_dict")
    with pytest.raises(ConfigError) as info:
        build_upstream(f"tuned:{run}")
    message = _assert_one_line_of_ours(info.value, marker, refused=False)
    assert "not a complete safetensors file" in message


def test_ge2e_weights_that_run_code_are_refused(tmp_path, marker):
    from speechssl.upstream.ge2e import GE2E

    weights = _save_evil(tmp_path / "pretrained.pt", marker, "ge2e")
    with pytest.raises(SpeechSSLError) as info:
        GE2E(weights)
    assert "GE2E weights file" in _assert_one_line_of_ours(info.value, marker)


TINY_HF_CONFIG = {
    "model_type": "wav2vec2", "architectures": ["Wav2Vec2Model"], "hidden_size": 32, "num_hidden_layers": 1,
    "num_attention_heads": 2, "intermediate_size": 64, "conv_dim": [32, 32], "conv_kernel": [10, 3],
    "conv_stride": [5, 2], "conv_bias": False, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2,
    "feat_extract_norm": "layer",
}


def test_hf_bin_weights_that_run_code_are_refused(tmp_path, marker, no_network):
    """``pytorch_model.bin`` read by our importer (models/hf.py) and by transformers (``hf:``)."""
    from speechssl.models.hf import import_hf
    from speechssl.upstream import build_upstream

    model_dir = tmp_path / "hf"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(TINY_HF_CONFIG))
    weights = _save_evil(model_dir / "pytorch_model.bin", marker, "state_dict")
    with pytest.raises(SpeechSSLError) as info:
        import_hf(model_dir)
    assert str(info.value).startswith(f"{weights}: refused")
    _assert_one_line_of_ours(info.value, marker)
    with pytest.raises(ConfigError) as info:
        build_upstream(f"hf:{model_dir}")
    assert str(info.value).startswith(f"hf: {weights}: refused")
    _assert_one_line_of_ours(info.value, marker)


def test_hf_directory_code_is_never_run(tmp_path, marker, no_network):
    """config.json's ``auto_map`` names modeling code in the directory: never imported
    (``trust_remote_code=False``, so not even transformers' interactive prompt asks)."""
    from safetensors.torch import save_file

    from speechssl.upstream import build_upstream

    model_dir = tmp_path / "hf-custom"
    model_dir.mkdir()
    (model_dir / "modeling_custom.py").write_text(
        f"import os\nos.mkdir({str(marker)!r})\n"
        "from transformers import Wav2Vec2Config as CustomConfig, Wav2Vec2Model as CustomModel\n")
    save_file({"unused": torch.zeros(1)}, str(model_dir / "model.safetensors"))
    auto_map = {"AutoConfig": "modeling_custom.CustomConfig", "AutoModel": "modeling_custom.CustomModel"}
    (model_dir / "config.json").write_text(json.dumps({**TINY_HF_CONFIG, "model_type": "custom-net",
                                                       "auto_map": auto_map}))
    with pytest.raises(ConfigError) as info:
        build_upstream(f"hf:{model_dir}")
    message = _assert_one_line_of_ours(info.value, marker)
    assert "its own modeling code" in message


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("kind", ["truncated", "empty", "text", "plain pickle"])
def test_corrupt_checkpoints_get_one_line(tmp_path, marker, kind):
    import pickle

    from speechssl.pretrain.checkpoint import load_checkpoint

    path = tmp_path / "step_00000001.pt"
    if kind == "truncated":
        torch.save({"format": CKPT_FORMAT, "model": {"w": torch.zeros(1000)}}, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("not a checkpoint\n")
    else:
        path.write_bytes(pickle.dumps({"format": CKPT_FORMAT}, protocol=4))
    with pytest.raises(SpeechSSLError) as info:
        load_checkpoint(path)
    message = _assert_one_line_of_ours(info.value, marker, refused=False)
    assert message.startswith(f"{path}: truncated or corrupt checkpoint (")


def test_cli_prints_the_refusal_as_one_line(tmp_path, marker, capsys):
    from speechssl.cli import main

    evil = _save_evil(tmp_path / "best.pt", marker)
    assert main(["export-hf", str(evil), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "refused" in err and "weights_only" not in err
    assert not marker.exists() and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- 2. a scan of the source

# (file relative to src/speechssl, enclosing function, call) -> why it is safe.
ALLOWED: dict[tuple[str, str, str], str] = {
    ("fsutil.py", "safe_torch_load", "torch.load"):
        "the one torch.load of the package, with weights_only=True (every loader calls it)",
    ("data/synth/espeak.py", "EspeakDriver.speak_isolated", "pickle.loads"):
        "unpickles only what our own forked child wrote into an anonymous os.pipe(); never a file",
    ("corpora/kaldi.py", "_run_pipe", "subprocess.run(shell=True)"):
        "a wav.scp pipe command, run only with --option allow_pipes=true (refused by default, see "
        "test_kaldi_pipe_commands_run_only_when_allowed)",
}

_UNPICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}
_SHELLS = {"os.system", "os.popen", "os.execl", "os.execlp", "os.execv", "os.execvp", "os.spawnl", "os.spawnlp",
           "commands.getoutput", "subprocess.getoutput", "subprocess.getstatusoutput"}
_SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}


def _aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> dotted origin, from every import in the module (``np`` -> ``numpy``)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                local = alias.asname or alias.name.split(".")[0]
                names[local] = alias.name if alias.asname else local
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node: ast.AST | None, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def _risky(call: ast.Call, aliases: dict[str, str]) -> str | None:
    """The call's name when it could run code from data (see the module docstring), else None."""
    dotted = _dotted(call.func)
    if dotted is None:
        return None
    head, _, rest = dotted.partition(".")
    name = f"{aliases[head]}.{rest}".rstrip(".") if head in aliases else dotted
    if "." not in dotted and dotted not in aliases and dotted in {"eval", "exec", "compile", "__import__"}:
        return dotted  # the builtins; a method such as model.eval() has a dotted name
    module, _, function = name.rpartition(".")
    if module.split(".")[0] in _UNPICKLERS and function in {"load", "loads", "Unpickler", "open"}:
        return name
    if name == "torch.load":  # allowed only in the shared helper, and only with weights_only=True
        return name if _is_const(_keyword(call, "weights_only"), True) else f"{name} without weights_only=True"
    if name in {"torch.jit.load", "torch.package.PackageImporter"}:
        return name
    if name in {"numpy.load", "numpy.lib.npyio.load"}:
        allow = _keyword(call, "allow_pickle")
        return None if allow is None or _is_const(allow, False) else "numpy.load(allow_pickle=...)"
    if name in {"yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all", "yaml.full_load_all"}:
        return name
    if name in {"yaml.load", "yaml.load_all"}:
        loader = _keyword(call, "Loader") or (call.args[1] if len(call.args) > 1 else None)
        loader_name = _dotted(loader) if loader is not None else None
        return None if loader_name and loader_name.split(".")[-1] in _SAFE_YAML_LOADERS else f"{name} (unsafe Loader)"
    if name in _SHELLS:
        return name
    if name.startswith("subprocess.") and not _is_const(_keyword(call, "shell"), False) \
            and _keyword(call, "shell") is not None:
        return f"{name}(shell=True)"
    if function == "from_pretrained" and _keyword(call, "trust_remote_code") is not None \
            and not _is_const(_keyword(call, "trust_remote_code"), False):
        return "from_pretrained(trust_remote_code=...)"
    return None


def scan_source(source: str, filename: str) -> list[tuple[str, str, str, int]]:
    """``(file, enclosing function, call, line)`` of every risky call in ``source``."""
    tree = ast.parse(source, filename=filename)
    aliases = _aliases(tree)
    found: list[tuple[str, str, str, int]] = []

    def visit(node: ast.AST, scope: list[str]) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            scope = [*scope, node.name]
        if isinstance(node, ast.Call):
            risky = _risky(node, aliases)
            if risky is not None:
                found.append((filename, ".".join(scope) or "<module>", risky, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child, scope)

    visit(tree, [])
    return found


def test_the_scanner_catches_each_kind_of_call():
    """The scan is only worth something if it sees these; method calls named eval are fine."""
    snippet = '''
import pickle as pk, numpy as np, subprocess, os, yaml, torch
from pickle import loads
from torch import load as tload
def f(model, data):
    model.eval(); model.train().eval()
    eval("1"); exec("x = 1"); pk.load(data); loads(data); pk.Unpickler(data)
    import marshal; marshal.loads(data)
    torch.load("x.pt"); tload("x.pt", weights_only=False); torch.load("x.pt", weights_only=True)
    np.load("x.npy", allow_pickle=True); np.load("x.npy"); np.load("x.npy", allow_pickle=False)
    yaml.load(data); yaml.load(data, Loader=yaml.SafeLoader); yaml.safe_load(data); yaml.unsafe_load(data)
    subprocess.run("ls", shell=True); subprocess.run(["ls"]); subprocess.run(["ls"], shell=False); os.system("ls")
    AutoModel.from_pretrained(d, trust_remote_code=True); AutoModel.from_pretrained(d, trust_remote_code=False)
'''
    calls = [call for _, _, call, _ in scan_source(snippet, "snippet.py")]
    assert calls == [
        "eval", "exec", "pickle.load", "pickle.loads", "pickle.Unpickler", "marshal.loads",
        "torch.load without weights_only=True", "torch.load without weights_only=True", "torch.load",
        "numpy.load(allow_pickle=...)", "yaml.load (unsafe Loader)", "yaml.unsafe_load",
        "subprocess.run(shell=True)", "os.system", "from_pretrained(trust_remote_code=...)",
    ]


def test_source_has_no_code_execution():
    """No eval/exec, no unpickling, no unsafe yaml, no torch.load but the shared helper, no
    shell, outside :data:`ALLOWED` (whose entries must each still match a call)."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        found += scan_source(path.read_text(encoding="utf-8"), path.relative_to(SRC).as_posix())
    assert found, "the scan found nothing at all: is SRC right?"
    unexpected = [f"{file}:{line}: {call} in {scope}" for file, scope, call, line in found
                  if (file, scope, call) not in ALLOWED]
    assert not unexpected, "calls that could run code from data (use speechssl.fsutil.safe_torch_load, " \
        "yaml.safe_load, np.load without allow_pickle, subprocess without shell=True; or audit and add to " \
        "ALLOWED with the reason):\n" + "\n".join(unexpected)
    stale = set(ALLOWED) - {(file, scope, call) for file, scope, call, _ in found}
    assert not stale, f"ALLOWED entries that match nothing any more: {sorted(stale)}"


def test_espeak_pickle_crosses_only_an_anonymous_pipe():
    """The audit behind the espeak entries of ALLOWED: the bytes unpickled come from
    ``os.pipe()`` written by our own ``os.fork()`` child, never from a path."""
    tree = ast.parse((SRC / "data" / "synth" / "espeak.py").read_text(encoding="utf-8"))
    method = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "speak_isolated")
    calls = {_dotted(n.func) for n in ast.walk(method) if isinstance(n, ast.Call)}
    assert {"os.pipe", "os.fork", "os.fdopen", "pickle.loads"} <= calls
    assert "open" not in calls and not any(c and c.endswith(".load") for c in calls)


# ---------------------------------------------------------------- 3. Kaldi pipes and paths


def _kaldi_dir(root: Path, scp_lines: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "wav.scp").write_text("\n".join(scp_lines) + "\n")
    return root


def test_kaldi_pipe_commands_run_only_when_allowed(tmp_path, marker):
    from speechssl.corpora import prepare
    from speechssl.corpora.base import CorpusError

    audio = tmp_path / "k" / "wav" / "a.flac"
    write_recording(audio, 1.0)
    root = _kaldi_dir(tmp_path / "k", [f"a mkdir {marker} && cat {audio} |"])
    with pytest.raises(CorpusError, match="pipe commands.*they would be executed.*allow_pipes=true"):
        prepare("kaldi", root, tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out" / "audio").exists()
    _kaldi_dir(root, [f"a cat {audio} |"])  # the harmless pipe, allowed explicitly
    info = prepare("kaldi", root, tmp_path / "out", allow_pipes="true")
    assert info["pipes_run"] == 1
    from speechssl.data.manifests import load_cuts

    (cut,) = load_cuts(tmp_path / "out", "k")
    stored = Path(cut.recording.sources[0].source)
    assert stored.is_relative_to((tmp_path / "out" / "audio").resolve()) and cut.duration == pytest.approx(1.0)


@pytest.mark.parametrize("how", ["relative", "absolute", "symlink"])
def test_kaldi_audio_outside_root_only_when_allowed(tmp_path, how):
    from speechssl.corpora import prepare
    from speechssl.corpora.base import CorpusError

    outside = tmp_path / "elsewhere" / "a.flac"
    write_recording(outside, 1.0)
    root = tmp_path / "k"
    root.mkdir()
    entry = {"relative": "../elsewhere/a.flac", "absolute": str(outside), "symlink": "link.flac"}[how]
    if how == "symlink":
        (root / "link.flac").symlink_to(outside)
    _kaldi_dir(root, [f"a {entry}"])
    with pytest.raises(CorpusError, match="outside the corpus root.*allow_outside=true"):
        prepare("kaldi", root, tmp_path / "out")
    info = prepare("kaldi", root, tmp_path / "out", allow_outside="true")
    assert info["splits"]["k"]["utterances"] == 1


# ---------------------------------------------------------------- 4. manifest paths


def _write_manifest(data_dir: Path, source: str, source_type: str = "file") -> Path:
    recording = {"id": "r1", "sources": [{"type": source_type, "channels": [0], "source": source}],
                 "sampling_rate": 16000, "num_samples": 16000, "duration": 1.0, "channel_ids": [0]}
    cut = {"id": "c1", "start": 0.0, "duration": 1.0, "channel": 0, "recording": recording, "supervisions": [],
           "type": "MonoCut"}
    path = data_dir / "manifests" / "cuts_train.jsonl.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps(cut) + "\n")
    return path


@pytest.mark.parametrize("source", ["../../etc/passwd", "../outside.wav", "audio/../../outside.wav", ".."])
def test_manifest_relative_paths_cannot_leave_the_data_dir(tmp_path, source):
    from speechssl.data.manifests import load_cuts
    from speechssl.errors import ManifestError

    data_dir = tmp_path / "corpus"
    _write_manifest(data_dir, source)
    with pytest.raises(ManifestError, match="leaves the data directory; relative paths must stay inside it") as info:
        load_cuts(data_dir, "train")
    assert "\n" not in str(info.value)


def test_manifest_paths_inside_the_data_dir_and_absolute_audio_are_read(tmp_path):
    """The rule, decided with the writers in mind: relative paths must stay inside the data
    dir; absolute paths are allowed, because ``speechssl prepare`` references the raw corpus
    where it lies and ``corpus datasets`` its sources. What an absolute path can reach is
    what :func:`load_audio` opens: a regular file that decodes as audio, else an AudioError
    naming it (never its bytes, never a device)."""
    from speechssl.data.audio import load_cut_audio
    from speechssl.data.manifests import load_cuts
    from speechssl.errors import AudioError

    data_dir = tmp_path / "corpus"
    write_recording(data_dir / "audio" / "a.wav", 1.0)
    _write_manifest(data_dir, "audio/sub/../a.wav")  # stays inside: fine
    (cut,) = load_cuts(data_dir, "train")
    assert cut.recording.sources[0].source == str((data_dir / "audio" / "a.wav").resolve())
    assert load_cut_audio(cut).shape == (16000,)

    write_recording(tmp_path / "raw" / "b.wav", 1.0)  # raw audio kept in place, as prepare writes it
    _write_manifest(data_dir, str(tmp_path / "raw" / "b.wav"))
    assert load_cut_audio(next(iter(load_cuts(data_dir, "train")))).shape == (16000,)

    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n" * 50)
    for target, reason in ((secret, "not a readable audio file"), (Path(os.devnull), "not a regular file")):
        _write_manifest(data_dir, str(target))
        (cut,) = load_cuts(data_dir, "train")
        with pytest.raises(AudioError, match=re.escape(f"{target}: {reason}")):
            load_cut_audio(cut)


@pytest.mark.parametrize("source_type", ["command", "url", "memory"])
def test_manifest_sources_other_than_files_are_refused(tmp_path, marker, source_type):
    """lhotse's ``command`` source runs a shell command when its audio is loaded."""
    from speechssl.data.manifests import load_cuts
    from speechssl.errors import ManifestError

    data_dir = tmp_path / "corpus"
    _write_manifest(data_dir, f"mkdir {marker}; cat x.wav", source_type)
    with pytest.raises(ManifestError, match=f"source of type '{source_type}' refused; only 'file' sources"):
        load_cuts(data_dir, "train")
    assert not marker.exists()


# ---------------------------------------------------------------- 5. the HTML report

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'


def _hostile_rows() -> tuple[list[dict], list[dict]]:
    """Score rows and runs whose every name (upstream, probe, task, regime, metric, dataset,
    language, speaker-like labels, error text) carries markup."""
    rows, runs = [], []
    for u, upstream in enumerate(("mfcc", f"hf:{SCRIPT}", f"ckpt:{IMG}")):
        for p, probe in enumerate((f"linear{SCRIPT}", f"bilstm{IMG}")):
            for regime in ("frozen", f"lora{SCRIPT}"):
                for seed in (0, 1):
                    run_id = f"{u}-{p}-{regime}-{seed}"
                    base = 0.3 + 0.1 * u + 0.05 * p + 0.01 * seed + (0.02 if regime != "frozen" else 0)
                    common = dict(run_id=run_id, upstream=upstream, task=f"asr{SCRIPT}", probe=probe, regime=regime,
                                  seed=seed, dataset=f"synth{IMG}", split="test", higher_is_better=False,
                                  status="finished", source="bench")
                    rows.append(dict(common, language="", metric=f"cer{SCRIPT}", value=base))
                    for lang in (f"de{SCRIPT}", f"spk{IMG}"):
                        rows.append(dict(common, language=lang, metric=f"cer{SCRIPT}", value=base + 0.01))
                    runs.append(dict(common, primary_metric=f"cer{SCRIPT}", config_hash=run_id, error=None,
                                     upstream_params=1000, probe_params=10, wall_seconds=10.0, gpu_hours=0.01,
                                     energy_kwh=0.001, co2_kg=0.001, flops_per_second=1e6,
                                     created_at="2025-01-01T00:00:00Z", updated_at="2025-01-01T00:00:00Z",
                                     result_path=None,
                                     extra={"layer_weights": [0.5, 0.5], "layers_used": [0, 1],
                                            "upstream_meta": {"name": f"speaker {SCRIPT}"}}))
    runs.append(dict(run_id=f"failed{IMG}", upstream=f"hf:{SCRIPT}", task=f"asr{SCRIPT}", probe=f"linear{IMG}",
                     regime="frozen", seed=9, dataset=f"synth{IMG}", status="failed", source="sweep",
                     error=f"speaker {SCRIPT} {IMG} not found", extra={}))
    return rows, runs


def test_html_report_escapes_every_string_from_data(tmp_path):
    from speechssl.benchmark.report import _SCRIPT, write_report

    rows, runs = _hostile_rows()
    pretrain = tmp_path / IMG.replace('"', "")  # a run directory name with markup (no "/" in a name)
    pretrain.mkdir()
    (pretrain / "metrics.jsonl").write_text("".join(
        json.dumps({"split": "train", "step": s, "loss": 5.0 / s}) + "\n" for s in range(1, 20)))
    written = write_report(tmp_path / "report", rows, runs, [pretrain], title=f"report {SCRIPT}",
                           baseline="mfcc", formats=["html"], timestamp=False)
    page = written["html"].read_text(encoding="utf-8")
    ours = f"<script>{_SCRIPT}</script>"  # the report's own sorting/filtering script: once, data-free
    assert page.count(ours) == 1
    page = page.replace(ours, "")
    assert "<script" not in page.lower() and "<img src=x" not in page and "onerror=alert(1)>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    # The hostile names did reach the page (escaped) from every kind of field.
    for field in (f"hf:{SCRIPT}", f"linear{SCRIPT}", f"asr{SCRIPT}", f"synth{IMG}", f"de{SCRIPT}",
                  f"spk{IMG}", f"lora{SCRIPT}", f"speaker {SCRIPT} {IMG} not found"):
        assert html.escape(field, quote=True) in page or html.escape(field, quote=False) in page, field
    # Only our own markup: every tag in the page is one the renderer writes.
    tags = set(re.findall(r"<\s*([a-zA-Z][a-zA-Z0-9]*)", page))
    assert tags <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "nav", "ul", "li", "a",
                    "section", "table", "caption", "thead", "tbody", "tr", "th", "td", "figure", "img",
                    "figcaption", "code"}, tags
    assert page.count("<img ") == page.count('<img src="data:image/png;base64,')
