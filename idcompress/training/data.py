"""Data for a fine-tuning run: load + tokenise the task's splits, and the data loaders.

Text tasks are tokenised with the model's tokenizer once, up front; image tasks
(:mod:`.images`) keep their images and turn each batch into ``pixel_values`` in the collate, so
:func:`load_data` gives both the splits and the collate function the loaders use.

Data order: the training set is shuffled once per epoch by :class:`EpochShuffleSampler`, a
permutation drawn from a ``torch.Generator`` seeded by ``(seed, epoch)``. The order of epoch
``e`` is therefore a pure function of the seed and ``e``: a resumed run rebuilds it without any
saved sampler state, and every process of a multi-process run draws the same permutation before
Accelerate shards it. Both loaders also get their own seeded generator, so that creating an
iterator never draws from torch's global RNG (which drives dropout and is restored on resume).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import datasets
import torch
from torch.utils.data import DataLoader, Sampler

from ..data import TaskSpec, load_task_data, make_collator, tokenize_dataset
from .lm_options import parse_validation_files
from .options import FinetuneOptions


def _derive_seed(*parts: object) -> int:
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << 63) - 1)


class EpochShuffleSampler(Sampler[int]):
    """Indices ``0..n-1`` in a random order that depends only on ``(seed, epoch)``."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(_derive_seed("idcompress/data-order", self.seed, epoch))
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> Iterator[int]:
        return iter(self.permutation(self.epoch).tolist())

    def __len__(self) -> int:
        return self.n


@dataclass
class TaskData:
    """The splits of a run and how a list of their rows becomes a batch of tensors.

    ``image_preprocessing``: the resize/normalisation of an image task when it is not a
    transformers image processor (``{"size", "mean", "std"}``), else ``None``.
    """

    spec: TaskSpec
    train: datasets.Dataset
    evals: dict[str, datasets.Dataset]
    collate: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]
    image_preprocessing: dict[str, Any] | None = None
    tokenizer: Any = None  # text tasks
    samples: list[dict[str, str]] | None = None  # generative tasks: prompts of the samples


def load_data(options: FinetuneOptions) -> TaskData:
    """Splits and collate of ``options.task``: tokenised text, or images (``pixel_values``)."""
    if options.is_lm_task:
        return load_lm_task_data(options)
    if options.is_image_task:
        from ..models.pixels import image_transform_for
        from .images import load_image_splits

        transform, prep = image_transform_for(options.model, options.image_size)
        spec, train, evals = load_image_splits(options)
        return TaskData(spec, train, evals, transform.collate, prep)
    from ..models.loading import load_tokenizer

    tokenizer = load_tokenizer(options.model)  # errors name the model, in one line
    spec, train, evals = load_splits(options, tokenizer)
    return TaskData(spec, train, evals, make_collator(tokenizer), tokenizer=tokenizer)


def load_lm_task_data(options: FinetuneOptions) -> TaskData:
    """A generative task: raw splits (:mod:`idcompress.data.lm`), tokenised with the model's
    tokenizer (a padding token set when it has none, stated in the log)."""
    from accelerate import PartialState
    from transformers import AutoTokenizer

    from ..data.lm import LMCollator, ensure_pad_token, load_lm_data, sample_prompts, tokenize_lm
    from ..models import resolve_model_name

    spec, raw = load_lm_data(
        options.task, train_file=options.train_file,
        validation_file=parse_validation_files(options.validation_file),
        data_dir=options.data_dir, dataset=options.dataset, dataset_config=options.dataset_config,
        text_columns=options.text_columns, max_train_samples=options.max_train_samples,
        max_eval_samples=options.max_eval_samples, seed=options.seed)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_model_name(options.model))
    except (OSError, ValueError) as e:
        raise ValueError(f"--model {options.model!r}: its tokenizer does not load: {e}") from None
    msg = ensure_pad_token(tokenizer, f"the tokenizer of {options.model!r}")
    if msg and PartialState().is_main_process:
        print(msg)
    tok = tokenize_lm(raw, spec, tokenizer, options.max_length, options.packing)
    samples = sample_prompts(spec, raw[spec.eval_splits[0]], tokenizer, options.num_samples)
    return TaskData(spec, tok["train"], {s: tok[s] for s in spec.eval_splits},
                    LMCollator(tokenizer.pad_token_id), tokenizer=tokenizer, samples=samples)


def load_splits(options: FinetuneOptions, tokenizer
                ) -> tuple[TaskSpec, datasets.Dataset, dict[str, datasets.Dataset]]:
    """(task spec, tokenised train split, ``{eval split: tokenised split}``)."""
    spec, dsets = load_task_data(
        options.task,
        train_file=options.train_file,
        validation_file=parse_validation_files(options.validation_file),
        data_dir=options.data_dir,
        text_columns=options.text_columns,
        label_column=options.label_column,
        max_train_samples=options.max_train_samples,
        max_eval_samples=options.max_eval_samples,
        seed=options.seed,
    )
    wanted = ["train", *spec.eval_splits]
    dsets = datasets.DatasetDict({s: dsets[s] for s in wanted})
    tok = tokenize_dataset(dsets, spec, tokenizer, max_length=options.max_length)
    return spec, tok["train"], {s: tok[s] for s in spec.eval_splits}


def make_loaders(train: datasets.Dataset, evals: dict[str, datasets.Dataset],
                 collate: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
                 batch_size: int, seed: int
                 ) -> tuple[DataLoader, dict[str, DataLoader], EpochShuffleSampler]:
    """Training loader (shuffled per epoch), one sequential loader per eval split, the sampler."""
    sampler = EpochShuffleSampler(len(train), seed)
    train_dl = DataLoader(
        train, batch_size=batch_size, sampler=sampler, collate_fn=collate,
        generator=torch.Generator().manual_seed(_derive_seed("idcompress/train-loader", seed)),
    )
    eval_dls = {
        name: DataLoader(
            ds, batch_size=batch_size, shuffle=False, collate_fn=collate,
            generator=torch.Generator().manual_seed(_derive_seed("idcompress/eval-loader", seed)),
        )
        for name, ds in evals.items()
    }
    return train_dl, eval_dls, sampler
