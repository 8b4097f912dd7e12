"""Atomic writes of files and folders: what is at a path is the old version or the new, whole.

Every writer in idcompress goes through here (checkpoints, run state, results, reports, plots,
caches). :func:`atomic_write_bytes` / ``_text`` / ``_json`` write one file;
:func:`writing` yields a temporary sibling (file or folder) to fill and moves it into place.

* A file is written to a temporary sibling, fsynced, and ``os.replace``\\d onto the path (atomic).
* A folder cannot be renamed over a non-empty folder. On Linux the two are swapped atomically
  with ``renameat2(RENAME_EXCHANGE)`` (glibc ≥ 2.28; ext4, xfs, btrfs, tmpfs, …), then the old
  one, now at the temporary name, is removed. Where that is not available (another OS, libc or
  filesystem) two renames are used: the old folder moves to ``.<name>.old-<pid>``, the new one
  into place, the old one is removed. A writer killed between those two renames leaves no
  folder at the path but the complete old one beside it: :func:`recover_interrupted`, which the
  loaders call before they report a missing checkpoint, moves it back (the interrupted overwrite
  never happened).
* Temporary names carry the writer's pid (``.<name>.<pid>.<random>.tmp``,
  ``.<name>.old-<pid>``); :func:`clean_stale_temps` removes the ones whose writer no longer
  runs, so temp folders left by killed writes do not pile up. Names of the older form without a
  pid (``.<name>.<random>.tmp``) are removed too when they are more than an hour old.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_OLD_UNPIDDED_S = 3600.0
_WAIT_FOR_LIVE_WRITER_S = 2.0


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except OSError:  # pragma: no cover - e.g. not supported
        return True
    return True


def temp_sibling(path: Path, directory: bool) -> Path:
    """A new temporary file or folder next to ``path``, named after it and this process."""
    prefix = f".{path.name}.{os.getpid()}."
    if directory:
        return Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=path.parent))
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def write_bytes_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it (not atomic by itself: ``path`` is a temp name)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def umask() -> int:
    """The process's umask (read without changing it for longer than a call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def normal_permissions(path: Path, keep: Path | None = None) -> None:
    """Give a temp file (0600) or folder (0700) the modes a plain write would get.

    Files: ``keep``'s mode where ``keep`` is a file that exists (an overwrite keeps the old
    file's mode), else ``0o666 & ~umask``; a folder gets ``0o777 & ~umask`` and its files
    ``0o666 & ~umask``.
    """
    mask = umask()
    if path.is_dir():
        os.chmod(path, 0o777 & ~mask)
        for f in path.iterdir():
            if f.is_file():
                os.chmod(f, 0o666 & ~mask)
    elif keep is not None and keep.is_file():
        os.chmod(path, keep.stat().st_mode & 0o777)
    else:
        os.chmod(path, 0o666 & ~mask)


@contextlib.contextmanager
def writing(path: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to fill; on success it replaces ``path`` atomically.

    Before: an overwrite killed half-way is recovered and stale temporaries are removed. After:
    normal permissions (:func:`normal_permissions`), then :func:`replace_path`. On any error
    (``KeyboardInterrupt`` included) the temporary is removed and ``path`` is untouched.
    """
    path = Path(path)
    recover_interrupted(path)
    clean_stale_temps(path)
    tmp = temp_sibling(path, directory=directory)
    try:
        yield tmp
        normal_permissions(tmp, keep=path)
        if not directory:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        replace_path(tmp, path)
    except BaseException:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a temp sibling, fsynced, renamed into place).

    An overwrite keeps the old file's mode; a new file gets the mode a plain write gets.
    """
    with writing(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: object, **dumps_kwargs) -> None:
    """``obj`` as JSON (``indent=2``, NaN refused, a final newline), written atomically."""
    dumps_kwargs = {"indent": 2, "allow_nan": False, **dumps_kwargs}
    atomic_write_text(path, json.dumps(obj, **dumps_kwargs) + "\n")


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap ``a`` and ``b`` (Linux ``renameat2``); False where not supported."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: fall back to two renames
        return False
    raise OSError(err, os.strerror(err), str(b))


def old_name(path: Path, pid: int | None = None) -> Path:
    """Where the two-rename fallback parks the previous folder."""
    return path.with_name(f".{path.name}.old-{os.getpid() if pid is None else pid}")


def _two_renames(tmp: Path, path: Path) -> None:
    old = old_name(path)
    os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def replace_path(tmp: Path, path: Path) -> None:
    """Move the finished ``tmp`` onto ``path`` (see the module docstring)."""
    tmp, path = Path(tmp), Path(path)
    if path.is_dir() and not path.is_symlink():
        if _exchange(tmp, path):
            shutil.rmtree(tmp, ignore_errors=True)  # the old folder, now at the temp name
        else:
            _two_renames(tmp, path)
    else:
        os.replace(tmp, path)
    _fsync_dir(path.parent)


def _sibling_kind(path: Path, sibling: str) -> tuple[str, int | None] | None:
    """``("tmp" | "old", pid or None)`` when ``sibling`` is a temporary/parked name of ``path``."""
    prefix = f".{path.name}."
    if not sibling.startswith(prefix):
        return None
    rest = sibling[len(prefix):]
    if rest.startswith("old-") and rest[4:].isdigit():
        return "old", int(rest[4:])
    if rest.endswith(".tmp"):
        parts = rest[:-4].split(".")
        if len(parts) == 2 and parts[0].isdigit():
            return "tmp", int(parts[0])
        if len(parts) == 1:
            return "tmp", None  # the older form, without a pid
    return None


def _parked(path: Path) -> list[tuple[Path, int]]:
    """``(folder, pid)`` of the previous versions of ``path`` parked by the fallback."""
    parent = path.parent
    if not parent.is_dir():
        return []
    out = []
    for p in parent.iterdir():
        kind = _sibling_kind(path, p.name)
        if kind and kind[0] == "old" and p.is_dir():
            out.append((p, kind[1]))
    return out


def recover_interrupted(path: str | os.PathLike) -> bool:
    """Put back the previous folder of an overwrite that was killed between its two renames.

    Only when nothing is at ``path`` and the parked folder's writer no longer runs (a live one
    is given a moment to finish). True when a folder was put back.
    """
    path = Path(path)
    if os.path.lexists(path):
        return False
    parked = _parked(path)
    if not parked:
        return False
    deadline = time.monotonic() + _WAIT_FOR_LIVE_WRITER_S
    while any(_pid_alive(pid) for _, pid in parked) and time.monotonic() < deadline:
        time.sleep(0.05)
        if os.path.lexists(path):
            return False
    dead = [p for p, pid in parked if not _pid_alive(pid)]
    if not dead:
        return False
    newest = max(dead, key=lambda p: p.stat().st_mtime)
    try:
        os.replace(newest, path)
    except OSError:
        return False
    return True


def clean_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary and parked siblings of ``path`` left by writers that no longer run."""
    path = Path(path)
    parent = path.parent
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    now = time.time()
    for p in parent.iterdir():
        kind = _sibling_kind(path, p.name)
        if kind is None:
            continue
        what, pid = kind
        if pid is not None:
            stale = not _pid_alive(pid)
            if what == "old" and not os.path.lexists(path):
                stale = False  # still needed by recover_interrupted
        else:
            try:
                stale = now - p.lstat().st_mtime > _OLD_UNPIDDED_S
            except OSError:
                continue
        if not stale:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()
        removed.append(p)
    return removed
