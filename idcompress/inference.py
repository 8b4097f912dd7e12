"""Run a trained checkpoint on new inputs: classification, regression or text generation.

:func:`load_predictor` accepts what ``idcompress finetune`` writes for every method:

* an intrinsic checkpoint (directory with ``adapter_config.json`` of ``peft_type`` INTRINSIC,
  a ``*.idc.safetensors`` file, or a hub repo id): the base is resolved as
  ``IntrinsicModel.from_pretrained`` does (recorded name, packaged short name, folder or hub
  id), or taken from ``base``;
* a PEFT LoRA adapter folder (base from its ``base_model_name_or_path`` or ``base``);
* a plain transformers folder (``--method full``, or ``idcompress merge`` output).

The tokenizer comes from the checkpoint folder when it holds one (full, LoRA), else from the
base. A tokenizer without a padding token gets one as in training
(:func:`idcompress.data.lm.ensure_pad_token`).

Generation is greedy (``do_sample=False``, one beam), one input at a time (no padding, so a
text's output never depends on the other inputs), ``max_new_tokens`` new tokens at most, special
tokens dropped from the decoded text. A causal LM continues ``tokenizer(prompt)`` exactly as
training tokenised prompts; a seq2seq model's output is its decoder's sequence.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: the model kinds a predictor handles
KINDS = ("classification", "regression", "causal", "seq2seq")
_TASK_KINDS = {"CAUSAL_LM": "causal", "SEQ_2_SEQ_LM": "seq2seq", "SEQ_CLS": "classification"}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model")


@dataclass
class Predictor:
    """A loaded model with its tokenizer and what it predicts."""

    model: nn.Module
    tokenizer: Any
    kind: str
    label_names: list[str] = field(default_factory=list)
    source: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def generative(self) -> bool:
        return self.kind in ("causal", "seq2seq")


def _kind_of_task(task_type: str | None, problem_type: str | None, num_labels: int | None,
                  where: str) -> str:
    kind = _TASK_KINDS.get(task_type or "")
    if kind is None:
        raise ValueError(f"{where}: task_type {task_type!r} cannot be predicted on text (kinds: "
                         "SEQ_CLS, CAUSAL_LM, SEQ_2_SEQ_LM)")
    if kind == "classification" and (problem_type == "regression" or num_labels == 1):
        return "regression"
    return kind


def _kind_of_config(cfg, where: str) -> str:
    archs = list(getattr(cfg, "architectures", None) or [])
    arch = archs[0] if archs else ""
    if arch.endswith("ForSequenceClassification"):
        reg = cfg.problem_type == "regression" or cfg.num_labels == 1
        return "regression" if reg else "classification"
    if getattr(cfg, "is_encoder_decoder", False):
        return "seq2seq"
    if arch.endswith(("ForCausalLM", "LMHeadModel")):
        return "causal"
    raise ValueError(f"{where}: config.json names architecture {arch or '(none)'!r}; predict "
                     "handles *ForSequenceClassification, *ForCausalLM/*LMHeadModel and "
                     "encoder-decoder models")


def _auto_class(kind: str):
    import transformers

    return {"causal": transformers.AutoModelForCausalLM,
            "seq2seq": transformers.AutoModelForSeq2SeqLM}.get(
        kind, transformers.AutoModelForSequenceClassification)


def _tokenizer(*candidates: str | None):
    from transformers import AutoTokenizer

    from .models import packaged_folder, resolve_model_name

    errors = []
    for c in candidates:
        if not c:
            continue
        path = packaged_folder(c) or resolve_model_name(c)
        if Path(path).is_dir() and not any((Path(path) / f).exists() for f in _TOKENIZER_FILES):
            continue
        try:
            return AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as e:
            errors.append(f"{c}: {e}")
    raise ValueError("no tokenizer found in " + ", ".join(repr(c) for c in candidates if c)
                     + (f" ({'; '.join(errors)})" if errors else ""))


def _label_names(cfg) -> list[str]:
    id2label = getattr(cfg, "id2label", None) or {}
    return [str(id2label[i]) for i in sorted(id2label)]


def load_predictor(checkpoint: str | os.PathLike, base: str | None = None, force: bool = False,
                   device: str | None = None) -> Predictor:
    """Load ``checkpoint`` (see the module docstring) in eval mode on ``device`` (default CPU)."""
    from .data.lm import ensure_pad_token

    path = Path(checkpoint)
    notes: list[str] = []
    if path.is_dir() and (path / "adapter_config.json").is_file():
        data = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
        if data.get("peft_type") == "LORA":
            model, tok, kind, labels = _load_lora(path, data, base)
        else:
            model, tok, kind, labels = _load_intrinsic(str(path), base, force)
    elif path.is_dir() and (path / "config.json").is_file():
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(path)
        kind = _kind_of_config(cfg, str(path))
        model = _auto_class(kind).from_pretrained(path)
        tok = _tokenizer(str(path), base)
        labels = _label_names(cfg) if kind == "classification" else []
    elif path.is_dir() and (path / "checkpoint").is_dir():  # a run folder of finetune
        return load_predictor(path / "checkpoint", base, force, device)
    elif path.is_dir():
        raise ValueError(f"{path}: neither adapter_config.json (idcompress / PEFT checkpoint) nor "
                         "config.json (transformers model) found")
    else:  # *.idc.safetensors or a hub repo id
        model, tok, kind, labels = _load_intrinsic(str(checkpoint), base, force)
    msg = ensure_pad_token(tok, f"the tokenizer of {checkpoint}")
    if msg:
        notes.append(msg)
    if device is not None:
        model = model.to(device)
    model.eval()
    return Predictor(model, tok, kind, labels, str(checkpoint), notes)


def _load_lora(path: Path, data: dict, base: str | None):
    from peft import PeftModel

    from .models import resolve_model_name

    base_name = base or data.get("base_model_name_or_path")
    if not base_name:
        raise ValueError(f"{path}/adapter_config.json: no base_model_name_or_path; pass --base")
    kind = _kind_of_task(data.get("task_type"), None, None, str(path / "adapter_config.json"))
    auto = _auto_class(kind)
    base_model = auto.from_pretrained(resolve_model_name(base_name))
    if kind == "classification":
        # the head lives in the adapter (modules_to_save); its size comes from the saved head
        from safetensors import safe_open

        with safe_open(str(path / "adapter_model.safetensors"), "pt") as f:
            heads = [f.get_slice(k).get_shape()[0] for k in f.keys()
                     if k.endswith(("classifier.weight", "classifier.out_proj.weight",
                                    "score.weight"))]
        if heads and heads[0] != base_model.config.num_labels:
            base_model = auto.from_pretrained(resolve_model_name(base_name), num_labels=heads[0])
        if base_model.config.num_labels == 1:
            kind = "regression"
    model = PeftModel.from_pretrained(base_model, str(path))
    tok = _tokenizer(str(path), base_name)
    return model, tok, kind, _label_names(base_model.config) if kind == "classification" else []


def _load_intrinsic(checkpoint: str, base: str | None, force: bool):
    from .tuners import IntrinsicModel

    model = IntrinsicModel.from_pretrained(checkpoint, base_model=base, allow_fingerprint_mismatch=force)
    cfg = model.intrinsic_config
    kind = _kind_of_task(cfg.task_type, cfg.problem_type, cfg.num_labels, checkpoint)
    tok = _tokenizer(base, cfg.base_model_name_or_path)
    labels = list(cfg.label_names or [])
    if kind == "classification" and not labels:  # transformers' names (LABEL_0, …)
        labels = _label_names(getattr(model, "config", None))
    return model, tok, kind, labels


@torch.no_grad()
def generate_text(model: nn.Module, tokenizer, prompt: str, kind: str, max_new_tokens: int = 32,
                  max_length: int | None = None) -> str:
    """The greedy continuation (causal) or output (seq2seq) of ``prompt``, decoded."""
    enc = tokenizer(prompt, return_tensors="pt", truncation=max_length is not None,
                    max_length=max_length)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
    was_training = model.training
    model.eval()
    try:
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                             pad_token_id=tokenizer.pad_token_id)
    finally:
        model.train(was_training)
    new = out[0, enc["input_ids"].shape[1]:] if kind == "causal" else out[0]
    return tokenizer.decode(new, skip_special_tokens=True)


@torch.no_grad()
def predict(predictor: Predictor, inputs: list[str | tuple[str, str]], max_new_tokens: int = 32,
            max_length: int = 512, batch_size: int = 32) -> list[dict[str, Any]]:
    """One result per input: ``{"input", "label", "probability"}`` (classification),
    ``{"input", "value"}`` (regression) or ``{"input", "generated"}`` (LMs). A pair input
    (classification of sentence pairs) is a 2-tuple."""
    model, tok = predictor.model, predictor.tokenizer
    out: list[dict[str, Any]] = []
    if predictor.generative:
        for text in inputs:
            if not isinstance(text, str):
                raise ValueError(f"a generative model takes one text per input, got {text!r}")
            out.append({"input": text, "generated": generate_text(
                model, tok, text, predictor.kind, max_new_tokens, max_length)})
        return out
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    for i in range(0, len(inputs), batch_size):
        chunk = inputs[i:i + batch_size]
        pairs = [isinstance(x, tuple) for x in chunk]
        if any(pairs) and not all(pairs):
            raise ValueError("inputs mix single texts and pairs")
        cols = list(zip(*chunk)) if all(pairs) else [list(chunk)]
        enc = tok(*[list(c) for c in cols], padding=True, truncation=True,
                  max_length=max_length, return_tensors="pt")
        logits = model(**{k: v.to(device) for k, v in enc.items()}).logits.float().cpu()
        for x, row in zip(chunk, logits):
            shown = " [SEP] ".join(x) if isinstance(x, tuple) else x
            if predictor.kind == "regression":
                out.append({"input": shown, "value": float(row.reshape(-1)[0])})
            else:
                probs = row.softmax(-1)
                k = int(probs.argmax())
                name = predictor.label_names[k] if k < len(predictor.label_names) else str(k)
                out.append({"input": shown, "label": name, "probability": float(probs[k])})
    return out
