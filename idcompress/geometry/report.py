"""The geometry report: every metric per layer and pooling, base vs tuned, plus linear CKA.

``geometry_report`` writes into ``out_dir``: ``geometry.json`` (the returned dict), ``report.md``
(one Markdown table per pooling and a facts section) and PNG plots; every file is written to a
temporary name and renamed into place. ``format_table`` renders the dict for a terminal.

``geometry.json`` layout::

    {"format": "idcompress.geometry/1", "metrics": [...], "settings": {...}, "facts": {...},
     "poolings": {"cls": {"layers": [0, 1, ...], "n_points": N, "hidden_sizes": [...],
                          "base": {metric: [per layer]}, "tuned": {metric: [per layer]},
                          "linear_cka": [per layer]}, ...},
     "errors": ["cls/base/layer 0/alpha_req: ...", ...], "files": [...]}

Layer 0 is the embedding output for Hugging Face models. A metric its estimator refuses (too
few points, ...) is ``null`` and the reason is listed in ``errors``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..fileio import atomic_write_text
from .cka import linear_cka
from .metrics import METRICS, GeometrySettings, layer_metrics
from .plots import write_plots

FORMAT = "idcompress.geometry/1"
States = Mapping[str, Sequence[Any]]


def geometry_report(
    base_states: States,
    tuned_states: States | None,
    out_dir: str | os.PathLike,
    facts: dict[str, Any] | None = None,
    *,
    settings: GeometrySettings | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Compute the report for ``{pooling: [X_layer (N, h)]}`` states (as ``collect_hidden_states``
    returns them), write it to ``out_dir`` and return it. ``tuned_states`` must hold the same
    inputs (same poolings, layers and N); ``None`` reports the base alone (no CKA)."""
    settings = settings or GeometrySettings()
    _check_states(base_states, tuned_states)
    sides = (
        {"base": base_states}
        if tuned_states is None
        else {"base": base_states, "tuned": tuned_states}
    )
    result: dict[str, Any] = {
        "format": FORMAT,
        "metrics": list(METRICS),
        "settings": settings.as_dict(),
        "facts": dict(facts or {}),
        "poolings": {},
        "errors": [],
    }
    jobs = [(pool, side) for pool in base_states for side in sides]
    bar = tqdm(
        total=sum(len(base_states[p]) for p, _ in jobs), desc="geometry", disable=not progress
    )
    for pool, side in jobs:
        layers = sides[side][pool]
        block = result["poolings"].setdefault(pool, _new_block(layers))
        block[side] = {m: [] for m in METRICS}
        for i, X in enumerate(layers):
            values, errors = layer_metrics(X, settings)
            for m in METRICS:
                block[side][m].append(values[m])
            result["errors"] += [f"{pool}/{side}/layer {i}/{m}: {msg}" for m, msg in errors.items()]
            bar.update()
    bar.close()
    if tuned_states is not None:
        for pool, block in result["poolings"].items():
            block["linear_cka"] = []
            for i, (b, t) in enumerate(zip(base_states[pool], tuned_states[pool])):
                try:
                    block["linear_cka"].append(linear_cka(b, t))
                except ValueError as e:  # e.g. the CLS embedding output: one vector for all inputs
                    block["linear_cka"].append(None)
                    result["errors"].append(f"{pool}/layer {i}/linear_cka: {e}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result["files"] = write_plots(result, out) + ["report.md", "geometry.json"]
    result = _jsonable(result)  # what is returned is exactly what geometry.json holds
    atomic_write_text(out / "report.md", _markdown(result))
    atomic_write_text(out / "geometry.json", json.dumps(result, indent=2) + "\n")
    return result


def _new_block(layers: Sequence[Any]) -> dict[str, Any]:
    return {
        "layers": list(range(len(layers))),
        "n_points": int(layers[0].shape[0]),
        "hidden_sizes": [int(X.shape[1]) for X in layers],
    }


def _check_states(base: States, tuned: States | None) -> None:
    if not isinstance(base, Mapping) or not base:
        raise ValueError("base_states must be a non-empty dict {pooling: [X per layer]}")
    for side, states in (("base_states", base), ("tuned_states", tuned)):
        if states is None:
            continue
        for pool, layers in states.items():
            if len(layers) == 0:
                raise ValueError(f"{side}[{pool!r}] holds no layer")
            shapes = {tuple(X.shape)[:1] + (len(X.shape),) for X in layers}
            if len(shapes) != 1 or next(iter(shapes))[1] != 2:
                raise ValueError(
                    f"{side}[{pool!r}]: every layer must be (N, h) with the same N, got shapes "
                    f"{[tuple(X.shape) for X in layers]}"
                )
    if tuned is None:
        return
    if set(tuned) != set(base):
        raise ValueError(
            f"tuned_states poolings {sorted(tuned)} differ from base_states poolings {sorted(base)}"
        )
    for pool in base:
        if len(base[pool]) != len(tuned[pool]):
            raise ValueError(
                f"pooling {pool!r}: base has {len(base[pool])} layers, tuned has {len(tuned[pool])}"
            )
        nb, nt = base[pool][0].shape[0], tuned[pool][0].shape[0]
        if nb != nt:
            raise ValueError(
                f"pooling {pool!r}: base has N={nb} inputs, tuned has N={nt}; "
                "they must be the same inputs"
            )


def _jsonable(obj: Any) -> Any:
    """Plain JSON types only: numpy/torch scalars → numbers, NaN/inf → null, paths → str."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    return str(obj)


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _markdown(result: dict[str, Any]) -> str:
    lines = ["# Representation geometry", ""]
    lines.append(
        "Per layer (layer 0 = embedding output). `rankme` uses singular values σ, `rankme_eig` "
        "uses σ²; `alpha_req` fits ranks "
        f"{result['settings']['alpha_fit_range'][0]}..{result['settings']['alpha_fit_range'][1]}; "
        "`twonn` and `mle` are intrinsic dimensions."
    )
    for pool, block in result["poolings"].items():
        sides = [s for s in ("base", "tuned") if s in block]
        lines += ["", f"## Pooling: {pool}", "", f"N = {block['n_points']} inputs.", ""]
        header = ["layer"] + [f"{m} ({s})" for m in METRICS for s in sides]
        if "linear_cka" in block:
            header.append("linear CKA")
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for i, layer in enumerate(block["layers"]):
            row = [str(layer)] + [_fmt(block[s][m][i]) for m in METRICS for s in sides]
            if "linear_cka" in block:
                row.append(_fmt(block["linear_cka"][i]))
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "## Facts", ""]
    facts = result["facts"]
    lines += [f"- **{k}**: {_fmt(v)}" for k, v in facts.items()] if facts else ["(none given)"]
    if result["errors"]:
        lines += ["", "## Metrics not computed", ""] + [f"- {e}" for e in result["errors"]]
    lines += ["", "## Plots", ""]
    lines += [f"![{f[:-4]}]({f})" for f in result["files"] if f.endswith(".png")]
    return "\n".join(lines) + "\n"


_SHORT = {"participation_ratio": "part_ratio"}


def format_table(result: dict[str, Any]) -> str:
    """Compact plain-text table of a ``geometry_report`` result: per pooling, one row per layer,
    cells ``base→tuned`` (or ``base`` alone), then linear CKA."""
    out = []
    for pool, block in result["poolings"].items():
        tuned = "tuned" in block
        header = ["layer"] + [_SHORT.get(m, m) for m in METRICS]
        if "linear_cka" in block:
            header.append("cka")
        rows = []
        for i, layer in enumerate(block["layers"]):
            cells = [str(layer)]
            for m in METRICS:
                b = _fmt(block["base"][m][i])
                cells.append(f"{b}→{_fmt(block['tuned'][m][i])}" if tuned else b)
            if "linear_cka" in block:
                cka = block["linear_cka"][i]
                cells.append("—" if cka is None else f"{cka:.3f}")
            rows.append(cells)
        widths = [max(len(r[j]) for r in [header] + rows) for j in range(len(header))]
        title = f"pooling {pool} (N={block['n_points']}" + (", base→tuned)" if tuned else ")")
        out.append(title)
        for r in [header] + rows:
            out.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        out.append("")
    for k, v in result.get("facts", {}).items():
        out.append(f"{k}: {_fmt(v)}")
    return "\n".join(out).rstrip() + "\n"
