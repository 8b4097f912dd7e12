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
from helpers import build_tiny_bert, build_tiny_lm, lm_rows, write_jsonl  # noqa: E402

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


@pytest.fixture(scope="session")
def tiny_bert():
    """Builds a small random BERT classifier for mechanics tests (never evidence that tuning
    works): ``tiny_bert(num_labels=2, seed=0)``, the same weights for the same arguments
    (``helpers.build_tiny_bert``; session-scoped, so module-scoped fixtures can use it)."""
    return build_tiny_bert


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


@pytest.fixture(scope="session")
def lm_files(tmp_path_factory) -> dict[str, str]:
    """40-line training and 8-line validation JSONL files of each form:
    ``{text,instruction,seq2seq}-{train,val}``."""
    d = tmp_path_factory.mktemp("lm-data")
    train, val = lm_rows(40, 1), lm_rows(8, 2)
    out = {}
    for form in train:
        out[f"{form}-train"] = write_jsonl(d / f"{form}-train.jsonl", train[form])
        out[f"{form}-val"] = write_jsonl(d / f"{form}-val.jsonl", val[form])
    return out


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> str:
    return build_tiny_lm("gpt2", tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> str:
    return build_tiny_lm("llama", tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory) -> str:
    return build_tiny_lm("t5", tmp_path_factory.mktemp("tiny-t5"))
