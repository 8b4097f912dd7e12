"""Built-in fast task: scikit-learn's 8×8 digits, a small MLP trained from scratch.

- Data: ``sklearn.datasets.load_digits()`` (1,797 images, 64 pixels in 0..16, scaled to [0, 1]).
  Fixed split without randomness: sample ``i`` is a test sample iff ``i % 4 == 0`` (450 test,
  1,347 train; 38 to 50 test samples per class).
- Model: :class:`MLP` ``64 → widths… → 10`` with ReLU. Its initial weights θ₀ come from
  ``torch.Generator().manual_seed(seed)`` (PyTorch's default ``nn.Linear`` distribution,
  U(±1/√fan_in) for weights and biases), never from the global RNG.
- :func:`evaluate_digits` trains only θ_d through the intrinsic adapter (θ₀ frozen), and
  :func:`evaluate_digits_full` trains all weights (the baseline); both train with
  :func:`.fit.fit` (Adam, full-batch steps by default: ``batch_size=None``, one step per epoch;
  minibatch order from ``seed + 1``) and return test accuracy in [0, 1].

Runs use one torch intra-op thread by default (``num_threads=1``, set for the run and restored
after it): the net is so small that more threads only add synchronisation, which is very slow
on a loaded machine; parallelism comes from worker processes (:mod:`.parallel`) instead.

The defaults (``epochs=300``, ``lr=0.05`` intrinsic, ``lr=0.01`` full) were tuned so that a sweep over
d ∈ {10, 30, 100, 300, 1000} takes seconds on a CPU and rises with d towards the baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch
from torch import nn

from .fit import check_schedule, fit, intra_op_threads

N_TEST_EVERY = 4  # sample i is a test sample iff i % N_TEST_EVERY == 0


@lru_cache(maxsize=1)
def _digits_arrays():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    test = torch.arange(len(y)) % N_TEST_EVERY == 0
    return x[~test], y[~test], x[test], y[test]


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


def _fit(model: nn.Module, epochs: int, lr: float, batch_size: int | None, seed: int,
         device: str, num_threads: int | None) -> float:
    """Train what requires grad in ``model`` on the digits split; the test accuracy."""
    params = [p for p in model.parameters() if p.requires_grad]
    with intra_op_threads(num_threads):  # minibatch order from seed + 1
        return fit(model, params, _digits_arrays(), epochs, lr, batch_size, seed + 1, device)


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

    check_schedule(epochs, lr, batch_size, num_threads)
    base = MLP(widths=tuple(widths), seed=seed)
    model = get_intrinsic_model(base, IntrinsicConfig(d=d, projection=projection, seed=seed))
    return _fit(model.to(device), epochs, lr, batch_size, seed, device, num_threads)


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
    check_schedule(epochs, lr, batch_size, num_threads)
    model = MLP(widths=tuple(widths), seed=seed).to(device)
    return _fit(model, epochs, lr, batch_size, seed, device, num_threads)
