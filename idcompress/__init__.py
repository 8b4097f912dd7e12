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
from ._peft_hook import install as _install_peft_hook  # noqa: E402
from .version import __version__  # noqa: E402

__all__ = ["IntrinsicConfig", "IntrinsicModel", "__version__", "get_intrinsic_model", "save_checkpoint"]
__getattr__ = _lazy_getattr(__name__, {
    "IntrinsicConfig": ".tuners", "IntrinsicModel": ".tuners", "get_intrinsic_model": ".tuners",
    "save_checkpoint": ".tuners",
})
_install_peft_hook()  # registers the INTRINSIC method with PEFT once peft is imported (never imports it)
