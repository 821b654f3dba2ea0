"""The adaptation-regime table and the report's "Adaptation regimes" section, from a real store.

Runs enter the store as the runner writes them (``ResultStore.add_result`` of result dicts
shaped like ``run_bench``'s), plus one frozen run stored before adaptation was measured. No
torch anywhere.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from speechssl.benchmark import plots
from speechssl.benchmark.regimes import format_regime_table, regime_rows, regime_sort_key, regime_table
from speechssl.benchmark.report import build_report
from speechssl.benchmark.store import ResultStore

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ODD = "hf:w2v<2>&_base"  # needs escaping in HTML (<, &) and LaTeX (_, &)
PROBE_PARAMS = 49_200
UPSTREAM_PARAMS = 2_100_000


def _result(upstream, regime, cer, *, task="asr", seed=0, adaptation=True, memory_kind="cuda_allocated",
            metric="cer", higher=False):
    """A bench result dict as run_bench writes it (the fields the store reads)."""
    result = {
        "format": "speechssl.bench/1", "config_hash": f"{upstream}-{task}-{regime}-{seed}",
        "upstream": upstream, "task": task, "probe": "linear_ctc", "regime": regime, "seed": seed,
        "metrics": {metric: cer}, "primary_metric": metric, "higher_is_better": higher,
        "upstream_meta": {"params": UPSTREAM_PARAMS}, "probe_params": PROBE_PARAMS,
        "config": {"data": "data/synth"},
    }
    if adaptation:
        upstream_tunable = {"frozen": 0, "full": UPSTREAM_PARAMS, "lora": 12_000}.get(regime, 300_000)
        result["adaptation"] = {
            "regime": regime.split("-")[0], "label": regime, "upstream_tunable_params": upstream_tunable,
            "upstream_params": UPSTREAM_PARAMS + (12_000 if regime == "lora" else 0),
            "tunable_params": upstream_tunable + PROBE_PARAMS, "step_seconds": 0.0125,
            "peak_memory_mb": 812.4, "peak_memory_kind": memory_kind,
        }
    return result


@pytest.fixture
def store(tmp_path):
    with ResultStore(tmp_path / "results.db") as s:
        yield s


def _fill(store, *, adapted=True):
    # hubert's frozen run predates adaptation records; the adapted runs are added out of order.
    store.add_result(_result("hubert", "frozen", 0.30, adaptation=False))
    store.add_result(_result(ODD, "frozen", 0.40, memory_kind="process_rss"))
    store.add_result(_result("hubert", "frozen", 0.9, task="lid", metric="accuracy", higher=True))
    if adapted:
        for regime, cer in (("lora", 0.25), ("bitfit", 0.28), ("adapter", 0.26), ("partial-top2", 0.22),
                            ("full", 0.20), ("partial-bottom2", 0.27), ("partial-middle2", 0.24)):
            store.add_result(_result("hubert", regime, cer))
        store.add_result(_result(ODD, "lora", 0.35, memory_kind="process_rss"))


def test_regime_rows_order_and_costs(store):
    _fill(store)
    rows = regime_rows(store.runs(), store.scores())
    asr = [r for r in rows if r["task"] == "asr"]
    hubert = [r["regime"] for r in asr if r["upstream"] == "hubert"]
    assert hubert == ["frozen", "full", "partial-bottom2", "partial-middle2", "partial-top2", "adapter", "lora",
                      "bitfit"]  # an unknown label after the known ones
    assert [r["upstream"] for r in asr] == [ODD] * 2 + ["hubert"] * 8  # grouped by task, then upstream
    frozen = asr[2]
    assert (frozen["metric"], frozen["value"], frozen["higher_is_better"]) == ("cer", 0.30, False)
    # no adaptation record: the probe was all that trained; time and memory unknown
    assert frozen["tunable_params"] == PROBE_PARAMS and frozen["total_params"] == UPSTREAM_PARAMS + PROBE_PARAMS
    assert frozen["step_seconds"] is None and frozen["peak_memory_mb"] is None
    lora = next(r for r in asr if r["upstream"] == "hubert" and r["regime"] == "lora")
    assert lora["tunable_params"] == 12_000 + PROBE_PARAMS
    assert lora["total_params"] == UPSTREAM_PARAMS + 12_000 + PROBE_PARAMS  # LoRA weights count
    assert (lora["step_seconds"], lora["peak_memory_mb"]) == (0.0125, 812.4)
    assert sorted(["lora", "partial-top10", "partial-top2", "frozen"], key=regime_sort_key) == [
        "frozen", "partial-top2", "partial-top10", "lora"]


def test_table_delta_and_missing_costs(store):
    _fill(store)
    rows = [r for r in regime_rows(store.runs(), store.scores()) if r["task"] == "asr"]
    headers, cells, align = regime_table(rows)
    assert headers == ["task", "upstream", "regime", "cer ↓", "Δ vs frozen", "tunable params", "step s", "peak MB"]
    assert len(align) == len(headers)
    by_key = {(c[1], c[2]): c for c in cells}
    assert by_key[("hubert", "frozen")] == ["asr", "hubert", "frozen", "0.3000", "ref", "49.2k", "–", "–"]
    assert by_key[("hubert", "full")][3:] == ["0.2000", "-0.1000", "2.15M", "0.0125", "812.4 (GPU)"]
    assert by_key[(ODD, "lora")][3:5] == ["0.3500", "-0.0500"]
    assert by_key[(ODD, "lora")][-1] == "812.4 (RSS)"  # GPU and CPU peaks are told apart
    md = format_regime_table(rows)
    lines = md.splitlines()
    assert lines[0] == "| task | upstream | regime | cer ↓ | Δ vs frozen | tunable params | step s | peak MB |"
    assert [line.split(" | ")[2] for line in lines[2:] if "| hubert |" in line] == [
        "frozen", "full", "partial-bottom2", "partial-middle2", "partial-top2", "adapter", "lora", "bitfit"]


def test_delta_without_frozen_run_and_over_seeds():
    def row(regime, seed, value, upstream="u"):
        return dict(run_id=f"{upstream}{regime}{seed}", upstream=upstream, task="er", probe="mean_linear",
                    regime=regime, seed=seed, dataset="synth", language="", split="test", metric="accuracy",
                    value=value, higher_is_better=True, status="finished")

    scores = [row("frozen", 0, 0.50), row("frozen", 1, 0.60), row("full", 0, 0.70), row("full", 1, 0.80),
              row("lora", 0, 0.9, upstream="v")]
    rows = regime_rows([], scores)  # score rows alone: runs without cost records
    headers, cells, _ = regime_table(rows)
    assert headers[:5] == ["task", "upstream", "regime", "seed", "accuracy ↑"]
    delta = {(c[1], c[2], c[3]): c[5] for c in cells}
    assert delta[("u", "full", "0")] == "+0.1500" and delta[("u", "full", "1")] == "+0.2500"  # vs mean 0.55
    assert delta[("v", "lora", "0")] == "–"  # no frozen run of v
    assert all(c[-3:] == ["–", "–", "–"] for c in cells)


def test_report_section_and_figure_only_with_adapted_runs(store, tmp_path):
    _fill(store, adapted=False)
    frozen = build_report(store.scores(), store.runs(), timestamp=False)
    assert "Adaptation regimes" not in [s.title for s in frozen.sections]
    paths = frozen.write(tmp_path / "frozen")
    assert not [p for p in paths["figures"].iterdir() if "regimes" in p.name]

    _fill(store)
    report = build_report(store.scores(), store.runs(), timestamp=False)
    titles = [s.title for s in report.sections]
    assert titles.index("Adaptation regimes") == titles.index("Multilingual") - 1
    section = next(s for s in report.sections if s.title == "Adaptation regimes")
    assert any("`lid`" in b for b in section.blocks if isinstance(b, str))  # frozen-only task left out
    table = next(t for t in report.tables if t.label == "tab:regimes-asr")
    assert table.headers[3] == "cer ↓" and len(table.rows) == 10
    (figure,) = [f for f in report.figures if f.name.startswith("regimes-")]
    assert figure.name == "regimes-asr-cer" and figure.png.startswith(PNG_MAGIC)

    paths = report.write(tmp_path / "adapted")
    files = [p.name for p in paths["figures"].iterdir() if "regimes" in p.name]
    assert len(files) == 1 and f"figures/{files[0]}" in paths["md"].read_text()
    md = paths["md"].read_text()
    assert "## Adaptation regimes" in md and "| asr | hubert | full | 0.2000 | -0.1000 |" in md
    html = paths["html"].read_text()
    part = html[html.index('<section id="regimes">'):]
    part = part[:part.index("</section>")]
    assert "<td>hf:w2v&lt;2&gt;&amp;_base</td>" in part and "w2v<2>" not in part
    assert re.search(r'<figure id="fig-regimes-asr-cer"><img src="data:image/png;base64,', part)
    assert "http://" not in html and "https://" not in html
    tex = paths["tex"].read_text()
    assert r"\label{tab:regimes-asr}" in tex and r"$\Delta$ vs frozen" in tex and "Δ" not in tex
    assert r"hf:w2v\textless{}2\textgreater{}\&\_base" in tex


def test_regime_bars_png():
    entries = [{"upstream": "a", "regime": "frozen", "mean": 0.3, "std": 0.01},
               {"upstream": "a", "regime": "lora", "mean": 0.25, "std": None},
               {"upstream": "b", "regime": "frozen", "mean": 0.4}]
    png = plots.regime_bars(entries, metric="cer", higher_is_better=False, title="asr")
    assert png.startswith(PNG_MAGIC) and png == plots.regime_bars(entries, metric="cer", higher_is_better=False,
                                                                  title="asr")
    assert plots.regime_bars([]).startswith(PNG_MAGIC)  # a placeholder, not an exception


def test_regimes_module_does_not_import_torch():
    code = "import sys, speechssl.benchmark.regimes; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
