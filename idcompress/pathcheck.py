"""Local paths versus hub ids, and why a path is missing.

:func:`looks_like_local_path` decides whether a string names something on this machine, so that
it is never sent to the Hugging Face Hub: it does when it starts with ``.``, ``/``, ``~`` or a
drive letter, contains a backslash, has more than one ``/`` (a hub id is ``owner/name``), ends
with a file suffix idcompress reads (``.safetensors``, ``.json``, ``.bin``, …), or when its first
component exists here (``runs/x`` with a folder ``runs``). :func:`describe_missing` says why a
path does not resolve: a symlink loop, a dangling symlink, or the first component that is missing.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

LOCAL_SUFFIXES = (".safetensors", ".json", ".bin", ".pt", ".pth", ".yaml", ".yml", ".tsv",
                  ".csv", ".jsonl", ".parquet")
_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def looks_like_local_path(name: str | os.PathLike) -> bool:
    """True when ``name`` must be a local path, never a hub id (module docstring)."""
    s = os.fspath(name)
    if not s:
        return False
    if s.startswith((".", "/", "~")) or "\\" in s or _DRIVE.match(s):
        return True
    if s.count("/") > 1 or s.lower().endswith(LOCAL_SUFFIXES):
        return True
    first = s.split("/", 1)[0]
    return os.path.lexists(first)


def _loop_or_dangling(p: Path) -> str | None:
    """A description when ``p`` is a symlink that does not resolve, else ``None``."""
    if not p.is_symlink():
        return None
    try:
        p.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports loops so
        return f"{p} is a symlink loop"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return f"{p} is a symlink loop"
        try:
            target = os.readlink(p)
        except OSError:
            target = "?"
        return f"{p} is a dangling symlink (to {target!r}, which does not exist)"
    return None


def describe_missing(path: str | os.PathLike, lead: str = "no such file or folder:") -> str:
    """``"<lead> <path> (<why>)"``: a symlink loop, a dangling link, a file used as a folder, or
    the first component that does not exist."""
    p = Path(os.path.expanduser(os.fspath(path)))
    for q in [*reversed(p.parents), p]:
        if str(q) in ("", "."):
            continue
        why = _loop_or_dangling(q)
        if why:
            return f"{lead} {path} ({why})"
        if not q.exists():
            return f"{lead} {path} ({'it does not exist' if q == p else f'{q} does not exist'})"
        if q != p and not q.is_dir():
            return f"{lead} {path} ({q} is a file, not a folder)"
    return f"{lead} {path}"
