"""What a run produced (:class:`RunResult`) and the lines ``idcompress finetune`` prints about it:
one per evaluation, the base's metrics before training, and the summary at the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checkpoint import size
from .options import FinetuneOptions


@dataclass
class RunResult:
    """What a run produced. ``metrics`` maps each eval split to its metrics."""

    options: FinetuneOptions
    output_dir: Path
    task: str
    main_metric: str
    score: float | None = None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    method: str = "intrinsic"
    d: int | None = None
    D: int | None = None
    trainable: int = 0
    base_params: int = 0
    checkpoint: Path | None = None
    checkpoint_bytes: int | None = None
    steps: int = 0
    epochs_done: int = 0
    best_epoch: int | None = None
    stopped_early: bool = False
    interrupted: bool = False
    reload_score: float | None = None
    report: str | None = None  # folder of the geometry report
    score_float32: float | None = None  # --vector-dtype: the score before the cast
    initial_metrics: dict[str, dict[str, float]] | None = None  # generative: before training
    hub_url: str | None = None  # --push-to-hub: the commit
    wall_time_s: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def base_bytes_fp32(self) -> int:
        return size.fp32_bytes(self.base_params)

    @property
    def compression_ratio(self) -> float | None:
        return size.compression_ratio(self.base_params, self.checkpoint_bytes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task, "method": self.method, "main_metric": self.main_metric,
            "score": self.score, "metrics": self.metrics, "d": self.d, "D": self.D,
            "trainable_params": self.trainable, "base_params": self.base_params,
            "base_bytes_fp32": self.base_bytes_fp32,
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
            "checkpoint_bytes": self.checkpoint_bytes,
            "compression_ratio": self.compression_ratio,
            "reload_score": self.reload_score, "report": self.report, "steps": self.steps,
            "score_float32": self.score_float32, "hub_url": self.hub_url,
            "initial_metrics": self.initial_metrics,
            "epochs_done": self.epochs_done, "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early, "interrupted": self.interrupted,
            "wall_time_s": self.wall_time_s, "options": self.options.to_dict(),
        }


def eval_line(epoch: int, step: int, main_metric: str, score: float,
              metrics: dict[str, dict[str, float]]) -> str:
    """The line printed after an evaluation: the main score, then every split's metrics."""
    return (f"epoch {epoch} step {step}: {main_metric}={score:.4f} "
            + " ".join(f"{s}/{k}={v:.4f}" for s, m in metrics.items() for k, v in m.items()))


def initial_line(metrics: dict[str, float]) -> str:
    """The line printed before training a generative task: the base's metrics on one split."""
    return "before training: " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items())



def human_bytes(n: int) -> str:
    """``1234`` → ``"1,234 B (1.2 KB)"``; KB/MB/GB are powers of 1000."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n:,} B ({n / scale:.1f} {unit})"
    return f"{n:,} B"


def format_summary(result: RunResult) -> str:
    """Score (main + every metric), d, trainable numbers, checkpoint, compression, wall time."""
    lines = [f"task          {result.task}  (method {result.method}, model {result.options.model})"]
    if result.score is not None:
        lower = result.main_metric in ("perplexity", "loss")
        lines.append(f"score         {result.main_metric} = {result.score:.4f}"
                     + ("  (lower is better)" if lower else "")
                     + (f"  (best epoch {result.best_epoch}, stopped early)"
                        if result.stopped_early else ""))
    if result.score_float32 is not None and result.score is not None:
        lost = result.score - result.score_float32
        lost = lost if result.main_metric in ("perplexity", "loss") else -lost
        lines.append(f"vector dtype  {result.options.vector_dtype}: {result.main_metric} "
                     f"{result.score:.4f} vs {result.score_float32:.4f} in float32 "
                     f"(lost {lost:+.4f} by the cast)")
    for split, metrics in result.metrics.items():
        lines.append(f"  {split:<11} " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    for split, metrics in (result.initial_metrics or {}).items():
        lines.append(f"  {split + ' before':<11} "
                     + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()) + "  (the base)")
    if result.d is not None:
        lines.append(f"d             {result.d:,} (projection {result.options.projection}; "
                     f"D = {result.D:,} parameters tuned through P)")
    pct = 100 * result.trainable / result.base_params if result.base_params else 0.0
    lines.append(f"trainable     {result.trainable:,} of {result.base_params:,} numbers "
                 f"({pct:.4f}%)")
    if result.checkpoint is not None and result.checkpoint_bytes is not None:
        lines.append(f"checkpoint    {result.checkpoint}  {human_bytes(result.checkpoint_bytes)}")
        lines.append(f"compression   {result.compression_ratio:,.0f}x  (base in fp32: "
                     f"{human_bytes(result.base_bytes_fp32)})")
    if result.reload_score is not None:
        lines.append(f"reloaded      {result.main_metric} = {result.reload_score:.4f} "
                     "(checkpoint reproduces the score exactly)")
    lines.append(f"steps         {result.steps} optimizer steps, {result.epochs_done} epoch(s)")
    lines.append(f"wall time     {result.wall_time_s:.1f} s")
    lines.append(f"output        {result.output_dir}")
    if result.hub_url:
        lines.append(f"hub           {result.hub_url}")
    return "\n".join(lines)
