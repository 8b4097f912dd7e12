"""PEFT compatibility: the ``INTRINSIC`` method is PEFT's own (``IntrinsicConfig`` is a ``PeftConfig``,
``IntrinsicModel`` a tuner), so ``peft.get_peft_model`` and ``peft.PeftModel.from_pretrained``
build and load idcompress models."""

import dataclasses
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from idcompress import IntrinsicConfig, IntrinsicModel, get_intrinsic_model, save_checkpoint
from idcompress.checkpoint.fingerprint import FingerprintMismatchError
from idcompress.models.loading import load_base_model
from idcompress.tuners.registration import register

peft = pytest.importorskip("peft")
from peft import PeftConfig, PeftModel, PeftModelForSequenceClassification, get_peft_model  # noqa: E402
from peft.mapping import (  # noqa: E402
    PEFT_TYPE_TO_CONFIG_MAPPING,
    PEFT_TYPE_TO_PREFIX_MAPPING,
    PEFT_TYPE_TO_TUNER_MAPPING,
)
from peft.utils.peft_types import PeftType  # noqa: E402
from transformers import AutoModelForSequenceClassification  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.set_verbosity_error()
ROOT = Path(__file__).resolve().parents[1]
THETA_D = "base_model.intrinsic_layer.intrinsic_theta_d.default"
LAMBDA = "base_model.intrinsic_layer.intrinsic_lambda.default"


def fresh_base(base_dir, num_labels=2):
    return AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=num_labels)


@pytest.fixture
def save_tuned(make_tuned):
    """``save_tuned(path, projection="said", vector_dtype="float32", writer="peft")``: a tuned
    model's checkpoint, written by PEFT's ``save_pretrained`` or idcompress's ``save_checkpoint``."""

    def save(path, projection="said", vector_dtype="float32", writer="peft") -> Path:
        model = make_tuned(projection, seed=1, vector_dtype=vector_dtype)
        if writer == "peft":
            model.save_pretrained(path)
        else:
            save_checkpoint(model, path)
        return path

    return save


# --------------------------------------------------------------------------------------------
# registration
def test_peft_type_and_registry_entries():
    register(IntrinsicConfig, IntrinsicModel)
    register(IntrinsicConfig, IntrinsicModel)  # idempotent
    assert PeftType("INTRINSIC") is PeftType.INTRINSIC
    assert PeftType["INTRINSIC"] is PeftType.INTRINSIC and "INTRINSIC" in list(PeftType)
    assert list(PeftType).count(PeftType.INTRINSIC) == 1 and list(PeftType)[-1] is PeftType.INTRINSIC
    assert PeftType.LORA.value == "LORA" and PeftType("LORA") is PeftType.LORA
    assert PEFT_TYPE_TO_CONFIG_MAPPING["INTRINSIC"] is IntrinsicConfig
    assert PEFT_TYPE_TO_TUNER_MAPPING[PeftType.INTRINSIC] is IntrinsicModel
    assert PEFT_TYPE_TO_PREFIX_MAPPING[PeftType.INTRINSIC] == "intrinsic_"


def test_the_added_peft_type_is_a_real_enum_member():
    member = PeftType.INTRINSIC
    assert isinstance(member, PeftType) and isinstance(member, str)
    assert member == "INTRINSIC" and member.value == "INTRINSIC" and member.name == "INTRINSIC"
    assert json.dumps(member) == '"INTRINSIC"' and {member: 1}["INTRINSIC"] == 1
    assert IntrinsicConfig(d=10).peft_type is member


def test_import_never_imports_peft_and_registers_when_peft_is_imported():
    code = """
import sys
import idcompress
assert "peft" not in sys.modules, "importing idcompress imported peft"
from transformers.utils import is_peft_available
assert is_peft_available() and "peft" not in sys.modules  # a probe must not consume the hook
import peft
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
from peft.utils.peft_types import PeftType
assert PEFT_TYPE_TO_CONFIG_MAPPING[PeftType.INTRINSIC] is idcompress.IntrinsicConfig
assert PEFT_TYPE_TO_TUNER_MAPPING[PeftType.INTRINSIC] is idcompress.IntrinsicModel
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_registers_at_once_when_peft_is_already_imported():
    code = """
import sys
import peft
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
assert "INTRINSIC" not in PEFT_TYPE_TO_CONFIG_MAPPING
import idcompress
from idcompress._peft_hook import _PeftImportHook
assert not any(isinstance(f, _PeftImportHook) for f in sys.meta_path), "a hook was left waiting"
assert PEFT_TYPE_TO_CONFIG_MAPPING["INTRINSIC"].__name__ == "IntrinsicConfig"
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_config_is_a_peft_config_and_writes_every_checkpoint_field():
    assert issubclass(IntrinsicConfig, PeftConfig)
    cfg = IntrinsicConfig(d=50, projection="fastfood", seed=3, task_type="IMAGE_CLS", label_names=["a", "b"])
    assert cfg.task_type == "IMAGE_CLS"  # PEFT has no IMAGE_CLS; idcompress keeps it
    back = cfg.to_dict()
    assert back["task_type"] == "IMAGE_CLS" and back["peft_type"] == "INTRINSIC" and back["seed"] == 3
    runtime = {"inference_mode", "auto_mapping", "peft_version", "allow_fingerprint_mismatch"}
    assert set(back) == {f.name for f in dataclasses.fields(IntrinsicConfig)} - runtime
    assert set(back) == set(IntrinsicConfig.checkpoint_fields())
    assert IntrinsicConfig.from_dict(back).to_dict() == back
    assert json.loads(cfg.to_json_string()) == back
    own = {f.name for f in dataclasses.fields(IntrinsicConfig)} - {f.name for f in dataclasses.fields(PeftConfig)}
    assert "d" in own and all(f.kw_only for f in dataclasses.fields(IntrinsicConfig) if f.name in own)
    with pytest.raises(ValueError, match="d must be a positive integer, got d=None"):
        IntrinsicConfig()
    with pytest.raises(ValueError, match="d=0"):
        IntrinsicConfig(d=0)
    with pytest.raises(ValueError, match="projection='nope'"):
        IntrinsicConfig(d=10, projection="nope")
    with pytest.raises(ValueError, match="task_type='NOPE' is unknown"):
        IntrinsicConfig(d=10, task_type="NOPE")


def test_task_type_picks_peft_model_class(base_dir):
    seq = get_intrinsic_model(fresh_base(base_dir), IntrinsicConfig(d=100, task_type="SEQ_CLS"))
    assert type(seq) is PeftModelForSequenceClassification and isinstance(seq.base_model, IntrinsicModel)
    plain = get_intrinsic_model(fresh_base(base_dir), IntrinsicConfig(d=100, task_type="IMAGE_CLS"))
    assert type(plain) is PeftModel
    with pytest.raises(ValueError, match="already an idcompress model"):
        get_intrinsic_model(plain, IntrinsicConfig(d=100))


# --------------------------------------------------------------------------------------------
# loading
@pytest.mark.parametrize("writer", ["peft", "idcompress"])
@pytest.mark.parametrize("projection,vector_dtype", [("said", "float32"), ("sparse", "float16")])
def test_peft_loads_the_same_model(base_dir, save_tuned, logits, tmp_path, projection, vector_dtype, writer):
    ckpt = save_tuned(tmp_path / "ckpt", projection, vector_dtype=vector_dtype, writer=writer)
    ref = IntrinsicModel.from_pretrained(ckpt, base_model=fresh_base(base_dir))
    pm = PeftModel.from_pretrained(fresh_base(base_dir), str(ckpt))
    assert type(pm) is type(ref) is PeftModelForSequenceClassification
    assert isinstance(pm.base_model, IntrinsicModel)
    assert torch.equal(pm.theta_d, ref.theta_d)
    if projection == "said":
        assert torch.equal(pm.said_lambda, ref.said_lambda)
    assert pm.theta_d.dtype == torch.float32 and not pm.theta_d.requires_grad
    out = logits(pm)
    assert torch.equal(out, logits(ref))
    assert not torch.allclose(out, logits(ref.unload()), atol=1e-5)  # the vector matters


def test_is_trainable_and_low_cpu_mem_usage(base_dir, save_tuned, logits, tmp_path):
    ckpt = save_tuned(tmp_path / "ckpt")
    ref = logits(IntrinsicModel.from_pretrained(ckpt, base_model=fresh_base(base_dir)))
    pm = PeftModel.from_pretrained(fresh_base(base_dir), str(ckpt), is_trainable=True, low_cpu_mem_usage=True)
    assert {n for n, p in pm.named_parameters() if p.requires_grad} == {THETA_D, LAMBDA}
    assert not pm.theta_d.is_meta
    assert torch.equal(logits(pm), ref)
    # IntrinsicModel.from_pretrained: trainable by default, frozen on request
    assert IntrinsicModel.from_pretrained(ckpt, base_model=fresh_base(base_dir)).theta_d.requires_grad
    frozen = IntrinsicModel.from_pretrained(ckpt, base_model=fresh_base(base_dir), is_trainable=False)
    assert not any(p.requires_grad for p in frozen.parameters())


def test_minilm_end_to_end_and_merge(tmp_path, minilm_tokenizer, logits):
    labels = ["negative", "positive"]

    def base():
        return load_base_model("minilm-l6", "SEQ_CLS", num_labels=2, label_names=labels)

    model = get_intrinsic_model(base(), IntrinsicConfig(
        d=1000, projection="said", base_model_name_or_path="minilm-l6", task_type="SEQ_CLS",
        num_labels=2, label_names=labels))
    # a packaged base is recorded under the hub id of the repo it packages
    assert model.intrinsic_config.base_model_name_or_path == "sentence-transformers/all-MiniLM-L6-v2"
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.theta_d.copy_(torch.randn(model.theta_d.shape, generator=g))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT cannot look up the base's config on the hub offline
        model.save_pretrained(tmp_path / "ckpt")
    batch = minilm_tokenizer(["a wonderful film", "a dull mess"], return_tensors="pt", padding=True)
    ref = IntrinsicModel.from_pretrained(tmp_path / "ckpt")  # the packaged copy stands in for the hub repo
    pm = PeftModel.from_pretrained(base(), str(tmp_path / "ckpt"))
    expected = logits(ref, **batch)
    assert torch.equal(logits(pm, **batch), expected)
    merged = pm.merge_and_unload()
    assert type(merged).__name__ == "BertForSequenceClassification"
    assert not hasattr(merged, "peft_config")
    assert all(isinstance(p, nn.Parameter) for p in merged.parameters())
    torch.testing.assert_close(logits(merged, **batch), expected, rtol=0, atol=1e-6)


def test_disable_adapter_gives_the_base(base_dir, save_tuned, logits, tmp_path):
    ckpt = save_tuned(tmp_path / "ckpt")
    base_out = logits(IntrinsicModel.from_pretrained(ckpt, base_model=fresh_base(base_dir)).unload())
    pm = PeftModel.from_pretrained(fresh_base(base_dir), str(ckpt))
    tuned = logits(pm)
    status = pm.get_model_status()
    assert status.enabled is True and status.available_adapters == ["default"]
    layer = pm.base_model.intrinsic_layer
    assert not hasattr(layer, "weight") and not hasattr(layer, "bias")  # no recursion into a base layer
    with pm.disable_adapter():
        assert pm.get_model_status().enabled is False
        assert torch.equal(logits(pm), base_out)
    assert torch.equal(logits(pm), tuned)
    assert torch.equal(logits(pm.unload()), base_out)


def test_fingerprint_mismatch_is_refused_then_forced(base_dir, save_tuned, tmp_path):
    ckpt = save_tuned(tmp_path / "ckpt")
    other = fresh_base(base_dir)
    with torch.no_grad():
        other.bert.embeddings.word_embeddings.weight[3, 0] += 1.0
    n_params = len(list(other.parameters()))
    with pytest.raises(FingerprintMismatchError, match=r"fingerprint sha256:\w+.*fingerprint sha256:\w+") as e:
        PeftModel.from_pretrained(other, str(ckpt))
    assert str(ckpt) in str(e.value) and "allow_fingerprint_mismatch=True" in str(e.value)
    assert len(list(other.parameters())) == n_params  # the refused base is handed back intact
    with pytest.warns(UserWarning, match="LOADING ONTO A DIFFERENT BASE"):
        pm = PeftModel.from_pretrained(other, str(ckpt), allow_fingerprint_mismatch=True)
    assert torch.equal(pm.theta_d, load_file(ckpt / "adapter_model.safetensors")["theta_d"])
    assert "allow_fingerprint_mismatch" not in pm.peft_config["default"].to_dict()


def test_layout_mismatch_and_bad_vectors_are_refused(base_dir, save_tuned, tmp_path):
    ckpt = save_tuned(tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"layout .*differs"):
        PeftModel.from_pretrained(fresh_base(base_dir, num_labels=3), str(ckpt))
    tensors = load_file(ckpt / "adapter_model.safetensors")
    with safe_open(str(ckpt / "adapter_model.safetensors"), "pt") as f:
        meta = f.metadata()
    tensors["theta_d"][5] = float("nan")
    save_file(tensors, str(ckpt / "adapter_model.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="integrity"):  # the digest catches the edit first
        PeftModel.from_pretrained(fresh_base(base_dir), str(ckpt))
    from idcompress.checkpoint.format import with_digest

    cfg = with_digest(json.loads((ckpt / "adapter_config.json").read_text()), tensors)
    (ckpt / "adapter_config.json").write_text(json.dumps(cfg))  # a consistent file holding a NaN
    with pytest.raises(ValueError, match="NaN"):
        PeftModel.from_pretrained(fresh_base(base_dir), str(ckpt))


def test_one_adapter_per_model(base_dir, save_tuned, tmp_path):
    ckpt = save_tuned(tmp_path / "ckpt")
    pm = PeftModel.from_pretrained(fresh_base(base_dir), str(ckpt))
    with pytest.raises(ValueError, match="one adapter per model"):
        pm.load_adapter(str(ckpt), adapter_name="second")


# --------------------------------------------------------------------------------------------
# training and saving through PEFT
def test_get_peft_model_trains_and_saves_an_idcompress_checkpoint(base_dir, logits, tmp_path):
    cfg = IntrinsicConfig(d=300, projection="said", task_type="SEQ_CLS", num_labels=2,
                          base_model_name_or_path=str(base_dir), vector_dtype="float16")
    pm = get_peft_model(fresh_base(base_dir), cfg)
    assert type(pm) is PeftModelForSequenceClassification and isinstance(pm.base_model, IntrinsicModel)
    assert {n for n, p in pm.named_parameters() if p.requires_grad} == {THETA_D, LAMBDA}
    opt = torch.optim.SGD([p for p in pm.parameters() if p.requires_grad], lr=0.5)
    x = torch.tensor([[1, 5, 7, 9, 2, 0], [1, 3, 3, 8, 2, 0]])
    loss = pm.train()(input_ids=x, labels=torch.tensor([0, 1])).loss
    loss.backward()
    assert pm.theta_d.grad.abs().sum() > 0
    opt.step()
    with torch.no_grad():  # what the fp16 checkpoint can represent
        pm.theta_d.copy_(pm.theta_d.half().float())
        pm.said_lambda.copy_(pm.said_lambda.half().float())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT cannot look up the base's config on the hub offline
        pm.save_pretrained(tmp_path / "out")
    with safe_open(str(tmp_path / "out" / "adapter_model.safetensors"), "pt") as f:
        assert sorted(f.keys()) == ["said_lambda", "theta_d"]
        assert f.get_slice("theta_d").get_dtype() == "F16"
    saved = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert saved == pm.peft_config["default"].to_dict()
    assert set(saved) == set(IntrinsicConfig.checkpoint_fields())
    assert saved["base_fingerprint"].startswith("sha256:") and saved["D"] == pm.layout.D
    reloaded = IntrinsicModel.from_pretrained(tmp_path / "out")  # the base comes from base_dir
    assert torch.equal(logits(reloaded), logits(pm))
