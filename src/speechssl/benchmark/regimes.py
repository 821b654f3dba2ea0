"""Adaptation regimes side by side: what adapting the upstream buys over a frozen one, and at what cost.

:func:`regime_rows` turns run dicts and score rows (the package contracts, see
:mod:`speechssl.benchmark`) into one row per finished run: its regime, its task's primary
test score, and the cost of training it (tunable parameters, seconds per update, peak
memory) as :func:`speechssl.downstream.runner.run_bench` records them in
``result["adaptation"]`` (``extra["adaptation"]`` in the store). :func:`regime_table` lays
the rows out as table cells, grouped by task then upstream with the regimes in
:data:`REGIME_ORDER`, and :func:`format_regime_table` as Markdown; the report's "Adaptation
regimes" section shows the same cells.

Frozen runs stored before regimes were measured have no adaptation record: their tunable
parameters are the probe's, and step time and peak memory show as "–".
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from speechssl.benchmark.directions import metric_direction
from speechssl.benchmark.stats import PRIMARY_METRIC_ORDER
from speechssl.benchmark.tables import markdown_table

__all__ = ["REGIME_ORDER", "format_regime_table", "has_adapted", "regime_rows", "regime_sort_key", "regime_table"]

# Table and plot order. A partial family covers its sizes (partial-top1, partial-top2, ...);
# a label not listed (a regime added later) comes after these, alphabetically.
REGIME_ORDER = ("frozen", "full", "partial-bottom", "partial-middle", "partial-top", "adapter", "lora")

# Short names for the peak-memory measures, shown only when a table mixes them.
_MEMORY_KINDS = {"cuda_allocated": "GPU", "process_rss": "RSS"}


def regime_sort_key(label: str) -> tuple:
    """Sort key putting regime labels in :data:`REGIME_ORDER` (partial sizes numerically)."""
    for i, family in enumerate(REGIME_ORDER):
        match = re.fullmatch(re.escape(family) + (r"(\d*)" if family.startswith("partial-") else ""), label)
        if match:
            size = match.group(1) if match.groups() else ""
            return (i, int(size) if size else 0, label)
    return (len(REGIME_ORDER), 0, label)


def _regime(record: Mapping) -> str:
    return record.get("regime") or "frozen"


def has_adapted(records: Iterable[Mapping]) -> bool:
    """Whether any run dict or score row has a regime other than frozen."""
    return any(_regime(r) != "frozen" for r in records)


def _number(x: Any) -> float | int | None:
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def regime_rows(runs: Iterable[Mapping], scores: Iterable[Mapping], *,
                metrics: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """One dict per finished run, sorted by task, dataset, upstream, probe, regime, seed.

    ``runs`` as from ``ResultStore.runs()`` (unfinished runs are skipped), ``scores`` as from
    ``ResultStore.scores()`` (only overall test scores are read). ``metrics`` maps a task to
    the metric to show (the report passes the one it ranks by); otherwise each run's own
    primary metric, else the first of :data:`~speechssl.benchmark.stats.PRIMARY_METRIC_ORDER`
    it has. A score row whose run dict is absent (rows given without runs) counts as a run
    without cost records.

    Keys: run_id, upstream, task, probe, regime, dataset, seed, metric, value (None when the
    run has no test score for it), higher_is_better, tunable_params, total_params,
    step_seconds, peak_memory_mb, peak_memory_kind (None where not recorded).
    """
    values: dict[str, dict[str, dict]] = defaultdict(dict)  # run_id -> metric -> score row
    by_id: dict[str, dict] = {}
    for run in runs:
        if (run.get("status") or "finished") == "finished":
            by_id[run["run_id"]] = dict(run)
    for s in scores:
        if (s.get("split") or "test") != "test" or s.get("language") or (s.get("status") or "finished") != "finished":
            continue
        values[s["run_id"]][s["metric"]] = s
        if s["run_id"] not in by_id:
            by_id[s["run_id"]] = {k: s.get(k) for k in ("run_id", "upstream", "task", "probe", "regime", "dataset",
                                                        "seed", "primary_metric")}
    out = []
    for run_id, run in by_id.items():
        present = values.get(run_id, {})
        metric = _metric_of(run, present, metrics or {})
        score = present.get(metric) if metric else None
        if score is not None:
            higher = bool(score["higher_is_better"])
        else:
            higher = metric_direction(metric) if metric else None
        out.append({
            "run_id": run_id, "upstream": run["upstream"], "task": run["task"], "probe": run.get("probe") or "",
            "regime": _regime(run), "dataset": run.get("dataset") or "", "seed": run.get("seed"),
            "metric": metric, "value": None if score is None else float(score["value"]), "higher_is_better": higher,
            **_costs(run),
        })
    out.sort(key=lambda r: (r["task"], r["dataset"], r["upstream"], r["probe"], regime_sort_key(r["regime"]),
                            -1 if r["seed"] is None else r["seed"], r["run_id"]))
    return out


def _metric_of(run: Mapping, present: Mapping[str, Any], metrics: Mapping[str, str]) -> str | None:
    if metrics.get(run["task"]):
        return metrics[run["task"]]
    if run.get("primary_metric"):
        return run["primary_metric"]
    return next((m for m in PRIMARY_METRIC_ORDER if m in present), min(present, default=None))


def _costs(run: Mapping) -> dict[str, Any]:
    """The training costs of a run, from its adaptation record where it has one."""
    extra = run.get("extra") or {}
    adaptation = extra.get("adaptation") if isinstance(extra, Mapping) else None
    adaptation = adaptation if isinstance(adaptation, Mapping) else {}
    probe = _number(run.get("probe_params"))
    upstream = _number(adaptation.get("upstream_params"))  # counts inserted adapter/LoRA weights too
    if upstream is None:
        upstream = _number(run.get("upstream_params"))
    tunable = _number(adaptation.get("tunable_params"))
    if tunable is None and _regime(run) == "frozen":
        tunable = probe  # a frozen run from before adaptation records: only the probe trained
    return {
        "tunable_params": tunable,
        "total_params": upstream + probe if upstream is not None and probe is not None else None,
        "step_seconds": _number(adaptation.get("step_seconds")),
        "peak_memory_mb": _number(adaptation.get("peak_memory_mb")),
        "peak_memory_kind": adaptation.get("peak_memory_kind"),
    }


def _frozen_references(rows: Iterable[Mapping]) -> dict[tuple, float]:
    """(upstream, task, probe, dataset) -> mean test score of its frozen runs (over seeds)."""
    frozen: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        if r["regime"] == "frozen" and r["value"] is not None:
            frozen[_cell(r)].append(r["value"])
    return {k: sum(v) / len(v) for k, v in frozen.items()}


def _cell(row: Mapping) -> tuple:
    return (row["upstream"], row["task"], row["probe"], row["dataset"])


def regime_table(rows: Sequence[Mapping]) -> tuple[list[str], list[list[str]], list[str]]:
    """``(headers, cells, align)`` of :func:`regime_rows` output, in its order.

    Columns: task, upstream, [probe], regime, [seed], the metric (header ``cer ↓`` when all
    rows share one metric, else a ``metric`` column then ``score``), Δ vs frozen, tunable
    params, step s, peak MB. The probe and seed columns appear only when rows would otherwise
    be told apart by them. Δ vs frozen is the score minus the mean frozen score of the same
    upstream, task, probe and dataset ("ref" on frozen rows, "–" without a frozen run).
    """
    # report imports this module; its formatters are imported on use to keep the import acyclic.
    from speechssl.benchmark.report import DASH, _arrow, _decimals, fmt_num, fmt_si

    reference = _frozen_references(rows)
    show_probe = len({r["probe"] for r in rows}) > 1
    seen = [(*_cell(r), r["regime"]) for r in rows]
    show_seed = len(set(seen)) < len(seen)
    tasks_datasets: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        tasks_datasets[r["task"]].add(r["dataset"])
    metric_keys = {(r["metric"], r["higher_is_better"]) for r in rows}
    one_metric = len(metric_keys) == 1
    kinds = {r["peak_memory_kind"] for r in rows if r["peak_memory_mb"] is not None}

    headers = ["task", "upstream"] + (["probe"] if show_probe else []) + ["regime"] + (["seed"] if show_seed else [])
    if one_metric:
        metric, higher = next(iter(metric_keys))
        headers.append(f"{metric or 'score'}{_arrow(higher)}")
    else:
        headers += ["metric", "score"]
    headers += ["Δ vs frozen", "tunable params", "step s", "peak MB"]
    align = ["l"] * (headers.index("regime") + 1) + (["r"] if show_seed else []) + ([] if one_metric else ["l"])
    align += ["r"] * (len(headers) - len(align))

    cells = []
    for r in rows:
        # A task scored on several datasets names the dataset: their scores do not compare.
        task = r["task"] + (f" ({r['dataset']})" if len(tasks_datasets[r["task"]]) > 1 and r["dataset"] else "")
        row = [task, r["upstream"]] + ([r["probe"]] if show_probe else []) + [r["regime"]]
        if show_seed:
            row.append(DASH if r["seed"] is None else str(r["seed"]))
        if not one_metric:
            row.append(f"{r['metric'] or DASH}{_arrow(r['higher_is_better'])}")
        row.append(fmt_num(r["value"]))
        ref = reference.get(_cell(r))
        if r["regime"] == "frozen":
            row.append("ref" if r["value"] is not None else DASH)
        elif ref is None or r["value"] is None:
            row.append(DASH)
        else:
            # As many decimals as the frozen score shows, so that 0.2 - 0.3 reads -0.1000.
            row.append(f"{r['value'] - ref:+.{_decimals(ref)}f}")
        memory = fmt_num(r["peak_memory_mb"])
        if len(kinds) > 1 and r["peak_memory_mb"] is not None:  # GPU and CPU peaks do not compare
            memory += f" ({_MEMORY_KINDS.get(r['peak_memory_kind'], r['peak_memory_kind'] or '?')})"
        row += [fmt_si(r["tunable_params"]), fmt_num(r["step_seconds"], 3), memory]
        cells.append(row)
    return headers, cells, align


def format_regime_table(rows: Sequence[Mapping]) -> str:
    """:func:`regime_table` as a GitHub Markdown table (no trailing newline)."""
    return markdown_table(*regime_table(rows))
