"""Statistics over score rows: leaderboards, probe robustness, multilingual and normalised scores.

Every function takes *score rows* (see :mod:`speechssl.benchmark`) and returns plain
lists of dicts holding only JSON-safe values (``float``, ``int``, ``str``, ``bool``,
``None``, lists and dicts of those): an undefined statistic is ``None``, never NaN.
numpy and scipy only, no torch. The full definitions, with formulas, are in
``docs/statistics.md``; in short:

Conventions shared by all functions
    * Rows whose ``value`` is None or NaN (a run without a result) are ignored; any other
      non-numeric value is a :class:`~speechssl.errors.ConfigError`.
    * A *cell* is one (upstream, task, dataset, probe, regime, split, metric, language).
      Its seeds are averaged first (plain mean); two rows of the same cell with the same
      ``seed`` (None included) are an error, because averaging them would silently mix
      runs that differ in something the cell does not name (filter by ``source`` first).
    * Direction: a row's ``higher_is_better``, else :func:`metric_direction` of its
      metric; the rows of one (task, dataset, metric) must agree.
    * ``split`` is part of every grouping key, so dev and test scores never mix.

:func:`leaderboard`
    Mean and sample standard deviation (ddof=1; None for one seed) over seeds per
    upstream, ranked within (task, dataset, metric, probe, regime, split); ties share the
    best rank ("1224" competition ranking).

:func:`robustness`
    Seed 002's Table 2: for two probe families A and B on the same (task, dataset,
    metric, regime, split), correlate the per-upstream seed means over the upstreams
    scored with both (n >= 3): Pearson r, Spearman rho, Kendall tau-b with scipy's
    two-sided p-values, percentile bootstrap CIs for r and rho (upstreams resampled
    with replacement, resamples with a constant vector dropped), the means of A and B
    over those upstreams, and ``diff_pct``, B's relative improvement over A in percent:
    ``(mean_a - mean_b) / mean_a * 100`` when lower is better,
    ``(mean_b - mean_a) / mean_a * 100`` when higher is better (``|mean_a|`` in the
    denominator, so that a negative mean_a cannot flip the sign).

:func:`consensus`
    One ranking of the upstreams per (task, dataset, metric, regime, split) over all the
    probe families that scored them, on the task's primary metric: each probe ranks the
    upstreams (ties averaged), the ranks are aggregated by Borda count or mean rank, and
    the probes' agreement is summarised as in seed 002's correlation tables (pairs of
    probes whose orderings are identical, mean pairwise Kendall tau and Spearman rho).
    Only upstreams scored by >= 2 probes and probes scoring >= 2 of them take part; see
    ``docs/benchmark.md``.

:func:`multilingual`
    ML-SUPERB 2.0 aggregates over per-language rows: the macro average over languages
    (a language scored on several datasets is averaged over them first, unless its run
    also stored the language pooled over datasets), the sample standard deviation across
    languages (ddof=1, as ML-SUPERB's scoring script; None for one language), the mean of
    the worst-N languages, and the range of a language's score across datasets. Per-dataset
    scores of one run live in rows whose split is ``test@<dataset>``.

:func:`normalised_score`
    SUPERB-style normalised score: on every (task, dataset) the primary metric of each
    upstream is mapped linearly so that the baseline upstream (default ``mfcc``) scores 0
    and the best upstream of the set scores 1000,
    ``1000 * (s - s_baseline) / (s_best - s_baseline)``, then averaged over the
    (task, dataset) units per upstream. Direction only decides which upstream is best;
    the formula itself is direction-free. An upstream is scored with its best probe per
    unit unless ``probe=`` fixes one. Unlike SUPERB's published score (which uses the
    state of the art as the 1000 point), "best" is relative to the upstreams in the rows.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from speechssl.benchmark.directions import metric_direction
from speechssl.benchmark.mlsuperb import edit_distance, spread
from speechssl.benchmark.tables import latex_table, markdown_table
from speechssl.errors import ConfigError
from speechssl.extras import lazy_import

# scipy (the [report] and [bench] extras) is imported on the first statistic computed, so
# importing this module (the CLI, the result store's tables) needs only the core install.
sps = lazy_import("scipy.stats", "rank statistics", extra="report")

__all__ = [
    "CONSENSUS_METHODS",
    "PRIMARY_METRIC_ORDER",
    "consensus",
    "format_consensus",
    "format_leaderboard",
    "format_robustness",
    "leaderboard",
    "lid_accuracy",
    "multilingual",
    "normalised_score",
    "per_language_cer",
    "robustness",
]

log = logging.getLogger(__name__)

# Which metric is a task's primary one when several are scored and none is named.
PRIMARY_METRIC_ORDER = ("cer", "wer", "per", "der", "eer", "accuracy", "acc", "macro_f1", "f1", "mindcf")

_FORMATS = ("md", "json", "tex")


# --------------------------------------------------------------------------- rows


def _value(row: Mapping, index: int) -> float | None:
    """The row's value as a float; None when the run has no value (None or NaN)."""
    v = row.get("value")
    if v is None:
        return None
    if isinstance(v, bool):
        raise ConfigError(f"score row {index} has a boolean value {v!r}")
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"score row {index} has a non-numeric value {v!r}") from None
    if math.isnan(f):
        return None
    if math.isinf(f):
        raise ConfigError(f"score row {index} has an infinite value")
    return f


def _direction(row: Mapping, index: int) -> bool:
    hib = row.get("higher_is_better")
    if hib is None:
        hib = metric_direction(str(row["metric"]))
    if hib is None:
        raise ConfigError(
            f"score row {index}: metric {row['metric']!r} has no higher_is_better and its name does not tell the direction"
        )
    if not isinstance(hib, (bool, np.bool_)):
        raise ConfigError(f"score row {index}: higher_is_better must be a bool, got {hib!r}")
    return bool(hib)


def _normalise(rows: Iterable[Mapping], *, languages: str, metric=None, task=None) -> list[dict]:
    """Validated copies of the rows that matter, with defaults for optional fields.

    ``languages`` is ``"overall"`` (language ``""`` only) or ``"per_language"`` (the
    others). ``metric``/``task`` filter on a name or a collection of names.
    """
    want_metric = {metric} if isinstance(metric, str) else (set(metric) if metric is not None else None)
    want_task = {task} if isinstance(task, str) else (set(task) if task is not None else None)
    out = []
    directions: dict[tuple, tuple[bool, int]] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ConfigError(f"score row {i} is a {type(row).__name__}, not a dict")
        for key in ("upstream", "task", "metric"):
            if not row.get(key):
                raise ConfigError(f"score row {i} lacks {key!r}: {dict(row)!r}")
        lang = row.get("language") or ""
        if (languages == "overall") == bool(lang):
            continue
        if want_metric is not None and row["metric"] not in want_metric:
            continue
        if want_task is not None and row["task"] not in want_task:
            continue
        value = _value(row, i)
        if value is None:
            continue
        r = {
            "run_id": row.get("run_id"),
            "upstream": str(row["upstream"]),
            "task": str(row["task"]),
            "probe": str(row.get("probe") or ""),
            "regime": str(row.get("regime") or "frozen"),
            "seed": row.get("seed"),
            "dataset": str(row.get("dataset") or ""),
            "language": str(lang),
            "split": str(row.get("split") or ""),
            "metric": str(row["metric"]),
            "value": value,
            "higher_is_better": _direction(row, i),
            "primary_metric": row.get("primary_metric") or None,
        }
        dkey = (r["task"], r["dataset"], r["metric"])
        if dkey in directions and directions[dkey][0] != r["higher_is_better"]:
            raise ConfigError(
                f"score rows {directions[dkey][1]} and {i} disagree on higher_is_better for "
                f"task {dkey[0]!r} dataset {dkey[1]!r} metric {dkey[2]!r}"
            )
        directions.setdefault(dkey, (r["higher_is_better"], i))
        out.append(r)
    return out


_CELL = ("upstream", "task", "dataset", "probe", "regime", "split", "metric", "language")


def _seed_means(rows: list[dict]) -> dict[tuple, dict]:
    """Per cell (keyed by the _CELL fields): mean, std (ddof=1, None for one seed), n, seeds, direction."""
    by_cell: dict[tuple, dict] = defaultdict(dict)
    direction: dict[tuple, bool] = {}
    for r in rows:
        cell = tuple(r[k] for k in _CELL)
        seeds = by_cell[cell]
        if r["seed"] in seeds:
            desc = " ".join(f"{k}={v!r}" for k, v in zip(_CELL, cell))
            raise ConfigError(
                f"two score rows for the same cell and seed {r['seed']!r} ({desc}; run ids "
                f"{seeds[r['seed']][1]!r} and {r['run_id']!r}): filter the rows (e.g. by source) first"
            )
        seeds[r["seed"]] = (r["value"], r["run_id"])
        direction[cell] = r["higher_is_better"]
    out = {}
    for cell, seeds in by_cell.items():
        values = np.array([v for v, _ in seeds.values()], dtype=np.float64)
        out[cell] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if values.size > 1 else None,
            "n": int(values.size),
            "seeds": list(seeds),
            "higher_is_better": direction[cell],
        }
    return out


def _sort_key(v):
    """Sort None/mixed identity values (seeds, names) without TypeError."""
    return (v is not None, str(v))


def _plain(v):
    """numpy scalars (a seed read with numpy, say) as Python ones, so results stay JSON-safe."""
    return v.item() if isinstance(v, np.generic) else v


def _float(x) -> float | None:
    """A Python float, or None for None/NaN (JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


# --------------------------------------------------------------------------- leaderboard


def leaderboard(rows: Iterable[Mapping], task: str | None = None, metric: str | None = None) -> list[dict]:
    """Per (task, dataset, metric, probe, regime, split): upstreams ranked by their seed mean.

    Only overall rows (``language == ""``) are used. Each entry has ``task, dataset,
    metric, probe, regime, split, upstream, mean, std`` (ddof=1, None for one seed),
    ``n_seeds, seeds, rank`` (1 = best; ties share the best rank) and
    ``higher_is_better``. Groups are sorted by name, entries best first within a group.
    """
    cells = _seed_means(_normalise(rows, languages="overall", metric=metric, task=task))
    groups: dict[tuple, list[tuple[str, dict]]] = defaultdict(list)
    for cell, agg in cells.items():
        c = dict(zip(_CELL, cell))
        groups[(c["task"], c["dataset"], c["metric"], c["probe"], c["regime"], c["split"])].append((c["upstream"], agg))
    entries = []
    for gkey in sorted(groups):
        members = groups[gkey]
        hib = members[0][1]["higher_is_better"]
        means = np.array([agg["mean"] for _, agg in members])
        ranks = sps.rankdata(-means if hib else means, method="min").astype(int)
        group = []
        for (upstream, agg), rank in zip(members, ranks):
            group.append({
                "task": gkey[0], "dataset": gkey[1], "metric": gkey[2], "probe": gkey[3],
                "regime": gkey[4], "split": gkey[5], "upstream": upstream,
                "mean": agg["mean"], "std": agg["std"], "n_seeds": agg["n"],
                "seeds": sorted((_plain(x) for x in agg["seeds"]), key=_sort_key), "rank": int(rank),
                "higher_is_better": hib,
            })
        group.sort(key=lambda e: (e["rank"], e["upstream"]))
        entries.extend(group)
    return entries


# --------------------------------------------------------------------------- robustness


def _correlations(x: np.ndarray, y: np.ndarray) -> dict:
    """Pearson, Spearman and Kendall (tau-b) with p-values; None where undefined."""
    out = dict.fromkeys(("pearson", "pearson_p", "spearman", "spearman_p", "kendall", "kendall_p"))
    # A constant vector has no correlation; checking first keeps scipy from warning,
    # and the filter below catches the near-constant case it warns about too.
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sps.ConstantInputWarning)
        warnings.simplefilter("ignore", sps.NearConstantInputWarning)
        pr = sps.pearsonr(x, y)
        sr = sps.spearmanr(x, y)
        kt = sps.kendalltau(x, y)
    out["pearson"], out["pearson_p"] = _float(pr.statistic), _float(pr.pvalue)
    out["spearman"], out["spearman_p"] = _float(sr.statistic), _float(sr.pvalue)
    out["kendall"], out["kendall_p"] = _float(kt.statistic), _float(kt.pvalue)
    return out


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each row of ``a`` with the same row of ``b`` (rows must not be constant)."""
    ac = a - a.mean(axis=1, keepdims=True)
    bc = b - b.mean(axis=1, keepdims=True)
    r = (ac * bc).sum(axis=1) / np.sqrt((ac * ac).sum(axis=1) * (bc * bc).sum(axis=1))
    return np.clip(r, -1.0, 1.0)


def _bootstrap_ci(x: np.ndarray, y: np.ndarray, n_boot: int, seed: int, ci: float) -> tuple:
    """Percentile CIs ``([lo, hi] | None, [lo, hi] | None, resamples used)`` for Pearson and Spearman."""
    if n_boot <= 0:
        return None, None, 0
    # A fresh generator per pair: a pair's interval depends only on its own data and the
    # seed, not on which other groups happen to be in the rows or in what order.
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    xs, ys = x[idx], y[idx]
    ok = (np.ptp(xs, axis=1) > 0) & (np.ptp(ys, axis=1) > 0)
    if not ok.any():
        return None, None, 0
    xs, ys = xs[ok], ys[ok]
    pear = _rowwise_pearson(xs, ys)
    spear = _rowwise_pearson(sps.rankdata(xs, axis=1), sps.rankdata(ys, axis=1))
    q = [100 * (1 - ci) / 2, 100 * (1 + ci) / 2]
    return ([float(v) for v in np.percentile(pear, q)], [float(v) for v in np.percentile(spear, q)], int(ok.sum()))


def _diff_pct(mean_a: float, mean_b: float, higher_is_better: bool) -> float | None:
    """B's relative improvement over A in percent (positive = B better), None if mean_a is 0."""
    if mean_a == 0:
        return None
    gain = mean_b - mean_a if higher_is_better else mean_a - mean_b
    # |mean_a| keeps "positive = B better" for the rare metric that can be negative; for
    # the usual positive metrics it is the paper's formula.
    return float(gain / abs(mean_a) * 100)


def _pair_specs(pairs) -> list[dict]:
    """``pairs`` as a list of dicts with probe_a, probe_b and optional group filters."""
    specs = []
    for item in pairs:
        if isinstance(item, Mapping):
            spec = dict(item)
            unknown = set(spec) - {"probe_a", "probe_b", "task", "dataset", "metric", "regime", "split"}
            if unknown:
                raise ConfigError(f"pair {item!r} has unknown keys {sorted(unknown)}")
        elif isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2:
            spec = {"probe_a": item[0], "probe_b": item[1]}
        else:
            raise ConfigError(f"a pair is (probe_a, probe_b) or a dict with probe_a, probe_b and filters; got {item!r}")
        if not spec.get("probe_a") or not spec.get("probe_b") or spec["probe_a"] == spec["probe_b"]:
            raise ConfigError(f"pair {item!r} needs two different probes probe_a and probe_b")
        specs.append(spec)
    return specs


def _probe_groups(cells: dict[tuple, dict]) -> tuple[dict[tuple, dict[str, dict[str, float]]], dict[tuple, bool]]:
    """Seed-mean cells as ``(task, dataset, metric, regime, split) -> probe -> upstream -> mean``,
    plus each group's direction (higher is better)."""
    groups: dict[tuple, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    direction: dict[tuple, bool] = {}
    for cell, agg in cells.items():
        c = dict(zip(_CELL, cell))
        gkey = (c["task"], c["dataset"], c["metric"], c["regime"], c["split"])
        groups[gkey][c["probe"]][c["upstream"]] = agg["mean"]
        direction[gkey] = agg["higher_is_better"]
    return groups, direction


def robustness(
    rows: Iterable[Mapping],
    metric: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    pairs: Sequence | None = None,
    skipped: list | None = None,
) -> list[dict]:
    """Rank robustness between probe families (seed 002's Table 2), one dict per probe pair.

    Groups are (task, dataset, metric, regime, split) over overall rows; ``metric``
    restricts to one metric (default: every metric present). Within a group the seed
    means of each (upstream, probe) are compared between two probes over the upstreams
    scored with both; pairs with fewer than 3 such upstreams are skipped (and appended
    to ``skipped``, if a list is given, with their ``n`` and a ``reason``).

    Without ``pairs``, every pair of probes in a group is compared with probe_a < probe_b
    by name, groups and pairs in sorted order. ``pairs`` fixes which pairs, in which
    order and which way round: each item is ``(probe_a, probe_b)`` (every group holding
    both) or a dict with ``probe_a``, ``probe_b`` and any of ``task, dataset, metric,
    regime, split`` as filters; results follow the order of ``pairs``, groups within an
    item in sorted order. An item that matches no group is an error.

    Keys of each result: ``task, dataset, metric, regime, split, probe_a, probe_b, n,
    upstreams, pearson, pearson_p, pearson_ci, spearman, spearman_p, spearman_ci,
    kendall, kendall_p, mean_a, mean_b, diff_pct, higher_is_better`` and ``values_a,
    values_b`` (the seed means, in the order of ``upstreams``), ``ci, n_boot,
    n_boot_used``. Correlations of a constant vector are None; CIs are None when
    ``n_boot`` is 0 or no resample had variance in both vectors. ``diff_pct`` is B's
    relative improvement over A in percent (positive = B better; see module docstring).
    """
    if not isinstance(n_boot, int) or n_boot < 0:
        raise ConfigError(f"n_boot must be an integer >= 0, got {n_boot!r}")
    if not 0 < ci < 1:
        raise ConfigError(f"ci must be a confidence level in (0, 1), got {ci!r}")
    cells = _seed_means(_normalise(rows, languages="overall", metric=metric))
    groups, direction = _probe_groups(cells)

    todo: list[tuple[tuple, str, str]] = []
    if pairs is None:
        for gkey in sorted(groups):
            probes = sorted(groups[gkey])
            todo += [(gkey, a, b) for i, a in enumerate(probes) for b in probes[i + 1:]]
    else:
        fields = ("task", "dataset", "metric", "regime", "split")
        for spec in _pair_specs(pairs):
            matched = [
                g for g in sorted(groups)
                if all(spec[f] == g[k] for k, f in enumerate(fields) if f in spec)
                and spec["probe_a"] in groups[g] and spec["probe_b"] in groups[g]
            ]
            if not matched:
                raise ConfigError(f"pair {spec!r} matches no group that has both probes; groups: {sorted(groups)}")
            todo += [(g, spec["probe_a"], spec["probe_b"]) for g in matched]

    results = []
    for gkey, pa, pb in todo:
        task, dataset, metric_name, regime, split = gkey
        a, b = groups[gkey][pa], groups[gkey][pb]
        upstreams = sorted(set(a) & set(b))
        if len(upstreams) < 3:
            note = {"task": task, "dataset": dataset, "metric": metric_name, "regime": regime, "split": split,
                    "probe_a": pa, "probe_b": pb, "n": len(upstreams), "reason": "fewer than 3 common upstreams"}
            log.info("robustness: skipped %s", note)
            if skipped is not None:
                skipped.append(note)
            continue
        x = np.array([a[u] for u in upstreams])
        y = np.array([b[u] for u in upstreams])
        hib = direction[gkey]
        pearson_ci, spearman_ci, used = _bootstrap_ci(x, y, n_boot, seed, ci)
        corr = _correlations(x, y)
        mean_a, mean_b = float(x.mean()), float(y.mean())
        results.append({
            "task": task, "dataset": dataset, "metric": metric_name, "regime": regime, "split": split,
            "probe_a": pa, "probe_b": pb, "n": len(upstreams), "upstreams": upstreams,
            "pearson": corr["pearson"], "pearson_p": corr["pearson_p"], "pearson_ci": pearson_ci,
            "spearman": corr["spearman"], "spearman_p": corr["spearman_p"], "spearman_ci": spearman_ci,
            "kendall": corr["kendall"], "kendall_p": corr["kendall_p"],
            "mean_a": mean_a, "mean_b": mean_b, "diff_pct": _diff_pct(mean_a, mean_b, hib),
            "higher_is_better": hib,
            "values_a": [float(v) for v in x], "values_b": [float(v) for v in y],
            "ci": ci, "n_boot": n_boot, "n_boot_used": used,
        })
    return results


# --------------------------------------------------------------------------- consensus

CONSENSUS_METHODS = ("borda", "mean_rank")


def _comparable_core(scores: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """The largest part of ``{probe: {upstream: score}}`` in which every upstream is scored by
    >= 2 probes and every probe scores >= 2 upstreams.

    Dropping a probe can leave an upstream with one probe (and the other way round), so the
    two rules are applied until nothing changes; the result does not depend on the order.
    """
    kept = {probe: dict(by_upstream) for probe, by_upstream in scores.items()}
    while True:
        probes_per_upstream = Counter(u for by_upstream in kept.values() for u in by_upstream)
        trimmed = {probe: {u: v for u, v in by_upstream.items() if probes_per_upstream[u] >= 2}
                   for probe, by_upstream in kept.items()}
        trimmed = {probe: by_upstream for probe, by_upstream in trimmed.items() if len(by_upstream) >= 2}
        if trimmed == kept:
            return kept
        kept = trimmed


def _ranks_within_probe(by_upstream: Mapping[str, float], higher_is_better: bool) -> dict[str, float]:
    """Rank 1 = best score; tied upstreams share the mean of their ranks (1, 2.5, 2.5, 4)."""
    names = sorted(by_upstream)
    values = np.array([by_upstream[u] for u in names])
    ranks = sps.rankdata(-values if higher_is_better else values, method="average")
    return {u: float(r) for u, r in zip(names, ranks)}


def _rank_agreement(ranks_a: Mapping[str, float], ranks_b: Mapping[str, float]) -> dict:
    """How alike two probes order the upstreams both of them scored.

    ``agree`` is True when the orderings are identical (ties included: a tie under one probe
    that the other breaks is a disagreement); None, like the correlations, with fewer than
    2 common upstreams. Kendall tau-b and Spearman rho are None when a probe ties them all.
    """
    common = sorted(set(ranks_a) & set(ranks_b))
    out = {"n": len(common), "agree": None, "kendall": None, "spearman": None}
    if len(common) < 2:
        return out
    # Re-ranked among the common upstreams, so that an upstream only one probe scored
    # cannot make two identical orderings look different.
    x = sps.rankdata([ranks_a[u] for u in common])
    y = sps.rankdata([ranks_b[u] for u in common])
    out["agree"] = bool(np.array_equal(x, y))
    if np.ptp(x) > 0 and np.ptp(y) > 0:
        with warnings.catch_warnings():
            # Two upstreams give rho = +-1 with an undefined p-value, which we do not use.
            warnings.simplefilter("ignore", RuntimeWarning)
            out["kendall"] = _float(sps.kendalltau(x, y).statistic)
            out["spearman"] = _float(sps.spearmanr(x, y).statistic)
    return out


def _mean_or_none(values: Iterable[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def consensus(
    rows: Iterable[Mapping],
    task: str | None = None,
    method: str = "borda",
    metric: str | None = None,
    skipped: list | None = None,
) -> list[dict]:
    """Consensus ranking of the upstreams over probe families, one dict per group.

    Groups are (task, dataset, metric, regime, split) over overall rows, on each task's
    primary metric (the one its runs recorded, else the first of :data:`PRIMARY_METRIC_ORDER`
    present, else the first by name; ``metric`` fixes it for every task; ``task`` keeps one task). Per group, the seed mean of every
    (upstream, probe) is taken, then only the upstreams scored by >= 2 probes and the
    probes scoring >= 2 of those upstreams are kept (repeated until both hold; the rest is
    listed in ``dropped_upstreams``/``dropped_probes``). Each probe ranks the upstreams it
    scored, direction-aware (1 = best, ties get their mean rank); an upstream a probe did
    not score is left out of that probe's ranking, and such cells are counted in
    ``n_missing`` and listed in ``missing`` as ``[upstream, probe]``.

    ``method`` aggregates the per-probe ranks of an upstream:

    * ``"borda"``: Borda count, the sum over probes of ``n_p - rank`` points (``n_p`` =
      upstreams the probe ranked, so the best gets ``n_p - 1`` and the worst 0; a missing
      cell scores 0); higher is better;
    * ``"mean_rank"``: the mean of its ranks over the probes that scored it; lower is better.

    Each result: ``task, dataset, metric, regime, split, higher_is_better, method,
    probes`` (sorted), ``n_probes, n_upstreams, ranking`` (best first: ``upstream, rank``
    (1 = best; ties share the best rank), ``aggregate``, ``ranks`` {probe: rank or None},
    ``n_probes``), ``n_missing, missing, dropped_upstreams, dropped_probes``, ``pairs``
    (every probe pair by name: ``probe_a, probe_b, n`` common upstreams, ``agree, kendall,
    spearman``), ``n_pairs``, ``n_pairs_compared`` (pairs with >= 2 common upstreams),
    ``n_pairs_agree`` (identical orderings), ``mean_kendall, mean_spearman`` (over the
    pairs where defined; None if none). Groups left with < 2 probes are not returned and
    are appended to ``skipped`` (if a list is given) with a ``reason``.
    """
    if method not in CONSENSUS_METHODS:
        raise ConfigError(f"unknown consensus method {method!r}; choose one of {', '.join(CONSENSUS_METHODS)}")
    flat = _normalise(rows, languages="overall", task=task, metric=metric)
    present, recorded = _task_metrics(flat)
    primary = {name: _primary_metric(name, metrics, None, recorded[name]) for name, metrics in present.items()}
    cells = _seed_means([r for r in flat if r["metric"] == primary[r["task"]]])
    groups, direction = _probe_groups(cells)

    results = []
    for gkey in sorted(groups):
        task_name, dataset, metric_name, regime, split = gkey
        hib = direction[gkey]
        core = _comparable_core(groups[gkey])
        all_upstreams = {u for by_upstream in groups[gkey].values() for u in by_upstream}
        upstreams = sorted({u for by_upstream in core.values() for u in by_upstream})
        probes = sorted(core)
        if len(probes) < 2:
            note = {"task": task_name, "dataset": dataset, "metric": metric_name, "regime": regime, "split": split,
                    "reason": "fewer than 2 probes scoring at least 2 common upstreams"}
            log.info("consensus: skipped %s", note)
            if skipped is not None:
                skipped.append(note)
            continue
        ranks = {probe: _ranks_within_probe(core[probe], hib) for probe in probes}
        aggregate = {}
        for u in upstreams:
            mine = {probe: ranks[probe][u] for probe in probes if u in ranks[probe]}
            if method == "borda":
                aggregate[u] = float(sum(len(ranks[probe]) - rank for probe, rank in mine.items()))
            else:
                aggregate[u] = float(np.mean(list(mine.values())))
        # Rounded before ranking so that float noise in a mean cannot split a true tie.
        keyed = np.round(np.array([aggregate[u] for u in upstreams]), 9)
        order = sps.rankdata(-keyed if method == "borda" else keyed, method="min").astype(int)
        ranking = [{"upstream": u, "rank": int(rank), "aggregate": aggregate[u],
                    "ranks": {probe: ranks[probe].get(u) for probe in probes},
                    "n_probes": sum(u in ranks[probe] for probe in probes)}
                   for u, rank in zip(upstreams, order)]
        ranking.sort(key=lambda e: (e["rank"], e["upstream"]))
        missing = [[u, probe] for u in upstreams for probe in probes if u not in ranks[probe]]
        pairs = [{"probe_a": a, "probe_b": b, **_rank_agreement(ranks[a], ranks[b])}
                 for i, a in enumerate(probes) for b in probes[i + 1:]]
        compared = [p for p in pairs if p["agree"] is not None]
        results.append({
            "task": task_name, "dataset": dataset, "metric": metric_name, "regime": regime, "split": split,
            "higher_is_better": hib, "method": method, "probes": probes,
            "n_probes": len(probes), "n_upstreams": len(upstreams), "ranking": ranking,
            "n_missing": len(missing), "missing": missing,
            "dropped_upstreams": sorted(all_upstreams - set(upstreams)),
            "dropped_probes": sorted(set(groups[gkey]) - set(probes)),
            "pairs": pairs, "n_pairs": len(pairs), "n_pairs_compared": len(compared),
            "n_pairs_agree": sum(p["agree"] for p in compared),
            "mean_kendall": _mean_or_none(p["kendall"] for p in pairs),
            "mean_spearman": _mean_or_none(p["spearman"] for p in pairs),
        })
    return results


# --------------------------------------------------------------------------- formatting


def _check_format(fmt: str) -> None:
    if fmt not in _FORMATS:
        raise ConfigError(f"unknown table format {fmt!r}; choose one of {', '.join(_FORMATS)}")


def _num(v: float | None) -> str:
    """A score with four significant digits (enough for WERs, accuracies and fractions)."""
    if v is None:
        return "–"
    if abs(v) >= 1e4:
        return f"{v:.0f}"
    return f"{v:.4g}"


def _corr(v: float | None, interval: list | None) -> str:
    if v is None:
        return "–"
    if interval is None:
        return f"{v:.2f}"
    return f"{v:.2f} [{interval[0]:.2f}, {interval[1]:.2f}]"


def _pval(p: float | None) -> str:
    if p is None:
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _task_label(task: str, dataset: str, metric: str, regime: str, split: str) -> str:
    label = f"{task}/{dataset}" if dataset else task
    extras = [metric] + ([regime] if regime != "frozen" else []) + ([split] if split not in ("", "test") else [])
    return f"{label} ({', '.join(extras)})"


def format_robustness(results: Sequence[Mapping], fmt: str, caption: str | None = None, label: str | None = None) -> str:
    """:func:`robustness` results as ``md`` (Markdown table), ``json`` or ``tex`` (booktabs).

    Columns: Task, Probes (A → B), n, Pearson [CI], p, Spearman [CI], p, Kendall, Mean A,
    Mean B, Diff % (B's relative improvement over A). ``caption``/``label`` apply to tex.
    """
    _check_format(fmt)
    results = list(results)
    if fmt == "json":
        return json.dumps(results, indent=2)
    headers = ["Task", "Probes", "n", "Pearson [CI]", "p", "Spearman [CI]", "p", "Kendall", "Mean A", "Mean B", "Diff %"]
    body = [[
        _task_label(r["task"], r["dataset"], r["metric"], r["regime"], r.get("split", "")),
        f"{r['probe_a']} → {r['probe_b']}",
        str(r["n"]),
        _corr(r["pearson"], r["pearson_ci"]), _pval(r["pearson_p"]),
        _corr(r["spearman"], r["spearman_ci"]), _pval(r["spearman_p"]),
        _corr(r["kendall"], None),
        _num(r["mean_a"]), _num(r["mean_b"]),
        "–" if r["diff_pct"] is None else f"{r['diff_pct']:+.1f}",
    ] for r in results]
    align = ["l", "l"] + ["r"] * 9
    if fmt == "md":
        return markdown_table(headers, body, align=align)
    return latex_table(headers, body, caption=caption, label=label, align=align)


def format_leaderboard(entries: Sequence[Mapping], fmt: str, caption: str | None = None, label: str | None = None) -> str:
    """:func:`leaderboard` entries as ``md`` (Markdown table), ``json`` or ``tex`` (booktabs).

    Columns: Task, Probe, Regime, Rank, Upstream, Mean, Std, Seeds; the Task cell names
    the dataset and the metric with its direction (↓ lower is better, ↑ higher).
    """
    _check_format(fmt)
    entries = list(entries)
    if fmt == "json":
        return json.dumps(entries, indent=2)
    headers = ["Task", "Probe", "Regime", "Rank", "Upstream", "Mean", "Std", "Seeds"]
    body = [[
        _task_label(e["task"], e["dataset"], e["metric"] + (" ↑" if e["higher_is_better"] else " ↓"), "frozen", e.get("split", "")),
        e["probe"], e["regime"], str(e["rank"]), e["upstream"], _num(e["mean"]), _num(e["std"]), str(e["n_seeds"]),
    ] for e in entries]
    align = ["l", "l", "l", "r", "l", "r", "r", "r"]
    if fmt == "md":
        return markdown_table(headers, body, align=align)
    return latex_table(headers, body, caption=caption, label=label, align=align)


# --------------------------------------------------------------------------- multilingual


def split_subset(split: str) -> tuple[str, str]:
    """``("test", "clean")`` for a score row's split ``"test@clean"``: the part of a test set
    from one evaluation dataset (a multilingual run trained on several datasets scores each
    one); ``(split, "")`` for a plain split."""
    base, _, subset = split.partition("@")
    return base, subset


def multilingual(rows: Iterable[Mapping], metric: str = "cer", worst_n: int = 3) -> list[dict]:
    """ML-SUPERB 2.0 aggregates per (upstream, task, probe, regime, split, training data)
    over per-language rows (:mod:`speechssl.benchmark.mlsuperb` has the definitions).

    Uses rows with ``language != ""`` and the given metric; seeds are averaged first. The
    datasets of a language come from one of two layouts:

    * one run scored per evaluation dataset: rows with split ``test@<dataset>`` carry the
      per-(language, dataset) scores and the run's plain ``test`` rows the per-language
      scores over all its datasets; the run's ``dataset`` is its training data
      (``train_data``), so runs trained on different data (few-shot sizes) stay apart;
    * one run per dataset (rows imported from elsewhere): the run's ``dataset`` is the
      evaluation dataset and a language's score is the mean over its datasets
      (``train_data`` is "").

    Each entry has ``macro`` (mean over languages), ``std`` (sample std across languages,
    ddof=1 as ML-SUPERB's ``statistics.stdev``; None for one language), ``worst_n``,
    ``worst_mean``, ``worst_languages`` (the mean of the N worst languages by direction,
    all of them when fewer than N), ``per_language`` {language: score}, ``per_dataset``
    {language: {dataset: score}}, ``dataset_range`` {language: max - min over its datasets}
    for languages on >= 2 datasets, ``max_dataset_range`` and its language (None if none),
    ``n_languages``, ``n_datasets``, ``metric``, ``higher_is_better``.
    """
    if not isinstance(worst_n, int) or worst_n < 1:
        raise ConfigError(f"worst_n must be an integer >= 1, got {worst_n!r}")
    flat = _normalise(rows, languages="per_language", metric=metric)
    # Runs scored per evaluation dataset: (upstream, task, probe, regime, split, run dataset).
    split_runs = set()
    for r in flat:
        base, subset = split_subset(r["split"])
        if subset:
            r["split"] = base
            r["dataset"] = (r["dataset"], subset)  # a tuple keeps the subset in the seed-mean cell
            split_runs.add((r["upstream"], r["task"], r["probe"], r["regime"], base, r["dataset"][0]))
    cells = _seed_means(flat)
    # group -> language -> dataset -> score, and group -> language -> pooled score
    per_dataset_of: dict[tuple, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    pooled_of: dict[tuple, dict[str, float]] = defaultdict(dict)
    direction: dict[tuple, bool] = {}
    for cell, agg in cells.items():
        c = dict(zip(_CELL, cell))
        ident = (c["upstream"], c["task"], c["probe"], c["regime"], c["split"])
        if isinstance(c["dataset"], tuple):
            gkey = (*ident, c["dataset"][0])
            per_dataset_of[gkey][c["language"]][c["dataset"][1]] = agg["mean"]
        elif (*ident, c["dataset"]) in split_runs:
            gkey = (*ident, c["dataset"])
            pooled_of[gkey][c["language"]] = agg["mean"]
        else:
            gkey = (*ident, "")
            per_dataset_of[gkey][c["language"]][c["dataset"]] = agg["mean"]
        if gkey in direction and direction[gkey] != agg["higher_is_better"]:
            raise ConfigError(f"datasets of {gkey} disagree on the direction of metric {metric!r}")
        direction[gkey] = agg["higher_is_better"]
    out = []
    for gkey in sorted(direction):
        hib = direction[gkey]
        per_dataset = {lang: dict(sorted(ds.items())) for lang, ds in sorted(per_dataset_of[gkey].items())}
        per_language = dict(sorted(pooled_of[gkey].items())) or {
            lang: float(np.mean(list(ds.values()))) for lang, ds in per_dataset.items()}
        summary = spread(per_language, worst_n=worst_n, higher_is_better=hib)
        ranges = {lang: float(max(ds.values()) - min(ds.values())) for lang, ds in per_dataset.items() if len(ds) >= 2}
        widest = max(ranges, key=lambda lang: (ranges[lang], lang), default=None)
        out.append({
            "upstream": gkey[0], "task": gkey[1], "probe": gkey[2], "regime": gkey[3], "split": gkey[4],
            "train_data": gkey[5], "metric": metric, "higher_is_better": hib,
            "n_languages": len(per_language),
            "n_datasets": len({ds for dss in per_dataset.values() for ds in dss}),
            "macro": summary["macro"], "std": summary["std"],
            "worst_n": worst_n, "worst_mean": summary["worst_mean"], "worst_languages": summary["worst_languages"],
            "per_language": per_language, "per_dataset": per_dataset,
            "dataset_range": ranges,
            "max_dataset_range": ranges[widest] if widest is not None else None,
            "max_dataset_range_language": widest,
        })
    return out


def lid_accuracy(rows: Iterable[Mapping], task: str = "lid", metric: str = "accuracy") -> list[dict]:
    """Overall language-identification accuracy per (upstream, probe, regime, split, dataset).

    The seed mean of the overall rows of ``task``/``metric``; entries carry ``accuracy``,
    ``std`` (ddof=1, None for one seed) and ``n_seeds``, sorted by upstream.
    """
    cells = _seed_means(_normalise(rows, languages="overall", metric=metric, task=task))
    out = []
    for cell, agg in sorted(cells.items()):
        c = dict(zip(_CELL, cell))
        out.append({"upstream": c["upstream"], "probe": c["probe"], "regime": c["regime"], "split": c["split"],
                    "dataset": c["dataset"], "accuracy": agg["mean"], "std": agg["std"], "n_seeds": agg["n"]})
    return out


def per_language_cer(pairs: Iterable[tuple[str, str, str]]) -> dict[str, dict]:
    """Character error rate per language from ``(language, reference, hypothesis)`` triples.

    Corpus-level per language: the sum of character edit distances over the sum of
    reference characters (spaces count, as in ``jiwer.cer``; normalise text beforehand).
    An empty hypothesis costs one deletion per reference character (CER 1.0 for that
    utterance); an empty reference is a ConfigError (its CER is undefined). Returns
    ``{language: {"cer", "edits", "ref_chars", "utterances"}}`` sorted by language.
    """
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for i, item in enumerate(pairs):
        try:
            lang, ref, hyp = item
        except (TypeError, ValueError):
            raise ConfigError(f"pair {i} is not a (language, reference, hypothesis) triple: {item!r}") from None
        if not isinstance(ref, str) or not isinstance(hyp, str):
            raise ConfigError(f"pair {i} ({lang!r}): reference and hypothesis must be strings")
        if not ref:
            raise ConfigError(f"pair {i} ({lang!r}) has an empty reference; CER is undefined for it")
        t = totals[str(lang)]
        t[0] += edit_distance(ref, hyp)
        t[1] += len(ref)
        t[2] += 1
    return {lang: {"cer": t[0] / t[1], "edits": t[0], "ref_chars": t[1], "utterances": t[2]}
            for lang, t in sorted(totals.items())}


# --------------------------------------------------------------------------- normalised score


def _task_metrics(flat: list[dict]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Per task: the metrics its rows report, and the primary metrics its runs recorded."""
    present: dict[str, set[str]] = defaultdict(set)
    recorded: dict[str, set[str]] = defaultdict(set)
    for r in flat:
        present[r["task"]].add(r["metric"])
        if r["primary_metric"]:
            recorded[r["task"]].add(r["primary_metric"])
    return present, recorded


def _primary_metric(task: str, present: set[str], metrics: Mapping | None, recorded: set[str] = frozenset()) -> str:
    """The metric to rank ``task`` on: the one asked for, else the primary metric its runs
    recorded (bench results name it), else the first of PRIMARY_METRIC_ORDER it reports."""
    if metrics and task in metrics:
        if metrics[task] not in present:
            raise ConfigError(f"metric {metrics[task]!r} given for task {task!r} has no rows; it has {sorted(present)}")
        return metrics[task]
    named = sorted(recorded & present)
    if len(named) == 1:
        return named[0]
    for name in PRIMARY_METRIC_ORDER:
        if name in present:
            return name
    return sorted(present)[0]


def normalised_score(
    rows: Iterable[Mapping],
    baseline: str = "mfcc",
    tasks: Sequence[str] | None = None,
    metrics: Mapping[str, str] | None = None,
    probe: str | Mapping[str, str] | None = None,
    regime: str = "frozen",
    skipped: list | None = None,
) -> list[dict]:
    """SUPERB-style normalised score per upstream: 0 = ``baseline``, 1000 = best upstream.

    The unit is a (task, dataset, split) of the overall rows of one ``regime``, scored on
    the task's primary metric: ``metrics[task]`` if given, else the one its runs recorded,
    else the first present in :data:`PRIMARY_METRIC_ORDER`, else the alphabetically first. An upstream's score on a
    unit is its seed mean with its best probe, or with ``probe`` (a name, or
    {task: name}) when given. Then per unit
    ``1000 * (s - s_baseline) / (s_best - s_baseline)``, with s_best the best upstream
    (by direction), and the mean over the upstream's units. Units without the baseline,
    or where the baseline is the best (no scale), are left out and noted in ``skipped``
    (if a list is given). Scores average only the units an upstream has: compare
    upstreams whose ``missing`` list is empty.

    Each entry: ``upstream, score, n_tasks, tasks`` {unit: normalised}, ``raw`` {unit:
    score}, ``probes`` {unit: probe used}, ``missing`` [units without a score]; sorted
    best first (upstreams with no unit last, score None).
    """
    flat = _normalise(rows, languages="overall", task=tasks)
    if tasks is not None:
        absent = set(tasks) - {r["task"] for r in flat}
        if absent:
            raise ConfigError(f"no overall rows for task(s) {sorted(absent)}")
    flat = [r for r in flat if r["regime"] == regime]
    if not flat:
        raise ConfigError(f"no overall score rows with regime {regime!r}")
    if baseline not in {r["upstream"] for r in flat}:
        raise ConfigError(f"baseline upstream {baseline!r} has no rows; upstreams: {sorted({r['upstream'] for r in flat})}")
    present, recorded = _task_metrics(flat)
    chosen = {task: _primary_metric(task, names, metrics, recorded[task]) for task, names in present.items()}
    cells = _seed_means([r for r in flat if r["metric"] == chosen[r["task"]]])

    # unit -> upstream -> (score, probe), keeping the best probe unless one is fixed
    units: dict[str, dict[str, tuple[float, str]]] = defaultdict(dict)
    direction: dict[str, bool] = {}
    for cell, agg in cells.items():
        c = dict(zip(_CELL, cell))
        fixed = probe.get(c["task"]) if isinstance(probe, Mapping) else probe
        if fixed is not None and c["probe"] != fixed:
            continue
        unit = f"{c['task']}/{c['dataset']}" if c["dataset"] else c["task"]
        if c["split"] not in ("", "test"):
            unit += f"/{c['split']}"
        hib = agg["higher_is_better"]
        direction[unit] = hib
        old = units[unit].get(c["upstream"])
        better = old is None or (agg["mean"] > old[0] if hib else agg["mean"] < old[0])
        if better or (agg["mean"] == old[0] and c["probe"] < old[1]):
            units[unit][c["upstream"]] = (agg["mean"], c["probe"])

    normalised: dict[str, dict[str, float]] = {}
    for unit in sorted(units):
        scores = units[unit]
        hib = direction[unit]
        if baseline not in scores:
            note = {"unit": unit, "reason": f"baseline {baseline!r} has no score"}
        else:
            base = scores[baseline][0]
            best = (max if hib else min)(s for s, _ in scores.values())
            if best == base:
                note = {"unit": unit, "reason": f"baseline {baseline!r} is the best upstream, no scale"}
            else:
                normalised[unit] = {u: 1000.0 * (s - base) / (best - base) for u, (s, _) in scores.items()}
                continue
        log.info("normalised_score: skipped %s", note)
        if skipped is not None:
            skipped.append(note)

    upstreams = sorted({u for scores in units.values() for u in scores})
    out = []
    for u in upstreams:
        mine = {unit: norm[u] for unit, norm in normalised.items() if u in norm}
        out.append({
            "upstream": u,
            "score": float(np.mean(list(mine.values()))) if mine else None,
            "n_tasks": len(mine),
            "tasks": mine,
            "raw": {unit: units[unit][u][0] for unit in mine},
            "probes": {unit: units[unit][u][1] for unit in mine},
            "missing": [unit for unit in normalised if unit not in mine],
        })
    out.sort(key=lambda e: (e["score"] is None, -(e["score"] or 0.0), e["upstream"]))
    return out


# --------------------------------------------------------------------------- run selection


def run_identity(r: Mapping) -> tuple:
    """What makes two runs the same measurement: (upstream, task, probe, regime, dataset, seed)."""
    return (r["upstream"], r["task"], r.get("probe") or "", r.get("regime") or "frozen", r.get("dataset") or "",
            r.get("seed"))


def drop_superseded(rows: Iterable[Mapping], runs: Iterable[Mapping]) -> tuple[list[dict], dict[str, str]]:
    """Keep one run per identity (see :func:`run_identity`): the most recently updated.

    Two finished runs with one identity (a demo run and a longer run of the same seed,
    differing only in settings the identity does not name) cannot both be averaged as
    seeds, and the statistics refuse them. Keeps the newest run (then the larger run id);
    returns the kept rows and ``{dropped run_id: kept run_id}``.
    """
    rows = [dict(r) for r in rows]
    updated = {r["run_id"]: str(r.get("updated_at") or "") for r in runs}
    by_identity: dict[tuple, set[str]] = defaultdict(set)
    for r in rows:
        by_identity[run_identity(r)].add(r.get("run_id"))
    superseded: dict[str, str] = {}
    for run_ids in by_identity.values():
        if len(run_ids) > 1:
            ordered = sorted(run_ids, key=lambda rid: (updated.get(rid, ""), str(rid)))
            superseded.update({rid: ordered[-1] for rid in ordered[:-1]})
    return [r for r in rows if r.get("run_id") not in superseded], superseded


# --------------------------------------------------------------------------- formatting (more)


def format_multilingual(entries: Sequence[Mapping], fmt: str, caption: str | None = None,
                        label: str | None = None) -> str:
    """:func:`multilingual` entries: macro average, std across languages, worst-N, dataset range."""
    _check_format(fmt)
    entries = list(entries)
    if fmt == "json":
        return json.dumps(entries, indent=2)
    headers = ["Upstream", "Task", "Probe", "Regime", "Trained on", "Split", "Languages", "Macro", "Std",
               "Worst-N mean", "Worst languages", "Max dataset range"]
    body = [[
        e["upstream"], e["task"], e["probe"], e["regime"], e.get("train_data") or "–", e["split"],
        str(e["n_languages"]), _num(e["macro"]), _num(e["std"]),
        f"{_num(e['worst_mean'])} (N={e['worst_n']})", ", ".join(e["worst_languages"]),
        "–" if e["max_dataset_range"] is None else f"{_num(e['max_dataset_range'])} ({e['max_dataset_range_language']})",
    ] for e in entries]
    align = ["l", "l", "l", "l", "l", "l", "r", "r", "r", "r", "l", "r"]
    if fmt == "md":
        return markdown_table(headers, body, align=align)
    return latex_table(headers, body, caption=caption, label=label, align=align)


def format_normalised(entries: Sequence[Mapping], fmt: str, caption: str | None = None,
                      label: str | None = None) -> str:
    """:func:`normalised_score` entries: the overall score and each task's normalised score."""
    _check_format(fmt)
    entries = list(entries)
    if fmt == "json":
        return json.dumps(entries, indent=2)
    units = sorted({u for e in entries for u in e["tasks"]})
    headers = ["Upstream", "Score", *units]
    body = [[e["upstream"], str(round(e["score"])),  # round(): no "-0"
             *("–" if e["tasks"].get(u) is None else str(round(e["tasks"][u])) for u in units)] for e in entries]
    align = ["l", "r", *("r" for _ in units)]
    if fmt == "md":
        return markdown_table(headers, body, align=align)
    return latex_table(headers, body, caption=caption, label=label, align=align)


# The brief's long names are accepted too, next to the short ones the other tables use.
_CONSENSUS_FORMATS = {"md": "md", "markdown": "md", "json": "json", "tex": "tex", "latex": "tex", "csv": "csv"}
_AGGREGATE_HEADERS = {"borda": "Borda", "mean_rank": "Mean rank"}


def _rank_text(rank: float | None) -> str:
    """A rank as printed: 2, or 2.5 for a tie (mean ranks of ties are whole or halves); "–" when missing."""
    return "–" if rank is None else f"{rank:g}"


def _consensus_csv(entries: list[dict]) -> str:
    """One line per (group, upstream), group statistics repeated, a ``rank_<probe>`` column per probe."""
    probes = sorted({probe for e in entries for probe in e["probes"]})
    group_fields = ["task", "dataset", "metric", "regime", "split", "higher_is_better", "method", "n_probes",
                    "n_upstreams", "n_missing", "n_pairs", "n_pairs_compared", "n_pairs_agree", "mean_kendall",
                    "mean_spearman"]
    fields = group_fields + ["rank", "upstream", "aggregate"] + [f"rank_{probe}" for probe in probes]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for e in entries:
        for member in e["ranking"]:
            line = {f: e[f] for f in group_fields}
            line.update(rank=member["rank"], upstream=member["upstream"], aggregate=member["aggregate"])
            line.update({f"rank_{probe}": rank for probe, rank in member["ranks"].items()})
            writer.writerow({k: "" if v is None else v for k, v in line.items()})
    return buf.getvalue().rstrip("\n")


def format_consensus(entries: Sequence[Mapping], fmt: str, caption: str | None = None,
                     label: str | None = None) -> str:
    """:func:`consensus` results as ``md``/``markdown``, ``json``, ``tex``/``latex`` or ``csv``.

    md and tex: one line per upstream, best first, with the group's statistics on its
    first line: Task, Probes, Agree (pairs with identical orderings / pairs compared),
    Kendall and Spearman (means over probe pairs), Missing ((upstream, probe) cells
    without a score / all cells), then Rank, Upstream, the aggregate (Borda points or
    mean rank) and each probe's rank. csv: a flat table, one line per (group, upstream).
    ``caption``/``label`` apply to tex.
    """
    if fmt not in _CONSENSUS_FORMATS:
        raise ConfigError(f"unknown table format {fmt!r}; choose one of {', '.join(_CONSENSUS_FORMATS)}")
    fmt = _CONSENSUS_FORMATS[fmt]
    entries = [dict(e) for e in entries]
    if fmt == "json":
        return json.dumps(entries, indent=2)
    if fmt == "csv":
        return _consensus_csv(entries)
    methods = {e["method"] for e in entries}
    aggregate_header = _AGGREGATE_HEADERS[methods.pop()] if len(methods) == 1 else "Aggregate"
    headers = ["Task", "Probes", "Agree", "Kendall", "Spearman", "Missing", "Rank", "Upstream", aggregate_header,
               "Ranks per probe"]
    body = []
    for e in entries:
        arrow = " ↑" if e["higher_is_better"] else " ↓"
        group = [
            _task_label(e["task"], e["dataset"], e["metric"] + arrow, e["regime"], e.get("split", "")),
            str(e["n_probes"]), f"{e['n_pairs_agree']}/{e['n_pairs_compared']}",
            _corr(e["mean_kendall"], None), _corr(e["mean_spearman"], None),
            f"{e['n_missing']}/{e['n_probes'] * e['n_upstreams']}",
        ]
        for i, member in enumerate(e["ranking"]):
            per_probe = ", ".join(f"{probe} {_rank_text(rank)}" for probe, rank in member["ranks"].items())
            # The group's columns only on its first line, as a leaderboard names its task once.
            body.append((group if i == 0 else [""] * len(group))
                        + [str(member["rank"]), member["upstream"], _num(member["aggregate"]), per_probe])
    align = ["l", "r", "r", "r", "r", "r", "r", "l", "r", "l"]
    if fmt == "md":
        return markdown_table(headers, body, align=align)
    return latex_table(headers, body, caption=caption, label=label, align=align)
