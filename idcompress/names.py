"""Names shared by the command line and the adapter, importable without torch or peft: projection
choices, vector dtypes, the PEFT method name."""

#: ``IntrinsicConfig.projection`` values; "said" = Fastfood + one learned scale per tuned tensor
PROJECTION_CHOICES = ("said", "fastfood", "dense", "sparse")
#: dtypes a checkpoint may store ``theta_d`` / ``said_lambda`` in
VECTOR_DTYPES = ("float32", "float16", "bfloat16")
#: PEFT's name for this method (``peft_type`` in ``adapter_config.json``)
PEFT_TYPE = "INTRINSIC"
#: PEFT method name and parameter prefix
METHOD_NAME = "intrinsic"
PREFIX = "intrinsic_"
