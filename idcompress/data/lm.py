"""Data of the generative tasks: causal language modelling, instruction tuning and seq2seq.

Tasks (``--task``):

* ``text/causal-lm`` (decoder-only models: GPT-2, Llama, …). Either a ``text`` column
  (language modelling: every token carries loss) or ``prompt`` + ``response`` columns
  (instruction tuning: only the response tokens carry loss; the prompt's labels are ``-100``).
  When a file has both forms, ``prompt`` + ``response`` wins (the log says so); pass
  ``--text-columns text`` to model the whole text instead.
* ``text/seq2seq`` (encoder-decoder models: T5, BART, …): ``source`` → ``target``.

``--text-columns`` names your columns in that order (one column: text; two: prompt and response,
or source and target). Accepted aliases when it is not given: prompt ← ``instruction``,
``question``; response ← ``completion``, ``output``, ``answer``; source ← ``input``;
target ← ``output``.

Sources: ``train_file`` + ``validation_file`` (``.jsonl``/``.json``/``.csv``/``.tsv``/
``.parquet``, or ``.txt``: one example per non-empty line, read as the ``text`` column),
``data_dir`` (``train.*`` and ``validation.*``/``dev.*``/``valid.*``/``val.*``), or a hub
dataset ``dataset`` (+ ``dataset_config``), whose ``validation`` split is used (else
``valid``, ``dev`` or ``test``, named in the log).

Tokenisation (choices written down here):

* ``text``: the tokenizer's own special tokens (a BOS for Llama) + the text + EOS; labels =
  input ids.
* instruction: ``tokenizer(prompt)`` (special tokens as the tokenizer adds them) followed by
  ``tokenizer(response, add_special_tokens=False)`` + EOS. Prompt and response are tokenised
  separately, so generation from ``tokenizer(prompt)`` (``idcompress predict``) continues exactly
  where training put the response. The row is truncated on the right to ``max_length``; a row
  whose prompt fills ``max_length`` has no response token left and is dropped (with a warning).
* seq2seq: ``tokenizer(source)`` and ``tokenizer(target)`` (T5 appends its ``</s>``), each
  truncated to ``max_length``.
* ``packing`` (causal only): the rows of a split, each tokenised as above, are concatenated and
  cut into blocks of ``max_length`` tokens (the last, shorter block is kept), as transformers'
  ``run_clm`` does; the label mask travels with the tokens. Without packing each row is one
  sequence, truncated.

Padding (:func:`ensure_pad_token`): a tokenizer without a padding token (GPT-2, Llama) gets its
EOS token (else its UNK token) as padding token; the collate masks padded positions out of the
attention and the loss (labels ``-100``), so that choice never changes a loss. No token is added:
a new token would change the embedding matrix and so the base the checkpoint is tied to.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from ..names import LM_TASKS, is_lm_task, lm_task_name

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100

#: field → accepted column names, first match wins
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "text": ("text",),
    "prompt": ("prompt", "instruction", "question"),
    "response": ("response", "completion", "output", "answer"),
    "source": ("source", "input"),
    "target": ("target", "output"),
}
LM_EXTENSIONS = (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".txt")
HUB_EVAL_SPLITS = ("validation", "valid", "dev", "test")
__all__ = ["LM_TASKS", "LMCollator", "LMTaskSpec", "ensure_pad_token", "is_lm_task",
           "lm_task_name", "load_lm_data", "read_lm_file", "resolve_columns", "sample_prompts",
           "tokenize_lm"]


@dataclass(frozen=True, kw_only=True)
class LMTaskSpec:
    """A generative task, shaped like :class:`~idcompress.data.tasks.TaskSpec` where the loop
    reads it (name, metrics, main metric, eval splits); scored by token loss and perplexity,
    lower is better."""

    name: str
    kind: str  # "causal" | "seq2seq"
    format: str  # "text" | "instruction" | "seq2seq"
    text_fields: tuple[str, ...]
    eval_splits: tuple[str, ...] = ("validation",)
    metrics: tuple[str, ...] = ("loss", "perplexity")
    main_metric: str = "perplexity"
    greater_is_better: bool = False
    generative: bool = True
    is_regression: bool = False
    label_names: tuple[str, ...] = ()
    num_labels: int | None = None
    test_splits: tuple[str, ...] = ()

    @property
    def task_type(self) -> str:
        """PEFT's task type of the model: ``CAUSAL_LM`` or ``SEQ_2_SEQ_LM``."""
        return "CAUSAL_LM" if self.kind == "causal" else "SEQ_2_SEQ_LM"

    @property
    def prompt_field(self) -> str:
        """The column a generation starts from (``text`` rows: the first half of the text)."""
        return self.text_fields[0]


# --- padding -----------------------------------------------------------------------------------


def ensure_pad_token(tokenizer, where: str = "the tokenizer") -> str | None:
    """Give ``tokenizer`` a padding token when it has none (EOS, else UNK); the message to log.

    ``ValueError`` when it has neither (adding a token would change the model's embeddings).
    """
    if tokenizer.pad_token is not None:
        return None
    for kind in ("eos", "unk"):
        tok = getattr(tokenizer, f"{kind}_token")
        if tok is not None:
            tokenizer.pad_token = tok
            return (f"{where} has no padding token: using its {kind.upper()} token {tok!r} "
                    f"(id {tokenizer.pad_token_id}) for padding; padded positions are masked out "
                    "of attention and loss")
    raise ValueError(f"{where} has no padding, EOS or UNK token; give it a pad_token "
                     "(tokenizer.pad_token = ...) and save it with the model")


# --- reading -----------------------------------------------------------------------------------


def read_lm_file(path: str | os.PathLike) -> datasets.Dataset:
    """A local file as a dataset: ``.txt`` → one ``text`` row per non-empty line; the other
    extensions through :func:`idcompress.data.readers.read_file`."""
    p = Path(path)
    if p.suffix.lower() == ".txt":
        if not p.is_file():
            raise ValueError(f"data file {str(p)!r} does not exist")
        try:
            lines = p.read_text(encoding="utf-8-sig").splitlines()
        except UnicodeDecodeError as e:
            raise ValueError(f"data file {str(p)!r} is not UTF-8 text (byte {e.start})") from None
        rows = [line for line in lines if line.strip()]
        if not rows:
            raise ValueError(f"data file {str(p)!r} has no non-empty line")
        return datasets.Dataset.from_dict({"text": rows})
    from .readers import read_file

    return read_file(p)


def _pick(columns: Sequence[str], field: str) -> str | None:
    return next((c for c in COLUMN_ALIASES[field] if c in columns), None)


def resolve_columns(kind: str, columns: Sequence[str], text_columns: Sequence[str] | None,
                    where: str) -> tuple[str, dict[str, str]]:
    """(format, {field: source column}) of a split; ``ValueError`` naming ``where`` otherwise."""
    columns = list(columns)
    if text_columns:
        cols = list(text_columns)
        missing = [c for c in cols if c not in columns]
        if missing:
            raise ValueError(f"{where}: --text-columns {missing} not found; columns found: "
                             f"{columns}")
        if kind == "seq2seq":
            if len(cols) != 2:
                raise ValueError(f"--text-columns {cols}: text/seq2seq needs 2 columns (source, "
                                 "target)")
            return "seq2seq", {"source": cols[0], "target": cols[1]}
        if len(cols) == 1:
            return "text", {"text": cols[0]}
        if len(cols) == 2:
            return "instruction", {"prompt": cols[0], "response": cols[1]}
        raise ValueError(f"--text-columns {cols}: text/causal-lm takes 1 column (text) or 2 "
                         "(prompt, response)")
    if kind == "seq2seq":
        src, tgt = _pick(columns, "source"), _pick(columns, "target")
        if src and tgt and src != tgt:
            return "seq2seq", {"source": src, "target": tgt}
        raise ValueError(f"{where}: text/seq2seq needs columns 'source' and 'target' (or "
                         f"--text-columns SRC TGT); columns found: {columns}")
    prompt, response = _pick(columns, "prompt"), _pick(columns, "response")
    text = _pick(columns, "text")
    if prompt and response:
        if text:
            logger.warning("%s: columns %r + %r and %r found: instruction tuning (loss on the "
                           "response only); pass --text-columns %s to model the whole text",
                           where, prompt, response, text, text)
        return "instruction", {"prompt": prompt, "response": response}
    if text:
        return "text", {"text": text}
    raise ValueError(f"{where}: text/causal-lm needs a 'text' column (language modelling) or "
                     f"'prompt' + 'response' columns (instruction tuning), or --text-columns; "
                     f"columns found: {columns}")


def _normalise(ds: datasets.Dataset, mapping: dict[str, str], where: str) -> datasets.Dataset:
    """Only the mapped columns, renamed to their fields, as strings; rows with a missing or
    empty value dropped (warned)."""
    ds = ds.select_columns(list(mapping.values()))
    renames = {src: f for f, src in mapping.items() if src != f}
    if renames:
        ds = ds.rename_columns(renames)
    fields = list(mapping)
    for f in fields:
        bad = next((v for v in ds[f] if v is not None and not isinstance(v, str)), None)
        if isinstance(bad, (list, dict)):
            raise ValueError(f"{where}: column {mapping[f]!r} holds lists/objects, e.g. "
                             f"{bad!r:.80}; it must hold strings")
        if bad is not None:
            ds = ds.cast_column(f, datasets.Value("string"))
    n = len(ds)
    ds = ds.filter(lambda b: [all(isinstance(b[f][i], str) and b[f][i].strip() for f in fields)
                              for i in range(len(b[fields[0]]))], batched=True)
    if len(ds) < n:
        logger.warning("%s: dropped %d of %d rows with a missing or empty %s", where, n - len(ds),
                       n, " or ".join(repr(mapping[f]) for f in fields))
    if len(ds) == 0:
        raise ValueError(f"{where}: no row with non-empty {[mapping[f] for f in fields]}")
    return ds


def _split_files(validation_file) -> dict[str, Path]:
    if validation_file is None:
        return {}
    if isinstance(validation_file, (str, os.PathLike)):
        return {"validation": Path(validation_file)}
    if isinstance(validation_file, Mapping):
        return {str(k): Path(v) for k, v in validation_file.items()}
    paths = [Path(p) for p in validation_file]
    if len(paths) == 1:
        return {"validation": paths[0]}
    return {f"validation_{i + 1}": p for i, p in enumerate(paths)}


def _data_dir_files(data_dir: Path) -> dict[str, Path]:
    from .layouts import split_stems

    if not data_dir.is_dir():
        raise ValueError(f"--data-dir {str(data_dir)!r} does not exist or is not a folder")
    out: dict[str, Path] = {}
    for split in ("train", "validation"):
        found = [data_dir / f"{s}{e}" for s in split_stems(split) for e in LM_EXTENSIONS
                 if (data_dir / f"{s}{e}").is_file()]
        if len(found) > 1:
            raise ValueError(f"--data-dir {str(data_dir)!r}: several files for split {split!r}: "
                             f"{[p.name for p in found]}; keep one")
        if not found:
            listing = sorted(p.name for p in data_dir.iterdir())[:30]
            raise ValueError(f"--data-dir {str(data_dir)!r}: no {split} file (name.ext with ext "
                             f"one of {list(LM_EXTENSIONS)}); found {listing}")
        out[split] = found[0]
    return out


def _from_hub(dataset: str, config: str | None) -> dict[str, tuple[datasets.Dataset, str]]:
    where = f"--dataset {dataset!r}" + (f" --dataset-config {config!r}" if config else "")
    try:
        dd = datasets.load_dataset(dataset, config)
    except Exception as e:  # offline, unknown name, missing config: all mean "cannot load it"
        raise ValueError(f"{where} could not be loaded ({type(e).__name__}: {e}); offline, use "
                         "local files (--train-file/--validation-file)") from None
    if "train" not in dd:
        raise ValueError(f"{where} has no 'train' split (splits: {sorted(dd)})")
    ev = next((s for s in HUB_EVAL_SPLITS if s in dd), None)
    if ev is None:
        raise ValueError(f"{where} has no evaluation split ({' / '.join(HUB_EVAL_SPLITS)}); "
                         f"splits: {sorted(dd)}")
    if ev != "validation":
        logger.warning("%s: no 'validation' split; evaluating on %r", where, ev)
    return {"train": (dd["train"], f"{where} split 'train'"),
            "validation": (dd[ev], f"{where} split {ev!r}")}


def load_lm_data(task: str, train_file=None, validation_file=None, data_dir=None,
                 dataset: str | None = None, dataset_config: str | None = None,
                 text_columns: Sequence[str] | None = None, max_train_samples: int | None = None,
                 max_eval_samples: int | None = None, seed: int = 0
                 ) -> tuple[LMTaskSpec, datasets.DatasetDict]:
    """The raw splits of a generative task, with the canonical columns of its format.

    ``validation_file``: one path, a list (``validation_1``, ``validation_2``, … when several) or
    ``{split: path}``. Every split must have the same format (``text`` or prompt/response).
    """
    name = lm_task_name(task)
    if name is None:
        raise ValueError(f"task {task!r} is not a generative task ({', '.join(LM_TASKS)})")
    kind = LM_TASKS[name]
    if train_file is not None or validation_file is not None:
        if train_file is None or validation_file is None:
            missing = "--train-file" if train_file is None else "--validation-file"
            raise ValueError(f"local files need both --train-file and --validation-file; "
                             f"{missing} is missing")
        files = {"train": Path(train_file), **_split_files(validation_file)}
        raw = {s: (read_lm_file(f), str(f)) for s, f in files.items()}
    elif data_dir is not None:
        raw = {s: (read_lm_file(f), str(f)) for s, f in _data_dir_files(Path(data_dir)).items()}
    elif dataset is not None:
        raw = _from_hub(dataset, dataset_config)
    else:
        raise ValueError(f"task {name} needs data: --train-file and --validation-file, "
                         "--data-dir, or a hub dataset --dataset NAME [--dataset-config CFG]")
    fmt, out = None, {}
    for split, (ds, where) in raw.items():
        f, mapping = resolve_columns(kind, ds.column_names, text_columns, where)
        if fmt is not None and f != fmt:
            raise ValueError(f"{where}: {f} columns {list(mapping.values())}, but the train "
                             f"split is {fmt}; every split needs the same columns")
        fmt = f
        ds = _normalise(ds, mapping, where)
        limit = max_train_samples if split == "train" else max_eval_samples
        if limit is not None and limit < len(ds):
            ds = ds.shuffle(seed=seed).select(range(limit))
        out[split] = ds
    fields = {"text": ("text",), "instruction": ("prompt", "response"),
              "seq2seq": ("source", "target")}[fmt]
    spec = LMTaskSpec(name=name, kind=kind, format=fmt, text_fields=fields,
                      eval_splits=tuple(s for s in out if s != "train"))
    return spec, datasets.DatasetDict(out)


# --- tokenisation ------------------------------------------------------------------------------


def _encode_rows(spec: LMTaskSpec, tokenizer, batch: dict[str, list[str]], max_length: int,
                 truncate: bool) -> dict[str, list[list[int]]]:
    eos = tokenizer.eos_token_id
    ids_out, labels_out = [], []
    if spec.format == "seq2seq":
        src = tokenizer(batch["source"], truncation=True, max_length=max_length)["input_ids"]
        tgt = tokenizer(text_target=batch["target"], truncation=True,
                        max_length=max_length)["input_ids"]
        return {"input_ids": src, "labels": tgt}
    if spec.format == "text":
        for ids in tokenizer(batch["text"])["input_ids"]:
            ids = list(ids)
            if eos is not None and (not ids or ids[-1] != eos):
                ids.append(eos)
            if truncate:
                ids = ids[:max_length]
            ids_out.append(ids)
            labels_out.append(list(ids))
        return {"input_ids": ids_out, "labels": labels_out}
    prompts = tokenizer(batch["prompt"])["input_ids"]
    responses = tokenizer(batch["response"], add_special_tokens=False)["input_ids"]
    for p, r in zip(prompts, responses):
        r = list(r) + ([eos] if eos is not None else [])
        ids = list(p) + r
        labels = [IGNORE_INDEX] * len(p) + r
        if truncate:
            ids, labels = ids[:max_length], labels[:max_length]
        ids_out.append(ids)
        labels_out.append(labels)
    return {"input_ids": ids_out, "labels": labels_out}


def _pack(batch: dict[str, list[list[int]]], block: int) -> dict[str, list[list[int]]]:
    ids = [t for row in batch["input_ids"] for t in row]
    labels = [t for row in batch["labels"] for t in row]
    starts = range(0, len(ids), block)
    return {"input_ids": [ids[i:i + block] for i in starts],
            "labels": [labels[i:i + block] for i in starts]}


def tokenize_lm(dsets: datasets.DatasetDict, spec: LMTaskSpec, tokenizer, max_length: int,
                packing: bool = False) -> datasets.DatasetDict:
    """``input_ids``, ``attention_mask`` and ``labels`` (``-100`` where no loss) of every split
    (see the module docstring); rows with nothing to learn are dropped with a warning."""
    if packing and spec.kind != "causal":
        raise ValueError("--packing is for text/causal-lm (seq2seq rows are source/target pairs)")
    out = {}
    shift = 1 if spec.kind == "causal" else 0  # a causal model predicts token t from t-1
    for split, ds in dsets.items():
        enc = ds.map(lambda b: _encode_rows(spec, tokenizer, b, max_length, not packing),
                     batched=True, remove_columns=ds.column_names, desc=f"tokenize {split}")
        if packing:
            # one batch = the whole split, so blocks never depend on datasets' batch size
            enc = enc.map(lambda b: _pack(b, max_length), batched=True, batch_size=None,
                          desc=f"pack {split}")
        n = len(enc)
        enc = enc.filter(lambda b: [sum(t != IGNORE_INDEX for t in lab[shift:]) > 0
                                    for lab in b["labels"]], batched=True)
        if len(enc) < n:
            logger.warning("%s split %r: dropped %d of %d sequences with no token to predict "
                           "(prompt at least --max-length %d tokens, or a text of one token)",
                           spec.name, split, n - len(enc), n, max_length)
        if len(enc) == 0:
            raise ValueError(f"{spec.name} split {split!r}: no sequence has a token to predict "
                             f"at --max-length {max_length}")
        enc = enc.map(lambda b: {"attention_mask": [[1] * len(r) for r in b["input_ids"]]},
                      batched=True, desc=f"mask {split}")
        out[split] = enc
    return datasets.DatasetDict(out)


class LMCollator:
    """Pads ``input_ids`` (pad token), ``attention_mask`` (0) and ``labels`` (-100) on the right;
    for seq2seq the labels are padded to their own length."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = int(pad_token_id)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        def pad(key: str, value: int) -> torch.Tensor:
            n = max(len(r[key]) for r in rows)
            return torch.tensor([list(r[key]) + [value] * (n - len(r[key])) for r in rows],
                                dtype=torch.long)

        return {"input_ids": pad("input_ids", self.pad_token_id),
                "attention_mask": pad("attention_mask", 0),
                "labels": pad("labels", IGNORE_INDEX)}


def sample_prompts(spec: LMTaskSpec, ds: datasets.Dataset, tokenizer, n: int
                   ) -> list[dict[str, str]]:
    """Up to ``n`` ``{"prompt", "reference"}`` pairs from a raw eval split, for the greedy
    samples of a run: the prompt/source and its response/target, or for ``text`` rows the
    first half of the text's tokens and the rest."""
    out = []
    for row in ds.select(range(min(n, len(ds)))):
        if spec.format == "instruction":
            out.append({"prompt": row["prompt"], "reference": row["response"]})
        elif spec.format == "seq2seq":
            out.append({"prompt": row["source"], "reference": row["target"]})
        else:
            ids = tokenizer(row["text"], add_special_tokens=False)["input_ids"]
            half = max(1, len(ids) // 2)
            out.append({"prompt": tokenizer.decode(ids[:half]),
                        "reference": tokenizer.decode(ids[half:])})
    return out
