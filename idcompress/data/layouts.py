"""Where the files of a split live in a data folder, and GLUE's own file layouts.

A data folder holds one file per split, named by split with any supported extension:
``train.*``; ``validation.*``, ``dev.*``, ``valid.*`` or ``val.*`` for ``validation``;
``validation_matched.*``/``dev_matched.*`` (and ``_mismatched``) for MNLI. A folder from the
original GLUE download (``glue_data/``) also works: its task subfolder (``SST-2``, ``MNLI``…) is
used when the folder itself has no train file.

The original GLUE TSVs name some columns differently from the hub dataset; ``COLUMN_ALIASES``
maps the hub name (the spec's field) to the TSV name. CoLA's train/dev TSVs have no header
(``HEADERLESS``).
"""

from __future__ import annotations

from pathlib import Path

from .readers import EXTENSIONS

COLUMN_ALIASES: dict[str, dict[str, tuple[str, ...]]] = {
    "glue/mrpc": {"sentence1": ("#1 String",), "sentence2": ("#2 String",), "label": ("Quality",)},
    "glue/stsb": {"label": ("score",)},
    "glue/qqp": {"label": ("is_duplicate",)},
    "glue/mnli": {"premise": ("sentence1",), "hypothesis": ("sentence2",),
                  "label": ("gold_label",)},
}

# CoLA: source code, acceptability (0/1), original author's mark, sentence.
HEADERLESS: dict[str, tuple[str, ...]] = {
    "glue/cola": ("source", "label", "original_label", "sentence"),
}

GLUE_DIR_NAMES: dict[str, str] = {
    "glue/cola": "CoLA", "glue/sst2": "SST-2", "glue/mrpc": "MRPC", "glue/stsb": "STS-B",
    "glue/qqp": "QQP", "glue/mnli": "MNLI", "glue/qnli": "QNLI", "glue/rte": "RTE",
    "glue/wnli": "WNLI",
}


def split_stems(split: str) -> tuple[str, ...]:
    """File-name stems that may hold ``split``."""
    if split == "validation":
        return ("validation", "dev", "valid", "val")
    if split.startswith("validation_"):
        return (split, "dev_" + split[len("validation_"):])
    return (split,)


def find_split_file(folder: Path, split: str) -> Path | None:
    """The one file in ``folder`` for ``split``; ``None`` if absent, ``ValueError`` if several."""
    found = [
        folder / f"{stem}{ext}"
        for stem in split_stems(split)
        for ext in EXTENSIONS
        if (folder / f"{stem}{ext}").is_file()
    ]
    if len(found) > 1:
        raise ValueError(
            f"data dir {str(folder)!r}: several files for split {split!r}: "
            f"{[p.name for p in found]}; keep one"
        )
    return found[0] if found else None


def resolve_data_dir(data_dir: Path, task_name: str) -> Path:
    """``data_dir`` itself, or its GLUE task subfolder when only that has a train file."""
    if not data_dir.is_dir():
        raise ValueError(f"data_dir {str(data_dir)!r} does not exist or is not a folder")
    if find_split_file(data_dir, "train") is None and task_name in GLUE_DIR_NAMES:
        sub = data_dir / GLUE_DIR_NAMES[task_name]
        if sub.is_dir():
            return sub
    return data_dir
