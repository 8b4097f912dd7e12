"""idcompress: fine-tune pretrained models by training only a d-dimensional vector θ_d.

θ = θ₀ + P·θ_d with P a fixed random projection regenerated from a seed, so a tuned model is
shared as seed + vector. See ``IntrinsicConfig`` and ``get_intrinsic_model``.
"""

from .checkpoint import peft_compat as _peft_compat  # noqa: F401  (registers peft_type "INTRINSIC" with PEFT)
from .tuners import IntrinsicConfig, IntrinsicModel, get_intrinsic_model
from .version import __version__

__all__ = ["IntrinsicConfig", "IntrinsicModel", "__version__", "get_intrinsic_model"]
