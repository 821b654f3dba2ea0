"""Smoke test of the demo pipeline at tiny scale: every stage runs, then is reused."""

import json

from speechssl.cli import main

# The demo's targets and pretraining stages, shrunk to 8 clusters and 2 + 1 (stage 2) updates of a one-layer model.
TINY_PRETRAIN = [
    "targets.k=8", "targets.max_fit_frames=2000",
    "pretrain.steps=2", "pretrain.stage2.steps=1", "pretrain.batch_seconds=8", "pretrain.data.micro_batch_seconds=8",
    "pretrain.data.crop_seconds=2", "pretrain.data.num_workers=0", "pretrain.encoder.layers=1",
    "pretrain.valid_every=0", "pretrain.save_every=2", "pretrain.tensorboard=false", "pretrain.health_utterances=4",
]

# ... and its benchmark stage to one cheap task for the baseline and the pretrained encoder.
TINY_BENCH = [
    "bench.upstreams=[mfcc,random_init,pretrained]", "bench.runs=[lid:mean_linear]", "bench.settings.train.max_epochs=1",
    "bench.settings.train.batch_seconds=20", "bench.settings.train.num_workers=0",
]


def test_demo_runs_then_reuses(tmp_path, capsys):
    argv = ["demo", "--out", str(tmp_path / "run"), "--data", str(tmp_path / "corpus"),
            "corpus.hours=0.03", "corpus.languages=[en,fr]", "corpus.speakers=10", "corpus.trials=40",
            "batch_seconds=20", *TINY_PRETRAIN, *TINY_BENCH]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "demo finished" in out and "reused" not in out
    check = json.loads((tmp_path / "run" / "data_check.json").read_text())
    assert {"train", "dev", "test"} <= set(check["splits"])  # and the noisy copies of dev and test
    assert all(s["bad"] == [] and s["cuts"] > 0 for s in check["splits"].values())
    assert (tmp_path / "run" / "config.yaml").is_file()

    table = (tmp_path / "run" / "bench" / "summary.md").read_text()
    assert "| mfcc |" in table and "| pretrained |" in table and "| random_init |" in table
    assert "lid mean_linear accuracy" in table
    assert (tmp_path / "run" / "random_init" / "checkpoints" / "step_00000000.pt").is_file()
    quality = json.loads(next((tmp_path / "run" / "targets").glob("*/quality.json")).read_text())
    assert 0.0 < quality["dev"]["all_frames"]["pnmi"] <= 1.0
    result = json.loads((tmp_path / "run" / "bench" / "pretrained" / "lid-mean_linear" / "result.json").read_text())
    assert result["upstream"].startswith("ckpt:") and len(result["layer_weights"]) == 2
    # The adapted run: the pretrained encoder fine-tuned, recorded with its regime and costs.
    tuned = json.loads((tmp_path / "run" / "bench" / "pretrained" / "lid-mean_linear-full" / "result.json").read_text())
    assert tuned["regime"] == "full" and tuned["adaptation"]["upstream_tunable_params"] > 0
    assert "| pretrained (full) |" in table

    # The report stage: everything the demo ran, from the demo's own result store.
    html = (tmp_path / "run" / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3  # leaderboard bars, layer weights, loss curve
    assert "pretrained" in html and "mfcc" in html and "http://" not in html and "https://" not in html
    assert "Adaptation regimes" in html
    assert (tmp_path / "run" / "report" / "tables.tex").is_file()

    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.split("demo finished")[1].count(" reused ") == 5
    assert (tmp_path / "run" / "pretrain" / "checkpoints" / "step_00000003.pt").is_file()  # 2 + 1 in stage 2

    # A different corpus config on the same directory is refused, not silently mixed.
    assert main(argv[:-1] + ["corpus.seed=1"]) == 2
    assert "corpus" in capsys.readouterr().err
