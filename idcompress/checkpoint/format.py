"""Writing and reading the checkpoint files (``docs/design.md``, "The checkpoint").

This module knows files, not models: it writes a config (a JSON object) and the vectors, and
reads them back validated; :mod:`idcompress.tuners` builds the model from what it returns.

Directory form (PEFT's layout): ``adapter_config.json`` (every ``IntrinsicConfig`` field) and
``adapter_model.safetensors`` (``theta_d`` and, for SAID, ``said_lambda``, in ``vector_dtype``;
the layout's tensor names, zlib-compressed, in the safetensors metadata so a mismatching base
can be diagnosed by name). Single-file form: ``*.idc.safetensors`` with the same tensors and the
config as JSON under the metadata key ``idcompress_config``.

Writes are atomic: everything goes to a temporary sibling that is renamed into place; an
existing checkpoint is replaced so that a loadable one is at the path at every instant
(:mod:`idcompress.fileio`). Reads never unpickle: only JSON and safetensors are parsed, and every field is
checked before any model is built.

Integrity (v2, :mod:`.integrity`): the config records ``digest``, a SHA-256 over the canonical
config and the tensors; the reader recomputes it and refuses a mismatch (unless
``allow_integrity_mismatch``), refuses non-finite vectors and inconsistent configs, and loads a
checkpoint without digest (the first format) with a one-line notice. The files are
byte-reproducible: the same inputs give the same bytes.
"""

from __future__ import annotations

import base64
import json
import os
import types
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..fileio import recover_interrupted, write_bytes_synced, writing
from ..projection.rng import RNG_NAME, RNG_VERSION
from .integrity import (
    DIGEST_FIELD,
    check_consistency,
    checkpoint_digest,
    mismatch_allowed,
    safetensors_bytes,
    verify_digest,
)

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
SINGLE_FILE_SUFFIX = ".idc.safetensors"
CONFIG_METADATA_KEY = "idcompress_config"
LAYOUT_METADATA_KEY = "idcompress_layout"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


@dataclass
class CheckpointFiles:
    """What a checkpoint holds, validated: the config (a JSON object), the vectors (float32), the
    layout names."""

    config: dict
    theta_d: torch.Tensor
    said_lambda: torch.Tensor | None
    layout_names: list[str] | None
    source: str


# --------------------------------------------------------------------------------------------
# saving
def _encode_layout(names: list[str]) -> str:
    return base64.b85encode(zlib.compress("\n".join(names).encode(), 9)).decode()


def _decode_layout(s: str) -> list[str]:
    return zlib.decompress(base64.b85decode(s.encode())).decode().split("\n")


def vector_tensors(theta_d: torch.Tensor, said_lambda: torch.Tensor | None, vector_dtype: str) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint stores: ``theta_d`` (and ``said_lambda``) on the CPU in ``vector_dtype``."""
    dtype = DTYPES[vector_dtype]
    tensors = {"theta_d": theta_d.detach().to("cpu", dtype).contiguous()}
    if said_lambda is not None:
        tensors["said_lambda"] = said_lambda.detach().to("cpu", dtype).contiguous()
    return tensors


def _check_target(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        if path.is_dir() and not any(path.iterdir()):
            return
        raise FileExistsError(f"{path} already exists and is not empty; pass overwrite=True to replace it")
    if not path.parent.exists():
        raise FileNotFoundError(f"parent directory {path.parent} of {path} does not exist")


def with_digest(config: dict, tensors: dict[str, torch.Tensor]) -> dict:
    """``config`` with its integrity ``digest`` over itself and ``tensors`` (:mod:`.integrity`)."""
    data = {k: v for k, v in config.items() if k != DIGEST_FIELD}
    data[DIGEST_FIELD] = checkpoint_digest(data, tensors)
    if checkpoint_digest(json.loads(json.dumps(data)), tensors) != data[DIGEST_FIELD]:  # pragma: no cover
        raise RuntimeError("the checkpoint config does not survive a JSON round trip")
    return data


def write_checkpoint(
    path: str | os.PathLike,
    config: dict,
    tensors: dict[str, torch.Tensor],
    layout_names: list[str],
    single_file: bool = False,
    overwrite: bool = False,
) -> dict:
    """Write a checkpoint to ``path`` (a directory, or ``*.idc.safetensors``); atomic, byte-reproducible.

    ``config``: the JSON object of ``adapter_config.json`` (its ``digest`` is recomputed);
    ``tensors``: from :func:`vector_tensors`; ``layout_names``: the tuned tensors' names, stored
    zlib'd in the safetensors metadata. Returns the config as written (with its digest).
    """
    path = Path(path)
    if single_file and not path.name.endswith(SINGLE_FILE_SUFFIX):
        raise ValueError(f"a single-file checkpoint must be named *{SINGLE_FILE_SUFFIX}, got {path.name!r}")
    recover_interrupted(path)  # an earlier overwrite killed half-way
    _check_target(path, overwrite)
    meta = {"format": "pt", LAYOUT_METADATA_KEY: _encode_layout(layout_names)}
    config = with_digest(config, tensors)
    config_json = json.dumps(config, indent=2, sort_keys=True)
    with writing(path, directory=not single_file) as tmp:
        if single_file:
            write_bytes_synced(tmp, safetensors_bytes(tensors, {**meta, CONFIG_METADATA_KEY: config_json}))
        else:
            write_bytes_synced(tmp / CONFIG_NAME, (config_json + "\n").encode())
            write_bytes_synced(tmp / WEIGHTS_NAME, safetensors_bytes(tensors, meta))
    return config


# --------------------------------------------------------------------------------------------
# reading
def _read_json(path: Path) -> dict:
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 JSON file ({e})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _open_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str], dict[str, str]]:
    """Tensors, metadata and raw dtypes of a safetensors file; anything else is refused unread."""
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8:
        raise ValueError(f"{path}: not a safetensors file (only {len(head)} bytes)")
    if head[:2] == b"\x80\x02" or head[:2] == b"\x80\x04" or head[:2] == b"PK":
        raise ValueError(f"{path}: this is a pickle/zip file, not safetensors; refusing to unpickle it")
    try:
        tensors, dtypes = {}, {}
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            for k in f.keys():
                dtypes[k] = f.get_slice(k).get_dtype()
                tensors[k] = f.get_tensor(k)
    except (SafetensorError, OSError, RuntimeError) as e:
        raise ValueError(f"{path}: not a valid safetensors file (truncated or corrupt?): {e}") from None
    return tensors, meta, dtypes


def check_rng(rng: str, source: str) -> None:
    """Refuse a generator this version cannot rebuild, naming it."""
    name, _, version = str(rng).partition("/")
    if name != RNG_NAME or not version.isdigit():
        raise ValueError(f"{source}: rng={rng!r} is not a generator this idcompress knows ({RNG_NAME}/{RNG_VERSION})")
    if int(version) > RNG_VERSION:
        raise ValueError(
            f"{source}: rng={rng!r} comes from a newer idcompress (this one has {RNG_NAME}/{RNG_VERSION}); upgrade idcompress"
        )
    if int(version) < RNG_VERSION:
        raise ValueError(f"{source}: rng={rng!r} is an older generator that this idcompress no longer rebuilds")


def vector_lengths(projection: str, d: int, num_tensors: int | None) -> tuple[int, int]:
    """``(len(theta_d), len(said_lambda))`` for ``d`` trained numbers; the one home of SAID's split.

    DID stores all ``d`` numbers in ``theta_d`` (and no scales). SAID spends ``m = num_tensors``
    of them on one scale per tuned tensor, so DID and SAID at the same ``d`` train as many numbers:
    ``theta_d`` has ``d − m``, ``said_lambda`` ``m``. ``ValueError`` when SAID has ``d ≤ m``.
    """
    if projection != "said":
        return d, 0
    if num_tensors is None:
        raise ValueError("projection='said' needs num_tensors (the number of tuned tensors, m)")
    if d <= num_tensors:
        raise ValueError(
            f"projection='said' learns one scale per tuned tensor, so it needs d > m = {num_tensors} "
            f"(the number of tuned tensors), got d={d}; raise d or use projection='fastfood'"
        )
    return d - num_tensors, num_tensors


def check_vectors(config: dict, tensors: dict, dtypes: dict, source: str):
    """``(theta_d, said_lambda or None)`` as float32, checked against ``config``'s d, projection,
    num_tensors and vector_dtype; ``dtypes``: the safetensors dtype names (``"F32"``, …)."""
    cfg = types.SimpleNamespace(is_said=config.get("projection") == "said", d=config.get("d"),
                                num_tensors=config.get("num_tensors"), projection=config.get("projection"),
                                vector_dtype=config.get("vector_dtype", "float32"))
    if "theta_d" not in tensors:
        raise ValueError(f"{source}: no tensor 'theta_d' (found {sorted(tensors)})")
    wanted = {"theta_d"} | ({"said_lambda"} if cfg.is_said else set())
    extra = set(tensors) - wanted
    if extra:
        raise ValueError(f"{source}: unexpected tensors {sorted(extra)} for projection={cfg.projection!r}")
    if cfg.is_said and "said_lambda" not in tensors:
        raise ValueError(f"{source}: projection='said' needs a tensor 'said_lambda'")
    m = cfg.num_tensors
    expected = {"theta_d": cfg.d, "said_lambda": m}
    if cfg.is_said and isinstance(m, int) and isinstance(cfg.d, int) and 0 < m < cfg.d:
        expected["theta_d"] = vector_lengths("said", cfg.d, m)[0]
    out = {}
    for k in sorted(wanted):
        t = tensors[k]
        raw = _SAFETENSORS_DTYPES.get(dtypes[k])
        if raw is None:
            raise ValueError(
                f"{source}: tensor {k!r} has dtype {dtypes[k]}; checkpoints store float32, float16 or "
                f"bfloat16 (vector_dtype={cfg.vector_dtype!r})"
            )
        if raw != cfg.vector_dtype:
            raise ValueError(f"{source}: tensor {k!r} is {raw} but vector_dtype={cfg.vector_dtype!r}")
        if t.dim() != 1 or (expected[k] is not None and t.numel() != expected[k]):
            raise ValueError(
                f"{source}: tensor {k!r} has shape {tuple(t.shape)}, expected ({expected[k]},) from d={cfg.d}"
                + (f", m={m}" if cfg.is_said else "")
            )
        if not torch.isfinite(t).all():
            bad = int((~torch.isfinite(t)).sum())
            raise ValueError(f"{source}: tensor {k!r} holds {bad} NaN/Inf values")
        out[k] = t.to(torch.float32)
    return out["theta_d"], out.get("said_lambda")


def load_checkpoint_files(path: str | os.PathLike, validate_config=None,
                          allow_integrity_mismatch: bool | None = None) -> CheckpointFiles:
    """Read and validate a checkpoint directory or ``*.idc.safetensors`` file (no model built).

    ``validate_config(config, source)``, when given, checks the config object before the vectors
    are checked against it (so a malformed field is reported as such, not as a vector mismatch).
    ``allow_integrity_mismatch``: load a checkpoint whose digest does not match, with a loud
    warning (``None``: as :func:`.integrity.allow_integrity_mismatch` set it, else refuse).
    """
    from ..pathcheck import describe_missing

    path = Path(path)
    if not path.exists():
        recover_interrupted(path)  # an overwrite killed between its two renames
    if not path.exists():
        raise FileNotFoundError(describe_missing(path, "no checkpoint at"))
    if path.is_dir():
        cfg_path, w_path = path / CONFIG_NAME, path / WEIGHTS_NAME
        if not cfg_path.exists():
            raise FileNotFoundError(f"{path}: missing {CONFIG_NAME}")
        if not w_path.exists():
            raise FileNotFoundError(f"{path}: missing {WEIGHTS_NAME}")
        data = _read_json(cfg_path)
        tensors, meta, dtypes = _open_safetensors(w_path)
        source = str(cfg_path)
    else:
        tensors, meta, dtypes = _open_safetensors(path)
        if CONFIG_METADATA_KEY not in meta:
            raise ValueError(f"{path}: safetensors file without '{CONFIG_METADATA_KEY}' metadata: not an idcompress checkpoint")
        try:
            data = json.loads(meta[CONFIG_METADATA_KEY])
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: metadata '{CONFIG_METADATA_KEY}' is not valid JSON ({e})") from None
        source = str(path)
        w_path = path
    # --- integrity (v2): the digest first, so a damaged file is named as such --------------------
    digest_source = source if w_path == path else f"{cfg_path} + {WEIGHTS_NAME}"
    verify_digest(data, tensors, digest_source, mismatch_allowed(allow_integrity_mismatch))
    if meta.get("format", "pt") != "pt":
        raise ValueError(f"{w_path}: metadata 'format'={meta['format']!r} is not 'pt'")
    unknown = sorted(set(meta) - {"format", LAYOUT_METADATA_KEY, CONFIG_METADATA_KEY})
    if unknown:
        raise ValueError(f"{w_path}: unexpected safetensors metadata {unknown} (damaged, or not "
                         "written by idcompress)")
    # --- end integrity ----------------------------------------------------------------------------
    if data.get("peft_type", "INTRINSIC") != "INTRINSIC":
        raise ValueError(f"{source}: peft_type={data.get('peft_type')!r} is not an idcompress checkpoint")
    for field in ("d", "D", "num_tensors", "layout_digest"):
        if data.get(field) is None:
            raise ValueError(f"{source}: missing field {field!r}")
    if validate_config is not None:
        validate_config(data, source)
    check_rng(data.get("rng", ""), source)
    theta, lam = check_vectors(data, tensors, dtypes, str(w_path))
    check_consistency(types.SimpleNamespace(**{k: data.get(k) for k in ("base_fingerprint", "label_names", "num_labels")}),
                      source)  # num_labels vs label_names, fingerprint present
    names = None
    if LAYOUT_METADATA_KEY in meta:
        try:
            names = _decode_layout(meta[LAYOUT_METADATA_KEY])
        except (ValueError, zlib.error) as e:
            raise ValueError(f"{w_path}: metadata '{LAYOUT_METADATA_KEY}' is corrupt ({e})") from None
    return CheckpointFiles(data, theta, lam, names, str(path))
