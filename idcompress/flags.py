"""Command-line option names and the checks of their values, shared by every command's options.

An option is a dataclass field (``max_length``); its flag is ``--max-length``. Each check raises
``ValueError`` naming the flag and the value, which the CLI prints as one line (exit 2).
Torch-free: the options are checked before anything heavy is imported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any


def flag(name: str) -> str:
    """The flag of option field ``name``: ``"max_length"`` → ``"--max-length"``."""
    return "--" + name.replace("_", "-")


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> None:
    """``value`` is one of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{flag(name)}={value!r} is unknown; choose one of {allowed}")


def check_positive_int(name: str, value: Any, *, optional: bool = True) -> None:
    """``value`` is an integer ≥ 1 (or ``None`` where ``optional``)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{flag(name)}={value!r} must be a positive integer")


def check_number(name: str, value: Any, want: str, ok: Callable[[float], bool]) -> None:
    """``value`` is a finite real number for which ``ok`` holds; ``want`` says which in words."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{flag(name)}={value!r} must be {want}")
    if not math.isfinite(value) or not ok(value):
        raise ValueError(f"{flag(name)}={value} must be {want}")
