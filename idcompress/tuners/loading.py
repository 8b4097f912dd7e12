"""Rebuilding a tuned model from a checkpoint: find the files, resolve the base, wrap, load the vectors.

The base named in a checkpoint is tried in this order: the packaged copy when the name is a
packaged model (short name or the hub id it packages), then the name itself (a local folder or a
hub id + revision). A candidate is accepted only when its fingerprint equals the recorded one, so
a packaged copy stands in for its hub repo exactly when the bytes are the same.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..checkpoint.fingerprint import FingerprintMismatchError
from ..checkpoint.format import load_checkpoint_files
from ..checkpoint.hub import checkpoint_in_folder, resolve_checkpoint
from ..models import packaged_folder
from .config import IntrinsicConfig
from .model import get_intrinsic_model, tuner_of


def read_config(path: str | os.PathLike, allow_integrity_mismatch: bool | None = None):
    """``(IntrinsicConfig, CheckpointFiles)`` of a checkpoint directory or ``*.idc.safetensors`` (no
    model); the integrity digest is verified (see ``load_checkpoint_files``)."""
    built = []
    files = load_checkpoint_files(
        path, lambda data, source: built.append(IntrinsicConfig.from_dict(data, source=source)),
        allow_integrity_mismatch=allow_integrity_mismatch)
    cfg = built[0]
    cfg._source = files.source
    cfg._layout_names = files.layout_names
    return cfg, files


def base_candidates(name: str) -> list[str]:
    """Where to look for the base ``name``: the packaged copy of a hub id first (if one is
    installed), then ``name`` itself (a short name, local folder or hub id)."""
    folder = packaged_folder(name)
    if folder is not None and "/" in name and not os.path.exists(name):
        return [folder, name]
    return [name]


def load_tuned(
    path_or_id,
    base_model: nn.Module | None = None,
    revision: str | None = None,
    allow_fingerprint_mismatch: bool = False,
    device=None,
    cache_dir=None,
    is_trainable: bool = True,
    allow_integrity_mismatch: bool | None = None,
    **model_kwargs,
):
    """See :meth:`idcompress.tuners.model.IntrinsicModel.from_pretrained`."""
    from ..models.loading import load_base_model

    path = resolve_checkpoint(path_or_id, revision=revision, cache_dir=cache_dir)
    if path.is_dir():
        path = checkpoint_in_folder(path)
    cfg, files = read_config(path, allow_integrity_mismatch)
    cfg.allow_fingerprint_mismatch = allow_fingerprint_mismatch
    cfg.inference_mode = not is_trainable
    if base_model is not None:  # a model, or a name used instead of the recorded one
        bases = [base_model]
    else:
        if not cfg.base_model_name_or_path:
            raise ValueError(f"{files.source}: no base_model_name_or_path in the config; pass base_model=")
        bases = base_candidates(cfg.base_model_name_or_path)
    for i, base in enumerate(bases):
        if isinstance(base, str):
            base = load_base_model(
                base, task_type=cfg.task_type, num_labels=cfg.num_labels, label_names=cfg.label_names,
                problem_type=cfg.problem_type, revision=revision or cfg.revision, **model_kwargs,
            )
        if device is not None:
            base = base.to(device)
        try:
            model = get_intrinsic_model(base, cfg)  # the adapter fills a copy: cfg stays as read
            break
        except FingerprintMismatchError:
            if i + 1 == len(bases):
                raise
    tuner = tuner_of(model)
    with torch.no_grad():
        tuner.theta_d.copy_(files.theta_d)
        if files.said_lambda is not None:
            tuner.said_lambda.copy_(files.said_lambda)
    return model
