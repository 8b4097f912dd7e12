"""Fused CPU kernels for the Fastfood projection (numba); design notes: docs/design.md, "Projections".

Same ``P`` as the torch reference in ``fastfood.py`` (same bits from ``rng``; numbers equal to
float32 round-off), but nothing of size ``D`` is stored: per block ``k`` the permutation
``π_k(i)`` and the Gaussians ``G_k[i]`` are regenerated from the counter RNG inside the kernel,
into thread-local buffers of ``n`` elements that stay in cache. The state is ``B`` only.

* forward: ``u = H B x_pad`` once; then in parallel over blocks ``v = H (G_k ⊙ u[π_k]) · s_k``,
  ``s_k = 1/√(n‖G_k‖²K)``, written to ``out[k n : min(D, (k+1) n)]``. ``‖G_k‖²`` is computed
  exactly as an integer (``G = (byte sum − 510)·c``), so ``s_k`` costs nothing to store.
  The fused variant writes ``θ₀ + λ_seg ⊙ (P x)`` directly (SAID's per-tensor λ).
* adjoint: in parallel over a fixed number of chunks of blocks, ``z_c[π_k(i)] += (H y_k)[i]
  G_k[i] s_k``; then ``Pᵀ y = (B ⊙ H Σ_c z_c)[:d]``. The accumulators are float64: each entry
  sums ``K`` terms (22k for MiniLM at d = 1000), which in float32 would lose ~√K ulps, and a
  float64 add costs the same as a float32 one in this scatter-bound loop. The chunking does not
  depend on the thread count and the chunks are reduced in a fixed order, so results are
  bit-identical for any number of threads.
* ``adjoint_said``: ``Pᵀ(λ ⊙ y)`` plus ``Σ_{i∈seg} y_i (P x)_i`` per segment (the gradient of
  SAID's λ) in one pass. A block inside one segment needs only ``s_k ⟨H y_k, G_k ⊙ u[π_k]⟩``
  (one extra gather); a block that straddles segments also runs its forward transform.

* range operations (core v2): ``range_forward`` / ``range_adjoint`` over only the blocks
  ``start//n … (stop−1)//n`` of ``[start, stop)``, from ``u = H B x_pad`` computed once per step
  (``FastfoodPlan._u``). The forward writes ``θ₀ + λ·(v·s_k)`` with the same float32 expression
  as ``forward_add``, hence the same bits for a range inside one segment. The adjoint gathers
  ``g`` into each block (zeros outside the range and beyond D), transforms, scatters
  ``λ·(v·s_k)`` into float64 per-chunk accumulators and returns their sum as float32 ``(n,)``
  *before* the final ``(B ⊙ H ·)[:d]`` (``FastfoodPlan._finish``, once per step), plus SAID's dot
  ``Σ_k s_k ⟨H y_k, G_k ⊙ u[π_k]⟩`` (valid for every block since y is zero outside the range).
  The chunk count is a function of the plan and the range only (at least 8 blocks per chunk:
  a one-block chunk spends more on its accumulator than on its block), so results are
  bit-identical for any thread count. Ranges under ``_SERIAL_BELOW`` elements run a serial twin
  of the kernel (same chunk code, same reduction order, same bits) without the launch lock or a
  thread-count change; a call then costs ~25 µs (forward) / ~50 µs (adjoint) of CPU besides its
  blocks (measured on one block, n = 1024).

Segments are given as ``seg_offsets`` (int64, length m+1, ``0 = o_0 ≤ … ≤ o_m = D``) and
``seg_scales`` (float32, length m): element ``i`` with ``o_s ≤ i < o_{s+1}`` has scale ``λ_s``.

All kernels use ``cache=True`` (compiled once per machine, ~10 s, into ``__pycache__``) and
``fastmath=False``. The hash loops use 32-bit intrinsics so that they vectorise 8 lanes wide.
The thread count follows ``torch.get_num_threads()``; launches are serialised by a lock, so the
functions may be called from several Python threads.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from dataclasses import dataclass

import numba
import numpy as np
import torch
from numba import njit, prange, types
from numba.extending import intrinsic

from . import rng
from .fwht import fwht_legacy as fwht  # u = H B x must stay bit-identical to v1's (n numbers)


# ---- 32-bit unsigned arithmetic -------------------------------------------------------------
# numba promotes uint32 operands to 64 bits, which halves the SIMD width of the hash loops and
# turns every multiply into a slow 64-bit one; these intrinsics emit plain i32 LLVM ops, which
# wrap modulo 2**32 exactly like the masked int64 arithmetic of rng.py.
def _u32_binop(op: str):
    @intrinsic
    def u32op(typingctx, a, b):
        def codegen(context, builder, signature, args):
            return getattr(builder, op)(args[0], args[1])

        return types.uint32(types.uint32, types.uint32), codegen

    return u32op


_add = _u32_binop("add")
_mul = _u32_binop("mul")
_xor = _u32_binop("xor")
_shr = _u32_binop("lshr")
_and = _u32_binop("and_")


@intrinsic
def _f32_ptr(typingctx, addr):
    """The int64 address ``addr`` as a ``float32*`` (for gradients that arrive in pieces)."""

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

    return types.CPointer(types.float32)(types.int64), codegen

_U32 = np.uint32
# The RNG constants are spelled out here, not read from rng.py: numba's on-disk cache is keyed on
# this file only, so a change in rng.py would otherwise leave stale compiled kernels behind. The
# check below makes such a change fail loudly at import instead (not an ImportError, which
# would silently select the torch backend).
_FMIX = (0x85EBCA6B, 0xC2B2AE35)
_PERM_MULTIPLIERS = (0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D)
_MEAN = 510
_NORMAL_INV_SD = np.float32(1.0 / ((4 * (256**2 - 1) / 12) ** 0.5))
if (
    _FMIX != (rng._FMIX_C1, rng._FMIX_C2)
    or _PERM_MULTIPLIERS != tuple(rng.PERM_MULTIPLIERS)
    or rng.PERM_ROUNDS != 3
    or float(_MEAN) != rng.NORMAL_MEAN
    or _NORMAL_INV_SD != np.float32(rng.NORMAL_INV_SD)
    or rng.RNG_VERSION != 1
):
    raise RuntimeError("fastfood_numba does not match idcompress.projection.rng; update both")
_C1, _C2 = (_U32(c) for c in _FMIX)
_PM0, _PM1, _PM2 = (_U32(m) for m in _PERM_MULTIPLIERS)
_BYTE2 = _U32(0x00FF00FF)
_LOW16 = _U32(0xFFFF)
_NEG_MEAN = _U32(2**32 - _MEAN)
_SH8, _SH13, _SH16 = _U32(8), _U32(13), _U32(16)
_M32 = np.uint64(0xFFFFFFFF)
_SH32 = np.uint64(32)
_NORMAL_MEAN = np.float32(_MEAN)
_NORMAL_INV_SD64 = float(_NORMAL_INV_SD)
# Σ (s−510)² over this many elements fits in 32 bits (510² · 8192 < 2**32).
_SS_RUN = 8192

# Blocks are split into a fixed number of chunks (independent of the thread count): 64, fewer
# when n is large so that the adjoint's float64 accumulators stay under 2**21 entries, never
# fewer than 16 (nor more than K).
_ACC_ELEMS = 2**21
_MAX_CHUNKS = 64
_MIN_CHUNKS = 16
# range operations: at least this many blocks per chunk (see _range_blocks)
_RANGE_CHUNK_BLOCKS = 8
_EMPTY_F32 = np.empty(0, np.float32)


# ---- counter RNG, bit-identical to rng.py ---------------------------------------------------
@njit(cache=True, inline="always")
def _fmix32(x):
    x = _xor(x, _shr(x, _SH16))
    x = _mul(x, _C1)
    x = _xor(x, _shr(x, _SH13))
    x = _mul(x, _C2)
    return _xor(x, _shr(x, _SH16))


@njit(cache=True)
def _bits(k0, k1, index):
    """``rng.bits((k0, k1), index)`` for one uint64 counter; keys uint32."""
    lo = _U32(index & _M32)
    hi = _U32(index >> _SH32)
    return _fmix32(_xor(_fmix32(_xor(lo, k0)), _xor(k1, hi)))


@njit(cache=True)
def _gen_block(k, n, nbits, gk0, gk1, pk0, pk1, gbuf, pbuf):
    """Fill ``gbuf`` with ``G_k`` (float32, unscaled) and ``pbuf`` with ``π_k`` (uint32).

    Returns ``Σ_i (byte_sum_i − 510)²`` (exact int), i.e. ``‖G_k‖² / c²``.
    """
    base = np.uint64(k) * np.uint64(n)
    lo0 = _U32(base & _M32)  # a multiple of n ≤ 2**32 − n: lo0 + i never carries into hi
    hi = _xor(_U32(base >> _SH32), gk1)
    ss = 0
    for j0 in range(0, n, _SS_RUN):
        cnt = min(n - j0, _SS_RUN)
        b32 = _add(lo0, _U32(j0))
        g = gbuf[j0 : j0 + cnt]
        acc = _U32(0)
        for i in range(cnt):
            w = _fmix32(_xor(_fmix32(_xor(_add(b32, _U32(i)), gk0)), hi))
            # byte sum: two 16-bit lanes of pair sums, then fold (≤ 1020, no carries)
            h2 = _add(_and(w, _BYTE2), _and(_shr(w, _SH8), _BYTE2))
            s = _and(_add(h2, _shr(h2, _SH16)), _LOW16)
            t = _add(s, _NEG_MEAN)  # s − 510 mod 2**32; its square mod 2**32 is exact
            acc = _add(acc, _mul(t, t))
            g[i] = (np.float32(np.int32(s)) - _NORMAL_MEAN) * _NORMAL_INV_SD
        ss += np.int64(acc)
    c = np.uint64(k) * np.uint64(3)
    r0 = _bits(pk0, pk1, c)
    r1 = _bits(pk0, pk1, c + np.uint64(1))
    r2 = _bits(pk0, pk1, c + np.uint64(2))
    mask = _U32((1 << nbits) - 1)
    shift = _U32((nbits + 1) // 2)
    for i in range(n):
        x = _and(_add(_U32(i), r0), mask)
        x = _and(_mul(x, _PM0), mask)
        x = _xor(x, _shr(x, shift))
        x = _and(_add(x, r1), mask)
        x = _and(_mul(x, _PM1), mask)
        x = _xor(x, _shr(x, shift))
        x = _and(_add(x, r2), mask)
        x = _and(_mul(x, _PM2), mask)
        x = _xor(x, _shr(x, shift))
        pbuf[i] = x
    return ss


@njit(cache=True)
def _block_scale(ss, n, K):
    """``1/√(n‖G_k‖²K)`` as float32; 0 (a zero block) when ``G_k = 0``, like the reference."""
    den = math.sqrt(float(n) * float(K) * float(ss)) * _NORMAL_INV_SD64
    if den == 0.0:
        return np.float32(0.0)
    return np.float32(1.0 / den)


# ---- Walsh–Hadamard transform in place (unnormalised) ---------------------------------------
@njit(cache=True)
def _fwht_inplace(a):
    """Levels 1, 2, 4 as one radix-8 pass; then radix-4 passes (two levels each) whose inner
    loops run over contiguous slices, so LLVM vectorises them."""
    n = a.shape[0]
    if n < 8:
        h = 1
        while h < n:
            for i in range(0, n, 2 * h):
                for j in range(i, i + h):
                    x = a[j]
                    y = a[j + h]
                    a[j] = x + y
                    a[j + h] = x - y
            h *= 2
        return
    for r in range(n // 8):  # written as r → 8r so LLVM vectorises it as an interleaved group
        i = 8 * r
        x0, x1, x2, x3 = a[i], a[i + 1], a[i + 2], a[i + 3]
        x4, x5, x6, x7 = a[i + 4], a[i + 5], a[i + 6], a[i + 7]
        y0, y1, y2, y3 = x0 + x1, x0 - x1, x2 + x3, x2 - x3
        y4, y5, y6, y7 = x4 + x5, x4 - x5, x6 + x7, x6 - x7
        x0, x2, x1, x3 = y0 + y2, y0 - y2, y1 + y3, y1 - y3
        x4, x6, x5, x7 = y4 + y6, y4 - y6, y5 + y7, y5 - y7
        a[i], a[i + 4], a[i + 1], a[i + 5] = x0 + x4, x0 - x4, x1 + x5, x1 - x5
        a[i + 2], a[i + 6], a[i + 3], a[i + 7] = x2 + x6, x2 - x6, x3 + x7, x3 - x7
    h = 8
    while 4 * h <= n:
        for i in range(0, n, 4 * h):
            a0 = a[i : i + h]
            a1 = a[i + h : i + 2 * h]
            a2 = a[i + 2 * h : i + 3 * h]
            a3 = a[i + 3 * h : i + 4 * h]
            for j in range(h):
                x0, x1, x2, x3 = a0[j], a1[j], a2[j], a3[j]
                y0, y1, y2, y3 = x0 + x1, x0 - x1, x2 + x3, x2 - x3
                a0[j], a2[j], a1[j], a3[j] = y0 + y2, y0 - y2, y1 + y3, y1 - y3
        h *= 4
    if 2 * h <= n:
        for i in range(0, n, 2 * h):
            lo = a[i : i + h]
            hi = a[i + h : i + 2 * h]
            for j in range(h):
                x, y = lo[j], hi[j]
                lo[j], hi[j] = x + y, x - y


# ---- kernels --------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _gather(yptr, yoff, a, b, buf):
    """``buf[:b−a] = y[a:b]`` where ``y`` is stored in pieces: piece ``q`` covers
    ``y[yoff[q]:yoff[q+1]]`` at address ``yptr[q]`` (0: a piece of zeros)."""
    q = np.searchsorted(yoff, a, side="right") - 1
    lo = a
    while lo < b:
        hi = min(b, yoff[q + 1])
        base = yoff[q]
        if yptr[q] == 0:
            for i in range(lo, hi):
                buf[i - a] = 0.0
        elif hi > lo:
            src = numba.carray(_f32_ptr(yptr[q]), (yoff[q + 1] - base,))
            for i in range(lo, hi):
                buf[i - a] = src[i - base]
        lo = hi
        q += 1


@njit(cache=True)
def _chunk_range(c, nchunks, K):
    return (c * K) // nchunks, ((c + 1) * K) // nchunks


@njit(cache=True)
def _reduce_rows(acc):
    """Column sums of ``acc`` in a fixed row order (deterministic)."""
    out = acc[0].copy()
    for c in range(1, acc.shape[0]):
        out += acc[c]
    return out


@njit(parallel=True, cache=True)
def _forward_kernel(u, out, theta0, seg_off, seg_scale, add, D, n, nbits, K, gk0, gk1, pk0, pk1,
                    nchunks):
    for c in prange(nchunks):
        k0, k1 = _chunk_range(c, nchunks, K)
        buf = np.empty(n, np.float32)
        gbuf = np.empty(n, np.float32)
        pbuf = np.empty(n, np.uint32)
        for k in range(k0, k1):
            ss = _gen_block(k, n, nbits, gk0, gk1, pk0, pk1, gbuf, pbuf)
            for i in range(n):
                buf[i] = u[pbuf[i]] * gbuf[i]
            _fwht_inplace(buf)
            sc = _block_scale(ss, n, K)
            a = k * n
            b = min(D, a + n)
            if not add:
                for i in range(b - a):
                    out[a + i] = buf[i] * sc
            else:
                s = np.searchsorted(seg_off, a, side="right") - 1
                lo = a
                while lo < b:
                    hi = min(b, seg_off[s + 1])
                    lam = seg_scale[s]
                    for i in range(lo, hi):
                        out[i] = theta0[i] + lam * (buf[i - a] * sc)
                    lo = hi
                    s += 1


@njit(parallel=True, cache=True)
def _adjoint_kernel(yptr, yoff, D, n, nbits, K, gk0, gk1, pk0, pk1, nchunks):
    acc = np.zeros((nchunks, n), np.float64)
    for c in prange(nchunks):
        k0, k1 = _chunk_range(c, nchunks, K)
        z = acc[c]
        buf = np.empty(n, np.float32)
        gbuf = np.empty(n, np.float32)
        pbuf = np.empty(n, np.uint32)
        for k in range(k0, k1):
            ss = _gen_block(k, n, nbits, gk0, gk1, pk0, pk1, gbuf, pbuf)
            a = k * n
            m = min(D, a + n) - a
            _gather(yptr, yoff, a, a + m, buf)
            for i in range(m, n):
                buf[i] = 0.0
            _fwht_inplace(buf)
            sc = _block_scale(ss, n, K)
            for i in range(n):
                z[pbuf[i]] += buf[i] * gbuf[i] * sc
    return _reduce_rows(acc)


@njit(parallel=True, cache=True)
def _adjoint_said_kernel(yptr, yoff, u, seg_off, seg_scale, D, n, nbits, K, gk0, gk1, pk0, pk1,
                         nchunks):
    m_seg = seg_scale.shape[0]
    acc = np.zeros((nchunks, n), np.float64)
    dots = np.zeros((nchunks, m_seg), np.float64)
    for c in prange(nchunks):
        k0, k1 = _chunk_range(c, nchunks, K)
        z = acc[c]
        dot = dots[c]
        buf = np.empty(n, np.float32)
        fbuf = np.empty(n, np.float32)
        ybuf = np.empty(n, np.float32)
        gbuf = np.empty(n, np.float32)
        pbuf = np.empty(n, np.uint32)
        for k in range(k0, k1):
            ss = _gen_block(k, n, nbits, gk0, gk1, pk0, pk1, gbuf, pbuf)
            sc = _block_scale(ss, n, K)
            a = k * n
            b = min(D, a + n)
            s = np.searchsorted(seg_off, a, side="right") - 1
            if seg_off[s + 1] >= b:
                # one segment: <y_k, (P x)_k> = s_k <H y_k, G_k u[π_k]>, and λ is a block scalar
                lam = seg_scale[s]
                _gather(yptr, yoff, a, b, buf)
                for i in range(b - a, n):
                    buf[i] = 0.0
                _fwht_inplace(buf)
                t = 0.0
                for i in range(n):
                    p = pbuf[i]
                    v = buf[i] * gbuf[i]
                    t += v * u[p]
                    z[p] += lam * (v * sc)
                dot[s] += t * sc
            else:
                for i in range(n):
                    fbuf[i] = u[pbuf[i]] * gbuf[i]
                _fwht_inplace(fbuf)
                _gather(yptr, yoff, a, b, ybuf)
                lo = a
                while lo < b:
                    hi = min(b, seg_off[s + 1])
                    lam = seg_scale[s]
                    t = 0.0
                    for i in range(lo, hi):
                        t += ybuf[i - a] * (fbuf[i - a] * sc)
                        buf[i - a] = lam * ybuf[i - a]
                    dot[s] += t
                    lo = hi
                    s += 1
                for i in range(b - a, n):
                    buf[i] = 0.0
                _fwht_inplace(buf)
                for i in range(n):
                    z[pbuf[i]] += buf[i] * gbuf[i] * sc
    return _reduce_rows(acc), _reduce_rows(dots)


@njit(cache=True)
def _range_forward_chunk(c, u, out, theta0, add, scale, start, stop, D, n, nbits, K, gk0, gk1,
                         pk0, pk1, nchunks):
    """Chunk ``c`` of :func:`range_forward_kernel` (shared with the serial twin)."""
    kb0 = start // n
    nb = (stop - 1) // n - kb0 + 1
    c0, c1 = _chunk_range(c, nchunks, nb)
    buf = np.empty(n, np.float32)
    gbuf = np.empty(n, np.float32)
    pbuf = np.empty(n, np.uint32)
    for kk in range(c0, c1):
        k = kb0 + kk
        ss = _gen_block(k, n, nbits, gk0, gk1, pk0, pk1, gbuf, pbuf)
        for i in range(n):
            buf[i] = u[pbuf[i]] * gbuf[i]
        _fwht_inplace(buf)
        sc = _block_scale(ss, n, K)
        a = k * n
        lo = max(a, start)
        hi = min(a + n, stop)
        if add:
            for i in range(lo, hi):
                out[i - start] = theta0[i - start] + scale * (buf[i - a] * sc)
        else:
            for i in range(lo, hi):
                out[i - start] = scale * (buf[i - a] * sc)


@njit(parallel=True, cache=True)
def range_forward_kernel(u, out, theta0, add, scale, start, stop, D, n, nbits, K, gk0, gk1, pk0,
                         pk1, nchunks):
    """``out[i − start] = θ₀[i − start] + scale·(buf·s_k)`` (``add``) or ``scale·(buf·s_k)`` for
    ``i ∈ [start, stop)``, over the blocks ``start//n … (stop−1)//n`` only (``scale`` float32)."""
    for c in prange(nchunks):
        _range_forward_chunk(c, u, out, theta0, add, scale, start, stop, D, n, nbits, K, gk0, gk1,
                             pk0, pk1, nchunks)


@njit(cache=True)
def _range_forward_serial(u, out, theta0, add, scale, start, stop, D, n, nbits, K, gk0, gk1, pk0,
                          pk1, nchunks):
    """:func:`range_forward_kernel` on the calling thread (no parallel-region overhead)."""
    for c in range(nchunks):
        _range_forward_chunk(c, u, out, theta0, add, scale, start, stop, D, n, nbits, K, gk0, gk1,
                             pk0, pk1, nchunks)


@njit(cache=True)
def _range_adjoint_chunk(c, z, g, u, want_dot, scale, start, stop, D, n, nbits, K, gk0, gk1, pk0,
                         pk1, nchunks):
    """Chunk ``c`` of :func:`range_adjoint_kernel`: accumulates into ``z``, returns its dot."""
    kb0 = start // n
    nb = (stop - 1) // n - kb0 + 1
    c0, c1 = _chunk_range(c, nchunks, nb)
    buf = np.empty(n, np.float32)
    gbuf = np.empty(n, np.float32)
    pbuf = np.empty(n, np.uint32)
    t = 0.0
    for kk in range(c0, c1):
        k = kb0 + kk
        ss = _gen_block(k, n, nbits, gk0, gk1, pk0, pk1, gbuf, pbuf)
        sc = _block_scale(ss, n, K)
        a = k * n
        lo = max(a, start) - a
        hi = min(a + n, stop) - a
        for i in range(lo):
            buf[i] = 0.0
        off = a - start
        for i in range(lo, hi):
            buf[i] = g[i + off]
        for i in range(hi, n):
            buf[i] = 0.0
        _fwht_inplace(buf)
        if want_dot:
            tk = 0.0
            for i in range(n):
                p = pbuf[i]
                v = buf[i] * gbuf[i]
                tk += v * u[p]
                z[p] += scale * (v * sc)
            t += tk * sc
        else:
            for i in range(n):
                z[pbuf[i]] += scale * (buf[i] * gbuf[i] * sc)
    return t


@njit(parallel=True, cache=True)
def range_adjoint_kernel(g, u, want_dot, scale, start, stop, D, n, nbits, K, gk0, gk1, pk0, pk1,
                         nchunks):
    """``(z, dot)``: ``z[π_k(i)] += scale·((H y_k)[i]·G_k[i]·s_k)`` summed over the blocks
    covering ``[start, stop)``, with ``y = g`` placed at ``start`` (zeros elsewhere), float64
    ``(n,)``; ``dot = Σ_k s_k ⟨H y_k, G_k ⊙ u[π_k]⟩`` when ``want_dot`` (else 0). One
    accumulator per chunk, reduced in a fixed order."""
    acc = np.zeros((nchunks, n), np.float64)
    dots = np.zeros(nchunks, np.float64)
    for c in prange(nchunks):
        dots[c] = _range_adjoint_chunk(c, acc[c], g, u, want_dot, scale, start, stop, D, n, nbits,
                                       K, gk0, gk1, pk0, pk1, nchunks)
    dot = 0.0
    for c in range(nchunks):
        dot += dots[c]
    return _reduce_rows(acc), dot


@njit(cache=True)
def _range_adjoint_serial(g, u, want_dot, scale, start, stop, D, n, nbits, K, gk0, gk1, pk0, pk1,
                          nchunks):
    """:func:`range_adjoint_kernel` on the calling thread: the same chunks, accumulators and
    reduction order, hence the same bits."""
    acc = np.zeros((nchunks, n), np.float64)
    dots = np.zeros(nchunks, np.float64)
    for c in range(nchunks):
        dots[c] = _range_adjoint_chunk(c, acc[c], g, u, want_dot, scale, start, stop, D, n, nbits,
                                       K, gk0, gk1, pk0, pk1, nchunks)
    dot = 0.0
    for c in range(nchunks):
        dot += dots[c]
    return _reduce_rows(acc), dot


@njit(cache=True)
def _bits_array(k0, k1, index, out):
    for i in range(index.shape[0]):
        out[i] = _bits(k0, k1, index[i])


# ---- Python API ------------------------------------------------------------------------------
def bits(key: tuple[int, int], index: np.ndarray) -> np.ndarray:
    """``rng.bits`` via the kernel's hash: uint32 words for uint64 counters ``index`` (tests)."""
    index = np.ascontiguousarray(index, dtype=np.uint64)
    out = np.empty(index.shape[0], np.uint32)
    _bits_array(_U32(key[0]), _U32(key[1]), index, out)
    return out


@dataclass(frozen=True)
class FastfoodPlan:
    """Everything the kernels need: shapes, stream keys and ``B`` (float32, ``(n,)``)."""

    d: int
    D: int
    n: int
    K: int
    g_key: tuple[int, int]
    perm_key: tuple[int, int]
    B: np.ndarray

    @property
    def nbits(self) -> int:
        return self.n.bit_length() - 1

    def block_tables(self, k: int) -> tuple[np.ndarray, np.ndarray, float]:
        """``(G_k unscaled float32, π_k uint32, s_k)`` as the kernels generate them (tests)."""
        g = np.empty(self.n, np.float32)
        p = np.empty(self.n, np.uint32)
        ss = _gen_block(k, self.n, self.nbits, *self._keys(), g, p)
        return g, p, float(_block_scale(ss, self.n, self.K))

    def _keys(self) -> tuple[np.uint32, np.uint32, np.uint32, np.uint32]:
        return (_U32(self.g_key[0]), _U32(self.g_key[1]),
                _U32(self.perm_key[0]), _U32(self.perm_key[1]))

    @functools.cached_property
    def _cached_args(self) -> tuple:
        # built once: the range operations are called per tensor, where µs count
        return (self.D, self.n, self.nbits, self.K, *self._keys())

    def _args(self) -> tuple:
        return self._cached_args

    def _nchunks(self) -> int:
        want = max(_MIN_CHUNKS, min(_MAX_CHUNKS, _ACC_ELEMS // self.n))
        return max(1, min(self.K, want))

    def _u(self, x: np.ndarray) -> np.ndarray:
        """``H B x_pad`` (float32, ``(n,)``); one small transform, done by torch."""
        xp = np.zeros(self.n, np.float32)
        xp[: self.d] = x * self.B[: self.d]
        return fwht(torch.from_numpy(xp)).numpy()

    def _finish(self, z: np.ndarray) -> np.ndarray:
        """``(B ⊙ H z)[:d]`` as float32, transforming the float64 accumulator in float64."""
        hz = fwht(torch.from_numpy(z)).numpy()
        return (hz[: self.d] * self.B[: self.d]).astype(np.float32)


# One kernel at a time: each already uses every thread, and numba's fallback "workqueue"
# threading layer aborts the process on concurrent launches from several Python threads.
_LAUNCH = threading.Lock()
_SERIAL_BELOW = 2**18  # ≈ 0.5 ms of single-thread kernel time


@contextlib.contextmanager
def _launch(elements: int):
    """Serialise kernel launches and run them on ``torch.get_num_threads()`` threads, or on one
    for less than ``_SERIAL_BELOW`` elements of work, where waking a second thread costs more
    than it saves (milliseconds on a busy machine). The chunks are split statically (numba's
    dynamic ``parallel_chunksize`` made these kernels up to 10× slower)."""
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    with _LAUNCH:
        numba.set_num_threads(1 if elements < _SERIAL_BELOW else threads)
        yield


def _f32(a: np.ndarray, n: int, name: str) -> np.ndarray:
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {a.shape}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _segments(plan: FastfoodPlan, seg_offsets, seg_scales) -> tuple[np.ndarray, np.ndarray]:
    if seg_offsets is None and seg_scales is None:
        return np.array([0, plan.D], np.int64), np.ones(1, np.float32)
    if seg_offsets is None or seg_scales is None:
        raise ValueError("seg_offsets and seg_scales must be given together")
    off = np.ascontiguousarray(seg_offsets, dtype=np.int64)
    sc = np.ascontiguousarray(seg_scales, dtype=np.float32)
    if off.ndim != 1 or sc.ndim != 1 or off.shape[0] != sc.shape[0] + 1 or sc.shape[0] < 1:
        raise ValueError(
            f"seg_offsets must have length len(seg_scales)+1, got {off.shape} and {sc.shape}"
        )
    if off[0] != 0 or off[-1] != plan.D or np.any(np.diff(off) < 0):
        raise ValueError(
            f"seg_offsets must be non-decreasing from 0 to D={plan.D}, got "
            f"[{off[0]}, …, {off[-1]}]"
        )
    return off, sc


def forward(plan: FastfoodPlan, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``P x``: ``x`` float32 ``(d,)`` → float32 ``(D,)`` (written into ``out`` if given)."""
    x = _f32(x, plan.d, "x")
    if out is None:
        out = np.empty(plan.D, np.float32)
    _check_out(out, plan.D)
    empty_f = np.empty(0, np.float32)
    u = plan._u(x)
    with _launch(plan.D):
        _forward_kernel(u, out, empty_f, np.zeros(2, np.int64), empty_f, False, *plan._args(),
                        plan._nchunks())
    return out


def forward_add(
    plan: FastfoodPlan,
    x: np.ndarray,
    theta0: np.ndarray,
    out: np.ndarray | None = None,
    seg_offsets: np.ndarray | None = None,
    seg_scales: np.ndarray | None = None,
) -> np.ndarray:
    """``θ₀ + λ_seg ⊙ (P x)``, float32 ``(D,)``; λ = 1 without segments. ``out`` may be ``θ₀``."""
    x = _f32(x, plan.d, "x")
    theta0 = _f32(theta0, plan.D, "theta0")
    off, sc = _segments(plan, seg_offsets, seg_scales)
    if out is None:
        out = np.empty(plan.D, np.float32)
    _check_out(out, plan.D)
    u = plan._u(x)
    with _launch(plan.D):
        _forward_kernel(u, out, theta0, off, sc, True, *plan._args(), plan._nchunks())
    return out


def _pieces(plan: FastfoodPlan, y) -> tuple[np.ndarray, np.ndarray, list]:
    """``(addresses, offsets, arrays to keep alive)`` of ``y``: one float32 ``(D,)`` array, or a
    sequence of pieces (float32 arrays of any shape, read in C order, or an int ``n`` for n
    zeros) whose sizes add up to ``D``. Pieces are read in place: no concatenated copy of size D."""
    if isinstance(y, np.ndarray):
        y = [_f32(y, plan.D, "y")]
    keep, ptrs, sizes = [], [], []
    for j, p in enumerate(y):
        if p is None:
            raise ValueError(f"y piece {j} is None; pass its size (an int) for a piece of zeros")
        if isinstance(p, int):  # a zero piece of that many elements
            ptrs.append(0)
            sizes.append(p)
            continue
        a = np.ascontiguousarray(p, dtype=np.float32).reshape(-1)
        keep.append(a)
        ptrs.append(a.ctypes.data if a.size else 0)
        sizes.append(a.size)
    off = np.zeros(len(sizes) + 1, np.int64)
    np.cumsum(sizes, out=off[1:])
    if off[-1] != plan.D:
        raise ValueError(f"y: the pieces hold {int(off[-1])} numbers, expected D={plan.D}")
    return np.asarray(ptrs, np.int64), off, keep


def adjoint(plan: FastfoodPlan, y) -> np.ndarray:
    """``Pᵀ y``: ``y`` float32 ``(D,)`` (or pieces, see :func:`_pieces`) → float32 ``(d,)``."""
    yptr, yoff, keep = _pieces(plan, y)
    with _launch(plan.D):
        z = _adjoint_kernel(yptr, yoff, *plan._args(), plan._nchunks())
    del keep
    return plan._finish(z)


def adjoint_said(
    plan: FastfoodPlan,
    y,
    x: np.ndarray,
    seg_offsets: np.ndarray,
    seg_scales: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """SAID's backward in one pass: ``(Pᵀ(λ_seg ⊙ y) (d,), [Σ_{i∈s} y_i (P x)_i]_s (m,))``.

    Both float32; ``y`` is the gradient w.r.t. θ, ``(D,)`` or in pieces (:func:`_pieces`),
    ``x`` the current ``(d,)`` vector.
    """
    yptr, yoff, keep = _pieces(plan, y)
    x = _f32(x, plan.d, "x")
    off, sc = _segments(plan, seg_offsets, seg_scales)
    u = plan._u(x)
    with _launch(plan.D):
        z, dots = _adjoint_said_kernel(yptr, yoff, u, off, sc, *plan._args(), plan._nchunks())
    del keep
    return plan._finish(z), dots.astype(np.float32)


def _range_blocks(plan: FastfoodPlan, start: int, stop: int) -> tuple[int, int]:
    """``(blocks covering [start, stop), number of chunks)``. The chunk count is a function of
    the plan and the range only (never of the thread count), so results are bit-identical for
    any number of threads: at most the whole-D count, and at least ``_RANGE_CHUNK_BLOCKS``
    blocks per chunk, since each chunk of the adjoint has its own length-n float64
    accumulator, which a chunk of one block would zero, scatter into cold and reduce for
    little work (2× slower at n = 16384, measured)."""
    if not 0 <= start < stop <= plan.D:
        raise ValueError(f"need 0 <= start < stop <= D={plan.D}, got start={start}, stop={stop}")
    nb = (stop - 1) // plan.n - start // plan.n + 1
    return nb, max(1, min(nb // _RANGE_CHUNK_BLOCKS, plan._nchunks()))


def range_forward(
    plan: FastfoodPlan,
    u: np.ndarray,
    start: int,
    stop: int,
    theta0: np.ndarray | None = None,
    scale: float = 1.0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``θ₀ + scale·(P x)[start:stop]`` (or ``scale·(P x)[start:stop]`` without ``theta0``),
    float32 ``(stop−start,)``, from ``u = H B x_pad`` (float32 ``(n,)``). ``out`` may be
    ``theta0``. Bit-identical to :func:`forward_add`'s slice when the range lies in one segment
    of scale ``scale`` (same float32 expression ``θ₀ + λ·(v·s_k)``)."""
    _range_blocks(plan, start, stop)
    m = stop - start
    u = _f32(u, plan.n, "u")
    if theta0 is not None:
        theta0 = _f32(theta0, m, "theta0")
    if out is None:
        out = np.empty(m, np.float32)
    _check_out(out, m)
    return _range_forward(plan, u, start, stop, theta0, scale, out)


def _range_forward(plan, u, start, stop, theta0, scale, out) -> np.ndarray:
    """:func:`range_forward` on validated arguments (``out`` given)."""
    nb, nchunks = _range_blocks(plan, start, stop)
    add = theta0 is not None
    if not add:
        theta0 = _EMPTY_F32
    args = (u, out, theta0, add, np.float32(scale), start, stop, *plan._args(), nchunks)
    if nb * plan.n < _SERIAL_BELOW:
        _range_forward_serial(*args)  # not a parallel kernel: no launch lock, no thread setting
    else:
        with _launch(nb * plan.n):
            range_forward_kernel(*args)
    return out


def range_adjoint(
    plan: FastfoodPlan,
    g: np.ndarray,
    start: int,
    stop: int,
    scale: float = 1.0,
    u: np.ndarray | None = None,
) -> tuple[np.ndarray, float | None]:
    """Backward of ``u ↦ scale·(P x)[start:stop]``: ``(gu float32 (n,), dot)``.

    ``g``: float32 ``(stop−start,)``. ``gu`` is the float64 accumulator cast to float32, before
    the final ``(B ⊙ H ·)[:d]`` (:meth:`FastfoodPlan._finish`, once per step). ``dot``:
    ``Σ_i g_i (P x)[start+i]`` (float) when ``u`` is given, else None.
    """
    _range_blocks(plan, start, stop)
    g = _f32(g, stop - start, "g")
    if u is not None:
        u = _f32(u, plan.n, "u")
    return _range_adjoint(plan, g, start, stop, scale, u)


def _range_adjoint(plan, g, start, stop, scale, u) -> tuple[np.ndarray, float | None]:
    """:func:`range_adjoint` on validated arguments."""
    nb, nchunks = _range_blocks(plan, start, stop)
    want_dot = u is not None
    if not want_dot:
        u = _EMPTY_F32
    args = (g, u, want_dot, np.float32(scale), start, stop, *plan._args(), nchunks)
    if nb * plan.n < _SERIAL_BELOW:
        z, dot = _range_adjoint_serial(*args)
    else:
        with _launch(nb * plan.n):
            z, dot = range_adjoint_kernel(*args)
    return z.astype(np.float32), (float(dot) if want_dot else None)


def _check_out(out: np.ndarray, D: int) -> None:
    if out.dtype != np.float32 or out.shape != (D,) or not out.flags.c_contiguous:
        raise ValueError(f"out must be a contiguous float32 array of shape ({D},)")
