"""The task table: what each supported text task reads, predicts and is scored by.

GLUE tasks mirror the hub dataset ``nyu-mll/glue`` (column names, label ids and label order are
the hub's), scored by the official GLUE metrics. Choices this module makes:

* ``main_metric`` (the number used to pick the best epoch and to compare dimensions) is the first
  official metric, except for MRPC and QQP, where it is accuracy, as in the intrinsic-dimension
  papers (Aghajanyan et al. 2020); F1 is still reported.
* STS-B is a regression on ``[0, 5]``; its main metric is Pearson's r.
* Test splits of GLUE carry no labels (``-1``), so GLUE specs have no ``test_splits``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

METRIC_NAMES = ("accuracy", "f1", "mcc", "pearson", "spearman")


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """A text classification or regression task.

    ``text_fields`` are 1 (single sentence) or 2 (sentence pair) column names; ``label_field``
    holds class ids ``0..num_labels-1`` (``label_names[i]`` names id ``i``) or, for regression,
    floats (within ``label_range`` when set). ``hub_path``/``hub_name`` are the arguments of
    ``datasets.load_dataset`` for tasks that live on a hub; ``None`` for local/built-in data.
    """

    name: str
    text_fields: tuple[str, ...]
    label_field: str = "label"
    num_labels: int
    label_names: tuple[str, ...] = ()
    is_regression: bool = False
    metrics: tuple[str, ...]
    main_metric: str
    train_split: str = "train"
    eval_splits: tuple[str, ...] = ("validation",)
    test_splits: tuple[str, ...] = ()
    hub_path: str | None = None
    hub_name: str | None = None
    label_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if len(self.text_fields) not in (1, 2):
            raise ValueError(
                f"task {self.name!r}: text_fields={self.text_fields!r} must name 1 or 2 columns"
            )
        if self.label_field in self.text_fields:
            raise ValueError(
                f"task {self.name!r}: label_field={self.label_field!r} is also a text field"
            )
        if self.is_regression:
            if self.num_labels != 1:
                raise ValueError(f"task {self.name!r}: a regression task has num_labels=1")
        else:
            if self.num_labels < 2:
                raise ValueError(
                    f"task {self.name!r}: num_labels={self.num_labels} must be >= 2 "
                    "for classification"
                )
            if len(self.label_names) != self.num_labels:
                raise ValueError(
                    f"task {self.name!r}: label_names={self.label_names!r} must have "
                    f"num_labels={self.num_labels} entries"
                )
        unknown = [m for m in self.metrics if m not in METRIC_NAMES]
        if unknown or not self.metrics:
            raise ValueError(
                f"task {self.name!r}: metrics={self.metrics!r}; each must be one of {METRIC_NAMES}"
            )
        if self.main_metric not in self.metrics:
            raise ValueError(
                f"task {self.name!r}: main_metric={self.main_metric!r} is not in {self.metrics}"
            )
        if not self.eval_splits:
            raise ValueError(f"task {self.name!r}: eval_splits is empty")

    @property
    def is_pair(self) -> bool:
        """True for sentence-pair tasks."""
        return len(self.text_fields) == 2


def _glue(name: str, text_fields: tuple[str, ...], label_names: tuple[str, ...],
          metrics: tuple[str, ...], main_metric: str, **kw) -> TaskSpec:
    return TaskSpec(
        name=f"glue/{name}",
        text_fields=text_fields,
        num_labels=len(label_names),
        label_names=label_names,
        metrics=metrics,
        main_metric=main_metric,
        hub_path="nyu-mll/glue",
        hub_name=name,
        **kw,
    )


_NLI2 = ("entailment", "not_entailment")

GLUE_TASKS: dict[str, TaskSpec] = {
    "cola": _glue("cola", ("sentence",), ("unacceptable", "acceptable"), ("mcc",), "mcc"),
    "sst2": _glue("sst2", ("sentence",), ("negative", "positive"), ("accuracy",), "accuracy"),
    "mrpc": _glue(
        "mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"),
        ("f1", "accuracy"), "accuracy",
    ),
    "stsb": TaskSpec(
        name="glue/stsb",
        text_fields=("sentence1", "sentence2"),
        num_labels=1,
        is_regression=True,
        metrics=("pearson", "spearman"),
        main_metric="pearson",
        hub_path="nyu-mll/glue",
        hub_name="stsb",
        label_range=(0.0, 5.0),
    ),
    "qqp": _glue(
        "qqp", ("question1", "question2"), ("not_duplicate", "duplicate"),
        ("f1", "accuracy"), "accuracy",
    ),
    "mnli": _glue(
        "mnli", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"),
        ("accuracy",), "accuracy",
        eval_splits=("validation_matched", "validation_mismatched"),
    ),
    "qnli": _glue("qnli", ("question", "sentence"), _NLI2, ("accuracy",), "accuracy"),
    "rte": _glue("rte", ("sentence1", "sentence2"), _NLI2, ("accuracy",), "accuracy"),
    "wnli": _glue(
        "wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment"),
        ("accuracy",), "accuracy",
    ),
}

MOVIE_SENTIMENT = TaskSpec(
    name="builtin/movie-sentiment",
    text_fields=("sentence",),
    num_labels=2,
    label_names=("negative", "positive"),
    metrics=("accuracy", "f1"),
    main_metric="accuracy",
    eval_splits=("validation",),
    test_splits=("test",),
)

BUILTIN_TASKS: dict[str, TaskSpec] = {"movie-sentiment": MOVIE_SENTIMENT}


def known_task_names() -> list[str]:
    """Canonical names accepted by :func:`get_task`."""
    return [s.name for s in GLUE_TASKS.values()] + [s.name for s in BUILTIN_TASKS.values()]


def get_task(name: str | TaskSpec) -> TaskSpec:
    """Look up a task: ``glue/<task>``, ``<task>`` (GLUE, e.g. ``SST-2``), ``builtin/<name>``.

    A :class:`TaskSpec` passes through. Unknown names raise ``ValueError`` listing known ones.
    """
    if isinstance(name, TaskSpec):
        return name
    if not isinstance(name, str):
        raise ValueError(f"task={name!r} must be a task name; known: {known_task_names()}")
    key = name.strip().lower()
    prefix, _, rest = key.rpartition("/")
    short = rest.replace("-", "").replace("_", "")
    if prefix in ("", "glue") and short in GLUE_TASKS:
        return GLUE_TASKS[short]
    if prefix in ("", "builtin") and rest in BUILTIN_TASKS:
        return BUILTIN_TASKS[rest]
    raise ValueError(f"task={name!r} is unknown; known tasks: {', '.join(known_task_names())}")


def custom_task(
    text_fields: Sequence[str] | str,
    label_field: str = "label",
    num_labels: int | None = None,
    *,
    regression: bool = False,
    label_names: Sequence[str] | None = None,
    name: str = "custom",
    label_range: tuple[float, float] | None = None,
) -> TaskSpec:
    """A spec for user data whose columns are ``text_fields`` and ``label_field``.

    Classification needs ``num_labels`` or ``label_names`` (default names ``"0"``, ``"1"``, …);
    metrics are accuracy (+ F1 of class 1 and MCC when binary), main metric accuracy.
    Regression (``regression=True``) is scored by Pearson (main) and Spearman.
    """
    fields = (text_fields,) if isinstance(text_fields, str) else tuple(text_fields)
    if regression:
        if num_labels not in (None, 1) or label_names:
            raise ValueError(
                f"custom task {name!r}: regression takes no num_labels={num_labels} "
                f"or label_names={label_names}"
            )
        return TaskSpec(
            name=name, text_fields=fields, label_field=label_field, num_labels=1,
            is_regression=True, metrics=("pearson", "spearman"), main_metric="pearson",
            label_range=label_range,
        )
    if label_names is not None:
        names = tuple(str(n) for n in label_names)
        if num_labels is not None and num_labels != len(names):
            raise ValueError(
                f"custom task {name!r}: num_labels={num_labels} but {len(names)} label_names"
            )
    elif num_labels is not None:
        names = tuple(str(i) for i in range(num_labels))
    else:
        raise ValueError(
            f"custom task {name!r}: pass num_labels or label_names (or regression=True)"
        )
    metrics = ("accuracy", "f1", "mcc") if len(names) == 2 else ("accuracy",)
    return TaskSpec(
        name=name, text_fields=fields, label_field=label_field, num_labels=len(names),
        label_names=names, metrics=metrics, main_metric="accuracy",
    )
