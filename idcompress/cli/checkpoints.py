"""What the commands that load a checkpoint check first: its files, then the base it names."""

from __future__ import annotations

import warnings
from pathlib import Path


def check_checkpoint_and_base(checkpoint: str, revision: str | None = None,
                              force: bool = False) -> Path:
    """Resolve ``checkpoint``, verify its files (integrity digest, fields) and check that the
    base it names can be found (local path or, offline, cached hub id) before anything loads.

    ``force`` lets a digest mismatch through (the load that follows warns). Returns the path.
    """
    from ..checkpoint.format import load_checkpoint_files
    from ..checkpoint.hub import checkpoint_in_folder, resolve_checkpoint
    from ..models.loading import check_model_reference

    path = resolve_checkpoint(checkpoint, revision=revision)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the load that follows shows them once
        if path.is_dir():
            path = checkpoint_in_folder(path)
        files = load_checkpoint_files(path, allow_integrity_mismatch=force)
    cfg = files.config
    if not cfg.base_model_name_or_path:
        raise ValueError(f"{files.source}: no base_model_name_or_path recorded; the base model "
                         "cannot be found")
    check_model_reference(cfg.base_model_name_or_path, cfg.revision,
                          what=f"base model (base_model_name_or_path of {files.source})")
    return Path(checkpoint) if Path(checkpoint).exists() else path
