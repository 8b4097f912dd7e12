"""How ``idcompress`` reports failures, warnings and the ``--offline`` switch.

Expected failures (bad input or environment) become one line, ``idcompress <cmd>: error: …``,
exit status 2: ``ValueError`` (and its subclasses: JSON and Unicode errors), the file errors
(``FileNotFoundError``, ``FileExistsError``, ``PermissionError``, ``IsADirectoryError``,
``NotADirectoryError`` and other ``OSError``\\s: disk full, read-only file system, an unreachable
hub), :class:`idcompress.errors.UserError` (a locked output folder, a non-finite loss, data that
cannot be fetched), and a missing optional package (named, with the ``pip install`` that fixes
it). Anything else is a bug and keeps its traceback; ``--debug`` (anywhere on the command line,
or ``IDCOMPRESS_DEBUG=1``) shows the traceback of everything.

Warnings are printed as one line, ``idcompress: warning: …``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator

#: import name → pip name of the optional packages idcompress uses
OPTIONAL_PACKAGES = {
    "mlxtend": "mlxtend", "sklearn": "scikit-learn", "skimage": "scikit-image",
    "skdim": "scikit-dimension", "scipy": "scipy", "PIL": "pillow", "matplotlib": "matplotlib",
    "numba": "numba", "peft": "peft", "yaml": "pyyaml", "pandas": "pandas",
    "pyarrow": "pyarrow", "torchvision": "torchvision", "timm": "timm",
}
OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE",
               "IDCOMPRESS_OFFLINE")


def one_line(text: str) -> str:
    """``text`` with its lines joined by single spaces."""
    return " ".join(str(text).split())


def expected_message(e: BaseException) -> str | None:
    """The one-line message of an expected failure; ``None`` for a bug (keep its traceback)."""
    from ..errors import UserError

    if isinstance(e, ImportError):
        name = (e.name or "").split(".")[0]
        text = one_line(str(e))
        if "pip install" in text:
            return text
        if name and name != "idcompress":
            pip = OPTIONAL_PACKAGES.get(name, name)
            return f"the package {name!r} is not installed ({text}): pip install {pip}"
        return None
    if isinstance(e, (UserError, ValueError, OSError)):
        text = one_line(str(e)) or type(e).__name__
        if isinstance(e, OSError) and not isinstance(e, (FileNotFoundError, FileExistsError,
                                                         PermissionError)) and e.strerror:
            where = f" {e.filename}" if getattr(e, "filename", None) else ""
            return f"{e.strerror}{where} ({type(e).__name__})"
        return text
    return None


def set_offline() -> None:
    """Never contact the hub from here on (env vars + the already imported libraries' flags)."""
    for k in OFFLINE_ENV:
        os.environ[k] = "1"
    if "huggingface_hub.constants" in sys.modules:
        sys.modules["huggingface_hub.constants"].HF_HUB_OFFLINE = True
    if "datasets.config" in sys.modules:
        cfg = sys.modules["datasets.config"]
        cfg.HF_HUB_OFFLINE = True
        cfg.HF_DATASETS_OFFLINE = True


def split_global_flags(argv: list[str]) -> tuple[bool, bool, list[str]]:
    """``(debug, offline, rest)``: ``--debug``/``--offline`` are taken from anywhere before ``--``."""
    debug = offline = False
    rest: list[str] = []
    for i, a in enumerate(argv):
        if a == "--":
            rest += argv[i:]
            break
        if a == "--debug":
            debug = True
        elif a == "--offline":
            offline = True
        else:
            rest.append(a)
    env = os.environ.get("IDCOMPRESS_DEBUG", "").strip().lower()
    return debug or env in ("1", "true", "yes", "on"), offline, rest


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Show warnings as ``idcompress: warning: <message>`` within the block."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        stream = file or sys.stderr
        with contextlib.suppress(OSError, ValueError):
            stream.write(f"idcompress: warning: {one_line(str(message))}\n")

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield
