"""Sharing checkpoints through the Hugging Face Hub (``huggingface_hub``).

``resolve_checkpoint`` turns a local path or a hub repo id (+ revision) into a local path: a
local directory or file wins; otherwise the repo is fetched with ``snapshot_download`` (only
the checkpoint files). ``push_to_hub`` saves to a temporary directory and uploads it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .format import CONFIG_NAME, SINGLE_FILE_SUFFIX, WEIGHTS_NAME

CHECKPOINT_PATTERNS = [CONFIG_NAME, WEIGHTS_NAME, f"*{SINGLE_FILE_SUFFIX}"]


def checkpoint_in_folder(folder: Path) -> Path:
    """A folder holding a directory checkpoint, or exactly one ``*.idc.safetensors``."""
    if (folder / CONFIG_NAME).exists():
        return folder
    singles = sorted(folder.glob(f"*{SINGLE_FILE_SUFFIX}"))
    if len(singles) == 1:
        return singles[0]
    if len(singles) > 1:
        raise ValueError(f"{folder} holds several single-file checkpoints {[s.name for s in singles]}; name one")
    raise FileNotFoundError(f"{folder}: missing {CONFIG_NAME} (and no *{SINGLE_FILE_SUFFIX} file)")


def resolve_checkpoint(path_or_id: str | os.PathLike, revision: str | None = None, cache_dir=None) -> Path:
    """Local path of a checkpoint given a path or a hub repo id."""
    p = Path(path_or_id)
    if p.exists():
        return p
    repo_id = str(path_or_id)
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/")) or repo_id.endswith(SINGLE_FILE_SUFFIX):
        raise FileNotFoundError(f"no checkpoint at {repo_id} (not a local path, nor a hub repo id 'owner/name')")
    from huggingface_hub import snapshot_download

    folder = snapshot_download(repo_id, revision=revision, allow_patterns=CHECKPOINT_PATTERNS, cache_dir=cache_dir)
    return checkpoint_in_folder(Path(folder))


def push_to_hub(model, repo_id: str, private: bool | None = None, token: str | None = None,
                commit_message: str = "Upload idcompress checkpoint", single_file: bool = False) -> str:
    """Upload ``model``'s checkpoint to the hub repo ``repo_id``; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / ("model" + SINGLE_FILE_SUFFIX if single_file else "ckpt")
        model.save_pretrained(target, single_file=single_file)
        folder = tmp if single_file else target
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message)
    return str(getattr(info, "commit_url", info))
