"""Dispatch for ``idcompress measure``: a task and model name → the evaluate functions of a sweep.

Families (:func:`resolve`):

- ``digits``: ``builtin/digits`` (scikit-learn's 8×8 digits, :mod:`.digits`) with ``mlp``
  (64 hidden units) or ``mlp-<w1>-…`` (those hidden widths). Full-batch Adam by default.
- ``image``: ``image/mnist-5k``, ``image/digits``, ``image/fashion-mnist`` with ``fc-<w1>-…`` or
  ``lenet`` trained from scratch, ``efficientnet-lite0`` (packaged ImageNet weights, new head
  from the seed) or ``efficientnet-lite0-scratch`` (same net, θ₀ from the seed) (:mod:`.images`).
  ``image_size`` resizes the inputs (EfficientNet's default 64 px; small nets keep the task's size).
- ``image-transformers``: the same image tasks with a transformers image classifier (a local folder
  or hub id loadable by ``AutoModelForImageClassification``), fine-tuned through the training
  loop like text (:func:`evaluate_loop`); its size is read from its config (meta device).
- ``text``: a task of :func:`idcompress.data.get_task` (``builtin/movie-sentiment``, ``glue/*``)
  with a pretrained text model (``minilm-l6``, a local folder or a hub id), fine-tuned through
  the training loop :func:`idcompress.training.train` (:func:`evaluate_loop`). Its size is read
  from its config (meta device) so names and dims are checked before any run.

Every run is a pure function of ``(d, seed)`` and the settings: the seed keys θ₀ (from-scratch
nets), P, the new head of a pretrained model and the batch order. One exception: the text loop
leaves dropout to torch's global RNG, which the library does not seed (docs/design.md, "Randomness"); each text (and
image-transformers) run therefore seeds it from its own seed inside :func:`_seeded_global_rngs`,
which restores the caller's state afterwards, so such a score is a pure function of
``(d, seed)`` and the settings too.

:func:`make_evaluators` returns picklable callables (``functools.partial`` of module-level
functions), as the worker processes of :mod:`.parallel` need.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from ..flags import check_positive_int

# the tables are in a module without torch: ``idcompress measure --help`` prints them
from .defaults import DEFAULTS, IMAGE_TASKS, MODEL_DEFAULTS  # noqa: F401  (re-exported)

DIGITS_TASK = "builtin/digits"
_MLP = re.compile(r"mlp(-[1-9][0-9]*)*")
_IMAGE_MODEL = re.compile(r"(fc(-[0-9]+)*|lenet|mlp(-[0-9]+)*|efficientnet-lite0(-scratch)?)")
METRIC = "accuracy"


@dataclass(frozen=True)
class TrainSettings:
    """How each run trains; ``None`` takes the family's default (:data:`DEFAULTS`).

    ``lr``/``epochs`` are for the intrinsic runs, ``baseline_lr``/``baseline_epochs`` for full
    training (``baseline_epochs`` defaults to ``epochs``). ``num_threads``: torch intra-op threads
    per run. ``max_train_samples``/``max_eval_samples`` (seeded subsets) apply to images and
    text, ``max_length`` to text, ``image_size`` (input side, px) to image tasks.
    """

    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    baseline_epochs: int | None = None
    baseline_lr: float | None = None
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    max_length: int | None = None
    num_threads: int | None = None
    image_size: int | None = None


@dataclass(frozen=True)
class Target:
    """A resolved ``(task, model)`` with canonical names (lower case for digits and image tasks;
    the task table's name for text), its family, metric and size (``D`` parameters in ``m``
    tensors).
    """

    task: str
    model: str
    family: str
    metric: str
    D: int | None = None
    m: int | None = None


def _digits_widths(model: str) -> tuple[int, ...]:
    parts = model.split("-")[1:]
    return tuple(int(w) for w in parts) if parts else (64,)


def resolve(
    task: str, model: str, metric: str | None = None, image_size: int | None = None
) -> Target:
    """Check that ``model`` can be measured on ``task``; ``ValueError`` naming both otherwise.

    For digits and small image models this builds the net once (seed 0) to know ``D`` and ``m``;
    EfficientNet and pretrained models are counted on the meta device (no weights read).
    ``metric`` defaults to the task's main metric; images and digits have only ``accuracy``.
    ``image_size`` (px, image tasks only) resizes the inputs; ``ValueError`` naming
    ``--image-size`` for other tasks and for a transformers model whose image processor fixes it.
    """
    if not isinstance(task, str) or not task.strip():
        raise ValueError(f"--task must be a non-empty task name, got {task!r}")
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"--model must be a non-empty model name, got {model!r}")
    check_positive_int("image_size", image_size)
    t, m = task.strip().lower(), model.strip().lower()
    if image_size is not None and t not in IMAGE_TASKS:
        raise ValueError(f"--image-size={image_size} is for image tasks ({', '.join(IMAGE_TASKS)}); "
                         f"task {task!r} does not take it")
    if t == DIGITS_TASK:
        if not _MLP.fullmatch(m):
            raise ValueError(
                f"model {model!r} is unknown for task {task!r}; use mlp or mlp-<w1>-… (e.g. mlp-64)"
            )
        _check_metric(metric, task)
        widths = _digits_widths(m)
        sizes = [64, *widths, 10]
        D = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
        return Target(t, m, "digits", METRIC, D, 2 * (len(sizes) - 1))
    if t in IMAGE_TASKS:
        from .images import parse_model

        try:
            parse_model(m)
        except ValueError as e:
            if _IMAGE_MODEL.fullmatch(m):
                raise ValueError(f"model {model!r} is unknown for task {task!r}: {e}") from None
            _check_metric(metric, task)
            return _resolve_image_loop(t, model.strip(), image_size)
        _check_metric(metric, task)
        from .images import describe

        size = describe(t, m, image_size)
        return Target(t, m, "image", METRIC, size["D"], size["m"])
    if t.startswith("image/"):
        raise ValueError(f"image task {task!r} is not supported by measure; use one of {IMAGE_TASKS}")
    from ..data import get_task, known_task_names

    try:
        spec = get_task(task)
    except ValueError:
        known = [DIGITS_TASK, *IMAGE_TASKS, *known_task_names()]
        raise ValueError(f"task {task!r} is unknown; known tasks: {', '.join(known)}") from None
    if _IMAGE_MODEL.fullmatch(m):
        raise ValueError(
            f"model {model!r} is an image model; task {task!r} needs a pretrained text model "
            "(e.g. minilm-l6, a local folder or a hub id)"
        )
    if metric is not None and metric not in spec.metrics:
        raise ValueError(f"metric {metric!r} is not reported for task {task!r}; choose one of "
                         f"{list(spec.metrics)}")
    _require_loop(f"text task {task!r}")
    D, n_tensors = _text_model_size(model.strip(), spec.num_labels, task)
    return Target(spec.name, model.strip(), "text", metric or spec.main_metric, D, n_tensors)


def _require_loop(what: str) -> None:
    try:
        import idcompress.training  # noqa: F401
    except ImportError as e:
        raise ValueError(f"{what} needs the training loop (idcompress.training): {e}") from e


def _resolve_image_loop(task: str, model: str, image_size: int | None) -> Target:
    """An image task with a transformers image classifier (folder or hub id): the loop family."""
    from .images import MODEL_NAMES, _num_classes

    _require_loop(f"image task {task!r} with model {model!r}")
    try:
        D, n_tensors = _model_size(model, _num_classes(task), task, image=True)
    except ValueError as e:
        reason = str(e).split(": ", 1)[-1]
        raise ValueError(f"model {model!r} is unknown for task {task!r}: it is not one of "
                         f"{', '.join(MODEL_NAMES)}, and as a transformers image classifier (a "
                         f"local folder or a hub id) it cannot be loaded: {reason}") from None
    if image_size is not None:
        from ..models.pixels import image_transform_for

        image_transform_for(model, image_size)  # refuses a size its image processor fixes
    return Target(task, model, "image-transformers", METRIC, D, n_tensors)


def _text_model_size(model: str, num_labels: int, task: str) -> tuple[int, int]:
    """``(D, m)`` of the sequence classifier ``model`` with ``num_labels`` outputs."""
    return _model_size(model, num_labels, task, image=False)


def _model_size(model: str, num_labels: int, task: str, *, image: bool) -> tuple[int, int]:
    """``(D, m)`` of the sequence (``image=False``) or image classifier ``model`` with
    ``num_labels`` outputs.

    Built from its config on the ``meta`` device (no weights read, ~2 s), so a model that cannot
    be found and a ``d`` that does not fit are errors before the first run.
    """
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForImageClassification,
        AutoModelForSequenceClassification,
    )

    from ..models import resolve_model_name

    auto = AutoModelForImageClassification if image else AutoModelForSequenceClassification
    try:
        config = AutoConfig.from_pretrained(resolve_model_name(model), num_labels=num_labels)
        with torch.device("meta"):
            net = auto.from_config(config)
    except (OSError, ValueError, KeyError, ImportError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"model {model!r} cannot be loaded for task {task!r}: {first}") from None
    params = [p for p in net.parameters() if p.is_floating_point()]
    return sum(p.numel() for p in params), len(params)


def _check_metric(metric: str | None, task: str) -> None:
    if metric is not None and metric != METRIC:
        raise ValueError(f"metric {metric!r} is not reported for task {task!r}; it has only {METRIC!r}")


def check_dims(target: Target, dims: list[int], projection: str) -> None:
    """``ValueError`` when a ``d`` cannot be built: ``d > D``, or SAID with ``d ≤ m``."""
    if target.D is not None and dims[-1] > target.D:
        raise ValueError(
            f"--dims: d={dims[-1]} is larger than D={target.D}, the number of parameters of "
            f"{target.model!r}"
        )
    if projection == "said" and target.m is not None and dims[0] <= target.m:
        raise ValueError(
            f"--dims: projection 'said' learns one scale per tensor, so it needs d > m={target.m} "
            f"for {target.model!r}, got d={dims[0]}; raise the smallest d or use fastfood"
        )


def settings_for(target: Target, settings: TrainSettings) -> dict:
    """``settings`` with the model's, then the family's defaults filled in
    (``baseline_epochs`` ← ``epochs``)."""
    out = {k: v for k, v in vars(settings).items() if v is not None}
    for k, v in {**DEFAULTS[target.family], **MODEL_DEFAULTS.get(target.model, {})}.items():
        out.setdefault(k, v)
    out.setdefault("epochs", DEFAULTS[target.family]["epochs"])
    out.setdefault("baseline_epochs", out["epochs"])
    return out


def make_evaluators(
    target: Target, projection: str, settings: TrainSettings
) -> tuple[Callable[..., float], Callable[..., float]]:
    """``(evaluate(d, seed, device=…), baseline_evaluate(seed, device=…))`` for one projection."""
    s = settings_for(target, settings)
    threads = s.get("num_threads")
    if target.family == "digits":
        from .digits import evaluate_digits, evaluate_digits_full

        widths = _digits_widths(target.model)
        common = dict(widths=widths, batch_size=s.get("batch_size"), num_threads=threads or 1)
        ev = functools.partial(evaluate_digits, projection=projection, epochs=s["epochs"],
                               lr=s["lr"], **common)
        base = functools.partial(evaluate_digits_full, epochs=s["baseline_epochs"],
                                 lr=s["baseline_lr"], **common)
        return ev, base
    if target.family == "image":
        common = dict(task=target.task, model=target.model,
                      batch_size=s["batch_size"], max_train_samples=s.get("max_train_samples"),
                      max_eval_samples=s.get("max_eval_samples"), image_size=s.get("image_size"),
                      num_threads=threads)
        from .images import evaluate_image, evaluate_image_full

        ev = functools.partial(evaluate_image, projection=projection, epochs=s["epochs"],
                               lr=s["lr"], **common)
        base = functools.partial(evaluate_image_full, epochs=s["baseline_epochs"],
                                 lr=s["baseline_lr"], **common)
        return ev, base
    # text and image-transformers: the training loop
    common = dict(task=target.task, model=target.model, metric=target.metric,
                  batch_size=s["batch_size"], max_length=s.get("max_length"),
                  image_size=s.get("image_size"), max_train_samples=s.get("max_train_samples"),
                  max_eval_samples=s.get("max_eval_samples"), num_threads=threads)
    ev = functools.partial(evaluate_loop, projection=projection, epochs=s["epochs"], lr=s["lr"],
                           **common)
    base = functools.partial(evaluate_loop_full, epochs=s["baseline_epochs"],
                             lr=s["baseline_lr"], **common)
    return ev, base


# -- text tasks and transformers image classifiers through the training loop ----------------------
def _run_loop(
    method: str,
    d: int | None,
    seed: int,
    *,
    task: str,
    model: str,
    metric: str,
    projection: str,
    epochs: int,
    lr: float | None,
    batch_size: int,
    max_length: int | None = None,
    image_size: int | None = None,
    max_train_samples: int | None,
    max_eval_samples: int | None,
    device: str | None,
    num_threads: int | None,
) -> float:
    """One fine-tuning run of :func:`idcompress.training.train`; the eval split's ``metric``.

    ``max_length`` (tokens) is for text tasks, ``image_size`` (px) for image tasks; ``None``
    takes the loop's default. The run's folder (checkpoint, metrics) is temporary: measure keeps
    only the score. ``device="cuda:N"`` pins the run to that GPU; otherwise Accelerate picks it.
    """
    import torch

    from ..training import FinetuneOptions, train
    from ..training.options import is_image_task
    from .fit import intra_op_threads

    image = is_image_task(task)
    sizes = {"image_size": image_size} if image else {"max_length": max_length}
    if device is not None and device.startswith("cuda:"):
        torch.cuda.set_device(torch.device(device))
    with tempfile.TemporaryDirectory(prefix="idcompress-measure-") as tmp:
        options = FinetuneOptions(
            task=task, model=model, method=method, dim=d or 1, projection=projection,
            epochs=epochs, lr=lr, batch_size=batch_size,
            **{k: v for k, v in sizes.items() if v is not None},
            max_train_samples=max_train_samples, max_eval_samples=max_eval_samples, seed=seed,
            output_dir=os.path.join(tmp, "run"), no_report=True,
        )
        with intra_op_threads(num_threads), _seeded_global_rngs(seed):
            result = train(options, progress=False)
    if image:
        split = "validation"  # the image tasks' only eval split
    else:
        from ..data import get_task

        split = get_task(task).eval_splits[0]  # the split the loop scores (and picks epochs) on
    if metric not in result.metrics[split]:
        raise ValueError(f"metric {metric!r} not in the run's metrics {list(result.metrics[split])}")
    return float(result.metrics[split][metric])



@contextlib.contextmanager
def _seeded_global_rngs(seed: int):
    """Seed Python's, NumPy's and torch's global RNGs (dropout) for one run, then restore them."""
    import random

    import numpy as np
    import torch
    from accelerate.utils import set_seed

    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        set_seed(seed)
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def evaluate_loop(d: int, seed: int, *, projection: str = "said", device: str | None = None,
                  **kw) -> float:
    """Eval-split ``metric`` after training only θ_d ∈ R^d of the pretrained model (text or image)."""
    return _run_loop("intrinsic", d, seed, projection=projection, device=device, **kw)


def evaluate_loop_full(seed: int, *, device: str | None = None, **kw) -> float:
    """Eval-split ``metric`` after full fine-tuning (the baseline)."""
    return _run_loop("full", None, seed, projection="said", device=device, **kw)

