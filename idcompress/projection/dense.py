"""Dense Gaussian projection: i.i.d. entries N(0, 1/D), generated from the counter RNG.

Entry ``P[i, j]`` is ``normal(stream "dense", counter i·d + j) / √D``. The matrix is cached when it
has at most ``cache_max_entries`` entries, otherwise regenerated in row chunks on every apply
(O(dD) work). Problems with more than ``max_entries`` entries are refused: use ``fastfood``.

Range operations (core v2): ``u = x``; ``range_apply`` multiplies rows ``[start, stop)`` (cached,
or generated in chunks on the same row grid as ``_forward``) by ``u``, ``range_adjoint`` returns
``P[start:stop]ᵀ (scale·g)`` (summed in float64, returned as float32) and the dot
``⟨g, P[start:stop] u⟩`` (float64 sum of the float32 rows-times-``u`` product, i.e. of the
values ``range_apply`` returns; with a cached matrix this costs one more product). ``range_apply`` equals the
slice of ``_forward(x)`` to float32 round-off, *not* bit for bit: BLAS (MKL) gemv sums a row in
an order that depends on where the row sits in the matrix it is handed and on its alignment
(differences of ~1 ulp, ~1e-7 relative, measured).
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

    # -- range operations (core v2) -------------------------------------------------------------
    def _range_rows(self, start: int, stop: int, whole: bool = True):
        """``(r0, r1, P[r0:r1])`` covering ``[start, stop)``, on the chunk grid of ``_chunks``
        (the cached matrix in one piece when ``whole``)."""
        if self.matrix is not None and whole:
            yield start, stop, self.matrix[start:stop]
            return
        rows = max(1, _CHUNK_ENTRIES // self.d)
        for c0 in range((start // rows) * rows, stop, rows):
            r0, r1 = max(start, c0), min(stop, c0 + rows)
            m = self.matrix[r0:r1] if self.matrix is not None else self._rows(r0, r1)
            yield r0, r1, m

    def _range_apply(self, u, start, stop, theta0, scale, out):
        if out is None:
            out = torch.empty(stop - start, dtype=torch.float32, device=u.device)
        with torch.autocast(device_type=u.device.type, enabled=False):
            for r0, r1, m in self._range_rows(start, stop):
                px = m @ u
                if scale != 1.0:
                    px = px * scale
                dst = out[r0 - start : r1 - start]
                if theta0 is None:
                    dst.copy_(px)
                else:
                    torch.add(theta0[r0 - start : r1 - start], px, out=dst)
        return out

    def _range_adjoint(self, g, start, stop, scale, u):
        # float64 sums, in row chunks: a float32 sum over 10⁴–10⁵ rows is off by ~1e-6 relative
        # (today's whole-D ``_adjoint`` is); dense problems are small, so the cost is minor
        gu = torch.zeros(self.d, dtype=torch.float64, device=g.device)
        dot = torch.zeros((), dtype=torch.float64, device=g.device)
        gs = (g * scale if scale != 1.0 else g).to(torch.float64)
        with torch.autocast(device_type=g.device.type, enabled=False):
            for r0, r1, m in self._range_rows(start, stop, whole=False):
                gu += m.T.to(torch.float64) @ gs[r0 - start : r1 - start]
                if u is not None:
                    dot += torch.dot(g[r0 - start : r1 - start].double(), (m @ u).double())
        return gu.to(torch.float32), (None if u is None else float(dot))
