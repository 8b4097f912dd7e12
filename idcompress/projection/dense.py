"""Dense Gaussian projection: i.i.d. entries N(0, 1/D), generated from the counter RNG.

Entry ``P[i, j]`` is ``normal(stream "dense", counter i·d + j) / √D``. The matrix is cached when it
has at most ``cache_max_entries`` entries, otherwise regenerated in row chunks on every apply
(O(dD) work). Problems with more than ``max_entries`` entries are refused: use ``fastfood``.
"""

from __future__ import annotations

import math

import torch

from . import rng
from .base import Projection

DENSE_MAX_ENTRIES = 2**28  # ≈ 2.7e8 entries (1 GiB in float32)
DENSE_CACHE_MAX_ENTRIES = 2**24  # ≈ 1.7e7 entries (64 MiB) are kept between applies
_CHUNK_ENTRIES = 2**22


class DenseProjection(Projection):
    kind = "dense"
    _state_names = ("matrix",)

    def __init__(
        self,
        d: int,
        D: int,
        seed: int = 0,
        max_entries: int = DENSE_MAX_ENTRIES,
        cache_max_entries: int = DENSE_CACHE_MAX_ENTRIES,
    ) -> None:
        super().__init__(d, D, seed)
        if d * D > max_entries:
            raise ValueError(
                f"projection='dense' with d={d} and D={D} needs d·D = {d * D:.3g} entries "
                f"({d * D * 4 / 2**30:.1f} GiB in float32), above the limit of {max_entries:.3g}; "
                "use projection='fastfood' (or 'said'), which is O(D log d) and stores nothing of size D×d"
            )
        self._key = rng.stream_key(seed, "dense")
        self._scale = 1.0 / math.sqrt(D)
        self.matrix = self._rows(0, D) if d * D <= cache_max_entries else None

    def _rows(self, r0: int, r1: int) -> torch.Tensor:
        z = rng._generate(self._key, r0 * self.d, (r1 - r0) * self.d, self.device, torch.float32, rng.to_normal)
        return (z * self._scale).view(r1 - r0, self.d)

    def _chunks(self):
        rows = max(1, _CHUNK_ENTRIES // self.d)
        for r0 in range(0, self.D, rows):
            r1 = min(self.D, r0 + rows)
            yield r0, r1, (self.matrix[r0:r1] if self.matrix is not None else self._rows(r0, r1))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self._forward_f32(x)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=y.device.type, enabled=False):
            return self._adjoint_f32(y)

    def _forward_f32(self, x: torch.Tensor) -> torch.Tensor:
        if self.matrix is not None:
            return self.matrix @ x
        out = torch.empty(self.D, dtype=torch.float32, device=x.device)
        for r0, r1, m in self._chunks():
            out[r0:r1] = m @ x
        return out

    def _adjoint_f32(self, y: torch.Tensor) -> torch.Tensor:
        if self.matrix is not None:
            return self.matrix.T @ y
        out = torch.zeros(self.d, dtype=torch.float32, device=y.device)
        for r0, r1, m in self._chunks():
            out += m.T @ y[r0:r1]
        return out
