"""The benchmark report: Markdown, self-contained HTML and LaTeX tables from one build.

:func:`build_report` turns score rows and run dicts (the package contracts, see
:mod:`speechssl.benchmark`) plus optional pretraining run directories into a
:class:`Report`: an ordered list of sections, each a list of paragraphs, tables and
figures. :meth:`Report.write` renders it (:func:`write_report` builds and writes in one
call, as ``speechssl report`` does):

- ``report.md`` with its figures as PNG files in ``figures/`` next to it;
- ``report.html``, one self-contained file: inline CSS, figures embedded as
  ``data:image/png;base64`` URIs, no external URL of any kind, and one inline script (the
  same for every report; it reads the page and holds no data) that makes tables sortable
  by any column and filterable by task, probe, regime, language and free text;
- ``tables.tex``, every table as a booktabs ``table`` float with caption and label
  (``\\input`` it; needs ``\\usepackage{booktabs}``).

Sections: overview, leaderboard per task, normalised overall score, rank robustness between
probe families, consensus across probe families, adaptation regimes, multilingual aggregates,
layer weights, pretraining curves, cost per upstream, failed runs. A section without data says
why instead of disappearing, except three that only exist when they apply: pretraining (when
run directories are given), consensus (when some task has two probes over two common
upstreams; the robustness section already says why probes cannot be compared) and adaptation
regimes (when some run adapted its upstream, i.e. has a regime other than frozen). Only the
test split of finished runs is reported. The same inputs give byte-identical files; the one
exception is the "generated at" line, which ``timestamp=False`` leaves out.

Nothing here imports torch: a store of imported results can be reported anywhere.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import html
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from speechssl.benchmark import plots, regimes, stats
from speechssl.benchmark.tables import latex_escape, latex_table, markdown_table
from speechssl.errors import ConfigError
from speechssl.fsutil import write_bytes_atomic, write_error, write_text_atomic

__all__ = ["Figure", "Report", "Section", "Table", "build_report", "read_pretrain_metrics", "write_report"]

DASH = "–"  # shown for a missing value
FIGURE_DIR = "figures"
FORMATS = ("md", "html", "tex")
_FIGURE_FILE = re.compile(r"^\d{2,}-[a-z0-9-]+\.png$")


# ---------------------------------------------------------------------------- data model


@dataclass
class Table:
    """Already formatted cells; ``align`` gives l/c/r per column."""

    headers: list[str]
    rows: list[list[str]]
    caption: str
    label: str
    align: list[str] | None = None


@dataclass
class Figure:
    name: str  # slug, unique within the report; the file is figures/NN-<name>.png
    caption: str
    png: bytes


Block = Union[str, Table, Figure]  # a str is a paragraph (`backticks` mark code)


@dataclass
class Section:
    title: str
    anchor: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> "Section":
        self.blocks.extend(blocks)
        return self


@dataclass
class Report:
    title: str
    sections: list[Section]
    generated_at: str | None = None

    @property
    def tables(self) -> list[Table]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Table)]

    @property
    def figures(self) -> list[Figure]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Figure)]

    def figure_files(self) -> dict[str, str]:
        """Figure name -> file name under ``figures/`` (numbered in report order)."""
        return {f.name: f"{i:02d}-{f.name}.png" for i, f in enumerate(self.figures, 1)}

    def to_markdown(self) -> str:
        return _render_markdown(self)

    def to_html(self) -> str:
        return _render_html(self)

    def to_latex(self) -> str:
        return _render_latex(self)

    def write(self, out_dir: str | Path, formats: Sequence[str] = FORMATS) -> dict[str, Path]:
        """Write the report into ``out_dir``; returns ``{"md"|"figures"|"html"|"tex": path}``.

        ``md`` writes ``report.md`` and its figures to ``figures/NN-<name>.png`` (numbered
        figures of an earlier report there that this one lacks are removed); ``html``
        ``report.html``; ``tex`` ``tables.tex``. Every file is replaced atomically.
        """
        return _write(self, out_dir, formats)


# ---------------------------------------------------------------------------- formatting


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _decimals(x: float, digits: int = 4) -> int:
    if x == 0:
        return digits - 1
    magnitude = math.floor(math.log10(abs(x)))
    return min(6, max(0, digits - 1 - magnitude))


def fmt_num(x: Any, digits: int = 4) -> str:
    """``digits`` significant digits in fixed notation; "–" for None/NaN."""
    if not _is_num(x):
        return DASH
    if isinstance(x, int):
        return str(x)
    return f"{x:.{_decimals(x, digits)}f}"


def fmt_mean_std(mean: Any, std: Any, n: Any = None) -> str:
    if not _is_num(mean):
        return DASH
    d = _decimals(mean)
    if _is_num(std) and (n is None or n > 1):
        return f"{mean:.{d}f} ± {std:.{d}f}"
    return f"{mean:.{d}f}"


def fmt_si(x: Any) -> str:
    """94400000 -> "94.4M"."""
    if not _is_num(x):
        return DASH
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.3g}{suffix}"
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def fmt_seconds(x: Any) -> str:
    if not _is_num(x):
        return DASH
    if x >= 3600:
        return f"{x / 3600:.3g} h"
    if x >= 60:
        return f"{x / 60:.3g} min"
    return f"{x:.3g} s"


def fmt_amount(x: Any) -> str:
    """Three significant digits for sums of costs (0.08, 0.123, 12.3, 1,234)."""
    if not _is_num(x):
        return DASH
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def _whole(x: float) -> str:
    text = f"{x:.0f}"
    return "0" if text == "-0" else text


def _seed(x: Any) -> str:
    return DASH if x is None else str(x)


def _slug(*parts: Any) -> str:
    text = "-".join(str(p) for p in parts if p not in (None, ""))
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _arrow(higher_is_better: Any) -> str:
    return {True: " ↑", False: " ↓"}.get(higher_is_better, "")


def _probe_label(probe: str, regime: Any) -> str:
    return probe if regime in (None, "", "frozen") else f"{probe} ({regime})"


def _names(values: Iterable[Any]) -> str:
    return ", ".join(f"`{v}`" for v in sorted({str(v) for v in values}))


# ---------------------------------------------------------------------------- building


def build_report(
    rows: Sequence[dict[str, Any]],
    runs: Sequence[dict[str, Any]] = (),
    pretrain_dirs: Sequence[str | Path] = (),
    *,
    title: str = "speechssl report",
    baseline: str = "mfcc",
    timestamp: bool = True,
) -> Report:
    """A :class:`Report` from score rows, run dicts and pretraining run directories.

    ``rows`` as from ``ResultStore.scores()`` (only test-split rows of finished runs are
    used), ``runs`` as from ``ResultStore.runs()`` (any status: failed runs are listed,
    costs are summed over every run). ``baseline`` is the upstream the normalised score is
    relative to. ``timestamp=False`` leaves out the "generated at" line, making the output
    a pure function of the inputs.
    """
    rows = [dict(r) for r in rows
            if stats.split_subset(r.get("split") or "test")[0] == "test"  # test and test@<dataset>
            and (r.get("status") or "finished") == "finished"
            and _is_num(r.get("value"))]
    runs = [dict(r) for r in runs]
    rows, superseded = stats.drop_superseded(rows, runs)
    generated = (_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if timestamp else None)
    report = Report(title=title, sections=[], generated_at=generated)
    report.sections.append(_overview(rows, runs, pretrain_dirs, superseded))
    if not rows and not runs and not pretrain_dirs:
        return report
    overall = [r for r in rows if not r.get("language")]
    current = [r for r in runs if r.get("run_id") not in superseded]
    primary = _primary_metrics(overall, runs)
    leaderboard, entries = _leaderboard_section(overall, primary)
    report.sections.append(leaderboard)
    report.sections.append(_normalised_section(overall, baseline, primary))
    report.sections.append(_robustness_section(overall, primary))
    consensus = _consensus_section(overall, primary)
    if consensus is not None:
        report.sections.append(consensus)
    if regimes.has_adapted([*runs, *rows]):
        report.sections.append(_regimes_section(current, overall, primary, entries))
    report.sections.append(_multilingual_section(rows))
    report.sections.append(_layer_section(current))
    if pretrain_dirs:
        report.sections.append(_pretrain_section(pretrain_dirs))
    report.sections.append(_cost_section(runs))
    report.sections.append(_failed_section(runs))
    return report


def _overview(rows: list[dict], runs: list[dict], pretrain_dirs: Sequence, superseded: dict[str, str]) -> Section:
    section = Section("Overview", "overview")
    if not rows and not runs and not pretrain_dirs:
        return section.add(
            "There are no results yet: the store holds no scores and no runs. Run `speechssl bench` "
            "(or a sweep), or import published results, then build the report again."
        )
    statuses = Counter(r.get("status") or "unknown" for r in runs)
    run_ids = {r.get("run_id") for r in rows}
    text = f"{len(rows)} test-split scores from {len(run_ids)} finished runs."
    if runs:
        text += " Runs in the store: " + ", ".join(f"{statuses[s]} {s}" for s in sorted(statuses)) + "."
        sources = Counter(r.get("source") or "unknown" for r in runs)
        text += " Sources: " + ", ".join(f"{s} ({sources[s]})" for s in sorted(sources)) + "."
    section.add(text)
    if rows:
        section.add(
            f"Upstreams: {_names(r['upstream'] for r in rows)}. Tasks: {_names(r['task'] for r in rows)}. "
            f"Probes: {_names(r['probe'] for r in rows)}."
        )
    else:
        section.add("No finished run has a test score yet, so there is no leaderboard.")
    if superseded:
        identity = {r["run_id"]: r for r in runs}
        section.add(
            f"{len(superseded)} finished run{'s' if len(superseded) != 1 else ''} left out: another run with the "
            "same upstream, task, probe, regime, dataset and seed was written later (a rerun with other "
            "settings), and only the newest counts. Delete the runs you do not want, or use separate stores."
        )
        table_rows = []
        for dropped, kept in sorted(superseded.items(), key=lambda kv: (_sort_identity(identity.get(kv[0])), kv[0])):
            run = identity.get(dropped) or {}
            table_rows.append([str(dropped), run.get("upstream", DASH), run.get("task", DASH),
                               _probe_label(run.get("probe", DASH), run.get("regime")), _seed(run.get("seed")),
                               str(kept)])
        section.add(Table(["run left out", "upstream", "task", "probe", "seed", "newer run kept"], table_rows,
                          caption="Runs superseded by a newer run of the same identity.", label="tab:superseded",
                          align=["l", "l", "l", "l", "r", "l"]))
    return section


def _sort_identity(run: dict | None) -> tuple:
    if run is None:
        return ("",)
    return tuple("" if v is None else str(v) for v in stats.run_identity(run))


def _primary_metrics(rows: list[dict], runs: list[dict]) -> dict[str, str]:
    """Task -> the metric it is ranked by: the runs' most common declared primary metric,
    else the first of :data:`stats.PRIMARY_METRIC_ORDER` present, else the first by name."""
    present: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        present[r["task"]].add(r["metric"])
    declared: dict[str, Counter] = defaultdict(Counter)
    for run in runs:
        if run.get("primary_metric"):
            declared[run["task"]][run["primary_metric"]] += 1
    out = {}
    for task, names in present.items():
        candidates = [(n, m) for m, n in declared[task].items() if m in names]
        if candidates:
            out[task] = min(candidates, key=lambda c: (-c[0], c[1]))[1]
        else:
            out[task] = next((m for m in stats.PRIMARY_METRIC_ORDER if m in names), min(names))
    return out


def _stats_failed(section: Section, exc: ConfigError) -> Section:
    return section.add(f"Could not be computed: {exc}")


def _leaderboard_section(rows: list[dict], primary: dict[str, str]) -> tuple[Section, list[dict]]:
    section = Section("Leaderboard", "leaderboard")
    if not rows:
        return section.add("No finished run has an overall test score."), []
    try:
        entries = stats.leaderboard(rows)
    except ConfigError as exc:
        return _stats_failed(section, exc), []
    section.add(
        "Mean ± sample standard deviation over seeds (n = number of seeds; one seed shows no spread). "
        "↑: higher is better, ↓: lower is better. Upstreams are ranked within each probe by the task's "
        "primary metric, the first metric column (ties share a rank)."
    )
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for e in entries:
        groups[(e["task"], e["dataset"])].append(e)
    for (task, dataset), group in sorted(groups.items()):
        main = primary[task]
        metrics = [main] + sorted({e["metric"] for e in group} - {main})
        direction = {e["metric"]: e["higher_is_better"] for e in group}
        by_system: dict[tuple, dict[str, dict]] = defaultdict(dict)
        for e in group:
            by_system[(e["probe"], e["regime"], e["upstream"])][e["metric"]] = e
        show_regime = any(k[1] != "frozen" for k in by_system)

        def order(item: tuple) -> tuple:
            (probe, regime, upstream), per_metric = item
            rank = per_metric[main]["rank"] if main in per_metric else math.inf
            return (probe, regime, rank, upstream)

        headers = ["probe"] + (["regime"] if show_regime else []) + ["rank", "upstream", "n"]
        headers += [f"{m}{_arrow(direction[m])}" for m in metrics]
        table_rows = []
        for (probe, regime, upstream), per_metric in sorted(by_system.items(), key=order):
            e = per_metric.get(main)
            n = e["n_seeds"] if e else max(x["n_seeds"] for x in per_metric.values())
            cells = [probe] + ([regime] if show_regime else [])
            cells += [str(e["rank"]) if e else DASH, upstream, str(n)]
            for m in metrics:
                x = per_metric.get(m)
                cells.append(fmt_mean_std(x["mean"], x["std"], x["n_seeds"]) if x else DASH)
            table_rows.append(cells)
        where = task + (f" on {dataset}" if dataset else "")
        align = ["l"] + (["l"] if show_regime else []) + ["r", "l", "r"] + ["r"] * len(metrics)
        section.add(Table(headers, table_rows, caption=f"Leaderboard: {where} (ranked by {main}).",
                          label=f"tab:leaderboard-{_slug(task, dataset)}", align=align))
        bars = [{"upstream": e["upstream"], "probe": _probe_label(e["probe"], e["regime"]),
                 "mean": e["mean"], "std": e["std"]} for e in group if e["metric"] == main]
        section.add(Figure(
            name=_slug("leaderboard", task, dataset, main),
            caption=f"{where}: {main} per probe and upstream (mean ± std over seeds).",
            png=plots.leaderboard_bars(bars, title=f"{where}: {main}", metric=main,
                                       higher_is_better=direction[main]),
        ))
    return section, entries


def _normalised_section(rows: list[dict], baseline: str, primary: dict[str, str]) -> Section:
    section = Section("Normalised overall score", "normalised")
    if not rows:
        return section.add("No scores to normalise.")
    if baseline not in {r["upstream"] for r in rows}:
        return section.add(
            f"Absent: the normalised score is relative to the `{baseline}` baseline, which has no scores here."
        )
    skipped: list[dict] = []
    try:
        results = stats.normalised_score(rows, baseline=baseline, metrics=primary, skipped=skipped)
    except ConfigError as exc:
        return _stats_failed(section, exc)
    units = sorted({u for r in results for u in (*r["tasks"], *r["missing"])})
    if not units:
        reasons = "; ".join(f"`{s['unit']}`: {s['reason']}" for s in skipped)
        return section.add(f"Absent: no task can be normalised ({reasons or 'no frozen-upstream scores'}).")
    section.add(
        f"SUPERB-style: on each task the primary score (ranking metric above) is mapped linearly so that "
        f"`{baseline}` scores 0 and the best upstream here scores 1000, using each upstream's best probe "
        "(in brackets); the overall score is the mean over the tasks the upstream has. Frozen upstreams only."
        + ("" if not skipped else " Left out: " + "; ".join(f"`{s['unit']}` ({s['reason']})" for s in skipped)
           + ".")
    )
    unit_task = {r["task"] + (f"/{r['dataset']}" if r.get("dataset") else ""): r["task"] for r in rows}
    headers = ["upstream", "score", "tasks"] + [
        f"{u} ({primary[unit_task[u]]})" if u in unit_task else u for u in units]
    table_rows = []
    for r in results:
        cells = [r["upstream"], DASH if r["score"] is None else _whole(r["score"]), str(r["n_tasks"])]
        for u in units:
            value = r["tasks"].get(u)
            cells.append(DASH if value is None else f"{_whole(value)} ({r['probes'][u]})")
        table_rows.append(cells)
    return section.add(Table(headers, table_rows, caption=f"Normalised score (0 = {baseline}, 1000 = best upstream).",
                             label="tab:normalised", align=["l", "r", "r"] + ["r"] * len(units)))


def _robustness_section(rows: list[dict], primary: dict[str, str]) -> Section:
    section = Section("Rank robustness across probes", "robustness")
    if not rows:
        return section.add("No scores to compare.")
    primary_rows = [r for r in rows if r["metric"] == primary[r["task"]]]
    skipped: list[dict] = []
    try:
        results = stats.robustness(primary_rows, skipped=skipped)
    except ConfigError as exc:
        return _stats_failed(section, exc)
    if not results:
        return section.add(_why_no_robustness(primary_rows, skipped))
    section.add(
        "Do two probe families rank the upstreams alike? Correlations between the per-upstream seed means under "
        "probe A and probe B, over the upstreams scored with both (n), on each task's primary metric; 95 % "
        "percentile-bootstrap intervals in brackets. Diff %: B's relative improvement over A (positive: B better)."
    )
    # ASCII names: a rho or tau would need a Unicode-aware LaTeX engine.
    headers = ["task", "probes (A → B)", "n", "Pearson [CI]", "Spearman [CI]", "Kendall",
               "mean A", "mean B", "diff %"]
    table_rows, figures = [], []
    for r in results:
        where = r["task"] + (f" on {r['dataset']}" if r["dataset"] else "") + f" ({r['metric']}"
        where += (f", {r['regime']})" if r["regime"] != "frozen" else ")")
        table_rows.append([
            where, f"{r['probe_a']} → {r['probe_b']}", str(r["n"]),
            _corr(r["pearson"], r["pearson_ci"]), _corr(r["spearman"], r["spearman_ci"]), _corr(r["kendall"], None),
            fmt_num(r["mean_a"]), fmt_num(r["mean_b"]),
            DASH if r["diff_pct"] is None else f"{r['diff_pct']:+.1f}",
        ])
        figures.append(Figure(
            name=_slug("ranks", r["task"], r["dataset"], r["metric"], r["regime"], r["probe_a"], r["probe_b"]),
            caption=f"{where}: each upstream's score under {r['probe_a']} (x) and {r['probe_b']} (y); "
                    "dashed: equal scores.",
            png=plots.rank_scatter(list(zip(r["upstreams"], r["values_a"], r["values_b"])), probe_a=r["probe_a"],
                                   probe_b=r["probe_b"], title=where, pearson=r["pearson"],
                                   spearman=r["spearman"], metric=r["metric"]),
        ))
    section.add(Table(headers, table_rows, caption="Rank agreement between probe families.",
                      label="tab:robustness", align=["l", "l"] + ["r"] * 7))
    return section.add(*figures)


def _consensus_section(rows: list[dict], primary: dict[str, str]) -> Section | None:
    """Borda consensus over probe families per task; None when no task has 2 probes over 2 upstreams."""
    section = Section("Consensus across probe families", "consensus")
    primary_rows = [r for r in rows if r["metric"] == primary[r["task"]]]
    try:
        results = stats.consensus(primary_rows, method="borda")
    except ConfigError as exc:
        return _stats_failed(section, exc)
    if not results:
        return None
    section.add(
        "One ranking of the upstreams per task over all its probe families, on the task's primary metric: each "
        "probe ranks the upstreams it scored (1 = best, ties share their mean rank) and an upstream earns "
        "n - rank Borda points from each probe (n: upstreams that probe ranked). Only upstreams scored by at "
        "least two probes, and probes that scored at least two of them, take part. Agreement: the probe pairs "
        "whose orderings of their common upstreams are identical, out of the pairs compared; Kendall tau and "
        "Spearman rho are means over the probe pairs (1: every probe orders the upstreams alike, 0: unrelated, "
        "-1: reversed). Missing: (upstream, probe) cells without a score, which score no point."
    )
    summary_rows = []
    for r in results:
        where = _consensus_where(r)
        summary_rows.append([
            where, str(r["n_probes"]), str(r["n_upstreams"]), f"{r['n_pairs_agree']}/{r['n_pairs_compared']}",
            _corr(r["mean_kendall"], None), _corr(r["mean_spearman"], None),
            f"{r['n_missing']}/{r['n_probes'] * r['n_upstreams']}",
            ", ".join(m["upstream"] for m in r["ranking"] if m["rank"] == 1),
        ])
    section.add(Table(["task", "probes", "upstreams", "pairs agreeing", "mean Kendall", "mean Spearman",
                       "missing cells", "consensus best"], summary_rows,
                      caption="Agreement between probe families and the consensus winner per task.",
                      label="tab:consensus", align=["l", "r", "r", "r", "r", "r", "r", "l"]))
    left_out = []
    for r in results:
        parts = [f"{kind}: {_names(names)}"
                 for kind, names in (("probes", r["dropped_probes"]), ("upstreams", r["dropped_upstreams"])) if names]
        if parts:
            left_out.append(f"on {_consensus_where(r)}, " + " and ".join(parts))
    if left_out:
        section.add("Left out of the consensus (too few scores to be ranked against the others): "
                    + "; ".join(left_out) + ".")
    for r in results:
        where = _consensus_where(r)
        # Borda points are whole or halves (tied ranks), so no fixed decimals.
        table_rows = [[str(m["rank"]), m["upstream"], f"{m['aggregate']:g}",
                       *(DASH if m["ranks"][p] is None else f"{m['ranks'][p]:g}" for p in r["probes"])]
                      for m in r["ranking"]]
        section.add(Table(["rank", "upstream", "Borda points", *(f"rank ({p})" for p in r["probes"])], table_rows,
                          caption=f"Consensus ranking: {where}, Borda count over {r['n_probes']} probes.",
                          label=f"tab:consensus-{_slug(r['task'], r['dataset'], _non_default(r['regime']))}",
                          align=["r", "l", "r"] + ["r"] * len(r["probes"])))
    return section


def _non_default(regime: str) -> str | None:
    """The regime for a label, None for the usual frozen upstream."""
    return None if regime == "frozen" else regime


def _consensus_where(result: dict) -> str:
    where = result["task"] + (f" on {result['dataset']}" if result["dataset"] else "") + f" ({result['metric']}"
    return where + (f", {result['regime']})" if result["regime"] != "frozen" else ")")


def _corr(value: Any, ci: Any) -> str:
    if not _is_num(value):
        return DASH
    text = f"{value:.2f}"
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_is_num(c) for c in ci):
        text += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
    return text


def _why_no_robustness(rows: list[dict], skipped: list[dict]) -> str:
    reasons = []
    probes: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        probes[r["task"]].add(r["probe"])
    for task in sorted(probes):
        if len(probes[task]) < 2:
            reasons.append(f"`{task}` was scored with one probe only (`{min(probes[task])}`)")
    for s in skipped:
        reasons.append(f"on `{s['task']}` probes `{s['probe_a']}` and `{s['probe_b']}` share "
                       f"{s['n']} upstream{'s' if s['n'] != 1 else ''}")
    return ("Absent: rank robustness needs two probes that score at least three common upstreams on a task; "
            + "; ".join(reasons) + ".")


def _regimes_section(runs: list[dict], rows: list[dict], primary: dict[str, str],
                     entries: list[dict]) -> Section:
    """Frozen vs adapted upstreams per task: a table of every run and a bar plot of seed means.

    ``entries`` are the leaderboard's seed means, so the plot shows the leaderboard's numbers.
    """
    section = Section("Adaptation regimes", "regimes")
    table_rows = regimes.regime_rows(runs, rows, metrics=primary)
    adapted = sorted({r["task"] for r in table_rows if r["regime"] != "frozen"})
    if not adapted:
        return section.add("Absent: no run that adapts its upstream (a regime other than frozen) has finished.")
    section.add(
        "What adapting the upstream buys over freezing it, and what it costs: one row per run on the task's primary "
        "test metric. Regimes: frozen (only the probe trains), full (every upstream weight), partial-bottom/"
        "middle/topK (K Transformer layers), adapter (bottleneck adapters), lora (low-rank updates). "
        "Δ vs frozen: the score minus the mean frozen score of the same upstream, task and probe (ref: a frozen "
        "run itself). Tunable params: what the run trained, probe included. Step s: mean seconds per update. "
        "Peak MB: peak memory while training (CUDA allocated on a GPU, process RSS on a CPU). "
        f"{DASH}: not recorded (frozen runs stored before regimes were measured, imported results)."
    )
    frozen_only = sorted({r["task"] for r in table_rows} - set(adapted))
    if frozen_only:
        section.add(f"Tasks with frozen runs only are left out (see the leaderboard): {_names(frozen_only)}.")
    for task in adapted:
        group = [r for r in table_rows if r["task"] == task]
        headers, cells, align = regimes.regime_table(group)
        metric = primary.get(task) or group[0]["metric"]
        section.add(Table(headers, cells, caption=f"Adaptation regimes: {task} ({metric}).",
                          label=f"tab:regimes-{_slug(task)}", align=align))
        bars = _regime_bar_entries([e for e in entries if e["task"] == task and e["metric"] == metric])
        higher = next((r["higher_is_better"] for r in group if r["metric"] == metric), None)
        section.add(Figure(
            name=_slug("regimes", task, metric),
            caption=f"{task}: {metric} per adaptation regime and upstream, frozen vs adapted "
                    "(mean ± std over seeds).",
            png=plots.regime_bars(bars, title=f"{task}: {metric}, frozen vs adapted", metric=metric,
                                  higher_is_better=higher),
        ))
    return section


def _regime_bar_entries(entries: list[dict]) -> list[dict]:
    """Leaderboard entries of one task as regime_bars input, regimes in table order.

    A bar is one upstream; where the task has several probes or datasets, one upstream with
    each of them (their scores are not the same measurement).
    """
    probes = len({e["probe"] for e in entries}) > 1
    datasets = len({e["dataset"] for e in entries}) > 1
    out = []
    for e in sorted(entries, key=lambda e: regimes.regime_sort_key(e["regime"])):
        series = [e["upstream"]] + ([e["probe"]] if probes else []) + ([e["dataset"]] if datasets else [])
        out.append({"upstream": " · ".join(series), "regime": e["regime"], "mean": e["mean"], "std": e["std"]})
    return out


def _multilingual_section(rows: list[dict]) -> Section:
    section = Section("Multilingual", "multilingual")
    metrics = sorted({r["metric"] for r in rows if r.get("language") and "@" not in (r.get("split") or "")})
    if not metrics:
        return section.add("Absent: no run reported per-language scores.")
    section.add("Per-language scores aggregated per system (ML-SUPERB style): the macro average over languages, "
                "their sample standard deviation across languages, the mean of the worst languages and, where "
                "a run was scored per dataset, the widest range of a language's score across datasets.")
    _mlsuperb_table(section, rows)
    for metric in metrics:
        try:
            results = stats.multilingual(rows, metric=metric)
        except ConfigError as exc:
            section.add(f"Per-language {metric} could not be aggregated: {exc}")
            continue
        results = [r for r in results if r["split"] == "test"]
        if not results:
            continue
        show_regime = any(r["regime"] != "frozen" for r in results)
        show_train = any(r["train_data"] for r in results)
        show_range = any(r["max_dataset_range"] is not None for r in results)
        worst_n = max(r["worst_n"] for r in results)
        headers = ["task", "probe"] + (["regime"] if show_regime else []) + (["trained on"] if show_train else []) + [
            "upstream", "languages", f"macro {metric}{_arrow(results[0]['higher_is_better'])}", "std",
            f"worst-{worst_n} mean", "worst languages"] + (["max dataset range"] if show_range else [])
        table_rows = []
        groups: dict[tuple, dict[str, dict]] = defaultdict(dict)
        worst: dict[tuple, dict[str, list]] = defaultdict(dict)
        for r in sorted(results, key=lambda r: (r["task"], r["probe"], r["regime"], r["train_data"], r["macro"]
                                                if not r["higher_is_better"] else -r["macro"], r["upstream"])):
            table_rows.append(
                [r["task"], r["probe"]] + ([r["regime"]] if show_regime else []) + (
                    [r["train_data"]] if show_train else []) + [
                    r["upstream"], str(r["n_languages"]), fmt_num(r["macro"]), fmt_num(r["std"]),
                    fmt_num(r["worst_mean"]), ", ".join(r["worst_languages"])] + (
                    [_range_text(r)] if show_range else []))
            key = (r["task"], r["probe"], r["regime"], r["train_data"])
            groups[key][r["upstream"]] = r["per_language"]
            worst[key][r["upstream"]] = r["worst_languages"]
        align = ["l", "l"] + (["l"] if show_regime else []) + (["l"] if show_train else []) + [
            "l", "r", "r", "r", "r", "l"] + (["r"] if show_range else [])
        section.add(Table(headers, table_rows, caption=f"Per-language {metric}: aggregates over languages.",
                          label=f"tab:multilingual-{_slug(metric)}", align=align))
        for key, per_upstream in sorted(groups.items()):
            task, probe, regime, train = key
            where = f"{task}, {_probe_label(probe, regime)}" + (f", {train}" if train else "")
            section.add(Figure(
                name=_slug("languages", metric, task, probe, regime, train),
                caption=f"{metric} per language ({where}), one bar per upstream; worst-{worst_n} languages outlined.",
                png=plots.language_bars(per_upstream, metric=metric, title=f"{where}: {metric} per language",
                                        worst=worst[key]),
            ))
    return section


def _range_text(entry: dict) -> str:
    if entry["max_dataset_range"] is None:
        return "–"
    return f"{fmt_num(entry['max_dataset_range'])} ({entry['max_dataset_range_language']})"


def _mlsuperb_table(section: Section, rows: list[dict]) -> None:
    """ML-SUPERB 2.0's table for joint ASR + LID runs: one row per system, CER aggregates and
    LID accuracy side by side."""
    joint = [r for r in rows if r["task"] == "asr_lid"]
    if not joint:
        return
    cer = {_system(e): e for e in stats.multilingual(joint, metric="cer") if e["split"] == "test"}
    lid = {_system(e): e for e in stats.multilingual(joint, metric="lid_accuracy") if e["split"] == "test"}
    if not cer:
        return
    worst_n = max(e["worst_n"] for e in cer.values())
    headers = ["upstream", "probe", "regime", "trained on", "languages", "datasets", "CER ↓", "std",
               f"worst-{worst_n} CER", "max dataset range", "LID acc ↑"]
    body = []
    for key in sorted(cer, key=lambda k: (k[3], k[1], k[2], cer[k]["macro"], k[0])):
        e = cer[key]
        body.append([e["upstream"], e["probe"], e["regime"], e["train_data"] or "–", str(e["n_languages"]),
                     str(e["n_datasets"]), fmt_num(e["macro"]), fmt_num(e["std"]), fmt_num(e["worst_mean"]),
                     _range_text(e), fmt_num(lid[key]["macro"]) if key in lid else "–"])
    section.add("Joint ASR + LID runs (task asr_lid) in ML-SUPERB 2.0's layout: CER macro-averaged over "
                "languages, its sample std across languages, the worst languages' mean, the widest CER range "
                "between datasets of one language, and macro LID accuracy from the predicted language tag.")
    section.add(Table(headers, body, caption="ML-SUPERB 2.0 table (joint ASR + LID).", label="tab:mlsuperb",
                      align=["l", "l", "l", "l", "r", "r", "r", "r", "r", "r", "r"]))


def _system(entry: dict) -> tuple:
    return entry["upstream"], entry["probe"], entry["regime"], entry["train_data"]


def _layer_section(runs: list[dict]) -> Section:
    section = Section("Layer weights", "layers")
    groups: dict[tuple, list[dict[int, float]]] = defaultdict(list)
    single: set[str] = set()
    for run in runs:
        if run.get("status") not in (None, "finished"):
            continue
        extra = run.get("extra") or {}
        weights = extra.get("layer_weights")
        if not isinstance(weights, list) or not weights or not all(_is_num(w) for w in weights):
            continue
        if len(weights) < 2:
            single.add(run["upstream"])
            continue
        layers = extra.get("layers_used")
        if not isinstance(layers, list) or len(layers) != len(weights):
            layers = list(range(len(weights)))
        key = (run["upstream"], run["task"], run["probe"], run.get("regime") or "frozen")
        groups[key].append({int(l): float(w) for l, w in zip(layers, weights)})
    if not groups:
        text = "Absent: no run recorded learned layer weights (imported results and fixed-layer runs have none)."
        if single:
            text += f" Single-layer upstreams ({_names(single)}) have a trivial weight of 1."
        return section.add(text)
    section.add("Softmax weights of the probe's weighted sum over the upstream's layers (layer 0: the "
                "input to the first transformer block, where the upstream has one), averaged over seeds. "
                "Grey cells: the upstream has no such layer."
                + (f" Single-layer upstreams ({_names(single)}) are left out." if single else ""))
    labels, maps, table_rows = [], [], []
    for (upstream, task, probe, regime), seeds in sorted(groups.items()):
        layers = sorted({l for m in seeds for l in m})
        mean = {l: sum(m[l] for m in seeds if l in m) / sum(1 for m in seeds if l in m) for l in layers}
        label = f"{upstream} · {task} · {_probe_label(probe, regime)}"
        labels.append(label)
        maps.append(mean)
        top = sorted(mean, key=lambda l: (-mean[l], l))[:3]
        table_rows.append([upstream, task, _probe_label(probe, regime), str(len(seeds)), str(len(layers)),
                           ", ".join(f"{l} ({mean[l]:.2f})" for l in top)])
    section.add(Figure("layer-weights", "Learned layer weights per upstream, task and probe.",
                       plots.layer_weight_heatmap(labels, maps)))
    return section.add(Table(["upstream", "task", "probe", "runs", "layers", "top layers (weight)"], table_rows,
                             caption="Most weighted layers (mean over seeds).", label="tab:layer-weights",
                             align=["l", "l", "l", "r", "r", "l"]))


def read_pretrain_metrics(run_dir: str | Path) -> dict[str, list[dict[str, Any]]]:
    """A pretraining run's ``metrics.jsonl`` by split: ``{"train": [...], "valid": [...]}``.

    "dev" records count as "valid". Blank or unparsable lines (a run killed mid-write) are
    skipped. A missing file gives empty lists; ``run_dir`` may also be the file itself.
    Parsed here rather than through :mod:`speechssl.pretrain` so that reports never import
    torch.
    """
    out: dict[str, list[dict[str, Any]]] = {"train": [], "valid": []}
    path = _metrics_file(run_dir)
    if not path.is_file():
        return out
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        split = {"dev": "valid"}.get(record.get("split"), record.get("split"))
        if split in out:
            out[split].append(record)
    return out


def _metrics_file(run_dir: str | Path) -> Path:
    """``<run_dir>/metrics.jsonl``; the path itself when it already names the file."""
    path = Path(run_dir)
    return path if path.name == "metrics.jsonl" and not path.is_dir() else path / "metrics.jsonl"


def _short_names(paths: Sequence[Path]) -> list[str]:
    """The shortest trailing path parts that tell the runs apart."""
    for depth in range(1, max((len(p.parts) for p in paths), default=1) + 1):
        names = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]


def _pretrain_section(pretrain_dirs: Sequence[str | Path]) -> Section:
    section = Section("Pretraining", "pretraining")
    paths = [Path(p).parent if Path(p).name == "metrics.jsonl" and Path(p).is_file() else Path(p)
             for p in pretrain_dirs]
    names = _short_names(paths)
    curves: dict[str, list[tuple[float, float]]] = {}
    valid: dict[str, list[tuple[float, float]]] = {}
    table_rows = []
    for name, path in zip(names, paths):
        metrics = read_pretrain_metrics(path)
        train = [(r["step"], r["loss"]) for r in metrics["train"] if _is_num(r.get("step")) and _is_num(r.get("loss"))]
        dev = [(r["step"], r["loss"]) for r in metrics["valid"] if _is_num(r.get("step")) and _is_num(r.get("loss"))]
        if not _metrics_file(path).is_file():
            table_rows.append([name, DASH, DASH, DASH, "no metrics.jsonl"])
            continue
        curves[name], valid[name] = train, dev
        last = max(train) if train else None
        best = min(dev, key=lambda sv: (sv[1], sv[0])) if dev else None
        table_rows.append([
            name, fmt_num(last[0]) if last else DASH, fmt_num(last[1]) if last else DASH,
            f"{fmt_num(best[1])} (step {fmt_num(best[0])})" if best else DASH,
            "" if train else "no train loss",
        ])
    if curves:
        section.add(Figure("pretraining-loss", "Pretraining loss against step: solid lines train, "
                           "dashed lines with markers validation.",
                           plots.loss_curves(curves, valid=valid)))
    return section.add(Table(["run", "last step", "last train loss", "best valid loss", "note"], table_rows,
                             caption="Pretraining runs.", label="tab:pretraining",
                             align=["l", "r", "r", "r", "l"]))


_COSTS = (  # (run field, header, formatter, how runs combine)
    ("upstream_params", "params", fmt_si, "max"),
    ("flops_per_second", "FLOPs/s", fmt_si, "mean"),
    ("wall_seconds", "wall time", fmt_seconds, "sum"),
    ("gpu_hours", "GPU-hours", fmt_amount, "sum"),
    ("energy_kwh", "energy (kWh)", fmt_amount, "sum"),
    ("co2_kg", "CO2 (kg)", fmt_amount, "sum"),
)


def _cost_section(runs: list[dict]) -> Section:
    section = Section("Cost per upstream", "cost")
    if not runs:
        return section.add("Absent: no run records.")
    section.add("Summed over every run of the upstream (any status) that reports the number; params is the "
                "upstream's size and FLOPs/s its mean reported throughput. \"(k/n)\": only k of the n runs "
                f"report it; {DASH}: not reported.")
    by_upstream: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        by_upstream[run["upstream"]].append(run)
    table_rows = []
    for upstream, group in sorted(by_upstream.items()):
        cells = [upstream, str(len(group))]
        for key, _, formatter, how in _COSTS:
            values = [float(r[key]) for r in group if _is_num(r.get(key))]
            if not values:
                cells.append(DASH)
                continue
            total = {"max": max, "sum": sum, "mean": lambda v: sum(v) / len(v)}[how](values)
            if how == "max" and key == "upstream_params":
                total = int(total)
            text = formatter(total)
            if how == "sum" and len(values) < len(group):
                text += f" ({len(values)}/{len(group)})"
            cells.append(text)
        table_rows.append(cells)
    headers = ["upstream", "runs"] + [h for _, h, _, _ in _COSTS]
    return section.add(Table(headers, table_rows, caption="Cost per upstream.", label="tab:cost",
                             align=["l"] + ["r"] * (len(headers) - 1)))


def _failed_section(runs: list[dict]) -> Section:
    section = Section("Failed runs", "failed")
    failed = [r for r in runs if r.get("status") == "failed"]
    unfinished = Counter(r.get("status") for r in runs if r.get("status") in ("running", "pending"))
    note = ""
    if unfinished:
        note = " Not finished yet: " + ", ".join(f"{unfinished[s]} {s}" for s in sorted(unfinished)) + "."
    if not failed:
        return section.add("No run failed." + note)
    section.add(f"{len(failed)} run{'s' if len(failed) != 1 else ''} failed (first line of the error shown)."
                + note)
    table_rows = []
    for r in sorted(failed, key=lambda r: (r["upstream"], r["task"], r["probe"], r.get("regime") or "",
                                           r.get("seed") if r.get("seed") is not None else -1, r["run_id"])):
        error = (r.get("error") or "").strip()
        first = error.splitlines()[0] if error else DASH
        if len(first) > 200:
            first = first[:197] + "..."
        table_rows.append([str(r["run_id"])[:12], r["upstream"], r["task"], _probe_label(r["probe"], r.get("regime")),
                           _seed(r.get("seed")), first])
    return section.add(Table(["run", "upstream", "task", "probe", "seed", "error"], table_rows,
                             caption="Failed runs.", label="tab:failed", align=["l", "l", "l", "l", "r", "l"]))


# ---------------------------------------------------------------------------- rendering


def _md(text: str) -> str:
    """Plain text for Markdown: ``<`` backslash-escaped so that a name never turns into HTML."""
    return text.replace("\\", "\\\\").replace("<", "\\<")


def _md_paragraph(text: str) -> str:
    """Like :func:`_md`, but `code` spans are left alone."""
    parts = text.split("`")
    return "`".join(p if i % 2 else _md(p) for i, p in enumerate(parts))


def _render_markdown(report: Report) -> str:
    files = report.figure_files()
    out = [f"# {_md(report.title)}", ""]
    if report.generated_at:
        out += [f"Generated at {report.generated_at}.", ""]
    if len(report.sections) > 1:
        out += [f"- [{s.title}](#{s.anchor})" for s in report.sections] + [""]
    for section in report.sections:
        out += [f'<a id="{section.anchor}"></a>', "", f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Table):
                cells = [[_md(c) for c in row] for row in block.rows]
                out += [f"*{_md(block.caption)}*", "",
                        markdown_table([_md(h) for h in block.headers], cells, block.align), ""]
            elif isinstance(block, Figure):
                alt = _md(block.caption).replace("[", "(").replace("]", ")")
                out += [f"![{alt}]({FIGURE_DIR}/{files[block.name]})", "", f"*{_md(block.caption)}*", ""]
            else:
                out += [_md_paragraph(block), ""]
    return "\n".join(out).rstrip("\n") + "\n"


_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#1f2328;max-width:1100px;
margin:2em auto;padding:0 1.5em;line-height:1.45;font-size:15px}
h1{border-bottom:2px solid #d0d7de;padding-bottom:.3em}
h2{border-bottom:1px solid #d0d7de;padding-bottom:.2em;margin-top:2em}
nav ul{columns:2;list-style:none;padding-left:0}nav a{color:#0969da;text-decoration:none}
table{border-collapse:collapse;margin:.6em 0 1.4em;font-size:13px}
caption{caption-side:top;text-align:left;font-style:italic;padding-bottom:.3em;color:#57606a}
th,td{border:1px solid #d0d7de;padding:.25em .6em}
th{background:#f6f8fa}tr:nth-child(even) td{background:#fbfcfd}
td.r,th.r{text-align:right;font-variant-numeric:tabular-nums}td.c,th.c{text-align:center}
figure{margin:1em 0 1.6em}figure img{max-width:100%;height:auto;border:1px solid #eaeef2}
figcaption{font-style:italic;color:#57606a;font-size:13px}
code{background:#f6f8fa;padding:0 .25em;border-radius:3px;font-size:90%}
.generated{color:#57606a;font-size:13px}
.table-filter{display:flex;flex-wrap:wrap;align-items:center;gap:.3em 1em;margin:1em 0 -.2em;font-size:13px;
color:#57606a}.table-filter select,.table-filter input{font:inherit;padding:.1em .3em}
table.js-table tbody td{background:none}table.js-table tbody tr.alt td{background:#fbfcfd}
th.sortable{cursor:pointer}th.sortable::after{content:"\\2195";color:#afb8c1;padding-left:.3em}
th[aria-sort=ascending]::after{content:"\\25B2";color:#1f2328}
th[aria-sort=descending]::after{content:"\\25BC";color:#1f2328}
""".strip()

# Sorting and filtering (see docs/reports.md), included once per page that has a table with two or
# more rows. It reads everything from the DOM: no data-derived text is ever put into it.
_SCRIPT = r"""
(() => {
  "use strict";
  // Sorting and filtering of the report's tables. Everything it shows is read from the DOM
  // (table[data-sortable], table[data-filterable], data-filter-columns, data-filter-lists);
  // nothing about the results is written into this script.
  const BLANK = /^[\s\u2012\u2013\u2014\u2212-]*$/;
  const NUMBER = /^([-+\u2212]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*(min|[kMGTsh%])?(?![\w\u00b5])/;
  const SCALE = {k: 1e3, M: 1e6, G: 1e9, T: 1e12, min: 60, h: 3600, s: 1, "%": 1};
  const collator = new Intl.Collator("en", {numeric: true, sensitivity: "base"});
  const index = new WeakMap();

  const number = (text) => {
    const m = NUMBER.exec(text);
    if (!m) return null;
    const x = parseFloat(m[1].replace(/,/g, "").replace("\u2212", "-"));
    return Number.isFinite(x) ? x * (m[2] ? SCALE[m[2]] : 1) : null;
  };
  const cellText = (row, col) => (row.cells[col] ? row.cells[col].textContent.trim() : "");
  const listItems = (text) => text.split(",").map((item) => item.trim()).filter((item) => !BLANK.test(item));

  const restripe = (body) => {
    let k = 0;
    for (const row of body.rows) {
      if (!row.hidden) row.classList.toggle("alt", k++ % 2 === 1);
    }
  };

  const sortBy = (body, headers, col) => {
    const dir = headers[col].getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
    const sign = dir === "ascending" ? 1 : -1;
    const keyed = Array.from(body.rows, (row) => {
      const text = cellText(row, col);
      return {row, text, blank: BLANK.test(text), num: number(text)};
    });
    const numeric = keyed.every((k) => k.blank || k.num !== null);
    keyed.sort((a, b) => {
      if (a.blank !== b.blank) return a.blank ? 1 : -1;  // dashes and empty cells last, either way
      const d = a.blank ? 0 : numeric ? a.num - b.num : collator.compare(a.text, b.text);
      return d ? sign * d : index.get(a.row) - index.get(b.row);
    });
    for (const th of headers) th.removeAttribute("aria-sort");
    headers[col].setAttribute("aria-sort", dir);
    const fragment = document.createDocumentFragment();
    for (const k of keyed) fragment.appendChild(k.row);
    body.appendChild(fragment);
    restripe(body);
  };

  const makeSortable = (body, headers) => {
    headers.forEach((th, col) => {
      th.classList.add("sortable");
      th.tabIndex = 0;
      th.title = "Sort by this column (again: reverse)";
      th.addEventListener("click", () => sortBy(body, headers, col));
      th.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          sortBy(body, headers, col);
        }
      });
    });
  };

  const makeFilterable = (table, body, names) => {
    const rows = Array.from(body.rows);
    const bar = document.createElement("div");
    bar.className = "table-filter";
    if (table.id) bar.setAttribute("aria-controls", table.id);
    const lists = (table.getAttribute("data-filter-lists") || "").split(/\s+/);
    const selects = [];
    for (const token of (table.getAttribute("data-filter-columns") || "").split(/\s+/)) {
      const col = /^\d+$/.test(token) ? Number(token) : -1;
      if (col < 0 || col >= names.length) continue;
      const list = lists.includes(token);
      const values = new Set();
      for (const row of rows) {
        const text = cellText(row, col);
        for (const value of list ? listItems(text) : [text]) if (!BLANK.test(value)) values.add(value);
      }
      if (values.size < 2) continue;
      const label = document.createElement("label");
      label.append(names[col] + " ");
      const select = document.createElement("select");
      select.dataset.column = String(col);
      select.add(new Option("all", ""));
      for (const value of Array.from(values).sort(collator.compare)) select.add(new Option(value, value));
      label.append(select);
      bar.append(label);
      selects.push({select, col, list});
    }
    const search = document.createElement("input");
    search.type = "search";
    search.placeholder = "filter rows";
    const caption = table.caption ? table.caption.textContent.trim() : "";
    search.setAttribute("aria-label", caption ? "Filter the rows of: " + caption : "Filter the rows");
    const count = document.createElement("span");
    count.className = "table-count";
    count.setAttribute("aria-live", "polite");
    bar.append(search, count);
    const apply = () => {
      const terms = search.value.toLowerCase().split(/\s+/).filter(Boolean);
      let shown = 0;
      for (const row of rows) {
        let keep = selects.every(({select, col, list}) => {
          if (!select.value) return true;
          const text = cellText(row, col);
          return list ? listItems(text).includes(select.value) : text === select.value;
        });
        if (keep && terms.length) {
          const text = Array.from(row.cells, (cell) => cell.textContent).join(" ").toLowerCase();
          keep = terms.every((term) => text.includes(term));
        }
        row.hidden = !keep;
        if (keep) shown += 1;
      }
      count.textContent = shown + " of " + rows.length + " rows";
      restripe(body);
    };
    for (const {select} of selects) select.addEventListener("change", apply);
    search.addEventListener("input", apply);
    table.before(bar);
    apply();
  };

  for (const table of document.querySelectorAll("table[data-sortable], table[data-filterable]")) {
    const body = table.tBodies[0];
    if (!body || !table.tHead || !table.tHead.rows.length) continue;
    const headers = Array.from(table.tHead.rows[0].cells);
    const names = headers.map((th) => th.textContent.trim());
    Array.from(body.rows).forEach((row, i) => index.set(row, i));
    table.classList.add("js-table");
    if (table.hasAttribute("data-sortable")) makeSortable(body, headers);
    if (table.hasAttribute("data-filterable")) makeFilterable(table, body, names);
    restripe(body);
  }
})();
"""

# Columns (by header) that get a <select> filter; in _FILTER_LISTS a cell is a comma-separated list.
_FILTERS = frozenset({"task", "probe", "regime", "language", "lang"})
_FILTER_LISTS = frozenset({"worst languages"})


def _inline_html(text: str) -> str:
    """Escape, then turn `code` spans into <code>."""
    parts = html.escape(text, quote=True).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _html_table(table: Table) -> str:
    align = table.align or ["l"] * len(table.headers)
    cls = [f' class="{a}"' if a != "l" else "" for a in align]
    head = "".join(f"<th{c}>{html.escape(h)}</th>" for h, c in zip(table.headers, cls))
    body = "\n".join("<tr>" + "".join(f"<td{c}>{html.escape(v)}</td>" for v, c in zip(row, cls)) + "</tr>"
                     for row in table.rows)
    return (f'<table id="{html.escape(table.label.replace(":", "-"))}"{_table_attributes(table)}>\n'
            f"<caption>{html.escape(table.caption)}"
            f"</caption>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>")


def _interactive(table: Table) -> bool:
    return len(table.rows) >= 2


def _table_attributes(table: Table) -> str:
    """The data attributes :data:`_SCRIPT` acts on: sort any table of two rows or more, filter any
    of four rows or more, with a select per task/probe/regime/language column (indices only,
    never cell text)."""
    if not _interactive(table):
        return ""
    out = " data-sortable"
    if len(table.rows) < 4:
        return out
    names = [h.strip().lower() for h in table.headers]
    columns = [str(i) for i, name in enumerate(names) if name in _FILTERS or name in _FILTER_LISTS]
    lists = [str(i) for i, name in enumerate(names) if name in _FILTER_LISTS]
    out += " data-filterable"
    if columns:
        out += f' data-filter-columns="{html.escape(" ".join(columns))}"'
    if lists:
        out += f' data-filter-lists="{html.escape(" ".join(lists))}"'
    return out


def _csp(script: str | None) -> str:
    """A Content-Security-Policy that lets the page load nothing but its own inline style, its
    data: images and (by hash) its one script: no fetch, and no injected script would run."""
    scripts = "'none'"
    if script is not None:
        digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
        scripts = f"'sha256-{digest}'"
    policy = (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src {scripts}; "
              "base-uri 'none'; form-action 'none'")
    return f'<meta http-equiv="Content-Security-Policy" content="{policy}">'  # no data in it


def _render_html(report: Report) -> str:
    title = html.escape(report.title)
    script = _SCRIPT if any(_interactive(t) for t in report.tables) else None
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">', _csp(script),
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{title}</title>", f"<style>\n{_CSS}\n</style>", "</head>", "<body>", f"<h1>{title}</h1>"]
    if report.generated_at:
        out.append(f'<p class="generated">Generated at {html.escape(report.generated_at)}.</p>')
    if len(report.sections) > 1:
        out.append("<nav><ul>" + "".join(f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>'
                                         for s in report.sections) + "</ul></nav>")
    for section in report.sections:
        out.append(f'<section id="{section.anchor}">\n<h2>{html.escape(section.title)}</h2>')
        for block in section.blocks:
            if isinstance(block, Table):
                out.append(_html_table(block))
            elif isinstance(block, Figure):
                data = base64.b64encode(block.png).decode("ascii")
                out.append(f'<figure id="fig-{block.name}"><img src="data:image/png;base64,{data}" '
                           f'alt="{html.escape(block.caption, quote=True)}">'
                           f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
            else:
                out.append(f"<p>{_inline_html(block)}</p>")
        out.append("</section>")
    if script is not None:
        out.append(f"<script>{script}</script>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


def _tex(text: str) -> str:
    """:func:`latex_escape`, plus the Δ of "Δ vs frozen" (pdflatex has no Greek text glyphs)."""
    return latex_escape(text).replace("Δ", r"$\Delta$")


def _render_latex(report: Report) -> str:
    title = " ".join(report.title.split())  # a newline would end the comment
    out = [f"% {title}: tables (\\input this file; needs \\usepackage{{booktabs}})"]
    if report.generated_at:
        out.append(f"% generated at {report.generated_at}")
    out.append("")
    tables = 0
    for section in report.sections:
        section_tables = [b for b in section.blocks if isinstance(b, Table)]
        if not section_tables:
            continue
        out += [f"% ---- {section.title}", ""]
        for table in section_tables:
            out += [latex_table([_tex(h) for h in table.headers], [[_tex(c) for c in row] for row in table.rows],
                                caption=_tex(table.caption), label=table.label, align=table.align, escape=False), ""]
            tables += 1
    if not tables:
        out += ["% no tables: the report has no results", ""]
    return "\n".join(out).rstrip("\n") + "\n"


# ---------------------------------------------------------------------------- writing


def write_report(
    out_dir: str | Path,
    rows: Sequence[dict[str, Any]],
    runs: Sequence[dict[str, Any]] = (),
    pretrain_dirs: Sequence[str | Path] = (),
    *,
    title: str = "speechssl report",
    baseline: str = "mfcc",
    formats: Sequence[str] = FORMATS,
    timestamp: bool = True,
) -> dict[str, Path]:
    """:func:`build_report` then :meth:`Report.write`: the report of ``rows``/``runs`` in ``out_dir``."""
    _check_formats(formats)
    report = build_report(rows, runs, pretrain_dirs, title=title, baseline=baseline, timestamp=timestamp)
    return report.write(out_dir, formats)


def _check_formats(formats: Sequence[str]) -> None:
    unknown = set(formats) - set(FORMATS)
    if unknown or isinstance(formats, str):
        raise ConfigError(f"unknown report format(s) {formats!r}; choose from {', '.join(FORMATS)}")


def _write(report: Report, out_dir: str | Path, formats: Sequence[str] = FORMATS) -> dict[str, Path]:
    _check_formats(formats)
    out_dir = Path(out_dir)
    try:
        return _write_files(report, out_dir, formats)
    except OSError as exc:  # a read-only or full OUT (the files themselves fail with one line already)
        raise write_error(out_dir, exc, "report in") from exc


def _write_files(report: Report, out_dir: Path, formats: Sequence[str]) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if "md" in formats:
        fig_dir = out_dir / FIGURE_DIR
        fig_dir.mkdir(exist_ok=True)
        files = report.figure_files()
        for figure in report.figures:
            write_bytes_atomic(fig_dir / files[figure.name], figure.png)
        keep = set(files.values())
        for stale in sorted(fig_dir.iterdir()):
            if _FIGURE_FILE.match(stale.name) and stale.name not in keep:
                stale.unlink()
        written["md"] = out_dir / "report.md"
        write_text_atomic(written["md"], report.to_markdown())
        written["figures"] = fig_dir
    if "html" in formats:
        written["html"] = out_dir / "report.html"
        write_text_atomic(written["html"], report.to_html())
    if "tex" in formats:
        written["tex"] = out_dir / "tables.tex"
        write_text_atomic(written["tex"], report.to_latex())
    return written
