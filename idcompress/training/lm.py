"""What the training loop does differently for generative tasks (``text/causal-lm``,
``text/seq2seq``; data in :mod:`idcompress.data.lm`).

* **Loss**: the model's own (labels given, ``-100`` ignored; causal models shift inside).
* **Evaluation** (:func:`evaluate_lm`): the mean token cross-entropy over every label that is not
  ``-100`` in the split (summed per sequence, gathered without Accelerate's duplicated padding
  rows, then divided by the token count: not a mean of batch means), and
  ``perplexity = exp(loss)``. The main metric is perplexity; lower is better, so the best epoch
  (early stopping) is the lowest.
* **Samples** (:func:`write_samples`): after each evaluation, greedy generations for the first
  ``num_samples`` validation prompts are appended to ``<output-dir>/samples.jsonl`` (epoch,
  prompt, reference, generated). A model that cannot ``generate`` gets a note instead.
* **Geometry report**: causal models are pooled on the last real token and on the mean over
  tokens; seq2seq models on the mean of the encoder's states.
* **LoRA**: PEFT's default target modules for the architecture (GPT-2 ``c_attn``, Llama
  ``q_proj``/``v_proj``, T5 ``q``/``v``, …), task type ``CAUSAL_LM`` / ``SEQ_2_SEQ_LM``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.lm import IGNORE_INDEX

SAMPLES_FILE = "samples.jsonl"


def is_generative(spec: Any) -> bool:
    """True for the spec of a generative task."""
    return bool(getattr(spec, "generative", False))


def sequence_losses(logits: torch.Tensor, labels: torch.Tensor, causal: bool
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed token cross-entropy, number of scored tokens) per sequence, in float32."""
    if causal:
        logits, labels = logits[:, :-1], labels[:, 1:]
    flat = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="none").view(labels.shape)
    mask = labels != IGNORE_INDEX
    return (flat * mask).sum(1), mask.sum(1).float()


@torch.no_grad()
def evaluate_lm(model: nn.Module, loaders: dict, spec: Any, accelerator
                ) -> dict[str, dict[str, float]]:
    """``{split: {"loss", "perplexity"}}`` (see the module docstring)."""
    was_training = model.training
    model.eval()
    out = {}
    for split, loader in loaders.items():
        total = torch.zeros((), dtype=torch.float64)
        count = torch.zeros((), dtype=torch.float64)
        for batch in loader:
            logits = model(**batch).logits
            s, n = sequence_losses(logits, batch["labels"], spec.kind == "causal")
            s, n = accelerator.gather_for_metrics((s, n))
            total += s.double().sum().cpu()
            count += n.double().sum().cpu()
        loss = float(total / count.clamp(min=1))
        out[split] = {"loss": loss, "perplexity": math.exp(min(loss, 700.0))}
    model.train(was_training)
    return out


def write_samples(model: nn.Module, tokenizer, spec: Any, prompts: list[dict[str, str]],
                  out_dir: Path, epoch: int, max_new_tokens: int) -> list[dict[str, Any]]:
    """Greedy generations for ``prompts``, appended to ``out_dir/samples.jsonl``; printed."""
    from ..inference import generate_text

    rows = []
    for p in prompts:
        try:
            text = generate_text(model, tokenizer, p["prompt"], spec.kind, max_new_tokens)
        except (AttributeError, TypeError, RuntimeError, StopIteration) as e:
            print(f"samples skipped: {type(model).__name__} cannot generate ({type(e).__name__}: "
                  f"{e})")
            return []
        rows.append({"epoch": epoch, **p, "generated": text})
    with open(out_dir / SAMPLES_FILE, "a", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    for r in rows:
        print(f"  sample: {r['prompt']!r:.60} -> {r['generated']!r:.80}")
    return rows


def report_pooling(spec: Any) -> tuple[str, ...]:
    """Poolings of the geometry report for ``spec``'s model kind."""
    return ("last", "mean") if spec.kind == "causal" else ("mean",)


def report_keys(spec: Any) -> tuple[str, ...]:
    """Batch keys the report's forward needs (seq2seq: the labels drive the decoder)."""
    return ("input_ids", "attention_mask") + (("labels",) if spec.kind == "seq2seq" else ())


def lora_for(spec: Any, model: nn.Module, r: int, alpha: int, dropout: float) -> nn.Module:
    """``model`` with PEFT LoRA adapters on the architecture's default attention projections."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, task_type=spec.task_type)
    try:
        return get_peft_model(model, lora)
    except ValueError as e:
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        raise ValueError(f"--method lora: PEFT has no default target modules for model type "
                         f"{model_type!r} ({e})") from None
