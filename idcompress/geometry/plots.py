"""PNG plots of a geometry report (matplotlib, Agg canvas; pyplot's global state is not used).

matplotlib is imported on first use, so the estimators work without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..fileio import writing
from .metrics import METRICS


def write_plots(result: dict[str, Any], out_dir: Path) -> list[str]:
    """One PNG per metric (base vs tuned across layers, one panel per pooling) and one of linear
    CKA per layer when the report has tuned states. Returns the file names written."""
    from matplotlib.figure import Figure

    poolings = result["poolings"]
    names = []
    for metric in METRICS:
        fig = Figure(figsize=(4.2 * len(poolings), 3.2))
        fig.subplots_adjust(left=0.1, right=0.97, bottom=0.16, top=0.88, wspace=0.3)
        for i, (pool, block) in enumerate(poolings.items()):
            ax = fig.add_subplot(1, len(poolings), i + 1)
            for side, style in (("base", "-o"), ("tuned", "--s")):
                if side in block:
                    ax.plot(block["layers"], _nan(block[side][metric]), style, label=side, ms=4)
            ax.set(title=f"{metric} ({pool})", xlabel="layer", ylabel=metric)
            ax.legend()
        names.append(_save(fig, out_dir, f"{metric}.png"))
    if all("linear_cka" in block for block in poolings.values()):
        fig = Figure(figsize=(4.5, 3.2))
        fig.subplots_adjust(left=0.15, right=0.96, bottom=0.16, top=0.88)
        ax = fig.add_subplot()
        for pool, block in poolings.items():
            ax.plot(block["layers"], _nan(block["linear_cka"]), marker="o", label=pool)
        ax.set(title="linear CKA(base, tuned)", xlabel="layer", ylabel="CKA", ylim=(0, 1.05))
        ax.legend()
        names.append(_save(fig, out_dir, "linear_cka.png"))
    return names


def _nan(values: list[float | None]) -> list[float]:
    return [float("nan") if v is None else v for v in values]


def _save(fig: Any, out_dir: Path, name: str) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with writing(out_dir / name) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return name
