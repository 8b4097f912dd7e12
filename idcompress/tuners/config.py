"""``IntrinsicConfig``: every choice that, with the base model, rebuilds a tuned model exactly."""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from typing import Any

from ..projection import PROJECTIONS
from ..projection.rng import RNG_NAME, RNG_VERSION
from ..version import __version__

METHODS = ("said", *PROJECTIONS)  # "said" = fastfood + one learned scale per tensor
VECTOR_DTYPES = ("float32", "float16", "bfloat16")
PEFT_TYPE = "INTRINSIC"
RNG_ID = f"{RNG_NAME}/{RNG_VERSION}"


@dataclass
class IntrinsicConfig:
    """Configuration of an intrinsic-dimension adapter (SPEC §1, §5).

    ``d`` is the total number of trained numbers (for SAID it includes the ``m`` per-tensor scales).
    ``include``/``exclude`` are ``fnmatch`` globs over parameter names (``"classifier.*"``,
    ``"*.attention.*"``); by default every floating-point parameter is tuned. ``init_new`` lists the
    parameters the pretrained checkpoint lacks, re-initialised from the seeded generator
    (``"auto"``: what the loader reported missing, else, for transformers models, every parameter
    outside ``base_model_prefix``; resolved to explicit names when the adapter is built).
    The fields after ``label_names`` are filled in by ``get_intrinsic_model``.
    """

    d: int
    projection: str = "said"
    seed: int = 0
    include: list[str] | None = None
    exclude: list[str] | None = None
    init_new: list[str] | str | None = "auto"
    init_std: float | None = None
    vector_dtype: str = "float32"
    task_type: str | None = None
    base_model_name_or_path: str | None = None
    revision: str | None = None
    label_names: list[str] | None = None
    num_labels: int | None = None
    problem_type: str | None = None
    # --- filled in when the adapter is built -----------------------------------------------
    D: int | None = None
    num_tensors: int | None = None
    layout_digest: str | None = None
    base_fingerprint: str | None = None
    rng: str = RNG_ID
    peft_type: str = PEFT_TYPE
    idcompress_version: str = __version__
    digest: str | None = None  # integrity digest, written at save (checkpoint/integrity.py)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field and value for anything malformed."""
        if not isinstance(self.d, int) or isinstance(self.d, bool) or self.d <= 0:
            raise ValueError(f"IntrinsicConfig.d must be a positive integer, got d={self.d!r}")
        if self.projection not in METHODS:
            raise ValueError(
                f"IntrinsicConfig.projection={self.projection!r} is unknown; choose one of {list(METHODS)}"
            )
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"IntrinsicConfig.seed must be a non-negative integer, got seed={self.seed!r}")
        for name in ("include", "exclude"):
            v = getattr(self, name)
            if isinstance(v, str):
                setattr(self, name, [v])
            elif v is not None and not (isinstance(v, list) and all(isinstance(p, str) for p in v)):
                raise ValueError(f"IntrinsicConfig.{name} must be a list of glob strings, got {v!r}")
        if not (
            self.init_new is None
            or self.init_new == "auto"
            or (isinstance(self.init_new, list) and all(isinstance(p, str) for p in self.init_new))
        ):
            raise ValueError(f"IntrinsicConfig.init_new must be 'auto', None or a list of names, got {self.init_new!r}")
        if self.init_std is not None and not (isinstance(self.init_std, (int, float)) and self.init_std >= 0):
            raise ValueError(f"IntrinsicConfig.init_std must be a non-negative number, got {self.init_std!r}")
        if self.vector_dtype not in VECTOR_DTYPES:
            raise ValueError(
                f"IntrinsicConfig.vector_dtype={self.vector_dtype!r} is unknown; choose one of {list(VECTOR_DTYPES)}"
            )
        for name in ("D", "num_tensors", "num_labels"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
                raise ValueError(f"IntrinsicConfig.{name} must be a positive integer, got {v!r}")
        for name in ("task_type", "base_model_name_or_path", "revision", "problem_type",
                     "layout_digest", "base_fingerprint", "rng", "peft_type", "idcompress_version", "digest"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                raise ValueError(f"IntrinsicConfig.{name} must be a string, got {v!r}")
        if not isinstance(self.extra, dict):
            raise ValueError(f"IntrinsicConfig.extra must be an object, got {self.extra!r}")
        if self.label_names is not None and not (
            isinstance(self.label_names, list) and all(isinstance(x, str) for x in self.label_names)
        ):
            raise ValueError(f"IntrinsicConfig.label_names must be a list of strings, got {self.label_names!r}")

    @property
    def is_said(self) -> bool:
        return self.projection == "said"

    @property
    def projection_kind(self) -> str:
        """The projection ``P`` is built from (SAID uses Fastfood)."""
        return "fastfood" if self.is_said else self.projection

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> IntrinsicConfig:
        """Build from a dict; unknown fields (from a newer version) warn and are kept in ``extra``."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = {k: v for k, v in data.items() if k not in known}
        if unknown:
            warnings.warn(
                f"{source}: ignoring unknown fields {sorted(unknown)} (written by a newer idcompress?)",
                stacklevel=2,
            )
        kwargs = {k: v for k, v in data.items() if k in known}
        if "d" not in kwargs:
            raise ValueError(f"{source}: missing required field 'd'")
        extra = dict(kwargs.pop("extra", {}) or {})
        extra.update(unknown)
        try:
            return cls(**kwargs, extra=extra)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None
        except TypeError as e:
            raise ValueError(f"{source}: {e}") from None
