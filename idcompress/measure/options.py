"""The options of ``idcompress measure``: one dataclass, filled from defaults, a recipe and flags.

Precedence (lowest first): the dataclass defaults; the recipe of ``--recipe`` (keys = flag names
with underscores, :mod:`.recipe`); the flags given explicitly (:func:`parse_flags` turns their
strings into values). A field is a recipe key; its flag is the key with dashes, except
``models``/``projections``, whose flags are ``--model``/``--projection`` (comma lists).
:meth:`MeasureOptions.validate` refuses anything out of range with a ``ValueError`` naming the
flag and the value, before the first run. Training settings left ``None`` take the defaults of
the task family and model (:mod:`.defaults`, filled in by :func:`.tasks.settings_for`).

Torch-free: ``--devices`` is checked against torch only when :meth:`~MeasureOptions.validate`
runs, and only when devices are given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..flags import flag
from .defaults import DEFAULT_DIMS
from .search import validate_dims, validate_fraction, validate_reference, validate_seeds
from .store import SCORE_SETTINGS

if TYPE_CHECKING:
    from .tasks import Target, TrainSettings

_POSITIVE_INTS = ("epochs", "batch_size", "baseline_epochs", "max_train_samples",
                  "max_eval_samples", "max_length", "image_size", "threads")
_FLOATS = ("fraction", "reference_score", "rel_tol", "lr", "baseline_lr")
_FLAG_FIELDS = {"model": "models", "projection": "projections"}


@dataclass
class MeasureOptions:
    """Everything one ``idcompress measure`` invocation measures and how (see the module doc)."""

    # what to measure
    task: str | None = None
    models: list[str] = field(default_factory=list)
    projections: list[str] = field(default_factory=lambda: ["said"])
    dims: list[int] | None = None  # None: DEFAULT_DIMS cut to each model (dims_for)
    fraction: float = 0.9
    extra_fractions: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    reference_score: float | None = None
    metric: str | None = None
    rel_tol: float = 0.05
    # training (None: the family's and model's defaults)
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    baseline_epochs: int | None = None
    baseline_lr: float | None = None
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    max_length: int | None = None
    image_size: int | None = None
    # execution and output
    devices: list[str] | None = None
    threads: int | None = None
    output_dir: str | None = None
    description: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """``ValueError`` naming the flag and value for anything out of range; normalises values."""
        from ..names import PROJECTION_CHOICES

        if not self.task:
            raise ValueError("give --task (and --model), or --recipe")
        if not self.models:
            raise ValueError(f"give --model for task {self.task!r}")
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"--model lists a model twice: {self.models}")
        for name in _POSITIVE_INTS:
            _check_positive(name, getattr(self, name), int)
        for name in ("lr", "baseline_lr"):
            _check_positive(name, getattr(self, name), (int, float))
        self.fraction = validate_fraction(self.fraction, "--fraction")
        self.extra_fractions = [validate_fraction(g, "--extra-fractions")
                                for g in self.extra_fractions]
        if self.dims is not None:
            self.dims = _prefixed("--dims", validate_dims, self.dims)
        self.seeds = _prefixed("--seeds", validate_seeds, self.seeds)
        if self.reference_score is not None:
            self.reference_score = validate_reference(self.reference_score, "--reference-score")
        if not 0 <= self.rel_tol < 1:
            raise ValueError(f"--rel-tol must lie in [0, 1), got {self.rel_tol!r}")
        for proj in self.projections:
            if proj not in PROJECTION_CHOICES:
                raise ValueError(f"--projection {proj!r} is unknown; choose from "
                                 f"{list(PROJECTION_CHOICES)}")
        if len(set(self.projections)) != len(self.projections):
            raise ValueError(f"--projection lists a projection twice: {self.projections}")
        if self.devices:
            _check_devices(self.devices)

    # -- what the command derives from them ------------------------------------------------------
    @property
    def n_workers(self) -> int:
        """Worker processes: one per entry of ``devices`` when it has two or more, else 1."""
        n = len(self.devices or [])
        return n if n >= 2 else 1

    def check_target(self, target: Target) -> None:
        """Refuse options that do not apply to a resolved :class:`.tasks.Target`."""
        if self.max_length is not None and target.family == "image-transformers":
            raise ValueError(f"--max-length={self.max_length} is for text tasks (tokens); image "
                             f"task {target.task!r} takes --image-size instead")

    def dims_for(self, target: Target) -> list[int]:
        """``dims``, else :data:`.defaults.DEFAULT_DIMS` cut to what ``target`` can take
        (``d ≤ D``; with SAID among the projections, ``d > m``)."""
        if self.dims is not None:
            return self.dims
        dims = [d for d in DEFAULT_DIMS if target.D is None or d <= target.D]
        if "said" in self.projections and target.m is not None:
            dims = [d for d in dims if d > target.m]
        return dims

    def train_settings(self, target: Target) -> TrainSettings:
        """The :class:`.tasks.TrainSettings` of ``target``'s runs. ``threads`` unset: 1 per run
        for digits (its default), else the CPU count shared among the workers."""
        from .tasks import TrainSettings

        threads = self.threads
        if threads is None and target.family != "digits":
            threads = max(1, (os.cpu_count() or 1) // self.n_workers)
        # the settings that change a score, and the threads, which do not
        return TrainSettings(**{k: getattr(self, k) for k in SCORE_SETTINGS}, num_threads=threads)

    def output_dirs(self, targets: list[Target]) -> tuple[Path, list[Path]]:
        """``(base folder, one results folder per target)``: ``output_dir`` (default
        ``runs/measure/<task>-<model>``, or ``runs/measure/<task>`` for several models) holds
        the results of one model, or one ``<model>`` subfolder per model."""
        first = targets[0]
        name = f"{first.task}-{first.model}" if len(targets) == 1 else first.task
        base = Path(self.output_dir or Path("runs", "measure", _slug(name)))
        if len(targets) == 1:
            return base, [base]
        return base, [base / _slug(t.model) for t in targets]


def _slug(text: str) -> str:
    return text.strip().replace("/", "--").replace(os.sep, "--")


def _check_positive(name: str, value: Any, kind: type | tuple[type, ...]) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, kind):
        want = "an integer" if kind is int else "a number"
        raise ValueError(f"{flag(name)} must be {want}, got {value!r}")
    if not value > 0:
        raise ValueError(f"{flag(name)} must be positive, got {value!r}")


def _prefixed(flag_name: str, check, value: Any) -> Any:
    """``check(value)``, its ``ValueError`` prefixed with the flag."""
    try:
        return check(value)
    except ValueError as e:
        raise ValueError(f"{flag_name}: {e}") from None


def _check_devices(devices: list[str]) -> None:
    import torch

    for dev in devices:
        try:
            parsed = torch.device(dev)
        except (RuntimeError, ValueError):
            raise ValueError(f"--devices: {dev!r} is not a device (e.g. cpu, cuda:0)") from None
        if parsed.type == "cuda":
            n = torch.cuda.device_count()
            if parsed.index is None or parsed.index >= n:
                raise ValueError(f"--devices: {dev!r} is not available (this machine has {n} CUDA "
                                 "device(s); name them as cuda:0, cuda:1, ...)")
        elif parsed.type != "cpu":
            raise ValueError(f"--devices: {dev!r}: only cpu and cuda:N are supported")


# -- from the command line ------------------------------------------------------------------------
def _int(text: str, name: str) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise ValueError(f"{flag(name)} must be an integer, got {text!r}") from None


def _float(text: str, name: str) -> float:
    try:
        return float(str(text).strip())
    except ValueError:
        raise ValueError(f"{flag(name)} must be a number, got {text!r}") from None


def _items(text: str, name: str) -> list[str]:
    items = [x.strip() for x in str(text).split(",")]
    if not any(items):
        raise ValueError(f"{flag(name)} must not be empty")
    if not all(items):
        raise ValueError(f"{flag(name)}={text!r} has an empty entry")
    return items


def _seeds(text: str) -> list[int]:
    """``K`` → seeds ``0..K-1``; a comma list → those seeds."""
    items = _items(text, "seeds")
    if len(items) == 1 and "," not in str(text):
        k = _int(items[0], "seeds")
        if k < 1:
            raise ValueError(f"--seeds K must be at least 1, got {text!r}")
        return list(range(k))
    return [_int(x, "seeds") for x in items]


def parse_flags(raw: dict[str, str]) -> dict[str, Any]:
    """Flag strings (``{"dims": "10,100", "model": "a,b", ...}``, names with underscores) →
    field values (``{"dims": [10, 100], "models": ["a", "b"], ...}``); ``ValueError`` naming
    the flag for a string that does not parse."""
    out: dict[str, Any] = {}
    for name, text in raw.items():
        key = _FLAG_FIELDS.get(name, name)
        if name in ("model", "projection", "devices"):
            out[key] = _items(text, name)
        elif name == "dims":
            out[key] = [_int(x, name) for x in _items(text, name)]
        elif name == "extra_fractions":
            out[key] = [_float(x, name) for x in _items(text, name)]
        elif name == "seeds":
            out[key] = _seeds(text)
        elif name in _FLOATS:
            out[key] = _float(text, name)
        elif name in _POSITIVE_INTS:
            out[key] = _int(text, name)
        else:  # task, metric, output_dir
            out[key] = str(text)
    return out


def resolve_options(flags: dict[str, str], recipe: str | os.PathLike | None = None
                    ) -> MeasureOptions:
    """Defaults ← the recipe at ``recipe`` ← ``flags`` (strings, see :func:`parse_flags`),
    validated; ``FileNotFoundError`` for a recipe that is not there."""
    from .recipe import load_recipe

    values: dict[str, Any] = {}
    if recipe is not None:
        if not Path(recipe).is_file():
            raise FileNotFoundError(f"--recipe {str(recipe)!r}: no such file")
        values.update(load_recipe(recipe))
    values.update(parse_flags(flags))
    return MeasureOptions(**values)
