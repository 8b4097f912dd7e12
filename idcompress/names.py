"""Names shared by the command line, the data, training and the adapter, importable without torch,
datasets or peft: projection choices, vector dtypes, the PEFT method name, generative task names."""

#: ``IntrinsicConfig.projection`` values; "said" = Fastfood + one learned scale per tuned tensor
PROJECTION_CHOICES = ("said", "fastfood", "dense", "sparse")
#: dtypes a checkpoint may store ``theta_d`` / ``said_lambda`` in
VECTOR_DTYPES = ("float32", "float16", "bfloat16")
#: PEFT's name for this method (``peft_type`` in ``adapter_config.json``)
PEFT_TYPE = "INTRINSIC"
#: PEFT method name and parameter prefix
METHOD_NAME = "intrinsic"
PREFIX = "intrinsic_"

#: generative tasks → the kind of model they train
LM_TASKS: dict[str, str] = {"text/causal-lm": "causal", "text/seq2seq": "seq2seq"}
_LM_TASK_ALIASES = {"causal-lm": "text/causal-lm", "clm": "text/causal-lm",
                    "text/clm": "text/causal-lm", "seq2seq": "text/seq2seq"}


def lm_task_name(task: str | None) -> str | None:
    """The canonical generative task name of ``task`` (case-insensitive), or ``None``."""
    if not isinstance(task, str):
        return None
    key = task.strip().lower()
    key = _LM_TASK_ALIASES.get(key, key)
    return key if key in LM_TASKS else None


def is_lm_task(task: str | None) -> bool:
    """True for ``text/causal-lm`` and ``text/seq2seq`` (and their short forms)."""
    return lm_task_name(task) is not None
