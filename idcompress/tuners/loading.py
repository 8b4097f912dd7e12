"""What rebuilding a tuned model from a checkpoint needs before the adapter: its config, its base.

The base named in a checkpoint is tried in this order: the packaged copy when the name is a
packaged model (short name or the hub id it packages), then the name itself (a local folder or a
hub id + revision). A candidate is accepted only when its fingerprint equals the recorded one, so
a packaged copy stands in for its hub repo exactly when the bytes are the same.
"""

from __future__ import annotations

import os

from ..checkpoint.format import load_checkpoint_files
from ..models import packaged_folder
from .config import IntrinsicConfig


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
