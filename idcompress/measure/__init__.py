"""Intrinsic-dimension measurement: find d90 (d_frac) by sweep + bisection, save, plot.

- :mod:`.search` — the search over d and the bootstrap interval (pure; takes ``evaluate``).
- :mod:`.store` — ``results.csv`` (appended per run, resumable), ``results.json`` (atomic) and
  ``settings.json`` (the training settings a folder's scores were produced with).
- :mod:`.parallel` — independent runs in one worker process per device.
- :mod:`.run` — :func:`measure`, the above end to end for one task, model and projection.
- :mod:`.plot`, :mod:`.table` — PNG curve and terminal table.
- :mod:`.options` — :class:`~.options.MeasureOptions`, the command's options (defaults ← recipe
  ← flags) and their checks; :mod:`.recipe` — YAML recipes (``recipes/*.yaml``);
  :mod:`.defaults` — the default training settings per task family and model.
- :mod:`.tasks` — a task and model name → the evaluate functions of a sweep; :mod:`.digits`
  (sklearn digits, small MLP) and :mod:`.images` (small nets, EfficientNet-Lite0) train with
  :mod:`.fit`, the in-memory loop; text and transformers image models use the fine-tuning loop.
"""

from .parallel import DevicePool, run_points
from .plot import Series, plot_rows, plot_series, series_from_rows
from .recipe import load_recipe
from .run import Measurement, measure
from .search import (
    FractionResult,
    SearchResult,
    search_intrinsic_dimension,
    validate_dims,
    validate_fraction,
    validate_reference,
)
from .store import ResultStore, Row, read_rows
from .table import format_table

__all__ = [
    "DevicePool",
    "FractionResult",
    "Measurement",
    "ResultStore",
    "Row",
    "SearchResult",
    "Series",
    "format_table",
    "load_recipe",
    "measure",
    "plot_rows",
    "plot_series",
    "read_rows",
    "run_points",
    "search_intrinsic_dimension",
    "series_from_rows",
    "validate_dims",
    "validate_fraction",
    "validate_reference",
]
