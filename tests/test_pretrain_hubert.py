"""HuBERT pretraining end to end on the tiny corpus: MFCC targets -> trainer -> ckpt: upstream."""

from pathlib import Path

import pytest
import torch

from conftest import TINY_RUN, TINY_W2V2

from speechssl.config import load_config
from speechssl.errors import ConfigError
from speechssl.pretrain import PretrainConfig, pretrain, read_metrics
from speechssl.targets import build_targets

ENCODER = [o for o in TINY_W2V2 if o.startswith("encoder.")]
HUBERT = [
    *ENCODER,
    "encoder.conv_norm=group_norm",
    "objective=hubert",
    "hubert.final_dim=16",
    "hubert.mask_prob=0.5",
    "hubert.unmasked_weight=1.0",
    *TINY_RUN,
    "health_utterances=8",
]


@pytest.fixture(scope="module")
def mfcc_targets(tiny_corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("targets")
    return build_targets("mfcc", tiny_corpus, out, k=8, frame_ms=20, splits=("train", "dev"),
                         max_fit_frames=2000, cache_dir=out / "cache")


def hubert_config(data: Path, targets: Path, *extra: str) -> PretrainConfig:
    return load_config(PretrainConfig, None, [*HUBERT, f"data.dir={data}", f"hubert.targets=[{targets}]", *extra])


def test_hubert_trains_and_its_checkpoint_is_an_upstream(tiny_corpus, mfcc_targets, tmp_path):
    from speechssl.upstream import build_upstream

    cfg = hubert_config(tiny_corpus, mfcc_targets, "steps=3", "save_every=3", "valid_every=3")
    result = pretrain(cfg, tmp_path / "run", progress=False)
    train, valid = read_metrics(tmp_path / "run"), read_metrics(tmp_path / "run", "valid")
    assert [r["step"] for r in train] == [1, 2, 3]
    for key in ("masked_ce", "unmasked_ce", "masked_accuracy", "unmasked_accuracy", "majority_share", "grad_norm"):
        assert key in train[0], key
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in train)
    assert valid[-1]["step"] == 3 and len(valid[-1]["health_effective_rank"]) == 3
    # The run's config remembers the label count, so the checkpoint loads without the targets.
    upstream = build_upstream(f"ckpt:{result.last_checkpoint}")
    out = upstream(torch.randn(2, 16000), torch.tensor([16000, 8000]))
    assert len(out.layers) == 3 and out.lengths.tolist() == [49, 24]


def test_targets_of_another_frame_rate_are_refused(tiny_corpus, mfcc_targets, tmp_path):
    stride2 = "encoder.conv_layers=[[32,10,5,0],[32,3,2,0],[32,3,2,0],[32,3,2,0],[32,3,2,0],[32,2,2,0],[32,2,2,0],[32,2,2,0]]"
    cfg = hubert_config(tiny_corpus, mfcc_targets, "steps=1", stride2)
    with pytest.raises(ConfigError, match="frame"):
        pretrain(cfg, tmp_path / "run", progress=False)


def test_init_only_writes_the_step_zero_checkpoint_that_training_continues(tiny_corpus, mfcc_targets, tmp_path):
    from speechssl.pretrain.checkpoint import load_checkpoint, step_checkpoints

    cfg = hubert_config(tiny_corpus, mfcc_targets, "steps=2", "save_every=2", "valid_every=2")
    init = pretrain(cfg, tmp_path / "run", progress=False, init_only=True)
    assert [s for s, _ in step_checkpoints(tmp_path / "run/checkpoints")] == [0]
    weights = load_checkpoint(init.last_checkpoint)["model"]
    trained = pretrain(cfg, tmp_path / "run", progress=False)  # continues from step 0
    assert trained.state.step == 2 and "masked CE" in trained.summary
    after = load_checkpoint(trained.last_checkpoint)["model"]
    assert any(not torch.equal(weights[k], after[k]) for k in weights)
    # A fresh run of the same config starts from the same initial weights.
    other = pretrain(cfg, tmp_path / "other", progress=False, init_only=True)
    again = load_checkpoint(other.last_checkpoint)["model"]
    assert all(torch.equal(weights[k], again[k]) for k in weights)


def test_denoising_mixes_inputs_and_logs_it(tiny_corpus, mfcc_targets, tmp_path):
    cfg = hubert_config(tiny_corpus, mfcc_targets, "steps=2", "save_every=2", "valid_every=2",
                        "data.mixing.prob=1.0", f"data.mixing.noise_dir={tiny_corpus / 'noise'}")
    pretrain(cfg, tmp_path / "run", progress=False)
    train = read_metrics(tmp_path / "run")
    assert all(r["fraction_mixed"] == 1.0 for r in train)


def test_sigkill_then_resume_is_exact_across_the_stage_boundary(tiny_corpus, mfcc_targets, tmp_path):
    """Stage 1 (language-sampled), then stage 2 on the balanced subset; kill -9 right after the
    boundary checkpoint, resume: every logged number and the final weights equal a straight run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from speechssl.pretrain.checkpoint import load_checkpoint

    root = Path(__file__).resolve().parents[1]
    args = [*HUBERT, f"data.dir={tiny_corpus}", f"hubert.targets=[{mfcc_targets}]", "steps=3", "stage2.steps=3",
            "stage2.hours_per_language=0.002", "data.language_alpha=0.5", "save_every=2", "valid_every=3",
            "data.num_workers=1"]
    env = {**os.environ, "PYTHONPATH": str(root / "src")}

    def cli(out: Path) -> list[str]:
        return [sys.executable, "-m", "speechssl.cli", "pretrain", "--out", str(out), "--no-progress", *args]

    straight = subprocess.run(cli(tmp_path / "straight"), env=env, capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr
    assert "stage 2 at step 3" in straight.stderr
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cli(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not (killed / "checkpoints/step_00000003.pt").exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert (killed / "checkpoints/step_00000003.pt").exists(), "the run never reached the boundary"
    assert not (killed / "checkpoints/step_00000006.pt").exists(), "the run finished before the kill"
    resumed = subprocess.run(cli(killed), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr

    def comparable(records):
        from speechssl.pretrain.mfu import VOLATILE_RECORD_KEYS

        return [{k: v for k, v in r.items() if k not in VOLATILE_RECORD_KEYS} for r in records]

    for split in ("train", "valid"):
        assert comparable(read_metrics(killed, split)) == comparable(read_metrics(tmp_path / "straight", split))
    train = read_metrics(killed)
    assert [r["stage"] for r in train] == [1, 1, 1, 2, 2, 2]
    assert set(train[-1]["hours_by_language"]) >= {"en", "fr"}
    a = load_checkpoint(killed / "checkpoints/step_00000006.pt")["model"]
    b = load_checkpoint(tmp_path / "straight/checkpoints/step_00000006.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
