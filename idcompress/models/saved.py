"""Folders of plain-PyTorch models (not transformers): ``model.safetensors`` + ``config.json``.

``idcompress merge`` and ``idcompress finetune --method full`` write a model that has no
``save_pretrained`` (EfficientNet-Lite0) as such a folder:

* ``model.safetensors``: the whole ``state_dict`` (parameters and buffers, e.g. BatchNorm running
  statistics), tensor names as in the module;
* ``config.json``: ``{"idcompress_format": "module/1", "architecture": "efficientnet-lite0",
  "num_labels": 10, "label_names": [...], "image_preprocessing": {...}}`` (``label_names`` and
  ``image_preprocessing`` may be null; the latter is what the model was trained on: ``size``,
  ``mean``, ``std`` on the 0..255 scale, see :class:`idcompress.models.pixels.ImageTransform`).

:func:`idcompress.models.loading.load_base_model` recognises such a folder by its ``config.json``
and returns the module in eval mode (:func:`load_module_folder`). Only registered architectures
(:data:`ARCHITECTURES`) are written or read; reading never unpickles anything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

FORMAT = "module/1"
FORMAT_KEY = "idcompress_format"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def _efficientnet_lite0_skeleton(num_labels: int) -> nn.Module:
    from .efficientnet_lite import EfficientNetLite0

    return EfficientNetLite0(num_classes=num_labels, _meta=True)


#: architecture name → ``build(num_labels)``: the module on the ``meta`` device (no weights drawn).
ARCHITECTURES: dict[str, Callable[[int], nn.Module]] = {
    "efficientnet-lite0": _efficientnet_lite0_skeleton,
}


def architecture_of(name: str | None) -> str | None:
    """The registered architecture of a base name: a short name itself, or a module folder's."""
    if not name:
        return None
    if name.lower() in ARCHITECTURES:
        return name.lower()
    if is_module_folder(name):
        return read_module_config(name)["architecture"]
    return None


def is_module_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder whose ``config.json`` carries ``idcompress_format``."""
    cfg = Path(path) / CONFIG_FILE
    if not cfg.is_file():
        return False
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and FORMAT_KEY in data


def read_module_config(path: str | os.PathLike) -> dict[str, Any]:
    """The checked ``config.json`` of a module folder; ``ValueError`` naming the file and field."""
    cfg_path = Path(path) / CONFIG_FILE
    try:
        data = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{cfg_path}: not a readable JSON file ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{cfg_path}: expected a JSON object, got {type(data).__name__}")
    if data.get(FORMAT_KEY) != FORMAT:
        raise ValueError(f"{cfg_path}: {FORMAT_KEY}={data.get(FORMAT_KEY)!r} is not {FORMAT!r}")
    arch = data.get("architecture")
    if arch not in ARCHITECTURES:
        raise ValueError(f"{cfg_path}: architecture={arch!r} is unknown; "
                         f"known: {sorted(ARCHITECTURES)}")
    n = data.get("num_labels")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{cfg_path}: num_labels={n!r} must be a positive integer")
    names = data.get("label_names")
    if names is not None and not (isinstance(names, list) and len(names) == n
                                  and all(isinstance(s, str) for s in names)):
        raise ValueError(f"{cfg_path}: label_names={names!r} must be {n} strings or null")
    return data


def save_module_folder(
    model: nn.Module,
    folder: str | os.PathLike,
    architecture: str,
    num_labels: int,
    label_names: list[str] | None = None,
    image_preprocessing: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (a registered ``architecture``) as ``model.safetensors`` + ``config.json``."""
    from safetensors.torch import save_file

    from ..version import __version__

    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture={architecture!r} is unknown; "
                         f"known: {sorted(ARCHITECTURES)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    config = {FORMAT_KEY: FORMAT, "architecture": architecture, "num_labels": int(num_labels),
              "label_names": list(label_names) if label_names else None,
              "image_preprocessing": image_preprocessing, "idcompress_version": __version__}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder


def load_module_folder(folder: str | os.PathLike, num_labels: int | None = None) -> nn.Module:
    """The module saved in ``folder`` (eval mode; ``_idcompress_new_keys`` empty).

    ``num_labels``, when given, must equal the saved one (a new head is not supported here).
    """
    from safetensors.torch import load_file

    data = read_module_config(folder)
    if num_labels is not None and num_labels != data["num_labels"]:
        raise ValueError(f"{folder}: the model was saved with num_labels={data['num_labels']}, "
                         f"asked for num_labels={num_labels}")
    weights = Path(folder) / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{folder}: missing {WEIGHTS_FILE}")
    model = ARCHITECTURES[data["architecture"]](data["num_labels"])
    result = model.load_state_dict(load_file(str(weights)), strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{weights}: does not match architecture {data['architecture']!r}: missing "
                         f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}")
    model._idcompress_new_keys = []
    return model.eval()
