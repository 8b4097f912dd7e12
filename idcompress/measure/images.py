"""Image tasks with small nets trained from scratch: the evaluate functions of ``idcompress measure``.

- Tasks: the offline grayscale sources of :func:`idcompress.data.images.load_image_task`
  (``image/mnist-5k`` 4,000/1,000, ``image/digits`` 8×8, ``image/fashion-mnist`` 60,000/10,000).
  The split is the loader's (seed 0) for every measurement seed: seeds vary θ₀, P and the batch
  order, not the data. Pixels are ``x/255`` standardised by the mean and standard deviation of
  the training split (one scalar each). LeNet needs at least 12×12 inputs; smaller images
  (``image/digits``) are resized to 28×28 (bilinear) for it.
- Models (:func:`parse_model`): ``fc-<w1>-…-<wk>`` is :class:`~idcompress.models.vision.MLPClassifier`
  with those hidden widths (``fc-200-200`` is Li et al.'s 784-200-200-10 on MNIST), ``lenet`` is
  :class:`~idcompress.models.vision.LeNet`. θ₀ is He-normal from the project's counter generator
  keyed by the measurement ``seed`` (``seeded_init_``); the global RNG is never used.
- Training: Adam, ``epochs`` passes over the training split in minibatches of ``batch_size``
  (order from ``torch.Generator().manual_seed(seed)``), no schedule, no augmentation, no weight
  decay. :func:`evaluate_image` trains only θ_d through the intrinsic adapter (θ₀ frozen);
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
import torch.nn.functional as F
from torch import nn

from .digits import _intra_op_threads

IMAGE_TASKS = ("image/mnist-5k", "image/digits", "image/fashion-mnist")
LENET_MIN_SIZE = 12  # conv 5 (pad 2), pool 2, conv 5, pool 2 needs ≥ 12 px
LENET_RESIZE = 28
_FC = re.compile(r"fc(-[1-9][0-9]*)+")
EVAL_BATCH = 2048


def parse_model(name: str) -> tuple[str, tuple[int, ...]]:
    """``"fc-200-200"`` → ``("fc", (200, 200))``; ``"lenet"`` → ``("lenet", ())``.

    ``ValueError`` naming the model for anything else.
    """
    key = name.strip().lower() if isinstance(name, str) else ""
    if key == "lenet":
        return "lenet", ()
    if _FC.fullmatch(key):
        return "fc", tuple(int(w) for w in key.split("-")[1:])
    raise ValueError(
        f"model {name!r} is not an image model; use fc-<w1>-<w2>… (e.g. fc-200-200) or lenet"
    )


@lru_cache(maxsize=4)
def _arrays(
    task: str, max_train_samples: int | None, max_eval_samples: int | None, size: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """``(x_train (N,1,H,W), y_train, x_val, y_val, num_classes)``, standardised float32."""
    from ..data.images import load_image_task

    if task not in IMAGE_TASKS:
        raise ValueError(f"image task {task!r} is not supported here; choose one of {IMAGE_TASKS}")
    info, dd = load_image_task(
        task, max_train_samples=max_train_samples, max_eval_samples=max_eval_samples
    )
    out = []
    for split in ("train", "validation"):
        ds = dd[split].with_format("numpy")
        x = torch.from_numpy(np.stack(list(ds["image"]))).float().div_(255.0)
        if x.ndim != 3:
            raise ValueError(f"{task}: expected grayscale images (N, H, W), got {tuple(x.shape)}")
        x = x[:, None]
        if size is not None and x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        out += [x, torch.as_tensor(ds["label"]).long()]
    x_tr, y_tr, x_va, y_va = out
    mean, std = x_tr.mean(), x_tr.std()
    return (x_tr - mean) / std, y_tr, (x_va - mean) / std, y_va, info.num_labels


def image_input_size(task: str, model: str) -> int | None:
    """The side the images are resized to for ``model`` (``None``: kept)."""
    kind, _ = parse_model(model)
    if kind == "lenet" and task == "image/digits":
        return LENET_RESIZE
    return None


def load_arrays(
    task: str,
    model: str,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Standardised ``(x_train, y_train, x_val, y_val, num_classes)`` for ``task`` as ``model`` sees it.

    ``max_*_samples``: seeded subsets of the splits (the loader's rule). Cached per process
    (loading mnist-5k parses a text file for ~2 s).
    """
    return _arrays(task, max_train_samples, max_eval_samples, image_input_size(task, model))


def build_net(
    model: str, seed: int, input_shape: tuple[int, int, int], num_classes: int
) -> nn.Module:
    """The from-scratch net ``model`` with θ₀ drawn from the counter generator with ``seed``."""
    from ..models.vision import LeNet, MLPClassifier

    kind, widths = parse_model(model)
    if kind == "lenet":
        if min(input_shape[1:]) < LENET_MIN_SIZE:
            raise ValueError(f"lenet needs images of at least {LENET_MIN_SIZE}px, got {input_shape}")
        return LeNet(in_channels=input_shape[0], num_classes=num_classes, seed=seed)
    return MLPClassifier(input_shape=input_shape, hidden=widths, num_classes=num_classes, seed=seed)


def describe(task: str, model: str) -> dict[str, int]:
    """``{"D": parameters, "m": tensors}`` of ``model`` on ``task`` (for checks before any run)."""
    x_tr, _, _, _, k = load_arrays(task, model)
    net = build_net(model, 0, tuple(x_tr.shape[1:]), k)
    params = [p for p in net.parameters() if p.is_floating_point()]
    return {"D": sum(p.numel() for p in params), "m": len(params)}


def _check(epochs: int, lr: float, batch_size: int, num_threads: int | None) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= 0:
        raise ValueError(f"epochs must be a positive integer, got epochs={epochs!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got lr={lr!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got batch_size={batch_size!r}")
    if num_threads is not None and (not isinstance(num_threads, int) or num_threads <= 0):
        raise ValueError(f"num_threads must be a positive integer or None, got {num_threads!r}")


def _fit(
    model: nn.Module,
    params: list[torch.Tensor],
    data: tuple[torch.Tensor, ...],
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    device: str,
) -> float:
    x_tr, y_tr, x_va, y_va = (t.to(device) for t in data)
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)  # minibatch order only
    n = len(y_tr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen).to(device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(model(x_tr[idx]), y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(y_va), EVAL_BATCH):
            logits = model(x_va[start : start + EVAL_BATCH])
            correct += int((logits.argmax(dim=1) == y_va[start : start + EVAL_BATCH]).sum())
    return correct / len(y_va)


def evaluate_image(
    d: int,
    seed: int,
    *,
    task: str,
    model: str,
    projection: str = "fastfood",
    epochs: int = 10,
    lr: float = 0.01,
    batch_size: int = 128,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    device: str = "cpu",
    num_threads: int | None = None,
) -> float:
    """Validation accuracy after training only θ_d ∈ R^d of ``model`` from scratch on ``task``.

    θ₀ and P both come from ``seed``; ``projection`` is one of ``said``, ``fastfood``, ``dense``,
    ``sparse``.
    """
    from ..tuners import IntrinsicConfig, get_intrinsic_model

    _check(epochs, lr, batch_size, num_threads)
    with _intra_op_threads(num_threads):
        *data, k = load_arrays(task, model, max_train_samples, max_eval_samples)
        base = build_net(model, seed, tuple(data[0].shape[1:]), k)
        wrapped = get_intrinsic_model(base, IntrinsicConfig(d=d, projection=projection, seed=seed))
        wrapped.to(device)
        params = [p for p in wrapped.parameters() if p.requires_grad]
        return _fit(wrapped, params, tuple(data), epochs, lr, batch_size, seed, device)


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
    device: str = "cpu",
    num_threads: int | None = None,
) -> float:
    """Validation accuracy after training every weight of ``model`` from θ₀(``seed``) (the baseline)."""
    _check(epochs, lr, batch_size, num_threads)
    with _intra_op_threads(num_threads):
        *data, k = load_arrays(task, model, max_train_samples, max_eval_samples)
        net = build_net(model, seed, tuple(data[0].shape[1:]), k).to(device)
        return _fit(net, list(net.parameters()), tuple(data), epochs, lr, batch_size, seed, device)
