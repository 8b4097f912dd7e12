"""Fused Triton kernels of the Fastfood range operations (GPU; verified on CPU by the interpreter).

One program per Fastfood block ``k`` (``n = 2^⌈log₂ d⌉ ≤ 2¹⁵`` numbers, held on chip):

* ``_range_forward_kernel``: regenerates ``Π_k`` and ``G_k`` from the counter RNG (the integer
  hash of :mod:`rng` / :mod:`fastfood_numba`, in uint32 arithmetic, so the numbers are
  bit-identical), gathers ``v = u[π_k] ⊙ G_k``, transforms it (radix-2 butterflies with
  increasing stride: the same additions in the same order as the numba kernel), scales by
  ``s_k = 1/√(n‖G_k‖²K)`` (float64, as numba) and writes ``θ₀ + scale·(v·s_k)`` for the part of
  the block inside ``[start, stop)``. ``θ₀`` and ``out`` may have any floating dtype; the math
  is float32.
* ``_range_adjoint_kernel``: places ``g`` in the block (zeros outside the range), transforms it,
  multiplies by ``G_k`` and adds ``scale·s_k·(H y_k)[i]·G_k[i]`` into ``gu[π_k(i)]`` with
  ``tl.atomic_add`` (float64 accumulator, length ``n``); SAID's dot ``s_k ⟨H y_k, G_k ⊙ u[π_k]⟩``
  is written per block (float64) and summed in a fixed order afterwards, so the dot is
  deterministic (the atomics of ``gu`` are not, to float64 round-off).
* ``_tables_kernel``: ``π_k``, ``G_k`` and ``s_k`` of blocks, for the bit-identity tests.

Floating-point contraction (FMA) is switched off on the GPU (``enable_fp_fusion=False``), so
the arithmetic is the numba kernels' one; the kernels are memory-bound, that costs nothing.
Under ``TRITON_INTERPRET=1`` the kernels run on the CPU through numpy (tests; programs run one
after another, so races of the atomics go untested there).
"""

from __future__ import annotations

import math
import os
import struct

import torch
import triton
import triton.language as tl

from . import rng

_M32 = 0xFFFFFFFF
_C1 = tl.constexpr(0x85EBCA6B)
_C2 = tl.constexpr(0xC2B2AE35)
_PM0 = tl.constexpr(rng.PERM_MULTIPLIERS[0])
_PM1 = tl.constexpr(rng.PERM_MULTIPLIERS[1])
_PM2 = tl.constexpr(rng.PERM_MULTIPLIERS[2])
_MEAN = tl.constexpr(rng.NORMAL_MEAN)
# the float32 value of 1/sd (numba's _NORMAL_INV_SD), used as float32 for G and as float64 for s_k
_INV_SD = tl.constexpr(struct.unpack("f", struct.pack("f", rng.NORMAL_INV_SD))[0])
MAX_N = 1 << 15


def interpreting() -> bool:
    """Whether these kernels run through Triton's CPU interpreter (``TRITON_INTERPRET=1`` was set
    when this module was imported: ``triton.jit`` decides then)."""
    return _INTERPRETED


# ---- the counter RNG, in uint32 -------------------------------------------------------------
@triton.jit
def _fmix32(x):
    x = x ^ (x >> 16)
    x = x * _C1
    x = x ^ (x >> 13)
    x = x * _C2
    return x ^ (x >> 16)


@triton.jit
def _bits(k0, k1, counter):
    """``rng.bits((k0, k1), counter)``: ``counter`` int64 ≥ 0, keys uint32 → uint32."""
    lo = (counter & 0xFFFFFFFF).to(tl.uint32)
    hi = (counter >> 32).to(tl.uint32)
    return _fmix32(_fmix32(lo ^ k0) ^ k1 ^ hi)


@triton.jit
def _block(k, gk0, gk1, pk0, pk1, n_blocks, N: tl.constexpr, NBITS: tl.constexpr):
    """``(π_k int32 (N,), G_k float32 (N,), s_k float32)`` for block ``k`` (int64)."""
    i = tl.arange(0, N)
    w = _bits(gk0, gk1, k * N + i.to(tl.int64))
    s = (w & 0xFF) + ((w >> 8) & 0xFF) + ((w >> 16) & 0xFF) + (w >> 24)
    t = s.to(tl.int64) - 510
    ss = tl.sum(t * t, axis=0)
    g = (s.to(tl.float32) - _MEAN) * _INV_SD
    # numba's _block_scale: sqrt(float(n)·float(K)·float(ss))·inv_sd in float64, then 1/den
    nk = n_blocks.to(tl.float64) * N
    den = tl.sqrt(nk * ss.to(tl.float64)) * _INV_SD
    sc = tl.where(den == 0.0, 0.0, 1.0 / tl.where(den == 0.0, 1.0, den)).to(tl.float32)
    # the keyed bit bijection of rng.permute_bits (three rounds)
    c = k * 3
    r0 = _bits(pk0, pk1, c)
    r1 = _bits(pk0, pk1, c + 1)
    r2 = _bits(pk0, pk1, c + 2)
    mask: tl.constexpr = (1 << NBITS) - 1
    shift: tl.constexpr = (NBITS + 1) // 2
    x = i.to(tl.uint32)
    if NBITS > 0:
        x = (x + r0) & mask
        x = (x * _PM0) & mask
        x = x ^ (x >> shift)
        x = (x + r1) & mask
        x = (x * _PM1) & mask
        x = x ^ (x >> shift)
        x = (x + r2) & mask
        x = (x * _PM2) & mask
        x = x ^ (x >> shift)
    else:
        x = x & 0
    return x.to(tl.int32), g, sc


@triton.jit
def _fwht(x, N: tl.constexpr, NBITS: tl.constexpr):
    """Unnormalised Walsh–Hadamard transform of the (N,) float32 vector ``x``: level ``h`` maps
    ``(x[j], x[j+h]) → (x[j]+x[j+h], x[j]−x[j+h])``, h = 1, 2, 4, … (the numba order)."""
    two = tl.arange(0, 2)
    first = (two == 0).to(tl.float32)[None, :, None]
    second = (two == 1).to(tl.float32)[None, :, None]
    sign = tl.where(two == 0, 1.0, -1.0)[None, :, None]
    for lvl in tl.static_range(NBITS):
        # the stride h = 2**lvl (a constexpr may not be reassigned inside the unrolled loop)
        x3 = tl.reshape(x, (N >> (lvl + 1), 2, 1 << lvl))
        a = tl.sum(x3 * first, axis=1)  # x[j]   (exact: the other term is ±0)
        b = tl.sum(x3 * second, axis=1)  # x[j+h]
        x = tl.reshape(a[:, None, :] + sign * b[:, None, :], (N,))
    return x


# ---- kernels --------------------------------------------------------------------------------
# never specialised (Triton turns an int argument equal to 1 into a constant, a new compile)
_RUNTIME_ARGS = ["start", "stop", "kb0", "scale", "gk0", "gk1", "pk0", "pk1", "n_blocks"]


@triton.jit(do_not_specialize=["k0", "gk0", "gk1", "pk0", "pk1", "n_blocks"])
def _tables_kernel(perm_ptr, g_ptr, sc_ptr, k0, gk0, gk1, pk0, pk1, n_blocks,
                   N: tl.constexpr, NBITS: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    k = k0 + pid
    perm, g, sc = _block(k, gk0.to(tl.uint32), gk1.to(tl.uint32), pk0.to(tl.uint32),
                         pk1.to(tl.uint32), n_blocks, N, NBITS)
    i = tl.arange(0, N)
    tl.store(perm_ptr + pid * N + i, perm)
    tl.store(g_ptr + pid * N + i, g)
    tl.store(sc_ptr + pid, sc)


@triton.jit(do_not_specialize=["count", "k0", "k1"])
def _bits_kernel(idx_ptr, out_ptr, count, k0, k1, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < count
    c = tl.load(idx_ptr + offs, mask=m, other=0)
    tl.store(out_ptr + offs, _bits(k0.to(tl.uint32), k1.to(tl.uint32), c).to(tl.int64), mask=m)


@triton.jit(do_not_specialize=_RUNTIME_ARGS)
def _range_forward_kernel(u_ptr, theta0_ptr, out_ptr, start, stop, kb0, scale,
                          gk0, gk1, pk0, pk1, n_blocks,
                          N: tl.constexpr, NBITS: tl.constexpr, ADD: tl.constexpr):
    k = kb0 + tl.program_id(0).to(tl.int64)
    perm, g, sc = _block(k, gk0.to(tl.uint32), gk1.to(tl.uint32), pk0.to(tl.uint32),
                         pk1.to(tl.uint32), n_blocks, N, NBITS)
    v = tl.load(u_ptr + perm) * g
    v = _fwht(v, N, NBITS)
    pos = k * N + tl.arange(0, N).to(tl.int64)
    m = (pos >= start) & (pos < stop)
    res = scale * (v * sc)
    if ADD:
        t0 = tl.load(theta0_ptr + (pos - start), mask=m, other=0.0).to(tl.float32)
        res = t0 + res
    tl.store(out_ptr + (pos - start), res.to(out_ptr.dtype.element_ty), mask=m)


@triton.jit(do_not_specialize=_RUNTIME_ARGS)
def _range_adjoint_kernel(g_ptr, u_ptr, gu_ptr, dot_ptr, start, stop, kb0, scale,
                          gk0, gk1, pk0, pk1, n_blocks,
                          N: tl.constexpr, NBITS: tl.constexpr, DOT: tl.constexpr):
    pid = tl.program_id(0)
    k = kb0 + pid.to(tl.int64)
    perm, gk, sc = _block(k, gk0.to(tl.uint32), gk1.to(tl.uint32), pk0.to(tl.uint32),
                          pk1.to(tl.uint32), n_blocks, N, NBITS)
    pos = k * N + tl.arange(0, N).to(tl.int64)
    m = (pos >= start) & (pos < stop)
    y = tl.load(g_ptr + (pos - start), mask=m, other=0.0).to(tl.float32)
    y = _fwht(y, N, NBITS)
    v = y * gk
    tl.atomic_add(gu_ptr + perm, (scale * (v * sc)).to(tl.float64), sem="relaxed")
    if DOT:
        up = tl.load(u_ptr + perm)
        t = tl.sum((v * up).to(tl.float64), axis=0)
        tl.store(dot_ptr + pid, t * sc.to(tl.float64))


try:
    from triton.runtime.interpreter import InterpretedFunction as _Interp

    _INTERPRETED = isinstance(_range_forward_kernel, _Interp)
except ImportError:  # pragma: no cover - a triton without the interpreter module
    _INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# ---- host side ------------------------------------------------------------------------------
def _num_warps(n: int) -> int:
    return max(1, min(16, n // 256))


def _launch_opts(n: int) -> dict:
    if interpreting():
        return {}
    return {"num_warps": _num_warps(n), "enable_fp_fusion": False}


class TritonPlan:
    """The constants of a Fastfood projection the kernels need (no tensors: ``B`` stays with the
    projection, ``Π_k`` and ``G_k`` are regenerated in the kernels)."""

    def __init__(self, d: int, D: int, n: int, K: int, g_key, perm_key) -> None:
        if n > MAX_N:
            raise ValueError(f"the Triton kernels hold a block on chip: n={n} > {MAX_N}")
        self.d, self.D, self.n, self.K = d, D, n, K
        self.nbits = n.bit_length() - 1
        self.g_key, self.perm_key = tuple(g_key), tuple(perm_key)

    def _keys(self) -> tuple[int, int, int, int, int]:
        return (*self.g_key, *self.perm_key, self.K)

    def blocks(self, start: int, stop: int) -> tuple[int, int]:
        """``(first block, number of blocks)`` covering ``[start, stop)``."""
        kb0 = start // self.n
        return kb0, (stop - 1) // self.n - kb0 + 1


def block_tables(plan: TritonPlan, k0: int, k1: int, device) -> tuple[torch.Tensor, ...]:
    """``(π int32 (k1−k0, n), G float32 (k1−k0, n), s float32 (k1−k0,))`` from the kernel."""
    nb = k1 - k0
    perm = torch.empty(nb, plan.n, dtype=torch.int32, device=device)
    g = torch.empty(nb, plan.n, dtype=torch.float32, device=device)
    sc = torch.empty(nb, dtype=torch.float32, device=device)
    _tables_kernel[(nb,)](perm, g, sc, k0, *plan._keys(), N=plan.n, NBITS=plan.nbits,
                          **_launch_opts(plan.n))
    return perm, g, sc


def bits(key: tuple[int, int], index: torch.Tensor) -> torch.Tensor:
    """``rng.bits(key, index)`` computed by a Triton kernel (int64 in [0, 2**32))."""
    index = index.to(torch.int64).contiguous()
    out = torch.empty_like(index)
    count = index.numel()
    block = 1024
    _bits_kernel[(max(1, math.ceil(count / block)),)](index, out, count, key[0], key[1],
                                                      BLOCK=block)
    return out


def range_forward(plan: TritonPlan, u: torch.Tensor, start: int, stop: int,
                  theta0: torch.Tensor | None, scale: float, out: torch.Tensor) -> torch.Tensor:
    """``out = θ₀ + scale·(P x)[start:stop]`` (or without ``θ₀``) from ``u = H B x_pad``.

    ``u``: float32 contiguous ``(n,)``; ``theta0``, ``out``: contiguous ``(stop−start,)`` of any
    floating dtype (``out`` may be ``theta0``). Returns ``out``.
    """
    kb0, nb = plan.blocks(start, stop)
    t0 = out if theta0 is None else theta0
    _range_forward_kernel[(nb,)](u, t0, out, start, stop, kb0, float(scale), *plan._keys(),
                                 N=plan.n, NBITS=plan.nbits, ADD=theta0 is not None,
                                 **_launch_opts(plan.n))
    return out


def range_adjoint(plan: TritonPlan, g: torch.Tensor, start: int, stop: int, scale: float,
                  u: torch.Tensor | None) -> tuple[torch.Tensor, float | None]:
    """``(gu float32 (n,), dot)``: the backward of ``u ↦ scale·(P x)[start:stop]``, as
    :func:`fastfood_numba.range_adjoint` (float64 accumulator; ``dot`` when ``u`` is given)."""
    kb0, nb = plan.blocks(start, stop)
    gu = torch.zeros(plan.n, dtype=torch.float64, device=g.device)
    want = u is not None
    dots = torch.empty(nb if want else 1, dtype=torch.float64, device=g.device)
    _range_adjoint_kernel[(nb,)](g, u if want else g, gu, dots, start, stop, kb0, float(scale),
                                 *plan._keys(), N=plan.n, NBITS=plan.nbits, DOT=want,
                                 **_launch_opts(plan.n))
    return gu.to(torch.float32), (float(dots.sum()) if want else None)
