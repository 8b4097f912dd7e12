"""The tiny checkpoint: seed + vector in PEFT's layout or one ``*.idc.safetensors`` (SPEC §4–5)."""

from .fingerprint import fingerprint
from .format import load_checkpoint_files, load_intrinsic_model, save_intrinsic_model

__all__ = ["fingerprint", "load_checkpoint_files", "load_intrinsic_model", "save_intrinsic_model"]
