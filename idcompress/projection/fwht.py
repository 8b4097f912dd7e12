"""Fast Walsh–Hadamard transform (unnormalised) along the last dimension.

``H_n = H_{2^{q_1}} ⊗ … ⊗ H_{2^{q_m}}`` with ``m = ⌈log₂ n / 5⌉`` factors of (nearly) equal size
``q_i ≤ 5`` (n = 1024: 32 × 32; n = 16384: 32 × 32 × 16): one small dense matrix product per
factor, i.e. ``m`` passes over memory instead of ``log₂ n`` butterfly passes, and no tensor of
rank above 3 (CUDA refuses rank > 25, which the ``[2] * log n`` reshape of older code hits on big
models). The lowest bits are transformed first as one plain GEMM ``(rows, 2^q) @ H`` (``H`` is
symmetric); each further factor is a batched ``H @ (batch·left, 2^q, right)`` product.

``fwht_legacy`` is the previous implementation (groups of 5 bits from the lowest, the first one a
batched matrix–*vector* product), kept for ``benchmarks/bench_projection.py --backends torch-old``
and the tests; both agree to float32 round-off.
"""

from __future__ import annotations

import functools

import torch

_GROUP_BITS = 5  # 32×32 blocks: few passes, little redundant arithmetic on CPU and GPU


@functools.lru_cache(maxsize=64)
def _hadamard_cpu(q: int, dtype: torch.dtype) -> torch.Tensor:
    h = torch.ones(1, 1, dtype=dtype)
    for _ in range(q):
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def hadamard(n: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """The unnormalised Sylvester–Hadamard matrix of order ``n`` (a power of two)."""
    q = _log2_exact(n)
    return _hadamard_cpu(q, dtype).to(device)


def _log2_exact(n: int) -> int:
    if n < 1 or n & (n - 1):
        raise ValueError(f"Walsh–Hadamard transform needs a power-of-two length, got {n}")
    return n.bit_length() - 1


def fwht(x: torch.Tensor, group_bits: int = _GROUP_BITS) -> torch.Tensor:
    """Unnormalised Walsh–Hadamard transform of ``x`` along its last dimension.

    ``x``: ``(..., n)``, ``n`` a power of two, floating point, any device. Returns a new tensor of
    the same shape and dtype; ``fwht(fwht(x)) == n * x``.
    """
    # projection math stays in the caller's dtype (float32) even inside an autocast region
    with torch.autocast(device_type=x.device.type, enabled=False):
        return _fwht(x, group_bits)


def _factor_bits(L: int, group_bits: int) -> list[int]:
    """``L`` bits split into ``⌈L / group_bits⌉`` groups of (nearly) equal size, largest first."""
    m = -(-L // group_bits)
    base, extra = divmod(L, m)
    return [base + (1 if i < extra else 0) for i in range(m)]


def _fwht(x: torch.Tensor, group_bits: int) -> torch.Tensor:
    n = x.shape[-1]
    L = _log2_exact(n)
    if L == 0:
        return x.clone()
    y = x.reshape(-1, n)
    b = y.shape[0]
    qs = _factor_bits(L, group_bits)
    q = qs[0]
    # bits [0, q): a plain GEMM over contiguous rows of length 2^q (H is symmetric)
    y = torch.mm(y.reshape(-1, 1 << q), _hadamard_cpu(q, y.dtype).to(y.device))
    done = q
    for q in qs[1:]:
        a = 1 << q
        right = 1 << done
        left = n // (a * right)
        h = _hadamard_cpu(q, y.dtype).to(y.device)
        # bits [done, done+q) of the index form the middle axis of this view
        y = torch.matmul(h, y.reshape(b * left, a, right))
        done += q
    return y.reshape(x.shape)


def fwht_legacy(x: torch.Tensor, group_bits: int = _GROUP_BITS) -> torch.Tensor:
    """The previous :func:`fwht` (same result to float32 round-off); for benchmarks and tests."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        return _fwht_legacy(x, group_bits)


def _fwht_legacy(x: torch.Tensor, group_bits: int) -> torch.Tensor:
    n = x.shape[-1]
    L = _log2_exact(n)
    lead = x.shape[:-1]
    y = x.reshape(-1, n)
    if L == 0:
        return x.clone()
    b = y.shape[0]
    done = 0
    while done < L:
        q = min(group_bits, L - done)
        a = 1 << q
        right = 1 << done
        left = n // (a * right)
        h = _hadamard_cpu(q, y.dtype).to(y.device)
        # bits [done, done+q) of the index form the middle axis of this view
        y = torch.matmul(h, y.reshape(b, left, a, right))
        done += q
    return y.reshape(*lead, n)
