"""The Python API (speechssl.api, docs/python_api.md): lazy import, errors, overrides, the docs' example."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import speechssl
from speechssl import api
from speechssl.cli import main
from speechssl.downstream.config import BenchConfig
from speechssl.errors import ConfigError

from conftest import TINY_RUN, TINY_W2V2

pytestmark = pytest.mark.usefixtures("one_thread")

DOC = Path(__file__).resolve().parents[1] / "docs" / "python_api.md"
API = ["BenchResult", "ResultStore", "bench", "load_upstream", "make_synthetic_corpus", "pretrain", "report"]
# A lid run that trains in a second or two on the tiny corpus.
QUICK = {"train.max_epochs": 1, "train.batch_seconds": 20, "probe_cfg.hidden": 16, "cost.energy": False,
         "health_utterances": 0}


def python_block(section: str) -> str:
    """The first ```python block under the ``## <section>`` heading of docs/python_api.md."""
    text = DOC.read_text(encoding="utf-8")
    part = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert part, f"no '## {section}' section in {DOC}"
    block = re.search(r"^```python\n(.*?)^```", part.group(1), re.S | re.M)
    assert block, f"no python block in section {section!r}"
    return block.group(1)


# ---------------------------------------------------------------- the package


def test_import_is_light_and_attributes_load_on_demand():
    code = (
        "import json, sys\n"
        "heavy = lambda: sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'transformers', 'lhotse', 'numpy', 'sklearn', 'matplotlib'))\n"
        "import speechssl\n"
        "first = {'heavy': heavy(), 'api': 'speechssl.api' in sys.modules, 'dir': dir(speechssl)}\n"
        "speechssl.ResultStore, speechssl.bench, speechssl.report, speechssl.BenchResult\n"
        "print(json.dumps({**first, 'after': heavy(), 'api_after': 'speechssl.api' in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    seen = json.loads(out)
    assert seen["heavy"] == [] and not seen["api"]  # `import speechssl` imports neither torch nor the API
    assert set(API) <= set(seen["dir"])
    # Reaching the API imports speechssl.api, still without torch (it loads when a function runs).
    assert seen["api_after"] and seen["after"] == []


def test_all_and_dir_list_the_api():
    assert set(API) <= set(speechssl.__all__) <= set(dir(speechssl))
    assert speechssl.__version__
    for name in speechssl.__all__:
        assert getattr(speechssl, name) is not None
    assert speechssl.ResultStore is api.ResultStore
    assert speechssl.ConfigError is ConfigError
    with pytest.raises(AttributeError, match="no attribute 'benchh'"):
        speechssl.benchh  # noqa: B018


def test_pretrain_is_the_package_and_the_function():
    import speechssl.pretrain.trainer as trainer  # the package's modules stay reachable

    assert callable(speechssl.pretrain) and speechssl.pretrain.PretrainConfig is not None
    assert speechssl.pretrain.trainer is trainer
    with pytest.raises(ConfigError, match="did you mean 'optim'"):
        speechssl.pretrain(overrides={"optm.lr": 1e-3})


# ---------------------------------------------------------------- errors and overrides


def test_unknown_task_upstream_and_key_raise_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"task: must be one of .* got 'lidd'"):
        speechssl.bench("mfcc", "lidd", data=tmp_path, out_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match="unknown upstream 'mfc'.*did you mean 'mfcc'"):
        speechssl.bench("mfc", "lid", data=tmp_path, out_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match="unknown config key 'trian'; did you mean 'train'"):
        speechssl.bench("mfcc", "lid", overrides={"trian.lr": 1e-3})
    with pytest.raises(ConfigError, match="unknown config key 'train.max_epoch'"):
        speechssl.bench("mfcc", "lid", overrides=["train.max_epoch=3"])
    with pytest.raises(ConfigError, match="train.max_epochs: expected an integer"):
        speechssl.bench("mfcc", "lid", overrides={"train.max_epochs": "ten"})
    with pytest.raises(ConfigError, match="does not exist"):
        speechssl.bench("mfcc", "lid", data=tmp_path / "missing", out_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match="mapping or a list"):
        speechssl.bench("mfcc", "lid", overrides="train.lr=1")
    with pytest.raises(ConfigError, match="unknown upstream"):
        speechssl.load_upstream("wav2vec3")
    with pytest.raises(ConfigError, match="no result store"):
        speechssl.report(tmp_path / "none.db", tmp_path / "report")
    assert not (tmp_path / "none.db").exists() and not (tmp_path / "run").exists()


def test_overrides_as_mapping_and_as_strings_build_the_same_config(tmp_path):
    as_mapping = {"train.max_epochs": 2, "train.lr": 3e-4, "featurizer.layer": -1, "cache.enabled": False,
                  "train_hours": None, "data": tmp_path / "corpus", "probe": "mean_linear"}
    as_strings = ["train.max_epochs=2", "train.lr=3e-4", "featurizer.layer=-1", "cache.enabled=false",
                  "train_hours=null", f"data={tmp_path / 'corpus'}", "probe=mean_linear"]
    built = api.build_config(BenchConfig, None, as_mapping)
    assert built == api.build_config(BenchConfig, None, as_strings)
    assert built.train.lr == 3e-4 and built.featurizer.layer == -1 and built.data == str(tmp_path / "corpus")
    # config as YAML, as a mapping and as the dataclass: the same, overrides on top of each.
    (tmp_path / "bench.yaml").write_text("task: asv\ntrain:\n  max_epochs: 5\n")
    for config in (tmp_path / "bench.yaml", {"task": "asv", "train": {"max_epochs": 5}},
                   BenchConfig(task="asv", train=built.train.__class__(max_epochs=5))):
        cfg = api.build_config(BenchConfig, config, {"train.patience": 2})
        assert (cfg.task, cfg.train.max_epochs, cfg.train.patience) == ("asv", 5, 2)


def test_bench_through_api_and_cli_is_one_run(tiny_corpus, tmp_path, capsys):
    out, store = tmp_path / "run", tmp_path / "results.db"
    first = speechssl.bench("mfcc", "lid", data=tiny_corpus, out_dir=out, overrides=QUICK, store=store,
                            progress=False)
    assert isinstance(first, speechssl.BenchResult) and not first.reused and first.run_dir == out
    assert first.primary_metric == "accuracy" and first.score == first.metrics["accuracy"]
    assert json.loads((out / "result.json").read_text())["config_hash"] == first.result["config_hash"]
    # The same settings as strings are the same config: the run is reused, not retrained.
    strings = [f"{key}={json.dumps(value)}" for key, value in QUICK.items()]
    again = speechssl.bench("mfcc", "lid", data=tiny_corpus, out_dir=out, overrides=strings, progress=False)
    assert again.reused and again.score == first.score and again.run_id is None
    # So is the CLI's: it builds its config through the same function.
    argv = ["bench", "--upstream", "mfcc", "--task", "lid", "--data", str(tiny_corpus), "--out", str(out),
            "--store", str(store), "--no-progress", *strings]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "(reused)" in printed and f"stored as {first.run_id} in {store}" in printed
    with speechssl.ResultStore(store, create=False) as opened:
        assert [r["run_id"] for r in opened.runs()] == [first.run_id]


def test_pretrain_init_only_returns_the_run(tiny_corpus, tmp_path):
    out = tmp_path / "pre"
    result = speechssl.pretrain(overrides=TINY_W2V2 + TINY_RUN, out_dir=out, data=tiny_corpus, init_only=True,
                                progress=False)
    assert isinstance(result, speechssl.PretrainResult) and result.out_dir == out
    assert result.last_checkpoint is not None and result.last_checkpoint.is_file()
    assert result.state.step == 0 and (out / "config.yaml").is_file()
    assert speechssl.load_upstream(f"ckpt:{out}").num_layers >= 2


# ---------------------------------------------------------------- the documentation


def test_docs_example_runs(tmp_path, monkeypatch, capsys):
    """The ```python block of docs/python_api.md's Example section, executed as written."""
    code = python_block("Example")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"{DOC}:Example", "exec"), {"__name__": "__main__"})
    printed = capsys.readouterr().out
    assert re.search(r"accuracy \d\.\d{3} \(run \w+ in runs/bench/mfcc-lid\)", printed), printed
    assert (tmp_path / "runs" / "report" / "report.html").is_file()
    with speechssl.ResultStore(tmp_path / "runs" / "results.db", create=False) as store:
        assert [r["task"] for r in store.runs()] == ["lid"]


def test_docs_upstream_snippet_runs():
    exec(compile(python_block("Upstreams"), f"{DOC}:Upstreams", "exec"), {"speechssl": speechssl})
