"""Checkpoint integrity: a digest over the config and the tensors, reproducible bytes.

**Digest.** ``checkpoint_digest(config, tensors)`` is ``"sha256:" + hex`` of SHA-256 over

1. the config as canonical JSON: every key except :data:`EXCLUDED_KEYS` (the digest itself and
   the runtime keys PEFT's own writer may add: ``auto_mapping``, ``inference_mode``,
   ``peft_version``), ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=True,
   allow_nan=False)``, UTF-8, then ``b"\\n"``;
2. for each tensor in sorted name order, the line ``name|dtype|shape\\n`` (``dtype`` as torch
   names it without the ``torch.`` prefix, ``shape`` as a list: ``theta_d|float32|[300]``)
   followed by the tensor's raw bytes, little-endian, row-major.

It is the same for the directory and the single-file form of one checkpoint. The writer records
it in the config (field ``digest``); the reader recomputes it from what it parsed and refuses a
mismatch (:func:`verify_digest`), unless the caller explicitly allows it (then it warns loudly).
A checkpoint without ``digest`` (the first format, or one written by PEFT's own
``save_pretrained``) loads with a one-line :class:`IntegrityNotice`, unless it has a key one
character away from ``digest`` (a flipped bit in the key would otherwise pass as "no digest").

**Reproducible bytes.** ``safetensors``' writer keeps the metadata in a Rust ``HashMap`` and
emits it in a different order on every call (passing an ordered dict does not help), so the same
inputs gave files with different bytes. :func:`safetensors_bytes` writes the same format itself:
the 8-byte little-endian header length, the header as compact JSON (``__metadata__`` first with
sorted keys, then the tensors sorted by name, each ``dtype``, ``shape``, ``data_offsets``), padded
with spaces to a multiple of 8 bytes as safetensors does, then the tensors' bytes in that order.
Any safetensors reader reads it.

**Consistency.** :func:`check_consistency` refuses configs that load but cannot be right:
``num_labels`` vs the number of ``label_names``, a missing ``base_fingerprint``.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import re
import struct
import sys
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import torch

DIGEST_FIELD = "digest"
#: keys left out of the canonical config: the digest itself and PEFT's runtime keys
EXCLUDED_KEYS = frozenset({DIGEST_FIELD, "auto_mapping", "inference_mode", "peft_version"})
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")

_ST_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}
_SAME_SIZE_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}

_allow_mismatch: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "idcompress_allow_integrity_mismatch", default=False)


class IntegrityError(ValueError):
    """A checkpoint whose bytes are not the ones its writer recorded."""


class IntegrityNotice(UserWarning):
    """A checkpoint of the previous format (no digest): loaded without verification."""


class IntegrityMismatchWarning(UserWarning):
    """A digest mismatch that the caller chose to override."""


def canonical_config_bytes(config: Mapping[str, Any]) -> bytes:
    """The config as the digest sees it (see the module docstring)."""
    kept = {k: v for k, v in config.items() if k not in EXCLUDED_KEYS}
    try:
        text = json.dumps(kept, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                          allow_nan=False)
    except ValueError as e:  # NaN/Inf in a config value
        raise ValueError(f"the config cannot be written as JSON: {e}") from None
    return text.encode("utf-8") + b"\n"


def tensor_le_bytes(t: torch.Tensor) -> bytes:
    """Raw bytes of ``t``, row-major, little-endian (byte-swapped on a big-endian machine)."""
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    if t.dtype == torch.bool:
        flat = flat.view(torch.uint8)
    if sys.byteorder == "big" and flat.element_size() > 1:  # pragma: no cover - LE everywhere here
        return flat.view(_SAME_SIZE_INT[flat.element_size()]).numpy().byteswap().tobytes()
    return flat.view(torch.uint8).numpy().tobytes()


def checkpoint_digest(config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> str:
    """``"sha256:<hex>"`` over the canonical config and the tensors (module docstring)."""
    h = hashlib.sha256(canonical_config_bytes(config))
    for name in sorted(tensors):
        t = tensors[name]
        dtype = str(t.dtype).removeprefix("torch.")
        h.update(f"{name}|{dtype}|{list(t.shape)}\n".encode())
        h.update(tensor_le_bytes(t))
    return "sha256:" + h.hexdigest()


def safetensors_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
                      ) -> bytes:
    """A safetensors file's bytes, identical for identical inputs (module docstring)."""
    header: dict[str, Any] = {}
    if metadata:
        bad = {k: v for k, v in metadata.items() if not (isinstance(k, str) and isinstance(v, str))}
        if bad:
            raise ValueError(f"safetensors metadata must map strings to strings, got {bad!r:.200}")
        header["__metadata__"] = {k: metadata[k] for k in sorted(metadata)}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name]
        if t.dtype not in _ST_DTYPES:
            raise ValueError(f"tensor {name!r}: dtype {t.dtype} cannot be written to safetensors here")
        data = tensor_le_bytes(t)
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode()
    head += b" " * ((8 - len(head) % 8) % 8)
    return struct.pack("<Q", len(head)) + head + b"".join(blobs)


@contextlib.contextmanager
def allow_integrity_mismatch(allow: bool = True) -> Iterator[None]:
    """Within the block, a digest mismatch warns instead of raising (``--force`` uses this).

    For callers that reach ``load_checkpoint_files`` through code that does not pass
    ``allow_integrity_mismatch=`` itself (``IntrinsicModel.from_pretrained``).
    """
    token = _allow_mismatch.set(bool(allow))
    try:
        yield
    finally:
        _allow_mismatch.reset(token)


def mismatch_allowed(explicit: bool | None = None) -> bool:
    """``explicit`` when given, else what :func:`allow_integrity_mismatch` set (default False)."""
    return _allow_mismatch.get() if explicit is None else bool(explicit)


def verify_digest(config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], source: str,
                  allow_mismatch: bool = False) -> str | None:
    """Check the recorded ``digest`` of a parsed checkpoint; return it (``None``: none recorded).

    A mismatch raises :class:`IntegrityError` naming ``source`` and both digests, unless
    ``allow_mismatch`` (then :class:`IntegrityMismatchWarning`); no digest gives a one-line
    :class:`IntegrityNotice`.
    """
    recorded = config.get(DIGEST_FIELD)
    damaged = [k for k in config if _one_char_from_digest(k)]
    if recorded is None and damaged:
        raise IntegrityError(f"{source}: no field 'digest' but a field {damaged[0]!r}: the "
                             "checkpoint was damaged after it was written")
    if recorded is None:
        version = config.get("idcompress_version")
        warnings.warn(
            f"{source}: no integrity digest (a checkpoint of the previous format"
            + (f", idcompress {version}" if isinstance(version, str) else "")
            + ", or written by PEFT's own save_pretrained): loaded without verification; "
            "re-save it to add one",
            IntegrityNotice, stacklevel=3)
        return None
    if not isinstance(recorded, str) or not _DIGEST_RE.match(recorded):
        raise IntegrityError(f"{source}: field 'digest'={recorded!r} is not 'sha256:' followed by "
                             "64 lowercase hex digits")
    try:
        actual = checkpoint_digest(config, tensors)
    except ValueError as e:
        raise IntegrityError(f"{source}: {e}") from None
    if actual == recorded:
        return recorded
    msg = (f"{source}: integrity check failed: the config records digest {recorded} but its "
           f"contents hash to {actual}; the file was changed or damaged after it was written")
    if not allow_mismatch:
        raise IntegrityError(msg + "; pass allow_integrity_mismatch=True (CLI: --force) to load "
                                   "it anyway")
    warnings.warn("LOADING A CHECKPOINT THAT FAILED ITS INTEGRITY CHECK: " + msg,
                  IntegrityMismatchWarning, stacklevel=3)
    return recorded


def _one_char_from_digest(key: str) -> bool:
    """A key one character away from ``digest`` (a flipped bit would otherwise pass as "no digest")."""
    return (isinstance(key, str) and len(key) == len(DIGEST_FIELD) and key != DIGEST_FIELD
            and sum(a != b for a, b in zip(key, DIGEST_FIELD)) == 1)


def check_consistency(config, source: str) -> None:
    """``ValueError`` naming the field for a config that parses but cannot be right.

    ``config`` is an ``IntrinsicConfig`` (or anything with its attributes).
    """
    if not getattr(config, "base_fingerprint", None):
        raise ValueError(f"{source}: missing field 'base_fingerprint' (the digest of the base "
                         "model the vector was tuned on); it cannot be checked against a base")
    names, n = getattr(config, "label_names", None), getattr(config, "num_labels", None)
    if names is not None and n is not None and len(names) != n:
        raise ValueError(f"{source}: field 'num_labels'={n} but 'label_names' has {len(names)} "
                         f"names {names!r:.200}")
    if names is not None and len(set(names)) != len(names):
        dup = sorted({x for x in names if names.count(x) > 1})
        raise ValueError(f"{source}: field 'label_names' repeats {dup!r:.200}")
