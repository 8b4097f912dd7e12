"""The checkpoint format: round trips, sizes, and every kind of bad input."""

import json
import pickle
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from idcompress import IntrinsicConfig, IntrinsicModel, get_intrinsic_model, save_checkpoint
from idcompress.checkpoint import load_checkpoint_files
from idcompress.checkpoint.fingerprint import FingerprintMismatchError
from idcompress.checkpoint.integrity import checkpoint_digest
from idcompress.models.loading import load_base_model

ADAPTER_FILES = ["adapter_config.json", "adapter_model.safetensors"]


def _files(path):
    return sorted(p.name for p in Path(path).iterdir())


@pytest.mark.parametrize("writer", ["idcompress", "peft"])
@pytest.mark.parametrize("projection", ["said", "fastfood", "sparse", "dense"])
def test_round_trip_directory(make_tuned, logits, tmp_path, projection, writer):
    model = make_tuned(projection)
    before = logits(model)
    if writer == "idcompress":
        assert save_checkpoint(model, tmp_path / "ckpt") == tmp_path / "ckpt"
        assert _files(tmp_path / "ckpt") == ADAPTER_FILES
    else:  # PEFT's own writer adds its model card
        model.save_pretrained(tmp_path / "ckpt")
        assert _files(tmp_path / "ckpt") == ["README.md", *ADAPTER_FILES]
    cfg = json.loads((tmp_path / "ckpt" / "adapter_config.json").read_text())
    for field in ("peft_type", "task_type", "base_model_name_or_path", "revision", "d", "projection", "seed",
                  "rng", "layout_digest", "D", "num_tensors", "include", "exclude", "init_new",
                  "base_fingerprint", "vector_dtype", "idcompress_version", "label_names"):
        assert field in cfg, field
    assert cfg["base_fingerprint"].startswith("sha256:")
    tensors = load_file(tmp_path / "ckpt" / "adapter_model.safetensors")
    assert sum(t.numel() for t in tensors.values()) == 300  # nothing of size D
    loaded = IntrinsicModel.from_pretrained(tmp_path / "ckpt")
    torch.testing.assert_close(logits(loaded), before, rtol=0, atol=1e-6)


def test_round_trip_single_file(make_tuned, logits, tmp_path):
    model = make_tuned()
    path = save_checkpoint(model, tmp_path / "shared.idc.safetensors", single_file=True)
    assert _files(tmp_path) == ["base", "shared.idc.safetensors"]
    torch.testing.assert_close(logits(IntrinsicModel.from_pretrained(path)), logits(model), rtol=0, atol=1e-6)
    # the tuner's writer is the same one
    again = load_checkpoint_files(model.base_model.save_pretrained(tmp_path / "again.idc.safetensors", single_file=True))
    first = load_checkpoint_files(path)
    assert (again.config, again.layout_names) == (first.config, first.layout_names)
    assert torch.equal(again.theta_d, first.theta_d) and torch.equal(again.said_lambda, first.said_lambda)
    (tmp_path / "again.idc.safetensors").unlink()
    with pytest.raises(ValueError, match=r"must be named \*\.idc\.safetensors"):
        save_checkpoint(model, tmp_path / "shared.safetensors", single_file=True)
    assert not (tmp_path / "shared.safetensors").exists()


@pytest.mark.parametrize("dtype,bytes_per", [("float16", 2), ("bfloat16", 2), ("float32", 4)])
@pytest.mark.parametrize("writer", ["idcompress", "peft"])
def test_vector_dtype(make_tuned, tmp_path, dtype, bytes_per, writer):
    model = make_tuned(vector_dtype=dtype)
    save_checkpoint(model, tmp_path / "c") if writer == "idcompress" else model.save_pretrained(tmp_path / "c")
    tensors = load_file(tmp_path / "c" / "adapter_model.safetensors")
    for k in ("theta_d", "said_lambda"):
        assert tensors[k].dtype == getattr(torch, dtype) and tensors[k].element_size() == bytes_per
    loaded = IntrinsicModel.from_pretrained(tmp_path / "c")
    assert loaded.theta_d.dtype == torch.float32  # computed in float32 whatever it is stored in
    torch.testing.assert_close(loaded.theta_d, model.theta_d.to(getattr(torch, dtype)).float())
    torch.testing.assert_close(loaded.said_lambda, model.said_lambda.to(getattr(torch, dtype)).float())


def test_minilm_checkpoint_is_tiny(minilm_classifier, tmp_path):
    minilm_classifier._idcompress_new_keys = ["classifier.bias", "classifier.weight"]
    model = get_intrinsic_model(minilm_classifier, IntrinsicConfig(d=1000, projection="fastfood", base_model_name_or_path="minilm-l6",
                                                                   task_type="SEQ_CLS", num_labels=2))
    save_checkpoint(model, tmp_path / "c")
    assert _files(tmp_path / "c") == ADAPTER_FILES
    size = sum(p.stat().st_size for p in (tmp_path / "c").iterdir())
    assert size <= 8 * 1024, size
    assert model.layout.D * 4 / size > 10_000
    # PEFT's writer: the same two files (and its model card, which is no part of the checkpoint)
    model.save_pretrained(tmp_path / "p")
    assert sum((tmp_path / "p" / f).stat().st_size for f in ADAPTER_FILES) <= size


# ------------------------------------------------------------------------------------------ bad input
def _snapshot(path: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def saved(make_tuned, tmp_path):
    """``saved(**kw)``: a tuned model's checkpoint (idcompress's writer) at ``tmp_path/ckpt``."""

    def save(**kw):
        return save_checkpoint(make_tuned(**kw), tmp_path / "ckpt")

    return save


def _expect_refusal(path, match, **kw):
    before = _snapshot(path.parent)
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        IntrinsicModel.from_pretrained(path, **kw)
    assert _snapshot(path.parent) == before  # nothing written or changed on disk


def _reseal(ckpt):
    """Record the digest of the edited files, as a buggy or hostile writer would: the checks
    below the integrity digest must hold on their own."""
    p = ckpt / "adapter_config.json"
    cfg = json.loads(p.read_text())
    cfg["digest"] = checkpoint_digest(cfg, load_file(ckpt / "adapter_model.safetensors"))
    p.write_text(json.dumps(cfg))


def _edit_config(ckpt, **changes):
    p = ckpt / "adapter_config.json"
    cfg = json.loads(p.read_text())
    cfg.update(changes)
    p.write_text(json.dumps(cfg))
    _reseal(ckpt)


def _edit_tensors(ckpt, fn):
    p = ckpt / "adapter_model.safetensors"
    tensors = load_file(p)
    fn(tensors)
    save_file(tensors, p)
    _reseal(ckpt)


def test_missing_files(saved, make_tuned, tmp_path):
    ckpt = saved()
    (ckpt / "adapter_config.json").unlink()
    _expect_refusal(ckpt, "missing adapter_config.json")
    ckpt2 = tmp_path / "second"
    save_checkpoint(make_tuned(), ckpt2)
    (ckpt2 / "adapter_model.safetensors").unlink()
    _expect_refusal(ckpt2, "missing adapter_model.safetensors")


def test_truncated_safetensors(saved):
    ckpt = saved()
    p = ckpt / "adapter_model.safetensors"
    p.write_bytes(p.read_bytes()[:-100])
    _expect_refusal(ckpt, "not a valid safetensors file")


def test_pickle_renamed_is_never_unpickled(saved, tmp_path):
    ckpt = saved()
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (ckpt / "adapter_model.safetensors").write_bytes(pickle.dumps(Evil(), protocol=4))
    _expect_refusal(ckpt, "refusing to unpickle")
    assert not marker.exists()
    torch.save({"theta_d": torch.zeros(3)}, ckpt / "adapter_model.safetensors")  # zip-based torch file
    _expect_refusal(ckpt, "refusing to unpickle")


def test_vector_length_nan_and_dtype(saved, make_tuned):
    ckpt = saved()
    _edit_tensors(ckpt, lambda t: t.update(theta_d=t["theta_d"][:-1].contiguous()))
    _expect_refusal(ckpt, r"tensor 'theta_d' has shape \(\d+,\), expected")
    save_checkpoint(make_tuned(), ckpt, overwrite=True)
    _edit_tensors(ckpt, lambda t: t["theta_d"].__setitem__(3, float("nan")))
    _expect_refusal(ckpt, "NaN/Inf")
    save_checkpoint(make_tuned(), ckpt, overwrite=True)
    _edit_tensors(ckpt, lambda t: t["said_lambda"].__setitem__(0, float("inf")))
    _expect_refusal(ckpt, "said_lambda.*NaN/Inf")
    save_checkpoint(make_tuned(), ckpt, overwrite=True)
    _edit_tensors(ckpt, lambda t: t.update(theta_d=t["theta_d"].double()))
    _expect_refusal(ckpt, "'theta_d' has dtype F64")
    save_checkpoint(make_tuned(), ckpt, overwrite=True)
    _edit_tensors(ckpt, lambda t: t.update(theta_d=t["theta_d"].to(torch.int32)))
    _expect_refusal(ckpt, "'theta_d' has dtype I32; checkpoints store float32")


def test_config_errors(saved):
    ckpt = saved()
    good = (ckpt / "adapter_config.json").read_text()
    cases = [
        ({"projection": "wavelet"}, "projection='wavelet' is unknown"),
        ({"rng": "idc-fmix32x2/99"}, "comes from a newer idcompress"),
        ({"rng": "mt19937/1"}, "not a generator this idcompress knows"),
        ({"d": "300"}, "d must be a positive integer"),
        ({"seed": 1.5}, "seed must be a non-negative integer"),
        ({"include": 3}, "include must be a list"),
        ({"label_names": "neg,pos"}, "label_names must be a list"),
    ]
    for change, match in cases:
        (ckpt / "adapter_config.json").write_text(good)
        _edit_config(ckpt, **change)
        _expect_refusal(ckpt, match)
    (ckpt / "adapter_config.json").write_text("{not json")
    _expect_refusal(ckpt, "invalid JSON")


def test_unknown_fields_warn_but_load(saved):
    ckpt = saved()
    _edit_config(ckpt, quantum_flux=True)
    with pytest.warns(UserWarning, match="quantum_flux"):
        model = IntrinsicModel.from_pretrained(ckpt)
    assert model.intrinsic_config.extra == {"quantum_flux": True}


def test_fingerprint_mismatch(saved, base_dir, tmp_path):
    ckpt = saved()
    other = load_base_model(str(base_dir), "SEQ_CLS", num_labels=2)
    with torch.no_grad():
        other.bert.encoder.layer[0].output.dense.weight[0, 0] += 1e-3
    other.save_pretrained(tmp_path / "other")
    fp = json.loads((ckpt / "adapter_config.json").read_text())["base_fingerprint"]
    with pytest.raises(FingerprintMismatchError, match="fingerprint") as e:
        IntrinsicModel.from_pretrained(ckpt, base_model=load_base_model(str(tmp_path / "other"), "SEQ_CLS", num_labels=2))
    msg = str(e.value)
    # both digests, the base at hand (not the one the checkpoint names) and the checkpoint
    assert fp in msg and msg.count("sha256:") == 2 and str(tmp_path / "other") in msg and str(ckpt) in msg
    assert f"{str(base_dir)!r}" not in msg
    with pytest.warns(UserWarning, match="LOADING ONTO A DIFFERENT BASE"):
        IntrinsicModel.from_pretrained(ckpt, base_model=load_base_model(str(tmp_path / "other"), "SEQ_CLS", num_labels=2),
                                       allow_fingerprint_mismatch=True)


def test_layout_mismatch_names_tensors(saved):
    ckpt = saved()
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32, num_labels=2)
    with pytest.raises(ValueError, match=r"missing from the base: \['bert\.encoder\.layer\.1\."):
        IntrinsicModel.from_pretrained(ckpt, base_model=BertForSequenceClassification(cfg))


def test_overwrite_rules_and_atomic_save(make_tuned, tmp_path, monkeypatch):
    model = make_tuned()
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_checkpoint(model, target)
    assert _files(target) == ["notes.txt"]
    save_checkpoint(model, target, overwrite=True)
    assert _files(target) == ADAPTER_FILES

    import idcompress.checkpoint.format as fmt

    def crash(*a, **k):
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(fmt, "safetensors_bytes", crash)  # the bytes of the safetensors file
    before = _snapshot(tmp_path)
    for path, single in ((tmp_path / "fresh", False), (tmp_path / "one.idc.safetensors", True), (target, False)):
        with pytest.raises(KeyboardInterrupt):
            save_checkpoint(model, path, single_file=single, overwrite=True)
        assert _snapshot(tmp_path) == before  # nothing partial, no temp files, old checkpoint intact


def test_load_checkpoint_files_reads_without_model(saved):
    ckpt = saved(projection="fastfood", d=77)
    files = load_checkpoint_files(ckpt)
    assert files.config == json.loads((ckpt / "adapter_config.json").read_text())
    assert files.config["d"] == 77 and files.theta_d.shape == (77,) and files.said_lambda is None
    assert files.theta_d.dtype == torch.float32 and files.source == str(ckpt)
    assert files.layout_names[0] == "bert.embeddings.word_embeddings.weight"
    assert len(files.layout_names) == files.config["num_tensors"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_checkpoint_files(ckpt)


def test_saved_files_follow_the_umask(make_tuned, tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        model = make_tuned()
        save_checkpoint(model, tmp_path / "c")
        save_checkpoint(model, tmp_path / "one.idc.safetensors", single_file=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "c").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "c" / "adapter_model.safetensors").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "one.idc.safetensors").stat().st_mode) == 0o644
