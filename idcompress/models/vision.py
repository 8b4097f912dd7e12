"""Plain-PyTorch vision helpers: seeded initialisation and small nets (pixels: :mod:`.pixels`).

* :func:`seeded_init_` fills every parameter from the project's counter-based generator
  (``idcompress.projection.rng``), so a randomly initialised model is a pure function of its seed
  and never touches the global RNG.
* :class:`MLPClassifier` and :class:`LeNet` are the small MNIST networks of Li et al. 2018
  ("Measuring the intrinsic dimension of objective landscapes"). They take ``pixel_values``
  ``(N, C, H, W)`` and return logits ``(N, num_classes)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from idcompress.projection import rng


def seeded_init_(module: nn.Module, seed: int = 0, mode: str = "fan_in") -> nn.Module:
    """Initialise ``module`` in place from the counter RNG, stream ``init/<parameter name>``.

    Conv/linear weights: normal with std ``sqrt(2 / fan)`` (He; ``mode`` picks fan_in or
    fan_out); biases 0; BatchNorm weight 1, bias 0, running statistics reset. Returns ``module``.
    """
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    for mod_name, mod in module.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                if mod.affine:
                    mod.weight.fill_(1.0)
                    mod.bias.zero_()
                if mod.track_running_stats:
                    mod.running_mean.zero_()
                    mod.running_var.fill_(1.0)
                    mod.num_batches_tracked.zero_()
        elif isinstance(mod, nn.Linear | nn.Conv2d | nn.Conv1d):
            w = mod.weight
            receptive = math.prod(w.shape[2:]) if w.ndim > 2 else 1
            fan = w.shape[1] * receptive if mode == "fan_in" else w.shape[0] * receptive
            if isinstance(mod, nn.Conv2d | nn.Conv1d) and mode == "fan_out":
                fan //= mod.groups
            values = rng.normal(seed, f"init/{prefix}weight", w.numel()) * math.sqrt(2.0 / fan)
            with torch.no_grad():
                w.copy_(values.reshape(w.shape))
                if mod.bias is not None:
                    mod.bias.zero_()
    return module


def materialize_(
    module: nn.Module, seed: int = 0, mode: str = "fan_in", device: str | torch.device = "cpu"
) -> nn.Module:
    """Allocate a module built on the ``meta`` device and :func:`seeded_init_` it.

    Building under ``torch.device("meta")`` skips torch's default initialisation, which would
    read and advance the global RNG.
    """
    module.to_empty(device=device)
    return seeded_init_(module, seed, mode)


class MLPClassifier(nn.Module):
    """Fully connected ReLU net on flattened images: ``pixel_values`` (N, C, H, W) → logits."""

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (1, 28, 28),
        hidden: Sequence[int] = (200, 200),
        num_classes: int = 10,
        seed: int = 0,
    ) -> None:
        super().__init__()
        sizes = [math.prod(input_shape), *hidden]
        with torch.device("meta"):  # torch's default init would advance the global RNG
            self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
            self.classifier = nn.Linear(sizes[-1], num_classes)
        materialize_(self, seed)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = pixel_values.flatten(1)
        for layer in self.layers:
            x = F.relu(layer(x))
        return self.classifier(x)


class LeNet(nn.Module):
    """LeNet-5 style CNN (conv 6@5×5, pool, conv 16@5×5, pool, 120, 84, classes) → logits."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, seed: int = 0) -> None:
        super().__init__()
        with torch.device("meta"):
            self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.fc1 = nn.Linear(16 * 5 * 5, 120)
            self.fc2 = nn.Linear(120, 84)
            self.classifier = nn.Linear(84, num_classes)
        materialize_(self, seed)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(pixel_values)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        if x.shape[-2:] != (5, 5):
            x = F.adaptive_avg_pool2d(x, 5)
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.relu(self.fc2(x))
        return self.classifier(x)
