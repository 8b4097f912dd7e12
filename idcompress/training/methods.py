"""Build the model to train for ``--method intrinsic | full | lora``, save and reload it.

* ``intrinsic``: the pretrained classifier wrapped by :func:`~idcompress.tuners.get_intrinsic_model`;
  only ``theta_d`` (and SAID's ``said_lambda``) train. The new head is initialised by the adapter
  from the seeded generator, so the checkpoint stays seed + vector.
* ``full``: every parameter trains.
* ``lora``: PEFT LoRA, r=8, alpha=16, dropout 0.1, on the attention ``query``/``value``
  projections, the classifier head in ``modules_to_save``.

For ``full`` and ``lora`` the new head is initialised from the same seeded generator as for
``intrinsic`` (stream ``init/<name>``), so the three methods start from the same model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..data import TaskSpec
from .options import FinetuneOptions

LORA_R = 8
LORA_ALPHA = 16
LORA_DROPOUT = 0.1
LORA_TARGETS = ["query", "value"]


@dataclass
class BuiltModel:
    """The model to train and what the summary needs to know about it."""

    model: nn.Module
    method: str
    base_params: int  # parameters of the classifier before wrapping (the fp32 baseline)
    d: int | None  # intrinsic dimension (intrinsic only)
    D: int | None  # parameters tuned through P (intrinsic only)


def load_classifier(name: str, spec: TaskSpec) -> nn.Module:
    """``AutoModelForSequenceClassification`` for ``spec`` from a short name, folder or hub id.

    Sets ``model._idcompress_new_keys`` to the parameters the checkpoint lacks (the head).
    """
    from ..models.loading import load_base_model

    return load_base_model(
        name,
        task_type="SEQ_CLS",
        num_labels=spec.num_labels,
        label_names=None if spec.is_regression else list(spec.label_names),
        problem_type="regression" if spec.is_regression else "single_label_classification",
    )


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def build_model(options: FinetuneOptions, spec: TaskSpec) -> BuiltModel:
    """The model for ``options.method``; ``ValueError`` naming ``--dim`` for an impossible d."""
    model = load_classifier(options.model, spec)
    base_params = count_parameters(model)
    if options.method == "intrinsic":
        from ..tuners import IntrinsicConfig, get_intrinsic_model

        config = IntrinsicConfig(
            d=options.dim,
            projection=options.projection,
            seed=options.seed,
            task_type="SEQ_CLS",
            base_model_name_or_path=options.model,
            label_names=None if spec.is_regression else list(spec.label_names),
            num_labels=spec.num_labels,
            problem_type="regression" if spec.is_regression else "single_label_classification",
        )
        try:
            wrapped = get_intrinsic_model(model, config)
        except ValueError as e:
            raise ValueError(f"--dim {options.dim} (--projection {options.projection}) does not "
                             f"fit model {options.model!r}: {e}") from None
        return BuiltModel(wrapped, "intrinsic", base_params, options.dim, wrapped.layout.D)

    _init_head(model, options.seed)
    if options.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return BuiltModel(model, "full", base_params, None, None)
    if options.method == "lora":
        from peft import LoraConfig, get_peft_model

        head = sorted({n.split(".")[0] for n in getattr(model, "_idcompress_new_keys", [])})
        lora = LoraConfig(
            r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT,
            target_modules=LORA_TARGETS, task_type="SEQ_CLS", modules_to_save=head or None,
        )
        return BuiltModel(get_peft_model(model, lora), "lora", base_params, None, None)
    raise ValueError(f"--method={options.method!r} is unknown; choose intrinsic, full or lora")


def _init_head(model: nn.Module, seed: int) -> None:
    from ..tuners.init import init_new_params, init_std_for, resolve_new_params

    names = resolve_new_params(model, "auto")
    init_new_params(model, names, seed, init_std_for(model, None))


def save_model(model: nn.Module, method: str, path: str | os.PathLike) -> Path:
    """Write the trained model to ``path`` (intrinsic: the tiny checkpoint; full: the whole
    model; lora: the PEFT adapter); returns the path written."""
    path = Path(path)
    if method == "intrinsic":
        out = model.save_pretrained(path, overwrite=True)
        return Path(out) if out is not None else path
    model.save_pretrained(path, safe_serialization=True)
    return path


def load_intrinsic(path: str | os.PathLike) -> nn.Module:
    """Reload an intrinsic checkpoint the way a user would: base rebuilt from its recorded name."""
    from ..tuners import IntrinsicModel

    return IntrinsicModel.from_pretrained(str(path))


def checkpoint_bytes(path: str | os.PathLike) -> int:
    """Total size in bytes of a checkpoint file or folder (recursively)."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
