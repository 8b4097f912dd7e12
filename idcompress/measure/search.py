"""Search for the intrinsic dimension d_frac (d90 for ``fraction=0.9``).

d_frac is the smallest subspace dimension ``d`` whose score, averaged over seeds, reaches
``fraction × baseline`` (Li et al. 2018; Aghajanyan et al. 2020). Scores are higher-is-better.

Algorithm (the choices, written down):

1. **Sweep**: every ``d`` of the log-spaced grid ``dims`` is run for every seed (these runs are
   independent and may go to parallel workers). A run whose score is NaN counts as failing.
2. **Bracket**: ``hi`` = the smallest grid ``d`` whose mean passes; ``lo`` = the grid ``d`` just
   below it (which fails, since ``hi`` is the smallest passing one).
3. **Bisection** on integers inside ``(lo, hi)``, at the geometric midpoint (the grid is
   log-spaced), each point run for all seeds; a passing mean moves ``hi`` down, a failing one moves
   ``lo`` up. It stops when ``hi - lo ≤ max(1, rel_tol · hi)`` (``rel_tol=0``: until adjacent, so
   the crossing is exact on a monotone curve).
4. **d_frac** = the smallest *evaluated* ``d`` whose mean passes. On a curve that is not
   monotone this is still a well-defined statement about the points that were run.
5. **Extra fractions** ``g`` come from the same evaluated points, without new runs: the smallest
   evaluated ``d`` whose mean reaches ``g × baseline``, with the largest evaluated failing ``d``
   below it as the lower end of its bracket. Their resolution is the grid plus the bisection
   points of the main fraction, so they are less precise than d_frac; the bracket says how much.
6. **Interval**: bootstrap over seeds. Each resample draws ``len(seeds)`` seeds with replacement
   (``np.random.default_rng(bootstrap_seed)``, never the global RNG), recomputes every evaluated
   point's mean from those seeds and the d_frac of step 4; the interval is the
   ``(1-confidence)/2`` and ``(1+confidence)/2`` quantiles, taken as evaluated dims (``lower`` /
   ``higher`` quantile methods). The baseline is held fixed. A resample that reaches the threshold
   nowhere makes the upper end ``None`` ("not reached"). With one seed the interval is the point.

Edge cases: no evaluated ``d`` passes → ``d_frac=None`` and the message says "not reached up to
d=…"; the smallest grid ``d`` already passes → ``d_frac = dims[0]``, an upper bound only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

Point = tuple[int, int]
"""One run: ``(d, seed)``."""

BatchEvaluator = Callable[[Sequence[Point]], Mapping[Point, float]]
"""Runs a batch of independent ``(d, seed)`` points (maybe in parallel) and returns their scores."""


# -- validation -------------------------------------------------------------------------------
def validate_fraction(fraction: float, name: str = "fraction") -> float:
    """Return ``fraction`` as a float; ``ValueError`` unless it lies in ``(0, 1]``."""
    try:
        value = float(fraction)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a number in (0, 1], got {name}={fraction!r}") from e
    if not (0.0 < value <= 1.0):  # also rejects NaN
        raise ValueError(f"{name} must lie in (0, 1], got {name}={fraction!r}")
    return value


def validate_dims(dims: Sequence[int]) -> list[int]:
    """Return ``dims`` as a list; ``ValueError`` unless non-empty, positive ints, strictly increasing."""
    dims = list(dims)
    if not dims:
        raise ValueError("dims must be a non-empty list of positive integers, got dims=[]")
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d <= 0:
            raise ValueError(f"dims must hold positive integers, got {d!r} in dims={dims}")
    for a, b in zip(dims, dims[1:]):
        if b <= a:
            raise ValueError(f"dims must be strictly increasing, got {a} then {b} in dims={dims}")
    return [int(d) for d in dims]


def validate_seeds(seeds: Sequence[int]) -> list[int]:
    """Return ``seeds`` as a list; ``ValueError`` unless non-empty, distinct, non-negative ints."""
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must be a non-empty list of non-negative integers, got seeds=[]")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
            raise ValueError(f"seeds must hold non-negative integers, got {s!r} in seeds={seeds}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got seeds={seeds}")
    return [int(s) for s in seeds]


def validate_reference(score: float, name: str = "reference_score") -> float:
    """Return the baseline as a float; ``ValueError`` unless finite and > 0.

    Only higher-is-better metrics are supported: "90 % of the baseline" means nothing for a
    baseline ≤ 0 (or for a loss).
    """
    try:
        value = float(score)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a positive number, got {name}={score!r}") from e
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"{name} must be finite and > 0 for a higher-is-better metric, got {name}={score!r}"
        )
    return value


# -- results ----------------------------------------------------------------------------------
@dataclass
class FractionResult:
    """d_frac for one fraction, from the evaluated points.

    ``status``: ``"found"`` (a failing evaluated ``d`` lies below ``d``: the crossing is in
    ``(bracket_low, d]``), ``"upper_bound"`` (the smallest evaluated ``d`` already passes) or
    ``"not_reached"`` (``d`` is ``None``).
    """

    fraction: float
    threshold: float
    d: int | None
    bracket_low: int | None
    status: str
    message: str


@dataclass
class SearchResult:
    """Outcome of :func:`search_intrinsic_dimension`. Scores are in the metric's units."""

    fraction: float
    baseline: float
    threshold: float
    d: int | None
    status: str
    message: str
    interval: tuple[int | None, int | None]
    confidence: float
    seeds: list[int]
    dims: list[int]
    scores: dict[int, dict[int, float]]  # d -> seed -> score
    extra: list[FractionResult] = field(default_factory=list)
    n_evaluations: int = 0

    def mean(self, d: int) -> float:
        """Mean score over seeds at ``d``."""
        return float(np.mean([self.scores[d][s] for s in self.seeds]))

    def to_dict(self) -> dict:
        """A JSON-ready dict (keys of ``scores`` become strings)."""
        return {
            "fraction": self.fraction,
            "baseline": self.baseline,
            "threshold": self.threshold,
            "d_frac": self.d,
            "status": self.status,
            "message": self.message,
            "interval": list(self.interval),
            "confidence": self.confidence,
            "seeds": self.seeds,
            "dims": self.dims,
            "evaluated_dims": sorted(self.scores),
            "mean_scores": {str(d): _json_float(self.mean(d)) for d in sorted(self.scores)},
            "extra_fractions": [
                {
                    "fraction": e.fraction,
                    "threshold": e.threshold,
                    "d_frac": e.d,
                    "bracket_low": e.bracket_low,
                    "status": e.status,
                    "message": e.message,
                }
                for e in self.extra
            ],
            "n_evaluations": self.n_evaluations,
        }


def _json_float(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


# -- the search -------------------------------------------------------------------------------
def sequential_evaluator(evaluate: Callable[[int, int], float]) -> BatchEvaluator:
    """Wrap ``evaluate(d, seed) -> score`` as a batch evaluator that runs points one by one."""

    def run(points: Sequence[Point]) -> dict[Point, float]:
        return {(d, s): float(evaluate(d, s)) for d, s in points}

    return run


def search_intrinsic_dimension(
    evaluate: Callable[[int, int], float] | None,
    baseline: float,
    dims: Sequence[int],
    seeds: Sequence[int] = (0,),
    fraction: float = 0.9,
    *,
    extra_fractions: Sequence[float] = (),
    rel_tol: float = 0.05,
    confidence: float = 0.95,
    n_bootstrap: int = 1000,
    bootstrap_seed: int = 0,
    batch_evaluate: BatchEvaluator | None = None,
) -> SearchResult:
    """Find d_frac by a grid sweep followed by integer bisection (see the module docstring).

    ``evaluate(d, seed) -> score`` runs one training (expensive); alternatively
    ``batch_evaluate(points) -> {point: score}`` runs a batch of independent points (parallel
    workers, a results cache). Exactly one of the two must be given. ``baseline`` is the
    reference (full fine-tuning) score, > 0. ``rel_tol`` ≥ 0 is the relative width at which
    bisection stops.
    """
    fraction = validate_fraction(fraction)
    extras = [validate_fraction(g, "extra_fractions") for g in extra_fractions]
    dims = validate_dims(dims)
    seeds = validate_seeds(seeds)
    baseline = validate_reference(baseline, "baseline")
    if not (isinstance(rel_tol, (int, float)) and 0 <= rel_tol < 1):
        raise ValueError(f"rel_tol must lie in [0, 1), got rel_tol={rel_tol!r}")
    if not (0 < confidence < 1):
        raise ValueError(f"confidence must lie in (0, 1), got confidence={confidence!r}")
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be ≥ 1, got n_bootstrap={n_bootstrap!r}")
    if (evaluate is None) == (batch_evaluate is None):
        raise ValueError("give exactly one of evaluate and batch_evaluate")
    runner = batch_evaluate if batch_evaluate is not None else sequential_evaluator(evaluate)

    threshold = fraction * baseline
    scores: dict[int, dict[int, float]] = {}
    n_evals = 0

    def run(ds: Sequence[int]) -> None:
        nonlocal n_evals
        points = [(d, s) for d in ds for s in seeds]
        out = runner(points)
        n_evals += len(points)
        for d, s in points:
            scores.setdefault(d, {})[s] = float(out[(d, s)])

    def passes(d: int) -> bool:
        return bool(np.mean([scores[d][s] for s in seeds]) >= threshold)  # NaN → False

    run(dims)
    first_pass = next((i for i, d in enumerate(dims) if passes(d)), None)
    if first_pass is not None and first_pass > 0:
        lo, hi = dims[first_pass - 1], dims[first_pass]
        while hi - lo > max(1, rel_tol * hi):
            mid = min(max(round(math.sqrt(lo * hi)), lo + 1), hi - 1)
            run([mid])
            if passes(mid):
                hi = mid
            else:
                lo = mid

    means = {d: float(np.mean([scores[d][s] for s in seeds])) for d in scores}
    main = _fraction_result(means, fraction, threshold)
    extra = [_fraction_result(means, g, g * baseline) for g in extras]
    interval = _bootstrap_interval(
        scores, seeds, threshold, confidence, n_bootstrap, bootstrap_seed
    )
    return SearchResult(
        fraction=fraction,
        baseline=baseline,
        threshold=threshold,
        d=main.d,
        status=main.status,
        message=main.message,
        interval=interval,
        confidence=confidence,
        seeds=seeds,
        dims=dims,
        scores=scores,
        extra=extra,
        n_evaluations=n_evals,
    )


def smallest_passing(means: Mapping[int, float], threshold: float) -> int | None:
    """Smallest ``d`` whose mean score is ≥ ``threshold`` (NaN fails), or ``None``."""
    passing = [d for d, m in means.items() if m >= threshold]
    return min(passing) if passing else None


def _fraction_result(means: Mapping[int, float], fraction: float, threshold: float) -> FractionResult:
    pct = f"{100 * fraction:g}%"
    d = smallest_passing(means, threshold)
    if d is None:
        top = max(means)
        return FractionResult(
            fraction, threshold, None, None, "not_reached",
            f"d{100 * fraction:g} not reached up to d={top} "
            f"({pct} of the baseline = {threshold:.4g}; best mean {max(means.values()):.4g})",
        )
    below = [e for e in means if e < d]
    if not below:
        return FractionResult(
            fraction, threshold, d, None, "upper_bound",
            f"d{100 * fraction:g} ≤ {d}: the smallest evaluated d already reaches {pct} of the "
            f"baseline ({threshold:.4g}), so {d} is an upper bound only; add smaller dims",
        )
    low = max(below)
    return FractionResult(
        fraction, threshold, d, low, "found",
        f"d{100 * fraction:g} = {d} (crossing in ({low}, {d}]; {pct} of the baseline = "
        f"{threshold:.4g})",
    )


def _bootstrap_interval(
    scores: Mapping[int, Mapping[int, float]],
    seeds: Sequence[int],
    threshold: float,
    confidence: float,
    n_bootstrap: int,
    bootstrap_seed: int,
) -> tuple[int | None, int | None]:
    ds = np.array(sorted(scores))
    table = np.array([[scores[d][s] for s in seeds] for d in ds])  # (n_dims, n_seeds)
    rng = np.random.default_rng(bootstrap_seed)
    idx = rng.integers(0, len(seeds), size=(n_bootstrap, len(seeds)))
    means = table[:, idx].mean(axis=2)  # (n_dims, n_bootstrap)
    ok = means >= threshold
    # smallest passing d per resample; +inf when none passes
    first = np.where(ok.any(axis=0), ds[np.argmax(ok, axis=0)].astype(float), np.inf)
    alpha = (1 - confidence) / 2
    lo = np.quantile(first, alpha, method="lower")
    hi = np.quantile(first, 1 - alpha, method="higher")
    return (int(lo) if np.isfinite(lo) else None, int(hi) if np.isfinite(hi) else None)
