"""Image tasks in the fine-tuning loop: the splits, the task spec and each model's input transform.

Data: :func:`idcompress.data.images.load_image_task` (``image/<name>``, ``imagefolder`` with
``--data-dir``) gives ``train``/``validation`` with ``image``/``label`` columns; the subsets of
``--max-train-samples``/``--max-eval-samples`` are its seeded ones. The task spec is
``custom_task("image", label_names=…)``: accuracy (plus F1 and MCC for two classes), main metric
accuracy; its ``text_fields`` only names the image column (nothing is tokenised).

Input transform (:func:`image_transform_for`), applied per batch by the loaders' collate:

* ``efficientnet-lite0`` (or a folder it was saved to): bilinear antialiased resize to
  ``--image-size`` (default 224, or the size the folder records), ``(x − 127) / 128``;
* a transformers model whose folder or hub repo has an image processor
  (``preprocessor_config.json``): that processor, PIL backend (the same pixels whether or not
  torchvision is installed); ``--image-size`` is refused (the processor fixes the size);
* a transformers model without one: resize to ``--image-size``, else ``config.image_size``, else
  224, and ``(x − 127.5) / 127.5`` (values in [−1, 1], the ViT convention).

Grayscale images are repeated to three channels. The transform of the first and third cases is
returned as a dict (``size``, ``mean``, ``std``) that the run records in the checkpoint config
(``extra["image_preprocessing"]``) and ``idcompress merge`` writes next to a merged EfficientNet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets

from ..data import TaskSpec, custom_task
from ..data.images import ImageTransform, load_image_task
from .options import FinetuneOptions

DEFAULT_IMAGE_SIZE = 224
VIT_MEAN = VIT_STD = 127.5
PROCESSOR_FILE = "preprocessor_config.json"


def load_image_splits(options: FinetuneOptions
                      ) -> tuple[TaskSpec, datasets.Dataset, dict[str, datasets.Dataset]]:
    """(task spec, train split, ``{"validation": split}``) of an image task."""
    info, dd = load_image_task(
        options.task, data_dir=options.data_dir, max_train_samples=options.max_train_samples,
        max_eval_samples=options.max_eval_samples, seed=options.seed,
    )
    for split in ("train", "validation"):
        if len(dd[split]) == 0:
            raise ValueError(f"task {options.task!r}: the {split} split has no images")
    spec = custom_task("image", label_names=info.label_names, name=info.name)
    return spec, dd["train"], {"validation": dd["validation"]}


def _image_processor(resolved: str, model: str) -> Any | None:
    """The image processor of a transformers folder/hub repo, or ``None`` when it has none."""
    from transformers import AutoImageProcessor

    if Path(resolved).is_dir() and not (Path(resolved) / PROCESSOR_FILE).is_file():
        return None
    try:
        return AutoImageProcessor.from_pretrained(resolved, backend="pil")
    except OSError:
        if Path(resolved).is_dir():
            raise
        return None  # a hub model without a processor
    except (ValueError, KeyError) as e:
        raise ValueError(f"--model {model!r}: its image processor ({PROCESSOR_FILE}) does not "
                         f"load: {e}") from None


def _config_image_size(resolved: str, model: str) -> int | None:
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(resolved)
    except (OSError, ValueError) as e:
        raise ValueError(f"--model {model!r} is not a packaged short name, a local model folder "
                         f"or a hub id that loads: {e}") from None
    size = getattr(cfg, "image_size", None)
    return size if isinstance(size, int) and size > 0 else None


def image_transform_for(model: str, image_size: int | None = None
                        ) -> tuple[ImageTransform, dict[str, Any] | None]:
    """The transform of ``model``'s inputs and, unless an image processor does it, its settings.

    See the module docstring for the rule. ``ValueError`` naming ``--image-size`` when a
    processor fixes the size.
    """
    from ..models import resolve_model_name
    from ..models.efficientnet_lite import INPUT_MEAN, INPUT_STD
    from ..models.saved import architecture_of, is_module_folder, read_module_config

    arch = architecture_of(model)
    if arch == "efficientnet-lite0":
        recorded = read_module_config(model).get("image_preprocessing") \
            if is_module_folder(model) else None
        size = image_size or (recorded or {}).get("size") or DEFAULT_IMAGE_SIZE
        prep = {"size": int(size), "mean": INPUT_MEAN, "std": INPUT_STD}
    elif arch is not None:  # pragma: no cover - a new architecture must say how it is fed
        raise ValueError(f"--model {model!r}: no image transform known for architecture {arch!r}")
    else:
        resolved = resolve_model_name(model)
        processor = _image_processor(resolved, model)
        if processor is not None:
            if image_size is not None:
                raise ValueError(f"--image-size={image_size}: model {model!r} has an image "
                                 f"processor ({PROCESSOR_FILE}) that fixes the input size; "
                                 "leave --image-size out")
            return ImageTransform(image_processor=processor), None
        size = image_size or _config_image_size(resolved, model) or DEFAULT_IMAGE_SIZE
        prep = {"size": int(size), "mean": VIT_MEAN, "std": VIT_STD}
    return ImageTransform(size=prep["size"], mean=prep["mean"], std=prep["std"]), prep
