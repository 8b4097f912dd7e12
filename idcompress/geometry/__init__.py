"""Representation geometry: estimators, hidden-state collection and the report.

Typical use::

    batches = tokenize_texts(tokenizer, texts, batch_size=64, max_length=64)
    base = collect_hidden_states(base_model, batches)
    tuned = collect_hidden_states(tuned_model, batches)
    result = geometry_report(base, tuned, "out/geometry", facts={"d": 1000})
    print(format_table(result))
"""

from __future__ import annotations

from .cka import linear_cka
from .collect import POOLINGS, collect_hidden_states, tokenize_texts
from .estimators import MLE, AlphaReQ, ParticipationRatio, RankMe, TwoNN
from .metrics import METRICS, GeometrySettings, layer_metrics
from .report import format_table, geometry_report

__all__ = [
    "METRICS",
    "MLE",
    "POOLINGS",
    "AlphaReQ",
    "GeometrySettings",
    "ParticipationRatio",
    "RankMe",
    "TwoNN",
    "collect_hidden_states",
    "format_table",
    "geometry_report",
    "layer_metrics",
    "linear_cka",
    "tokenize_texts",
]
