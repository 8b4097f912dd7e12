"""Plain-PyTorch vision helpers: image → tensor conversion, seeded initialisation, small nets.

* :func:`images_to_tensor` turns uint8 images (PIL, numpy or torch; one image or a batch; HW,
  HWC, CHW, NHWC or NCHW) into a float ``(N, 3, size, size)`` tensor: grayscale is repeated to 3
  channels, alpha is dropped, the resize is ``torch.nn.functional.interpolate`` (bilinear,
  antialias, no crop, aspect ratio not kept) and the values are ``(x − mean) / std`` on the
  0..255 scale.
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
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from idcompress.projection import rng

ImageLike = Any  # PIL.Image.Image | np.ndarray | torch.Tensor


def _per_channel(value: float | Sequence[float], field: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float32).reshape(-1)
    if t.numel() not in (1, 3):
        raise ValueError(f"{field} must be one number or 3 (one per RGB channel), got {value!r}")
    return t.reshape(1, -1, 1, 1)


def _to_uint8_array(image: ImageLike) -> np.ndarray | torch.Tensor:
    """PIL → numpy (L or RGB); numpy/torch pass through after a dtype check."""
    if hasattr(image, "convert") and hasattr(image, "mode"):  # PIL image, no hard PIL import
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        return np.asarray(image)
    if isinstance(image, np.ndarray | torch.Tensor):
        if image.dtype not in (np.uint8, torch.uint8):
            raise ValueError(
                f"images must be uint8 in 0..255, got dtype {image.dtype}; scale them first"
            )
        return image
    raise ValueError(
        f"images must be PIL images, numpy arrays or torch tensors, got {type(image).__name__}"
    )


def _as_nchw(array: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 array of rank 2/3/4 → uint8 tensor ``(N, C, H, W)`` with C in {1, 3, 4}.

    Rank 3 is HWC when the last dim is 1, 3 or 4, else CHW; rank 4 is NCHW when dim 1 is 1 or 3,
    else NHWC.
    """
    if isinstance(array, np.ndarray):  # "W": torch warns on read-only arrays (e.g. from PIL)
        t = torch.from_numpy(np.require(array, requirements=["C", "W"]))
    else:
        t = array
    shape = tuple(t.shape)
    if t.ndim == 2:
        t = t[None, None]
    elif t.ndim == 3:
        t = t.permute(2, 0, 1)[None] if shape[-1] in (1, 3, 4) else t[None]
    elif t.ndim == 4:
        if shape[1] not in (1, 3):
            t = t.permute(0, 3, 1, 2)
    else:
        raise ValueError(f"images must have rank 2, 3 or 4, got shape {shape}")
    if t.shape[1] not in (1, 3, 4):
        raise ValueError(f"cannot find a channel axis of size 1, 3 or 4 in image shape {shape}")
    return t


def images_to_tensor(
    images: ImageLike | Sequence[ImageLike],
    size: int | tuple[int, int] = 224,
    mean: float | Sequence[float] = 127.0,
    std: float | Sequence[float] = 128.0,
) -> torch.Tensor:
    """uint8 image(s) → float32 ``(N, 3, H, W)``, resized to ``size`` and normalised.

    ``images``: one image or a list/batch (see the module docstring for layouts); images of a list
    may differ in size. ``mean``/``std`` are on the 0..255 scale (one value or one per channel);
    the defaults give EfficientNet-Lite's ``(x − 127) / 128``.
    """
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or min(hw) <= 0:
        raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
    items = list(images) if isinstance(images, list | tuple) else [images]
    if not items:
        raise ValueError("images is empty")
    out = []
    for item in items:
        x = _as_nchw(_to_uint8_array(item)).to(torch.float32)
        if tuple(x.shape[-2:]) != hw:
            x = F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=True)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        out.append(x[:, :3])
    x = torch.cat(out) if len(out) > 1 else out[0]
    return ((x - _per_channel(mean, "mean")) / _per_channel(std, "std")).contiguous()


def to_rgb_uint8(image: ImageLike) -> np.ndarray:
    """One uint8 image (PIL, or an array in HW/HWC/CHW layout) → numpy ``(H, W, 3)`` uint8."""
    x = _as_nchw(_to_uint8_array(image))
    if x.shape[0] != 1:
        raise ValueError(f"expected one image, got a batch of shape {tuple(x.shape)}")
    x = x[0, :3] if x.shape[1] != 1 else x[0].expand(3, -1, -1)
    return np.ascontiguousarray(x.permute(1, 2, 0).numpy())


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
