"""The tiny checkpoint: seed + vector in PEFT's layout or one ``*.idc.safetensors`` (SPEC §4–5)."""

from .._lazy import lazy_getattr

__all__ = ["fingerprint", "load_checkpoint_files", "load_intrinsic_model", "save_intrinsic_model"]
__getattr__ = lazy_getattr(__name__, {
    "fingerprint": ".fingerprint", "load_checkpoint_files": ".format",
    "load_intrinsic_model": ".format", "save_intrinsic_model": ".format",
})
