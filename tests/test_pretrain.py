"""Pretraining: LR schedules and heuristics, trainer runs, checkpoints, exact resume, DDP."""

import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY_RUN, TINY_W2V2

from speechssl.config import check, load_config
from speechssl.errors import ConfigError
from speechssl.models.objectives import Wav2Vec2Pretraining
from speechssl.pretrain import OptimConfig, PretrainConfig, TrainingDiverged, lr_at, pretrain, read_metrics
from speechssl.pretrain.config import hubert_tiny_recipe, wavlablm_tiny_recipe
from speechssl.pretrain.checkpoint import load_checkpoint, step_checkpoints
from speechssl.pretrain.mfu import VOLATILE_RECORD_KEYS

ROOT = Path(__file__).resolve().parents[1]

# A very small model and batches of a few seconds: each update takes a fraction of a second.
SMALL = [
    *TINY_W2V2,
    "wav2vec2.num_negatives=10",
    *TINY_RUN,
]


def small_config(data: Path, *extra: str) -> PretrainConfig:
    return load_config(PretrainConfig, None, [*SMALL, f"data.dir={data}", *extra])


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "speechssl.cli", "pretrain", *args]


def comparable(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in VOLATILE_RECORD_KEYS} for r in records]


# ---------------------------------------------------------------- schedules and heuristics


def test_linear_schedule_warms_up_and_decays():
    cfg = OptimConfig(schedule="linear", warmup_steps=10, final_lr_scale=0.0)
    assert lr_at(0, 1.0, cfg, 110) == pytest.approx(0.1)
    assert lr_at(9, 1.0, cfg, 110) == pytest.approx(1.0)
    assert lr_at(60, 1.0, cfg, 110) == pytest.approx(0.5)
    assert lr_at(110, 1.0, cfg, 110) == pytest.approx(0.0)


def test_cyclic_schedule_follows_seed_004():
    cfg = OptimConfig(schedule="cyclic", cycle_steps=100, cyclic_base_ratio=0.01)
    peak = 5e-4
    assert lr_at(0, peak, cfg, 1000) == pytest.approx(peak / 100)
    assert lr_at(50, peak, cfg, 1000) == pytest.approx(peak / 100 + (peak - peak / 100) / 2)
    assert lr_at(100, peak, cfg, 1000) == pytest.approx(peak)
    assert lr_at(200, peak, cfg, 1000) == pytest.approx(peak / 100)  # one full cycle later
    assert lr_at(350, peak, cfg, 1000) == pytest.approx(lr_at(150, peak, cfg, 1000))


def test_tri_stage_schedule():
    cfg = OptimConfig(schedule="tri_stage", warmup_steps=10, tri_stage_hold_steps=40, final_lr_scale=0.05,
                      tri_stage_init_scale=0.01)
    assert lr_at(0, 1.0, cfg, 100) == pytest.approx(0.01)
    assert lr_at(30, 1.0, cfg, 100) == pytest.approx(1.0)
    assert lr_at(75, 1.0, cfg, 100) == pytest.approx(math.sqrt(0.05))
    assert lr_at(100, 1.0, cfg, 100) == pytest.approx(0.05)


def test_lr_heuristics_scale_with_batch_seconds():
    def peak(scaling: str, seconds: float) -> float:
        cfg = PretrainConfig(batch_seconds=seconds)
        cfg.optim.lr_scaling = scaling
        return cfg.peak_lr()

    assert peak("linear", 6000) == pytest.approx(5e-4)
    assert peak("linear", 600) == pytest.approx(5e-5)
    assert peak("sqrt", 1500) == pytest.approx(2.5e-4)
    assert peak("none", 600) == PretrainConfig().optim.lr  # no scaling: the configured lr


def test_accumulation_fills_the_update_budget():
    cfg = PretrainConfig(batch_seconds=240)
    cfg.data.micro_batch_seconds = 60
    assert cfg.accumulation(1) == 4
    assert cfg.accumulation(2) == 2
    assert cfg.accumulation(8) == 1


def test_config_rejects_crop_longer_than_micro_batch():
    cfg = PretrainConfig()
    cfg.data.crop_seconds = 90
    with pytest.raises(ConfigError, match="crop_seconds"):
        check(cfg)


def test_shipped_configs_load_and_tiny_is_the_default():
    from speechssl.config import to_dict

    configs = {path.stem: load_config(PretrainConfig, path) for path in (ROOT / "configs/pretrain").glob("*.yaml")}
    assert {"w2v2_tiny", "w2v2_base"} <= set(configs)
    defaults = PretrainConfig()
    check(defaults)
    assert to_dict(configs["w2v2_tiny"]) == to_dict(defaults)
    assert to_dict(configs["hubert_tiny"]) == to_dict(hubert_tiny_recipe())
    assert to_dict(configs["wavlablm_tiny"]) == to_dict(wavlablm_tiny_recipe())
    base = configs["w2v2_base"]
    assert (base.encoder.hidden, base.encoder.layers, base.wav2vec2.diversity_weight) == (768, 12, 0.1)
    assert base.accumulation(8) == 8  # 5600 s = 8 GPUs x 8 micro-batches of 87.5 s


# ---------------------------------------------------------------- trainer


def test_training_writes_monitors_and_checkpoints(tiny_corpus, tmp_path):
    cfg = small_config(tiny_corpus, "steps=4", "save_every=2", "valid_every=2", "keep_last=1",
                       "batch_seconds=12", "grad_variance_every=2")
    result = pretrain(cfg, tmp_path / "run", progress=False)
    assert result.state.step == 4
    train = read_metrics(tmp_path / "run")
    valid = read_metrics(tmp_path / "run", "valid")
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert [r["step"] for r in valid] == [2, 4]
    # Representation health of every layer (input + 2 Transformer layers) at each validation.
    assert len(valid[0]["health_effective_rank"]) == 3 and all(r > 1 for r in valid[0]["health_effective_rank"])
    first = train[0]
    for key in ("loss", "contrastive", "diversity", "penalty", "accuracy", "perplexity", "lr", "grad_norm",
                "hours_seen", "temperature", "codeword_cos_mean"):
        assert key in first, key
    assert len(first["perplexity"]) == 2
    assert "grad_var" in train[0] and "grad_noise_scale_seconds" in train[0]  # steps 0 and 2 measure it
    assert "grad_var" not in train[1]
    assert train[-1]["hours_seen"] == pytest.approx(sum(r["batch_seconds"] for r in train) / 3600)
    assert 0.0 < train[-1]["hours_seen"] * 3600 <= 4 * 12 + 1e-6
    # keep_last=1: only the newest step checkpoint stays, plus best.pt
    assert [s for s, _ in step_checkpoints(tmp_path / "run/checkpoints")] == [4]
    assert (tmp_path / "run/checkpoints/best.pt").is_file()
    state = load_checkpoint(result.last_checkpoint)
    assert state["train_state"]["step"] == 4 and "sampler" in state and "optimizer" in state


def test_export_hf_cli_writes_what_import_hf_reads(tiny_corpus, tmp_path):
    from speechssl.cli import main
    from speechssl.models.hf import import_hf_pretraining

    result = pretrain(small_config(tiny_corpus, "steps=1", "data.valid_split="), tmp_path / "run", progress=False)
    assert main(["export-hf", str(result.last_checkpoint), "--out", str(tmp_path / "hf")]) == 0
    exported = import_hf_pretraining(tmp_path / "hf").state_dict()
    saved = load_checkpoint(result.last_checkpoint)["model"]
    assert set(exported) == set(saved)
    assert all(torch.equal(exported[k], saved[k]) for k in saved)
    assert main(["export-hf", str(result.last_checkpoint), "--out", str(tmp_path / "hf")]) == 2  # no overwrite


def test_run_refuses_a_changed_config_and_resumes_an_extended_one(tiny_corpus, tmp_path):
    pretrain(small_config(tiny_corpus, "steps=2", "save_every=2"), tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="different config"):
        pretrain(small_config(tiny_corpus, "steps=2", "optim.lr=5e-3"), tmp_path / "run", progress=False)
    result = pretrain(small_config(tiny_corpus, "steps=3", "save_every=2"), tmp_path / "run", progress=False)
    assert result.state.step == 3
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [1, 2, 3]


def test_non_finite_losses_are_skipped_then_stop_the_run(tiny_corpus, tmp_path, monkeypatch):
    original = Wav2Vec2Pretraining.forward
    calls = {"n": 0}

    def sometimes_nan(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] in (2,) or calls["n"] >= 4:
            out.loss = out.loss * float("nan")
            out.stats["loss"] = out.loss.detach()
        return out

    monkeypatch.setattr(Wav2Vec2Pretraining, "forward", sometimes_nan)
    cfg = small_config(tiny_corpus, "steps=10", "save_every=1", "max_bad_steps=3", "data.valid_split=")
    with pytest.raises(TrainingDiverged, match="3 non-finite updates in a row"):
        pretrain(cfg, tmp_path / "run", progress=False)
    records = read_metrics(tmp_path / "run")
    assert [r["skipped_steps"] for r in records] == [0, 1, 1, 2, 3][: len(records)]
    # The weights stayed finite and the last checkpoint is the last good step.
    steps = [s for s, _ in step_checkpoints(tmp_path / "run/checkpoints")]
    assert max(steps) == 5
    state = load_checkpoint(tmp_path / "run/checkpoints/step_00000005.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_sigkill_mid_run_then_resume_logs_identical_losses(tiny_corpus, tmp_path):
    """Kill -9 after a checkpoint, resume: the logged numbers equal an uninterrupted run, bitwise."""
    args = [*SMALL, f"data.dir={tiny_corpus}", "steps=8", "save_every=2", "valid_every=4", "data.num_workers=1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    straight = subprocess.run(cli("--out", str(tmp_path / "straight"), "--no-progress", *args),
                              env=env, capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr

    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen(cli("--out", str(killed_dir), "--no-progress", *args), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not (killed_dir / "checkpoints/step_00000004.pt").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert (killed_dir / "checkpoints/step_00000004.pt").exists(), "the run never reached step 4"
    assert not (killed_dir / "checkpoints/step_00000008.pt").exists(), "the run finished before the kill"

    resumed = subprocess.run(cli("--out", str(killed_dir), "--no-progress", *args),
                             env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    for split in ("train", "valid"):
        assert comparable(read_metrics(killed_dir, split)) == comparable(read_metrics(tmp_path / "straight", split))
    a = load_checkpoint(killed_dir / "checkpoints/step_00000008.pt")["model"]
    b = load_checkpoint(tmp_path / "straight/checkpoints/step_00000008.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_equal_one_process_with_accumulation(tiny_corpus, tmp_path):
    common = [*SMALL, f"data.dir={tiny_corpus}", "steps=3", "save_every=3", "data.valid_split=",
              "batch_seconds=12", "data.micro_batch_seconds=6"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    single = subprocess.run(cli("--out", str(tmp_path / "single"), "--no-progress", *common),
                            env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
         f"--master_port={_free_port()}", "-m", "speechssl.cli", "pretrain",
         "--out", str(tmp_path / "ddp"), "--no-progress", *common],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one, two = read_metrics(tmp_path / "single"), read_metrics(tmp_path / "ddp")
    assert len(one) == len(two) == 3
    for a, b in zip(one, two):
        for key in ("loss", "contrastive", "diversity", "penalty", "accuracy", "batch_seconds", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["step"], key)
    wa = load_checkpoint(tmp_path / "single/checkpoints/step_00000003.pt")["model"]
    wb = load_checkpoint(tmp_path / "ddp/checkpoints/step_00000003.pt")["model"]
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-4


def test_cli_pretrain_reports_bad_config(tmp_path):
    proc = subprocess.run(cli("--out", str(tmp_path), "optim.lr=-1"), capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == 2
    assert "optim.lr" in proc.stderr
