"""A CLI checkpoint of the packaged MiniLM records the hub id it packages, so PEFT's own loaders
find the base (here: offline, from a hub cache holding that repo), and idcompress maps the id
to the packaged copy offline when the fingerprint matches."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from idcompress.cli.main import main
from idcompress.models import PACKAGED_HUB_IDS, resolve_model_name

REPO = Path(__file__).resolve().parents[1]
HUB_ID = PACKAGED_HUB_IDS["minilm-l6"]


@pytest.fixture(scope="module")
def cli_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    rc = main(["finetune", "--max-train-samples", "32", "--max-eval-samples", "32", "--epochs", "1",
               "--max-length", "16", "--batch-size", "16", "--dim", "200", "--no-report",
               "--output-dir", str(out)])
    assert rc == 0
    return out / "checkpoint"


def _hub_cache_with_packaged_minilm(root: Path) -> Path:
    """A huggingface_hub cache holding the packaged files as a snapshot of HUB_ID (what a user
    who has downloaded the repo once has)."""
    repo = root / ("models--" + HUB_ID.replace("/", "--"))
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    for f in Path(resolve_model_name("minilm-l6")).iterdir():
        if f.is_file():
            (snap / f.name).symlink_to(f)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    return root


def test_cli_checkpoint_records_the_hub_id(cli_checkpoint):
    cfg = json.loads((cli_checkpoint / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == HUB_ID
    assert cfg["peft_type"] == "INTRINSIC" and cfg["task_type"] == "SEQ_CLS"


def test_idcompress_loads_the_hub_id_from_the_packaged_copy_offline(cli_checkpoint, monkeypatch):
    from idcompress import IntrinsicModel

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = IntrinsicModel.from_pretrained(cli_checkpoint)  # no hub access: packaged copy, fingerprint checked
    assert model.intrinsic_config.base_model_name_or_path == HUB_ID


def test_autopeft_loads_the_cli_checkpoint_offline(cli_checkpoint, tmp_path):
    cache = _hub_cache_with_packaged_minilm(tmp_path / "hub")
    code = f"""
import torch, idcompress
from peft import AutoPeftModelForSequenceClassification
from idcompress import IntrinsicModel
x = torch.tensor([[101, 2023, 3185, 2003, 2307, 102]])
auto = AutoPeftModelForSequenceClassification.from_pretrained({str(cli_checkpoint)!r}).eval()
ours = IntrinsicModel.from_pretrained({str(cli_checkpoint)!r}).eval()
with torch.no_grad():
    a, b = auto(input_ids=x).logits, ours(input_ids=x).logits
assert type(auto.base_model).__name__ == "IntrinsicModel"
assert torch.equal(a, b), (a, b)
print("same logits", a.tolist())
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_CACHE": str(cache),
           "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "same logits" in proc.stdout


def test_a_hub_copy_with_other_bytes_is_refused(cli_checkpoint, tmp_path):
    """The base named by hub id is accepted only with the recorded fingerprint."""
    from transformers import AutoModelForSequenceClassification

    from idcompress import IntrinsicModel

    other = AutoModelForSequenceClassification.from_pretrained(resolve_model_name("minilm-l6"), num_labels=2)
    with torch.no_grad():
        other.bert.embeddings.word_embeddings.weight[0, 0] += 1e-3
    with pytest.raises(ValueError, match="fingerprint"):
        IntrinsicModel.from_pretrained(cli_checkpoint, base_model=other)


def test_info_merge_report_take_a_base(cli_checkpoint, tmp_path, capsys, tiny_bert):
    """--base PATH_OR_ID for a checkpoint whose recorded base cannot be resolved."""
    import shutil

    moved = tmp_path / "ckpt"
    shutil.copytree(cli_checkpoint, moved)
    cfg = json.loads((moved / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(tmp_path / "gone")  # the recorded base no longer exists
    from safetensors.torch import load_file

    from idcompress.checkpoint.format import with_digest

    cfg = with_digest(cfg, load_file(str(moved / "adapter_model.safetensors")))  # a valid file again
    (moved / "adapter_config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
    base = resolve_model_name("minilm-l6")
    assert main(["info", str(moved), "--base", base]) == 0
    assert "layout and fingerprint match" in capsys.readouterr().out
    assert main(["merge", str(moved), "--out", str(tmp_path / "merged"), "--base", base]) == 0
    assert (tmp_path / "merged" / "config.json").is_file() and (tmp_path / "merged" / "tokenizer.json").is_file()
    assert main(["report", str(moved), "--base", base, "--n", "40", "--out", str(tmp_path / "geo")]) == 0
    assert (tmp_path / "geo" / "geometry.json").is_file()
    other = tmp_path / "tiny"
    tiny_bert().save_pretrained(other)
    assert main(["info", str(moved), "--base", str(other)]) == 2  # another base: refused, one line
    assert "layout" in capsys.readouterr().err
