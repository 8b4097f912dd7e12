"""Read one local data file (TSV, CSV, JSON lines/array, parquet) into a ``datasets.Dataset``.

The format comes from the extension; the content is sniffed first so that a file whose content
does not match its name (JSON named ``.csv``, binary junk named ``.tsv``, …) is refused with a
``ValueError`` naming the file instead of a deep pyarrow/pandas traceback. Any error of the reader
itself is re-raised the same way.

Delimited files are read with every column as a string (no type guessing, no ``NA``→missing
conversion: the sentence "NA" stays "NA"); labels are converted later against the task. TSV is
read with quoting off, as GLUE's TSVs contain unbalanced quote characters; CSV uses standard
quoting. A UTF-8 byte-order mark is ignored.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import datasets

EXTENSIONS: dict[str, str] = {
    ".tsv": "tsv",
    ".csv": "csv",
    ".jsonl": "json",
    ".json": "json",
    ".parquet": "parquet",
}

_SNIFF_BYTES = 8192
_PARQUET_MAGIC = b"PAR1"


def file_format(path: str | os.PathLike) -> str:
    """``"tsv" | "csv" | "json" | "parquet"`` from the extension; ``ValueError`` otherwise."""
    ext = Path(path).suffix.lower()
    if ext not in EXTENSIONS:
        raise ValueError(
            f"data file {str(path)!r}: unsupported extension {ext or '(none)'!r}; "
            f"use one of {sorted(EXTENSIONS)}"
        )
    return EXTENSIONS[ext]


def check_file(path: str | os.PathLike) -> str:
    """Check that ``path`` exists, is non-empty and its content fits its extension; return format."""
    p = Path(path)
    fmt = file_format(p)
    if not p.exists():
        raise ValueError(f"data file {str(p)!r} does not exist")
    if not p.is_file():
        raise ValueError(f"data file {str(p)!r} is not a regular file")
    with open(p, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    if not head.strip():
        raise ValueError(f"data file {str(p)!r} is empty")
    if fmt == "parquet":
        if not head.startswith(_PARQUET_MAGIC):
            raise ValueError(
                f"data file {str(p)!r} is named .parquet but is not a Parquet file "
                "(no 'PAR1' magic bytes)"
            )
        return fmt
    if head.startswith(_PARQUET_MAGIC):
        raise ValueError(f"data file {str(p)!r} is a Parquet file; name it *.parquet")
    text = _decode_head(head, p, fmt)
    first = text.lstrip("\ufeff \t\r\n")[:1]
    if fmt == "json" and first not in ("{", "["):
        raise ValueError(
            f"data file {str(p)!r} is named {p.suffix} but does not start like JSON "
            f"(first character {first!r}); JSON lines need one object per line"
        )
    if fmt in ("csv", "tsv") and first in ("{", "["):
        raise ValueError(
            f"data file {str(p)!r} is named {p.suffix} but looks like JSON; name it *.jsonl/*.json"
        )
    return fmt


def _decode_head(head: bytes, p: Path, fmt: str) -> str:
    if b"\x00" in head:
        raise ValueError(
            f"data file {str(p)!r} is named {p.suffix} but holds binary data (NUL bytes); "
            f"expected UTF-8 {fmt.upper()} text"
        )
    try:
        # The sniffed block may end inside a multi-byte character: allow 3 trailing bytes.
        return head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start >= len(head) - 3 and e.reason == "unexpected end of data":
            return head[: e.start].decode("utf-8")
        raise ValueError(
            f"data file {str(p)!r} is not UTF-8 text (byte {e.start}: {e.reason}); "
            f"expected {fmt.upper()}"
        ) from None


def read_header(path: str | os.PathLike) -> list[str]:
    """Fields of the first line of a delimited file (TSV: quoting off; CSV: standard)."""
    p = Path(path)
    fmt = file_format(p)
    with open(p, encoding="utf-8-sig", newline="") as f:
        if fmt == "tsv":
            row = next(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), [])
        else:
            row = next(csv.reader(f), [])
    return row


def read_file(
    path: str | os.PathLike, column_names: list[str] | None = None
) -> datasets.Dataset:
    """Load ``path`` with ``datasets.load_dataset(csv|json|parquet, data_files=...)``.

    ``column_names`` (delimited files only) marks a file without a header row.
    """
    p = Path(path)
    fmt = check_file(p)
    kwargs: dict = {}
    if fmt in ("csv", "tsv"):
        names = list(column_names) if column_names is not None else read_header(p)
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"data file {str(p)!r}: duplicate column names {dup}")
        kwargs = {
            "delimiter": "\t" if fmt == "tsv" else ",",
            "quoting": csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL,
            "encoding": "utf-8-sig",
            "keep_default_na": False,
            "na_filter": False,
            "features": datasets.Features({n: datasets.Value("string") for n in names}),
        }
        if column_names is not None:
            kwargs["column_names"] = names
            kwargs["header"] = None
    builder = "csv" if fmt == "tsv" else fmt
    try:
        return datasets.load_dataset(
            builder, data_files={"train": str(p)}, split="train", **kwargs
        )
    except Exception as e:  # pyarrow / pandas / datasets errors all mean "cannot read this file"
        if "corresponds to no data" in str(e):
            raise ValueError(f"data file {str(p)!r} has no rows") from e
        raise ValueError(
            f"data file {str(p)!r} could not be read as {fmt.upper()}: {type(e).__name__}: "
            f"{_root_message(e)}"
        ) from e


def _root_message(e: BaseException) -> str:
    while e.__cause__ is not None:
        e = e.__cause__
    msg = str(e).strip().splitlines()
    return msg[0][:300] if msg else type(e).__name__
