"""Fastfood projection (Le, Sarlós & Smola 2013; Li et al. 2018); design notes: docs/design.md, "Projections".

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

Backends (same ``P``; results agree to float32 round-off, not to the bit):

* ``"torch"``: the pure-torch reference path (any device). The tables ``π_k`` (int32) and the
  scaled ``G_k`` (float32) are cached when they fit in ``cache_max_bytes`` (8 bytes per
  parameter), else regenerated per apply.
* ``"numba"``: fused CPU kernels (``fastfood_numba``) that regenerate ``π_k`` and ``G_k`` per
  block inside the kernel; the only state is ``B``.
* ``"triton"``: fused Triton kernels (``fastfood_triton``, one program per block, ``π_k`` and
  ``G_k`` regenerated in the kernel, bit-identical to numba's); CUDA tensors, or the CPU under
  ``TRITON_INTERPRET=1`` (tests). The only state is ``B``.
* ``"auto"`` (default): numba while the projection lives on the CPU and numba imports, triton on
  CUDA when triton imports, else torch.

Range operations (``Projection.range_apply`` / ``range_adjoint``, core v2): the blocks are
independent, so ``(P x)[start:stop]`` needs only the blocks ``start//n … (stop−1)//n``. ``u =
prepare(x) = H B x_pad`` (float32 ``(n,)``, bit-identical to ``FastfoodPlan._u``) is computed once
per step; ``range_apply`` runs the second transform over the covering blocks and, on the numba
backend, is bit-identical to the slice of ``apply_add`` for a range inside one segment (same
float32 expression ``θ₀ + λ·(v·s_k)``). ``range_adjoint`` returns the length-``n`` accumulator
``Σ_k s_k Π_kᵀ G_k H y_k`` (float64 inside, returned as float32) and SAID's dot
``Σ_k s_k ⟨H y_k, G_k ⊙ u[π_k]⟩``; ``prepare_adjoint`` applies the last ``(B ⊙ H ·)[:d]`` once
(in float64). A block straddling two ranges is computed by both. The torch path does the same
with the cached tables (or regenerated ones) and float64 accumulators for ``gu`` and the dot.
"""

from __future__ import annotations

import functools
import math
from types import ModuleType

import torch

from . import rng
from .base import Projection
from .fwht import fwht, fwht_legacy

FASTFOOD_CACHE_MAX_BYTES = 2**30
_CHUNK_ELEMS = 2**22
BACKENDS = ("auto", "torch", "numba", "triton")


@functools.lru_cache(maxsize=1)
def _numba_kernels() -> ModuleType | None:
    """The numba kernel module, or None when numba is not installed (imported on first use)."""
    try:
        from . import fastfood_numba
    except ImportError:
        return None
    return fastfood_numba


@functools.lru_cache(maxsize=1)
def _triton_kernels() -> ModuleType | None:
    """The Triton kernel module, or None when triton does not import (imported on first use)."""
    try:
        from . import fastfood_triton
    except ImportError:
        return None
    return fastfood_triton


def fastfood_shape(d: int, D: int) -> tuple[int, int]:
    """``(n, K)``: block length (power of two ≥ d) and number of blocks."""
    n = 1 << max(0, (d - 1).bit_length())
    return n, math.ceil(D / n)


class FastfoodProjection(Projection):
    kind = "fastfood"
    _state_names = ("B", "perm", "gscale")

    def __init__(
        self,
        d: int,
        D: int,
        seed: int = 0,
        cache_max_bytes: int = FASTFOOD_CACHE_MAX_BYTES,
        backend: str = "auto",
    ) -> None:
        super().__init__(d, D, seed)
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} is unknown; choose one of {list(BACKENDS)}")
        if backend == "numba" and _numba_kernels() is None:
            raise ValueError("backend='numba' needs the numba package (pip install numba)")
        if backend == "triton" and _triton_kernels() is None:
            raise ValueError("backend='triton' needs the triton package (pip install -e '.[gpu]')")
        self.backend = backend
        self.n, self.K = fastfood_shape(d, D)
        self.nbits = self.n.bit_length() - 1
        self._perm_key = rng.stream_key(seed, "fastfood/perm")
        self._g_key = rng.stream_key(seed, "fastfood/G")
        self._cache_max_bytes = cache_max_bytes
        self.B = rng.rademacher(seed, "fastfood/B", self.n)
        self.perm = self.gscale = None
        self._plan = None
        self._sync_backend()

    # -- backend ----------------------------------------------------------------------------------
    def uses_numba(self) -> bool:
        """Whether applies run the numba kernels (CPU only) rather than the torch path."""
        return (self.backend in ("auto", "numba") and self.device.type == "cpu"
                and _numba_kernels() is not None)

    def uses_triton(self) -> bool:
        """Whether range and whole-D operations run the Triton kernels: CUDA (``"auto"`` or
        ``"triton"``), or the CPU with ``backend="triton"`` under ``TRITON_INTERPRET=1``."""
        if self.backend not in ("auto", "triton") or self.n > 1 << 15:
            return False
        if self.device.type == "cuda":
            return _triton_kernels() is not None
        return (self.backend == "triton" and self.device.type == "cpu"
                and _triton_kernels() is not None and _triton_kernels().interpreting())

    def active_backend(self) -> str:
        """``"numba"``, ``"triton"`` or ``"torch"``: what the operations run now."""
        return "numba" if self.uses_numba() else "triton" if self.uses_triton() else "torch"

    def _sync_backend(self) -> None:
        """numba / triton: drop the tables and build the kernel plan; torch: cache the tables if
        they fit."""
        self._tplan = None
        if self.uses_triton():
            self.perm = self.gscale = None
            self._plan = None
            self._tplan = _triton_kernels().TritonPlan(
                self.d, self.D, self.n, self.K, self._g_key, self._perm_key
            )
        elif self.uses_numba():
            self.perm = self.gscale = None
            ff = _numba_kernels()
            self._plan = ff.FastfoodPlan(
                self.d, self.D, self.n, self.K, self._g_key, self._perm_key, self.B.numpy()
            )
        else:
            self._plan = None
            # backend="triton" away from CUDA: no tables (it is on its way to the GPU)
            if (self.perm is None and self.backend != "triton"
                    and self.K * self.n * 8 <= self._cache_max_bytes):
                perm, self.gscale = self._tables(0, self.K, self.device)
                self.perm = perm.to(torch.int32)

    def to(self, device) -> FastfoodProjection:
        device = torch.device(device)
        if self.backend == "numba" and device.type != "cpu":
            raise ValueError(f"backend='numba' runs on the CPU only, got device={device}")
        if self.backend == "triton" and device.type != "cuda" and not _triton_kernels().interpreting():
            raise ValueError(
                f"backend='triton' runs on CUDA (or the CPU under TRITON_INTERPRET=1), got device={device}"
            )
        super().to(device)
        self._sync_backend()
        return self

    def _tables(self, k0: int, k1: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """``π_k`` (int64, ``(k1−k0, n)``) and ``G_k / √(n‖G_k‖² K)`` (float32) for blocks k0..k1−1."""
        n = self.n
        blocks = torch.arange(k0, k1, dtype=torch.int64, device=device)
        keys = rng.bits(self._perm_key, (blocks[:, None] * rng.PERM_ROUNDS) + torch.arange(rng.PERM_ROUNDS, device=device))
        i = torch.arange(n, dtype=torch.int64, device=device)
        perm = rng.permute_bits(i.expand(k1 - k0, n), self.nbits, keys)
        g = rng.to_normal(rng.bits(self._g_key, blocks[:, None] * n + i))
        norm2 = (g * g).sum(dim=1, keepdim=True)
        # G_k = 0 happens (the normal is discrete; for n = 1 in ~0.3% of blocks): a zero block
        scale = torch.where(norm2 > 0, torch.rsqrt(norm2 * (n * self.K)), torch.zeros_like(norm2))
        return perm, g * scale

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
        if self.uses_numba():
            return torch.from_numpy(_numba_kernels().forward(self._plan, _np(x)))
        if self._tplan is not None:
            out = torch.empty(self.D, dtype=torch.float32, device=self.device)
            return _triton_kernels().range_forward(self._tplan, self._prepare(x), 0, self.D,
                                                   None, 1.0, out)
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
        if self.uses_numba():
            return torch.from_numpy(_numba_kernels().adjoint(self._plan, _np(y)))
        if self._tplan is not None:
            y = y.to(self.device, torch.float32).contiguous()
            gu, _ = _triton_kernels().range_adjoint(self._tplan, y, 0, self.D, 1.0, None)
            return self._prepare_adjoint(gu)
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

    # -- range operations (core v2, no autograd) -------------------------------------------------
    @property
    def u_size(self) -> int:
        return self.n

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if self.uses_numba():
            return torch.from_numpy(self._plan._u(_np(x)))
        # the same operations as FastfoodPlan._u, on any device
        xp = torch.zeros(self.n, dtype=torch.float32, device=self.device)
        xp[: self.d] = x.to(self.device, torch.float32) * self.B[: self.d]
        return fwht_legacy(xp)  # the n-number transform of v1, so u is the same bits on every backend

    def _prepare_adjoint(self, gu: torch.Tensor) -> torch.Tensor:
        # FastfoodPlan._finish on any device: the transform in float64, then B, then float32
        hz = fwht_legacy(gu.to(torch.float64))
        return (hz[: self.d] * self.B[: self.d].to(torch.float64)).to(torch.float32)

    def _range_chunks(self, start: int, stop: int, device):
        """``(k0, k1, π, G·s)`` for chunks of the blocks covering ``[start, stop)``."""
        n = self.n
        kb0, kb1 = start // n, (stop - 1) // n + 1
        per = max(1, _CHUNK_ELEMS // n)
        for k0 in range(kb0, kb1, per):
            k1 = min(kb1, k0 + per)
            if self.perm is not None:
                yield k0, k1, self.perm[k0:k1], self.gscale[k0:k1]
            else:
                perm, gs = self._tables(k0, k1, device)
                yield k0, k1, perm, gs

    def _range_apply(self, u, start, stop, theta0, scale, out):
        if self.uses_numba():
            # arguments validated by Projection.range_apply: the unchecked entry point
            if out is None:
                out = torch.empty(stop - start, dtype=torch.float32)
            _numba_kernels()._range_forward(
                self._plan, u.numpy(), start, stop,
                None if theta0 is None else theta0.numpy(), scale, out.numpy(),
            )
            return out
        if self._tplan is not None:
            if out is None:
                out = torch.empty(stop - start, dtype=torch.float32, device=u.device)
            return _triton_kernels().range_forward(self._tplan, u, start, stop, theta0, scale, out)
        n = self.n
        if out is None:
            out = torch.empty(stop - start, dtype=torch.float32, device=u.device)
        for k0, k1, perm, gs in self._range_chunks(start, stop, u.device):
            v = fwht(u[perm] * gs).reshape(-1)
            a, b = max(start, k0 * n), min(stop, k1 * n)
            seg = v[a - k0 * n : b - k0 * n] * scale
            dst = out[a - start : b - start]
            if theta0 is None:
                dst.copy_(seg)
            else:
                torch.add(theta0[a - start : b - start], seg, out=dst)
        return out

    def _range_adjoint(self, g, start, stop, scale, u):
        if self.uses_numba():
            gu, dot = _numba_kernels()._range_adjoint(
                self._plan, g.numpy(), start, stop, scale, None if u is None else u.numpy()
            )
            return torch.from_numpy(gu), dot
        if self._tplan is not None:
            return _triton_kernels().range_adjoint(self._tplan, g, start, stop, scale, u)
        n = self.n
        # float64 accumulators, as the numba kernels (a range may cover thousands of blocks)
        z = torch.zeros(n, dtype=torch.float64, device=g.device)
        dot = torch.zeros((), dtype=torch.float64, device=g.device)
        for k0, k1, perm, gs in self._range_chunks(start, stop, g.device):
            a, b = max(start, k0 * n), min(stop, k1 * n)
            blk = torch.zeros((k1 - k0) * n, dtype=torch.float32, device=g.device)
            blk[a - k0 * n : b - k0 * n] = g[a - start : b - start]
            w = fwht(blk.view(k1 - k0, n)) * gs
            if u is not None:
                dot += (w * u[perm]).sum(dtype=torch.float64)
            z.index_add_(0, perm.reshape(-1).to(torch.int64), (w * scale).reshape(-1).to(torch.float64))
        return z.to(torch.float32), (None if u is None else float(dot))

    # -- fused entry points (no autograd) ---------------------------------------------------------
    def apply_add(
        self,
        x: torch.Tensor,
        theta0_flat: torch.Tensor,
        seg_offsets=None,
        seg_scales=None,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``θ₀ + λ_seg ⊙ (P x)``, float32 ``(D,)``, without autograd.

        ``theta0_flat``: ``(D,)``. Optional segments (SAID's per-tensor λ): ``seg_offsets``
        (``m+1`` ints, ``0 = o_0 ≤ … ≤ o_m = D``) and ``seg_scales`` (``m`` floats); element ``i``
        with ``o_s ≤ i < o_{s+1}`` is scaled by ``λ_s`` (λ = 1 without segments). ``out``: an
        optional float32 ``(D,)`` tensor to write into (it may be ``theta0_flat`` itself).
        """
        self._check(x, self.d, "x")
        self._check(theta0_flat, self.D, "theta0_flat")
        with torch.no_grad():
            if self.uses_numba():
                if out is None:
                    out = torch.empty(self.D, dtype=torch.float32)
                self._check_out(out)
                _numba_kernels().forward_add(
                    self._plan, _np(x), _np(theta0_flat), out.detach().numpy(),
                    _np_or_none(seg_offsets), _np_or_none(seg_scales),
                )
                return out
            lam = self._scale_vector(seg_offsets, seg_scales)
            px = self._forward(x.detach().to(self.device, torch.float32))
            t0 = theta0_flat.detach().to(px.device, torch.float32)
            res = t0 + px if lam is None else t0 + lam * px
            if out is None:
                return res
            self._check_out(out)
            return out.copy_(res)

    def adjoint_said(
        self, y: torch.Tensor, x: torch.Tensor, seg_offsets, seg_scales
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAID's backward: ``(Pᵀ(λ_seg ⊙ y) (d,), [Σ_{i∈s} y_i (P x)_i]_s (m,))``, float32.

        ``y``: gradient w.r.t. θ, ``(D,)`` or in pieces (see :meth:`adjoint_pieces`); ``x``: the
        current ``(d,)`` vector; segments as in ``apply_add``. One fused pass with numba;
        forward + adjoint on the torch path.
        """
        self._check(x, self.d, "x")
        with torch.no_grad():
            if self.uses_numba():
                g, dots = _numba_kernels().adjoint_said(
                    self._plan, self._np_pieces(y), _np(x), _np_or_none(seg_offsets),
                    _np_or_none(seg_scales),
                )
                return torch.from_numpy(g), torch.from_numpy(dots)
            y = self._flat(y)
            lam = self._scale_vector(seg_offsets, seg_scales)
            if lam is None:
                raise ValueError("adjoint_said needs seg_offsets and seg_scales")
            y = y.detach().to(self.device, torch.float32)
            px = self._forward(x.detach().to(self.device, torch.float32))
            off = torch.as_tensor(seg_offsets, dtype=torch.int64, device=y.device)
            seg_id = torch.repeat_interleave(
                torch.arange(off.numel() - 1, device=y.device), off.diff()
            )
            dots = torch.zeros(off.numel() - 1, dtype=torch.float64, device=y.device)
            dots.index_add_(0, seg_id, (y * px).double())
            return self._adjoint(lam * y), dots.float()

    def adjoint_pieces(self, pieces) -> torch.Tensor:
        """``Pᵀ y`` for ``y`` given as consecutive pieces (no autograd), float32 ``(d,)``.

        ``pieces``: tensors of any shape (read in C order) or ints (that many zeros), whose
        sizes add up to D — e.g. the per-tensor gradients of the composed weights. The numba
        kernels read them in place; the torch path concatenates them.
        """
        with torch.no_grad():
            if self.uses_numba():
                return torch.from_numpy(_numba_kernels().adjoint(self._plan, self._np_pieces(pieces)))
            return self._adjoint(self._flat(pieces))

    def _np_pieces(self, y):
        if isinstance(y, torch.Tensor):
            self._check(y, self.D, "y")
            return _np(y)
        return [p if isinstance(p, int) else _np(p) for p in y]

    def _flat(self, y) -> torch.Tensor:
        if isinstance(y, torch.Tensor):
            self._check(y, self.D, "y")
            return y.detach().to(self.device, torch.float32)
        parts = [
            torch.zeros(p, device=self.device) if isinstance(p, int)
            else p.detach().reshape(-1).to(self.device, torch.float32)
            for p in y
        ]
        flat = torch.cat(parts) if parts else torch.zeros(0, device=self.device)
        self._check(flat, self.D, "y")
        return flat

    def _scale_vector(self, seg_offsets, seg_scales) -> torch.Tensor | None:
        """The per-element λ ``(D,)`` of the torch path, or None without segments."""
        if seg_offsets is None and seg_scales is None:
            return None
        if seg_offsets is None or seg_scales is None:
            raise ValueError("seg_offsets and seg_scales must be given together")
        off = torch.as_tensor(seg_offsets, dtype=torch.int64)
        lam = torch.as_tensor(seg_scales, dtype=torch.float32)
        if off.dim() != 1 or lam.dim() != 1 or off.numel() != lam.numel() + 1 or lam.numel() < 1:
            raise ValueError(
                f"seg_offsets must have length len(seg_scales)+1, got {tuple(off.shape)} "
                f"and {tuple(lam.shape)}"
            )
        if off[0] != 0 or off[-1] != self.D or bool((off.diff() < 0).any()):
            raise ValueError(
                f"seg_offsets must be non-decreasing from 0 to D={self.D}, "
                f"got [{int(off[0])}, …, {int(off[-1])}]"
            )
        return torch.repeat_interleave(lam, off.diff()).to(self.device)

    def _check_out(self, out: torch.Tensor) -> None:
        if out.dtype != torch.float32 or out.shape != (self.D,) or not out.is_contiguous():
            raise ValueError(f"out must be a contiguous float32 tensor of shape ({self.D},)")
        if self.uses_numba() and out.device.type != "cpu":
            raise ValueError(f"out must be on the CPU for the numba backend, got {out.device}")


def _np(t: torch.Tensor):
    """A float32 CPU numpy view (or copy) of a tensor, detached."""
    return t.detach().to("cpu", torch.float32).contiguous().numpy()


def _np_or_none(a):
    if a is None:
        return None
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a
