"""Image pixels → model inputs: the one place images become ``pixel_values`` tensors.

* :func:`pixel_values`: a uint8 (or 0..255 float) batch ``(N, C, H, W)`` → float32
  ``(N, 3, H', W')``: :func:`resize` (bilinear, ``align_corners=False``, antialiased, no crop,
  aspect ratio not kept), then ``(x − mean) / std`` on the 0..255 scale; grayscale becomes a
  3-channel view of one channel, alpha is dropped.
* :func:`images_to_tensor`: the same for images as they come (PIL, numpy or torch; one image or
  a batch; HW, HWC, CHW, NHWC or NCHW; images of a list may differ in size), contiguous.
* :func:`to_rgb_uint8`: one image → ``(H, W, 3)`` uint8 (what image processors take).
* :class:`ImageTransform`: columnar batches of an image dataset → ``pixel_values`` and
  ``labels`` (the fine-tuning loop's collate), with these defaults or a transformers image
  processor; :func:`image_transform_for` picks a model's transform.
* EfficientNet-Lite's input scaling ``(x − 127) / 128`` is :data:`EFFICIENTNET_MEAN` /
  :data:`EFFICIENTNET_STD`, the defaults here; the ViT convention ``(x − 127.5) / 127.5`` is
  :data:`VIT_MEAN` / :data:`VIT_STD`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ImageLike = Any  # PIL.Image.Image | np.ndarray | torch.Tensor

#: EfficientNet-Lite's inputs are ``(x_uint8 − 127) / 128`` (the packaged ImageNet weights')
EFFICIENTNET_MEAN = 127.0
EFFICIENTNET_STD = 128.0
VIT_MEAN = VIT_STD = 127.5  # values in [−1, 1]
DEFAULT_IMAGE_SIZE = 224
PROCESSOR_FILE = "preprocessor_config.json"


def _per_channel(value: float | Sequence[float], field: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float32).reshape(-1)
    if t.numel() not in (1, 3):
        raise ValueError(f"{field} must be one number or 3 (one per RGB channel), got {value!r}")
    return t.reshape(1, -1, 1, 1)


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or min(hw) <= 0:
        raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
    return hw


def resize(x: torch.Tensor, size: int | tuple[int, int], antialias: bool = True) -> torch.Tensor:
    """Float ``(N, C, H, W)`` → ``(N, C, *size)``, bilinear (``x`` itself when it has that size)."""
    hw = _size(size)
    if tuple(x.shape[-2:]) == hw:
        return x
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=antialias)


def pixel_values(
    x: torch.Tensor,
    size: int | tuple[int, int],
    mean: float | Sequence[float] = EFFICIENTNET_MEAN,
    std: float | Sequence[float] = EFFICIENTNET_STD,
) -> torch.Tensor:
    """``(N, C, H, W)``, C in {1, 3, 4}, on the 0..255 scale → float32 ``(N, 3, *size)``.

    Resized (:func:`resize`, antialiased), then ``(x − mean) / std`` (one value or one per
    channel). A one-channel input with one mean and std comes back as a 3-channel view of one
    normalised channel (no copy); ``x`` is never changed.
    """
    if x.ndim != 4 or x.shape[1] not in (1, 3, 4):
        raise ValueError(f"expected (N, C, H, W) with C in 1, 3 or 4, got {tuple(x.shape)}")
    m, s = _per_channel(mean, "mean"), _per_channel(std, "std")
    src = x[:, :3]
    y = resize(src.to(torch.float32), size)
    if y.shape[1] == 1 and max(m.shape[1], s.shape[1]) > 1:
        return (y.expand(-1, 3, -1, -1) - m).div_(s)
    if y.data_ptr() == src.data_ptr():  # a float input already of that size: leave it as it is
        y = y.clone()
    y.sub_(m).div_(s)  # in place: a whole data set's pixels are not held twice
    return y.expand(-1, 3, -1, -1) if y.shape[1] == 1 else y


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
    size: int | tuple[int, int] = DEFAULT_IMAGE_SIZE,
    mean: float | Sequence[float] = EFFICIENTNET_MEAN,
    std: float | Sequence[float] = EFFICIENTNET_STD,
) -> torch.Tensor:
    """uint8 image(s) → contiguous float32 ``(N, 3, H, W)``: :func:`pixel_values` of each.

    ``images``: one image or a list/batch (see the module docstring for layouts); images of a list
    may differ in size. ``mean``/``std`` are on the 0..255 scale (one value or one per channel).
    """
    hw = _size(size)
    items = list(images) if isinstance(images, list | tuple) else [images]
    if not items:
        raise ValueError("images is empty")
    out = [pixel_values(_as_nchw(_to_uint8_array(item)), hw, mean, std) for item in items]
    return (torch.cat(out) if len(out) > 1 else out[0]).contiguous()


def to_rgb_uint8(image: ImageLike) -> np.ndarray:
    """One uint8 image (PIL, or an array in HW/HWC/CHW layout) → numpy ``(H, W, 3)`` uint8."""
    x = _as_nchw(_to_uint8_array(image))
    if x.shape[0] != 1:
        raise ValueError(f"expected one image, got a batch of shape {tuple(x.shape)}")
    x = x[0, :3] if x.shape[1] != 1 else x[0].expand(3, -1, -1)
    return np.ascontiguousarray(x.permute(1, 2, 0).numpy())


# ---------------------------------------------------------------- dataset batches


def _as_image(item: Any) -> Any:
    """Nested lists (python format) or integer arrays (numpy/torch format) → uint8; PIL passes."""
    if isinstance(item, list | tuple):
        item = np.asarray(item)
    if isinstance(item, torch.Tensor):
        item = item.numpy(force=True)
    if isinstance(item, np.ndarray) and item.dtype != np.uint8:
        if item.dtype.kind not in "iub":
            raise ValueError(f"images must hold integers in 0..255, got dtype {item.dtype}")
        if item.size and (item.min() < 0 or item.max() > 255):
            raise ValueError(f"image values must lie in 0..255, got {item.min()}..{item.max()}")
        item = item.astype(np.uint8)
    return item


class ImageTransform:
    """Batch transform: ``{image, label}`` columns → ``{"pixel_values", "labels"}`` tensors.

    Without ``image_processor``: :func:`images_to_tensor` with ``size``, ``mean``, ``std``
    (defaults: EfficientNet-Lite at 224 px). With a transformers image processor (e.g.
    ``AutoImageProcessor.from_pretrained(...)``) images are given to it as RGB ``(H, W, 3)``
    uint8 arrays and ``size``/``mean``/``std`` are ignored.

    Use ``dataset.with_transform(t)`` (``__call__`` takes a columnar batch) or
    ``DataLoader(..., collate_fn=t.collate)`` (a list of examples).
    """

    def __init__(
        self,
        size: int = DEFAULT_IMAGE_SIZE,
        mean: float | Sequence[float] = EFFICIENTNET_MEAN,
        std: float | Sequence[float] = EFFICIENTNET_STD,
        image_processor: Callable[..., Any] | None = None,
        image_column: str = "image",
        label_column: str = "label",
    ) -> None:
        self.size = size
        self.mean = mean
        self.std = std
        self.image_processor = image_processor
        self.image_column = image_column
        self.label_column = label_column

    def pixel_values(self, images: Sequence[Any]) -> torch.Tensor:
        """A sequence of images → float ``(N, 3, H, W)``."""
        items = [_as_image(i) for i in images]
        if self.image_processor is not None:
            rgb = [to_rgb_uint8(i) for i in items]
            return self.image_processor(images=rgb, return_tensors="pt")["pixel_values"]
        return images_to_tensor(items, size=self.size, mean=self.mean, std=self.std)

    def __call__(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        if self.image_column not in batch:
            raise ValueError(f"batch has no column {self.image_column!r} (has {list(batch)})")
        out = {"pixel_values": self.pixel_values(batch[self.image_column])}
        if self.label_column in batch:
            out["labels"] = torch.as_tensor(np.asarray(batch[self.label_column]), dtype=torch.long)
        return out

    def collate(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """DataLoader ``collate_fn``: a list of example dicts → one batch of tensors."""
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        return self({k: [ex[k] for ex in examples] for k in examples[0]})


def efficientnet_transform(**kwargs: Any) -> ImageTransform:
    """:class:`ImageTransform` for EfficientNet-Lite0: 224×224, ``(x − 127) / 128``."""
    return ImageTransform(size=DEFAULT_IMAGE_SIZE, mean=EFFICIENTNET_MEAN, std=EFFICIENTNET_STD,
                          **kwargs)


# ---------------------------------------------------------------- a model's transform


def _image_processor(resolved: str, model: str) -> Any | None:
    """The image processor of a transformers folder/hub repo, or ``None`` when it has none."""
    from transformers import AutoImageProcessor

    if Path(resolved).is_dir() and not (Path(resolved) / PROCESSOR_FILE).is_file():
        return None
    try:
        return AutoImageProcessor.from_pretrained(resolved, backend="pil")
    except OSError:
        if Path(resolved).is_dir():
            raise
        return None  # a hub model without a processor
    except (ValueError, KeyError) as e:
        raise ValueError(f"--model {model!r}: its image processor ({PROCESSOR_FILE}) does not "
                         f"load: {e}") from None


def _config_image_size(resolved: str, model: str) -> int | None:
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(resolved)
    except (OSError, ValueError) as e:
        raise ValueError(f"--model {model!r} is not a packaged short name, a local model folder "
                         f"or a hub id that loads: {e}") from None
    size = getattr(cfg, "image_size", None)
    return size if isinstance(size, int) and size > 0 else None


def image_transform_for(model: str, image_size: int | None = None
                        ) -> tuple[ImageTransform, dict[str, Any] | None]:
    """The transform of ``model``'s inputs and, unless an image processor does it, its settings.

    * ``efficientnet-lite0`` (or a folder it was saved to): resize to ``image_size`` (default
      224, or the size the folder records), ``(x − 127) / 128``;
    * a transformers model whose folder or hub repo has an image processor
      (``preprocessor_config.json``): that processor, PIL backend (the same pixels whether or
      not torchvision is installed); ``image_size`` is refused (``ValueError`` naming
      ``--image-size``: the processor fixes the size);
    * a transformers model without one: resize to ``image_size``, else ``config.image_size``,
      else 224, and ``(x − 127.5) / 127.5``.

    The settings (``size``, ``mean``, ``std``) are what a run records in its checkpoint config
    (``extra["image_preprocessing"]``).
    """
    from . import resolve_model_name
    from .saved import architecture_of, is_module_folder, read_module_config

    arch = architecture_of(model)
    if arch == "efficientnet-lite0":
        recorded = read_module_config(model).get("image_preprocessing") \
            if is_module_folder(model) else None
        size = image_size or (recorded or {}).get("size") or DEFAULT_IMAGE_SIZE
        prep = {"size": int(size), "mean": EFFICIENTNET_MEAN, "std": EFFICIENTNET_STD}
    elif arch is not None:  # pragma: no cover - a new architecture must say how it is fed
        raise ValueError(f"--model {model!r}: no image transform known for architecture {arch!r}")
    else:
        resolved = resolve_model_name(model)
        processor = _image_processor(resolved, model)
        if processor is not None:
            if image_size is not None:
                raise ValueError(f"--image-size={image_size}: model {model!r} has an image "
                                 f"processor ({PROCESSOR_FILE}) that fixes the input size; "
                                 "leave --image-size out")
            return ImageTransform(image_processor=processor), None
        size = image_size or _config_image_size(resolved, model) or DEFAULT_IMAGE_SIZE
        prep = {"size": int(size), "mean": VIT_MEAN, "std": VIT_STD}
    return ImageTransform(size=prep["size"], mean=prep["mean"], std=prep["std"]), prep
