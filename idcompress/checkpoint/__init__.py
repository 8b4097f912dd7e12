"""The checkpoint files: seed + vector in PEFT's layout or one ``*.idc.safetensors``; base fingerprint; hub."""

from .._lazy import lazy_getattr

__all__ = ["fingerprint", "load_checkpoint_files", "write_checkpoint"]
__getattr__ = lazy_getattr(__name__, {
    "fingerprint": ".fingerprint", "load_checkpoint_files": ".format", "write_checkpoint": ".format",
})
