"""Load a base model by name for a task type, recording which parameters are new.

``load_base_model`` resolves packaged short names (``minilm-l6``), local folders and hub ids
(with ``revision``) and records ``model._idcompress_new_keys`` from transformers' loading info,
so the adapter initialises exactly the new head from the seeded generator. Other packages may
register loaders for short names that are not transformers folders (``register_loader``).
A folder written by :func:`idcompress.models.saved.save_module_folder` (a merged EfficientNet)
loads as its module. For ``task_type="IMAGE_CLS"`` a pretrained head of another size than
``num_labels`` is replaced (``ignore_mismatched_sizes``) and listed as new, like a missing one.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from . import resolve_model_name

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
        model, info = auto.from_pretrained(resolve_model_name(name), output_loading_info=True, **extra)
    finally:
        hf_logging.set_verbosity(verbosity)
    model._idcompress_new_keys = sorted(set(info.get("missing_keys", ())) | set(_mismatched(info)))
    return model


def _mismatched(info) -> list[str]:
    out = []
    for item in info.get("mismatched_keys", ()) or ():
        out.append(item[0] if isinstance(item, (tuple, list)) else item)
    return out


register_loader("efficientnet-lite0", _efficientnet_lite0)
