"""Fastfood projection (Le, Sarlós & Smola 2013; Li et al. 2018), SPEC §2.

``n = 2^⌈log₂ d⌉``, ``K = ⌈D/n⌉``. Block ``k`` is ``V_k = H G_k Π_k H B / √(n‖G_k‖²)``; the blocks
are stacked, truncated to ``D`` and divided by ``√K`` so every column has norm ≈ 1.

Randomness (all from the counter RNG, nothing depends on iteration order):

* ``B``: ``n`` signs, stream ``"fastfood/B"``, counters ``0..n−1`` (shared by all blocks).
* ``Π_k``: the keyed bit bijection ``rng.permute_bits`` on ``log₂ n`` bits with round keys
  ``bits(stream "fastfood/perm", 3k + r)``, r = 0, 1, 2; ``(Π_k u)[i] = u[π_k(i)]``.
* ``G_k[i]``: ``normal(stream "fastfood/G", counter k·n + i)``.

Because ``B`` is shared, ``u = H B x`` is computed once; the second transform runs batched over
blocks of shape ``(chunk, n)``. The adjoint transforms ``y`` block-wise, scatters through ``Π_kᵀ``
into one length-``n`` accumulator, and finishes with a single transform.

This is the pure-torch reference path (any device). The tables ``π_k`` (int32) and the scaled
``G_k`` (float32) are cached when they fit in ``cache_max_bytes``, else regenerated per apply.
"""

from __future__ import annotations

import math

import torch

from . import rng
from .base import Projection
from .fwht import fwht

FASTFOOD_CACHE_MAX_BYTES = 2**30
_CHUNK_ELEMS = 2**22


def fastfood_shape(d: int, D: int) -> tuple[int, int]:
    """``(n, K)``: block length (power of two ≥ d) and number of blocks."""
    n = 1 << max(0, (d - 1).bit_length())
    return n, math.ceil(D / n)


class FastfoodProjection(Projection):
    kind = "fastfood"
    _state_names = ("B", "perm", "gscale")

    def __init__(
        self, d: int, D: int, seed: int = 0, cache_max_bytes: int = FASTFOOD_CACHE_MAX_BYTES
    ) -> None:
        super().__init__(d, D, seed)
        self.n, self.K = fastfood_shape(d, D)
        self.nbits = self.n.bit_length() - 1
        self._perm_key = rng.stream_key(seed, "fastfood/perm")
        self._g_key = rng.stream_key(seed, "fastfood/G")
        self.B = rng.rademacher(seed, "fastfood/B", self.n)
        self.perm = self.gscale = None
        if self.K * self.n * 8 <= cache_max_bytes:
            self.perm, self.gscale = self._tables(0, self.K, torch.device("cpu"))
            self.perm = self.perm.to(torch.int32)

    def _tables(self, k0: int, k1: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """``π_k`` (int64, ``(k1−k0, n)``) and ``G_k / √(n‖G_k‖² K)`` (float32) for blocks k0..k1−1."""
        n = self.n
        blocks = torch.arange(k0, k1, dtype=torch.int64, device=device)
        keys = rng.bits(self._perm_key, (blocks[:, None] * rng.PERM_ROUNDS) + torch.arange(rng.PERM_ROUNDS, device=device))
        i = torch.arange(n, dtype=torch.int64, device=device)
        perm = rng.permute_bits(i.expand(k1 - k0, n), self.nbits, keys)
        g = rng.to_normal(rng.bits(self._g_key, blocks[:, None] * n + i))
        norm2 = (g * g).sum(dim=1, keepdim=True)
        return perm, g * torch.rsqrt(norm2 * (n * self.K))

    def _block_chunks(self, device):
        per = max(1, _CHUNK_ELEMS // self.n)
        for k0 in range(0, self.K, per):
            k1 = min(self.K, k0 + per)
            if self.perm is not None:
                yield k0, k1, self.perm[k0:k1], self.gscale[k0:k1]
            else:
                perm, gs = self._tables(k0, k1, device)
                yield k0, k1, perm, gs

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        n, D = self.n, self.D
        xp = torch.zeros(n, dtype=torch.float32, device=x.device)
        xp[: self.d] = x
        u = fwht(self.B * xp)
        out = torch.empty(D, dtype=torch.float32, device=x.device)
        for k0, k1, perm, gs in self._block_chunks(x.device):
            v = fwht(u[perm] * gs).reshape(-1)
            a, b = k0 * n, min(D, k1 * n)
            out[a:b] = v[: b - a]
        return out

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        n, D = self.n, self.D
        z = torch.zeros(n, dtype=torch.float32, device=y.device)
        for k0, k1, perm, gs in self._block_chunks(y.device):
            a, b = k0 * n, min(D, k1 * n)
            blk = y[a:b]
            if b - a < (k1 - k0) * n:
                blk = torch.nn.functional.pad(blk, (0, (k1 - k0) * n - (b - a)))
            w = fwht(blk.view(k1 - k0, n)) * gs
            z.index_add_(0, perm.reshape(-1), w.reshape(-1))
        return (self.B * fwht(z))[: self.d]
