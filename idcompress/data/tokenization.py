"""Turn a task's text columns into model inputs, and pad batches dynamically."""

from __future__ import annotations

import datasets
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from .tasks import TaskSpec


def tokenize_dataset(
    dsets: datasets.DatasetDict | datasets.Dataset,
    spec: TaskSpec,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int = 128,
) -> datasets.DatasetDict | datasets.Dataset:
    """Tokenise ``spec.text_fields`` (one sentence or a pair) to ``input_ids``,
    ``attention_mask`` (and ``token_type_ids`` if the tokenizer makes them), truncated to
    ``max_length`` tokens, unpadded; ``spec.label_field`` becomes ``labels`` (int class ids, or
    float32 for regression). All other columns are removed.
    """
    if max_length < 2:
        raise ValueError(f"max_length={max_length} must be >= 2 tokens")
    some = next(iter(dsets.values())) if isinstance(dsets, datasets.DatasetDict) else dsets
    needed = [*spec.text_fields, spec.label_field]
    missing = [c for c in needed if c not in some.column_names]
    if missing:
        raise ValueError(f"tokenize_dataset: columns {missing} of task {spec.name} missing; "
                         f"found {some.column_names}")
    fields, label = spec.text_fields, spec.label_field

    def encode(batch: dict) -> dict:
        enc = tokenizer(*(batch[f] for f in fields), truncation=True, max_length=max_length)
        out = dict(enc)
        out["labels"] = batch[label]
        return out

    out = dsets.map(encode, batched=True, remove_columns=some.column_names, desc="tokenize")
    if spec.is_regression:
        out = out.cast_column("labels", datasets.Value("float32"))
    elif spec.label_names:
        out = out.cast_column("labels", datasets.ClassLabel(names=list(spec.label_names)))
    return out


def make_collator(
    tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int | None = None
) -> DataCollatorWithPadding:
    """Pad a list of tokenised rows to the longest in the batch; returns torch tensors
    (``labels`` int64 for classification, float32 for regression)."""
    return DataCollatorWithPadding(
        tokenizer, padding="longest", pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt"
    )
