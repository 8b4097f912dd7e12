"""One measurement end to end: baseline, sweep + bisection, persistence, table and plot.

:func:`measure` ties :mod:`.search`, :mod:`.store`, :mod:`.parallel` and :mod:`.plot` together
for one ``(task, model, projection)``; call it once per projection with the same output
directory to compare projections (the plot then shows all of them). Re-running it with the same
arguments runs nothing that already has a row in ``results.csv``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .parallel import DevicePool, accepts_device
from .plot import plot_rows
from .search import (
    SearchResult,
    search_intrinsic_dimension,
    validate_dims,
    validate_fraction,
    validate_reference,
    validate_seeds,
)
from .store import BASELINE_PROJECTION, FULL, ResultStore
from .table import format_table

PLOT_NAME = "d_curve.png"


class _BaselineCall:
    """Picklable adapter: ``baseline_evaluate(seed[, device=])`` as an ``evaluate(d, seed)``."""

    def __init__(self, fn: Callable[..., float]) -> None:
        self.fn = fn

    def __call__(self, d: object, seed: int, device: str | None = None) -> float:
        if device is not None and accepts_device(self.fn):
            return self.fn(seed, device=device)
        return self.fn(seed)


@dataclass
class Measurement:
    """What :func:`measure` produced; paths are inside the output directory."""

    result: SearchResult
    baseline_source: str
    csv_path: Path
    json_path: Path
    plot_path: Path | None
    table: str


def measure(
    evaluate: Callable[..., float],
    *,
    task: str,
    model: str,
    projection: str,
    dims: Sequence[int],
    output_dir: str | os.PathLike,
    seeds: Sequence[int] = (0,),
    fraction: float = 0.9,
    metric: str = "accuracy",
    reference_score: float | None = None,
    baseline_evaluate: Callable[..., float] | None = None,
    extra_fractions: Sequence[float] = (),
    rel_tol: float = 0.05,
    devices: Sequence[str] | None = None,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    plot: bool = True,
) -> Measurement:
    """Measure d_frac of ``evaluate(d, seed[, device=]) -> score`` and save everything.

    The baseline is ``reference_score`` if given, else the mean over ``seeds`` of
    ``baseline_evaluate(seed[, device=])`` (full fine-tuning), whose runs are stored as rows with
    ``d="full"`` and are not repeated on resume. ``devices``: one worker process per entry for
    independent runs (see :mod:`.parallel`); ``None`` runs in this process.
    """
    fraction = validate_fraction(fraction)
    dims = validate_dims(dims)
    seeds = validate_seeds(seeds)
    if not isinstance(projection, str) or not projection:
        raise ValueError(f"projection must be a non-empty string, got projection={projection!r}")
    if reference_score is not None:
        reference_score = validate_reference(reference_score)
    elif baseline_evaluate is None:
        raise ValueError("give reference_score or baseline_evaluate (full fine-tuning) for the baseline")
    store = ResultStore(output_dir, task=task, model=model, metric=metric)
    with DevicePool(devices) as workers:
        result, source = _search(
            workers, store, evaluate, projection, dims, seeds, fraction, reference_score,
            baseline_evaluate, extra_fractions, rel_tol, confidence, n_bootstrap,
        )
    # "d90" (d<100·fraction>) as well as "d_frac": the key `idcompress report` reads
    summary = {**result.to_dict(), f"d{100 * fraction:g}": result.d, "baseline_source": source}
    json_path = store.write_json({projection: summary})
    plot_path = None
    if plot:
        summaries = json.loads(json_path.read_text(encoding="utf-8"))["projections"]
        plot_path = plot_rows(
            store.rows, store.output_dir / PLOT_NAME, summaries, fraction=fraction,
            title=f"{task} · {model}",
        )
    table = format_table(result, metric=metric, title=f"{task} · {model} · {projection}")
    return Measurement(result, source, store.csv_path, json_path, plot_path, table)


def _search(
    workers: DevicePool,
    store: ResultStore,
    evaluate: Callable[..., float],
    projection: str,
    dims: list[int],
    seeds: list[int],
    fraction: float,
    reference_score: float | None,
    baseline_evaluate: Callable[..., float] | None,
    extra_fractions: Sequence[float],
    rel_tol: float,
    confidence: float,
    n_bootstrap: int,
) -> tuple[SearchResult, str]:
    def pool(fn: Callable[..., float]):
        return lambda points, on_result: workers.run(fn, points, on_result)

    if reference_score is not None:
        baseline, source = reference_score, "reference_score"
    else:
        full = store.cached_runner(BASELINE_PROJECTION, pool(_BaselineCall(baseline_evaluate)))
        scores = full([(FULL, s) for s in seeds])
        baseline = validate_reference(
            float(np.mean([scores[(FULL, s)] for s in seeds])), "baseline (full fine-tuning)"
        )
        source = f"full fine-tuning, mean over seeds {seeds}"

    result = search_intrinsic_dimension(
        None, baseline, dims, seeds, fraction,
        extra_fractions=extra_fractions, rel_tol=rel_tol, confidence=confidence,
        n_bootstrap=n_bootstrap, batch_evaluate=store.cached_runner(projection, pool(evaluate)),
    )
    return result, source
