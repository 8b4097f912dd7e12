"""The bookkeeping of one run: counters, history and early stopping, saved with every state.

:class:`RunState` is what ``trainer_state.json`` holds (:data:`.state.TRAINER_STATE_KEYS`),
plus the best epoch's trainable parameters under early stopping, kept in memory and saved as
``best_trainable.safetensors`` next to it. The folder layout and the verification of a saved
state are :mod:`.state`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import state as st


def trainable_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """CPU copies of the trainable parameters of ``model``, by name."""
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters()
            if p.requires_grad}


@torch.no_grad()
def restore_snapshot(model: nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    """Copy a :func:`trainable_snapshot` back into ``model``'s parameters."""
    params = dict(model.named_parameters())
    for n, t in snapshot.items():
        params[n].copy_(t.to(params[n].device))


def better(score: float, best: float | None, spec: Any) -> bool:
    """``score`` beats ``best`` (lower is better for a spec with ``greater_is_better=False``)."""
    if best is None:
        return True
    return score > best if getattr(spec, "greater_is_better", True) else score < best


class RunState:
    """Mutable bookkeeping of one run (what ``trainer_state.json`` holds)."""

    def __init__(self) -> None:
        self.global_step = 0
        self.completed_batches = 0
        self.history: list[dict[str, Any]] = []
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.bad_evals = 0
        self.best_snapshot: dict[str, torch.Tensor] | None = None
        self.stopped_early = False
        self.epoch_loss_sum = 0.0  # over all processes, batches of the current epoch so far
        self.epoch_loss_count = 0

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in st.TRAINER_STATE_KEYS}

    def load_json(self, data: dict[str, Any]) -> None:
        for k in st.TRAINER_STATE_KEYS:
            setattr(self, k, data[k])

    def note_eval(self, entry: dict[str, Any], spec: Any, early_stop: int | None,
                  model: nn.Module) -> None:
        """Log an evaluation's ``entry``; track the best score and the early-stop patience.

        Under early stopping (``early_stop`` evaluations of patience) the trainable parameters
        of ``model`` are snapshotted at every new best.
        """
        self.history.append(entry)
        if better(entry["score"], self.best_score, spec):
            self.best_score, self.best_epoch, self.bad_evals = entry["score"], entry["epoch"], 0
            if early_stop is not None:
                self.best_snapshot = trainable_snapshot(model)
        else:
            self.bad_evals += 1
            if early_stop is not None and self.bad_evals >= early_stop:
                self.stopped_early = True

    def final_entry(self, model: nn.Module, early_stop: int | None) -> dict[str, Any]:
        """The history entry the run ends with: the last, or under early stopping the best one
        (whose parameters are then restored into ``model``)."""
        final = self.history[-1]
        if early_stop is not None and self.best_snapshot is not None \
                and self.best_epoch != final["epoch"]:
            restore_snapshot(model, self.best_snapshot)
            final = next(h for h in self.history if h["epoch"] == self.best_epoch)
        return final

    def write(self, folder: Path, output_dir: Path) -> None:
        """Complete a state folder (best snapshot, then ``trainer_state.json`` listing every file
        written there); remove the older states of ``output_dir``."""
        if self.best_snapshot is not None:
            from safetensors.torch import save_file

            save_file(self.best_snapshot, str(folder / st.BEST_SNAPSHOT))
        st.write_trainer_state(folder, self.to_json())  # sizes + digests of the files
        st.prune_states(output_dir, folder)

    @classmethod
    def read(cls, folder: Path) -> RunState:
        """The bookkeeping saved in a (verified) state folder."""
        run = cls()
        run.load_json(st.read_trainer_state(folder))
        if (folder / st.BEST_SNAPSHOT).is_file():
            from safetensors.torch import load_file

            run.best_snapshot = load_file(str(folder / st.BEST_SNAPSHOT))
        return run
