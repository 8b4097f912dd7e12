"""Writing and reading the checkpoint (SPEC §5).

Directory form (PEFT's layout): ``adapter_config.json`` (every ``IntrinsicConfig`` field) and
``adapter_model.safetensors`` (``theta_d`` and, for SAID, ``said_lambda``, in ``vector_dtype``;
the layout's tensor names, zlib-compressed, in the safetensors metadata so a mismatching base
can be diagnosed by name). Single-file form: ``*.idc.safetensors`` with the same tensors and the
config as JSON under the metadata key ``idcompress_config``.

Writes are atomic: everything goes to a temporary sibling that is renamed into place; an
existing checkpoint is replaced so that a loadable one is at the path at every instant
(:mod:`.atomic`). Reads never unpickle: only JSON and safetensors are parsed, and every field is
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
import shutil
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..projection.rng import RNG_NAME, RNG_VERSION
from ..tuners.config import IntrinsicConfig
from .atomic import (
    clean_stale_temps,
    recover_interrupted,
    replace_path,
    temp_sibling,
    write_bytes_synced,
)
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
    """What a checkpoint holds, validated: the config, the vectors (float32), the layout names."""

    config: IntrinsicConfig
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


def _tensors_and_metadata(model) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    cfg = model.intrinsic_config
    dtype = DTYPES[cfg.vector_dtype]
    tensors = {"theta_d": model.theta_d.detach().to("cpu", dtype).contiguous()}
    if model.said_lambda is not None:
        tensors["said_lambda"] = model.said_lambda.detach().to("cpu", dtype).contiguous()
    meta = {"format": "pt", LAYOUT_METADATA_KEY: _encode_layout(model.layout.names)}
    return tensors, meta


def _check_target(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        if path.is_dir() and not any(path.iterdir()):
            return
        raise FileExistsError(f"{path} already exists and is not empty; pass overwrite=True to replace it")
    if not path.parent.exists():
        raise FileNotFoundError(f"parent directory {path.parent} of {path} does not exist")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _normal_permissions(path: Path) -> None:
    """Temp files are created 0600/0700; give the checkpoint the modes a plain write would get."""
    mask = _umask()
    if path.is_dir():
        os.chmod(path, 0o777 & ~mask)
        for f in path.iterdir():
            os.chmod(f, 0o666 & ~mask)
    else:
        os.chmod(path, 0o666 & ~mask)


def _replace(tmp: Path, path: Path) -> None:
    """Move ``tmp`` onto ``path``; a loadable checkpoint stays at ``path`` throughout (.atomic)."""
    replace_path(tmp, path)


# --- integrity (v2) -------------------------------------------------------------------------
def _config_with_digest(cfg: IntrinsicConfig, tensors: dict[str, torch.Tensor]) -> str:
    """Record the digest of ``cfg`` + ``tensors`` in ``cfg``; the config JSON to write."""
    data = cfg.to_dict()
    data.pop(DIGEST_FIELD, None)
    cfg.digest = checkpoint_digest(data, tensors)
    config_json = cfg.to_json_string()
    if checkpoint_digest(json.loads(config_json), tensors) != cfg.digest:  # pragma: no cover
        raise RuntimeError("the checkpoint config does not survive a JSON round trip")
    return config_json
# --- end integrity ----------------------------------------------------------------------------


def save_intrinsic_model(model, path: str | os.PathLike, single_file: bool = False, overwrite: bool = False) -> Path:
    """Write ``model``'s checkpoint to ``path`` (a directory, or ``*.idc.safetensors``); atomic."""
    from .fingerprint import fingerprint

    path = Path(path)
    if single_file and not path.name.endswith(SINGLE_FILE_SUFFIX):
        raise ValueError(f"a single-file checkpoint must be named *{SINGLE_FILE_SUFFIX}, got {path.name!r}")
    recover_interrupted(path)  # an earlier overwrite killed half-way
    _check_target(path, overwrite)
    cfg = model.intrinsic_config
    if cfg.base_fingerprint is None:
        cfg.base_fingerprint = fingerprint(model)
    tensors, meta = _tensors_and_metadata(model)
    config_json = _config_with_digest(cfg, tensors)  # integrity (v2)
    clean_stale_temps(path)
    if single_file:
        tmp = temp_sibling(path, directory=False)
        try:
            write_bytes_synced(tmp, safetensors_bytes(tensors, {**meta, CONFIG_METADATA_KEY: config_json}))
            _normal_permissions(tmp)
            _replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path
    tmp = temp_sibling(path, directory=True)
    try:
        write_bytes_synced(tmp / CONFIG_NAME, (config_json + "\n").encode())
        write_bytes_synced(tmp / WEIGHTS_NAME, safetensors_bytes(tensors, meta))
        _normal_permissions(tmp)
        _replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


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


def _check_rng(cfg: IntrinsicConfig, source: str) -> None:
    name, _, version = cfg.rng.partition("/")
    if name != RNG_NAME or not version.isdigit():
        raise ValueError(f"{source}: rng={cfg.rng!r} is not a generator this idcompress knows ({RNG_NAME}/{RNG_VERSION})")
    if int(version) > RNG_VERSION:
        raise ValueError(
            f"{source}: rng={cfg.rng!r} comes from a newer idcompress (this one has {RNG_NAME}/{RNG_VERSION}); upgrade idcompress"
        )
    if int(version) < RNG_VERSION:
        raise ValueError(f"{source}: rng={cfg.rng!r} is an older generator that this idcompress no longer rebuilds")


def _check_vectors(cfg: IntrinsicConfig, tensors: dict, dtypes: dict, source: str):
    if "theta_d" not in tensors:
        raise ValueError(f"{source}: no tensor 'theta_d' (found {sorted(tensors)})")
    wanted = {"theta_d"} | ({"said_lambda"} if cfg.is_said else set())
    extra = set(tensors) - wanted
    if extra:
        raise ValueError(f"{source}: unexpected tensors {sorted(extra)} for projection={cfg.projection!r}")
    if cfg.is_said and "said_lambda" not in tensors:
        raise ValueError(f"{source}: projection='said' needs a tensor 'said_lambda'")
    m = cfg.num_tensors
    expected = {"theta_d": cfg.d - m if cfg.is_said and m else cfg.d, "said_lambda": m}
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


def load_checkpoint_files(path: str | os.PathLike,
                          allow_integrity_mismatch: bool | None = None) -> CheckpointFiles:
    """Read and validate a checkpoint directory or ``*.idc.safetensors`` file (no model built).

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
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        cfg = IntrinsicConfig.from_dict(data, source=source)
    for field in ("D", "num_tensors", "layout_digest"):
        if getattr(cfg, field) is None:
            raise ValueError(f"{source}: missing field {field!r}")
    _check_rng(cfg, source)
    theta, lam = _check_vectors(cfg, tensors, dtypes, str(w_path))
    check_consistency(cfg, source)  # integrity (v2): num_labels vs label_names, fingerprint
    names = None
    if LAYOUT_METADATA_KEY in meta:
        try:
            names = _decode_layout(meta[LAYOUT_METADATA_KEY])
        except (ValueError, zlib.error) as e:
            raise ValueError(f"{w_path}: metadata '{LAYOUT_METADATA_KEY}' is corrupt ({e})") from None
    return CheckpointFiles(cfg, theta, lam, names, str(path))


def load_intrinsic_model(
    path: str | os.PathLike,
    base_model=None,
    revision: str | None = None,
    allow_fingerprint_mismatch: bool = False,
    device=None,
    **model_kwargs,
):
    """Rebuild the tuned model: base (given, or resolved from the config), P and head from the seed."""
    from ..models.loading import load_base_model
    from ..tuners.model import IntrinsicModel
    from .fingerprint import fingerprint

    files = load_checkpoint_files(path)
    cfg = files.config
    if base_model is None:
        if not cfg.base_model_name_or_path:
            raise ValueError(f"{files.source}: no base_model_name_or_path in the config; pass base_model=")
        base_model = load_base_model(
            cfg.base_model_name_or_path,
            task_type=cfg.task_type,
            num_labels=cfg.num_labels,
            label_names=cfg.label_names,
            problem_type=cfg.problem_type,
            revision=revision or cfg.revision,
            **model_kwargs,
        )
        base_desc = cfg.base_model_name_or_path
    else:
        base_desc = getattr(getattr(base_model, "config", None), "_name_or_path", None) or type(base_model).__name__
    if device is not None:
        base_model = base_model.to(device)
    _check_layout(base_model, cfg, files)
    model = IntrinsicModel(base_model, cfg)
    fp = fingerprint(model)
    if cfg.base_fingerprint and fp != cfg.base_fingerprint:
        msg = (
            f"base model {base_desc!r} has fingerprint {fp}, but checkpoint {files.source} was tuned on a base "
            f"with fingerprint {cfg.base_fingerprint}"
        )
        if not allow_fingerprint_mismatch:
            raise ValueError(msg + "; pass allow_fingerprint_mismatch=True (CLI: --force) to load it anyway")
        warnings.warn("LOADING ONTO A DIFFERENT BASE: " + msg, stacklevel=2)
    with torch.no_grad():
        model.theta_d.copy_(files.theta_d)
        if files.said_lambda is not None:
            model.said_lambda.copy_(files.said_lambda)
    return model


def _check_layout(base_model, cfg: IntrinsicConfig, files: CheckpointFiles) -> None:
    from ..tuners.layout import build_layout

    layout = build_layout(base_model, cfg.include, cfg.exclude)
    if layout.digest() == cfg.layout_digest:
        return
    have = layout.names
    detail = ""
    if files.layout_names is not None:
        missing = [n for n in files.layout_names if n not in set(have)]
        extra = [n for n in have if n not in set(files.layout_names)]
        if missing:
            detail += f"; missing from the base: {missing[:10]}" + (" …" if len(missing) > 10 else "")
        if extra:
            detail += f"; not in the checkpoint: {extra[:10]}" + (" …" if len(extra) > 10 else "")
        if not missing and not extra:
            detail += "; same tensor names, but their shapes, dtypes or order differ"
    raise ValueError(
        f"{files.source}: the base model's layout (D={layout.D}, {layout.m} tensors) differs from the "
        f"checkpoint's (D={cfg.D}, {cfg.num_tensors} tensors){detail}"
    )
