"""The benchmark report (Markdown, self-contained HTML, LaTeX), its plots and the browser check.

Fed with plain score rows and run dicts (the package contracts), not a store, so these tests
stand alone. No torch anywhere.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from speechssl.benchmark import browser, plots
from speechssl.benchmark.report import Report, build_report, read_pretrain_metrics, write_report
from speechssl.errors import ConfigError, SpeechSSLError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# An upstream whose name needs escaping in HTML (<, &) and in LaTeX (_, &).
ODD = "hf:w2v<2>&_base"
UPSTREAMS = ("mfcc", "ge2e", ODD)
LAYERS = {"mfcc": 1, "ge2e": 3, ODD: 5}
LANGS = ("de", "en", "fr")
BASE = {"mfcc": 0.50, "ge2e": 0.40, ODD: 0.25}  # lower is better for both tasks' metrics


def _fake_store(tmp_path: Path | None = None):
    """3 upstreams x 2 tasks x 2 probes x 2 seeds, per-language CER, layer weights, costs,
    one failed and one running run; plus a pretraining run directory when tmp_path is given."""
    rows, runs = [], []
    for up in UPSTREAMS:
        for task, probes, metrics in (("asr", ("bilstm_ctc", "linear_ctc"), ("cer", "wer")),
                                      ("asv", ("xvector", "mean_linear"), ("eer", "mindcf"))):
            for p_index, probe in enumerate(probes):
                for seed in (0, 1):
                    run_id = f"{up}-{task}-{probe}-{seed}"
                    base = BASE[up] + 0.05 * p_index + 0.01 * seed
                    for m_index, metric in enumerate(metrics):
                        rows.append(dict(run_id=run_id, upstream=up, task=task, probe=probe, regime="frozen",
                                         seed=seed, dataset="synth", language="", split="test", metric=metric,
                                         value=base * (1 + m_index), higher_is_better=False, status="finished",
                                         source="bench"))
                    if task == "asr":
                        for l_index, lang in enumerate(LANGS):
                            rows.append(dict(run_id=run_id, upstream=up, task=task, probe=probe, regime="frozen",
                                             seed=seed, dataset="synth", language=lang, split="test", metric="cer",
                                             value=base + 0.02 * l_index, higher_is_better=False,
                                             status="finished", source="bench"))
                    n = LAYERS[up]
                    weights = [(i + 1) / (n * (n + 1) / 2) for i in range(n)]
                    runs.append(dict(
                        run_id=run_id, upstream=up, task=task, probe=probe, regime="frozen", seed=seed,
                        dataset="synth", status="finished", source="bench", config_hash=run_id, error=None,
                        primary_metric=metrics[0], upstream_params={"mfcc": 0, "ge2e": 1_400_000, ODD: 94_000_000}[up],
                        probe_params=80_000, flops_per_second=None if up == "mfcc" else 2.5e9,
                        wall_seconds=120.0 + seed, gpu_hours=0.03 if seed == 0 else None, energy_kwh=0.01,
                        co2_kg=0.004, created_at="2025-01-01T00:00:00Z", updated_at="2025-01-01T00:00:00Z",
                        result_path=None,
                        extra={"layer_weights": weights, "layers_used": list(range(n)),
                               "history": [{"epoch": 1, "loss": 1.0}], "upstream_meta": {"name": up}},
                    ))
    runs.append(dict(run_id="failed-1", upstream="ge2e", task="asr", probe="bilstm_ctc", regime="frozen", seed=2,
                     dataset="synth", status="failed", source="sweep",
                     error="CUDA out of memory <tried 3 GiB> | batch 17\nTraceback ...", extra={}))
    runs.append(dict(run_id="running-1", upstream="mfcc", task="asv", probe="xvector", regime="frozen", seed=3,
                     dataset="synth", status="running", source="sweep", extra={}))
    dirs = []
    if tmp_path is not None:
        for name, scale in (("pretrain-a", 1.0), ("pretrain-b", 1.3)):
            d = tmp_path / name
            d.mkdir()
            lines = [json.dumps({"split": "train", "step": s, "loss": scale * 8 / (1 + s / 20), "lr": 1e-3})
                     for s in range(10, 210, 10)]
            lines += [json.dumps({"split": "valid", "step": s, "loss": scale * 9 / (1 + s / 25)}) for s in (100, 200)]
            lines.append('{"split": "train", "step": 21')  # a line cut short by a killed run
            (d / "metrics.jsonl").write_text("\n".join(lines) + "\n")
            dirs.append(d)
        (tmp_path / "pretrain-empty").mkdir()
        dirs.append(tmp_path / "pretrain-empty")
    return rows, runs, dirs


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    rows, runs, dirs = _fake_store(tmp)
    report = build_report(rows, runs, dirs, title="Test <report>", timestamp=False)
    paths = report.write(tmp / "out")
    return report, paths, (rows, runs, dirs)


def _img_srcs(html: str) -> list[str]:
    return re.findall(r'<img\b[^>]*\bsrc="([^"]*)"', html)


def test_plots_are_small_pngs():
    pngs = [
        plots.leaderboard_bars([{"upstream": "a", "probe": "p", "mean": 0.3, "std": 0.01},
                                {"upstream": "b", "probe": "p", "mean": 0.2, "std": None}], metric="cer"),
        plots.rank_scatter([("a", 0.1, 0.2), ("b", 0.3, 0.35), ("c", 0.2, 0.1)], probe_a="p", probe_b="q",
                           pearson=0.5, spearman=0.5),
        plots.layer_weight_heatmap(["a", "b"], [[0.5, 0.5], {0: 0.2, 1: 0.3, 2: 0.5}]),
        plots.language_bars({"a": {"en": 0.2, "de": 0.3}, "b": {"en": 0.1}}),
        plots.loss_curves({"run": [(1, 3.0), (2, float("nan")), (3, 2.0)]}, valid={"run": [(2, 2.5)]}),
        # no data: a placeholder image, not an exception
        plots.leaderboard_bars([]), plots.rank_scatter([], probe_a="p", probe_b="q"),
        plots.layer_weight_heatmap([], []), plots.language_bars({}), plots.loss_curves({}),
    ]
    for png in pngs:
        assert png.startswith(PNG_MAGIC)
        assert 1000 < len(png) < 200_000
    # same data, same bytes
    assert plots.language_bars({"a": {"en": 0.2}}) == plots.language_bars({"a": {"en": 0.2}})


def test_report_files_and_sections(full):
    report, paths, (rows, runs, dirs) = full
    assert set(paths) == {"md", "html", "tex", "figures"}
    for key in ("md", "html", "tex"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0
    titles = [s.title for s in report.sections]
    assert titles == ["Overview", "Leaderboard", "Normalised overall score", "Rank robustness across probes",
                      "Consensus across probe families", "Multilingual", "Layer weights", "Pretraining",
                      "Cost per upstream", "Failed runs"]
    # leaderboard (2 tasks) + 2 rank scatters per... one per task + heatmap + 2 language bars + loss curves
    names = [f.name for f in report.figures]
    assert sum(n.startswith("leaderboard-") for n in names) == 2
    assert sum(n.startswith("ranks-") for n in names) == 2
    assert sum(n.startswith("languages-") for n in names) == 2
    assert "layer-weights" in names and "pretraining-loss" in names
    md = paths["md"].read_text()
    linked = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", md)
    assert len(linked) == len(report.figures)
    for link in linked:
        data = (paths["md"].parent / link).read_bytes()
        assert data.startswith(PNG_MAGIC)
    assert sorted(p.name for p in paths["figures"].iterdir()) == sorted(Path(link).name for link in linked)
    # the numbers: mean ± std over two seeds, the failed run's first error line, missing costs as dashes
    assert "0.2550 ± 0.0071" in md  # ODD, asr, bilstm_ctc, cer: seeds 0.25 and 0.26
    assert "CUDA out of memory" in md and "Traceback" not in md
    assert "1 running" in md
    assert "no metrics.jsonl" in md
    # in tables a "<" is backslash-escaped (no stray HTML); in `code` spans it stays literal
    assert "| hf:w2v\\<2>&_base |" in md and "`hf:w2v<2>&_base`" in md
    assert "| hf:w2v<2>" not in md
    normalised = next(t for t in report.tables if t.label == "tab:normalised")
    assert [r[:2] for r in normalised.rows] == [[ODD, "1000"], ["ge2e", "400"], ["mfcc", "0"]]
    cost = next(t for t in report.tables if t.label == "tab:cost")
    mfcc_cost = next(r for r in cost.rows if r[0] == "mfcc")
    assert mfcc_cost[3] == "–"  # FLOPs/s not reported for mfcc
    ge2e_cost = next(r for r in cost.rows if r[0] == "ge2e")
    assert ge2e_cost[1] == "9" and ge2e_cost[2] == "1.4M"  # 8 finished + 1 failed run
    assert ge2e_cost[5].endswith("(4/9)")  # GPU-hours only on seed 0 runs
    robust = next(t for t in report.tables if t.label == "tab:robustness")
    assert len(robust.rows) == 2 and all(r[2] == "3" for r in robust.rows)
    assert any(t.label == "tab:multilingual-cer" for t in report.tables)
    assert any(t.label == "tab:normalised" for t in report.tables)


def test_html_is_self_contained_and_escaped(full):
    report, paths, _ = full
    html = paths["html"].read_text()
    srcs = _img_srcs(html)
    assert len(srcs) == len(report.figures) > 0
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, flags=re.I)
    assert "http://" not in html and "https://" not in html
    assert "<link" not in html and "@import" not in html
    # one inline script (sorting and filtering, tests/test_report_interactive.py), no src
    assert html.count("<script") == 1 and "<script>" in html and "default-src 'none'" in html
    assert "<style>" in html
    # names are escaped, never raw markup
    assert "w2v<2>" not in html and "hf:w2v&lt;2&gt;&amp;_base" in html
    assert "<title>Test &lt;report&gt;</title>" in html
    assert "&lt;tried 3 GiB&gt;" in html


def test_latex_tables(full):
    report, paths, _ = full
    tex = paths["tex"].read_text()
    assert tex.count(r"\begin{tabular}") == len(report.tables)
    assert tex.count(r"\caption{") == len(report.tables)
    assert r"\toprule" in tex and r"\bottomrule" in tex
    assert r"hf:w2v\textless{}2\textgreater{}\&\_base" in tex
    assert r"$\pm$" in tex
    assert "generated" not in tex


def test_deterministic(full, tmp_path):
    report, paths, (rows, runs, dirs) = full
    again = build_report(list(reversed(rows)), list(reversed(runs)), dirs, title="Test <report>", timestamp=False)
    assert again.to_markdown() == paths["md"].read_text()
    assert again.to_html() == paths["html"].read_text()
    assert again.to_latex() == paths["tex"].read_text()
    stamped = build_report([], [], timestamp=True)
    assert "Generated at" in stamped.to_markdown()
    assert "Generated at" not in report.to_markdown()


def test_imported_results_only(tmp_path):
    """Imported rows: seed None, no layer weights, no costs, a single probe per task."""
    rows = [dict(run_id=f"imp-{up}-{t}", upstream=up, task=t, probe="paper", regime="frozen", seed=None,
                 dataset="superb", language="", split="test", metric=m, value=v, higher_is_better=hib,
                 status="finished", source="import")
            for up, v in (("mfcc", 0.3), ("wav2vec2", 0.1))
            for t, m, hib in (("asr", "wer", False), ("ic", "acc", True))]
    runs = [dict(run_id=f"imp-{up}-{t}", upstream=up, task=t, probe="paper", regime="frozen", seed=None,
                 dataset="superb", status="finished", source="import", extra={})
            for up in ("mfcc", "wav2vec2") for t in ("asr", "ic")]
    report = build_report(rows, runs, timestamp=False)
    paths = report.write(tmp_path, formats=("md", "html"))
    assert set(paths) == {"md", "html", "figures"}
    md = paths["md"].read_text()
    assert "one probe only" in md
    assert "no run recorded learned layer weights" in md
    assert "no run reported per-language scores" in md
    cost = next(t for t in report.tables if t.label == "tab:cost")
    assert all(cell == "–" for row in cost.rows for cell in row[2:])
    normalised = next(t for t in report.tables if t.label == "tab:normalised")
    assert normalised.rows[0][:2] == ["wav2vec2", "1000"]
    html = paths["html"].read_text()
    assert len(_img_srcs(html)) == len(report.figures) == 2  # one leaderboard plot per task


def test_empty_store(tmp_path):
    report = build_report([], [], timestamp=False)
    assert isinstance(report, Report) and not report.figures
    paths = report.write(tmp_path)
    assert "There are no results yet" in paths["md"].read_text()
    assert "There are no results yet" in paths["html"].read_text()
    assert "no tables" in paths["tex"].read_text()
    assert list(paths["figures"].iterdir()) == []


def test_write_report_one_call(tmp_path):
    """The call `speechssl report` makes: rows and runs straight from the store."""
    rows, runs, _ = _fake_store()
    paths = write_report(tmp_path, rows, runs, pretrain_dirs=[], title="from the CLI", timestamp=False)
    assert {"md", "html", "tex", "figures"} <= set(paths)
    assert paths["md"].read_text() == build_report(rows, runs, title="from the CLI", timestamp=False).to_markdown()


def test_stale_figures_removed_and_bad_format(tmp_path):
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "07-old-plot.png").write_bytes(PNG_MAGIC)
    (tmp_path / "figures" / "mine.png").write_bytes(PNG_MAGIC)
    build_report([], [], timestamp=False).write(tmp_path, formats=("md",))
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["mine.png"]
    with pytest.raises(ConfigError, match="unknown report format"):
        write_report(tmp_path, [], [], formats=("pdf",))


def test_rerun_of_the_same_identity_supersedes_the_older_run():
    """Two finished runs with the same identity (a demo run, then a full run of seed 0): the
    statistics would refuse to average them as seeds; the report keeps the newer one."""
    def run(run_id, updated):
        return dict(run_id=run_id, upstream="mfcc", task="lid", probe="xvector", regime="frozen", seed=0,
                    dataset="synth", status="finished", source="bench", updated_at=updated, extra={})

    def row(run_id, value):
        return dict(run_id=run_id, upstream="mfcc", task="lid", probe="xvector", regime="frozen", seed=0,
                    dataset="synth", language="", split="test", metric="accuracy", value=value,
                    higher_is_better=True, status="finished", source="bench")

    runs = [run("old", "2025-01-01T00:00:00Z"), run("new", "2025-02-01T00:00:00Z")]
    report = build_report([row("new", 0.7), row("old", 0.2)], runs, timestamp=False)
    superseded = next(t for t in report.tables if t.label == "tab:superseded")
    assert superseded.rows == [["old", "mfcc", "lid", "xvector", "0", "new"]]
    board = next(t for t in report.tables if t.label == "tab:leaderboard-lid-synth")
    assert board.rows == [["xvector", "1", "mfcc", "1", "0.7000"]]


def test_robustness_absent_with_two_upstreams():
    rows, runs, _ = _fake_store()
    rows = [r for r in rows if r["upstream"] != "ge2e"]
    report = build_report(rows, [r for r in runs if r["upstream"] != "ge2e"], timestamp=False)
    section = next(s for s in report.sections if s.title.startswith("Rank robustness"))
    assert "share 2 upstreams" in section.blocks[0]


def test_consensus_section(full):
    """Both probes of each task order the three upstreams alike (BASE, plus a constant per probe)."""
    report, paths, _ = full
    summary = next(t for t in report.tables if t.label == "tab:consensus")
    assert summary.rows == [["asr on synth (cer)", "2", "3", "1/1", "1.00", "1.00", "0/6", ODD],
                            ["asv on synth (eer)", "2", "3", "1/1", "1.00", "1.00", "0/6", ODD]]
    asr = next(t for t in report.tables if t.label == "tab:consensus-asr-synth")
    assert asr.headers == ["rank", "upstream", "Borda points", "rank (bilstm_ctc)", "rank (linear_ctc)"]
    assert asr.rows == [["1", ODD, "4", "1", "1"], ["2", "ge2e", "2", "2", "2"], ["3", "mfcc", "0", "3", "3"]]
    md = paths["md"].read_text()
    assert "## Consensus across probe families" in md and "| asr on synth (cer) | 2 | 3 | 1/1 |" in md
    html = paths["html"].read_text()
    section = html[html.index('<section id="consensus">'):]
    section = section[:section.index("</section>")]
    assert "<td>hf:w2v&lt;2&gt;&amp;_base</td>" in section and "w2v<2>" not in section
    assert '<a href="#consensus">' in html
    tex = paths["tex"].read_text()
    assert "% ---- Consensus across probe families" in tex and r"\label{tab:consensus-asv-synth}" in tex


def test_consensus_section_only_with_two_probes_over_two_upstreams():
    rows, runs, _ = _fake_store()
    # linear_ctc keeps one upstream and mean_linear is gone: no task has two comparable probes.
    rows = [r for r in rows if r["probe"] != "mean_linear" and (r["probe"] != "linear_ctc" or r["upstream"] == "mfcc")]
    titles = [s.title for s in build_report(rows, runs, timestamp=False).sections]
    assert "Consensus across probe families" not in titles
    # asr as above (one probe left), asv complete: only asv has a consensus.
    rows, runs, _ = _fake_store()
    rows = [r for r in rows if r["probe"] != "linear_ctc" or r["upstream"] == "mfcc"]
    report = build_report(rows, runs, timestamp=False)
    summary = next(t for t in report.tables if t.label == "tab:consensus")
    assert [r[0] for r in summary.rows] == ["asv on synth (eer)"]
    # An upstream that only one probe scored is left out, and the section says so.
    rows, runs, _ = _fake_store()
    rows = [r for r in rows if r["probe"] != "linear_ctc" or r["upstream"] != "mfcc"]
    report = build_report(rows, runs, timestamp=False)
    section = next(s for s in report.sections if s.title == "Consensus across probe families")
    assert any("on asr on synth (cer), upstreams: `mfcc`" in b for b in section.blocks if isinstance(b, str))
    asr = next(t for t in report.tables if t.label == "tab:consensus-asr-synth")
    assert [r[1] for r in asr.rows] == [ODD, "ge2e"]


def test_read_pretrain_metrics(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        '{"split": "train", "step": 1, "loss": 3.0}\n\n{"split": "dev", "step": 1, "loss": 2.0}\nnot json\n'
        '{"split": "train", "step": 2, "loss": NaN}\n'
    )
    metrics = read_pretrain_metrics(tmp_path)
    assert [r["step"] for r in metrics["train"]] == [1, 2]
    assert metrics["valid"] == [{"split": "dev", "step": 1, "loss": 2.0}]
    assert read_pretrain_metrics(tmp_path / "nowhere") == {"train": [], "valid": []}


def test_report_does_not_import_torch():
    code = ("import sys, speechssl.benchmark.report, speechssl.benchmark.browser; "
            "bad = [m for m in ('torch', 'matplotlib.pyplot') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_browser_unavailable(tmp_path):
    assert not browser.available(chromium="/nonexistent/chromium")
    (tmp_path / "r.html").write_text("<html></html>")
    with pytest.raises(browser.BrowserUnavailable, match="not found") as info:
        browser.check_html_in_browser(tmp_path / "r.html", None, chromedriver="/nonexistent/chromedriver")
    assert isinstance(info.value, SpeechSSLError) and isinstance(info.value, RuntimeError)
    assert browser.main([str(tmp_path / "r.html"), "--chromedriver", "/nonexistent/chromedriver"]) == 2


@pytest.mark.skipif(not browser.available(), reason="chromium and chromedriver are not installed")
def test_report_renders_in_chromium(full, tmp_path):
    report, paths, _ = full
    shot = tmp_path / "report.png"
    info = browser.check_html_in_browser(paths["html"], shot, timeout=60)
    assert info["broken"] == []
    assert info["images"] >= len(report.figures) > 0
    assert info["external"] == []
    assert info["title"] == "Test <report>"
    assert info["text_length"] > 1000
    data = shot.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    # keep a copy to look at (pytest keeps the last few basetemps)
    (paths["html"].parent / "screenshot.png").write_bytes(data)


@pytest.mark.skipif(not browser.available(), reason="chromium and chromedriver are not installed")
def test_browser_cli_flags_a_broken_image(tmp_path, capsys):
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><title>b</title></head><body><p>x</p>'
                    '<img src="data:image/png;base64,AAAA"></body></html>')
    assert browser.main([str(page)]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 1 and out["broken"] == ["data:image/png;base64,AAAA"]
