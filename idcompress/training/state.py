"""The output folder of a run and the resumable training state inside it.

Layout of ``<output-dir>``::

    options.json          the options of the run (written at the start)
    metrics.jsonl         one JSON line per evaluation
    metrics.json          the final summary (written at the end)
    checkpoint/           the trained model
    state/step_00000040/  accelerator.save_state (model, optimizer, scheduler, RNG states)
                          + trainer_state.json (counters, history, early-stop bookkeeping)
                          + best_trainable.safetensors (early stopping only)

``trainer_state.json`` is written last (atomically), so a state folder without it is incomplete
and ignored on resume. Only the newest complete state is kept.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..fileio import atomic_write_text

STATE_DIR = "state"
TRAINER_STATE = "trainer_state.json"
BEST_SNAPSHOT = "best_trainable.safetensors"
OPTIONS_FILE = "options.json"
RUN_MARKERS = ("metrics.jsonl", "metrics.json", STATE_DIR)

#: options that may change when a run is resumed; every other one must match.
RESUMABLE_CHANGES = frozenset({"output_dir", "resume", "save_every", "stop_after_steps",
                               "no_report"})


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary sibling, then rename it over ``path``."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def check_output_dir(path: Path, resume: bool) -> None:
    """Create ``path`` and prove it writable (probe file), before any work is done.

    Refuses a folder that already holds a run unless ``resume``.
    """
    if path.exists() and not path.is_dir():
        raise ValueError(f"--output-dir {str(path)!r} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"--output-dir {str(path)!r} is not writable: {e.strerror or e}") from None
    if not resume:
        found = [m for m in RUN_MARKERS if (path / m).exists()]
        if found:
            raise ValueError(f"--output-dir {str(path)!r} already holds a run ({', '.join(found)}); "
                             "pass --resume to continue it or choose another --output-dir")


def latest_state(output_dir: Path) -> Path | None:
    """The newest complete state folder of a run, or ``None``."""
    root = output_dir / STATE_DIR
    if not root.is_dir():
        return None
    done = [p for p in root.iterdir() if p.is_dir() and (p / TRAINER_STATE).is_file()]
    return max(done, key=lambda p: p.name) if done else None


def state_folder(output_dir: Path, step: int) -> Path:
    return output_dir / STATE_DIR / f"step_{step:08d}"


def prune_states(output_dir: Path, keep: Path) -> None:
    """Remove every state folder but ``keep``."""
    for p in (output_dir / STATE_DIR).iterdir():
        if p.is_dir() and p != keep:
            shutil.rmtree(p, ignore_errors=True)


def read_trainer_state(folder: Path) -> dict[str, Any]:
    with open(folder / TRAINER_STATE, encoding="utf-8") as f:
        return json.load(f)


def check_resumable(saved: dict[str, Any], current: dict[str, Any], where: Path) -> None:
    """``ValueError`` listing the options that differ from those of the run being resumed."""
    diffs = [
        f"--{k.replace('_', '-')}: saved {saved.get(k)!r}, now {current.get(k)!r}"
        for k in sorted(set(saved) | set(current))
        if k not in RESUMABLE_CHANGES and saved.get(k) != current.get(k)
    ]
    if diffs:
        raise ValueError(f"cannot resume the run in {str(where)!r} with different options: "
                         + "; ".join(diffs))
