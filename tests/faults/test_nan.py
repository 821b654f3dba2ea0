"""NaN and inf (issue 17 item 3): a bad update is skipped and counted, repeated ones stop clearly.

Injected into a pretraining batch (the audio, before normalisation), into the gradients of a
pretraining update (a hook on a parameter), into the features of probe-training batches,
into the gradients of probe training (a loss whose backward is NaN), and into an upstream's
output. Outcomes:

* pretraining: the update is skipped (weights and optimizer untouched: the checkpoint after it
  equals the one before, bitwise), ``skipped_steps`` counts it, a warning names it;
  ``max_bad_steps`` in a row stop the run with one line (``TrainingDiverged``), the newest
  checkpoint is intact, finite and resumable.
* probe training: the batch is skipped (no optimizer step), ``skipped_batches`` counts it in the
  result and the per-epoch log; an epoch without one finite batch (or more than
  max(10, half an epoch) bad batches) stops the run with one line and no result.
* NaN from an upstream: the feature cache refuses to store it (the cut is named); without the
  cache, standardisation refuses NaN statistics.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import TINY_RUN, TINY_W2V2

from speechssl.cli import main
from speechssl.config import load_config
from speechssl.downstream.config import BenchConfig
from speechssl.downstream.runner import FeatureSource, run_bench
from speechssl.downstream.tasks import task_class
from speechssl.errors import SpeechSSLError
from speechssl.pretrain import PretrainConfig, pretrain, read_metrics
from speechssl.pretrain.checkpoint import load_checkpoint, step_checkpoints
from speechssl.pretrain.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

NAN, INF = float("nan"), float("inf")


# ====================================================================== pretraining

W2V2 = [*TINY_W2V2, "wav2vec2.num_negatives=10", *TINY_RUN, "data.num_workers=0", "health_utterances=0",
        "data.valid_split=", "save_every=1", "keep_last=20"]


def pretrain_config(corpus: Path, *extra: str) -> PretrainConfig:
    return load_config(PretrainConfig, None, [*W2V2, f"data.dir={corpus}", *extra])


def poison_batches(monkeypatch, bad: dict[int, float], *, every_from: int | None = None) -> dict[str, bool]:
    """Update ``u`` (1-based; one micro-batch per update) reads audio with ``bad[u]`` in its first
    100 samples (NaN in every update from ``every_from`` on), as from a decoder that produced
    NaN. Returns a switch: ``switch["on"] = False`` stops the poisoning."""
    real = Trainer._mixed
    state = {"n": 0, "on": True}

    def mixed(self, batch, micro_seed):
        state["n"] += 1
        value = bad.get(state["n"])
        if value is None and every_from is not None and state["n"] >= every_from:
            value = NAN
        if state["on"] and value is not None:
            batch.waveforms[0, :100] = value
        return real(self, batch, micro_seed)

    monkeypatch.setattr(Trainer, "_mixed", mixed)
    return state


def poison_gradients(monkeypatch, bad: dict[int, float]) -> None:
    """The gradient of the model's first parameter is multiplied by ``bad[u]`` in update ``u``
    (the loss itself stays finite)."""
    import speechssl.pretrain.trainer as trainer_module

    real = trainer_module.build_objective
    calls = {"n": 0}

    def build(*args, **kwargs):
        model = real(*args, **kwargs)

        def hook(grad):
            calls["n"] += 1
            return grad * bad[calls["n"]] if calls["n"] in bad else grad

        next(model.parameters()).register_hook(hook)
        return model

    monkeypatch.setattr(trainer_module, "build_objective", build)


def weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / f"step_{step:08d}.pt")["model"]


def assert_skipped(run: Path, step: int) -> None:
    """Update ``step`` changed nothing: its checkpoint equals the previous one, weights and optimizer."""
    before = load_checkpoint(run / "checkpoints" / f"step_{step - 1:08d}.pt")
    after = load_checkpoint(run / "checkpoints" / f"step_{step:08d}.pt")
    assert all(torch.equal(before["model"][k], after["model"][k]) for k in before["model"])
    assert str(before["optimizer"]["state"]) == str(after["optimizer"]["state"])


def assert_finite(state: dict[str, torch.Tensor]) -> None:
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_nan_and_inf_in_pretraining_batches_are_skipped_and_counted(tiny_corpus, tmp_path, monkeypatch, capsys):
    poison_batches(monkeypatch, {2: NAN, 4: INF})
    result = pretrain(pretrain_config(tiny_corpus, "steps=6"), tmp_path / "run", progress=False)
    records = read_metrics(tmp_path / "run")
    assert [r["skipped_steps"] for r in records] == [0, 1, 1, 2, 2, 2]
    assert [math.isfinite(r["loss"]) for r in records] == [True, False, True, False, True, True]
    assert_skipped(tmp_path / "run", 2)
    assert_skipped(tmp_path / "run", 4)
    assert result.state.step == 6 and result.state.skipped_steps == 2
    assert_finite(weights(tmp_path / "run", 6))
    warned = [line for line in capsys.readouterr().err.splitlines() if "non-finite" in line]
    assert len(warned) == 2 and all("update skipped" in line for line in warned)


def test_nan_and_inf_gradients_in_pretraining_are_skipped_and_counted(tiny_corpus, tmp_path, monkeypatch):
    poison_gradients(monkeypatch, {3: NAN, 5: INF})
    pretrain(pretrain_config(tiny_corpus, "steps=6"), tmp_path / "run", progress=False)
    records = read_metrics(tmp_path / "run")
    assert all(math.isfinite(r["loss"]) for r in records)  # the loss was fine, its gradient was not
    assert [r["skipped_steps"] for r in records] == [0, 0, 1, 1, 2, 2]
    assert not math.isfinite(records[2]["grad_norm"]) and not math.isfinite(records[4]["grad_norm"])
    assert_skipped(tmp_path / "run", 3)
    assert_skipped(tmp_path / "run", 5)
    assert_finite(weights(tmp_path / "run", 6))


def test_repeated_nans_stop_pretraining_with_one_line_and_the_last_checkpoint_resumes(tiny_corpus, tmp_path,
                                                                                      monkeypatch, capsys):
    """Every batch from update 3 on is NaN, max_bad_steps=3: the CLI stops at update 5 with one
    line; the newest checkpoint (step 4) loads, is finite and holds step 2's weights; rerun
    without the fault, the run resumes there and finishes."""
    switch = poison_batches(monkeypatch, {}, every_from=3)
    out = tmp_path / "run"
    argv = ["pretrain", "--out", str(out), "--no-progress", *W2V2, f"data.dir={tiny_corpus}", "steps=8",
            "max_bad_steps=3"]
    assert main(argv) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: 3 non-finite updates in a row at step 4; stopping.")
    assert "Traceback" not in "\n".join(err)
    assert [s for s, _ in step_checkpoints(out / "checkpoints")] == [1, 2, 3, 4]
    newest = weights(out, 4)
    assert_finite(newest)
    assert all(torch.equal(newest[k], weights(out, 2)[k]) for k in newest)

    switch["on"] = False
    assert main(argv) == 0
    records = read_metrics(out)
    assert [r["step"] for r in records] == list(range(1, 9))
    assert [r["skipped_steps"] for r in records][-1] == 2 and all(math.isfinite(r["loss"]) for r in records[4:])
    assert_finite(weights(out, 8))


# ====================================================================== probe training (bench)

BENCH = ["train.max_epochs=2", "train.batch_seconds=20", "probe_cfg.hidden=8", "probe_cfg.embed_dim=8",
         "train.num_workers=0", "health_utterances=0", "cost.energy=false"]


@pytest.fixture(scope="module")
def feature_cache(tmp_path_factory) -> Path:
    """One feature cache for the module: mfcc's entries are built once."""
    return tmp_path_factory.mktemp("feature-cache")


def bench_config(corpus: Path, cache: Path, *extra: str) -> BenchConfig:
    return load_config(BenchConfig, None, ["upstream=mfcc", f"data={corpus}", "task=lid", "probe=mean_linear",
                                           f"cache.dir={cache}", *BENCH, *extra])


def poison_features(monkeypatch, bad: dict[int, float] | None) -> None:
    """Training batch ``n`` (1-based over the run) gets ``bad[n]`` in two values of its first
    utterance's features; ``None`` poisons every training batch."""
    real = FeatureSource.batches
    calls = {"n": 0}

    def batches(self, *, shuffle, epoch=0):
        for batch in real(self, shuffle=shuffle, epoch=epoch):
            if shuffle:  # training batches only (dev and test are read in order)
                calls["n"] += 1
                if bad is None or calls["n"] in bad:
                    batch.layers[:, 0, :2] = NAN if bad is None else bad[calls["n"]]
            yield batch

    monkeypatch.setattr(FeatureSource, "batches", batches)


def test_nan_and_inf_features_in_probe_batches_are_skipped_and_counted(tiny_corpus, feature_cache, tmp_path,
                                                                        monkeypatch):
    poison_features(monkeypatch, {2: NAN, 3: INF})
    result = run_bench(bench_config(tiny_corpus, feature_cache), tmp_path / "run", progress=False)
    assert result["skipped_batches"] == 2
    assert [r["skipped_batches"] for r in result["history"]][-1] == 2
    assert all(math.isfinite(r["train_loss"]) for r in result["history"])
    assert all(math.isfinite(v) for v in result["metrics"].values() if isinstance(v, float))
    assert json.loads((tmp_path / "run" / "result.json").read_text())["skipped_batches"] == 2


class _NanBackward(torch.autograd.Function):
    """Identity forward, NaN backward: a finite loss whose gradient is not."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * NAN


def test_nan_gradient_in_probe_training_is_skipped_and_counted(tiny_corpus, feature_cache, tmp_path, monkeypatch):
    """Before the fix, the NaN gradient of a finite loss reached the optimizer (clipping does
    not stop NaN): the probe's weights became NaN."""
    from speechssl.fsutil import safe_torch_load

    cls = task_class("lid")
    real_loss = cls.loss
    calls = {"n": 0}

    def loss(self, probe, batch):
        value = real_loss(self, probe, batch)
        calls["n"] += 1
        return _NanBackward.apply(value) if calls["n"] == 2 else value

    monkeypatch.setattr(cls, "loss", loss)
    result = run_bench(bench_config(tiny_corpus, feature_cache), tmp_path / "run", progress=False)
    assert result["skipped_batches"] == 1
    assert all(math.isfinite(r["train_loss"]) for r in result["history"])
    saved = safe_torch_load(tmp_path / "run" / "best.pt", "probe weights")
    assert_finite({**saved["probe"], **saved["featurizer"]})


def test_nan_features_in_every_probe_batch_stop_with_one_line(tiny_corpus, feature_cache, tmp_path, monkeypatch,
                                                              capsys):
    poison_features(monkeypatch, None)
    out, store = tmp_path / "run", tmp_path / "results.db"
    argv = ["bench", "--upstream", "mfcc", "--task", "lid", "--probe", "mean_linear", "--data", str(tiny_corpus),
            "--out", str(out), "--store", str(store), "--no-progress", f"cache.dir={feature_cache}", *BENCH]
    assert main(argv) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: every batch of epoch 1 gave a non-finite loss or gradient")
    assert not (out / "result.json").exists() and not store.exists()


@pytest.mark.faults
@pytest.mark.parametrize("cached", [True, False], ids=["cache", "no-cache"])
def test_nan_from_the_upstream_is_refused_with_one_line(cached, tiny_corpus, tmp_path, monkeypatch):
    """An upstream whose output holds a NaN: the feature cache refuses to store it (naming the
    cut); without the cache, standardisation refuses NaN statistics. Nothing is trained on it."""
    import speechssl.upstream as registry

    real_build = registry.build_upstream

    def build(spec, **kwargs):
        upstream = real_build(spec, **kwargs)

        def hook(module, inputs, output):
            output.layers = [layer.clone() for layer in output.layers]
            output.layers[-1][0, 0, 0] = NAN
            return output

        upstream.register_forward_hook(hook)
        return upstream

    monkeypatch.setattr(registry, "build_upstream", build)
    cfg = bench_config(tiny_corpus, tmp_path / "cache", f"cache.enabled={str(cached).lower()}",
                       "featurizer.standardize=true")
    message = "produced NaN or infinite values for cut" if cached else "cannot standardise: the train features"
    with pytest.raises(SpeechSSLError, match=message):
        run_bench(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "result.json").exists()
    if cached:
        assert not [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]
