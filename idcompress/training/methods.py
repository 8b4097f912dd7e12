"""Build the model to train for ``--method intrinsic | full | lora``, save and reload it.

* ``intrinsic``: the pretrained classifier wrapped by :func:`~idcompress.tuners.get_intrinsic_model`;
  only ``theta_d`` (and SAID's ``said_lambda``) train. The new head is initialised by the adapter
  from the seeded generator, so the checkpoint stays seed + vector.
* ``full``: every parameter trains.
* ``lora``: PEFT LoRA, r=8, alpha=16, dropout 0.1, on the attention ``query``/``value``
  projections, the classifier head in ``modules_to_save``; for a language model
  (``text/causal-lm``, ``text/seq2seq``) on PEFT's default targets of its architecture
  (:func:`.lm.lora_for`).

Language models load with ``AutoModelForCausalLM`` / ``AutoModelForSeq2SeqLM``
(:func:`load_lm`) and have no new head; the intrinsic config records task type ``CAUSAL_LM`` /
``SEQ_2_SEQ_LM`` and no labels. ``save_model`` puts the tokenizer next to a full model or LoRA
adapter so the folder runs on its own.

For ``full`` and ``lora`` the new head is initialised from the same seeded generator as for
``intrinsic`` (stream ``init/<name>``), so the three methods start from the same model.

Image tasks load ``AutoModelForImageClassification`` (or a registered plain-PyTorch model such as
``efficientnet-lite0``) with a head of the task's size; ``lora`` is refused for them by the
options. A model without ``save_pretrained`` is saved by ``full`` as a module folder
(:mod:`idcompress.models.saved`).

Normalisation statistics (:func:`set_train_mode`): the running mean/variance of BatchNorm layers
are buffers, not parameters, so they are not part of seed + vector. The intrinsic method
therefore trains with every such layer in eval mode: it normalises with θ₀'s frozen statistics
and never updates them, so the tiny checkpoint rebuilds exactly the model that was evaluated.
``full`` trains them as usual (they are saved with the weights).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    #: ``save_module_folder`` arguments for a model without ``save_pretrained`` (full only)
    module_folder: dict[str, Any] | None = None


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


def load_image_classifier(name: str, spec: TaskSpec) -> nn.Module:
    """An image classifier with ``spec.num_labels`` outputs: ``AutoModelForImageClassification``
    from a folder or hub id, or a registered plain-PyTorch model (``efficientnet-lite0``).

    A pretrained head of another size is replaced; the new head is listed in
    ``model._idcompress_new_keys``.
    """
    from ..models.loading import load_base_model

    try:
        return load_base_model(name, task_type="IMAGE_CLS", num_labels=spec.num_labels,
                               label_names=list(spec.label_names),
                               problem_type="single_label_classification")
    except (OSError, ValueError) as e:
        raise ValueError(f"--model {name!r} does not load as an image classifier: {e}") from None


def load_lm(name: str, spec) -> nn.Module:
    """``AutoModelForCausalLM`` / ``AutoModelForSeq2SeqLM`` (by ``spec.task_type``) from a short
    name, folder or hub id."""
    from ..models.loading import load_base_model

    try:
        return load_base_model(name, task_type=spec.task_type)
    except (OSError, ValueError) as e:
        raise ValueError(f"--model {name!r} does not load as a {spec.task_type} model for "
                         f"{spec.name}: {e}") from None


def _task_type(options: FinetuneOptions) -> str:
    if options.is_lm_task:
        from ..names import LM_TASKS, lm_task_name

        return "CAUSAL_LM" if LM_TASKS[lm_task_name(options.task)] == "causal" else "SEQ_2_SEQ_LM"
    return "IMAGE_CLS" if options.is_image_task else "SEQ_CLS"


def _head_fields(spec) -> dict[str, Any]:
    """The label fields of the intrinsic config (none for a generative task)."""
    if getattr(spec, "generative", False):
        return {"label_names": None, "num_labels": None, "problem_type": None}
    return {"label_names": None if spec.is_regression else list(spec.label_names),
            "num_labels": spec.num_labels,
            "problem_type": "regression" if spec.is_regression else "single_label_classification"}


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def build_model(options: FinetuneOptions, spec: TaskSpec,
                image_preprocessing: dict[str, Any] | None = None) -> BuiltModel:
    """The model for ``options.method``; ``ValueError`` naming ``--dim`` for an impossible d.

    ``image_preprocessing`` (image tasks without an image processor) is recorded in the
    intrinsic checkpoint's config (``extra``) and in a saved module folder.
    """
    if options.is_image_task:
        model = load_image_classifier(options.model, spec)
    elif options.is_lm_task:
        model = load_lm(options.model, spec)
    else:
        model = load_classifier(options.model, spec)
    base_params = count_parameters(model)
    if options.method == "intrinsic":
        from ..tuners import IntrinsicConfig, get_intrinsic_model

        config = IntrinsicConfig(
            d=options.dim,
            projection=options.projection,
            seed=options.seed,
            task_type=_task_type(options),
            base_model_name_or_path=options.model,
            **_head_fields(spec),
            extra={"image_preprocessing": image_preprocessing} if image_preprocessing else {},
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
        folder = None
        if not hasattr(model, "save_pretrained"):
            from ..models.saved import architecture_of

            arch = architecture_of(options.model)
            if arch is None:
                raise ValueError(f"--method full: model {options.model!r} has no save_pretrained "
                                 "and is not a registered architecture; it cannot be saved")
            folder = {"architecture": arch, "num_labels": spec.num_labels,
                      "label_names": list(spec.label_names) or None,
                      "image_preprocessing": image_preprocessing}
        return BuiltModel(model, "full", base_params, None, None, module_folder=folder)
    if options.method == "lora" and options.is_lm_task:
        from .lm import lora_for

        return BuiltModel(lora_for(spec, model, LORA_R, LORA_ALPHA, LORA_DROPOUT), "lora",
                          base_params, None, None)
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


def set_train_mode(model: nn.Module, method: str) -> int:
    """``model.train()``; for ``intrinsic``, every layer with running statistics back in eval mode.

    Returns the number of layers kept in eval mode (see the module docstring for why).
    """
    model.train()
    if method != "intrinsic":
        return 0
    frozen = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
            module.eval()
            frozen += 1
    return frozen


def save_model(model: nn.Module, method: str, path: str | os.PathLike,
               module_folder: dict[str, Any] | None = None, tokenizer: Any = None) -> Path:
    """Write the trained model to ``path`` (intrinsic: the tiny checkpoint; full: the whole
    model, as a module folder when ``module_folder`` is given; lora: the PEFT adapter).

    ``tokenizer`` (text tasks) is saved next to a full model or LoRA adapter, so that the folder
    runs on its own (``idcompress predict``); the intrinsic checkpoint stays seed + vector (its
    tokenizer is the base's)."""
    path = Path(path)
    if tokenizer is not None and method != "intrinsic":
        out = save_model(model, method, path, module_folder)
        tokenizer.save_pretrained(out)
        return out
    if method == "intrinsic":
        from ..tuners import save_checkpoint

        return save_checkpoint(model, path, overwrite=True)
    # full / lora: written to a temporary sibling, then swapped in (a loadable one at every instant)
    from ..fileio import writing

    with writing(path, directory=True) as tmp:
        if module_folder is not None:
            from ..models.saved import save_module_folder

            save_module_folder(model, tmp, **module_folder)
        else:
            model.save_pretrained(tmp, safe_serialization=True)
    return path


def load_intrinsic(path: str | os.PathLike) -> nn.Module:
    """Reload an intrinsic checkpoint the way a user would: base rebuilt from its recorded name."""
    from ..tuners import IntrinsicModel

    return IntrinsicModel.from_pretrained(str(path))

