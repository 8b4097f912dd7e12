"""Checkpoints written by idcompress v1 (tests/fixtures/v1, made at 189b638 before core v2) load
with the current code and give the logits v1 computed, bit for bit."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from idcompress import IntrinsicModel
from idcompress.models.loading import load_base_model

FIXTURES = Path(__file__).parent / "fixtures" / "v1"
CASES = {
    "bert-said": ("base-tiny-bert", "SEQ_CLS", "checkpoint"),
    "bert-fastfood-single": ("base-tiny-bert", "SEQ_CLS", "tuned.idc.safetensors"),
    "bert-dense": ("base-tiny-bert", "SEQ_CLS", "checkpoint"),
    "bert-sparse": ("base-tiny-bert", "SEQ_CLS", "checkpoint"),
    "gpt2-said-tied": ("base-tiny-gpt2", "CAUSAL_LM", "checkpoint"),
    "minilm-said": ("minilm-l6", "SEQ_CLS", "checkpoint"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_v1_checkpoint_gives_v1_logits(name):
    base_name, task, ckpt = CASES[name]
    expected = load_file(str(FIXTURES / name / "expected.safetensors"))
    kw = {"num_labels": 2} if task == "SEQ_CLS" else {}
    base_path = base_name if base_name == "minilm-l6" else str(FIXTURES / base_name)
    base = load_base_model(base_path, task, **kw)
    model = IntrinsicModel.from_pretrained(FIXTURES / name / ckpt, base_model=base)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=expected["inputs"]).logits
    assert torch.equal(logits, expected["logits"]), (logits - expected["logits"]).abs().max()


def test_v1_minilm_checkpoint_resolves_its_base_by_short_name():
    expected = load_file(str(FIXTURES / "minilm-said" / "expected.safetensors"))
    model = IntrinsicModel.from_pretrained(FIXTURES / "minilm-said" / "checkpoint")
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(input_ids=expected["inputs"]).logits, expected["logits"])
