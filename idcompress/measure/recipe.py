"""Recipes: YAML files whose keys mirror the flags of ``idcompress measure``.

:func:`load_recipe` reads one, rejects unknown keys and malformed values (``ValueError`` naming
the key and the file), and returns a normalised dict:

- ``model`` or ``models`` (exactly one) becomes ``models``: a list; ``projection`` or
  ``projections`` (at most one; default ``["said"]``) becomes ``projections``: a list. With
  several models each one writes into ``<output_dir>/<model>`` (a results directory holds one
  task and one model).
- Defaults are filled in for ``fraction`` (0.9), ``seeds`` ([0]), ``extra_fractions`` ([]),
  ``rel_tol`` (0.05); other optional keys are present only when the file sets them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from .search import validate_dims, validate_fraction, validate_reference, validate_seeds


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ValueError("must be a non-empty string")
    return v


def _str_list(v: Any) -> list[str]:
    if not isinstance(v, list) or not v:
        raise ValueError("must be a non-empty list of strings")
    return [_str(x) for x in v]


def _pos_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError("must be a positive integer")
    return v


def _pos_float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        raise ValueError("must be a positive number")
    return float(v)


def _rel_tol(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
        raise ValueError("must lie in [0, 1)")
    return float(v)


def _projection(v: Any) -> str:
    from ..names import PROJECTION_CHOICES

    if v not in PROJECTION_CHOICES:
        raise ValueError(f"must be one of {list(PROJECTION_CHOICES)}")
    return v


def _list(v: Any) -> list:
    if not isinstance(v, list):
        raise ValueError("must be a list")
    return v


KEYS: dict[str, Callable[[Any], Any]] = {
    "description": _str,
    "task": _str,
    "model": _str,
    "models": _str_list,
    "projection": _projection,
    "projections": lambda v: [_projection(p) for p in _str_list(v)],
    "dims": lambda v: validate_dims(_list(v)),
    "fraction": validate_fraction,
    "extra_fractions": lambda v: [validate_fraction(g, "extra_fractions") for g in _list(v)],
    "seeds": lambda v: validate_seeds(_list(v)),
    "epochs": _pos_int,
    "lr": _pos_float,
    "batch_size": _pos_int,
    "baseline_epochs": _pos_int,
    "baseline_lr": _pos_float,
    "reference_score": validate_reference,
    "metric": _str,
    "rel_tol": _rel_tol,
    "devices": _str_list,
    "threads": _pos_int,
    "max_train_samples": _pos_int,
    "max_eval_samples": _pos_int,
    "max_length": _pos_int,
    "image_size": _pos_int,
    "output_dir": _str,
}
"""Allowed keys and their validators."""

REQUIRED = ("task", "dims")
DEFAULTS: dict[str, Any] = {"fraction": 0.9, "seeds": [0], "extra_fractions": [], "rel_tol": 0.05}


def load_recipe(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate the recipe at ``path``; see the module docstring for the result."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a recipe must be a mapping of keys to values")
    unknown = [k for k in data if k not in KEYS]
    if unknown:
        raise ValueError(
            f"{path}: unknown key {unknown[0]!r}"
            + (f" (and {unknown[1:]})" if len(unknown) > 1 else "")
            + f"; allowed keys: {', '.join(KEYS)}"
        )
    out: dict[str, Any] = {}
    for key, value in data.items():
        try:
            out[key] = KEYS[key](value)
        except ValueError as e:
            raise ValueError(f"{path}: key {key!r}={value!r}: {e}") from None
    for key in REQUIRED:
        if key not in out:
            raise ValueError(f"{path}: missing required key {key!r}")
    for single, plural, default in (("model", "models", None), ("projection", "projections", ["said"])):
        if single in out and plural in out:
            raise ValueError(f"{path}: give {single!r} or {plural!r}, not both")
        if single in out:
            out[plural] = [out.pop(single)]
        elif plural not in out:
            if default is None:
                raise ValueError(f"{path}: missing required key {single!r} (or {plural!r})")
            out[plural] = list(default)
    for key, value in DEFAULTS.items():
        out.setdefault(key, list(value) if isinstance(value, list) else value)
    return out
