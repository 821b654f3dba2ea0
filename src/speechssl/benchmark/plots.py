"""Report figures as PNG bytes, drawn from plain data.

Every function takes lists/dicts of numbers and names (no store, no rows) and returns the
bytes of a small PNG (``DPI`` dots per inch), ready to be written to a file or embedded in
HTML as a ``data:`` URI. Figures are built on :class:`matplotlib.figure.Figure` with an
explicit Agg canvas: pyplot is never imported, no global backend is switched and no figure
registry is touched, so these functions are safe to call from threads and from processes
that use matplotlib for other things. The same inputs give the same bytes (no timestamps in
the PNG metadata).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from speechssl.extras import require

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Colour-blind-safe qualitative palette (Okabe–Ito), then matplotlib's tab10 past eight series.
_PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]


def _colour(i: int) -> str:
    if i < len(_PALETTE):
        return _PALETTE[i]
    from matplotlib import colormaps

    r, g, b, _ = colormaps["tab10"](i % 10)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def _figure(width: float, height: float) -> Figure:
    # matplotlib is the [report] extra: imported when the first figure is drawn.
    figure = require("matplotlib.figure", "report figures", extra="report")
    agg = require("matplotlib.backends.backend_agg", "report figures", extra="report")
    fig = figure.Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    agg.FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    # metadata Software=None: no matplotlib version string, so bytes only change with the data.
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _finite(x: float | None) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def _empty(message: str, width: float = 5.0, height: float = 1.2) -> bytes:
    fig = _figure(width, height)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=10, color="#555555")
    return _png(fig)


def leaderboard_bars(
    entries: Sequence[Mapping],
    *,
    title: str = "",
    metric: str = "",
    higher_is_better: bool | None = None,
) -> bytes:
    """Grouped bars of mean ± std: one group per probe, one bar per upstream.

    ``entries``: dicts with ``upstream``, ``probe`` (the group label; put the regime in it
    when it is not "frozen"), ``mean`` and optional ``std`` (None/NaN: no error bar).
    Upstream colours are consistent across groups; the legend names them.
    """
    return _grouped_bars(entries, "probe", title=title, metric=metric, higher_is_better=higher_is_better)


def regime_bars(
    entries: Sequence[Mapping],
    *,
    title: str = "",
    metric: str = "",
    higher_is_better: bool | None = None,
) -> bytes:
    """"Frozen vs adapted": one group of bars per adaptation regime, one bar per upstream.

    ``entries``: dicts with ``upstream``, ``regime``, ``mean`` and optional ``std``, as for
    :func:`leaderboard_bars`. The regimes appear on the x axis in the order of their first
    entry, so the caller decides it (frozen first).
    """
    return _grouped_bars(entries, "regime", title=title, metric=metric, higher_is_better=higher_is_better,
                         xlabel="adaptation regime")


def _grouped_bars(
    entries: Sequence[Mapping],
    group: str,
    *,
    title: str,
    metric: str,
    higher_is_better: bool | None,
    xlabel: str = "",
) -> bytes:
    # One group per distinct entry[group] (first-seen order), one bar per upstream (sorted).
    entries = [e for e in entries if _finite(e.get("mean"))]
    if not entries:
        return _empty(f"{title}: no finished scores" if title else "no finished scores")
    groups = list(dict.fromkeys(str(e[group]) for e in entries))
    upstreams = sorted({str(e["upstream"]) for e in entries})
    index = {(str(e["upstream"]), str(e[group])): e for e in entries}
    n_up = len(upstreams)
    width = 0.8 / n_up
    fig_width = min(2.2 + 0.35 * n_up * len(groups) + 0.6 * len(groups), 10.0)
    fig = _figure(fig_width, 3.4)
    ax = fig.add_subplot()
    x = np.arange(len(groups), dtype=float)
    for j, upstream in enumerate(upstreams):
        means, xs, spread = [], [], []
        for i, name in enumerate(groups):
            e = index.get((upstream, name))
            if e is None:
                continue
            xs.append(x[i] - 0.4 + width * (j + 0.5))
            means.append(float(e["mean"]))
            if _finite(e.get("std")):
                spread.append((xs[-1], means[-1], float(e["std"])))
        ax.bar(xs, means, width * 0.92, color=_colour(j), label=upstream)
        if spread:  # a single seed has no spread: no error bar at all rather than a zero-length one
            ex, ey, es = zip(*spread)
            ax.errorbar(ex, ey, yerr=es, fmt="none", capsize=2.5, elinewidth=0.9, ecolor="#333333")
    # Labels wider than their group (about 0.075 inch a character, the plot about 2.2 inches
    # narrower than the figure) would run into each other: slant them.
    if max(map(len, groups)) * 0.075 > 0.8 * (fig_width - 2.2) / len(groups):
        ax.set_xticks(x, groups, rotation=25, ha="right", rotation_mode="anchor")
    else:
        ax.set_xticks(x, groups)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=9)
    arrow = {True: " (higher is better)", False: " (lower is better)"}.get(higher_is_better, "")
    ax.set_ylabel(f"{metric}{arrow}" if metric else "score", fontsize=9)
    return _finish_bars(fig, ax, title)


def rank_scatter(
    points: Sequence[tuple[str, float, float]],
    *,
    probe_a: str,
    probe_b: str,
    title: str = "",
    pearson: float | None = None,
    spearman: float | None = None,
    metric: str = "",
) -> bytes:
    """Score of each upstream under probe A (x) against probe B (y), points labelled.

    ``points``: ``(upstream, score_a, score_b)``. Pearson r and Spearman ρ, when given, go in
    the title; a dashed diagonal marks equal scores.
    """
    points = [(str(u), float(a), float(b)) for u, a, b in points if _finite(a) and _finite(b)]
    if not points:
        return _empty(f"{title}: no shared upstreams" if title else "no shared upstreams")
    fig = _figure(4.2, 3.8)
    ax = fig.add_subplot()
    xs = np.array([p[1] for p in points])
    ys = np.array([p[2] for p in points])
    ax.scatter(xs, ys, s=28, color=_PALETTE[0], zorder=3)
    for upstream, a, b in points:
        ax.annotate(upstream, (a, b), xytext=(4, 3), textcoords="offset points", fontsize=8)
    lo = float(min(xs.min(), ys.min()))
    hi = float(max(xs.max(), ys.max()))
    pad = (hi - lo) * 0.08 or 0.05 * (abs(hi) or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], ls="--", lw=0.8, color="#999999", zorder=1)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    suffix = f" {metric}" if metric else ""
    ax.set_xlabel(f"{probe_a}{suffix}", fontsize=9)
    ax.set_ylabel(f"{probe_b}{suffix}", fontsize=9)
    stats = []
    if _finite(pearson):
        stats.append(f"Pearson r={pearson:.2f}")
    if _finite(spearman):
        stats.append(f"Spearman ρ={spearman:.2f}")
    head = title or f"{probe_a} vs {probe_b}"
    ax.set_title(head + ("\n" + ", ".join(stats) if stats else ""), fontsize=9)
    ax.grid(alpha=0.3)
    return _png(fig)


def layer_weight_heatmap(
    labels: Sequence[str],
    weights: Sequence[Mapping[int, float] | Sequence[float]],
    *,
    title: str = "Layer weights (softmax)",
) -> bytes:
    """Heatmap of layer weights: one row per label, one column per layer index.

    ``weights[i]`` is either a list (position = layer index) or a ``{layer: weight}`` mapping
    (for runs that used a subset of the layers). Rows with fewer layers are padded; padding
    is masked and drawn in light grey.
    """
    if not labels:
        return _empty("no layer weights")
    maps: list[dict[int, float]] = []
    for w in weights:
        if isinstance(w, Mapping):
            maps.append({int(k): float(v) for k, v in w.items()})
        else:
            maps.append({i: float(v) for i, v in enumerate(w)})
    n_cols = max((max(m) + 1 for m in maps if m), default=1)
    grid = np.full((len(labels), n_cols), np.nan)
    for r, m in enumerate(maps):
        for c, v in m.items():
            grid[r, c] = v
    data = np.ma.masked_invalid(grid)
    label_inches = 0.065 * max(len(str(label)) for label in labels)
    fig = _figure(min(2.0 + label_inches + max(0.4 * n_cols, 2.0), 12.0), 1.3 + 0.28 * len(labels))
    ax = fig.add_subplot()
    from matplotlib import colormaps

    cmap = colormaps["viridis"].with_extremes(bad="#eeeeee")
    vmax = float(np.nanmax(grid)) if np.isfinite(grid).any() else 1.0
    image = ax.imshow(data, aspect="auto", cmap=cmap, vmin=0.0, vmax=vmax or 1.0, interpolation="nearest")
    if n_cols <= 16 and len(labels) <= 40:  # small enough to print each weight in its cell
        for (r, c), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=6.5,
                        color="black" if v > 0.6 * (vmax or 1.0) else "white")
    ax.set_yticks(range(len(labels)), list(labels), fontsize=8)
    step = max(1, math.ceil(n_cols / 25))
    ax.set_xticks(range(0, n_cols, step))
    ax.tick_params(axis="x", labelsize=8)
    ax.set_xlabel("layer", fontsize=9)
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.9, pad=0.01).ax.tick_params(labelsize=7)
    return _png(fig)


def language_bars(
    per_upstream: Mapping[str, Mapping[str, float]],
    *,
    metric: str = "cer",
    title: str = "",
    worst: Mapping[str, Sequence[str]] | None = None,
) -> bytes:
    """Per-language scores: languages on the x axis, one bar per upstream in each group.

    ``per_upstream``: ``{upstream: {language: value}}``; a language an upstream lacks gets no
    bar. ``worst`` ``{upstream: [languages]}`` outlines those bars in black and marks them
    with a triangle (ML-SUPERB 2.0's worst languages).
    """
    per_upstream = {u: {k: v for k, v in langs.items() if _finite(v)} for u, langs in per_upstream.items()}
    per_upstream = {u: v for u, v in per_upstream.items() if v}
    if not per_upstream:
        return _empty(f"{title}: no per-language scores" if title else "no per-language scores")
    upstreams = sorted(per_upstream)
    languages = sorted({lang for langs in per_upstream.values() for lang in langs})
    width = 0.8 / len(upstreams)
    fig = _figure(min(2.5 + 0.18 * len(languages) * len(upstreams) + 0.3 * len(languages), 11.0), 3.2)
    ax = fig.add_subplot()
    x = np.arange(len(languages), dtype=float)
    for j, upstream in enumerate(upstreams):
        langs = per_upstream[upstream]
        xs = [x[i] - 0.4 + width * (j + 0.5) for i, lang in enumerate(languages) if lang in langs]
        ys = [float(langs[lang]) for lang in languages if lang in langs]
        ax.bar(xs, ys, width * 0.92, color=_colour(j), label=upstream)
        marked = set((worst or {}).get(upstream, ()))
        for xi, yi, lang in zip(xs, ys, [lang for lang in languages if lang in langs]):
            if lang in marked:
                ax.bar([xi], [yi], width * 0.92, fill=False, edgecolor="black", linewidth=1.2)
                ax.plot([xi], [yi], marker="v", color="black", markersize=4, linestyle="none")
    if worst:
        ax.plot([], [], marker="v", color="black", linestyle="none", label="worst languages")
    ax.set_xticks(x, languages, fontsize=8)
    ax.set_ylabel(metric, fontsize=9)
    return _finish_bars(fig, ax, title)


def _finish_bars(fig: Figure, ax, title: str) -> bytes:
    # Shared look of the grouped bar charts: light horizontal grid, legend outside right.
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _png(fig)


def loss_curves(
    curves: Mapping[str, Sequence[tuple[float, float]]],
    *,
    valid: Mapping[str, Sequence[tuple[float, float]]] | None = None,
    title: str = "Pretraining loss",
    ylabel: str = "loss",
) -> bytes:
    """Step vs loss, one solid line per run (``curves``: ``{run: [(step, loss), ...]}``).

    ``valid`` adds the same runs' validation losses as dashed lines with markers, in the
    run's colour. Non-finite losses (diverged steps) are dropped.
    """
    valid = valid or {}
    names = sorted(set(curves) | set(valid))
    series = {n: [(s, v) for s, v in curves.get(n, ()) if _finite(s) and _finite(v)] for n in names}
    vseries = {n: [(s, v) for s, v in valid.get(n, ()) if _finite(s) and _finite(v)] for n in names}
    if not any(series.values()) and not any(vseries.values()):
        return _empty("no pretraining losses")
    fig = _figure(6.0, 3.4)
    ax = fig.add_subplot()
    for j, name in enumerate(names):
        if series[name]:
            s, v = zip(*sorted(series[name]))
            ax.plot(s, v, color=_colour(j), lw=1.3, label=f"{name} (train)" if vseries[name] else name)
        if vseries[name]:
            s, v = zip(*sorted(vseries[name]))
            ax.plot(s, v, color=_colour(j), lw=1.0, ls="--", marker="o", ms=3, label=f"{name} (valid)")
    ax.set_xlabel("step", fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return _png(fig)
