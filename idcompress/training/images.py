"""Image tasks in the fine-tuning loop: the splits and the task spec.

Data: :func:`idcompress.data.images.load_image_task` (``image/<name>``, ``imagefolder`` with
``--data-dir``) gives ``train``/``validation`` with ``image``/``label`` columns; the subsets of
``--max-train-samples``/``--max-eval-samples`` are its seeded ones. The task spec is
``custom_task("image", label_names=…)``: accuracy (plus F1 and MCC for two classes), main metric
accuracy; its ``text_fields`` only names the image column (nothing is tokenised).

Each model's input transform, applied per batch by the loaders' collate, is
:func:`idcompress.models.pixels.image_transform_for`; the settings it returns (``size``,
``mean``, ``std``) are recorded in the checkpoint config (``extra["image_preprocessing"]``) and
``idcompress merge`` writes them next to a merged EfficientNet.
"""

from __future__ import annotations

import datasets

from ..data import TaskSpec, custom_task
from ..data.images import load_image_task
from .options import FinetuneOptions


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
