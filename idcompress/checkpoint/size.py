"""How small a checkpoint is: its bytes on disk, the fp32 baseline, the ratio, its MDL bits.

* :func:`tree_bytes`: every file of a checkpoint folder (recursively), or one file — what a run
  wrote (a full model's or LoRA adapter's folder holds tokenizer files too);
* :func:`own_bytes`: only the intrinsic checkpoint's own files (:func:`own_files`:
  ``adapter_config.json`` + ``adapter_model.safetensors``, or the one ``*.idc.safetensors``);
* :func:`fp32_bytes`: ``n`` numbers stored in float32 (4 bytes each), the baseline;
* :func:`compression_ratio`: baseline / checkpoint bytes;
* :func:`mdl_bits`: the stored numbers × :func:`bits_per_number` of the vector dtype, the
  description length of the tuned model given the base.
"""

from __future__ import annotations

import os
from pathlib import Path

from .format import CONFIG_NAME, WEIGHTS_NAME

#: bits per stored number of each ``vector_dtype``
BITS_PER_NUMBER = {"float32": 32, "float16": 16, "bfloat16": 16}


def tree_bytes(path: str | os.PathLike) -> int:
    """Total size in bytes of a checkpoint file or folder (recursively)."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def own_files(path: Path) -> list[Path]:
    """The files of an intrinsic checkpoint (a PEFT-layout folder, or one single file)."""
    return [path / CONFIG_NAME, path / WEIGHTS_NAME] if path.is_dir() else [path]


def own_bytes(path: Path) -> int:
    """Total size in bytes of :func:`own_files`."""
    return sum(f.stat().st_size for f in own_files(path))


def fp32_bytes(n: int) -> int:
    """Bytes of ``n`` numbers in float32."""
    return 4 * n


def compression_ratio(n: int, checkpoint_bytes: int | None) -> float | None:
    """``n`` numbers in float32 over ``checkpoint_bytes``; ``None`` without a size (or 0)."""
    if not checkpoint_bytes:
        return None
    return fp32_bytes(n) / checkpoint_bytes


def bits_per_number(vector_dtype: str) -> int:
    """Bits of one stored number of ``vector_dtype`` (``KeyError`` for another dtype)."""
    return BITS_PER_NUMBER[vector_dtype]


def mdl_bits(stored: int, vector_dtype: str) -> int:
    """Description length in bits of ``stored`` numbers of ``vector_dtype``."""
    return stored * bits_per_number(vector_dtype)
