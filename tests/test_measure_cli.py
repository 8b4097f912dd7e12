"""Tests of ``idcompress measure`` (the CLI), the image trainer and the task dispatch."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import PNG_MAGIC

from idcompress.cli.main import main
from idcompress.measure import ResultStore, read_rows

# a tiny but real sweep: 8x8 digits, a 64-32-10 MLP from scratch, full-batch Adam
DIGITS = ["measure", "--task", "builtin/digits", "--model", "mlp-32", "--projection", "fastfood",
          "--epochs", "60", "--lr", "0.1", "--baseline-lr", "0.02", "--rel-tol", "0.3"]


def _refuse_runs(monkeypatch):
    """Make every training function fail, so a test proves nothing was run."""

    def boom(*args, **kwargs):
        raise AssertionError("a run was started")

    import idcompress.measure.digits as digits
    import idcompress.measure.images as images

    for mod, name in ((digits, "evaluate_digits"), (digits, "evaluate_digits_full"),
                      (images, "evaluate_image"), (images, "evaluate_image_full")):
        monkeypatch.setattr(mod, name, boom)  # measure.tasks imports them from here when used


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# -- the end-to-end sweep ---------------------------------------------------------------------------
def test_help_describes_the_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["measure", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--task", "--model", "--dims", "--fraction", "--seeds", "--projection",
                 "--reference-score", "--epochs", "--lr", "--batch-size", "--output-dir",
                 "--devices", "--recipe"):
        assert flag in out
    assert "fc-<w1>-<w2>" in out and "lenet" in out and "d90" in out
    assert "efficientnet-lite0-scratch" in out
    # lr None is shown as the rule it stands for, not as "full batch"
    assert "text tasks: epochs 3, lr 0.2*sqrt(1000/d)" in " ".join(out.split())
    assert "lr full batch" not in " ".join(out.split())


def test_cli_parser_imports_no_torch():
    """``idcompress --help`` and every subcommand's parser stay fast: nothing heavy imported."""
    import subprocess
    import sys

    code = ("import sys; from idcompress.cli.main import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'numba') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_digits_sweep_writes_results_and_resumes(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    state = torch.random.get_rng_state()
    rc = main([*DIGITS, "--dims", "10,100,1000", "--seeds", "2", "--output-dir", str(out)])
    assert rc == 0
    assert torch.equal(torch.random.get_rng_state(), state)  # θ₀ never from the global RNG
    stdout = capsys.readouterr().out

    rows = _csv(out / "results.csv")
    full = [r for r in rows if r["d"] == "full"]
    runs = [r for r in rows if r["d"] != "full"]
    assert sorted(int(r["seed"]) for r in full) == [0, 1]
    assert all(r["projection"] == "fastfood" and r["task"] == "builtin/digits"
               and r["model"] == "mlp-32" for r in runs)
    by_d: dict[int, list[float]] = {}
    for r in runs:
        by_d.setdefault(int(r["d"]), []).append(float(r["score"]))
    assert {10, 100, 1000} <= set(by_d) and all(len(v) == 2 for v in by_d.values())
    assert np.mean(by_d[1000]) > np.mean(by_d[10]) + 0.3  # a real curve: more d, better

    # d90 in results.json is what the CSV rows say: smallest d whose mean reaches 0.9 × baseline
    data = json.loads((out / "results.json").read_text())
    summary = data["projections"]["fastfood"]
    baseline = np.mean([float(r["score"]) for r in full])
    assert summary["baseline"] == pytest.approx(baseline)
    expected = min(d for d, v in by_d.items() if np.mean(v) >= 0.9 * baseline)
    assert summary["d90"] == summary["d_frac"] == expected
    lo, hi = summary["interval"]
    assert lo <= expected and (hi is None or hi >= expected)
    assert f"d90 = {expected}" in stdout and "interval" in stdout

    png = (out / "d_curve.png").read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 10_000
    assert json.loads((out / "settings.json").read_text())["settings"]["epochs"] == 60

    # rerun: every run is found in results.csv; nothing trains (the trainers would fail)
    _refuse_runs(monkeypatch)
    assert main([*DIGITS, "--dims", "10,100,1000", "--seeds", "2", "--output-dir", str(out)]) == 0
    assert len(_csv(out / "results.csv")) == len(rows)
    assert "0 new run(s)" in capsys.readouterr().out


def test_recipe_fills_options_and_flags_override(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "task: builtin/digits\nmodel: mlp-16\nprojection: dense\ndims: [20, 200]\n"
        "seeds: [0, 1, 2]\nepochs: 40\nlr: 0.1\nthreads: 1\nreference_score: 0.95\n"
        f"output_dir: {tmp_path / 'from-recipe'}\n"
    )
    out = tmp_path / "flag-dir"
    rc = main(["measure", "--recipe", str(recipe), "--seeds", "1", "--output-dir", str(out),
               "--rel-tol", "0.5"])
    assert rc == 0
    assert not (tmp_path / "from-recipe").exists()  # --output-dir overrides the recipe
    rows = read_rows(out / "results.csv")
    assert rows and {r.seed for r in rows} == {0}  # --seeds 1 overrides seeds: [0, 1, 2]
    assert {r.projection for r in rows} == {"dense"}  # from the recipe
    assert not any(r.d == "full" for r in rows)  # reference_score: no baseline runs
    summary = json.loads((out / "results.json").read_text())["projections"]["dense"]
    assert summary["baseline"] == 0.95 and summary["baseline_source"] == "reference_score"
    assert json.loads((out / "settings.json").read_text())["settings"]["epochs"] == 40


def test_several_models_write_subfolders_and_a_comparison_plot(tmp_path, capsys):
    rc = main(["measure", "--task", "builtin/digits", "--model", "mlp-8,mlp-16",
               "--projection", "fastfood", "--dims", "20,200", "--epochs", "30", "--lr", "0.1",
               "--reference-score", "0.9", "--output-dir", str(tmp_path)])
    assert rc == 0
    for model in ("mlp-8", "mlp-16"):
        rows = read_rows(tmp_path / model / "results.csv")
        assert rows and {r.model for r in rows} == {model}
    assert (tmp_path / "d_curve_models.png").read_bytes()[:8] == PNG_MAGIC


# -- bad input: exit code 2, a clear message, no run ------------------------------------------------
BAD = [
    (["--fraction", "0"], "--fraction must lie in (0, 1]"),
    (["--fraction", "1.5"], "--fraction must lie in (0, 1]"),
    (["--fraction", "x"], "--fraction must be a number"),
    (["--dims", ""], "--dims must not be empty"),
    (["--dims", "100,10"], "strictly increasing"),
    (["--dims", "10,10"], "strictly increasing"),
    (["--dims", "10,ab"], "--dims must be an integer"),
    (["--dims", "0,10"], "positive integers"),
    (["--reference-score", "0"], "--reference-score must be finite and > 0"),
    (["--reference-score", "-0.5"], "--reference-score must be finite and > 0"),
    (["--seeds", "0"], "--seeds K must be at least 1"),
    (["--seeds", "1,1"], "distinct"),
    (["--projection", "gaussian"], "--projection 'gaussian' is unknown"),
    (["--dims", "10,100000"], "d=100000 is larger than D=2410"),
    (["--projection", "said", "--dims", "3,100"], "needs d > m=4"),
    (["--model", "lenet"], "model 'lenet' is unknown for task 'builtin/digits'"),
    (["--task", "image/nope"], "image task 'image/nope' is not supported"),
    (["--task", "glue/nope"], "task 'glue/nope' is unknown"),
    (["--task", "image/digits", "--model", "resnet-50"], "model 'resnet-50' is unknown"),
    (["--task", "builtin/movie-sentiment", "--model", "fc-10"], "is an image model"),
    (["--task", "builtin/movie-sentiment", "--model", "no-such-model-xyz"], "cannot be loaded"),
    (["--task", "builtin/movie-sentiment", "--model", "minilm-l6", "--projection", "said"],
     "needs d > m=105"),
    (["--metric", "f1"], "metric 'f1' is not reported"),
    (["--epochs", "0"], "--epochs must be positive"),
    (["--lr", "-1"], "--lr must be positive"),
    (["--devices", "cuda:7"], "--devices: 'cuda:7' is not available"),
    (["--devices", "gpu"], "--devices: 'gpu' is not a device"),
]


@pytest.mark.parametrize("extra,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_refused_before_any_run(extra, message, tmp_path, capsys, monkeypatch):
    _refuse_runs(monkeypatch)
    args = ["measure", "--task", "builtin/digits", "--model", "mlp-32", "--dims", "10,100",
            "--projection", "fastfood", "--output-dir", str(tmp_path / "out")]
    rc = main(args + extra)  # later flags win over the defaults above
    assert rc == 2
    err = capsys.readouterr().err
    assert "idcompress measure: error:" in err and message in err, err
    assert not (tmp_path / "out" / "results.csv").exists()


def test_no_task_and_missing_recipe(tmp_path, capsys):
    assert main(["measure", "--model", "mlp"]) == 2
    assert "give --task" in capsys.readouterr().err
    assert main(["measure", "--recipe", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml" in capsys.readouterr().err


@pytest.mark.parametrize("other", [{"model": "mlp-64"}, {"task": "image/digits", "model": "fc-32"}])
def test_results_of_another_task_or_model_are_refused(other, tmp_path, capsys, monkeypatch):
    ResultStore(tmp_path, task=other.get("task", "builtin/digits"), model=other["model"],
                metric="accuracy").append("fastfood", 10, 0, 0.5, 0.1)
    before = (tmp_path / "results.csv").read_text()
    _refuse_runs(monkeypatch)
    rc = main(["measure", "--task", "builtin/digits", "--model", "mlp-32", "--dims", "10,100",
               "--output-dir", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "holds results of another measurement" in err and str(tmp_path) in err
    assert (tmp_path / "results.csv").read_text() == before


def test_other_training_settings_in_the_output_dir_are_refused(tmp_path, capsys, monkeypatch):
    args = [*DIGITS, "--dims", "10,100", "--reference-score", "0.9", "--output-dir", str(tmp_path)]
    assert main(args) == 0
    n = len(read_rows(tmp_path / "results.csv"))
    _refuse_runs(monkeypatch)
    assert main([*args, "--epochs", "61"]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "--epochs 60 there, 61 now" in err
    assert len(read_rows(tmp_path / "results.csv")) == n


def test_measure_options_parse_the_flag_strings_and_check_the_values():
    from idcompress.measure.options import MeasureOptions, parse_flags
    from idcompress.measure.tasks import Target

    values = parse_flags({"task": "builtin/digits", "model": "mlp, mlp-8", "dims": "10,100",
                          "seeds": "3", "lr": "0.1", "epochs": "5"})
    assert values == {"task": "builtin/digits", "models": ["mlp", "mlp-8"], "dims": [10, 100],
                      "seeds": [0, 1, 2], "lr": 0.1, "epochs": 5}
    opts = MeasureOptions(**values)
    assert (opts.projections, opts.fraction, opts.rel_tol) == (["said"], 0.9, 0.05)
    with pytest.raises(ValueError, match="--batch-size must be positive, got 0"):
        MeasureOptions(task="t", models=["m"], batch_size=0)
    with pytest.raises(ValueError, match="--epochs must be an integer, got 1.5"):
        MeasureOptions(task="t", models=["m"], epochs=1.5)
    with pytest.raises(ValueError, match="--rel-tol must lie in"):
        MeasureOptions(task="t", models=["m"], rel_tol=1.0)
    # without --dims: the default grid cut to d <= D and, with SAID, d > m
    target = Target("builtin/digits", "mlp", "digits", "accuracy", D=500, m=10)
    assert MeasureOptions(task="t", models=["m"]).dims_for(target) == [30, 100, 300]
    assert MeasureOptions(task="t", models=["m"], projections=["dense"]).dims_for(target) == [
        10, 30, 100, 300]


# -- the image trainer ------------------------------------------------------------------------------
def test_image_nets_are_seeded_locally_and_runs_are_deterministic():
    from idcompress.measure.images import build_net, evaluate_image, parse_model

    assert parse_model("fc-200-200") == ("fc", (200, 200)) and parse_model("LeNet")[0] == "lenet"
    with pytest.raises(ValueError, match="not an image model"):
        parse_model("fc-")
    state = torch.random.get_rng_state()
    a, b = build_net("fc-20", 3, (1, 8, 8), 10), build_net("fc-20", 3, (1, 8, 8), 10)
    c = build_net("fc-20", 4, (1, 8, 8), 10)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb)
        assert pa.abs().sum() == 0 or not torch.equal(pa, pc)  # biases start at 0
    kw = dict(task="image/digits", model="fc-32", projection="fastfood", epochs=3, lr=0.05,
              batch_size=256, num_threads=1)
    s0 = evaluate_image(100, 0, **kw)
    assert evaluate_image(100, 0, **kw) == s0
    assert evaluate_image(100, 1, **kw) != s0 or evaluate_image(100, 2, **kw) != s0
    assert torch.equal(torch.random.get_rng_state(), state)


def test_image_training_learns_and_lenet_takes_small_images():
    from idcompress.measure.images import evaluate_image, evaluate_image_full, load_arrays

    x_tr, y_tr, x_va, y_va, k = load_arrays("image/digits", "fc-32")
    assert x_tr.shape[1:] == (1, 8, 8) and k == 10 and len(y_tr) + len(y_va) == 1797
    assert abs(float(x_tr.mean())) < 1e-4 and abs(float(x_tr.std()) - 1) < 1e-3
    full = evaluate_image_full(0, task="image/digits", model="fc-32", epochs=15, lr=0.003,
                               batch_size=64, num_threads=1)
    assert full > 0.9
    sub = evaluate_image(300, 0, task="image/digits", model="fc-32", projection="said",
                         epochs=15, lr=0.05, batch_size=64, num_threads=1)
    assert 0.5 < sub <= 1.0
    assert load_arrays("image/digits", "lenet")[0].shape[1:] == (1, 28, 28)
    acc = evaluate_image(50, 0, task="image/digits", model="lenet", projection="fastfood",
                         epochs=1, lr=0.03, batch_size=512, num_threads=1)
    assert 0.0 <= acc <= 1.0


# -- dispatch and text tasks -----------------------------------------------------------------------
def test_resolve_knows_families_sizes_and_metrics():
    from idcompress.measure.tasks import resolve

    t = resolve("builtin/digits", "MLP")
    assert (t.family, t.model, t.D, t.m) == ("digits", "mlp", 64 * 64 + 64 + 64 * 10 + 10, 4)
    t = resolve("image/digits", "fc-32")
    assert (t.family, t.D, t.m, t.metric) == ("image", 64 * 32 + 32 + 32 * 10 + 10, 4, "accuracy")
    t = resolve("MRPC", "minilm-l6")  # size from the config on the meta device
    assert (t.family, t.task, t.metric, t.m) == ("text", "glue/mrpc", "accuracy", 105)
    assert 22_000_000 < t.D < 23_000_000
    assert resolve("glue/stsb", "minilm-l6").metric == "pearson"
    assert resolve("glue/mrpc", "minilm-l6", metric="f1").metric == "f1"


def test_text_runs_go_through_the_training_loop(monkeypatch):
    import idcompress.training as training
    from idcompress.measure.tasks import TrainSettings, make_evaluators, resolve
    from idcompress.training import DEFAULT_LR

    seen = []

    class Result:
        metrics = {"validation": {"accuracy": 0.75, "f1": 0.5}}

    draws = []

    def fake_train(options, progress=True):
        seen.append(options)
        draws.append(torch.rand(3))  # dropout's RNG: seeded by the run's seed
        assert Path(options.output_dir).parent.is_dir()  # a temporary run folder
        return Result()

    monkeypatch.setattr(training, "train", fake_train)
    target = resolve("builtin/movie-sentiment", "minilm-l6")
    settings = TrainSettings(epochs=2, lr=0.02, batch_size=8, max_train_samples=64,
                             max_eval_samples=32)
    ev, base = make_evaluators(target, "said", settings)
    assert ev(300, 4) == 0.75 and base(4) == 0.75
    run, full = seen
    assert (run.method, run.dim, run.seed, run.projection, run.epochs, run.lr) == (
        "intrinsic", 300, 4, "said", 2, 0.02)
    assert (run.batch_size, run.max_train_samples, run.max_eval_samples, run.task) == (
        8, 64, 32, "builtin/movie-sentiment")
    assert (full.method, full.seed, full.lr, full.epochs) == ("full", 4, DEFAULT_LR["full"], 2)
    assert not Path(run.output_dir).exists()  # removed after the run
    assert torch.equal(draws[0], draws[1])  # same seed, same dropout draws
    # the caller's global RNG is restored; another seed draws differently
    state = torch.get_rng_state()
    ev(300, 5)
    assert torch.equal(torch.get_rng_state(), state) and not torch.equal(draws[2], draws[0])
    # without --lr the intrinsic runs take the loop's per-d default (0.2·sqrt(1000/d))
    ev2, _ = make_evaluators(target, "said", TrainSettings(epochs=1))
    ev2(300, 4)
    assert seen[-1].lr is None and seen[-1].learning_rate == pytest.approx(0.2 * (1000 / 300) ** 0.5)
