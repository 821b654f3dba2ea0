"""Adaptation regimes: which parameters train, adapters, LoRA, budgets, the runner end to end."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import noise_batch
from test_upstream import LAYER_NORM_EXTRACTOR, save_checkpoint, save_hf

from speechssl.benchmark.store import ResultStore
from speechssl.benchmark.sweep import SweepConfig, plan_sweep
from speechssl.config import from_dict, load_config
from speechssl.downstream.adaptation import (
    SpecAugment,
    apply_regime,
    layer_index,
    merge_lora,
    partial_layer_ids,
    upstream_param_groups,
)
from speechssl.downstream.config import BenchConfig, SpecAugmentConfig, parse_regime, regime_label
from speechssl.downstream.cost import PeakMemory
from speechssl.errors import ConfigError
from speechssl.upstream import build_upstream

FAST = ["train.max_epochs=2", "train.batch_seconds=20", "probe_cfg.hidden=16", "probe_cfg.embed_dim=16",
        "train.num_workers=0", "health_utterances=0", "cost.energy=false"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def upstream_specs(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapt")
    # 3 Transformer layers in both, so bottom / middle / top blocks differ.
    ckpt = save_checkpoint(root / "ckpt" / "best.pt", "encoder.layers=3")
    # A 20 ms frame rate (stride 5 * 8 * 8 = 320) as real models have: the upstream tests' tiny
    # HF config frames at 1.6 kHz, which makes a training run on the tiny corpus take minutes.
    hf = save_hf(root / "hf", "Wav2Vec2Model", extractor=LAYER_NORM_EXTRACTOR, num_hidden_layers=3,
                 conv_dim=(32, 32, 32), conv_kernel=(10, 8, 4), conv_stride=(5, 8, 8))
    return {"ckpt": f"ckpt:{ckpt}", "hf": f"hf:{hf}"}


def _cfg(*overrides: str) -> BenchConfig:
    return load_config(BenchConfig, None, list(overrides))


def _adapted(spec: str, *overrides: str):
    upstream = build_upstream(spec)
    return upstream, apply_regime(upstream, _cfg(*overrides))


def _layer_prefix(spec: str) -> str:
    return "encoder.encoder.layers." if spec.startswith("ckpt:") else "model.encoder.layers."


# ---------------------------------------------------------------- which parameters train


@pytest.mark.parametrize("kind", ["ckpt", "hf"])
def test_frozen_trains_nothing_and_full_everything_but_the_cnn(kind, upstream_specs):
    spec = upstream_specs[kind]
    upstream, frozen = _adapted(spec, "regime=frozen")
    assert frozen.trained == [] and frozen.tunable_params == 0
    assert frozen.total_params == sum(p.numel() for p in upstream.parameters())

    upstream, full = _adapted(spec, "regime=full")
    names = {n for n, _ in upstream.named_parameters()}
    expected = {n for n in names if ".feature_extractor." not in n
                and not n.endswith(("mask_embedding", "masked_spec_embed"))}
    assert set(full.trained) == expected
    assert any(".feature_extractor." in n for n in names)

    upstream, with_cnn = _adapted(spec, "regime=full", "adapt.train_cnn=true")
    assert set(with_cnn.trained) == expected | {n for n in names if ".feature_extractor." in n}


@pytest.mark.parametrize("kind", ["ckpt", "hf"])
@pytest.mark.parametrize("position, count, layers", [("top", 2, {1, 2}), ("bottom", 1, {0}), ("middle", 1, {1}),
                                                     ("bottom", 2, {0, 1})])
def test_partial_unfreezes_exactly_the_chosen_layers(kind, position, count, layers, upstream_specs):
    spec = upstream_specs[kind]
    upstream, adaptation = _adapted(spec, "regime=partial", f"adapt.partial={position}",
                                    f"adapt.partial_layers={count}")
    prefix = _layer_prefix(spec)
    expected = {n for n, _ in upstream.named_parameters() if any(n.startswith(f"{prefix}{i}.") for i in layers)}
    assert expected and set(adaptation.trained) == expected
    assert adaptation.label == f"partial-{position}{count}"


def test_partial_layer_blocks():
    assert partial_layer_ids(12, "bottom", 3) == [0, 1, 2]
    assert partial_layer_ids(12, "middle", 3) == [4, 5, 6]
    assert partial_layer_ids(12, "top", 3) == [9, 10, 11]
    with pytest.raises(ConfigError, match="only 12 Transformer layers"):
        partial_layer_ids(12, "top", 13)


@pytest.mark.parametrize("kind", ["ckpt", "hf"])
def test_adapters_train_only_adapters_and_layer_norms_and_start_as_identity(kind, upstream_specs):
    spec = upstream_specs[kind]
    waves, lengths = noise_batch()
    base = build_upstream(spec)
    with torch.no_grad():
        before = base(waves, lengths).layers
    upstream, adaptation = _adapted(spec, "regime=adapter", "adapt.adapter_size=4")
    prefix = _layer_prefix(spec)
    for name in adaptation.trained:
        assert name.startswith(prefix) and (".adapter_" in name or "layer_norm" in name), name
    adapters = [n for n in adaptation.trained if ".adapter_" in n]
    # Two adapters (down + up, weight + bias) in each of the 3 layers.
    assert len(adapters) == 3 * 2 * 4
    dim = upstream.feature_dim
    assert sum(p.numel() for n, p in upstream.named_parameters() if ".adapter_" in n) == 3 * 2 * (2 * dim * 4 + 4 + dim)
    with torch.no_grad():
        after = upstream(waves, lengths).layers
    for a, b in zip(before, after):
        assert torch.allclose(a, b, atol=1e-6)
    # ...and the adapters are in the forward pass: a non-zero up projection changes the output.
    with torch.no_grad():
        for name, param in upstream.named_parameters():
            if ".adapter_" in name and ".up." in name:
                param.normal_(std=0.1)
        changed = upstream(waves, lengths).layers
    assert not torch.allclose(changed[-1], before[-1], atol=1e-4)


@pytest.mark.parametrize("kind", ["ckpt", "hf"])
@pytest.mark.parametrize("targets, per_layer", [("[attention]", 4), ("[attention,ffn]", 6), ("[ffn]", 2)])
def test_lora_trains_only_lora_matrices_on_the_chosen_projections(kind, targets, per_layer, upstream_specs):
    upstream, adaptation = _adapted(upstream_specs[kind], "regime=lora", "adapt.lora_rank=2",
                                    f"adapt.lora_targets={targets}")
    assert all(".lora_A." in n or ".lora_B." in n for n in adaptation.trained)
    # lora_A and lora_B per adapted projection, in each of the 3 layers.
    assert len(adaptation.trained) == 3 * per_layer * 2
    for name in adaptation.trained:
        projection = name.split(".lora_")[0].rsplit(".", 1)[-1]
        allowed = {"[attention]": {"q_proj", "k_proj", "v_proj", "out_proj"},
                   "[ffn]": {"intermediate_dense", "output_dense"}}.get(targets)
        assert allowed is None or projection in allowed


@pytest.mark.parametrize("kind", ["ckpt", "hf"])
def test_lora_merged_output_equals_unmerged_output(kind, upstream_specs):
    upstream, _ = _adapted(upstream_specs[kind], "regime=lora", "adapt.lora_rank=2", "adapt.lora_targets=[attention,ffn]")
    base = build_upstream(upstream_specs[kind])
    waves, lengths = noise_batch()
    with torch.no_grad():
        for name, param in upstream.named_parameters():
            if ".lora_B." in name:  # zero at init: make the update real
                param.normal_(std=0.2)
        unmerged = upstream(waves, lengths).layers
        reference = base(waves, lengths).layers
        assert merge_lora(upstream) == 3 * 6
        merged = upstream(waves, lengths).layers
    assert not any("lora" in n for n, _ in upstream.named_parameters())
    assert set(dict(upstream.named_parameters())) == set(dict(base.named_parameters()))
    assert not torch.allclose(unmerged[-1], reference[-1], atol=1e-3)
    for a, b in zip(unmerged, merged):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("kind", ["ckpt", "hf"])
def test_adapted_upstreams_keep_every_layer_in_train_mode(kind, upstream_specs, tmp_path):
    """LayerDrop would drop layers from a training batch (transformers: from hidden_states)."""
    if kind == "hf":  # a model whose config asks for heavy LayerDrop
        spec = f"hf:{save_hf(tmp_path / 'hf', 'Wav2Vec2Model', extractor=LAYER_NORM_EXTRACTOR, layerdrop=0.9)}"
        upstream, _ = _adapted(spec, "regime=full")
    else:
        upstream, _ = _adapted(upstream_specs[kind], "regime=full")
        upstream.encoder.encoder.layerdrop = 0.9  # as a pretraining config could have it ...
        apply_regime(upstream, _cfg("regime=full"))  # ... the regime switches it off again
        assert upstream.encoder.encoder.layerdrop == 0.0
    upstream.train()
    waves, lengths = noise_batch()
    for _ in range(5):
        assert len(upstream(waves, lengths).layers) == upstream.num_layers


@pytest.mark.parametrize("regime", ["full", "partial", "adapter", "lora"])
def test_feature_upstreams_refuse_adaptation(regime):
    with pytest.raises(ConfigError, match="needs an upstream with Transformer layers.*'mfcc'.*regime=frozen"):
        _adapted("mfcc", f"regime={regime}")


def test_gradient_checkpointing_gives_the_same_gradients(upstream_specs):
    waves, lengths = noise_batch()
    grads = []
    for checkpointing in ("false", "true"):
        torch.manual_seed(0)
        upstream, _ = _adapted(upstream_specs["ckpt"], "regime=full", f"adapt.gradient_checkpointing={checkpointing}")
        upstream.train()
        upstream.encoder.encoder.layerdrop = 0.0
        for module in upstream.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        out = upstream(waves, lengths).layers[-1]
        out.pow(2).mean().backward()
        grads.append({n: p.grad.clone() for n, p in upstream.named_parameters() if p.grad is not None})
        assert upstream.encoder.encoder.gradient_checkpointing == (checkpointing == "true")
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name


# ---------------------------------------------------------------- optimisation


def test_layer_wise_lr_decay_groups(upstream_specs):
    upstream, _ = _adapted(upstream_specs["ckpt"], "regime=full")
    assert layer_index("encoder.encoder.layers.2.attention.q_proj.weight", 3, pre_ln=False) == 3
    assert layer_index("encoder.feature_projection.projection.weight", 3, pre_ln=False) == 0
    # encoder.layer_norm is the input norm of a post-LN encoder, the final norm of a pre-LN one.
    assert layer_index("encoder.encoder.layer_norm.weight", 3, pre_ln=False) == 0
    assert layer_index("model.encoder.layer_norm.weight", 3, pre_ln=True) == 3
    cfg = _cfg("regime=full", "adapt.layer_decay=0.5", "adapt.upstream_lr=1e-3")
    groups = upstream_param_groups(upstream, cfg, probe_lr=1e-2)
    lrs = sorted(g["lr"] for g in groups)
    assert lrs == pytest.approx([1e-3 * 0.5**3, 1e-3 * 0.5**2, 1e-3 * 0.5, 1e-3])
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in upstream.parameters())
    # No decay: one group at the default upstream rate (probe lr / 10 for full fine-tuning).
    (group,) = upstream_param_groups(upstream, _cfg("regime=full"), probe_lr=1e-2)
    assert group["lr"] == pytest.approx(1e-3) and group["upstream"]


def test_freeze_updates_keeps_the_upstream_rate_at_zero():
    from speechssl.downstream.runner import _lr_schedule

    probe, up = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([{"params": [probe], "lr": 1.0}, {"params": [up], "lr": 0.1, "upstream": True}])
    scheduler = _lr_schedule(optimizer, _cfg("adapt.freeze_updates=5", "train.warmup_updates=2"), total_updates=20)
    rates = []
    for _ in range(8):
        rates.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert all(r[1] == 0.0 for r in rates[:5]) and all(r[1] > 0 for r in rates[5:])
    assert all(r[0] > 0 for r in rates)


def test_spec_augment_masks_only_valid_frames_and_is_off_by_default():
    features = torch.ones(3, 50, 20)
    lengths = torch.tensor([50, 30, 5])
    assert torch.equal(SpecAugment(SpecAugmentConfig())(features, lengths), features)
    torch.manual_seed(0)
    masked = SpecAugment(SpecAugmentConfig(time_masks=2, time_width=10))(features, lengths)
    assert (masked == 0).any() and (masked == 1).any()
    dropped = (masked == 0).all(-1)  # [B, T] whole frames zeroed by time masks
    assert not dropped[1, 30:].any() and not dropped[2, 5:].any()
    assert dropped.sum(1).le(20).all()
    banded = SpecAugment(SpecAugmentConfig(feature_masks=1, feature_width=4))(features, lengths)
    zero_channels = (banded == 0).all(1)  # [B, D]: a band is zero over all frames
    assert zero_channels.sum(1).le(4).all()


def test_peak_memory_is_measured_on_cpu():
    with PeakMemory(torch.device("cpu")) as peak:
        block = torch.ones(8_000_000)  # 32 MB
        time.sleep(0.1)
        del block
    assert peak.kind == "process_rss" and peak.mb is not None and peak.mb > 30


# ---------------------------------------------------------------- labels, budgets, sweeps


def test_regime_labels_round_trip():
    for label in ("frozen", "full", "adapter", "lora", "partial-top2", "partial-bottom1", "partial-middle3"):
        cfg = load_config(BenchConfig, None, parse_regime(label))
        assert regime_label(cfg) == label
    assert regime_label(load_config(BenchConfig, None, parse_regime("partial-top"))) == "partial-top2"
    with pytest.raises(ConfigError, match="unknown regime 'prefix'"):
        parse_regime("prefix")
    with pytest.raises(ConfigError, match="lora_targets"):
        _cfg("adapt.lora_targets=[attention,mlp]")


def test_sweep_crosses_regimes(tmp_path):
    cfg = from_dict(SweepConfig, {"upstreams": ["ckpt:x"], "runs": ["lid:mean_linear", "asr:linear_ctc"],
                                  "regimes": ["frozen", "partial-top1", "lora"], "store": str(tmp_path / "s.db")})
    cells = plan_sweep(cfg)
    assert len(cells) == 6
    partial = [c for c in cells if c.cfg.regime == "partial"]
    assert {c.cfg.adapt.partial_layers for c in partial} == {1} and {c.cfg.adapt.partial for c in partial} == {"top"}
    assert any("partial_top1" in c.label for c in partial)
    with pytest.raises(ConfigError, match="unknown regime"):
        from_dict(SweepConfig, {"regimes": ["frozen", "loRA"]})


def _bench(spec, corpus, out, *overrides):
    from speechssl.downstream.runner import run_bench

    cfg = load_config(BenchConfig, None, [f"upstream={spec}", f"data={corpus}", "task=lid", "probe=mean_linear",
                                          f"cache.dir={out.parent / 'cache'}", *FAST, *overrides])
    return run_bench(cfg, out, progress=False)


def test_budget_refuses_before_any_training(upstream_specs, tiny_corpus, tmp_path):
    with pytest.raises(ConfigError, match=r"trained parameters exceed adapt.max_tunable_params=1,000"):
        _bench(upstream_specs["ckpt"], tiny_corpus, tmp_path / "run", "regime=full", "adapt.max_tunable_params=1000")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    # The probe counts too: a LoRA upstream under budget, but not with its probe.
    with pytest.raises(ConfigError, match="with probe mean_linear"):
        _bench(upstream_specs["ckpt"], tiny_corpus, tmp_path / "run", "regime=lora", "adapt.lora_rank=1",
               "adapt.max_tunable_params=800")


def test_runs_record_regime_cost_and_train_only_what_the_regime_allows(upstream_specs, tiny_corpus, tmp_path,
                                                                       monkeypatch):
    import speechssl.upstream as registry

    built = []
    original = registry.build_upstream

    def keep(spec, **kwargs):
        built.append(original(spec, **kwargs))
        return built[-1]

    monkeypatch.setattr(registry, "build_upstream", keep)
    frozen = _bench(upstream_specs["ckpt"], tiny_corpus, tmp_path / "frozen", "cache.enabled=false")
    # The frozen regime never computes an upstream gradient, even without the cache.
    assert all(p.grad is None and not p.requires_grad for p in built[-1].parameters())
    assert frozen["regime"] == "frozen" and frozen["adaptation"]["upstream_tunable_params"] == 0

    lora = _bench(upstream_specs["ckpt"], tiny_corpus, tmp_path / "lora", "regime=lora", "adapt.lora_rank=2")
    trained = {n: p for n, p in built[-1].named_parameters() if p.grad is not None}
    assert trained and all(".lora_" in n for n in trained)
    info = lora["adaptation"]
    assert lora["regime"] == "lora" and lora["cache"]["enabled"] is False
    assert info["upstream_tunable_params"] == 3 * 4 * 2 * (2 * 32)  # 3 layers x q,k,v,out x (A + B) of 2x32
    assert info["tunable_params"] == info["upstream_tunable_params"] + lora["probe_params"]
    assert info["step_seconds"] > 0 and info["peak_memory_mb"] > 0
    from safetensors.torch import load_file

    assert set(load_file(tmp_path / "lora" / "adapted_upstream.safetensors")) == set(trained)
    assert not (tmp_path / "frozen" / "adapted_upstream.safetensors").exists()
    store = ResultStore(tmp_path / "r.db")
    store.add_result(lora)
    (row,) = store.runs()
    assert row["regime"] == "lora" and row["extra"]["adaptation"]["tunable_params"] == info["tunable_params"]


def test_a_killed_fine_tuning_run_restarts_cleanly_without_a_duplicate(upstream_specs, tiny_corpus, tmp_path):
    out, store = tmp_path / "run", tmp_path / "results.db"
    argv = [sys.executable, "-m", "speechssl.cli", "bench", "--upstream", upstream_specs["ckpt"], "--task", "lid",
            "--probe", "mean_linear", "--data", str(tiny_corpus), "--out", str(out), "--no-progress",
            "--store", str(store), "regime=partial", "adapt.partial_layers=1", *FAST, "train.max_epochs=6",
            "train.patience=10"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    for line in proc.stdout:  # killed during training, after the first epoch
        if "epoch 1:" in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and not (out / "result.json").exists()
    assert not store.exists() or ResultStore(store).runs() == []
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    again = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)  # reuses the result
    assert again.returncode == 0 and "reused" in again.stdout
    runs = ResultStore(store).runs()
    assert len(runs) == 1 and runs[0]["regime"] == "partial-top1"
    assert json.loads((out / "result.json").read_text())["dev"]["epochs_run"] == 6


# ---------------------------------------------------------------- tuned upstreams and exports


@pytest.fixture(scope="module")
def tuned_runs(upstream_specs, tiny_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("tuned")
    torch.set_num_threads(1)
    return {regime: _bench(upstream_specs["ckpt" if regime != "partial" else "hf"], tiny_corpus, root / regime,
                           f"regime={regime}", "adapt.lora_rank=2", "adapt.adapter_size=4", "train.lr=0.05")
            for regime in ("lora", "adapter", "partial")} | {"root": root}


def _layers(upstream, waves, lengths):
    with torch.no_grad():
        return upstream(waves, lengths).layers


@pytest.mark.parametrize("regime", ["lora", "adapter", "partial"])
def test_tuned_upstream_rebuilds_the_adapted_encoder(regime, tuned_runs, upstream_specs):
    run_dir = tuned_runs["root"] / regime
    tuned = build_upstream(f"tuned:{run_dir}")
    assert not any(p.requires_grad for p in tuned.parameters())
    base = build_upstream(tuned.run_cfg.upstream)
    waves, lengths = noise_batch()
    got, before = _layers(tuned, waves, lengths), _layers(base, waves, lengths)
    assert not torch.allclose(got[-1], before[-1], atol=1e-6)  # training moved the adapted weights
    assert tuned.fingerprint() != base.fingerprint() and tuned.num_layers == base.num_layers


@pytest.mark.parametrize("regime", ["lora", "partial"])
def test_merged_export_is_a_transformers_model_with_the_same_features(regime, tuned_runs, tmp_path, no_network):
    from speechssl.upstream.tuned import export_tuned

    run_dir = tuned_runs["root"] / regime
    out = export_tuned(run_dir, tmp_path / "merged", merge=True)
    merged = build_upstream(f"hf:{out}")
    tuned = build_upstream(f"tuned:{run_dir}")
    waves, lengths = noise_batch()
    for a, b in zip(_layers(tuned, waves, lengths), _layers(merged, waves, lengths)):
        assert torch.allclose(a, b, atol=1e-4)
    assert not any("lora" in n for n, _ in merged.named_parameters())


def test_unmerged_export_and_refusals(tuned_runs, tmp_path):
    from speechssl.upstream.tuned import ADAPTED_FILE, export_tuned

    out = export_tuned(tuned_runs["root"] / "lora", tmp_path / "lora-only")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["regime"] == "lora" and config["adapt"]["lora_rank"] == 2 and (out / ADAPTED_FILE).is_file()
    assert (out / ADAPTED_FILE).stat().st_size < 100_000  # the adaptation only, not the model
    with pytest.raises(ConfigError, match="cannot be merged"):
        export_tuned(tuned_runs["root"] / "adapter", tmp_path / "x", merge=True)
    with pytest.raises(ConfigError, match="only runs with regime other than frozen"):
        build_upstream(f"tuned:{tmp_path}")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / ADAPTED_FILE).write_bytes(b"not safetensors")
    with pytest.raises(ConfigError, match="cannot read"):
        build_upstream(f"tuned:{tmp_path / 'bad'}")
