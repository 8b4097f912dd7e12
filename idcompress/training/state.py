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

Verification: ``trainer_state.json`` lists the size and SHA-256 of every other file of its
folder (``files``) and carries a digest of its own content (``digest``); :func:`verify_state`
checks all of it before anything is loaded and refuses a damaged, missing or extra file by name
(Accelerate's loader would silently skip a truncated ``random_states_0.pkl`` and resume into
another result). States saved before this check existed load with a one-line notice.

Output folder: a run refuses a folder that already holds one (``options.json``,
``metrics.jsonl``, ``metrics.json``, ``state/`` or ``checkpoint/``) unless ``--resume`` (continue
it) or ``--overwrite`` (start anew: the old run's options, metrics, state and report are removed
once every input has been checked; its checkpoint is replaced atomically at the end). Hidden
temporary files left in the folder by a killed run are removed at the next start
(:func:`clean_run_temps`, under the folder's lock), and a resumed run rewrites
``metrics.jsonl`` from the restored history, so an evaluation logged just before a kill is not
listed twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from ..fileio import atomic_write_json, atomic_write_text

STATE_DIR = "state"
TRAINER_STATE = "trainer_state.json"
BEST_SNAPSHOT = "best_trainable.safetensors"
OPTIONS_FILE = "options.json"
CHECKPOINT_DIR = "checkpoint"
METRICS_LOG = "metrics.jsonl"
RUN_MARKERS = (OPTIONS_FILE, METRICS_LOG, "metrics.json", STATE_DIR, CHECKPOINT_DIR)
#: what ``--overwrite`` removes before the new run writes anything (the checkpoint is replaced)
PREVIOUS_RUN_FILES = (OPTIONS_FILE, METRICS_LOG, "metrics.json", STATE_DIR, "geometry")
TRAINER_STATE_KEYS = ("global_step", "completed_batches", "history", "best_score", "best_epoch",
                      "bad_evals", "stopped_early", "epoch_loss_sum", "epoch_loss_count")

#: options that may change when a run is resumed; every other one must match.
RESUMABLE_CHANGES = frozenset({"output_dir", "resume", "save_every", "stop_after_steps",
                               "no_report", "overwrite"})


def write_json_atomic(path: Path, data: Any) -> None:
    """A run file's JSON (sorted keys; NaN kept as a score may be NaN), written atomically."""
    atomic_write_json(path, data, sort_keys=True, allow_nan=True)


def check_output_dir(path: Path, resume: bool, overwrite: bool = False) -> None:
    """Create ``path`` and prove it writable (probe file), before any work is done.

    Refuses a folder that already holds a run unless ``resume`` or ``overwrite``.
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
    if not resume and not overwrite:
        found = [m for m in RUN_MARKERS if (path / m).exists()]
        if found:
            raise ValueError(f"--output-dir {str(path)!r} already holds a run ({', '.join(found)}); "
                             "pass --resume to continue it, --overwrite to replace it, or choose "
                             "another --output-dir")


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


def read_json_file(path: Path, what: str = "file") -> Any:
    """Parsed JSON of ``path``; ``ValueError`` naming the file when unreadable or truncated."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"{what} {str(path)!r} cannot be read: {e.strerror or e}") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} {str(path)!r} is not UTF-8 JSON ({e.reason} at byte "
                         f"{e.start}; damaged?)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} {str(path)!r} is not valid JSON ({e.msg} at line {e.lineno} "
                         f"column {e.colno}; truncated or damaged?)") from None


def read_trainer_state(folder: Path) -> dict[str, Any]:
    """``trainer_state.json`` of a state folder, with its fields checked (see :func:`verify_state`)."""
    path = folder / TRAINER_STATE
    data = read_json_file(path, "training state")
    if not isinstance(data, dict):
        raise ValueError(f"training state {str(path)!r} must hold a JSON object")
    missing = [k for k in TRAINER_STATE_KEYS if k not in data]
    if missing:
        raise ValueError(f"training state {str(path)!r}: missing field(s) {missing}")
    return data


def load_saved_options(path: Path) -> dict[str, Any]:
    """The ``options.json`` of a run, its keys checked against the options of this version."""
    from .options import FIELDS

    data = read_json_file(path, "--resume: options file")
    if not isinstance(data, dict):
        raise ValueError(f"--resume: options file {str(path)!r} must hold a JSON object")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ValueError(f"--resume: options file {str(path)!r} has unknown key(s) {unknown} "
                         "(written by another idcompress version, or edited?)")
    return data


# --- verified training state -------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _json_digest(data: dict[str, Any]) -> str:
    kept = {k: v for k, v in data.items() if k != "digest"}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, separators=(",", ":")).encode()
                          ).hexdigest()


def _state_files(folder: Path) -> dict[str, Path]:
    return {f.relative_to(folder).as_posix(): f for f in sorted(folder.rglob("*"))
            if f.is_file() and f.name != TRAINER_STATE and not f.name.startswith(".")}


def write_trainer_state(folder: Path, data: dict[str, Any]) -> None:
    """Write ``trainer_state.json`` (last), listing size and SHA-256 of every other file."""
    files = {name: {"bytes": f.stat().st_size, "sha256": _sha256(f)}
             for name, f in _state_files(folder).items()}
    payload = {**data, "files": files}
    payload["digest"] = _json_digest(payload)
    write_json_atomic(folder / TRAINER_STATE, payload)


def verify_state(folder: Path) -> dict[str, Any]:
    """Check every file of a saved state against ``trainer_state.json``; return that state.

    ``ValueError`` naming the file for a truncated, changed, missing or unexpected one.
    """
    path = folder / TRAINER_STATE
    data = read_trainer_state(folder)
    if "files" not in data:
        warnings.warn(f"{folder}: training state saved by an older idcompress, without file "
                      "sizes and digests: resuming without verifying it", stacklevel=2)
        return data
    if data.get("digest") != _json_digest(data):
        raise ValueError(f"training state {str(path)!r} was changed or damaged after it was "
                         "saved (its digest does not match its content)")
    listed, present = data["files"], _state_files(folder)
    if not isinstance(listed, dict):
        raise ValueError(f"training state {str(path)!r}: field 'files' must be an object")
    for name in sorted(listed):
        f = folder / name
        want = listed[name]
        if name not in present:
            raise ValueError(f"--resume: state file {str(f)!r} is missing (listed in {path})")
        size = f.stat().st_size
        if size != want.get("bytes"):
            raise ValueError(f"--resume: state file {str(f)!r} has {size} bytes, {want.get('bytes')}"
                             " were saved (truncated or damaged); refusing to resume from it")
        if _sha256(f) != want.get("sha256"):
            raise ValueError(f"--resume: state file {str(f)!r} was changed or damaged after it was "
                             f"saved (sha256 differs from the one in {path})")
    extra = sorted(set(present) - set(listed))
    if extra:
        raise ValueError(f"--resume: state folder {str(folder)!r} holds files the run did not save:"
                         f" {extra}; refusing to resume from it")
    return data


def rewrite_history(log_path: Path, history: list[dict[str, Any]]) -> None:
    """Make ``metrics.jsonl`` list exactly ``history`` (one line per evaluation), atomically."""
    atomic_write_text(log_path, "".join(json.dumps(h) + "\n" for h in history))


def clean_run_temps(output_dir: Path) -> list[Path]:
    """Remove temporary files a killed run left in its folder (call under the folder's lock).

    Hidden ``*.tmp`` files and folders (atomic writes, checkpoint writes), parked
    ``.checkpoint.old-*`` folders once a checkpoint is back in place, write probes, and state
    folders without ``trainer_state.json`` (an interrupted save).
    """
    from ..fileio import recover_interrupted

    recover_interrupted(output_dir / CHECKPOINT_DIR)
    removed: list[Path] = []
    candidates = [p for p in output_dir.iterdir() if p.name.startswith(".")]
    root = output_dir / STATE_DIR
    if root.is_dir():
        for sub in root.iterdir():
            if sub.is_dir() and not (sub / TRAINER_STATE).is_file():
                candidates.append(sub)
            elif sub.is_dir():
                candidates += [p for p in sub.iterdir() if p.name.startswith(".")]
            elif sub.name.startswith("."):
                candidates.append(sub)
    ckpt = output_dir / CHECKPOINT_DIR
    for p in candidates:
        name = p.name
        temp = (name.endswith(".tmp") or name.startswith(".write-probe-")
                or (name.startswith(f".{CHECKPOINT_DIR}.old-") and ckpt.exists())
                or p.parent == root)
        if not temp:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def clear_previous_run(output_dir: Path) -> list[str]:
    """``--overwrite``: remove the old run's options, metrics, state and report."""
    removed = []
    for name in PREVIOUS_RUN_FILES:
        p = output_dir / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif os.path.lexists(p):
            p.unlink()
        else:
            continue
        removed.append(name)
    return removed


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
