"""idcompress: fine-tune pretrained models by training only a d-dimensional vector θ_d.

θ = θ₀ + P·θ_d with P a fixed random projection regenerated from a seed, so a tuned model is
shared as seed + vector. See ``IntrinsicConfig`` and ``get_intrinsic_model``.
"""

import os as _os

# torch's bundled OpenMP and numba's kernels each keep worker threads; with the default active
# spin-wait they starve each other (and any other process) on small machines: measured 20× slower
# training steps on 2 shared cores. Passive waiting costs little. Must be set before torch loads.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ._lazy import lazy_getattr as _lazy_getattr  # noqa: E402
from .checkpoint import peft_compat as _peft_compat  # noqa: E402,F401  (registers peft_type "INTRINSIC" with PEFT; imports neither torch nor peft)
from .version import __version__  # noqa: E402

__all__ = ["IntrinsicConfig", "IntrinsicModel", "__version__", "get_intrinsic_model"]
__getattr__ = _lazy_getattr(__name__, {
    "IntrinsicConfig": ".tuners", "IntrinsicModel": ".tuners", "get_intrinsic_model": ".tuners",
})
