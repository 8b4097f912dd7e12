"""Load a task's splits from the hub, a built-in source or local files, checked and normalised.

``load_task_data`` returns ``(spec, DatasetDict)`` with split ``"train"`` and the spec's eval
splits (plus ``test_splits`` for built-in data), each with exactly the spec's text fields
(strings) and label field (``ClassLabel`` with the spec's names, or ``float32`` for regression).

Sources, first match wins: ``train_file`` + ``validation_file``; ``data_dir`` (see
:mod:`idcompress.data.layouts`); the hub (``datasets.load_dataset(hub_path, hub_name)``);
the built-in loader (``builtin/movie-sentiment``).

Local files may name columns differently: ``text_columns``/``label_column`` map them (in the
order of ``spec.text_fields``); GLUE's own TSV names are recognised. Class labels may be ids
(``0``, ``"1"``) or names from ``spec.label_names`` (``"entailment"``, case-insensitive). Rows
with a missing text or label are dropped with a warning, and so are rows whose text is empty
or only whitespace (counted per file and reported: a model trained on empty inputs learns
nothing from them, and a file half empty is usually a broken export); a split left without
rows is refused. Everything that would make training
fail or silently train on wrong data raises ``ValueError`` here, naming the file.

``max_train_samples``/``max_eval_samples`` keep the first N rows after
``Dataset.shuffle(seed=seed)`` (datasets' own seeded generator; no global RNG).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import datasets

from ..errors import UserError
from .layouts import COLUMN_ALIASES, HEADERLESS, find_split_file, resolve_data_dir
from .readers import check_file, read_file, read_header
from .tasks import MOVIE_SENTIMENT, TaskSpec, get_task

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike


class DataSourceError(UserError, RuntimeError):
    """A task's data could not be fetched (e.g. from the hub while offline)."""


def load_task_data(
    spec_or_name: TaskSpec | str,
    train_file: PathLike | None = None,
    validation_file: PathLike | Sequence[PathLike] | Mapping[str, PathLike] | None = None,
    data_dir: PathLike | None = None,
    text_columns: Sequence[str] | str | None = None,
    label_column: str | None = None,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    seed: int = 0,
) -> tuple[TaskSpec, datasets.DatasetDict]:
    """Load, check and normalise the splits of a task.

    ``validation_file`` is one path (the first eval split), a list (in ``spec.eval_splits``
    order) or a ``{split: path}`` mapping. When fewer eval splits are found than the spec has
    (e.g. only MNLI matched), the returned spec's ``eval_splits`` lists those found; local
    files never provide ``test_splits``.
    """
    spec = get_task(spec_or_name)
    for flag, v in (("max_train_samples", max_train_samples), ("max_eval_samples",
                                                              max_eval_samples)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"{flag}={v!r} must be a positive integer")
    text_map = _text_column_map(spec, text_columns, label_column)

    raw: dict[str, tuple[datasets.Dataset, str]]
    if train_file is not None or validation_file is not None:
        if train_file is None or validation_file is None:
            missing = "train_file" if train_file is None else "validation_file"
            raise ValueError(f"task {spec.name}: local files need both train_file and "
                             f"validation_file; {missing} is missing")
        eval_files = _eval_files(spec, validation_file)
        spec = replace(spec, eval_splits=tuple(eval_files), test_splits=())
        files = {"train": Path(train_file), **eval_files}
        raw = {s: (_read_local(spec, f, text_map), str(f)) for s, f in files.items()}
    elif data_dir is not None:
        files = _data_dir_files(spec, Path(data_dir))
        spec = replace(spec, eval_splits=tuple(s for s in files if s != "train"), test_splits=())
        raw = {s: (_read_local(spec, f, text_map), str(f)) for s, f in files.items()}
    elif spec.hub_path is not None:
        raw = _from_hub(spec)
    elif spec.name == MOVIE_SENTIMENT.name:
        from .builtin import load_movie_sentiment

        dd = load_movie_sentiment()
        raw = {s: (dd[s], f"{spec.name} split {s!r}")
               for s in ("train", *spec.eval_splits, *spec.test_splits)}
    else:
        raise ValueError(f"task {spec.name}: no data source; pass train_file and "
                         "validation_file, or data_dir")

    out = {}
    for split, (ds, where) in raw.items():
        limit = max_train_samples if split == "train" else max_eval_samples
        out[split] = _prepare(spec, ds, where, split, text_map, limit, seed)
    return spec, datasets.DatasetDict(out)


# --- sources ---------------------------------------------------------------------------------


def _eval_files(spec: TaskSpec, validation_file) -> dict[str, Path]:
    if isinstance(validation_file, Mapping):
        bad = [s for s in validation_file if s not in spec.eval_splits]
        if bad:
            raise ValueError(f"task {spec.name}: validation_file names splits {bad}; "
                             f"the task's eval splits are {list(spec.eval_splits)}")
        return {s: Path(validation_file[s]) for s in spec.eval_splits if s in validation_file}
    if isinstance(validation_file, (str, os.PathLike)):
        return {spec.eval_splits[0]: Path(validation_file)}
    paths = list(validation_file)
    if not paths or len(paths) > len(spec.eval_splits):
        raise ValueError(f"task {spec.name}: {len(paths)} validation files for eval splits "
                         f"{list(spec.eval_splits)}")
    return {s: Path(p) for s, p in zip(spec.eval_splits, paths)}


def _data_dir_files(spec: TaskSpec, data_dir: Path) -> dict[str, Path]:
    folder = resolve_data_dir(data_dir, spec.name)
    listing = sorted(p.name for p in folder.iterdir())[:30]
    train = find_split_file(folder, spec.train_split)
    if train is None:
        raise ValueError(f"data_dir {str(folder)!r}: no train file (train.tsv/.csv/.jsonl/"
                         f".json/.parquet) for task {spec.name}; found {listing}")
    files = {"train": train}
    for split in spec.eval_splits:
        f = find_split_file(folder, split)
        if f is not None:
            files[split] = f
    if len(files) == 1:
        raise ValueError(f"data_dir {str(folder)!r}: no file for eval splits "
                         f"{list(spec.eval_splits)} (e.g. validation.tsv or dev.tsv) for "
                         f"task {spec.name}; found {listing}")
    return files


def _read_local(spec: TaskSpec, path: Path, text_map: dict[str, str] | None) -> datasets.Dataset:
    fmt = check_file(path)
    layout = HEADERLESS.get(spec.name)
    if fmt == "tsv" and layout is not None and text_map is None:
        header = read_header(path)
        expected = {*spec.text_fields, spec.label_field}
        if len(header) == len(layout) and not expected & {h.strip() for h in header}:
            return read_file(path, column_names=list(layout))
    return read_file(path)


def _from_hub(spec: TaskSpec) -> dict[str, tuple[datasets.Dataset, str]]:
    where = f"{spec.hub_path} ({spec.hub_name})"
    logger.info("loading %s from the hub with datasets.load_dataset", where)
    try:
        dd = datasets.load_dataset(spec.hub_path, spec.hub_name)
    except Exception as e:
        raise DataSourceError(
            f"task {spec.name}: datasets.load_dataset({spec.hub_path!r}, {spec.hub_name!r}) "
            f"failed ({type(e).__name__}: {e}); offline, pass data_dir or "
            "train_file/validation_file with the task's files"
        ) from e
    wanted = ("train", *spec.eval_splits)
    missing = [s for s in wanted if s not in dd]
    if missing:
        raise ValueError(f"{where}: splits {missing} missing; found {list(dd)}")
    return {s: (dd[s], f"{where} split {s!r}") for s in wanted}


# --- normalisation ---------------------------------------------------------------------------


def _text_column_map(spec: TaskSpec, text_columns, label_column) -> dict[str, str] | None:
    """Explicit ``{spec field: source column}`` from the mapping flags, or ``None``."""
    if text_columns is None and label_column is None:
        return None
    mapping: dict[str, str] = {}
    if text_columns is not None:
        cols = (text_columns,) if isinstance(text_columns, str) else tuple(text_columns)
        if len(cols) != len(spec.text_fields):
            raise ValueError(
                f"text_columns={list(cols)}: task {spec.name} needs {len(spec.text_fields)} "
                f"text column(s) {list(spec.text_fields)}"
            )
        mapping.update(zip(spec.text_fields, cols))
    if label_column is not None:
        mapping[spec.label_field] = label_column
    return mapping


def _source_columns(spec: TaskSpec, columns: list[str], text_map, where: str) -> dict[str, str]:
    """``{source column: spec field}`` for the text and label fields; ``ValueError`` if absent."""
    stripped = {c.strip(): c for c in columns}
    aliases = COLUMN_ALIASES.get(spec.name, {})
    found: dict[str, str] = {}
    missing: list[str] = []
    explicit = text_map or {}
    for field in (*spec.text_fields, spec.label_field):
        if field in explicit:
            candidates: tuple[str, ...] = (explicit[field],)
        else:
            candidates = (field, *aliases.get(field, ()))
        src = next((stripped[c] for c in candidates if c in stripped), None)
        if src is None:
            missing.append(candidates[0])
        else:
            found[src] = field
    if missing:
        hint = ""
        if len(columns) == 1 and ("\t" in columns[0] or "," in columns[0]):
            hint = " (one column only: is the delimiter right for the file's extension?)"
        raise ValueError(
            f"{where}: missing column(s) {missing} for task {spec.name}; columns found: "
            f"{columns}{hint}. Map yours with text_columns/label_column "
            "(--text-columns/--label-column)"
        )
    if len(found) != len(spec.text_fields) + 1:
        raise ValueError(f"{where}: one column is mapped to several fields: {found}")
    return found


def _class_id(v, names: tuple[str, ...]) -> int | None:
    k = len(names)
    if isinstance(v, bool):
        return int(v) if k == 2 else None
    if isinstance(v, int):
        return v if 0 <= v < k else None
    if isinstance(v, float):
        return int(v) if v.is_integer() and 0 <= v < k else None
    if isinstance(v, str):
        s = v.strip()
        if s in names:
            return names.index(s)
        lower = [n.lower() for n in names]
        if s.lower() in lower:
            return lower.index(s.lower())
        try:
            return _class_id(float(s), names) if s else None
        except ValueError:
            return None
    return None


def _score(v, bounds: tuple[float, float] | None) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        return None
    try:
        x = float(v)
    except ValueError:
        return None
    if not math.isfinite(x):
        return None
    if bounds is not None and not bounds[0] <= x <= bounds[1]:
        return None
    return x


def _distinct(ds: datasets.Dataset, column: str) -> tuple[list, list]:
    """Distinct hashable values of ``column``, and reprs of unhashable ones (JSON lists/dicts)."""
    if isinstance(ds.features[column], (datasets.Value, datasets.ClassLabel)):
        return ds.unique(column), []
    values: dict = {}
    odd: dict[str, None] = {}
    for v in ds[column]:  # mixed-type JSON column: arrow has no unique kernel for it
        if isinstance(v, (list, dict)):
            odd[repr(v)] = None
        else:
            values[v] = None
    return list(values), list(odd)


def _check_text(spec: TaskSpec, ds: datasets.Dataset, where: str) -> list[str]:
    """Text fields that need converting to ``str``; ``ValueError`` for non-scalar values."""
    convert = []
    for f in spec.text_fields:
        feat = ds.features[f]
        if isinstance(feat, datasets.Value) and feat.dtype in ("string", "large_string"):
            continue
        bad = [v for v in ds[f] if isinstance(v, (list, dict))]
        if bad:
            raise ValueError(f"{where}: text column for {f!r} holds lists/objects, "
                             f"e.g. {bad[0]!r:.80}; it must hold strings")
        convert.append(f)
    return convert


def _label_mapping(spec: TaskSpec, ds: datasets.Dataset, where: str) -> dict:
    values, unhashable = _distinct(ds, spec.label_field)
    if spec.is_regression:
        mapping = {v: _score(v, spec.label_range) for v in values}
        allowed = (f"finite numbers in [{spec.label_range[0]}, {spec.label_range[1]}]"
                   if spec.label_range else "finite numbers")
    else:
        mapping = {v: _class_id(v, spec.label_names) for v in values}
        allowed = (f"ids 0..{spec.num_labels - 1} or names {list(spec.label_names)}")
    bad = [v for v, m in mapping.items() if m is None] + unhashable
    if bad:
        shown = sorted(bad, key=repr)[:10]
        raise ValueError(
            f"{where}: label values {shown}{' …' if len(bad) > 10 else ''} "
            f"({len(bad)} distinct) are outside task {spec.name}'s labels ({allowed})"
        )
    return mapping


def _features(spec: TaskSpec) -> datasets.Features:
    feats = {f: datasets.Value("string") for f in spec.text_fields}
    feats[spec.label_field] = (datasets.Value("float32") if spec.is_regression
                               else datasets.ClassLabel(names=list(spec.label_names)))
    return datasets.Features(feats)


def _drop_empty_texts(spec: TaskSpec, ds: datasets.Dataset, where: str, split: str
                      ) -> datasets.Dataset:
    """Drop rows whose text fields are empty or whitespace (missing ones are handled after)."""
    fields = list(spec.text_fields)

    def empty(v) -> bool:
        return isinstance(v, str) and not v.strip()

    counts = {f: sum(map(empty, ds[f])) for f in fields}
    if not any(counts.values()):
        return ds
    n = len(ds)
    ds = ds.filter(lambda b: [not any(empty(b[f][i]) for f in fields)
                              for i in range(len(b[fields[0]]))], batched=True)
    detail = ", ".join(f"{c} in {f!r}" for f, c in counts.items() if c)
    if len(ds) == 0:
        raise ValueError(f"{where}: split {split!r} has no row with a non-empty text "
                         f"(empty: {detail})")
    msg = (f"{where}: dropped {n - len(ds)} of {n} rows of split {split!r} with an empty text "
           f"({detail})")
    print(f"idcompress: {msg}", file=sys.stderr)
    return ds


def _prepare(spec: TaskSpec, ds: datasets.Dataset, where: str, split: str, text_map,
             limit: int | None, seed: int) -> datasets.Dataset:
    renames = _source_columns(spec, list(ds.column_names), text_map, where)
    ds = ds.select_columns(list(renames))
    if any(s != f for s, f in renames.items()):
        ds = ds.rename_columns({s: f for s, f in renames.items() if s != f})
    if len(ds) == 0:
        raise ValueError(f"{where}: split {split!r} has no rows")
    fields = [*spec.text_fields, spec.label_field]
    ds = _drop_empty_texts(spec, ds, where, split)
    if any(ds.data.column(f).null_count for f in fields):
        n = len(ds)
        ds = ds.filter(lambda b: [all(b[f][i] is not None for f in fields)
                                  for i in range(len(b[fields[0]]))], batched=True)
        logger.warning("%s: dropped %d of %d rows with a missing text or label", where,
                       n - len(ds), n)
        if len(ds) == 0:
            raise ValueError(f"{where}: split {split!r} has no row with all of {fields}")
    mapping = _label_mapping(spec, ds, where)
    to_str = _check_text(spec, ds, where)
    if limit is not None and limit < len(ds):
        ds = ds.shuffle(seed=seed).select(range(limit))
    target = _features(spec)
    label = spec.label_field
    if ds.features == target and all(k == v for k, v in mapping.items()):
        return ds

    def convert(batch: dict) -> dict:
        out = {label: [mapping[v] for v in batch[label]]}
        for f in to_str:
            out[f] = [v if isinstance(v, str) else str(v) for v in batch[f]]
        return out

    return ds.map(convert, batched=True, features=target, desc=f"labels {split}")
