"""Results of a measurement on disk: ``results.csv`` (one row per finished run) and ``results.json``.

- ``results.csv``: columns :data:`COLUMNS`. Each finished run is appended at once and flushed
  with ``fsync``, so a crash loses at most the runs in progress. The baseline (full fine-tuning)
  runs are rows too, with ``d = "full"`` and ``projection = "none"``.
- ``results.json``: rewritten atomically (temp file + ``os.replace``) with the summary per
  projection (d_frac, its interval, the baseline, the fraction) and all rows.
- ``settings.json``: the training settings the scores were produced with (:data:`SCORE_SETTINGS`);
  :func:`check_settings` refuses to add runs with other settings (epochs, learning rates, batch
  size, data limits, input size), which would mix incomparable scores.
- Resuming: a run whose key ``(task, model, projection, d, seed)`` already has a row is not run
  again; its stored score is used.
- One output directory holds one ``(task, model, metric)`` (several projections may share it): a
  results file written for another task, model or metric is refused with a ``ValueError`` naming
  the file and the values, rather than mixed in.

A torn last line (a crash in mid-write: no final newline) is cut off with a warning when the store
is opened, since it may hold a truncated score; other malformed lines are skipped with a warning.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..fileio import atomic_write_json
from ..flags import flag

COLUMNS = (
    "task", "model", "projection", "d", "seed", "score", "metric", "wall_time_s", "timestamp",
)
CSV_NAME = "results.csv"
JSON_NAME = "results.json"
SETTINGS_NAME = "settings.json"
#: the options that change a run's score, recorded in ``settings.json``
SCORE_SETTINGS = ("epochs", "lr", "batch_size", "baseline_epochs", "baseline_lr",
                  "max_train_samples", "max_eval_samples", "max_length", "image_size")
FULL = "full"
BASELINE_PROJECTION = "none"

Key = tuple[str, str, str, str, int]
"""``(task, model, projection, d, seed)`` with ``d`` as text (an integer or ``"full"``)."""


@dataclass(frozen=True)
class Row:
    """One finished run. ``d`` is an int, or ``"full"`` for the baseline; ``wall_time_s`` in s."""

    task: str
    model: str
    projection: str
    d: int | str
    seed: int
    score: float
    metric: str
    wall_time_s: float
    timestamp: str

    @property
    def key(self) -> Key:
        return (self.task, self.model, self.projection, str(self.d), self.seed)

    def to_dict(self) -> dict:
        out = {c: getattr(self, c) for c in COLUMNS}
        out["score"] = self.score if math.isfinite(self.score) else None
        return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _parse_row(raw: dict[str, str]) -> Row:
    d_text = raw["d"]
    d: int | str = FULL if d_text == FULL else int(d_text)
    return Row(
        task=raw["task"], model=raw["model"], projection=raw["projection"], d=d,
        seed=int(raw["seed"]), score=float(raw["score"]), metric=raw["metric"],
        wall_time_s=float(raw["wall_time_s"]), timestamp=raw["timestamp"],
    )


def read_rows(path: str | os.PathLike) -> list[Row]:
    """Rows of a ``results.csv``; a torn or malformed line is skipped with a warning."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        return []
    missing = [c for c in COLUMNS if c not in reader.fieldnames]
    if missing:
        raise ValueError(f"{path}: not an idcompress results file (missing columns {missing})")
    rows = []
    for i, raw in enumerate(reader, start=2):
        try:
            rows.append(_parse_row(raw))
        except (TypeError, ValueError, KeyError):
            warnings.warn(f"{path}: skipping malformed line {i}: {raw}", stacklevel=2)
    return rows


def check_settings(output_dir: str | os.PathLike, settings: dict) -> None:
    """Refuse ``output_dir`` when its ``settings.json`` records other :data:`SCORE_SETTINGS`
    than ``settings`` (``ValueError`` naming each flag, its value there and now)."""
    path = Path(output_dir) / SETTINGS_NAME
    if not path.exists():
        return
    want = {k: settings.get(k) for k in SCORE_SETTINGS}
    try:
        saved = json.loads(path.read_text(encoding="utf-8")).get("settings", {})
    except (json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"{path}: not a settings file of idcompress measure ({e})") from None
    diff = [f"{flag(k)} {saved.get(k)!r} there, {want[k]!r} now" for k in SCORE_SETTINGS
            if saved.get(k) != want[k]]
    if diff:
        raise ValueError(f"{output_dir} holds results trained with other settings "
                         f"({'; '.join(diff)}). Use another --output-dir, or the same settings "
                         "to resume.")


def write_settings(
    output_dir: str | os.PathLike, task: str, model: str, metric: str, settings: dict
) -> Path:
    """Write ``settings.json``: the identity and the :data:`SCORE_SETTINGS` of ``settings``."""
    path = Path(output_dir) / SETTINGS_NAME
    atomic_write_json(path, {"task": task, "model": model, "metric": metric,
                             "settings": {k: settings.get(k) for k in SCORE_SETTINGS}})
    return path


class ResultStore:
    """Append-only run log for one ``(task, model, metric)`` in ``output_dir``.

    Opening checks any existing ``results.csv`` / ``results.json`` there and raises
    ``ValueError`` if it belongs to another task, model or metric.
    """

    def __init__(self, output_dir: str | os.PathLike, task: str, model: str, metric: str) -> None:
        for name, value in (("task", task), ("model", model), ("metric", metric)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string, got {name}={value!r}")
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.task, self.model, self.metric = task, model, metric
        self.csv_path = self.output_dir / CSV_NAME
        self.json_path = self.output_dir / JSON_NAME
        self._check_json()
        self._drop_torn_tail()
        self._rows: dict[Key, Row] = {}
        for row in read_rows(self.csv_path):
            self._check_row(row)
            self._rows.setdefault(row.key, row)

    # -- identity checks ----------------------------------------------------------------------
    def _mismatch(self, path: Path, found: dict[str, str]) -> None:
        want = {"task": self.task, "model": self.model, "metric": self.metric}
        bad = [f"{k}={found[k]!r} (this run: {want[k]!r})" for k in want if found.get(k) != want[k]]
        if bad:
            raise ValueError(
                f"{path} holds results of another measurement: {', '.join(bad)}. "
                "Use another output directory rather than mixing results."
            )

    def _check_row(self, row: Row) -> None:
        self._mismatch(self.csv_path, {"task": row.task, "model": row.model, "metric": row.metric})

    def _check_json(self) -> None:
        if not self.json_path.exists():
            return
        try:
            data = json.loads(self.json_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{self.json_path}: not valid JSON ({e})") from e
        if not isinstance(data, dict):
            raise ValueError(f"{self.json_path}: not an idcompress results file")
        self._mismatch(self.json_path, {k: data.get(k) for k in ("task", "model", "metric")})

    def _drop_torn_tail(self) -> None:
        """Cut a last line without its newline (a crash in mid-write): it may hold a cut score."""
        if not self.csv_path.exists():
            return
        data = self.csv_path.read_bytes()
        if not data or data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1
        warnings.warn(
            f"{self.csv_path}: dropping an incomplete last line {data[keep:]!r} "
            "(a run interrupted while it was written; it will be run again)",
            stacklevel=3,
        )
        with open(self.csv_path, "r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())

    # -- rows ---------------------------------------------------------------------------------
    @property
    def rows(self) -> list[Row]:
        """All rows, in the order they were first written."""
        return list(self._rows.values())

    def key(self, projection: str, d: int | str, seed: int) -> Key:
        return (self.task, self.model, projection, str(d), int(seed))

    def get(self, projection: str, d: int | str, seed: int) -> Row | None:
        """The stored row of this run, or ``None`` if it has not finished yet."""
        return self._rows.get(self.key(projection, d, seed))

    def append(
        self, projection: str, d: int | str, seed: int, score: float, wall_time_s: float
    ) -> Row:
        """Append one finished run to ``results.csv`` and ``fsync`` it; return the row."""
        if d != FULL and (isinstance(d, bool) or not isinstance(d, int)):
            raise ValueError(f"d must be an int or {FULL!r}, got d={d!r}")
        row = Row(
            self.task, self.model, projection, d, int(seed), float(score), self.metric,
            round(float(wall_time_s), 4), _now(),
        )
        new_file = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
        with open(self.csv_path, "a", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            if new_file:
                writer.writerow(COLUMNS)
            writer.writerow([getattr(row, c) for c in COLUMNS])
            f.flush()
            os.fsync(f.fileno())
        self._rows.setdefault(row.key, row)
        return row

    def cached_runner(
        self,
        projection: str,
        run: Callable[[Sequence[tuple[int | str, int]], Callable], dict],
    ) -> Callable[[Sequence[tuple[int | str, int]]], dict[tuple[int | str, int], float]]:
        """Wrap ``run(points, on_result)`` so finished points come from disk and new ones are saved.

        ``run(points, on_result)`` must call ``on_result(d, seed, score, wall_time_s)`` for each
        point as it finishes (as :func:`idcompress.measure.parallel.run_points` does).
        """

        def runner(points: Sequence[tuple[int | str, int]]) -> dict[tuple[int | str, int], float]:
            out: dict[tuple[int | str, int], float] = {}
            todo = []
            for d, s in points:
                row = self.get(projection, d, s)
                if row is None:
                    todo.append((d, s))
                else:
                    out[(d, s)] = row.score
            if todo:

                def save(d: int | str, s: int, score: float, wall: float) -> None:
                    self.append(projection, d, s, score, wall)
                    out[(d, s)] = score

                run(todo, save)
            return out

        return runner

    def write_json(self, summaries: dict[str, dict], extra: dict | None = None) -> Path:
        """Rewrite ``results.json`` atomically: identity, per-projection ``summaries``, all rows.

        Summaries of projections already in the file and not in ``summaries`` are kept.
        """
        old: dict = {}
        if self.json_path.exists():
            old = json.loads(self.json_path.read_text(encoding="utf-8")).get("projections", {})
        merged = {**old, **summaries}
        data = {
            "task": self.task,
            "model": self.model,
            "metric": self.metric,
            **(extra or {}),
            "projections": merged,
            "rows": [r.to_dict() for r in self.rows],
        }
        atomic_write_json(self.json_path, data)
        return self.json_path
