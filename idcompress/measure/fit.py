"""The in-memory training loop of the measurements that hold their data as tensors.

:func:`fit` trains with Adam on ``(x_train, y_train, x_val, y_val)`` and returns the validation
accuracy after the last epoch (no selection on validation data); :mod:`.digits` and
:mod:`.images` give it their data and nets. No schedule, no augmentation, no weight decay.
Text tasks and transformers image classifiers go through the fine-tuning loop instead
(:mod:`idcompress.training`, see :mod:`.tasks`).

BatchNorm layers stay in eval mode throughout: their running statistics are buffers, not part
of seed + vector, so training must not change them (see :mod:`.images`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ..flags import check_number, check_positive_int
from ..geometry._threads import torch_threads


def check_schedule(epochs: int, lr: float, batch_size: int | None, num_threads: int | None) -> None:
    """``ValueError`` naming the flag and value: ``epochs`` ≥ 1, ``lr`` > 0 (finite),
    ``batch_size`` ≥ 1 or ``None`` (full batch), ``num_threads`` (``--threads``) ≥ 1 or ``None``."""
    check_positive_int("epochs", epochs, optional=False)
    check_number("lr", lr, "a finite number > 0", lambda v: v > 0)
    check_positive_int("batch_size", batch_size)
    check_positive_int("threads", num_threads)


@contextmanager
def intra_op_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` torch intra-op threads inside the block (``None``: leave as is), then restore."""
    if n is None:
        yield
        return
    with torch_threads(n):
        yield


def fit(
    model: nn.Module,
    params: list[torch.Tensor],
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    epochs: int,
    lr: float,
    batch_size: int | None,
    seed: int,
    device: str,
    eval_batch: int | None = None,
    channels_last: bool = False,
) -> float:
    """Train ``params`` of ``model`` with Adam on ``data`` = ``(x_train, y_train, x_val, y_val)``
    for ``epochs``; the validation accuracy in [0, 1] after the last epoch.

    ``batch_size=None``: one full-batch step per epoch; else minibatches in an order drawn from
    ``torch.Generator().manual_seed(seed)`` each epoch. ``eval_batch``: images scored per
    forward pass (``None``: all). ``channels_last``: feed batches in that memory format (~1.3×
    faster convolutions on CPU for EfficientNet; same numbers up to rounding).
    """
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x_tr, y_tr, x_va, y_va = (t.to(device) for t in data)
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)  # minibatch order only
    n = len(y_tr)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = F.cross_entropy(model(x.contiguous(memory_format=fmt)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    for mod in model.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.eval()
    for _ in range(epochs):
        if batch_size is None:
            step(x_tr, y_tr)
            continue
        order = torch.randperm(n, generator=gen).to(device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            step(x_tr[idx], y_tr[idx])
    model.eval()
    correct, chunk = 0, eval_batch or len(y_va)
    with torch.no_grad():
        for start in range(0, len(y_va), chunk):
            logits = model(x_va[start : start + chunk].contiguous(memory_format=fmt))
            correct += int((logits.argmax(dim=1) == y_va[start : start + chunk]).sum())
    return correct / len(y_va)
