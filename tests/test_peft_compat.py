"""PEFT compatibility: ``peft.PeftModel.from_pretrained`` loads idcompress checkpoints (SPEC §5)."""

import dataclasses
import enum
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import idcompress.checkpoint.peft_compat as peft_compat  # idcompress/__init__ will import it
import pytest
import torch
from conftest import tiny_bert
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from idcompress import IntrinsicConfig, IntrinsicModel, get_intrinsic_model
from idcompress.models.loading import load_base_model

peft = pytest.importorskip("peft")
from peft import PeftModel, get_peft_model  # noqa: E402
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING  # noqa: E402
from peft.utils.peft_types import PeftType  # noqa: E402
from transformers import AutoModelForSequenceClassification  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.set_verbosity_error()
X = torch.tensor([[1, 5, 7, 9, 2, 0], [1, 3, 3, 8, 2, 0]])
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def base_dir(tmp_path) -> Path:
    """A pretrained body without a classification head (so the head is new, as in real use)."""
    path = tmp_path / "base"
    tiny_bert().bert.save_pretrained(path)
    return path


def fresh_base(base_dir, num_labels=2):
    return AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=num_labels)


def save_tuned(base_dir, path, projection="said", d=300, vector_dtype="float32") -> Path:
    base = load_base_model(str(base_dir), "SEQ_CLS", num_labels=2)
    cfg = IntrinsicConfig(d=d, projection=projection, base_model_name_or_path=str(base_dir),
                          task_type="SEQ_CLS", num_labels=2, vector_dtype=vector_dtype)
    model = get_intrinsic_model(base, cfg)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.theta_d.copy_(torch.randn(model.theta_d.shape, generator=g))
        if model.said_lambda is not None:
            model.said_lambda.copy_(1 + 0.3 * torch.randn(model.said_lambda.shape, generator=g))
    model.save_pretrained(path)
    return path


def logits(model, **batch):
    with torch.no_grad():
        return model.eval()(**(batch or {"input_ids": X})).logits


# --------------------------------------------------------------------------------------------
# registration
def test_peft_type_and_registry_entries():
    assert peft_compat.register() == "registered"
    assert peft_compat.register() == "registered"  # idempotent
    assert PeftType("INTRINSIC") is PeftType.INTRINSIC
    assert PeftType["INTRINSIC"] is PeftType.INTRINSIC and "INTRINSIC" in list(PeftType)
    assert PeftType.LORA.value == "LORA" and PeftType("LORA") is PeftType.LORA
    assert PEFT_TYPE_TO_CONFIG_MAPPING["INTRINSIC"] is peft_compat.IntrinsicPeftConfig
    assert PEFT_TYPE_TO_TUNER_MAPPING[PeftType.INTRINSIC] is peft_compat.IntrinsicTuner


def test_extend_peft_type_on_a_fresh_enum():
    class Kind(str, enum.Enum):
        A = "A"

    member = peft_compat.extend_peft_type(Kind, "NEW")
    assert peft_compat.extend_peft_type(Kind, "NEW") is member
    assert Kind("NEW") is Kind.NEW is Kind["NEW"] is member
    assert list(Kind) == [Kind.A, Kind.NEW] and Kind.NEW == "NEW" and json.dumps(Kind.NEW) == '"NEW"'
    assert {Kind.NEW: 1}["NEW"] == 1


def test_import_never_imports_peft_and_registers_when_peft_is_imported():
    code = """
import sys
import idcompress.checkpoint.peft_compat
assert "peft" not in sys.modules, "importing idcompress imported peft"
from transformers.utils import is_peft_available
assert is_peft_available() and "peft" not in sys.modules  # a probe must not consume the hook
import peft
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
from peft.utils.peft_types import PeftType
assert PEFT_TYPE_TO_CONFIG_MAPPING[PeftType.INTRINSIC].__name__ == "IntrinsicPeftConfig"
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_install_registers_at_once_when_peft_is_already_imported(monkeypatch):
    monkeypatch.setitem(peft_compat._state, "status", None)
    peft_compat.install()
    assert peft_compat._state["status"] == "registered"
    assert not any(isinstance(f, peft_compat._PeftImportHook) for f in sys.meta_path)


def test_version_policy_and_stub_message(monkeypatch):
    lo = peft_compat.MIN_PEFT_VERSION
    assert peft_compat.unsupported_peft_message(lo) is None
    assert peft_compat.unsupported_peft_message("1.2.0") is None
    msg = peft_compat.unsupported_peft_message("0.20.0")
    assert "0.20.0" in msg and lo in msg and "IntrinsicModel.from_pretrained" in msg
    mapping = {}
    stub = peft_compat._install_stub(mapping, "INTRINSIC", msg)
    assert mapping["INTRINSIC"] is stub
    with pytest.raises(ImportError, match=r"peft 0\.20\.0 is installed"):
        stub.from_pretrained("some/ckpt")
    with pytest.raises(ImportError, match=r"0\.20\.0"):
        stub(d=10)
    # a peft newer than the tested range loads, with a warning that names it
    monkeypatch.setattr(peft, "__version__", "9.1.0")
    monkeypatch.setitem(peft_compat._state, "warned", False)
    with pytest.warns(UserWarning, match=r"peft 9\.1\.0 is newer"):
        peft_compat._warn_if_untested()


def test_peft_config_carries_every_intrinsic_field():
    cls = peft_compat.IntrinsicPeftConfig
    names = {f.name for f in dataclasses.fields(cls)}
    assert {f.name for f in dataclasses.fields(IntrinsicConfig)} <= names
    cfg = cls(d=50, projection="fastfood", seed=3, task_type="IMAGE_CLS", label_names=["a", "b"])
    assert cfg.task_type is None  # PEFT has no IMAGE_CLS; idcompress keeps it
    back = cfg.to_dict()
    assert back == cfg.to_intrinsic_config().to_dict()
    assert back["task_type"] == "IMAGE_CLS" and back["peft_type"] == "INTRINSIC" and back["seed"] == 3
    assert set(back) == {f.name for f in dataclasses.fields(IntrinsicConfig)}
    with pytest.raises(ValueError, match="d=0"):
        cls(d=0)
    with pytest.raises(ValueError, match="projection='nope'"):
        cls(d=10, projection="nope")


# --------------------------------------------------------------------------------------------
# loading
@pytest.mark.parametrize("projection,vector_dtype", [("said", "float32"), ("sparse", "float16")])
def test_peft_loads_the_same_model(base_dir, tmp_path, projection, vector_dtype):
    ckpt = save_tuned(base_dir, tmp_path / "ckpt", projection, vector_dtype=vector_dtype)
    ref = IntrinsicModel.from_pretrained(ckpt, base_model=fresh_base(base_dir))
    pm = PeftModel.from_pretrained(fresh_base(base_dir), str(ckpt))
    assert type(pm.base_model).__name__ == "IntrinsicTuner"
    assert torch.equal(pm.theta_d, ref.theta_d)
    if projection == "said":
        assert torch.equal(pm.said_lambda, ref.said_lambda)
    assert pm.theta_d.dtype == torch.float32 and not pm.theta_d.requires_grad
    out = logits(pm)
    assert torch.equal(out, logits(ref))
    assert not torch.allclose(out, logits(ref.unload()), atol=1e-5)  # the vector matters


def test_is_trainable_and_low_cpu_mem_usage(base_dir, tmp_path):
    ckpt = save_tuned(base_dir, tmp_path / "ckpt")
    ref = logits(IntrinsicModel.from_pretrained(ckpt, base_model=fresh_base(base_dir)))
    pm = PeftModel.from_pretrained(fresh_base(base_dir), str(ckpt), is_trainable=True, low_cpu_mem_usage=True)
    assert {n.rsplit(".", 1)[-1] for n, p in pm.named_parameters() if p.requires_grad} == {"theta_d", "said_lambda"}
    assert not pm.theta_d.is_meta
    assert torch.equal(logits(pm), ref)


def test_minilm_end_to_end_and_merge(tmp_path, minilm_tokenizer):
    labels = ["negative", "positive"]

    def base():
        return load_base_model("minilm-l6", "SEQ_CLS", num_labels=2, label_names=labels)

    model = get_intrinsic_model(base(), IntrinsicConfig(
        d=1000, projection="said", base_model_name_or_path="minilm-l6", task_type="SEQ_CLS",
        num_labels=2, label_names=labels))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.theta_d.copy_(torch.randn(model.theta_d.shape, generator=g))
    model.save_pretrained(tmp_path / "ckpt")
    batch = minilm_tokenizer(["a wonderful film", "a dull mess"], return_tensors="pt", padding=True)
    ref = IntrinsicModel.from_pretrained(tmp_path / "ckpt", base_model=base())
    pm = PeftModel.from_pretrained(base(), str(tmp_path / "ckpt"))
    expected = logits(ref, **batch)
    assert torch.equal(logits(pm, **batch), expected)
    merged = pm.merge_and_unload()
    assert type(merged).__name__ == "BertForSequenceClassification"
    assert not hasattr(merged, "peft_config")
    assert all(isinstance(p, nn.Parameter) for p in merged.parameters())
    torch.testing.assert_close(logits(merged, **batch), expected, rtol=0, atol=1e-6)


def test_disable_adapter_gives_the_base(base_dir, tmp_path):
    ckpt = save_tuned(base_dir, tmp_path / "ckpt")
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


def test_fingerprint_mismatch_is_refused_then_forced(base_dir, tmp_path):
    ckpt = save_tuned(base_dir, tmp_path / "ckpt")
    other = fresh_base(base_dir)
    with torch.no_grad():
        other.bert.embeddings.word_embeddings.weight[3, 0] += 1.0
    n_params = len(list(other.parameters()))
    with pytest.raises(ValueError, match=r"fingerprint sha256:\w+.*fingerprint sha256:\w+") as e:
        PeftModel.from_pretrained(other, str(ckpt))
    assert str(ckpt) in str(e.value) and "allow_fingerprint_mismatch=True" in str(e.value)
    assert len(list(other.parameters())) == n_params  # the refused base is handed back intact
    with pytest.warns(UserWarning, match="LOADING ONTO A DIFFERENT BASE"):
        pm = PeftModel.from_pretrained(other, str(ckpt), allow_fingerprint_mismatch=True)
    assert torch.equal(pm.theta_d, load_file(ckpt / "adapter_model.safetensors")["theta_d"])
    assert "allow_fingerprint_mismatch" not in pm.peft_config["default"].to_dict()


def test_layout_mismatch_and_bad_vectors_are_refused(base_dir, tmp_path):
    ckpt = save_tuned(base_dir, tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"layout .*differs"):
        PeftModel.from_pretrained(fresh_base(base_dir, num_labels=3), str(ckpt))
    tensors = load_file(ckpt / "adapter_model.safetensors")
    with safe_open(str(ckpt / "adapter_model.safetensors"), "pt") as f:
        meta = f.metadata()
    tensors["theta_d"][5] = float("nan")
    save_file(tensors, str(ckpt / "adapter_model.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="NaN"):
        PeftModel.from_pretrained(fresh_base(base_dir), str(ckpt))


def test_one_adapter_per_model(base_dir, tmp_path):
    ckpt = save_tuned(base_dir, tmp_path / "ckpt")
    pm = PeftModel.from_pretrained(fresh_base(base_dir), str(ckpt))
    with pytest.raises(ValueError, match="one adapter per model"):
        pm.load_adapter(str(ckpt), adapter_name="second")


# --------------------------------------------------------------------------------------------
# training and saving through PEFT
def test_get_peft_model_trains_and_saves_an_idcompress_checkpoint(base_dir, tmp_path):
    cfg = peft_compat.IntrinsicPeftConfig(d=300, projection="said", task_type="SEQ_CLS", num_labels=2,
                                          base_model_name_or_path=str(base_dir), vector_dtype="float16")
    pm = get_peft_model(fresh_base(base_dir), cfg)
    trainable = {n for n, p in pm.named_parameters() if p.requires_grad}
    assert {n.rsplit(".", 1)[-1] for n in trainable} == {"theta_d", "said_lambda"}
    opt = torch.optim.SGD([p for p in pm.parameters() if p.requires_grad], lr=0.5)
    loss = pm.train()(input_ids=X, labels=torch.tensor([0, 1])).loss
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
    assert set(saved) == {f.name for f in dataclasses.fields(IntrinsicConfig)}
    assert saved["base_fingerprint"].startswith("sha256:") and saved["D"] == pm.base_model._layer.model.layout.D
    reloaded = IntrinsicModel.from_pretrained(tmp_path / "out")  # the base comes from base_dir
    assert torch.equal(logits(reloaded), logits(pm))
