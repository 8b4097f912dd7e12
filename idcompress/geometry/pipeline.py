"""The geometry report of a tuned model: base vs tuned hidden states on the same inputs.

The base representation is the tuned model itself with ``theta_d = 0`` (and SAID's scales at
one), i.e. θ₀ exactly, so only one model is held in memory. :func:`report_after_training` is
the report ``idcompress finetune`` writes at the end of an intrinsic run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import size
from .collect import collect_hidden_states, tokenize_texts
from .report import format_table, geometry_report

#: batch keys a classifier's forward gets in the report after training
REPORT_KEYS = ("input_ids", "attention_mask", "token_type_ids", "pixel_values")
REPORT_MAX_INPUTS = 2000


def checkpoint_facts(model, checkpoint_bytes: int | None = None, d90: Any = None) -> dict[str, Any]:
    """d, D, tensors, projection, compression ratio and MDL bits of an ``IntrinsicModel``."""
    cfg = model.intrinsic_config
    stored = cfg.d  # theta_d plus, for SAID, the m scales
    facts: dict[str, Any] = {
        "d": cfg.d,
        "D": model.layout.D,
        "tensors": model.layout.m,
        "projection": cfg.projection,
        "seed": cfg.seed,
        "base": cfg.base_model_name_or_path,
        "mdl_bits": size.mdl_bits(stored, cfg.vector_dtype),
    }
    if checkpoint_bytes:
        facts["checkpoint_bytes"] = checkpoint_bytes
        facts["compression_ratio"] = round(size.compression_ratio(model.layout.D, checkpoint_bytes), 1)
    if d90 is not None:
        facts["d90"] = d90
    return facts


def d90_from_results(path: str | os.PathLike) -> Any:
    """The d90 entries of a ``results.json`` written by ``idcompress measure``."""
    data = json.loads(Path(path).read_text())
    if "d90" in data:
        return data["d90"]
    out = {}
    for name, block in (data.get("projections") or {}).items():
        if isinstance(block, dict) and "d90" in block:
            out[name] = block["d90"]
    if not out:
        raise ValueError(f"{path}: no d90 found (is it a results.json of idcompress measure?)")
    return out


def texts_for_task(task: str, n: int, split: str | None = None, **data_kwargs) -> list[str]:
    """Up to ``n`` input texts of a task's eval split (sentence pairs joined by ' [SEP] ')."""
    from ..data import load_task_data

    spec, dsets = load_task_data(task, max_eval_samples=n, **data_kwargs)
    split = split or spec.eval_splits[0]
    if split not in dsets:
        raise ValueError(f"task {task!r} has no split {split!r} (splits: {sorted(dsets)})")
    ds = dsets[split]
    cols = [ds[f] for f in spec.text_fields]
    return [" [SEP] ".join(parts) for parts in zip(*cols)][:n]


@torch.no_grad()
def intrinsic_report(model, tokenizer, texts: list[str], out_dir: str | os.PathLike, facts: dict | None = None,
                     batch_size: int = 128, max_length: int = 128, progress: bool = True) -> dict[str, Any]:
    """Collect base (θ_d = 0) and tuned hidden states of ``model`` on ``texts``; write the report."""
    batches = tokenize_texts(tokenizer, texts, batch_size=batch_size, max_length=max_length)
    return report_on_batches(model, batches, out_dir, facts=facts, progress=progress)


@torch.no_grad()
def report_on_batches(model, batches, out_dir: str | os.PathLike, facts: dict | None = None,
                      progress: bool = True, module_names: list[str] | None = None,
                      pooling: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    """As ``intrinsic_report``, on re-iterable ``batches`` (dicts with input_ids, … or
    pixel_values); ``module_names``: layers from forward hooks instead of ``hidden_states``;
    ``pooling``: the poolings (default cls + mean; ``last`` for causal LMs)."""
    # hooked submodules may give feature maps (B, C, H, W): only the spatial mean is defined there
    pool = {"pooling": "mean"} if module_names is not None else {}
    if pooling is not None:
        pool = {"pooling": pooling}
    with model.disable_adapter():  # the base computes with θ₀ exactly
        base = collect_hidden_states(model, batches, progress=progress, desc="base hidden states",
                                     module_names=module_names, **pool)
    tuned = collect_hidden_states(model, batches, progress=progress, desc="tuned hidden states",
                                  module_names=module_names, **pool)
    return geometry_report(base, tuned, out_dir, facts=facts, progress=progress)


def report_after_training(model, loader, out_dir: Path, checkpoint_bytes: int | None,
                          keys: tuple[str, ...] = REPORT_KEYS,
                          pooling: tuple[str, ...] | None = None) -> str | None:
    """The geometry report (base θ₀ vs tuned, per layer) on up to 2,000 inputs of ``loader``.

    Written to ``out_dir/geometry``; that folder, or ``None`` when skipped (a note is printed).
    Layers: a transformers base's ``hidden_states``; for other models the outputs of the
    submodules the base lists in ``report_module_names`` (e.g. EfficientNet-Lite0's blocks,
    feature maps mean-pooled over space), captured by forward hooks. Skipped for a model with
    neither. ``keys``: the batch entries the forward gets; ``pooling``: as in
    :func:`report_on_batches`.
    """
    from transformers import PreTrainedModel

    module_names = None
    base = model.get_base_model()
    if not isinstance(base, PreTrainedModel):
        names = getattr(base, "report_module_names", None)
        if not names:
            print(f"geometry report skipped: {type(base).__name__} is not a "
                  "transformers model (no hidden_states) and lists no report_module_names")
            return None
        module_names = [f"base_model.model.{n}" for n in names]
    batches, n = [], 0
    for batch in loader:
        b = {k: v for k, v in batch.items() if k in keys}
        batches.append(b)
        n += next(iter(b.values())).shape[0]
        if n >= REPORT_MAX_INPUTS:
            break
    try:
        res = report_on_batches(model, batches, out_dir / "geometry",
                                facts=checkpoint_facts(model, checkpoint_bytes),
                                module_names=module_names, pooling=pooling)
    except ValueError as e:  # e.g. too few validation inputs for the estimators
        print(f"geometry report skipped: {e}")
        return None
    print(format_table(res))
    return str(out_dir / "geometry")
