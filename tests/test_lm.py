"""Language models in ``finetune`` (text/causal-lm, text/seq2seq), ``predict``, trackers,
``--vector-dtype``, hub cards, GLUE validation files.

Models are the tiny random GPT-2 / Llama / T5 of ``conftest.py`` (2 layers, hidden 32, BPE
tokenizer trained on the test text): mechanics only, never evidence that tuning works.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import history

from idcompress.cli.main import build_parser, main

REPO = Path(__file__).resolve().parents[1]
MINILM_CKPT = REPO / "tests" / "fixtures" / "v1" / "minilm-said" / "checkpoint"


def run_cli(argv) -> int:
    return main([str(a) for a in argv])


def lm_args(task: str, model: str, files: dict, form: str, out: Path, *extra) -> list:
    return ["finetune", "--task", task, "--model", model, "--train-file", files[f"{form}-train"],
            "--validation-file", files[f"{form}-val"], "--batch-size", "8", "--max-length", "32",
            "--max-new-tokens", "6", "--output-dir", out, *extra]


def samples_of(out: Path, epoch: int) -> list[dict]:
    rows = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    return [r for r in rows if r["epoch"] == epoch]


def predict_cli(ckpt: Path, prompts: list[str], tmp: Path, *extra) -> list[dict]:
    out = tmp / "pred.jsonl"
    args = ["predict", ckpt, "--max-new-tokens", "6", "--output-file", out, *extra]
    for p in prompts:
        args += ["--text", p]
    assert run_cli(args) == 0
    return [json.loads(x) for x in out.read_text().splitlines()]


# --- data: columns, label mask, packing ---------------------------------------------------------


def test_instruction_labels_mask_the_prompt(lm_files, tiny_gpt2):
    from transformers import AutoTokenizer

    from idcompress.data.lm import IGNORE_INDEX, ensure_pad_token, load_lm_data, tokenize_lm

    tok = AutoTokenizer.from_pretrained(tiny_gpt2)
    assert "EOS token" in ensure_pad_token(tok) and tok.pad_token == tok.eos_token
    spec, raw = load_lm_data("text/causal-lm", lm_files["instruction-train"],
                             lm_files["instruction-val"])
    assert spec.format == "instruction" and spec.eval_splits == ("validation",)
    enc = tokenize_lm(raw, spec, tok, max_length=32)
    for row, ex in zip(enc["train"], raw["train"]):
        n_prompt = len(tok(ex["prompt"])["input_ids"])
        response = tok(ex["response"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert row["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt  # no loss on the prompt
        assert row["labels"][n_prompt:] == response == row["input_ids"][n_prompt:]
        assert row["attention_mask"] == [1] * len(row["input_ids"])
    # text rows: every token is a label, EOS appended
    spec, raw = load_lm_data("text/causal-lm", lm_files["text-train"], lm_files["text-val"])
    enc = tokenize_lm(raw, spec, tok, max_length=32)
    row = enc["train"][0]
    assert spec.format == "text" and row["labels"] == row["input_ids"]
    assert row["input_ids"][-1] == tok.eos_token_id
    # packing: the same tokens, cut into blocks of max_length
    packed = tokenize_lm(raw, spec, tok, max_length=16, packing=True)["train"]
    flat = [t for r in enc["train"]["input_ids"] for t in r]
    assert [t for r in packed["input_ids"] for t in r] == flat
    assert {len(r) for r in packed["input_ids"][:-1]} == {16}
    # the collate pads with the pad token and masks the padding out of attention and loss
    from idcompress.data.lm import LMCollator

    batch = LMCollator(tok.pad_token_id)([enc["train"][0], {"input_ids": [5], "labels": [5],
                                                            "attention_mask": [1]}])
    assert batch["labels"][1, 1:].eq(IGNORE_INDEX).all()
    assert batch["attention_mask"][1, 1:].eq(0).all()


def test_lm_columns_and_bad_input(tmp_path, lm_files):
    from idcompress.data.lm import load_lm_data

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"sentence": "x"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl.*'text' column.*prompt.*columns found"):
        load_lm_data("text/causal-lm", bad, bad)
    with pytest.raises(ValueError, match="needs columns 'source' and 'target'"):
        load_lm_data("text/seq2seq", lm_files["text-train"], lm_files["text-val"])
    # a plain text file: one example per line; --text-columns maps other names
    txt = tmp_path / "train.txt"
    txt.write_text("first line\n\nsecond line\n")
    spec, dd = load_lm_data("text/causal-lm", txt, txt)
    assert dd["train"]["text"] == ["first line", "second line"]
    spec, dd = load_lm_data("text/seq2seq", lm_files["instruction-train"],
                            lm_files["instruction-val"], text_columns=["prompt", "response"])
    assert spec.format == "seq2seq" and "source" in dd["train"].column_names


def test_hub_dataset_by_name(monkeypatch):
    import datasets

    import idcompress.data.lm as lm

    calls = []

    def fake_load(name, config=None):
        calls.append((name, config))
        rows = {"text": ["a b c", "d e f"]}
        return datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows),
                                     "test": datasets.Dataset.from_dict(rows)})

    monkeypatch.setattr(lm.datasets, "load_dataset", fake_load)
    spec, dd = lm.load_lm_data("text/causal-lm", dataset="owner/corpus", dataset_config="small")
    assert calls == [("owner/corpus", "small")] and len(dd["validation"]) == 2


@pytest.mark.parametrize("argv, words", [
    (["--task", "text/seq2seq", "--packing"], ["--packing", "text/causal-lm"]),
    (["--task", "text/causal-lm", "--method", "full", "--vector-dtype", "float16"],
     ["--vector-dtype", "intrinsic"]),
    (["--task", "glue/sst2", "--dataset", "x/y"], ["--dataset", "generative"]),
    (["--task", "text/causal-lm", "--label-column", "y"], ["--label-column", "no label"]),
    (["--task", "text/causal-lm", "--method", "lora", "--push-to-hub", "me/x"],
     ["--push-to-hub", "intrinsic"]),
    (["--task", "text/causal-lm"], ["needs data", "--dataset"]),
])
def test_lm_options_refused(tmp_path, capsys, argv, words):
    assert run_cli(["finetune", *argv, "--output-dir", tmp_path / "run"]) == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err


# --- causal LM end to end -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt2_full_run(tmp_path_factory, lm_files, tiny_gpt2) -> Path:
    out = tmp_path_factory.mktemp("gpt2-full") / "run"
    assert run_cli(lm_args("text/causal-lm", tiny_gpt2, lm_files, "text", out, "--method",
                           "full", "--epochs", "2", "--lr", "3e-3", "--report-to",
                           "tensorboard", "--logging-steps", "2", "--no-report")) == 0
    return out


def test_causal_text_full_loss_falls_and_predict_matches(gpt2_full_run, tmp_path, capsys):
    out = gpt2_full_run
    final = json.loads((out / "metrics.json").read_text())
    assert final["main_metric"] == "perplexity" and final["task"] == "text/causal-lm"
    before = final["initial_metrics"]["validation"]["loss"]
    hist = history(out)
    assert hist[-1]["validation"]["loss"] < hist[0]["validation"]["loss"] < before
    assert hist[-1]["validation"]["perplexity"] == pytest.approx(
        torch.tensor(hist[-1]["validation"]["loss"]).exp().item(), rel=1e-6)
    ckpt = out / "checkpoint"
    assert (ckpt / "config.json").is_file() and (ckpt / "tokenizer.json").is_file()
    last = samples_of(out, 2)
    assert len(last) == 3 and all(isinstance(r["generated"], str) for r in last)
    # reloaded from the folder alone, predict generates what the trained model generated
    got = predict_cli(ckpt, [r["prompt"] for r in last], tmp_path)
    assert [g["generated"] for g in got] == [r["generated"] for r in last]
    assert [g["input"] for g in got] == [r["prompt"] for r in last]


def test_tensorboard_events_and_step_log(gpt2_full_run):
    events = list((gpt2_full_run / "idcompress").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s",
            "eval/validation/perplexity"} <= tags
    log = [json.loads(x) for x in (gpt2_full_run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4, 6, 8, 10]
    assert all(r["train/grad_norm"] > 0 and r["train/tokens_per_s"] > 0 for r in log)


def test_instruction_llama_lora_predict_matches(tmp_path, lm_files, tiny_llama, capsys):
    out = tmp_path / "run"
    assert run_cli(lm_args("text/causal-lm", tiny_llama, lm_files, "instruction", out,
                           "--method", "lora", "--epochs", "2", "--lr", "1e-2")) == 0
    log = capsys.readouterr().out
    assert "has no padding token: using its EOS token '</s>'" in log
    hist = history(out)
    assert hist[-1]["validation"]["loss"] < hist[0]["validation"]["loss"]
    ckpt = out / "checkpoint"
    assert json.loads((ckpt / "adapter_config.json").read_text())["peft_type"] == "LORA"
    last = samples_of(out, 2)
    got = predict_cli(ckpt, [r["prompt"] for r in last], tmp_path)
    assert [g["generated"] for g in got] == [r["generated"] for r in last]


def test_causal_intrinsic_vector_dtype(tmp_path, lm_files, tiny_gpt2, capsys):
    from safetensors import safe_open

    out = tmp_path / "run"
    assert run_cli(lm_args("text/causal-lm", tiny_gpt2, lm_files, "instruction", out,
                           "--epochs", "2", "--dim", "300", "--vector-dtype", "float16",
                           "--no-report")) == 0
    summary = capsys.readouterr().out
    final = json.loads((out / "metrics.json").read_text())
    assert final["method"] == "intrinsic" and final["d"] == 300
    assert final["score"] < final["initial_metrics"]["validation"]["perplexity"]
    assert final["score_float32"] is not None and final["reload_score"] == final["score"]
    assert "vector dtype  float16" in summary and "lost" in summary
    with safe_open(str(out / "checkpoint" / "adapter_model.safetensors"), "pt") as f:
        assert f.get_tensor("theta_d").dtype == torch.float16
    assert final["checkpoint_bytes"] < 3000
    # the wrapped model generates; the reloaded checkpoint generates the same
    last = samples_of(out, 2)
    assert len(last) == 3 and all(isinstance(r["generated"], str) for r in last)
    got = predict_cli(out / "checkpoint", [r["prompt"] for r in last], tmp_path)
    assert [g["generated"] for g in got] == [r["generated"] for r in last]


# --- seq2seq ------------------------------------------------------------------------------------


def test_seq2seq_full_predict_matches(tmp_path, lm_files, tiny_t5):
    out = tmp_path / "run"
    assert run_cli(lm_args("text/seq2seq", tiny_t5, lm_files, "seq2seq", out, "--method",
                           "full", "--epochs", "2", "--lr", "3e-3")) == 0
    hist = history(out)
    final = json.loads((out / "metrics.json").read_text())
    assert hist[-1]["validation"]["loss"] < final["initial_metrics"]["validation"]["loss"]
    last = samples_of(out, 2)
    assert last[0]["reference"].startswith("le ")
    got = predict_cli(out / "checkpoint", [r["prompt"] for r in last], tmp_path)
    assert [g["generated"] for g in got] == [r["generated"] for r in last]


def test_seq2seq_intrinsic_reload_without_base_and_merge(tmp_path, lm_files, tiny_t5):
    from transformers import AutoModelForSeq2SeqLM

    from idcompress.tuners import IntrinsicModel

    out = tmp_path / "run"
    assert run_cli(lm_args("text/seq2seq", tiny_t5, lm_files, "seq2seq", out, "--epochs", "1",
                           "--dim", "300")) == 0
    final = json.loads((out / "metrics.json").read_text())
    assert final["reload_score"] == final["score"]  # reloaded by the loop without the base
    assert final["report"] == str(out / "geometry")  # encoder states, mean pooling
    ckpt = out / "checkpoint"
    model = IntrinsicModel.from_pretrained(ckpt)  # base from the recorded folder
    assert model.intrinsic_config.task_type == "SEQ_2_SEQ_LM"
    batch = {"input_ids": torch.tensor([[5, 6, 7, 1]]), "labels": torch.tensor([[8, 9, 1]])}
    with torch.no_grad():
        want = model(**batch).logits
    assert run_cli(["merge", ckpt, "--out", tmp_path / "merged"]) == 0
    merged = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, want, rtol=1e-4, atol=1e-5)
    last = samples_of(out, 1)
    got = predict_cli(ckpt, [r["prompt"] for r in last], tmp_path)
    assert [g["generated"] for g in got] == [r["generated"] for r in last]


# --- predict on the packaged MiniLM sentiment checkpoint ----------------------------------------


def test_predict_minilm_sentiment(tmp_path, capsys):
    assert run_cli(["predict", MINILM_CKPT, "--text", "a wonderful, moving film",
                    "--text", "a dull, boring mess"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["input"] for r in rows] == ["a wonderful, moving film", "a dull, boring mess"]
    # the fixture records no label names: transformers' LABEL_<i>
    assert all(r["label"] in ("LABEL_0", "LABEL_1") and 0.5 <= r["probability"] <= 1
               for r in rows)
    f = tmp_path / "in.csv"
    f.write_text("id,sentence\n1,great acting\n2,awful plot\n")
    out = tmp_path / "pred.csv"
    assert run_cli(["predict", MINILM_CKPT, "--input-file", f, "--output-file", out]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "input,label,probability" and len(lines) == 3
    assert run_cli(["predict", MINILM_CKPT]) == 2
    assert "nothing to predict" in capsys.readouterr().err


# --- sharing: model card, push (fake HfApi), offline refusal ------------------------------------


class FakeHfApi:
    """Records create_repo / upload_folder and copies what would be uploaded."""

    calls: list = []
    uploaded: dict = {}

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, private=None, exist_ok=False):
        FakeHfApi.calls.append(("create_repo", repo_id, private, exist_ok))
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def upload_folder(self, repo_id, folder_path, commit_message):
        FakeHfApi.calls.append(("upload_folder", repo_id, commit_message))
        FakeHfApi.uploaded = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
        return type("CommitInfo", (), {"commit_url": f"https://hub.example/{repo_id}/commit/1"})()


@pytest.fixture
def fake_hub(monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    FakeHfApi.calls, FakeHfApi.uploaded = [], {}
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token")
    return FakeHfApi


def _card_yaml(card: str) -> dict:
    import yaml

    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n", 2)[1])


def test_push_uploads_checkpoint_and_card(fake_hub, capsys):
    assert run_cli(["push", MINILM_CKPT, "me/minilm-sentiment"]) == 0
    assert "https://hub.example/me/minilm-sentiment/commit/1" in capsys.readouterr().out
    assert fake_hub.calls[0] == ("create_repo", "me/minilm-sentiment", None, True)
    files = fake_hub.uploaded
    assert set(files) == {"README.md", "adapter_config.json", "adapter_model.safetensors"}
    assert files["adapter_model.safetensors"] == (MINILM_CKPT / "adapter_model.safetensors"
                                                  ).read_bytes()
    card = files["README.md"].decode()
    meta = _card_yaml(card)
    cfg = json.loads((MINILM_CKPT / "adapter_config.json").read_text())
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["library_name"] == "peft"
    assert {"idcompress", "intrinsic-dimension", "said"} <= set(meta["tags"])
    assert meta["pipeline_tag"] == "text-classification"
    assert meta["idcompress"]["d"] == cfg["d"] and meta["idcompress"]["projection"] == "said"
    assert 'IntrinsicModel.from_pretrained("me/minilm-sentiment")' in card
    assert 'PeftModel.from_pretrained(base, "me/minilm-sentiment")' in card


def test_finetune_push_to_hub_with_score(fake_hub, tmp_path, lm_files, tiny_gpt2, capsys):
    out = tmp_path / "run"
    assert run_cli(lm_args("text/causal-lm", tiny_gpt2, lm_files, "text", out, "--epochs",
                           "1", "--dim", "300", "--no-report", "--num-samples", "0",
                           "--push-to-hub", "me/tiny-gpt2-lm")) == 0
    assert "local folder" in capsys.readouterr().err  # the card leaves base_model out, and says so
    final = json.loads((out / "metrics.json").read_text())
    assert final["hub_url"].endswith("me/tiny-gpt2-lm/commit/1")
    meta = _card_yaml(fake_hub.uploaded["README.md"].decode())
    assert "base_model" not in meta  # a local folder is no hub id
    assert meta["idcompress"]["score"] == final["score"]
    assert meta["idcompress"]["metric"] == "perplexity"
    assert "text-causal-lm" in meta["tags"] and meta["pipeline_tag"] == "text-generation"


def test_push_refused_offline_before_anything_is_built(tmp_path, lm_files, tiny_gpt2, capsys,
                                                       monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    out = tmp_path / "run"
    assert run_cli(lm_args("text/causal-lm", tiny_gpt2, lm_files, "text", out,
                           "--push-to-hub", "me/x")) == 2
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err
    assert not out.exists()
    assert run_cli(["push", MINILM_CKPT, "me/x"]) == 2
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err


# --- GLUE details -------------------------------------------------------------------------------


def test_mnli_matched_and_mismatched_validation_files(tmp_path, minilm_tokenizer):
    import csv

    from transformers import BertConfig, BertModel

    folder = tmp_path / "tiny-bert"
    cfg = BertConfig(vocab_size=minilm_tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        BertModel(cfg).save_pretrained(folder)
    minilm_tokenizer.save_pretrained(folder)
    files = {}
    for name, n in (("train", 12), ("dev_m", 6), ("dev_mm", 4)):
        files[name] = tmp_path / f"{name}.csv"
        with open(files[name], "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["premise", "hypothesis", "label"])
            for i in range(n):
                w.writerow([f"a man sits {i}", f"a person sits {i}",
                            ["entailment", "neutral", "contradiction"][i % 3]])
    out = tmp_path / "run"
    assert run_cli(["finetune", "--task", "glue/mnli", "--model", folder, "--method", "full",
                    "--train-file", files["train"],
                    "--validation-file", f"validation_mismatched={files['dev_mm']}",
                    "--validation-file", f"validation_matched={files['dev_m']}",
                    "--epochs", "1", "--batch-size", "8", "--max-length", "16",
                    "--output-dir", out, "--no-report"]) == 0
    final = json.loads((out / "metrics.json").read_text())
    assert list(final["metrics"]) == ["validation_matched", "validation_mismatched"]


def test_text_columns_spelled_the_same_in_finetune_and_report():
    from idcompress.cli.finetune import split_columns

    parser = build_parser()
    for argv in (["premise", "hypothesis"], ["premise,hypothesis"]):
        ft = parser.parse_args(["finetune", "--text-columns", *argv])
        rp = parser.parse_args(["report", "ckpt", "--text-columns", *argv])
        assert split_columns(ft.text_columns) == split_columns(rp.text_columns) == [
            "premise", "hypothesis"]


def test_last_token_pooling_skips_padding():
    from idcompress.geometry.collect import _pool

    h = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    torch.testing.assert_close(_pool(h, mask, "last", "layer 0"), torch.stack([h[0, 1], h[1, 3]]))
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])  # left padding: the last token is real
    torch.testing.assert_close(_pool(h, left, "last", "layer 0"), h[:, 3])
