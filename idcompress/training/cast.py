"""``--vector-dtype float16|bfloat16``: store θ_d in half precision, and say what it costs.

The loop evaluates the trained model in float32 first, then rounds θ_d (and SAID's scales) to
the chosen dtype in place (:func:`cast_vector`), so the model holds exactly the numbers the
checkpoint will, evaluates again, and reports both scores. The reloaded checkpoint must
reproduce the second evaluation exactly. The projection math stays float32 (docs/design.md, "The reparametrisation"): only the
stored vector is rounded.
"""

from __future__ import annotations

import torch
from torch import nn

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@torch.no_grad()
def cast_vector(model: nn.Module, dtype: str) -> None:
    """Round ``model``'s trained vectors to ``dtype`` (values kept in their own dtype) and record
    ``dtype`` as the checkpoint's ``vector_dtype``."""
    if dtype not in DTYPES:
        raise ValueError(f"--vector-dtype={dtype!r} is unknown; choose one of {list(DTYPES)}")
    for p in (model.theta_d, getattr(model, "said_lambda", None)):
        if p is not None:
            p.copy_(p.to(DTYPES[dtype]).to(p.dtype))
    model.intrinsic_config.vector_dtype = dtype
