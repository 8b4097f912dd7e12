"""Lazy package attributes (PEP 562), so that ``import idcompress`` and ``idcompress --help`` do
not pay for importing torch, transformers and datasets (seconds) before they are needed."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_getattr(package: str, table: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``table[name]`` (a submodule, relative to
    ``package``) on first access of ``name`` and caches the value in the package."""

    def __getattr__(name: str) -> Any:
        sub = table.get(name)
        if sub is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(sub, package), name)
        setattr(importlib.import_module(package), name, value)
        return value

    return __getattr__
