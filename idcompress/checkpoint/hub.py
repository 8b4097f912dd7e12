"""Sharing checkpoints through the Hugging Face Hub (``huggingface_hub``).

``resolve_checkpoint`` turns a local path or a hub repo id (+ revision) into a local path: a
local directory or file wins; a string that looks like a local path
(:func:`idcompress.pathcheck.looks_like_local_path`: starts with ``.``, ``/``, ``~``, has a
file suffix, or its first component exists here) is never sent to the hub, and its error says
why it is missing (symlink loop, dangling link, missing component); otherwise the repo is
fetched with ``snapshot_download`` (only the checkpoint files; from the cache alone when
``HF_HUB_OFFLINE=1`` / ``--offline``). Hub failures become ``FileNotFoundError``/``ValueError``
naming the path or repo. A folder holding both checkpoint forms uses the directory form and
says so. :func:`upload_checkpoint` puts a checkpoint's files (and, when given, a model card)
into a hub repo; saving a model first is the adapter's job (``tuners.model.push_to_hub``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path

from ..fileio import recover_interrupted
from ..pathcheck import describe_missing, looks_like_local_path
from .format import CONFIG_NAME, SINGLE_FILE_SUFFIX, WEIGHTS_NAME
from .size import own_files

#: the model card's name in a hub repo
CARD_NAME = "README.md"

CHECKPOINT_PATTERNS = [CONFIG_NAME, WEIGHTS_NAME, f"*{SINGLE_FILE_SUFFIX}"]


def checkpoint_in_folder(folder: Path) -> Path:
    """A folder holding a directory checkpoint, or exactly one ``*.idc.safetensors``."""
    singles = sorted(folder.glob(f"*{SINGLE_FILE_SUFFIX}"))
    if (folder / CONFIG_NAME).exists():
        if singles:
            warnings.warn(f"{folder} holds both checkpoint forms: using the directory form "
                          f"({CONFIG_NAME} + {WEIGHTS_NAME}) and ignoring "
                          f"{', '.join(s.name for s in singles)} (pass that file's path to use it)",
                          stacklevel=2)
        return folder
    if len(singles) == 1:
        return singles[0]
    if len(singles) > 1:
        raise ValueError(f"{folder} holds several single-file checkpoints {[s.name for s in singles]}; name one")
    raise FileNotFoundError(f"{folder}: missing {CONFIG_NAME} (and no *{SINGLE_FILE_SUFFIX} file)")


def _check_repo_id(repo_id: str, what: str, need_owner: bool = True) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo_id, str) or repo_id.count("/") > 1 or (need_owner and repo_id.count("/") != 1):
        form = "'owner/name'" if need_owner else "'owner/name' or 'name'"
        raise ValueError(f"{what}: {repo_id!r} is not a hub repo id of the form {form}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise ValueError(f"{what}: {repo_id!r} is not a valid hub repo id ({e})") from None


def resolve_checkpoint(path_or_id: str | os.PathLike, revision: str | None = None, cache_dir=None) -> Path:
    """Local path of a checkpoint given a path or a hub repo id ``owner/name``."""
    p = Path(path_or_id).expanduser()
    if p.exists() or recover_interrupted(p):
        return p
    repo_id = str(path_or_id)
    if looks_like_local_path(repo_id) or os.path.lexists(p):
        raise FileNotFoundError(describe_missing(repo_id, "no checkpoint at") + ": not a local "
                                "path, nor a hub repo id 'owner/name' (so not looked up on the hub)")
    if repo_id.count("/") != 1:
        raise FileNotFoundError(f"no checkpoint at {repo_id} (not a local path, nor a hub repo id 'owner/name')")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        _check_repo_id(repo_id, f"no checkpoint at {repo_id} (not a local path)")
    except ValueError as e:
        raise FileNotFoundError(str(e)) from None
    where = f"hub repo {repo_id!r}" + (f" (revision {revision!r})" if revision else "")
    try:
        folder = snapshot_download(repo_id, revision=revision, allow_patterns=CHECKPOINT_PATTERNS, cache_dir=cache_dir)
    except LocalEntryNotFoundError as e:
        offline = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
        raise FileNotFoundError(
            f"no checkpoint at {repo_id}: not a local path, and {where} is not in the hub cache "
            f"{cache_dir or constants.HF_HUB_CACHE} and could not be downloaded{offline}: {e}"
        ) from None
    except RevisionNotFoundError:
        raise ValueError(f"{where}: no such revision") from None
    except HfHubHTTPError as e:  # repository not found, gated, private, server error
        raise FileNotFoundError(f"no checkpoint at {repo_id}: not a local path, and {where} failed: {e}") from None
    return checkpoint_in_folder(Path(folder))


def upload_checkpoint(path: str | os.PathLike, repo_id: str, card: str | None = None,
                      private: bool | None = None, token: str | None = None,
                      commit_message: str = "Upload idcompress checkpoint",
                      what: str = "push_to_hub") -> str:
    """Upload the checkpoint files at ``path`` (and ``card`` as ``README.md``) to the hub repo
    ``repo_id`` (``owner/name``, or ``name`` under the token's user); returns the commit URL.

    The repo id is checked (``ValueError`` naming ``what``) before any call to the hub.
    """
    from huggingface_hub import HfApi

    _check_repo_id(repo_id, what, need_owner=False)
    api = HfApi(token=token)
    url = api.create_repo(repo_id, private=private, exist_ok=True)
    repo_id = getattr(url, "repo_id", None) or repo_id  # "name" becomes "user/name"
    with tempfile.TemporaryDirectory() as tmp:
        for f in own_files(Path(path)):
            shutil.copy2(f, Path(tmp) / f.name)
        if card is not None:
            (Path(tmp) / CARD_NAME).write_text(card, encoding="utf-8")
        info = api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message)
    return str(getattr(info, "commit_url", info))
