"""Default training settings of ``idcompress measure``, per task family and per model.

No torch here: the command's ``--help`` prints these tables.
"""

from __future__ import annotations

IMAGE_TASKS = ("image/mnist-5k", "image/digits", "image/fashion-mnist")
EFFICIENTNET_MODELS = ("efficientnet-lite0", "efficientnet-lite0-scratch")
#: the grid of d without --dims, cut to each model (MeasureOptions.dims_for)
DEFAULT_DIMS = (10, 30, 100, 300, 1000, 3000, 10000)

DEFAULTS: dict[str, dict] = {
    # full-batch steps (batch_size None); tuned in digits.py
    "digits": {"epochs": 300, "lr": 0.05, "batch_size": None, "baseline_lr": 0.01},
    # Adam; found on image/mnist-5k with fc-200-200 and lenet (see recipes/li2018-*.yaml)
    "image": {"epochs": 30, "lr": 0.03, "batch_size": 128, "baseline_lr": 0.001},
    # lr None: the training loop's default for each run, 0.2·sqrt(1000/d) for the intrinsic runs
    # (training.options.default_lr); full fine-tuning 1e-4 (training.options.DEFAULT_LR)
    "text": {"epochs": 3, "lr": None, "batch_size": 32, "baseline_lr": 1e-4, "max_length": 128},
    # image tasks with a transformers image classifier, through the same loop as text (lr None:
    # the loop's defaults); the input size is the model's (image processor or config) unless
    # image_size is given
    "image-transformers": {"epochs": 3, "lr": None, "batch_size": 32, "baseline_lr": 1e-4},
}
_EFFICIENTNET_DEFAULTS = {"epochs": 3, "lr": None, "batch_size": 32, "baseline_lr": 3e-4}
MODEL_DEFAULTS: dict[str, dict] = {
    # lr None: images.intrinsic_lr, 0.1·sqrt(1000/d); pilot in
    # recipes/efficientnet-lite0-pretrained-vs-scratch.yaml (MNIST-5k, 1,000 images, 64 px)
    **dict.fromkeys(EFFICIENTNET_MODELS, _EFFICIENTNET_DEFAULTS),
}
"""Defaults of one model over its family's (:data:`DEFAULTS`)."""

#: what ``lr: None`` means, per family and per model (for ``--help``)
LR_RULES = {
    "text": "0.2*sqrt(1000/d)",
    "image-transformers": "0.2*sqrt(1000/d)",
    **dict.fromkeys(EFFICIENTNET_MODELS, "0.1*sqrt(1000/d)"),
}
