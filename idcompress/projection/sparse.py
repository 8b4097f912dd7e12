"""Very sparse random projection (Li, Hastie & Church 2006), from the counter RNG.

With ``s = √D`` every column holds ``k = ⌈D/s⌉ = ⌈√D⌉`` non-zeros ``±1/√k`` (= ``±√(s/D)``) at rows
drawn uniformly with replacement. Choice: the paper's Binomial(D, 1/s) count per column is
replaced by its mean, so every column has norm exactly 1 (up to the rare repeated row) and the
state is a fixed ``d × k`` table. Row ``(j, t)`` is ``⌊w·D / 2³²⌋`` for the word
``w = bits(stream "sparse/rows", j·k + t)``; its sign is the top bit of ``bits(stream
"sparse/signs", j·k + t)``. State: one int32 per non-zero (the sign folded into the index).

Range operations (core v2): ``u = x``. The first range operation builds a row-sorted view of
the non-zeros (a stable sort by row, so the entries of a row keep the column order of
``_forward``'s ``index_add_``; on the CPU the per-row sums are then bit-identical to it): the
sorted rows and the columns with the sign folded in, both int32, 8 more bytes per non-zero,
kept afterwards. A range finds its non-zeros by binary search in the sorted rows (no row-pointer
array of size D, which would be larger than the non-zeros themselves when D > d·√D).
"""

from __future__ import annotations

import math

import torch

from . import rng
from .base import Projection

SPARSE_MAX_NNZ = 2**28


class SparseProjection(Projection):
    kind = "sparse"
    _state_names = ("signed_rows", "csr_rows", "csr_cols")

    def __init__(self, d: int, D: int, seed: int = 0, max_nnz: int = SPARSE_MAX_NNZ) -> None:
        super().__init__(d, D, seed)
        if D >= 2**31:
            raise ValueError(f"projection='sparse' supports D < 2**31, got D={D}; use 'fastfood'")
        k = math.ceil(math.sqrt(D))
        if d * k > max_nnz:
            raise ValueError(
                f"projection='sparse' with d={d} and D={D} needs {d * k:.3g} non-zeros, above the "
                f"limit of {max_nnz:.3g}; use projection='fastfood'"
            )
        self.k = k
        self._value = 1.0 / math.sqrt(k)
        n = d * k
        rows = (rng.arange_bits(rng.stream_key(seed, "sparse/rows"), 0, n) * D) >> 32
        neg = rng.arange_bits(rng.stream_key(seed, "sparse/signs"), 0, n) >> 31
        # row r with sign − is stored as −(r + 1)
        self.signed_rows = torch.where(neg.bool(), -(rows + 1), rows).to(torch.int32).view(d, k)
        self.csr_rows = self.csr_cols = None  # built by the first range operation

    def _rows_signs(self):
        r = self.signed_rows
        neg = r < 0
        rows = torch.where(neg, -r - 1, r)
        signs = 1.0 - 2.0 * neg.to(torch.float32)
        return rows, signs

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, signs = self._rows_signs()
        vals = (signs * (x * self._value)[:, None]).reshape(-1)
        out = torch.zeros(self.D, dtype=torch.float32, device=x.device)
        return out.index_add_(0, rows.reshape(-1), vals)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        rows, signs = self._rows_signs()
        return (y[rows] * signs).sum(dim=1) * self._value

    # -- range operations (core v2) -------------------------------------------------------------
    def _build_csr(self) -> None:
        """Sorted rows and signed columns (col ``j`` with sign − stored as ``−(j+1)``), int32."""
        rows, signs = self._rows_signs()
        order = torch.sort(rows.reshape(-1), stable=True).indices
        cols = torch.arange(self.d, device=rows.device).repeat_interleave(self.k)[order]
        neg = signs.reshape(-1)[order] < 0
        self.csr_rows = rows.reshape(-1)[order].to(torch.int32).contiguous()
        self.csr_cols = torch.where(neg, -(cols + 1), cols).to(torch.int32).contiguous()

    def _range_entries(self, start: int, stop: int):
        """``(rows − start, cols, signs)`` of the non-zeros in rows ``[start, stop)``."""
        if self.csr_rows is None:
            self._build_csr()
        bounds = torch.tensor([start, stop], dtype=torch.int32, device=self.csr_rows.device)
        lo, hi = torch.searchsorted(self.csr_rows, bounds).tolist()
        r = self.csr_rows[lo:hi].to(torch.int64) - start
        c = self.csr_cols[lo:hi]
        neg = c < 0
        cols = torch.where(neg, -c - 1, c).to(torch.int64)
        return r, cols, 1.0 - 2.0 * neg.to(torch.float32)

    def _range_forward(self, u, start, stop) -> torch.Tensor:
        r, cols, signs = self._range_entries(start, stop)
        vals = signs * (u * self._value)[cols]  # the same float32 products as _forward
        out = torch.zeros(stop - start, dtype=torch.float32, device=u.device)
        return out.index_add_(0, r, vals)

    def _range_apply(self, u, start, stop, theta0, scale, out):
        px = self._range_forward(u, start, stop)
        if scale != 1.0:
            px = px * scale
        if theta0 is not None:
            px = theta0 + px
        return px if out is None else out.copy_(px)

    def _range_adjoint(self, g, start, stop, scale, u):
        r, cols, signs = self._range_entries(start, stop)
        gs = g * scale if scale != 1.0 else g
        gu = torch.zeros(self.d, dtype=torch.float32, device=g.device)
        gu.index_add_(0, cols, gs[r] * signs)
        gu *= self._value
        dot = None
        if u is not None:
            dot = float(torch.dot(g.double(), self._range_forward(u, start, stop).double()))
        return gu, dot
