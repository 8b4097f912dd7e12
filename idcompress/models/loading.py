"""Load a base model by name for a task type, recording which parameters are new.

``load_base_model`` resolves packaged short names (``minilm-l6``), local folders and hub ids
(with ``revision``) and records ``model._idcompress_new_keys`` from transformers' loading info,
so the adapter initialises exactly the new head from the seeded generator. Other packages may
register loaders for short names that are not transformers folders (``register_loader``).
A folder written by :func:`idcompress.models.saved.save_module_folder` (a merged EfficientNet)
loads as its module. For ``task_type="IMAGE_CLS"`` a pretrained head of another size than
``num_labels`` is replaced (``ignore_mismatched_sizes``) and listed as new, like a missing one.

Before any hub look-up, :func:`check_model_reference` checks the name: a string that looks like
a local path (:func:`idcompress.pathcheck.looks_like_local_path`) must be a folder with a
``config.json`` and is never sent to the hub; a hub id must be well formed and, offline
(``HF_HUB_OFFLINE``/``--offline``), in the hub cache. What transformers then refuses (weights a
safe loader will not unpickle, a folder it does not recognise, a hub repo that does not answer)
becomes a one-line ``ValueError`` naming the model.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path

from torch import nn

from ..pathcheck import describe_missing, looks_like_local_path
from . import SHORT_NAMES, resolve_model_name

# task_type (PEFT's names) → transformers auto class name
AUTO_CLASSES = {
    "SEQ_CLS": "AutoModelForSequenceClassification",
    "IMAGE_CLS": "AutoModelForImageClassification",
    "TOKEN_CLS": "AutoModelForTokenClassification",
    "CAUSAL_LM": "AutoModelForCausalLM",
    "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM",
    "FEATURE_EXTRACTION": "AutoModel",
    None: "AutoModel",
}

Loader = Callable[..., nn.Module]
_LOADERS: dict[str, Loader] = {}  # filled below


def _efficientnet_lite0(num_labels: int | None = None, **kw) -> nn.Module:
    from .efficientnet_lite import load_efficientnet_lite0

    return load_efficientnet_lite0(num_classes=num_labels or 1000, **kw)


def register_loader(short_name: str, loader: Loader) -> None:
    """``loader(num_labels=…, **kw) -> nn.Module`` for a short name that is not a transformers folder."""
    _LOADERS[short_name.lower()] = loader


def load_base_model(
    name: str,
    task_type: str | None = "SEQ_CLS",
    num_labels: int | None = None,
    label_names: list[str] | None = None,
    problem_type: str | None = None,
    revision: str | None = None,
    **kwargs,
) -> nn.Module:
    """The pretrained model ``name`` with a (possibly new) head for ``task_type``."""
    if name.lower() in _LOADERS:
        return _LOADERS[name.lower()](num_labels=num_labels, **kwargs)
    from .saved import is_module_folder, load_module_folder

    if is_module_folder(name):
        return load_module_folder(name, num_labels=num_labels)
    check_model_reference(name, revision)
    import transformers
    from transformers.utils import logging as hf_logging

    if task_type not in AUTO_CLASSES:
        raise ValueError(f"task_type={task_type!r} is not supported; choose one of {[k for k in AUTO_CLASSES if k]}")
    auto = getattr(transformers, AUTO_CLASSES[task_type])
    extra = dict(kwargs)
    if num_labels is not None:
        extra["num_labels"] = num_labels
    if label_names:
        extra["id2label"] = dict(enumerate(label_names))
        extra["label2id"] = {n: i for i, n in enumerate(label_names)}
    if problem_type:
        extra["problem_type"] = problem_type
    if revision:
        extra["revision"] = revision
    if task_type == "IMAGE_CLS":
        extra.setdefault("ignore_mismatched_sizes", True)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialised" notice is expected: we initialise them
    try:
        with _one_line_errors(name):
            model, info = auto.from_pretrained(resolve_model_name(name), output_loading_info=True,
                                               **extra)
    finally:
        hf_logging.set_verbosity(verbosity)
    model._idcompress_new_keys = sorted(set(info.get("missing_keys", ())) | set(_mismatched(info)))
    return model


def hub_offline() -> bool:
    """True when the hub must not be contacted (``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``)."""
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return bool(constants.HF_HUB_OFFLINE) or any(
        (v or "").strip().upper() in ("1", "ON", "YES", "TRUE") for v in flags)


def check_model_reference(name: str, revision: str | None = None, what: str = "model") -> None:
    """Refuse a model name that cannot load, before anything is sent to the hub.

    Packaged short names and registered loaders pass; an existing path must be a folder with
    ``config.json``; a path-like string that does not exist is reported as a missing path (never
    looked up on the hub); a hub id must be ``owner/name`` or ``name`` and, offline, cached.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what} {name!r} is not a model name, folder or hub id")
    key = name.strip().lower()
    if key in _LOADERS or key in SHORT_NAMES:
        return
    p = Path(name).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ValueError(f"{what} {name!r} is a file; expected a model folder (config.json + "
                             "weights) or a hub id")
        if not (p / "config.json").is_file():
            found = sorted(x.name for x in p.iterdir())[:10]
            raise ValueError(f"{what} folder {name!r} has no config.json (found {found}); "
                             "is it a transformers model folder?")
        return
    if looks_like_local_path(name) or os.path.lexists(p):
        raise FileNotFoundError(describe_missing(name, f"{what} folder not found:") +
                                "; not looked up on the hub (it names a local path)")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        if name.count("/") > 1:
            raise HFValidationError("more than one '/'")
        validate_repo_id(name)
    except HFValidationError as e:
        raise ValueError(f"{what} {name!r} is neither a packaged name ({', '.join(SHORT_NAMES)}), "
                         f"a local folder, nor a valid hub id 'owner/name' ({e})") from None
    if hub_offline():
        from huggingface_hub import constants, try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json", revision=revision)
        if not isinstance(cached, str):
            raise FileNotFoundError(
                f"{what} {name!r} is not a local folder, and hub repo {name!r}"
                + (f" (revision {revision!r})" if revision else "")
                + f" is not in the hub cache {constants.HF_HUB_CACHE}; the hub is offline "
                "(HF_HUB_OFFLINE=1 or --offline): download it once online, or pass a local "
                f"folder (packaged names: {', '.join(SHORT_NAMES)})")


class _one_line_errors:
    """Turn what transformers raises for a model that does not load into one ``ValueError`` line."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, e, tb) -> bool:
        if e is None:
            return False
        first = " ".join(str(e).split())[:400]
        if isinstance(e, pickle.UnpicklingError):
            raise ValueError(
                f"model {self.name!r}: its weights are a pickle file that the safe loader refuses "
                f"to unpickle ({first[:160]}…); only load weights you trust, and prefer a "
                "model.safetensors file") from None
        if isinstance(e, (OSError, ValueError)) and not isinstance(e, (PermissionError,)):
            raise ValueError(f"model {self.name!r} does not load: {first}") from None
        return False


def load_tokenizer(name: str, revision: str | None = None):
    """``AutoTokenizer`` of a model name (as :func:`load_base_model` resolves it), errors in one line."""
    from transformers import AutoTokenizer

    if name.strip().lower() not in _LOADERS:
        check_model_reference(name, revision)
    with _one_line_errors(name):
        return AutoTokenizer.from_pretrained(resolve_model_name(name), revision=revision)


def _mismatched(info) -> list[str]:
    out = []
    for item in info.get("mismatched_keys", ()) or ():
        out.append(item[0] if isinstance(item, (tuple, list)) else item)
    return out


register_loader("efficientnet-lite0", _efficientnet_lite0)
