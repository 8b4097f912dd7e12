"""Checks of a fine-tuning run that need more than the options: before training, and during it.

Before the first step (:func:`check_before_training`):

* the model name (:func:`idcompress.models.loading.check_model_reference`): a missing local
  path, a malformed hub id, or a hub id that is not cached while offline is refused in one line;
* ``--mixed-precision fp16`` on a CPU-only run is **refused** (Accelerate would silently train in
  fp32 while ``options.json`` says fp16), naming the alternatives ``bf16`` and ``no``;
* ``--max-length`` above the model's maximum sequence length is **refused** (not clamped: a
  silent change of the truncation would change the result). The maximum is the smallest of the
  config's position limit (``max_position_embeddings``, ``n_positions``, …; minus the padding
  offset for RoBERTa-like models) and the tokenizer's ``model_max_length`` when its folder says.

During training (:func:`check_loss`): a non-finite loss stops the run at once, before the
backward pass, with the step, epoch and what to change; no checkpoint is written.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from .options import FinetuneOptions

POSITION_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length",
                   "seq_length", "n_ctx")
#: models whose position ids start after the padding index (the usable length is smaller)
OFFSET_POSITIONS = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert",
                              "longformer", "data2vec-text", "ibert", "markuplm",
                              "roberta-prelayernorm", "xmod", "mpnet"})


class NonFiniteLossError(UserError, ArithmeticError):
    """The training loss became NaN or infinite; the run stopped without a checkpoint."""


def _config_dict(name: str) -> tuple[dict[str, Any] | None, Path | None]:
    """The model's config as a dict (transformers' view) and its local folder, if any."""
    from ..models import resolve_model_name
    from ..models.loading import _one_line_errors

    resolved = resolve_model_name(name)
    folder = Path(resolved).expanduser()
    if folder.is_dir() and (folder / "config.json").is_file():
        from ..models.saved import is_module_folder

        if is_module_folder(folder):
            return None, folder
    from transformers import AutoConfig

    with _one_line_errors(name):
        cfg = AutoConfig.from_pretrained(resolved)
    return cfg.to_dict(), folder if folder.is_dir() else None


def model_max_length(name: str) -> tuple[int, str] | None:
    """``(max tokens, where it comes from)`` of a text model, or ``None`` when it has no limit."""
    cfg, folder = _config_dict(name)
    if cfg is None:
        return None
    limits: list[tuple[int, str]] = []
    for field in POSITION_FIELDS:
        v = cfg.get(field)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            if cfg.get("model_type") in OFFSET_POSITIONS and field == "max_position_embeddings":
                pad = cfg.get("pad_token_id")
                v -= (pad if isinstance(pad, int) else 1) + 1
                limits.append((v, f"config {field} minus the padding offset"))
            else:
                limits.append((v, f"config {field}"))
            break
    if folder is not None and (folder / "tokenizer_config.json").is_file():
        try:
            tok = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            tok = {}
        v = tok.get("model_max_length") if isinstance(tok, dict) else None
        if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1e9:
            limits.append((int(v), "tokenizer model_max_length"))
    return min(limits) if limits else None


def check_before_training(options: FinetuneOptions, device: torch.device) -> None:
    """Refuse what would train into garbage or fail after training started (module docstring)."""
    from ..models.loading import _LOADERS, check_model_reference

    check_mixed_precision(options, device)
    if options.model.strip().lower() in _LOADERS:
        return
    check_model_reference(options.model, what="--model")
    if options.is_image_task:
        return
    found = model_max_length(options.model)
    if found is not None and options.max_length > found[0]:
        limit, where = found
        raise ValueError(f"--max-length={options.max_length} is above the maximum sequence length "
                         f"of model {options.model!r}: {limit} tokens ({where}); pass "
                         f"--max-length {limit} or less")


def check_mixed_precision(options: FinetuneOptions, device: torch.device) -> None:
    """fp16 on a CPU-only run is refused (call before the ``Accelerator`` is made)."""
    if options.mixed_precision == "fp16" and torch.device(device).type == "cpu":
        raise ValueError("--mixed-precision fp16 needs a GPU; this run is on the CPU, where "
                         "Accelerate would silently train in float32: pass --mixed-precision bf16 "
                         "(CPU autocast) or --mixed-precision no")


def check_loss(loss: torch.Tensor, step: int, epoch: int, options: FinetuneOptions) -> None:
    """``NonFiniteLossError`` when ``loss`` is NaN/Inf, naming the step and what to change."""
    value = float(loss.detach().float().reshape(-1)[0]) if loss.numel() else math.nan
    if math.isfinite(value):
        return
    hints = [f"lower --lr (now {options.learning_rate:g})"]
    if options.mixed_precision == "fp16":
        hints.append("train with --mixed-precision bf16 or no (fp16 overflows)")
    if options.weight_decay:
        hints.append(f"check --weight-decay (now {options.weight_decay:g})")
    hints.append("check the data for extreme values")
    raise NonFiniteLossError(
        f"the training loss became {value} at step {step + 1} (epoch {epoch + 1}); stopped "
        f"before the update, no checkpoint written: {', '.join(hints)}")
