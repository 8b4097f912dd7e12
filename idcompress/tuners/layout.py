"""The layout: the ordered list of tuned tensors ``(name, shape, dtype)`` and where they live.

Order is ``named_parameters()`` order (tied parameters counted once, under their first name);
offsets are into one flat vector of length ``D``. Include/exclude are ``fnmatch`` globs over names.
"""

from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LayoutEntry:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    offset: int
    numel: int
    # every (module, attribute) that holds this tensor (more than one when weights are tied)
    owners: tuple[tuple[nn.Module, str], ...]


@dataclass(frozen=True)
class Layout:
    entries: tuple[LayoutEntry, ...]

    @property
    def D(self) -> int:
        return sum(e.numel for e in self.entries)

    @property
    def m(self) -> int:
        return len(self.entries)

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    @property
    def sizes(self) -> list[int]:
        return [e.numel for e in self.entries]

    def digest(self) -> str:
        """sha256 over ``name:shape:dtype`` lines, in order."""
        h = hashlib.sha256()
        for e in self.entries:
            h.update(f"{e.name}:{list(e.shape)}:{str(e.dtype).removeprefix('torch.')}\n".encode())
        return "sha256:" + h.hexdigest()


def _matches(name: str, patterns: list[str] | None) -> bool:
    return bool(patterns) and any(fnmatch.fnmatchcase(name, p) for p in patterns)


def build_layout(model: nn.Module, include: list[str] | None = None, exclude: list[str] | None = None) -> Layout:
    """Select the tuned parameters of ``model``; ``ValueError`` when the selection is empty or bad."""
    owners: dict[int, list[tuple[nn.Module, str]]] = {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        for attr, p in module._parameters.items():
            if p is not None:
                owners.setdefault(id(p), []).append((module, attr))
        del mod_name

    entries: list[LayoutEntry] = []
    offset = 0
    for name, p in model.named_parameters():
        if include is not None and not _matches(name, include):
            continue
        if _matches(name, exclude):
            continue
        if not p.dtype.is_floating_point:
            if include is not None:
                raise ValueError(
                    f"include={include!r} selects {name!r} of dtype {p.dtype}: only floating-point tensors can be tuned"
                )
            continue
        n = p.numel()
        entries.append(LayoutEntry(name, tuple(p.shape), p.dtype, offset, n, tuple(owners[id(p)])))
        offset += n
    if not entries:
        raise ValueError(
            f"include={include!r} / exclude={exclude!r} select no floating-point parameter of "
            f"{type(model).__name__} (first names: {[n for n, _ in model.named_parameters()][:5]})"
        )
    if include is not None:
        for pat in include:
            if not any(fnmatch.fnmatchcase(e.name, pat) for e in entries):
                raise ValueError(f"include pattern {pat!r} matches no floating-point parameter")
    return Layout(tuple(entries))


def flat_dtype(layout: Layout) -> torch.dtype:
    """Storage dtype of the flat θ₀: the common dtype, or float32 when the layout mixes dtypes."""
    dtypes = {e.dtype for e in layout.entries}
    return dtypes.pop() if len(dtypes) == 1 else torch.float32
