"""`speechssl results|stats|report` on imported results alone (seed 002's tables)."""

from __future__ import annotations

import json
from pathlib import Path

from speechssl.cli import main

TABLE1 = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "seed002_table1.csv"


def test_import_then_robustness_reproduces_seed002_table2(tmp_path, capsys):
    store = str(tmp_path / "paper.db")
    assert main(["results", "import", str(TABLE1), "--store", store]) == 0
    assert "234 score(s)" in capsys.readouterr().out
    argv = ["stats", "robustness", "--store", store, "--format", "json", "--boot", "200",
            "--pair", "bilstm:contextnet", "--pair", "xvector:ecapa"]
    assert main(argv) == 0
    results = json.loads(capsys.readouterr().out)
    assert {"task", "probe_a", "probe_b", "n", "pearson", "pearson_p", "spearman", "spearman_p", "kendall",
            "mean_a", "mean_b", "diff_pct"} <= set(results[0])
    by_dataset = {(r["dataset"], r["metric"]): r for r in results}
    buckeye = by_dataset[("buckeye", "wer")]
    assert (round(buckeye["pearson"], 2), round(buckeye["spearman"], 2)) == (0.42, 0.57)  # paper: 0.42, 0.56 (truncated)
    assert round(buckeye["diff_pct"], 1) == 5.2
    vox = by_dataset[("voxceleb1", "eer")]
    assert (round(vox["pearson"], 2), round(vox["spearman"], 2), round(vox["diff_pct"], 1)) == (0.47, 0.75, 46.5)
    assert vox["probe_a"] == "xvector" and vox["n"] == 9


def test_stats_verbs_and_report_on_imports(tmp_path, capsys):
    store = str(tmp_path / "paper.db")
    assert main(["results", "import", str(TABLE1), "--store", store]) == 0
    for verb in ("leaderboard", "score"):
        assert main(["stats", verb, "--store", store, "--baseline", "distilhubert"]) == 0
    out = capsys.readouterr().out
    assert "| wavlm_large |" in out
    for fmt in ("md", "tex"):
        assert main(["stats", "leaderboard", "--store", store, "--task", "asv", "--format", fmt]) == 0
    assert "\\toprule" in capsys.readouterr().out
    assert main(["results", "list", "--store", store, "--task", "er"]) == 0
    assert "finished" in capsys.readouterr().out
    assert main(["results", "export", str(tmp_path / "out.csv"), "--store", store]) == 0
    assert len((tmp_path / "out.csv").read_text().splitlines()) == 235
    assert main(["report", "--store", store, "--out", str(tmp_path / "report")]) == 0
    html = (tmp_path / "report" / "report.html").read_text()
    assert "data:image/png;base64," in html and "wavlm_large" in html


def test_stats_errors_are_one_line(tmp_path, capsys):
    store = str(tmp_path / "paper.db")
    assert main(["results", "import", str(TABLE1), "--store", store]) == 0
    assert main(["stats", "robustness", "--store", store, "--pair", "bilstm"]) == 2
    assert main(["stats", "robustness", "--store", store, "--pair", "nope:other"]) == 2
    assert main(["results", "import", str(tmp_path / "missing.csv"), "--store", store]) == 2
    missing = str(tmp_path / "typo.db")
    for argv in (["results", "list"], ["stats", "leaderboard"], ["report", "--out", str(tmp_path / "r")]):
        assert main([*argv, "--store", missing]) == 2
    assert not Path(missing).exists()  # reading never creates a store
    err = capsys.readouterr().err
    assert "PROBE_A:PROBE_B" in err and "matches no group" in err and "no such results file" in err
    assert err.count("no result store at") == 3


def test_results_matrix_prints_upstreams_by_task_probe_with_chance(tmp_path, capsys):
    import json

    from speechssl.cli import main

    def result(upstream, task, probe, value, chance):
        return {"format": "speechssl.bench/1", "upstream": upstream, "task": task, "probe": probe,
                "primary_metric": "accuracy", "higher_is_better": True,
                "metrics": {"accuracy": value, "chance_accuracy": chance}}

    paths = []
    for i, r in enumerate([result("mfcc", "er", "ecapa", 0.68, 0.25), result("ge2e", "er", "ecapa", 0.5, 0.25),
                           result("mfcc", "ic", "mean_linear", 0.1, 0.077)]):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(r))
    assert main(["results", "matrix", *map(str, paths)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| upstream | er ecapa accuracy ↑ | ic mean_linear accuracy ↑ |"
    assert lines[2:] == ["| mfcc | 0.680 | 0.100 |", "| ge2e | 0.500 |  |", "| *chance* | 0.250 | 0.077 |"]
    (tmp_path / "bad.json").write_text("{}")
    assert main(["results", "matrix", str(tmp_path / "bad.json")]) == 2
    assert main(["results", "matrix", "--by-task", *map(str, paths)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| task probe metric | mfcc | ge2e | *chance* |"
    assert lines[2:] == ["| er ecapa accuracy ↑ | 0.680 | 0.500 | 0.250 |", "| ic mean_linear accuracy ↑ | 0.100 |  | 0.077 |"]
