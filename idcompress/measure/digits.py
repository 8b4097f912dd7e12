"""Built-in fast task: scikit-learn's 8×8 digits, a small MLP trained from scratch.

- Data: ``sklearn.datasets.load_digits()`` (1,797 images, 64 pixels in 0..16, scaled to [0, 1]).
  Fixed split without randomness: sample ``i`` is a test sample iff ``i % 4 == 0`` (450 test,
  1,347 train; 38 to 50 test samples per class).
- Model: :class:`MLP` ``64 → widths… → 10`` with ReLU. Its initial weights θ₀ come from
  ``torch.Generator().manual_seed(seed)`` (PyTorch's default ``nn.Linear`` distribution,
  U(±1/√fan_in) for weights and biases), never from the global RNG.
- :func:`evaluate_digits` trains only θ_d through the intrinsic adapter (θ₀ frozen), and
  :func:`evaluate_digits_full` trains all weights (the baseline); both use Adam with full-batch
  steps by default (``batch_size=None``: one step per epoch) and return test accuracy in [0, 1].

Runs use one torch intra-op thread by default (``num_threads=1``, set for the run and restored
after it): the net is so small that more threads only add synchronisation, which is very slow
on a loaded machine; parallelism comes from worker processes (:mod:`.parallel`) instead.

The defaults (``epochs=300``, ``lr=0.05`` intrinsic, ``lr=0.01`` full) were tuned so that a sweep over
d ∈ {10, 30, 100, 300, 1000} takes seconds on a CPU and rises with d towards the baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from functools import lru_cache

import torch
from torch import nn

from ..geometry._threads import torch_threads

N_TEST_EVERY = 4  # sample i is a test sample iff i % N_TEST_EVERY == 0


@lru_cache(maxsize=1)
def _digits_arrays():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    test = torch.arange(len(y)) % N_TEST_EVERY == 0
    return x[~test], y[~test], x[test], y[test]


def load_digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_train (1347, 64), y_train (1347,), x_test (450, 64), y_test (450,))``, pixels in [0, 1]."""
    return tuple(t.clone() for t in _digits_arrays())


class MLP(nn.Module):
    """Fully connected ReLU net ``in_features → widths… → n_classes``, seeded by ``seed``.

    Weights and biases are drawn from U(±1/√fan_in) with a local ``torch.Generator``; the global
    RNG is neither read nor changed.
    """

    def __init__(
        self,
        in_features: int = 64,
        widths: Sequence[int] = (64,),
        n_classes: int = 10,
        seed: int = 0,
    ) -> None:
        super().__init__()
        sizes = [in_features, *widths, n_classes]
        if any(not isinstance(s, int) or isinstance(s, bool) or s <= 0 for s in sizes):
            raise ValueError(f"MLP sizes must be positive integers, got {sizes}")
        gen = torch.Generator().manual_seed(seed)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
            lin = nn.utils.skip_init(nn.Linear, a, b)  # no default init: it uses the global RNG
            bound = a**-0.5
            with torch.no_grad():
                lin.weight.copy_((torch.rand(b, a, generator=gen) * 2 - 1) * bound)
                lin.bias.copy_((torch.rand(b, generator=gen) * 2 - 1) * bound)
            layers.append(lin)
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (N, in_features) → logits (N, n_classes)."""
        return self.net(x)


@contextmanager
def _intra_op_threads(n: int | None):
    """Use ``n`` torch intra-op threads inside the block (``None``: leave as is), then restore."""
    if n is None:
        yield
        return
    with torch_threads(n):
        yield


def _train(
    model: nn.Module,
    params: list[torch.Tensor],
    epochs: int,
    lr: float,
    batch_size: int | None,
    seed: int,
    device: str,
    num_threads: int | None,
) -> float:
    with _intra_op_threads(num_threads):
        return _train_loop(model, params, epochs, lr, batch_size, seed, device)


def _train_loop(
    model: nn.Module,
    params: list[torch.Tensor],
    epochs: int,
    lr: float,
    batch_size: int | None,
    seed: int,
    device: str,
) -> float:
    x_tr, y_tr, x_te, y_te = (t.to(device) for t in _digits_arrays())
    opt = torch.optim.Adam(params, lr=lr)
    n = len(y_tr)
    gen = torch.Generator().manual_seed(seed + 1)  # minibatch order only
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen).to(device) if batch_size else None
        for start in range(0, n, batch_size or n):
            idx = order[start : start + batch_size] if order is not None else slice(None)
            loss = nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return float((model(x_te).argmax(dim=1) == y_te).float().mean())


def _check(epochs: int, lr: float, batch_size: int | None, num_threads: int | None) -> None:
    if num_threads is not None and (not isinstance(num_threads, int) or num_threads <= 0):
        raise ValueError(f"num_threads must be a positive integer or None, got {num_threads!r}")
    if not isinstance(epochs, int) or epochs <= 0:
        raise ValueError(f"epochs must be a positive integer, got epochs={epochs!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got lr={lr!r}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size <= 0):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")


def evaluate_digits(
    d: int,
    seed: int,
    projection: str = "fastfood",
    widths: Sequence[int] = (64,),
    epochs: int = 300,
    lr: float = 0.05,
    batch_size: int | None = None,
    device: str = "cpu",
    num_threads: int | None = 1,
) -> float:
    """Test accuracy after training only θ_d ∈ R^d (seed ``seed`` for θ₀ and P) on digits.

    ``epochs`` passes over the 1,347 training images (``batch_size=None``: one full-batch Adam
    step per epoch); ``num_threads`` torch threads during the run (``None``: unchanged).
    """
    from .. import IntrinsicConfig, get_intrinsic_model

    _check(epochs, lr, batch_size, num_threads)
    base = MLP(widths=tuple(widths), seed=seed)
    model = get_intrinsic_model(base, IntrinsicConfig(d=d, projection=projection, seed=seed))
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    return _train(model, params, epochs, lr, batch_size, seed, device, num_threads)


def evaluate_digits_full(
    seed: int,
    widths: Sequence[int] = (64,),
    epochs: int = 300,
    lr: float = 0.01,
    batch_size: int | None = None,
    device: str = "cpu",
    num_threads: int | None = 1,
) -> float:
    """Test accuracy after training every weight of the MLP (the baseline) on digits.

    Same schedule and arguments as :func:`evaluate_digits`, with all of θ trained from θ₀.
    """
    _check(epochs, lr, batch_size, num_threads)
    model = MLP(widths=tuple(widths), seed=seed).to(device)
    return _train(
        model, list(model.parameters()), epochs, lr, batch_size, seed, device, num_threads
    )
