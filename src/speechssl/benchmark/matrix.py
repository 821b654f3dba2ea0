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


def score_matrix(results: Sequence[dict[str, Any]], labels: Sequence[str] | None = None, *,
                 by_task: bool = False) -> str:
    """Markdown: one row per upstream (``labels[i]`` names ``results[i]``'s upstream, default its
    spec), one column per (task, probe) with the test primary metric, a last row of chance.
    ``by_task`` turns it round (one row per task and probe, one column per upstream, then
    chance): the readable form when there are many (task, probe) pairs."""
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
    upstreams = list(dict.fromkeys(names))

    def cell(name: str, column: tuple[str, str]) -> str:
        return f"{value[(name, *column)]:.3f}" if (name, *column) in value else ""

    def chance(column: tuple[str, str]) -> str:
        c = info[column][2]
        return f"{c:.3f}" if isinstance(c, (int, float)) else ""

    def title(column: tuple[str, str]) -> str:
        metric, higher, _ = info[column]
        return f"{column[0]} {column[1]} {metric} {'↑' if higher else '↓'}"

    if by_task:
        rows = [[title(c)] + [cell(u, c) for u in upstreams] + [chance(c)] for c in sorted(columns)]
        return markdown_table(["task probe metric", *upstreams, "*chance*"], rows)
    rows = [[u] + [cell(u, c) for c in columns] for u in upstreams]
    rows.append(["*chance*"] + [chance(c) for c in columns])
    return markdown_table(["upstream", *map(title, columns)], rows)
