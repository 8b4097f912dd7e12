"""``idcompress info`` and ``idcompress merge``: values, atomic output, bad input."""

import json
import os
import subprocess
import sys

import pytest
import torch

from idcompress import IntrinsicConfig, IntrinsicModel, get_intrinsic_model, save_checkpoint
from idcompress.cli.main import main
from idcompress.models.loading import load_base_model

LABELS = ["negative", "positive"]


@pytest.fixture
def save_tuned(make_tuned):
    """``save_tuned(path, d=300, vector_dtype="float32", single_file=False, **config)``: a tuned
    model (labelled), saved at ``path`` with idcompress's writer; returns the model."""

    def save(path, d=300, vector_dtype="float32", single_file=False, **kw):
        model = make_tuned(d=d, label_names=LABELS, vector_dtype=vector_dtype, **kw)
        save_checkpoint(model, path, single_file=single_file)
        return model

    return save


def run_cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


# --------------------------------------------------------------------------------------------
# info
@pytest.mark.parametrize("vector_dtype,bits", [("float32", 32), ("float16", 16), ("bfloat16", 16)])
@pytest.mark.parametrize("single_file", [False, True])
def test_info_values(base_dir, save_tuned, tmp_path, capsys, vector_dtype, bits, single_file):
    path = tmp_path / ("c.idc.safetensors" if single_file else "ckpt")
    model = save_tuned(path, vector_dtype=vector_dtype, single_file=single_file)
    assert path.is_dir() is not single_file
    files = [path] if single_file else [path / "adapter_config.json", path / "adapter_model.safetensors"]
    nbytes = sum(os.path.getsize(f) for f in files)
    D = sum(p.numel() for p in load_base_model(str(base_dir), "SEQ_CLS", num_labels=2).parameters())
    rc, out, _ = run_cli(capsys, "info", path, "--json")
    assert rc == 0
    info = json.loads(out)
    assert info["checkpoint_bytes"] == nbytes
    assert info["D"] == D and info["base_fp32_bytes"] == 4 * D
    assert info["compression_ratio"] == pytest.approx(4 * D / nbytes)
    assert info["stored_numbers"] == 300 and info["bits_per_number"] == bits
    assert info["mdl_bits"] == 300 * bits
    assert info["theta_d_numbers"] + info["said_lambda_numbers"] == 300
    assert info["said_lambda_numbers"] == model.layout.m
    assert info["vector_dtype"] == vector_dtype and info["label_names"] == LABELS
    assert (info["projection"], info["d"], info["seed"]) == ("said", 300, 0)
    assert info["base_model"] == str(base_dir) and info["revision"] is None
    assert info["base_fingerprint"] == model.intrinsic_config.base_fingerprint
    assert info["rng"] == model.intrinsic_config.rng and info["num_tensors"] == model.layout.m
    assert "all parameters" in info["base_fp32_counts"]
    rc, text, _ = run_cli(capsys, "info", path)
    assert rc == 0
    for fragment in (f"{nbytes:,} bytes", f"{300 * bits:,} bits (MDL)", f"D={D:,}", info["base_fingerprint"],
                     "negative, positive", f"{4 * D / nbytes:,.1f}x"):
        assert fragment in text, fragment


def test_info_float16_halves_the_vector(save_tuned, tmp_path, capsys):
    sizes = {}
    for dt in ("float32", "float16"):
        save_tuned(tmp_path / dt, d=1000, vector_dtype=dt)
        sizes[dt] = json.loads(run_cli(capsys, "info", tmp_path / dt, "--json")[1])["checkpoint_bytes"]
    # 1000 numbers × 2 bytes saved; the config differs only by the dtype's name
    assert sizes["float32"] - sizes["float16"] == pytest.approx(2000, abs=16)


def test_info_reads_files_only_and_states_partial_layouts(save_tuned, tiny_bert, tmp_path, capsys, monkeypatch):
    save_tuned(tmp_path / "ckpt", exclude=["bert.embeddings.*"])

    def no_model(*a, **k):
        raise AssertionError("info must not build a model")

    monkeypatch.setattr("idcompress.models.loading.load_base_model", no_model)
    monkeypatch.setattr(IntrinsicModel, "__init__", no_model)
    monkeypatch.setattr("peft.PeftModel.__init__", no_model)
    rc, out, _ = run_cli(capsys, "info", tmp_path / "ckpt", "--json")
    assert rc == 0
    info = json.loads(out)
    embeddings = sum(p.numel() for n, p in tiny_bert().named_parameters() if n.startswith("bert.embeddings."))
    assert info["exclude"] == ["bert.embeddings.*"]
    assert info["D"] == sum(p.numel() for p in tiny_bert().parameters()) - embeddings
    assert "tuned parameters only" in info["base_fp32_counts"]


# --------------------------------------------------------------------------------------------
# bad input
def test_missing_or_broken_checkpoint(tmp_path, capsys):
    rc, _, err = run_cli(capsys, "info", tmp_path / "nope")
    assert rc == 2 and "no checkpoint at" in err and "nope" in err
    rc, _, err = run_cli(capsys, "merge", tmp_path / "nope", "--out", tmp_path / "out")
    assert rc == 2 and "no checkpoint at" in err
    assert not (tmp_path / "out").exists()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "adapter_config.json").write_text("{not json")
    (tmp_path / "broken" / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    rc, _, err = run_cli(capsys, "info", tmp_path / "broken")
    assert rc == 2 and "invalid JSON" in err


def test_merge_refuses_a_non_empty_out_unless_overwrite(save_tuned, tmp_path, capsys):
    save_tuned(tmp_path / "ckpt")
    out = tmp_path / "merged"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc, _, err = run_cli(capsys, "merge", tmp_path / "ckpt", "--out", out)
    assert rc == 2 and "not empty" in err and "--overwrite" in err
    assert (out / "keep.txt").read_text() == "mine"
    rc, msg, _ = run_cli(capsys, "merge", tmp_path / "ckpt", "--out", out, "--overwrite")
    assert rc == 0 and str(out) in msg
    assert {"config.json", "model.safetensors"} <= {p.name for p in out.iterdir()}
    assert not (out / "keep.txt").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left behind
    (tmp_path / "file").write_text("x")
    rc, _, err = run_cli(capsys, "merge", tmp_path / "ckpt", "--out", tmp_path / "file", "--overwrite")
    assert rc == 2 and "is a file" in err


def test_merge_force_on_a_different_base(base_dir, save_tuned, tiny_bert, tmp_path, capsys):
    model = save_tuned(tmp_path / "ckpt")
    other = tiny_bert(seed=7).bert  # the base folder changed after tuning
    other.save_pretrained(base_dir)
    rc, _, err = run_cli(capsys, "merge", tmp_path / "ckpt", "--out", tmp_path / "m1")
    assert rc == 2 and err.count("sha256:") == 2 and "--force" in err
    assert model.intrinsic_config.base_fingerprint in err
    assert not (tmp_path / "m1").exists()
    rc, _, err = run_cli(capsys, "merge", tmp_path / "ckpt", "--out", tmp_path / "m1", "--force")
    assert rc == 0 and "WARNING" in err and "DIFFERENT BASE" in err
    assert (tmp_path / "m1" / "model.safetensors").exists()


LOAD_WITHOUT_IDCOMPRESS = """
import json, sys
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
path = sys.argv[1]
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForSequenceClassification.from_pretrained(path).eval()
batch = tok(["a wonderful film", "a dull mess"], return_tensors="pt", padding=True)
with torch.no_grad():
    logits = model(**batch).logits
assert not any(m == "idcompress" or m.startswith("idcompress.") for m in sys.modules)
print(json.dumps({"logits": logits.tolist(), "id2label": model.config.id2label}))
"""


def test_merge_minilm_loads_with_plain_transformers(tmp_path, capsys, minilm_tokenizer):
    base = load_base_model("minilm-l6", "SEQ_CLS", num_labels=2, label_names=LABELS)
    model = get_intrinsic_model(base, IntrinsicConfig(
        d=1000, projection="said", base_model_name_or_path="minilm-l6", task_type="SEQ_CLS",
        num_labels=2, label_names=LABELS))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.theta_d.copy_(torch.randn(model.theta_d.shape, generator=g))
    model.save_pretrained(tmp_path / "ckpt")
    batch = minilm_tokenizer(["a wonderful film", "a dull mess"], return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = model.eval()(**batch).logits
    rc, _, err = run_cli(capsys, "merge", tmp_path / "ckpt", "--out", tmp_path / "merged")
    assert rc == 0, err
    env = {**os.environ, "PYTHONPATH": ""}
    proc = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_IDCOMPRESS, str(tmp_path / "merged")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    torch.testing.assert_close(torch.tensor(result["logits"]), expected, rtol=0, atol=1e-5)
    assert not torch.allclose(expected, expected.flip(0))  # distinct sentences, distinct logits
    assert list(result["id2label"].values()) == LABELS
