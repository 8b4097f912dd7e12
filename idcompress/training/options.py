"""The options of ``idcompress finetune``: one dataclass, filled from defaults, YAML and flags.

Precedence (lowest first): the dataclass defaults; the built-in demo preset (only when no data
source is named: no ``task``, ``train_file``/``validation_file`` or ``data_dir`` in the YAML or
on the command line); the YAML file of ``--config``; the flags given explicitly.

YAML keys are the flag names with underscores (``batch_size: 32``; ``batch-size`` is accepted
too). An unknown key is a ``ValueError`` naming the key and the file. Values are checked against
the field types (``lr: 2e-5``, which YAML 1.1 reads as a string, is accepted as a float).

Image tasks (``image/<name>``, ``imagefolder``) take ``image_size`` and refuse the text-only
options (``max_length``, ``text_columns``, ``label_column``, ``train_file``/``validation_file``)
with an error naming the flag; ``image_size`` with a text task is refused the same way. LoRA is
text-only (its targets are the attention ``query``/``value`` layers of BERT-like models).

``lr`` left unset takes the method's default from :data:`DEFAULT_LR`: the intrinsic vector
moves every weight through a unit-norm projection, so it needs a learning rate thousands of times
that of full fine-tuning. The defaults come from runs of MiniLM-L6 on ``builtin/movie-sentiment``
(2,000 sentences, 3 epochs, batch 32). A YAML ``lr`` belongs to the YAML's ``method``: a
``--method`` flag that changes the method without ``--lr`` falls back to the new method's default.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..flags import check_choice, check_number, check_positive_int
from ..names import PROJECTION_CHOICES

#: what ``finetune`` trains: the intrinsic vector (with a projection), every weight, or LoRA
TRAINING_METHODS = ("intrinsic", "full", "lora")
MIXED_PRECISION = ("no", "fp16", "bf16")

#: AdamW learning rate per method when ``lr`` is not given; for ``intrinsic`` the value at
#: d = 1000, scaled by sqrt(1000 / d) (see :func:`default_lr`).
DEFAULT_LR = {"intrinsic": 0.2, "full": 1e-4, "lora": 2e-3}

DEFAULT_TASK = "builtin/movie-sentiment"
DEFAULT_DIM = 1000

#: What ``idcompress finetune`` with no data source runs: MiniLM-L6 on a subset of the built-in
#: movie sentences, sized to finish in about five minutes on two CPU cores.
DEMO_PRESET: dict[str, Any] = {
    "task": DEFAULT_TASK,
    "max_train_samples": 2000,
    "max_eval_samples": 500,
    "max_length": 64,
    "epochs": 3,
    "batch_size": 32,
}


@dataclass
class FinetuneOptions:
    """Everything a fine-tuning run depends on (field = CLI flag with dashes = YAML key)."""

    # data
    task: str | None = None
    train_file: str | None = None
    #: one file, or several (``validation_file: [a, b]`` / ``--validation-file`` repeated), each
    #: a path or ``split=path`` (MNLI: ``validation_matched=dev_m.tsv``)
    validation_file: list[str] | None = None
    data_dir: str | None = None
    text_columns: list[str] | None = None
    label_column: str | None = None
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    max_length: int = 128
    image_size: int | None = None
    # generative tasks (text/causal-lm, text/seq2seq; see idcompress.training.lm)
    dataset: str | None = None
    dataset_config: str | None = None
    packing: bool = False
    num_samples: int = 3
    max_new_tokens: int = 32
    # model and method
    model: str = "minilm-l6"
    method: str = "intrinsic"
    dim: int = DEFAULT_DIM
    projection: str = "said"
    # optimisation
    epochs: int = 3
    lr: float | None = None
    batch_size: int = 32
    grad_accum: int = 1
    warmup_ratio: float = 0.06
    weight_decay: float = 0.0
    mixed_precision: str = "no"
    seed: int = 0
    # evaluation, checkpoints, output
    eval_every_epoch: bool = True
    early_stop: int | None = None
    output_dir: str | None = None
    save_every: int | None = None
    resume: bool = False
    stop_after_steps: int | None = None
    no_report: bool = False
    # logging and sharing
    report_to: str = "none"
    logging_steps: int | None = None
    vector_dtype: str = "float32"
    push_to_hub: str | None = None
    overwrite: bool = False  # start anew in an --output-dir that holds a run (replaces it)

    def __post_init__(self) -> None:
        if isinstance(self.validation_file, str):
            self.validation_file = [self.validation_file]
        self.validate()

    @property
    def learning_rate(self) -> float:
        """``lr``, or the method's default (:func:`default_lr`)."""
        return float(self.lr) if self.lr is not None else default_lr(self.method, self.dim)

    def validate(self) -> None:
        """``ValueError`` naming the flag and value for anything out of range."""
        choices = {"method": TRAINING_METHODS, "projection": PROJECTION_CHOICES, "mixed_precision": MIXED_PRECISION}
        for name, allowed in choices.items():
            check_choice(name, getattr(self, name), allowed)
        positive = ("dim", "epochs", "batch_size", "grad_accum", "max_length",
                    "max_train_samples", "max_eval_samples", "early_stop", "save_every",
                    "stop_after_steps", "image_size", "logging_steps", "max_new_tokens")
        for name in positive:
            check_positive_int(name, getattr(self, name))
        if self.max_length < 2:
            raise ValueError(f"--max-length={self.max_length} must be at least 2 tokens")
        _check_numbers(self)
        if self.seed < 0:
            raise ValueError(f"--seed={self.seed} must be a non-negative integer")
        if (self.train_file is None) != (self.validation_file is None):
            missing = "--train-file" if self.train_file is None else "--validation-file"
            raise ValueError(f"local files need both --train-file and --validation-file; "
                             f"{missing} is missing")
        if self.resume and not self.output_dir:
            raise ValueError("--resume needs --output-dir (the folder of the run to continue)")
        from .lm_options import validate_lm_and_sharing

        validate_lm_and_sharing(self)
        if self.resume and self.overwrite:
            raise ValueError("--resume continues the run in --output-dir and --overwrite replaces "
                             "it: pass one of them")
        self._validate_modality()

    @property
    def is_lm_task(self) -> bool:
        """True for the generative tasks ``text/causal-lm`` and ``text/seq2seq``."""
        from ..names import is_lm_task

        return is_lm_task(self.task)

    @property
    def is_image_task(self) -> bool:
        """True for ``image/<name>`` and ``imagefolder`` tasks."""
        return is_image_task(self.task)

    def _validate_modality(self) -> None:
        """Text-only flags with an image task (and the reverse) are refused, naming the flag."""
        if not self.is_image_task:
            from ..models.saved import ARCHITECTURES

            if self.image_size is not None:
                raise ValueError(f"--image-size={self.image_size} is for image tasks (image/<name>, "
                                 f"imagefolder); task {self.task!r} is a text task")
            if self.model.strip().lower() in ARCHITECTURES:
                raise ValueError(f"--model {self.model!r} is an image model; task {self.task!r} "
                                 "is a text task (image tasks: --task image/<name> or imagefolder)")
            return
        from ..data.images import known_image_tasks

        task = self.task
        if task.strip().lower() not in known_image_tasks():
            raise ValueError(f"--task {task!r}: image task is unknown; known image tasks: "
                             f"{', '.join(known_image_tasks())}")
        text_only = {"train_file": "--train-file", "validation_file": "--validation-file",
                     "text_columns": "--text-columns", "label_column": "--label-column"}
        for name, flag in text_only.items():
            if getattr(self, name) is not None:
                raise ValueError(f"{flag}={getattr(self, name)!r} is for text tasks; image task "
                                 f"{task!r} reads its own image/label columns (a local image "
                                 "folder: --task imagefolder --data-dir DIR)")
        if self.max_length != FIELDS["max_length"].default:
            raise ValueError(f"--max-length={self.max_length} is for text tasks (tokens); image "
                             f"task {task!r} takes --image-size instead")
        key = task.strip().lower()
        if key == "imagefolder" and not self.data_dir:
            raise ValueError("--task imagefolder needs --data-dir DIR (a folder of "
                             "<split>/<class>/<image> or <class>/<image> files)")
        if self.data_dir and key not in IMAGE_TASKS_WITH_DATA_DIR:
            raise ValueError(f"--data-dir={self.data_dir!r} is not used by task {task!r}; only "
                             f"{' and '.join(IMAGE_TASKS_WITH_DATA_DIR)} read a folder")
        if self.method == "lora":
            raise ValueError(f"--method lora is for text models (LoRA on attention query/value); "
                             f"image task {task!r} takes --method intrinsic or full")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


IMAGE_TASKS_WITH_DATA_DIR = ("imagefolder", "image/fashion-mnist")


def is_image_task(task: str | None) -> bool:
    """``image/<name>`` or ``imagefolder`` (case-insensitive)."""
    if not isinstance(task, str):
        return False
    key = task.strip().lower()
    return key.startswith("image/") or key == "imagefolder"


def default_lr(method: str, dim: int) -> float:
    """The default AdamW learning rate of ``method``; for ``intrinsic`` it is ``0.2 * sqrt(1000/d)``.

    Why the scaling: Adam moves each of the d coordinates by about ``lr`` per step, so the step
    of θ_d, and (P being near an isometry) of the weights θ, has norm ≈ ``lr * sqrt(d)``. On
    MiniLM-L6 runs diverged once that step reached ~20 (d=1000 at lr 1.0, d=2000 at lr 0.5)
    and trained well at 6-16 (d=1000 at 0.2 and 0.5, d=2000 at 0.2, d=4000 at 0.1); the default
    keeps it at 6.3 for every d.
    """
    if method == "intrinsic":
        return DEFAULT_LR["intrinsic"] * math.sqrt(1000 / dim)
    return DEFAULT_LR[method]


def _check_numbers(o: FinetuneOptions) -> None:
    """Non-finite or out-of-range optimisation numbers, refused naming the flag and value."""
    checks = (("lr", o.lr, "a finite number > 0", lambda v: v > 0),
              ("weight_decay", o.weight_decay, "a finite number >= 0", lambda v: v >= 0),
              ("warmup_ratio", o.warmup_ratio, "a finite number in [0, 1)", lambda v: 0 <= v < 1))
    for name, v, want, ok in checks:
        if v is None and name == "lr":
            continue
        check_number(name, v, want, ok)


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(FinetuneOptions)}
_HINTS = typing.get_type_hints(FinetuneOptions)


def _base_type(name: str) -> tuple[type, bool]:
    """(scalar or list type, optional?) of a field from its annotation."""
    hint = _HINTS[name]
    args = typing.get_args(hint)
    optional = type(None) in args
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in args if a is not type(None))
    if typing.get_origin(hint) is list:
        return list, optional
    return hint, optional


def coerce(name: str, value: Any, source: str) -> Any:
    """Check/convert one YAML value for field ``name``; ``ValueError`` naming key and source."""
    kind, optional = _base_type(name)
    where = f"{source}: key {name!r}"
    if value is None:
        if optional:
            return None
        raise ValueError(f"{where} must not be empty")
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{where}={value!r} must be true or false")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"{where}={value!r} must be an integer")
    if kind is float:
        if isinstance(value, bool):
            raise ValueError(f"{where}={value!r} must be a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}={value!r} must be a number") from None
    if kind is list:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise ValueError(f"{where}={value!r} must be a string or a list of strings")
    if name == "mixed_precision" and value is False:
        return "no"  # YAML 1.1 reads a bare ``no`` as false
    if not isinstance(value, str):
        raise ValueError(f"{where}={value!r} must be a string")
    return value


def load_yaml_options(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping of options; ``ValueError`` for unknown keys or bad values."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--config {str(p)!r}: no such file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"--config {str(p)!r} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"--config {str(p)!r} must hold a mapping of options, got "
                         f"{type(data).__name__}")
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in FIELDS or name in _FLAG_ONLY:
            known = ", ".join(sorted(n for n in FIELDS if n not in _FLAG_ONLY))
            raise ValueError(f"--config {str(p)!r}: unknown key {key!r}; known keys: {known}")
        out[name] = coerce(name, value, f"--config {str(p)!r}")
    return out


_FLAG_ONLY = ("resume", "stop_after_steps", "overwrite")  # per invocation, not per config


def has_data_source(values: dict[str, Any]) -> bool:
    return any(values.get(k) is not None for k in ("task", "train_file", "validation_file",
                                                    "data_dir", "dataset"))


def merge_options(explicit: dict[str, Any], yaml_values: dict[str, Any] | None = None
                  ) -> FinetuneOptions:
    """Defaults ← demo preset (no data source named) ← YAML ← explicit flags."""
    yaml_values = dict(yaml_values or {})
    merged: dict[str, Any] = {}
    if not has_data_source(yaml_values) and not has_data_source(explicit):
        merged.update(DEMO_PRESET)
    merged.update(yaml_values)
    method_changed = "method" in explicit and explicit["method"] != yaml_values.get(
        "method", merged.get("method", "intrinsic"))
    if method_changed and "lr" not in explicit:
        merged.pop("lr", None)  # a YAML lr was tuned for the YAML's method
    merged.update({k: v for k, v in explicit.items() if k in FIELDS})
    if merged.get("task") is None:
        merged["task"] = DEFAULT_TASK
    if is_image_task(merged["task"]) and ("max_length" in explicit or "max_length" in yaml_values):
        value = explicit.get("max_length", yaml_values.get("max_length"))
        raise ValueError(f"--max-length={value} is for text tasks (tokens); image task "
                         f"{merged['task']!r} takes --image-size instead")
    return FinetuneOptions(**merged)
