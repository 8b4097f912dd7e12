"""``idcompress finetune``: the Accelerate loop, its CLI, resume, methods, options, bad input.

Mechanics (resume, methods, bad input) run on a tiny random BERT saved with MiniLM's tokenizer;
the end-to-end intrinsic run uses the real packaged MiniLM-L6 on a small local CSV.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from idcompress.cli.main import build_parser, main
from idcompress.training.options import DEFAULT_LR, DEMO_PRESET

POSITIVE = ["a wonderful, moving film", "great acting and a lovely story", "i loved every minute",
            "funny, warm and delightful", "a superb and clever movie", "beautiful and touching"]
NEGATIVE = ["a dull, boring mess", "terrible acting and an awful plot", "i hated every minute",
            "tedious, flat and lifeless", "a stupid and clumsy movie", "ugly and pointless"]
REPO = Path(__file__).resolve().parents[1]


def write_csv(path: Path, n: int, seed: int, header=("sentence", "label"), label_fn=None) -> Path:
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for i in range(n):
            y = i % 2
            text = f"{rng.choice(POSITIVE if y else NEGATIVE)} ({rng.randint(0, 999)})"
            w.writerow([text, label_fn(y) if label_fn else y])
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("data")
    return {"train": write_csv(d / "train.csv", 64, 1), "val": write_csv(d / "val.csv", 32, 2),
            "train48": write_csv(d / "train48.csv", 48, 3),
            "val16": write_csv(d / "val16.csv", 16, 4)}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, minilm_tokenizer) -> str:
    """A 2-layer random BERT (no head, with dropout) + MiniLM's tokenizer, as a local folder."""
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=minilm_tokenizer.vocab_size, hidden_size=16, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    model = BertModel(cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    folder = tmp_path_factory.mktemp("tiny-bert")
    model.save_pretrained(folder)
    minilm_tokenizer.save_pretrained(folder)
    return str(folder)


def tiny_args(model: str, data: dict, out: Path, *extra: str) -> list[str]:
    return ["finetune", "--model", model, "--train-file", str(data["train48"]),
            "--validation-file", str(data["val16"]), "--batch-size", "16", "--max-length", "16",
            "--dim", "200", "--output-dir", str(out), "--no-report", *extra]


def run_cli(argv: list[str]) -> int:
    return main([str(a) for a in argv])


def reload_and_score(model, val_csv: Path, tokenizer, batch_size: int, max_length: int) -> float:
    """Accuracy of ``model`` on ``val_csv``, computed here without the training loop."""
    from idcompress.data import load_task_data, make_collator, tokenize_dataset

    spec, dd = load_task_data("builtin/movie-sentiment", train_file=val_csv,
                              validation_file=val_csv)
    ds = tokenize_dataset(dd["validation"], spec, tokenizer, max_length=max_length)
    collate = make_collator(tokenizer)
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(ds), batch_size):
            batch = collate([ds[j] for j in range(i, min(i + batch_size, len(ds)))])
            logits = model(**batch).logits
            correct += int((logits.argmax(-1) == batch["labels"]).sum())
    return correct / len(ds)


# --- end to end --------------------------------------------------------------------------------


def test_cli_end_to_end_intrinsic_minilm(tmp_path, data, minilm_tokenizer, capsys):
    from idcompress.tuners import IntrinsicModel

    out = tmp_path / "run"
    rc = run_cli(["finetune", "--train-file", data["train"], "--validation-file", data["val"],
                  "--epochs", "1", "--batch-size", "16", "--max-length", "32", "--dim", "500",
                  "--output-dir", out])
    assert rc == 0
    summary = capsys.readouterr().out
    final = json.loads((out / "metrics.json").read_text())
    assert final["method"] == "intrinsic" and final["d"] == 500
    assert final["main_metric"] == "accuracy"
    assert set(final["metrics"]["validation"]) == {"accuracy", "f1"}
    assert final["score"] == final["metrics"]["validation"]["accuracy"]
    assert final["trainable_params"] == 500
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["score"] == final["score"]
    ckpt = out / "checkpoint"
    assert (ckpt / "adapter_config.json").is_file()
    assert (ckpt / "adapter_model.safetensors").is_file()
    size = sum(f.stat().st_size for f in ckpt.iterdir())
    assert final["checkpoint_bytes"] == size < 10_000
    assert final["compression_ratio"] == pytest.approx(final["base_bytes_fp32"] / size)
    assert final["base_bytes_fp32"] > 80_000_000  # MiniLM-L6 + head in fp32
    for word in ("accuracy", "compression", str(ckpt), "wall time"):
        assert word in summary
    # reloaded independently of the loop: the exact same validation accuracy
    model = IntrinsicModel.from_pretrained(ckpt)
    assert model.theta_d.abs().sum() > 0
    assert reload_and_score(model, data["val"], minilm_tokenizer, 16, 32) == final["score"]
    # the run ends with the geometry report on its validation inputs (base θ₀ vs tuned)
    geo = json.loads((out / "geometry" / "geometry.json").read_text())
    assert final["report"] == str(out / "geometry")
    assert geo["facts"]["d"] == 500 and len(geo["poolings"]["mean"]["linear_cka"]) == 7
    assert "cka" in summary


RESUME_COMMON = ["--epochs", "3", "--lr", "0.05"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data, tiny_model) -> Path:
    # 48 rows / batch 16 = 3 steps per epoch, 3 epochs; dropout on, so RNG restore matters
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    assert run_cli(tiny_args(tiny_model, data, out, *RESUME_COMMON)) == 0
    assert not (out / "geometry").exists()  # --no-report
    return out


@pytest.mark.parametrize("stop_at", [4, 3], ids=["mid-epoch", "epoch-boundary"])
def test_resume_reproduces_uninterrupted_run(tmp_path, data, tiny_model, uninterrupted, stop_at):
    common, full = RESUME_COMMON, uninterrupted
    part = tmp_path / "resumed"
    rc = run_cli(tiny_args(tiny_model, data, part, *common, "--save-every", "2",
                           "--stop-after-steps", stop_at))
    assert rc == 0
    assert not (part / "checkpoint").exists() and not (part / "metrics.json").exists()
    states = sorted(p.name for p in (part / "state").iterdir())
    assert states == [f"step_{stop_at:08d}"]  # older states pruned
    # the state holds θ_d, λ and the buffers, not the frozen base's parameters
    weights = load_file(str(part / "state" / states[0] / "model.safetensors"))
    assert {k for k in weights if "intrinsic" in k} == {
        "base_model.intrinsic_layer.intrinsic_theta_d.default", "base_model.intrinsic_layer.intrinsic_lambda.default"}
    assert not any(k.endswith(".weight") for k in weights)
    # epoch 1 was evaluated in both cases: a stop on an epoch's last step waits for its evaluation
    assert len((part / "metrics.jsonl").read_text().splitlines()) == 1

    assert run_cli(["finetune", "--output-dir", part, "--resume"]) == 0
    a = load_file(str(full / "checkpoint" / "adapter_model.safetensors"))
    b = load_file(str(part / "checkpoint" / "adapter_model.safetensors"))
    assert set(a) == {"theta_d", "said_lambda"} == set(b)
    assert a["theta_d"].abs().sum() > 0
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6)
    hist_a = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    hist_b = [json.loads(x) for x in (part / "metrics.jsonl").read_text().splitlines()]
    assert [(h["step"], h["score"]) for h in hist_a] == [(h["step"], h["score"]) for h in hist_b]
    assert [h["train_loss"] for h in hist_b] == pytest.approx([h["train_loss"] for h in hist_a],
                                                              abs=1e-6)


def test_resume_refuses_changed_options_and_missing_state(tmp_path, data, tiny_model, capsys):
    out = tmp_path / "run"
    assert run_cli(tiny_args(tiny_model, data, out, "--epochs", "2", "--save-every", "1",
                             "--stop-after-steps", "1")) == 0
    capsys.readouterr()
    assert run_cli(["finetune", "--output-dir", out, "--resume", "--lr", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "--lr" in err and "resume" in err
    empty = tmp_path / "empty"
    assert run_cli(tiny_args(tiny_model, data, empty, "--epochs", "1")) == 0
    capsys.readouterr()
    assert run_cli(["finetune", "--output-dir", empty, "--resume"]) == 2
    assert "no saved training state" in capsys.readouterr().err
    # a finished run is not overwritten by accident
    assert run_cli(tiny_args(tiny_model, data, empty, "--epochs", "1")) == 2
    assert "already holds a run" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["full", "lora"])
def test_full_and_lora_end_to_end(tmp_path, data, tiny_model, minilm_tokenizer, method):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / method
    assert run_cli(tiny_args(tiny_model, data, out, "--method", method, "--epochs", "1")) == 0
    final = json.loads((out / "metrics.json").read_text())
    assert final["method"] == method and final["d"] is None
    ckpt = out / "checkpoint"
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    if method == "full":
        assert final["trainable_params"] == final["base_params"]
        model = AutoModelForSequenceClassification.from_pretrained(ckpt)
        name = "bert.encoder.layer.0.attention.self.query.weight"
        moved = dict(model.named_parameters())[name] - dict(base.named_parameters())[name]
        assert moved.abs().max() > 0  # the saved weights are the trained ones
    else:
        from peft import PeftModel

        cfg = json.loads((ckpt / "adapter_config.json").read_text())
        assert cfg["peft_type"] == "LORA" and cfg["r"] == 8
        assert sorted(cfg["target_modules"]) == ["query", "value"]
        assert 0 < final["trainable_params"] < final["base_params"] / 10
        model = PeftModel.from_pretrained(base, ckpt)
        lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
        assert lora_b and all(p.abs().max() > 0 for p in lora_b)  # B starts at 0: it trained
    assert final["checkpoint_bytes"] == sum(f.stat().st_size for f in ckpt.rglob("*")
                                            if f.is_file())
    assert reload_and_score(model, data["val16"], minilm_tokenizer, 16, 16) == final["score"]


def test_regression_task_end_to_end(tmp_path, tiny_model):
    """STS-B schema (sentence pairs, float scores in [0, 5]): MSE head, Pearson/Spearman."""
    rng = random.Random(0)
    files = {}
    for split, n in (("train", 32), ("validation", 16)):
        files[split] = tmp_path / f"{split}.tsv"
        rows = ["sentence1\tsentence2\tlabel"] + [
            f"{rng.choice(POSITIVE)}\t{rng.choice(NEGATIVE)}\t{rng.uniform(0, 5):.2f}"
            for _ in range(n)]
        files[split].write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    assert run_cli(["finetune", "--task", "glue/stsb", "--model", tiny_model, "--train-file",
                    files["train"], "--validation-file", files["validation"], "--batch-size", "16",
                    "--max-length", "24", "--dim", "200", "--epochs", "1", "--output-dir",
                    out]) == 0
    final = json.loads((out / "metrics.json").read_text())
    assert final["main_metric"] == "pearson"
    assert set(final["metrics"]["validation"]) == {"pearson", "spearman"}
    cfg = json.loads((out / "checkpoint" / "adapter_config.json").read_text())
    assert cfg["problem_type"] == "regression" and cfg["num_labels"] == 1
    assert final["reload_score"] == final["score"]


def test_early_stop_stops_and_keeps_best(tmp_path, data, tiny_model):
    out = tmp_path / "run"
    # a learning rate too small to change any prediction: the score never improves
    assert run_cli(tiny_args(tiny_model, data, out, "--epochs", "5", "--lr", "1e-9",
                             "--early-stop", "2")) == 0
    final = json.loads((out / "metrics.json").read_text())
    hist = (out / "metrics.jsonl").read_text().splitlines()
    assert final["stopped_early"] is True and len(hist) == 3
    assert final["best_epoch"] == 1 and final["epochs_done"] == 3


def test_bf16_mixed_precision_intrinsic(tmp_path, data, tiny_model):
    """bf16 autocast (a fresh process: Accelerate fixes the precision once per process); the
    projection must still run in float32 and the reloaded checkpoint reproduce the score."""
    import os
    import subprocess
    import sys

    out = tmp_path / "bf16"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "idcompress",
           *tiny_args(tiny_model, data, out, "--epochs", "1", "--mixed-precision", "bf16")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = json.loads((out / "metrics.json").read_text())
    assert final["options"]["mixed_precision"] == "bf16"
    assert final["reload_score"] == final["score"]


# --- options: demo preset, YAML, flags ----------------------------------------------------------


def parse_options(argv: list[str]):
    from idcompress.cli.finetune import options_from_args

    return options_from_args(build_parser().parse_args(["finetune", *map(str, argv)]))


def test_no_arguments_run_the_demo_preset():
    opts = parse_options([])
    assert opts.task == "builtin/movie-sentiment" and opts.model == "minilm-l6"
    assert opts.method == "intrinsic" and opts.projection == "said"
    for k, v in DEMO_PRESET.items():
        assert getattr(opts, k) == v
    assert opts.learning_rate == pytest.approx(DEFAULT_LR["intrinsic"] * (1000 / opts.dim) ** 0.5)
    assert parse_options(["--dim", "1000"]).learning_rate == DEFAULT_LR["intrinsic"]
    assert parse_options(["--max-train-samples", "10"]).max_train_samples == 10
    glue = parse_options(["--task", "glue/sst2"])
    assert glue.max_train_samples is None and glue.max_length == 128
    assert parse_options(["--method", "full"]).learning_rate == DEFAULT_LR["full"]


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "glue").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_glue_config_loads(path):
    opts = parse_options(["--config", path])
    assert opts.task == f"glue/{path.stem}"
    assert opts.max_train_samples is None  # a data source is named: no demo preset
    assert opts.lr is None  # the per-d default applies
    assert opts.learning_rate == pytest.approx(0.2 * (1000 / opts.dim) ** 0.5)


def test_yaml_config_and_flag_override(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("task: glue/rte\nmethod: intrinsic\ndim: 700\nlr: 2e-3\nmixed_precision: no\n"
                   "text-columns: [premise, hypothesis]\neval_every_epoch: false\n")
    opts = parse_options(["--config", cfg])
    assert (opts.task, opts.dim, opts.lr, opts.mixed_precision) == ("glue/rte", 700, 2e-3, "no")
    assert opts.text_columns == ["premise", "hypothesis"] and opts.eval_every_epoch is False
    over = parse_options(["--config", cfg, "--dim", "300", "--lr", "0.1", "--eval-every-epoch"])
    assert (over.dim, over.lr, over.eval_every_epoch, over.task) == (300, 0.1, True, "glue/rte")
    # the YAML lr was for the intrinsic method: switching method falls back to its default
    full = parse_options(["--config", cfg, "--method", "full"])
    assert full.lr is None and full.learning_rate == DEFAULT_LR["full"]
    assert parse_options(["--config", cfg, "--method", "full", "--lr", "1e-5"]).lr == 1e-5


@pytest.mark.parametrize("text, needle", [
    ("dim: 100\nlearning_rate: 0.1\n", "unknown key 'learning_rate'"),
    ("epochs: three\n", "'epochs'='three' must be an integer"),
    ("- 1\n- 2\n", "mapping"),
    ("dim: [1\n", "not valid YAML"),
])
def test_bad_yaml_is_a_clear_error(tmp_path, capsys, text, needle):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    assert main(["finetune", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert needle in err and str(cfg) in err


# --- bad input: each a clear error before any training starts -----------------------------------


def _bad_inputs(tmp: Path, data: dict) -> dict[str, tuple[list[str], list[str]]]:
    cols = write_csv(tmp / "cols.csv", 8, 0, header=("text", "label"))
    labels = write_csv(tmp / "labels.csv", 8, 0, label_fn=lambda y: 7 if y else 0)
    empty = tmp / "empty.csv"
    empty.write_text("sentence,label\n")
    json_named_csv = tmp / "rows.csv"
    json_named_csv.write_text('{"sentence": "good", "label": 1}\n')
    blocker = tmp / "a-file"
    blocker.write_text("x")
    val = str(data["val16"])
    return {  # name: (flags replacing the defaults, words the message must contain)
        "unknown task": (["--task", "glue/nope"], ["glue/nope", "unknown", "glue/sst2",
                                                   "builtin/movie-sentiment"]),
        "missing column": (["--train-file", cols, "--validation-file", val],
                           [str(cols), "missing column", "sentence"]),
        "label outside": (["--train-file", labels, "--validation-file", val],
                          [str(labels), "label values", "7"]),
        "empty split": (["--train-file", data["train48"], "--validation-file", empty],
                        [str(empty), "no rows"]),
        "content vs extension": (["--train-file", json_named_csv, "--validation-file", val],
                                 [str(json_named_csv), "looks like JSON"]),
        "dim larger than D": (["--dim", "10000000"], ["--dim 10000000", "larger than D"]),
        "said dim too small": (["--dim", "20"], ["--dim 20", "d > m"]),
        "unwritable output": (["--output-dir", blocker / "sub"], [str(blocker / "sub"),
                                                                  "not writable"]),
    }


@pytest.mark.parametrize("case", ["unknown task", "missing column", "label outside", "empty split",
                                  "content vs extension", "dim larger than D",
                                  "said dim too small", "unwritable output"])
def test_bad_input_is_a_clear_error_before_training(tmp_path, data, tiny_model, capsys, case):
    flags, words = _bad_inputs(tmp_path, data)[case]
    out = tmp_path / "out"
    argv = tiny_args(tiny_model, data, out, "--epochs", "1")
    for i in range(0, len(flags), 2):  # replace a default flag, or append a new one
        if flags[i] in argv:
            argv[argv.index(flags[i]) + 1] = flags[i + 1]
        else:
            argv += flags[i:i + 2]
    if flags[0] == "--task":
        argv = [a for a in argv if a not in ("--train-file", "--validation-file",
                                             str(data["train48"]), str(data["val16"]))]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("idcompress finetune: error:")
    for w in words:
        assert str(w) in err, (w, err)
    # nothing started: no options, metrics, state or checkpoint written
    assert not out.exists() or not any(out.iterdir())


# --- multi-process --------------------------------------------------------------------------------


def test_accelerate_launch_two_processes(tmp_path, data, tiny_model):
    """``accelerate launch`` with 2 CPU processes (gloo DDP): each process sees half the batches.

    Not marked slow (~30 s): the README's CPU multi-process command must keep working, and it
    broke once without any other test noticing (both ranks ran as the main process).
    """
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
           "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "idcompress", *tiny_args(tiny_model, data, out, "--epochs", "2",
                                          "--batch-size", "8")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "processes: 2 (world size" in proc.stdout + proc.stderr
    final = json.loads((out / "metrics.json").read_text())
    assert final["steps"] == 6  # 48 rows / (8 per process × 2 processes) × 2 epochs
    assert final["reload_score"] == final["score"]
