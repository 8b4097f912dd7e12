"""Plain-text table of a search result for the terminal."""

from __future__ import annotations

import numpy as np

from .search import SearchResult


def _fmt(x: float) -> str:
    return "nan" if not np.isfinite(x) else f"{x:.4f}"


def format_table(result: SearchResult, metric: str = "score", title: str | None = None) -> str:
    """One line per evaluated ``d``: mean, std and min over seeds, share of the baseline, pass/fail.

    A header gives the baseline and threshold; a footer gives d_frac, its interval and any extra
    fractions. Rows from bisection (not on the grid) are marked ``*``.
    """
    grid = set(result.dims)
    pct = f"{100 * result.fraction:g}%"
    lines = []
    if title:
        lines.append(title)
    lines.append(
        f"baseline {metric} = {result.baseline:.4f}; threshold ({pct}) = {result.threshold:.4f}; "
        f"seeds = {result.seeds}"
    )
    header = f"{'d':>9}  {'mean':>8}  {'std':>8}  {'min':>8}  {'/base':>6}  pass"
    lines += [header, "-" * len(header)]
    for d in sorted(result.scores):
        vals = np.array([result.scores[d][s] for s in result.seeds], dtype=float)
        mean = float(vals.mean())
        std = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        mark = "" if d in grid else "*"
        ok = "yes" if mean >= result.threshold else "no"
        lines.append(
            f"{str(d) + mark:>9}  {_fmt(mean):>8}  {_fmt(std):>8}  {_fmt(float(vals.min())):>8}"
            f"  {_fmt(mean / result.baseline)[:6]:>6}  {ok}"
        )
    lo, hi = result.interval
    conf = f"{100 * result.confidence:g}%"
    interval = f"[{'?' if lo is None else lo}, {'not reached' if hi is None else hi}]"
    lines.append(f"{result.message}; {conf} bootstrap interval over seeds {interval}")
    for e in result.extra:
        lines.append(e.message)
    if any(d not in grid for d in result.scores):
        lines.append("* = bisection point")
    lines.append(f"runs requested: {result.n_evaluations}")
    return "\n".join(lines)
