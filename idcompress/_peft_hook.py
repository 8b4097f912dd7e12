"""Register idcompress's PEFT method as soon as peft is imported, without importing peft here.

``import idcompress`` must stay cheap (no torch, no peft: the CLI's ``--help`` depends on it), yet
``peft.AutoPeftModel*.from_pretrained`` on an idcompress checkpoint needs the ``INTRINSIC`` method
registered. So a ``sys.meta_path`` finder waits for ``import peft`` and then imports
:mod:`idcompress.tuners`, which registers it.
"""

from __future__ import annotations

import sys
from importlib.util import find_spec


class _PeftImportHook:
    """``sys.meta_path`` finder: lets ``peft`` import normally, then imports ``idcompress.tuners``
    (which registers the method). ``find_spec`` also runs when a library only probes for peft, so
    the hook stays until peft really executes."""

    _busy = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "peft" or self._busy:
            return None
        self._busy = True
        try:
            spec = find_spec("peft")
        finally:
            self._busy = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module) -> None:
            exec_module(module)
            sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _PeftImportHook)]
            import idcompress.tuners  # noqa: F401  (registers)

        spec.loader.exec_module = exec_then_register  # a fresh loader instance that only serves peft
        return spec


def install() -> None:
    """Register as soon as peft is imported (now, if it already is); never imports peft itself."""
    module = sys.modules.get("peft")
    if module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False):
        import idcompress.tuners  # noqa: F401
    elif not any(isinstance(f, _PeftImportHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _PeftImportHook())
