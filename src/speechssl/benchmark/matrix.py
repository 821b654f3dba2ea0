"""The upstream x (task, probe) table of bench results, with a chance row.

Read from ``result.json`` files rather than the store: each result carries its task's
chance value (``chance_<primary metric>``: majority class, most frequent target), which is
what a reader needs to judge whether a number means anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from speechssl.benchmark.tables import markdown_table

__all__ = ["score_matrix"]


def score_matrix(results: Sequence[dict[str, Any]], labels: Sequence[str] | None = None) -> str:
    """Markdown: one row per upstream (``labels[i]`` names ``results[i]``'s upstream, default its
    spec), one column per (task, probe) with the test primary metric, a last row of chance."""
    if labels is not None and len(labels) != len(results):
        raise ValueError(f"{len(labels)} labels for {len(results)} results")
    names = list(labels) if labels is not None else [r["upstream"] for r in results]
    columns: list[tuple[str, str]] = []
    info: dict[tuple[str, str], tuple[str, bool, Any]] = {}
    value: dict[tuple[str, str, str], float] = {}
    for name, result in zip(names, results):
        column = (result["task"], result["probe"])
        metric = result["primary_metric"]
        if column not in info:
            columns.append(column)
            info[column] = (metric, result["higher_is_better"], result["metrics"].get(f"chance_{metric}"))
        value[(name, *column)] = result["metrics"][metric]
    headers = ["upstream"] + [f"{t} {p} {info[(t, p)][0]} {'↑' if info[(t, p)][1] else '↓'}" for t, p in columns]
    rows = [[name] + [f"{value[(name, t, p)]:.3f}" if (name, t, p) in value else "" for t, p in columns]
            for name in dict.fromkeys(names)]
    chance = [info[c][2] for c in columns]
    rows.append(["*chance*"] + [f"{c:.3f}" if isinstance(c, (int, float)) else "" for c in chance])
    return markdown_table(headers, rows)
