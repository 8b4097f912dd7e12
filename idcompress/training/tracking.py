"""Experiment trackers and step logging, the Accelerate way.

``--report-to tensorboard|wandb|mlflow|all|none`` becomes ``Accelerator(log_with=...,
project_dir=<output-dir>)``; the run's options are the tracker's config (``init_trackers``,
project name ``idcompress``; TensorBoard writes its event files under
``<output-dir>/idcompress/``). A tracker whose package is missing is refused before anything is
built, naming the package to install; ``all`` means every installed one (Accelerate's ``"all"``).

``--logging-steps N``: every N optimizer steps, one record with ``train/loss`` (mean over the
batches since the last record, this process), ``train/lr``, ``train/grad_norm`` (L2 norm of the
gradient of the trained numbers at that step, after accumulation; nothing clips it: for
``intrinsic`` that is θ_d, SAID's scales included) and ``train/tokens_per_s`` (non-padding input tokens, plus
target tokens for seq2seq, per second of wall time over all processes; images:
``train/samples_per_s``). Records go to the trackers and to ``<output-dir>/train_log.jsonl``.
Evaluation metrics are logged at each epoch's step as ``eval/<split>/<metric>``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

TRACKERS = ("tensorboard", "wandb", "mlflow")
REPORT_TO = (*TRACKERS, "all", "none")
PROJECT_NAME = "idcompress"
TRAIN_LOG = "train_log.jsonl"
_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def _available(name: str) -> bool:
    from accelerate.utils import is_mlflow_available, is_tensorboard_available, is_wandb_available

    return {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available,
            "mlflow": is_mlflow_available}[name]()


def log_with(report_to: str) -> str | list[str] | None:
    """Accelerate's ``log_with`` for ``--report-to``; ``ValueError`` for a missing package."""
    if report_to not in REPORT_TO:
        raise ValueError(f"--report-to={report_to!r} is unknown; choose one of {list(REPORT_TO)}")
    if report_to == "none":
        return None
    if report_to == "all":
        if not any(_available(t) for t in TRACKERS):
            raise ValueError("--report-to all: no tracker is installed (pip install tensorboard, "
                             "wandb or mlflow)")
        return "all"
    if not _available(report_to):
        raise ValueError(f"--report-to {report_to}: the {_PACKAGES[report_to]!r} package is not "
                         f"installed (pip install {_PACKAGES[report_to]})")
    return [report_to]


def tracker_config(options: dict[str, Any]) -> dict[str, Any]:
    """The options as tracker hyper-parameters (TensorBoard takes only scalars and strings)."""
    out = {}
    for k, v in options.items():
        if v is None or isinstance(v, (bool, int, float, str)):
            out[k] = "None" if v is None else v
        else:
            out[k] = json.dumps(v)
    return out


def count_tokens(batch: dict[str, Any]) -> tuple[int, str]:
    """(count, unit) of one batch: real input tokens (+ targets for seq2seq), else samples."""
    mask = batch.get("attention_mask")
    if mask is not None:
        n = int(mask.sum())
        labels = batch.get("labels")
        if labels is not None and labels.ndim == 2 and labels.shape != mask.shape:
            n += int((labels != -100).sum())  # seq2seq targets
        return n, "tokens"
    first = next(iter(batch.values()))
    return int(first.shape[0]), "samples"


def grad_norm(model: nn.Module) -> float:
    """L2 norm of the gradients of the trainable parameters (0 when none has one)."""
    norms = [p.grad.detach().float().norm() for p in model.parameters()
             if p.requires_grad and p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


class StepLogger:
    """Accumulates batches between records and writes a record every ``every`` steps."""

    def __init__(self, accelerator, every: int | None, out_dir: Path) -> None:
        self.accelerator, self.every, self.path = accelerator, every, out_dir / TRAIN_LOG
        self._reset()

    def _reset(self) -> None:
        self.loss_sum, self.batches, self.count, self.unit = 0.0, 0, 0, "tokens"
        self.t0 = time.perf_counter()

    def start(self) -> None:
        """Start the clock (call right before the first training batch)."""
        self._reset()

    @property
    def active(self) -> bool:
        return bool(self.every)

    def on_batch(self, batch: dict[str, Any], loss: torch.Tensor) -> None:
        if not self.every:
            return
        self.loss_sum += float(loss.detach())
        self.batches += 1
        n, self.unit = count_tokens(batch)
        self.count += n

    def due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0

    def on_step(self, step: int, lr: float, norm: float) -> None:
        """Write the record of optimizer step ``step`` (call only when :meth:`due`)."""
        acc = self.accelerator
        count = acc.reduce(torch.tensor(float(self.count), device=acc.device), "sum").item()
        dt = max(time.perf_counter() - self.t0, 1e-9)
        record = {"train/loss": self.loss_sum / max(1, self.batches), "train/lr": lr,
                  "train/grad_norm": norm, f"train/{self.unit}_per_s": count / dt}
        if acc.is_main_process:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": step, **record}) + "\n")
        acc.log(record, step=step)
        self._reset()


def eval_record(metrics: dict[str, dict[str, float]], train_loss: float | None
                ) -> dict[str, float]:
    """Tracker values of one evaluation: ``eval/<split>/<metric>`` and ``train/epoch_loss``."""
    out = {f"eval/{s}/{k}": v for s, m in metrics.items() for k, v in m.items()}
    if train_loss is not None:
        out["train/epoch_loss"] = train_loss
    return out
