"""Share an intrinsic checkpoint on the Hugging Face Hub with a model card.

``idcompress push CHECKPOINT REPO_ID`` and ``idcompress finetune --push-to-hub REPO_ID`` upload
the checkpoint files (``adapter_config.json`` + ``adapter_model.safetensors``, or the one
``*.idc.safetensors``) and a ``README.md`` model card: the hub's YAML metadata
(``base_model``, ``library_name: peft``, ``tags`` with ``idcompress``, ``intrinsic-dimension``,
the task and the projection, ``pipeline_tag``, and an ``idcompress`` block with task, d, D,
projection, seed, vector dtype, bytes and the score), then how to load it with idcompress and
with PEFT.

``base_model`` must be a hub id: a packaged short name is written as the hub model it packages
(``minilm-l6`` → ``sentence-transformers/all-MiniLM-L6-v2``); a local folder is not a hub id,
so it is left out of the metadata (a warning says so) unless ``base_model_id`` names it.

The score comes from the run (``finetune --push-to-hub``) or from the ``metrics.json`` of the
run folder that holds the checkpoint (``<run>/checkpoint``), when there is one.

:func:`check_can_push` is called before anything is built or trained: ``HF_HUB_OFFLINE`` set,
no token, or a malformed repo id is a ``ValueError`` that says what to do.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

PIPELINE_TAGS = {"SEQ_CLS": "text-classification", "CAUSAL_LM": "text-generation",
                 "SEQ_2_SEQ_LM": "text2text-generation", "IMAGE_CLS": "image-classification"}
_AUTO = {"SEQ_CLS": "AutoModelForSequenceClassification", "CAUSAL_LM": "AutoModelForCausalLM",
         "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM", "IMAGE_CLS": "AutoModelForImageClassification"}
_TASK_NAMES = {"CAUSAL_LM": "text/causal-lm", "SEQ_2_SEQ_LM": "text/seq2seq"}


def check_can_push(repo_id: str, token: str | None = None) -> None:
    """``ValueError`` when ``repo_id`` cannot be pushed to from here (see the module docstring)."""
    from huggingface_hub import constants, get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo_id, str) or repo_id.count("/") > 1:
        raise ValueError(f"repo id {repo_id!r} is not of the form 'owner/name' or 'name'")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise ValueError(f"repo id {repo_id!r} is not a valid hub repo id ({e})") from None
    if constants.HF_HUB_OFFLINE:
        raise ValueError(f"cannot push to {repo_id!r}: HF_HUB_OFFLINE is set, the hub is not "
                         "reachable; unset it, or push later with "
                         "`idcompress push CHECKPOINT REPO_ID`")
    if not (token or get_token()):
        raise ValueError(f"cannot push to {repo_id!r}: no hub token (set HF_TOKEN, run "
                         "`hf auth login`, or pass --token)")


def hub_base_id(name: str | None) -> str | None:
    """``name`` as a hub model id, or ``None`` when it is a local folder (or missing)."""
    if not name:
        return None
    from .models import PACKAGED_HUB_IDS, canonical_base_name

    canonical = canonical_base_name(name)  # a packaged model's short name or folder → its hub id
    if canonical in PACKAGED_HUB_IDS.values():
        return canonical
    if Path(name).expanduser().exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        return None
    return name


def _run_of(checkpoint: Path) -> dict[str, Any] | None:
    f = checkpoint.parent / "metrics.json"
    if not f.is_file():
        return None
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("checkpoint") and Path(data["checkpoint"]).resolve() != checkpoint.resolve():
        return None
    return data


def model_card(cfg, repo_id: str, checkpoint_bytes: int | None = None,
               run: dict[str, Any] | None = None, base_model_id: str | None = None) -> str:
    """The ``README.md`` of ``repo_id`` for a checkpoint with config ``cfg``."""
    import yaml

    base = base_model_id or hub_base_id(cfg.base_model_name_or_path)
    if base is None:
        warnings.warn(f"model card of {repo_id}: the base {cfg.base_model_name_or_path!r} is a "
                      "local folder, not a hub id; 'base_model' is left out of the metadata "
                      "(pass --base-model ID)", stacklevel=2)
    task = (run or {}).get("task") or _TASK_NAMES.get(cfg.task_type) or cfg.task_type
    task_tag = str(task).replace("/", "-").lower() if task else None
    score = metric = None
    if run and run.get("score") is not None:
        score, metric = run["score"], run.get("main_metric")
    block: dict[str, Any] = {"task": task, "task_type": cfg.task_type, "d": cfg.d, "D": cfg.D,
                             "projection": cfg.projection, "seed": cfg.seed,
                             "vector_dtype": cfg.vector_dtype}
    if checkpoint_bytes:
        block["checkpoint_bytes"] = checkpoint_bytes
    if score is not None:
        block.update(score=score, metric=metric)
    meta: dict[str, Any] = {}
    if base:
        meta["base_model"] = base
    meta["library_name"] = "peft"
    meta["tags"] = [t for t in ("idcompress", "intrinsic-dimension", task_tag, cfg.projection)
                    if t]
    if cfg.task_type in PIPELINE_TAGS:
        meta["pipeline_tag"] = PIPELINE_TAGS[cfg.task_type]
    meta["idcompress"] = block
    yaml_text = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)

    shown_base = base or cfg.base_model_name_or_path
    auto = _AUTO.get(cfg.task_type, "AutoModel")
    base_kwargs = f", num_labels={cfg.num_labels}" if cfg.task_type == "SEQ_CLS" else ""
    rows = [("task", f"{task} ({cfg.task_type})"), ("base model", f"`{shown_base}`"),
            ("d (trained numbers)", f"{cfg.d:,}"),
            ("D (parameters tuned through P)", f"{cfg.D:,}" if cfg.D else "?"),
            ("projection", f"{cfg.projection}, seed {cfg.seed}"),
            ("vector dtype", cfg.vector_dtype)]
    if checkpoint_bytes:
        rows.append(("checkpoint size", f"{checkpoint_bytes:,} bytes"))
    if score is not None:
        rows.append(("score", f"{metric} = {score:.4f} (validation)"))
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    name = repo_id.split("/")[-1]
    return f"""---
{yaml_text}---

# {name}

An [idcompress](https://pypi.org/project/idcompress/) checkpoint: `{shown_base}` fine-tuned by
training only **d = {cfg.d:,} numbers**. Every weight is θ₀ + P·θ_d, with θ₀ the frozen base
and P a random projection regenerated from the seed ({cfg.projection}), so this repository holds
the seed and the vector, not the weights.

| | |
|---|---|
{table}

## Load with idcompress

```python
from idcompress import IntrinsicModel

model = IntrinsicModel.from_pretrained("{repo_id}")  # downloads the base, rebuilds P from the seed
plain = model.merge_and_unload()                       # a plain transformers model
```

or from the command line: `idcompress predict {repo_id} --text "..."`.

## Load with PEFT

```python
import idcompress  # registers the INTRINSIC adapter type with PEFT
from peft import PeftModel
from transformers import {auto}

base = {auto}.from_pretrained("{shown_base}"{base_kwargs})
model = PeftModel.from_pretrained(base, "{repo_id}")
```
"""


def push_checkpoint(checkpoint: str | os.PathLike, repo_id: str, run: dict[str, Any] | None = None,
                    token: str | None = None, private: bool | None = None,
                    commit_message: str = "Upload idcompress checkpoint",
                    base_model_id: str | None = None) -> str:
    """Upload ``checkpoint`` (directory or ``*.idc.safetensors``) and its model card to
    ``repo_id``; returns the commit URL."""
    from .checkpoint.hub import upload_checkpoint
    from .checkpoint.size import own_bytes
    from .tuners.loading import read_config

    check_can_push(repo_id, token)
    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    cfg = read_config(path)[0]
    size = own_bytes(path)
    run = run if run is not None else _run_of(path)
    card = model_card(cfg, repo_id, size, run, base_model_id)
    return upload_checkpoint(path, repo_id, card=card, private=private, token=token,
                             commit_message=commit_message, what="push")
