"""An OS-level lock on a run's output folder, held for the run's lifetime.

``<output-dir>/.idcompress.lock`` is locked with ``fcntl.flock(LOCK_EX | LOCK_NB)`` (POSIX;
``msvcrt.locking`` on Windows) and holds, as JSON, the holder's pid, host, start time and
command line. A second run on the same folder finds the lock taken and is refused with the
holder's pid and start time. The kernel drops the lock when its holder dies, however it dies
(``kill -9`` included), so a lock file whose lock is free is stale: the next run takes it over
and says whose it was. On release the file is removed (while still locked; a run that opened
the old file meanwhile notices that the path now names another file, or none, and retries), and
the folder too when this run created it and left it empty, so a refused or failed start leaves
nothing behind.

Only the main process of a multi-process run takes the lock (:func:`run_lock`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import UserError

LOCK_NAME = ".idcompress.lock"


class RunLockedError(UserError, RuntimeError):
    """The output folder is in use by another live run."""


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":  # pragma: no cover - not tested here
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 65536)
        data = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe(info: dict[str, Any]) -> str:
    if not info:
        return "a run that is starting up (no details written yet)"
    host = f" on {info['host']}" if info.get("host") else ""
    return f"pid {info.get('pid', '?')}{host}, started {info.get('started', '?')}"


class OutputDirLock:
    """The lock of one output folder; use as a context manager or ``acquire``/``release``."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.fd: int | None = None
        self.created_folder = False
        self.stale: dict[str, Any] | None = None  # the previous holder of a stale lock

    def acquire(self) -> OutputDirLock:
        """Take the lock; ``RunLockedError`` naming the holder when another run has it."""
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"--output-dir {str(self.folder)!r} exists and is not a directory")
        try:
            if not self.folder.exists():
                self.folder.mkdir(parents=True)
                self.created_folder = True
            for _ in range(100):
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                if not _try_lock(fd):
                    info = _read(fd)
                    os.close(fd)
                    raise RunLockedError(
                        f"--output-dir {str(self.folder)!r} is in use by another idcompress run "
                        f"({_describe(info)}; lock file {self.path}); wait for it to finish or "
                        "choose another --output-dir")
                try:
                    same = os.path.samestat(os.fstat(fd), os.stat(self.path))
                except FileNotFoundError:
                    same = False
                if same:
                    break
                os.close(fd)  # the holder released and removed it meanwhile: take the new one
            else:  # pragma: no cover - only under pathological churn
                raise RunLockedError(f"could not take the lock {self.path}")
        except OSError as e:
            self._remove_created_folder()
            raise ValueError(f"--output-dir {str(self.folder)!r} is not writable: "
                             f"{e.strerror or e}") from None
        previous = _read(fd)
        if previous:
            self.stale = previous
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.now().astimezone().isoformat(timespec="seconds"),
                  "started_unix": round(time.time(), 3), "argv": sys.argv}
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(record) + "\n").encode())
        os.fsync(fd)
        self.fd = fd
        return self

    def stale_notice(self) -> str | None:
        """A line about the stale lock this run took over, if any."""
        if not self.stale:
            return None
        return (f"idcompress: took over the stale lock {self.path} of a run that ended without "
                f"releasing it ({_describe(self.stale)}; killed?)")

    def release(self) -> None:
        """Remove the lock file (still locked), unlock, and remove the folder if we made it empty."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = None
        self._remove_created_folder()

    def _remove_created_folder(self) -> None:
        if self.created_folder:
            with contextlib.suppress(OSError):
                self.folder.rmdir()  # only when empty

    def __enter__(self) -> OutputDirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike, is_main: bool = True) -> Iterator[OutputDirLock | None]:
    """Hold the lock of ``folder`` for the block (main process only); print a stale takeover."""
    if not is_main:
        yield None
        return
    lock = OutputDirLock(folder).acquire()
    try:
        notice = lock.stale_notice()
        if notice:
            print(notice, file=sys.stderr)
        yield lock
    finally:
        lock.release()
