"""PNG plot of a measurement: mean score vs d (log x-axis), one curve per projection or model.

Each curve shows the per-seed scores as faint points and their mean as a line; horizontal lines
mark the baseline and ``fraction × baseline`` (one pair per series when the baselines differ);
d_frac is a star on the threshold line with its bootstrap interval as a horizontal error bar.
Drawn with matplotlib's Agg canvas directly (no ``pyplot``, no change of the global backend).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .store import FULL, Row


@dataclass
class Series:
    """One curve. ``points``: ``(d, seed, score)``; ``baseline`` in score units or ``None``."""

    label: str
    points: list[tuple[int, int, float]]
    baseline: float | None = None
    d_frac: int | None = None
    interval: tuple[int | None, int | None] = (None, None)
    extra: dict = field(default_factory=dict)


def series_from_rows(
    rows: Sequence[Row], summaries: dict[str, dict] | None = None
) -> list[Series]:
    """Group rows by ``(model, projection)`` into series; baselines are the mean ``d="full"`` rows.

    ``summaries`` (``results.json``'s ``projections``: projection → summary with ``baseline``,
    ``d_frac``, ``interval``) supplies d_frac and a reference baseline when there is no full run.
    Labels are the projection, or ``model / projection`` when several models are present.
    """
    summaries = summaries or {}
    models = sorted({r.model for r in rows})
    full: dict[str, list[float]] = {}
    groups: dict[tuple[str, str], list[tuple[int, int, float]]] = {}
    for r in rows:
        if r.d == FULL:
            full.setdefault(r.model, []).append(r.score)
        else:
            groups.setdefault((r.model, r.projection), []).append((int(r.d), r.seed, r.score))
    out = []
    for (model, proj), pts in sorted(groups.items()):
        summary = summaries.get(proj, {}) if len(models) == 1 else {}
        baseline = float(np.mean(full[model])) if model in full else summary.get("baseline")
        interval = tuple(summary.get("interval", (None, None)))
        out.append(
            Series(
                label=proj if len(models) == 1 else f"{model} / {proj}",
                points=sorted(pts),
                baseline=baseline,
                d_frac=summary.get("d_frac"),
                interval=(interval[0], interval[1]),
            )
        )
    return out


def plot_series(
    series: Sequence[Series],
    path: str | os.PathLike,
    fraction: float = 0.9,
    metric: str = "score",
    title: str | None = None,
) -> Path:
    """Draw ``series`` to the PNG ``path`` (folders created); returns the path."""
    from matplotlib import ticker
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not series:
        raise ValueError("nothing to plot: no series with evaluated dims")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(7.0, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colors = [f"C{i % 10}" for i in range(len(series))]
    baselines = {s.baseline for s in series if s.baseline is not None}
    shared = len(baselines) == 1
    all_d = [p[0] for s in series for p in s.points]
    for i, (s, color) in enumerate(zip(series, colors)):
        ds = np.array([p[0] for p in s.points], dtype=float)
        sc = np.array([p[2] for p in s.points], dtype=float)
        ax.scatter(ds, sc, s=10, alpha=0.35, color=color, linewidths=0)
        uniq = np.unique(ds)
        means = np.array([np.nanmean(sc[ds == d]) if np.any(np.isfinite(sc[ds == d])) else np.nan
                          for d in uniq])
        ax.plot(uniq, means, "-o", ms=3.5, color=color, label=s.label)
        if s.baseline is not None and not shared:
            ax.axhline(s.baseline, color=color, lw=1.0, ls="-", alpha=0.6)
            ax.axhline(fraction * s.baseline, color=color, lw=1.0, ls="--", alpha=0.6)
        if s.d_frac is not None and s.baseline is not None:
            y = fraction * s.baseline
            lo, hi = s.interval
            lo = s.d_frac if lo is None else lo
            hi_plot = max(all_d) if hi is None else hi
            ax.errorbar(
                [s.d_frac], [y], xerr=[[s.d_frac - lo], [max(hi_plot - s.d_frac, 0)]],
                fmt="*", ms=12, color=color, mec="black", mew=0.6, capsize=4, zorder=5,
            )
            span = f" [{lo}, {'>' + str(max(all_d)) if hi is None else hi}]"
            ax.annotate(f"d{100 * fraction:g}={s.d_frac}{span}", (s.d_frac, y), xytext=(4, 6 + 11 * i),
                        textcoords="offset points", fontsize=8, color=color)
    if shared:
        (b,) = baselines
        ax.axhline(b, color="black", lw=1.0, label=f"baseline (full) = {b:.4g}")
        ax.axhline(fraction * b, color="black", lw=1.0, ls="--",
                   label=f"{100 * fraction:g}% of baseline = {fraction * b:.4g}")
    tops = [s.baseline for s in series if s.baseline is not None]
    if tops:  # keep the baseline line off the frame's top edge
        lo, hi = ax.get_ylim()
        top = max(hi, *tops)
        ax.set_ylim(lo, top + 0.05 * (top - lo))
    ax.set_xscale("log")
    # plain numbers at 1-2-5 steps (matplotlib's own minor labels overlap on short ranges)
    ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("subspace dimension d (star: d at the threshold, bar: 95% interval over seeds)")
    ax.set_ylabel(metric)
    ax.set_title(title or f"intrinsic dimension: {metric} vs d")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    from ..fileio import writing

    with writing(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def plot_rows(
    rows: Sequence[Row],
    path: str | os.PathLike,
    summaries: dict[str, dict] | None = None,
    fraction: float = 0.9,
    title: str | None = None,
) -> Path:
    """Plot stored rows (see :func:`series_from_rows`) to the PNG ``path``."""
    series = series_from_rows(rows, summaries)
    metric = rows[0].metric if rows else "score"
    return plot_series(series, path, fraction=fraction, metric=metric, title=title)
