"""``idcompress measure`` on image tasks: ``--image-size`` and transformers image classifiers.

A tiny ViT (hidden 32, 2 layers, 2 heads, 16 px, patch 8) saved to ``tmp_path`` stands in for a
hub model; it is measured through the training loop like a text model.
"""

from __future__ import annotations

import csv
import functools
import json

import pytest

from idcompress.cli.main import main

TASK = "image/digits"
NUM_CLASSES = 10  # image/digits
SIZE = 16


def _vit_config(**kw):
    from transformers import ViTConfig

    return ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, image_size=SIZE, patch_size=8, num_channels=3, **kw)


def _save_vit(folder, processor: bool) -> str:
    from transformers import ViTForImageClassification, ViTImageProcessor

    # saved with 2 labels: measure must size the head from the task's 10 classes
    net = ViTForImageClassification(_vit_config(num_labels=2))
    net.save_pretrained(folder)
    if processor:
        ViTImageProcessor(size={"height": SIZE, "width": SIZE}).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def vit(tmp_path_factory) -> str:
    """A tiny ViT folder with an image processor (it fixes the input size)."""
    return _save_vit(tmp_path_factory.mktemp("vit"), processor=True)


@pytest.fixture(scope="module")
def vit_bare(tmp_path_factory) -> str:
    """The same ViT without an image processor (the size comes from --image-size or config)."""
    return _save_vit(tmp_path_factory.mktemp("vit-bare"), processor=False)


def _rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_resolve_sizes_a_transformers_classifier_from_its_config(vit):
    from transformers import ViTForImageClassification

    from idcompress.measure.tasks import resolve

    t = resolve(TASK, vit)
    params = list(ViTForImageClassification(_vit_config(num_labels=NUM_CLASSES)).parameters())
    assert (t.family, t.task, t.model, t.metric) == ("image-transformers", TASK, vit, "accuracy")
    assert (t.D, t.m) == (sum(p.numel() for p in params), len(params))
    with pytest.raises(ValueError, match="metric 'f1'"):
        resolve(TASK, vit, metric="f1")
    with pytest.raises(ValueError, match="unknown for task.*transformers image classifier.*cannot be loaded"):
        resolve(TASK, str(vit) + "-missing")
    # the measure's own image nets keep their family
    assert resolve(TASK, "fc-32").family == "image"
    with pytest.raises(ValueError, match="is unknown for task"):
        resolve(TASK, "fc-0")


def test_loop_runs_get_the_image_options(vit_bare, monkeypatch):
    import idcompress.training as training
    from idcompress.measure.tasks import TrainSettings, make_evaluators, resolve

    seen = []

    class Result:
        metrics = {"validation": {"accuracy": 0.625}}

    def fake_train(options, progress=True):
        seen.append(options)
        return Result()

    monkeypatch.setattr(training, "train", fake_train)
    target = resolve(TASK, vit_bare, image_size=SIZE)
    ev, base = make_evaluators(target, "fastfood", TrainSettings(
        epochs=2, batch_size=8, max_train_samples=64, image_size=SIZE))
    assert ev(200, 3) == 0.625 and base(3) == 0.625
    run, full = seen
    assert (run.task, run.model, run.method, run.dim, run.seed, run.projection) == (
        TASK, vit_bare, "intrinsic", 200, 3, "fastfood")
    assert (run.image_size, run.epochs, run.batch_size, run.max_train_samples) == (SIZE, 2, 8, 64)
    assert run.lr is None and full.lr == 1e-4 and full.method == "full"
    ev, _ = make_evaluators(target, "said", TrainSettings())
    ev(200, 0)
    assert seen[-1].image_size is None  # the loop's own default (config / processor)


def test_sweep_through_the_cli_writes_results(vit, tmp_path, capsys):
    out = tmp_path / "vit"
    rc = main(["measure", "--task", TASK, "--model", vit, "--dims", "50,100",
               "--reference-score", "0.5", "--epochs", "1", "--max-train-samples", "64",
               "--max-eval-samples", "32", "--output-dir", str(out)])
    assert rc == 0, capsys.readouterr().err
    rows = _rows(out / "results.csv")
    assert sorted(int(r["d"]) for r in rows) == [50, 100]
    assert all(r["task"] == TASK and r["metric"] == "accuracy" for r in rows)
    assert all(0.0 <= float(r["score"]) <= 1.0 for r in rows)
    assert json.loads((out / "settings.json").read_text())["settings"]["image_size"] is None


def test_image_size_is_recorded_and_a_resume_with_another_size_is_refused(vit_bare, tmp_path,
                                                                           capsys):
    out = tmp_path / "bare"
    args = ["measure", "--task", TASK, "--model", vit_bare, "--dims", "50",
            "--reference-score", "0.5", "--epochs", "1", "--max-train-samples", "32",
            "--max-eval-samples", "16", "--output-dir", str(out)]
    assert main([*args, "--image-size", str(SIZE)]) == 0, capsys.readouterr().err
    assert json.loads((out / "settings.json").read_text())["settings"]["image_size"] == SIZE
    assert len(_rows(out / "results.csv")) == 1
    capsys.readouterr()
    assert main([*args, "--image-size", "32"]) == 2
    err = capsys.readouterr().err
    assert "--image-size 16 there, 32 now" in err
    assert main(args) == 2  # no size now: also another setting
    assert len(_rows(out / "results.csv")) == 1


@pytest.mark.parametrize("task, model, extra, message", [
    ("builtin/movie-sentiment", "minilm-l6", [], "--image-size=32 is for image tasks"),
    ("builtin/digits", "mlp", [], "--image-size=32 is for image tasks"),
    (TASK, "VIT", [], "image processor"),  # the processor fixes the input size
    (TASK, "VIT", ["--max-length", "64"], "--max-length=64 is for text tasks"),
])
def test_image_size_where_it_does_not_apply_is_refused(task, model, extra, message, vit,
                                                       tmp_path, capsys):
    model = vit if model == "VIT" else model
    size = [] if "--max-length" in extra else ["--image-size", "32"]
    rc = main(["measure", "--task", task, "--model", model, "--dims", "50", *size, *extra,
               "--reference-score", "0.5", "--output-dir", str(tmp_path / "out")])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_image_size_reaches_the_measure_nets(tmp_path):
    from idcompress.measure.recipe import load_recipe
    from idcompress.measure.tasks import TrainSettings, make_evaluators, resolve

    # an fc net's size follows its input: 8x8 digits resized to 16x16
    assert resolve(TASK, "fc-32").D == 64 * 32 + 32 + 32 * 10 + 10
    assert resolve(TASK, "fc-32", image_size=SIZE).D == SIZE * SIZE * 32 + 32 + 32 * 10 + 10
    target = resolve(TASK, "efficientnet-lite0-scratch", image_size=32)
    ev, base = make_evaluators(target, "said", TrainSettings(image_size=32))
    assert isinstance(ev, functools.partial) and ev.keywords["image_size"] == 32
    assert base.keywords["image_size"] == 32
    ev, _ = make_evaluators(target, "said", TrainSettings())
    assert ev.keywords["image_size"] is None  # images.py's default (64 px)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"task: {TASK}\nmodel: fc-32\ndims: [10]\nimage_size: 16\n")
    assert load_recipe(recipe)["image_size"] == 16
    recipe.write_text(f"task: {TASK}\nmodel: fc-32\ndims: [10]\nimage_size: 0\n")
    with pytest.raises(ValueError, match="image_size"):
        load_recipe(recipe)


def test_image_size_changes_what_an_fc_net_sees():
    from idcompress.measure.images import evaluate_image, load_arrays

    x16 = load_arrays(TASK, "fc-32", max_train_samples=32, max_eval_samples=16, image_size=SIZE)[0]
    assert tuple(x16.shape[1:]) == (1, SIZE, SIZE)
    acc = evaluate_image(20, 0, task=TASK, model="fc-32", epochs=1, lr=0.01, batch_size=16,
                         max_train_samples=32, max_eval_samples=16, image_size=SIZE,
                         num_threads=1)
    assert 0.0 <= acc <= 1.0
