import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as idcompress/__init__.py, before torch loads
# Triton kernels run through the interpreter on CPU-only machines; it must be set before triton is
# first imported (which torch or another test may do before tests/test_fastfood_triton.py loads)
os.environ.setdefault("TRITON_INTERPRET", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from idcompress.models import resolve_model_name

    return resolve_model_name("minilm-l6")


@pytest.fixture(scope="session")
def minilm_tokenizer(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


@pytest.fixture
def minilm_classifier(minilm_path):
    """A fresh packaged MiniLM-L6 with a new 2-class head (the head is not initialised by us)."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging

    logging.set_verbosity_error()
    return AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=2)


def _tiny_bert(num_labels: int = 2, seed: int = 0):
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


@pytest.fixture
def tiny_bert():
    """Builds a small random BERT classifier for mechanics tests (never evidence that tuning
    works): ``tiny_bert(num_labels=2, seed=0)``, the same weights for the same arguments."""
    return _tiny_bert


@pytest.fixture
def base_dir(tmp_path, tiny_bert) -> Path:
    """A pretrained tiny BERT body saved without a classification head, so that the head is new
    (initialised from the seed), as in real use."""
    path = tmp_path / "base"
    tiny_bert().bert.save_pretrained(path)
    return path


#: token ids for the tiny BERT (vocabulary of 100)
TINY_INPUTS = torch.tensor([[1, 5, 7, 9, 2, 0], [1, 3, 3, 8, 2, 0]])


@pytest.fixture
def make_tuned(base_dir):
    """Builds a tuned tiny BERT classifier on ``base_dir``: ``make_tuned(projection="said", d=300,
    seed=0, label_names=None, **config)`` wraps a fresh load of the base and fills θ_d (and SAID's
    λ) with values drawn from ``seed``, so that the vector visibly changes the logits. Eval mode."""
    from idcompress import IntrinsicConfig, get_intrinsic_model
    from idcompress.models.loading import load_base_model

    def make(projection="said", d=300, seed=0, label_names=None, **config):
        base = load_base_model(str(base_dir), "SEQ_CLS", num_labels=2, label_names=label_names)
        cfg = IntrinsicConfig(d=d, projection=projection, seed=seed, base_model_name_or_path=str(base_dir),
                              task_type="SEQ_CLS", num_labels=2, label_names=label_names, **config)
        model = get_intrinsic_model(base, cfg)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            model.theta_d.copy_(torch.randn(model.theta_d.shape, generator=g))
            if model.said_lambda is not None:
                model.said_lambda.copy_(1 + 0.3 * torch.randn(model.said_lambda.shape, generator=g))
        return model.eval()

    return make


@pytest.fixture
def logits():
    """``logits(model, **batch)``: the model's logits in eval mode without gradients, on
    ``TINY_INPUTS`` when no batch is given."""

    def run(model, **batch):
        with torch.no_grad():
            return model.eval()(**(batch or {"input_ids": TINY_INPUTS})).logits

    return run


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
    import random

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


def _write_jsonl(path, rows) -> str:
    import json

    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return str(path)


@pytest.fixture(scope="session")
def lm_files(tmp_path_factory) -> dict[str, str]:
    """40-line training and 8-line validation JSONL files of each form:
    ``{text,instruction,seq2seq}-{train,val}``."""
    d = tmp_path_factory.mktemp("lm-data")
    train, val = lm_rows(40, 1), lm_rows(8, 2)
    out = {}
    for form in train:
        out[f"{form}-train"] = _write_jsonl(d / f"{form}-train.jsonl", train[form])
        out[f"{form}-val"] = _write_jsonl(d / f"{form}-val.jsonl", val[form])
    return out


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


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> str:
    return build_tiny_lm("gpt2", tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> str:
    return build_tiny_lm("llama", tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory) -> str:
    return build_tiny_lm("t5", tmp_path_factory.mktemp("tiny-t5"))
