"""``IntrinsicConfig``: a ``peft.PeftConfig`` holding every choice that, with the base, rebuilds a tuned model.

It is PEFT's config class for the ``INTRINSIC`` method (registered in :mod:`.registration`), so
``peft.get_peft_model(model, IntrinsicConfig(d=1000))`` works. What ``adapter_config.json`` holds
is :meth:`IntrinsicConfig.to_dict`: the fields below plus PEFT's ``task_type``, ``peft_type``,
``base_model_name_or_path`` and ``revision`` (design notes: ``docs/design.md``, "The checkpoint").
PEFT's run-time fields (``inference_mode``, ``auto_mapping``, ``peft_version``) are accepted when
a file carries them but are not part of the checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from typing import Any

from peft.config import PeftConfig
from peft.utils.peft_types import TaskType

from ..checkpoint.format import vector_lengths
from ..names import PROJECTION_CHOICES, VECTOR_DTYPES
from ..projection.rng import RNG_NAME, RNG_VERSION
from ..version import __version__

RNG_ID = f"{RNG_NAME}/{RNG_VERSION}"
#: task types beyond PEFT's own (PEFT wraps them in a plain ``PeftModel``)
EXTRA_TASK_TYPES = ("IMAGE_CLS",)
#: PEFT fields that are not written to (or compared in) a checkpoint
RUNTIME_FIELDS = ("inference_mode", "auto_mapping", "peft_version", "allow_fingerprint_mismatch")
_PEFT_TASK_TYPES = tuple(t.value for t in TaskType)


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


@dataclass
class IntrinsicConfig(PeftConfig):
    """Configuration of an intrinsic-dimension adapter: θ_t = θ₀_t + λ_t·(P θ_d)_t.

    ``d`` is the total number of trained numbers (for SAID it includes the ``m`` per-tensor
    scales). ``include``/``exclude`` are ``fnmatch`` globs over parameter names (``"classifier.*"``,
    ``"*.attention.*"``); by default every floating-point parameter is tuned. ``init_new`` lists
    the parameters the pretrained checkpoint lacks, re-initialised from the seeded generator
    (``"auto"``: what the loader reported missing, else, for transformers models, every parameter
    outside ``base_model_prefix``; resolved to explicit names when the adapter is built). When
    ``base_model_name_or_path`` is not given it is taken from the model (``name_or_path``), as
    PEFT does. The fields after ``problem_type`` are filled in when the adapter is built.
    """

    d: int = field(default=None, kw_only=True, metadata={"help": "trained numbers (SAID: incl. the m scales)"})
    projection: str = field(default="said", kw_only=True)
    seed: int = field(default=0, kw_only=True)
    include: list[str] | None = field(default=None, kw_only=True)
    exclude: list[str] | None = field(default=None, kw_only=True)
    init_new: list[str] | str | None = field(default="auto", kw_only=True)
    init_std: float | None = field(default=None, kw_only=True)
    vector_dtype: str = field(default="float32", kw_only=True)
    label_names: list[str] | None = field(default=None, kw_only=True)
    num_labels: int | None = field(default=None, kw_only=True)
    problem_type: str | None = field(default=None, kw_only=True)
    # --- filled in when the adapter is built -----------------------------------------------
    D: int | None = field(default=None, kw_only=True)
    num_tensors: int | None = field(default=None, kw_only=True)
    layout_digest: str | None = field(default=None, kw_only=True)
    base_fingerprint: str | None = field(default=None, kw_only=True)
    rng: str = field(default=RNG_ID, kw_only=True)
    idcompress_version: str = field(default=__version__, kw_only=True)
    #: integrity digest over this config and the vectors, written at save (``checkpoint/integrity.py``)
    digest: str | None = field(default=None, kw_only=True)
    extra: dict[str, Any] = field(default_factory=dict, kw_only=True)
    #: run time only: load onto a base whose fingerprint differs (loudly)
    allow_fingerprint_mismatch: bool = field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        task = getattr(self.task_type, "value", self.task_type)
        if task is not None and task not in _PEFT_TASK_TYPES + EXTRA_TASK_TYPES:
            raise ValueError(
                f"IntrinsicConfig.task_type={task!r} is unknown; choose one of "
                f"{list(_PEFT_TASK_TYPES + EXTRA_TASK_TYPES)} or None"
            )
        self.task_type = task
        if self.peft_version is None:
            self.peft_version = self._get_peft_version()
        self.peft_type = _peft_type()
        self.validate()

    # PEFT asks these of every config
    @property
    def is_prompt_learning(self) -> bool:
        return False

    @property
    def is_adaption_prompt(self) -> bool:
        return False

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field and value for anything malformed."""
        if not _positive_int(self.d):
            raise ValueError(f"IntrinsicConfig.d must be a positive integer, got d={self.d!r}")
        if self.projection not in PROJECTION_CHOICES:
            raise ValueError(
                f"IntrinsicConfig.projection={self.projection!r} is unknown; choose one of {list(PROJECTION_CHOICES)}"
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
        if self.init_std is not None and not (
            isinstance(self.init_std, (int, float)) and not isinstance(self.init_std, bool) and self.init_std >= 0
        ):
            raise ValueError(f"IntrinsicConfig.init_std must be a non-negative number, got {self.init_std!r}")
        if self.vector_dtype not in VECTOR_DTYPES:
            raise ValueError(
                f"IntrinsicConfig.vector_dtype={self.vector_dtype!r} is unknown; choose one of {list(VECTOR_DTYPES)}"
            )
        for name in ("D", "num_tensors", "num_labels"):
            v = getattr(self, name)
            if v is not None and not _positive_int(v):
                raise ValueError(f"IntrinsicConfig.{name} must be a positive integer, got {v!r}")
        for name in ("base_model_name_or_path", "revision", "problem_type", "layout_digest",
                     "base_fingerprint", "rng", "idcompress_version", "digest"):
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

    @property
    def theta_d_length(self) -> int:
        """Length of ``theta_d``: ``d``, less SAID's ``m`` scales (needs ``num_tensors`` for SAID)."""
        return vector_lengths(self.projection, self.d, self.num_tensors)[0]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, subfolder=None, **kwargs) -> IntrinsicConfig:
        """PEFT's loader (``adapter_config.json`` from a folder or the hub), remembering where it came from."""
        config = super().from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **kwargs)
        config._source = str(pretrained_model_name_or_path) + (f"/{subfolder}" if subfolder else "")
        return config

    # -- serialisation -----------------------------------------------------------------------------
    @classmethod
    def checkpoint_fields(cls) -> list[str]:
        """The fields ``adapter_config.json`` holds (sorted)."""
        return sorted(f.name for f in dataclasses.fields(cls) if f.name not in RUNTIME_FIELDS)

    def to_dict(self) -> dict[str, Any]:
        """What ``adapter_config.json`` holds: the checkpoint fields, plain JSON values."""
        out = {}
        for name in self.checkpoint_fields():
            v = getattr(self, name)
            out[name] = getattr(v, "value", v) if isinstance(v, str) else json.loads(json.dumps(v))
        return out

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
        kwargs = {k: v for k, v in data.items() if k in known and k not in RUNTIME_FIELDS and k != "peft_type"}
        if kwargs.get("d") is None:
            raise ValueError(f"{source}: missing required field 'd'")
        extra = dict(kwargs.pop("extra", {}) or {})
        extra.update(unknown)
        try:
            return cls(**kwargs, extra=extra)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{source}: {e}") from None


def _peft_type():
    from .registration import peft_type_member

    return peft_type_member()
