"""Very sparse random projection (Li, Hastie & Church 2006), from the counter RNG.

With ``s = √D`` every column holds ``k = ⌈D/s⌉ = ⌈√D⌉`` non-zeros ``±1/√k`` (= ``±√(s/D)``) at rows
drawn uniformly with replacement. Choice: the paper's Binomial(D, 1/s) count per column is
replaced by its mean, so every column has norm exactly 1 (up to the rare repeated row) and the
state is a fixed ``d × k`` table. Row ``(j, t)`` is ``⌊w·D / 2³²⌋`` for the word
``w = bits(stream "sparse/rows", j·k + t)``; its sign is the top bit of ``bits(stream
"sparse/signs", j·k + t)``. State: one int32 per non-zero (the sign folded into the index).
"""

from __future__ import annotations

import math

import torch

from . import rng
from .base import Projection

SPARSE_MAX_NNZ = 2**28


class SparseProjection(Projection):
    kind = "sparse"
    _state_names = ("signed_rows",)

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
