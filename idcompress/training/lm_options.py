"""Checks of the options for generative tasks, trackers and sharing (no torch, no datasets).

Called from :meth:`FinetuneOptions.validate`; every refusal names the flag and its value:

* ``--dataset``/``--dataset-config`` (a hub dataset by name), ``--packing``, ``--num-samples``
  and ``--max-new-tokens`` are for ``text/causal-lm`` / ``text/seq2seq`` (``--packing`` for
  causal only); ``--label-column`` is not (a generative task has no label).
* ``--vector-dtype float16|bfloat16`` and ``--push-to-hub`` are for ``--method intrinsic`` (the
  seed + vector checkpoint).
* ``--validation-file`` entries are all paths or all ``split=path``.
"""

from __future__ import annotations

import re
from typing import Any

from ..flags import check_choice, flag
from ..names import LM_TASKS, VECTOR_DTYPES, lm_task_name

#: canonical generative task name → model kind
REPORT_TO = ("tensorboard", "wandb", "mlflow", "all", "none")
_SPLIT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_REPO_ID = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*/)?[A-Za-z0-9][A-Za-z0-9._-]*$")


def parse_validation_files(entries: list[str] | str | None
                           ) -> str | list[str] | dict[str, str] | None:
    """``--validation-file`` values → one path, a list of paths, or ``{split: path}``.

    An entry ``name=path`` names its split when ``name`` looks like a split name and the whole
    entry is not itself an existing file.
    """
    import os

    if entries is None or isinstance(entries, str):
        return entries
    named, plain = {}, []
    for e in entries:
        name, sep, path = e.partition("=")
        if sep and _SPLIT_NAME.match(name) and path and not os.path.exists(e):
            if name in named:
                raise ValueError(f"--validation-file {e!r}: split {name!r} is given twice")
            named[name] = path
        else:
            plain.append(e)
    if named and plain:
        raise ValueError(f"--validation-file: give every file as split=path or none; got "
                         f"{list(entries)}")
    if named:
        return named
    return plain[0] if len(plain) == 1 else plain


def validate_lm_and_sharing(o: Any) -> None:
    """``ValueError`` naming the flag for options that do not fit the task or method."""
    check_choice("report_to", o.report_to, REPORT_TO)
    check_choice("vector_dtype", o.vector_dtype, VECTOR_DTYPES)
    if o.vector_dtype != "float32" and o.method != "intrinsic":
        raise ValueError(f"--vector-dtype {o.vector_dtype} is for --method intrinsic (it stores "
                         f"theta_d); --method {o.method} saves the model's own weights")
    if o.push_to_hub is not None:
        if o.method != "intrinsic":
            raise ValueError(f"--push-to-hub {o.push_to_hub!r} shares seed + vector checkpoints "
                             f"(--method intrinsic); --method {o.method} is not one")
        if not _REPO_ID.match(o.push_to_hub) or "--" in o.push_to_hub or ".." in o.push_to_hub:
            raise ValueError(f"--push-to-hub {o.push_to_hub!r} is not a hub repo id "
                             "('owner/name' or 'name')")
    if o.num_samples < 0:
        raise ValueError(f"--num-samples={o.num_samples} must be >= 0")
    parse_validation_files(o.validation_file)
    name = lm_task_name(o.task)
    if name is None:
        defaults = {"dataset": None, "dataset_config": None, "packing": False,
                    "num_samples": 3, "max_new_tokens": 32}
        for field, default in defaults.items():
            if getattr(o, field) != default:
                raise ValueError(f"{flag(field)}={getattr(o, field)!r} is for the generative "
                                 f"tasks {' and '.join(LM_TASKS)}; task {o.task!r} is not one")
        return
    if o.dataset_config is not None and o.dataset is None:
        raise ValueError(f"--dataset-config {o.dataset_config!r} needs --dataset NAME")
    if o.dataset is not None and (o.train_file or o.validation_file or o.data_dir):
        raise ValueError(f"--dataset {o.dataset!r} and local files (--train-file/"
                         "--validation-file/--data-dir) exclude each other; choose one source")
    if o.packing and LM_TASKS[name] != "causal":
        raise ValueError(f"--packing is for text/causal-lm; {name} rows are source/target pairs")
    if o.label_column is not None:
        raise ValueError(f"--label-column {o.label_column!r}: {name} has no label; name the "
                         "text columns with --text-columns")
    if o.text_columns is not None:
        allowed = (2,) if LM_TASKS[name] == "seq2seq" else (1, 2)
        if len(o.text_columns) not in allowed:
            what = ("SOURCE TARGET" if allowed == (2,) else "TEXT, or PROMPT RESPONSE")
            raise ValueError(f"--text-columns {o.text_columns}: {name} takes {what}")
