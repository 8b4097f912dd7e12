"""The human-readable summary printed at the end of ``idcompress finetune``."""

from __future__ import annotations

from .loop import RunResult


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
