"""Plain helpers shared by the test files, imported normally (``from helpers import ...``); the
fixtures built on them live in ``conftest.py``."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

#: the first 8 bytes of every PNG file
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def build_tiny_bert(num_labels: int = 2, seed: int = 0):
    """A small random BERT classifier for mechanics tests (never evidence that tuning works):
    the same weights for the same arguments. Hidden 16, 2 layers, vocabulary of 100."""
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(
        vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32, num_labels=num_labels,
    )
    g = torch.Generator().manual_seed(seed)
    model = BertForSequenceClassification(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def randn(n: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``n`` standard normal values drawn from their own generator seeded with ``seed``."""
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``‖a − b‖ / ‖b‖`` in float64 (``‖a − b‖`` when b is 0)."""
    den = b.double().norm().item()
    return (a.double() - b.double()).norm().item() / (den if den > 0 else 1.0)


def history(run_dir: Path) -> list[dict]:
    """The records of a run's ``metrics.jsonl``, in order."""
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


# --- tiny generative models (GPT-2, Llama, T5) with tokenizers built offline ------------------

LM_NOUNS = ["cat", "dog", "sky", "sea", "sun", "tree", "bird", "fish", "rose", "snow"]
LM_COLOURS = ["black", "brown", "blue", "green", "yellow", "green", "red", "silver", "red",
              "white"]
LM_FRENCH = {"the": "le", "cat": "chat", "dog": "chien", "sky": "ciel", "sea": "mer",
             "sun": "soleil", "tree": "arbre", "bird": "oiseau", "fish": "poisson",
             "rose": "rose", "snow": "neige", "is": "est", "big": "grand", "small": "petit"}


def lm_rows(n: int, seed: int) -> dict[str, list[dict[str, str]]]:
    """``n`` rows of each form: text, prompt/response (noun → its colour), source/target
    (English → word-by-word French). Deterministic in ``seed``."""
    rng = random.Random(seed)
    text, instr, s2s = [], [], []
    for _ in range(n):
        i = rng.randrange(len(LM_NOUNS))
        noun, colour = LM_NOUNS[i], LM_COLOURS[i]
        size = rng.choice(["big", "small"])
        text.append({"text": f"the {noun} is {colour} and the {noun} is {size}"})
        instr.append({"prompt": f"what colour is the {noun} ?", "response": f" {colour}"})
        s2s.append({"source": f"the {noun} is {size}",
                     "target": " ".join(LM_FRENCH[w] for w in f"the {noun} is {size}".split())})
    return {"text": text, "instruction": instr, "seq2seq": s2s}


def write_jsonl(path, rows) -> str:
    """``rows`` (dicts) as JSON lines at ``path``; returns the path as a string."""
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return str(path)


def _lm_corpus() -> list[str]:
    rows = lm_rows(200, 0)
    out = [r["text"] for r in rows["text"]]
    out += [r["prompt"] + r["response"] for r in rows["instruction"]]
    out += [r["source"] + " " + r["target"] for r in rows["seq2seq"]]
    return out


def build_lm_tokenizer(kind: str):
    """A byte-level BPE tokenizer trained on the test corpus, wrapped as a transformers fast
    tokenizer with the special tokens of GPT-2 (no pad), Llama (BOS prepended, no pad) or T5
    (``</s>`` appended, ``<pad>`` = 0)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = {"gpt2": ["<|endoftext|>"], "llama": ["<unk>", "<s>", "</s>"],
                "t5": ["<pad>", "</s>", "<unk>"]}[kind]
    tok = Tokenizer(models.BPE(unk_token=None if kind == "gpt2" else "<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_lm_corpus(), trainer)
    if kind == "llama":
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                       unk_token="<unk>")
    if kind == "t5":
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>",
                                       unk_token="<unk>")
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                   eos_token="<|endoftext|>", unk_token="<|endoftext|>")


def build_tiny_lm(kind: str, folder) -> str:
    """A 2-layer, hidden-32 random GPT-2 / Llama / T5 with its tokenizer, saved to ``folder``."""
    import transformers

    tok = build_lm_tokenizer(kind)
    v = len(tok)
    if kind == "gpt2":
        cfg = transformers.GPT2Config(vocab_size=v, n_positions=128, n_embd=32, n_layer=2,
                                      n_head=2, bos_token_id=0, eos_token_id=0)
        cls = transformers.GPT2LMHeadModel
    elif kind == "llama":
        cfg = transformers.LlamaConfig(vocab_size=v, hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=2, num_attention_heads=4,
                                       num_key_value_heads=2, max_position_embeddings=128,
                                       bos_token_id=1, eos_token_id=2)
        cls = transformers.LlamaForCausalLM
    else:
        cfg = transformers.T5Config(vocab_size=v, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                    num_decoder_layers=2, num_heads=4, pad_token_id=0,
                                    eos_token_id=1, decoder_start_token_id=0)
        cls = transformers.T5ForConditionalGeneration
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = cls(cfg)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)
