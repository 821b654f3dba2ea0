"""Smoke test of the demo pipeline at tiny scale: every stage runs, then is reused."""

import json

from speechssl.cli import main


def test_demo_runs_then_reuses(tmp_path, capsys):
    argv = ["demo", "--out", str(tmp_path / "run"), "--data", str(tmp_path / "corpus"),
            "corpus.hours=0.03", "corpus.languages=[en,fr]", "corpus.speakers=10", "corpus.trials=40",
            "batch_seconds=20"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "demo finished" in out and "reused" not in out
    check = json.loads((tmp_path / "run" / "data_check.json").read_text())
    assert set(check["splits"]) == {"train", "dev", "test"}
    assert all(s["bad"] == [] and s["cuts"] > 0 for s in check["splits"].values())
    assert (tmp_path / "run" / "config.yaml").is_file()

    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("reused") == 2

    # A different corpus config on the same directory is refused, not silently mixed.
    assert main(argv[:-1] + ["corpus.seed=1"]) == 2
    assert "corpus" in capsys.readouterr().err
