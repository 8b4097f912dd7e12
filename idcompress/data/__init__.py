"""Tasks and their data: the task table, loading (text, image and generative tasks), tokenisation, metrics."""

from __future__ import annotations

from .loading import load_task_data
from .metrics import compute_metrics
from .tasks import (
    BUILTIN_TASKS,
    GLUE_TASKS,
    MOVIE_SENTIMENT,
    TaskSpec,
    custom_task,
    get_task,
    known_task_names,
)


def __getattr__(name: str):
    # transformers is imported only when tokenisation is used.
    if name in ("make_collator", "tokenize_dataset"):
        from . import tokenization

        return getattr(tokenization, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BUILTIN_TASKS",
    "GLUE_TASKS",
    "MOVIE_SENTIMENT",
    "TaskSpec",
    "compute_metrics",
    "custom_task",
    "get_task",
    "known_task_names",
    "load_task_data",
    "make_collator",
    "tokenize_dataset",
]
