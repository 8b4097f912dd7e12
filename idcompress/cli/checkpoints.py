"""What the commands that load a checkpoint check first: its files, then the base it names."""

from __future__ import annotations

import warnings
from pathlib import Path


def check_checkpoint_and_base(checkpoint: str, revision: str | None = None,
                              force: bool = False, base: str | None = None) -> Path:
    """Resolve ``checkpoint``, verify its files (integrity digest, fields) and check that the
    base it names can be found (local path or, offline, cached hub id) before anything loads.

    ``force`` lets a digest mismatch through (the load that follows warns); ``base`` (``--base``)
    is checked instead of the recorded base. Returns the path.
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
    from ..models import packaged_folder

    cfg = files.config
    if base is not None:
        check_model_reference(base, None, what="--base")
        return Path(checkpoint) if Path(checkpoint).exists() else path
    name = cfg.get("base_model_name_or_path")
    if not name:
        raise ValueError(f"{files.source}: no base_model_name_or_path recorded; the base model "
                         "cannot be found (pass --base PATH_OR_ID)")
    if packaged_folder(name) is None:  # a packaged model's hub id is found offline
        check_model_reference(name, cfg.get("revision"),
                              what=f"base model (base_model_name_or_path of {files.source}; --base overrides it)")
    return Path(checkpoint) if Path(checkpoint).exists() else path
