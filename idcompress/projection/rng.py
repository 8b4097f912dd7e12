"""Counter-based random generator: the only source of randomness in idcompress (docs/design.md, "Randomness").

A number is a pure function of ``(seed, stream, index)``:

* ``stream_key(seed, stream)`` turns the seed and a stable stream *name* (e.g. ``"fastfood/G"``,
  ``"init/classifier.weight"``) into two 32-bit keys with BLAKE2b, so streams never depend on
  dict order, ``id()`` or the global RNG.
* ``bits(key, index)`` maps a 64-bit counter to a 32-bit word with two rounds of the MurmurHash3
  finaliser (``fmix32``), keyed by xor. For a fixed key it is a bijection of the low 32 bits.
  All arithmetic is exact integer arithmetic on int64 tensors (32×32-bit products are split into
  16-bit halves so nothing overflows), hence the same bits on CPU and CUDA, on every OS and for
  every torch/numpy version.
* Floats are derived with correctly rounded operations only (int→float, add, multiply), never
  with ``log``/``cos`` whose last bit differs between devices:

  - ``uniform``: the top 24 bits, ``(w >> 8 + 0.5) / 2**24`` ∈ (0, 1).
  - ``normal``: Irwin–Hall on the four bytes of one word, ``(b0+b1+b2+b3 − 510) / 147.80``:
    mean 0, variance 1, 1021 levels, support ±3.45, excess kurtosis −0.3. Close enough to a
    Gaussian for random projections and head initialisation, and bit-reproducible everywhere.
  - ``rademacher``: ±1 from the top bit.
  - ``permute_bits``: a keyed bijection of ``[0, 2**b)`` (three rounds of add-key, multiply by an
    odd constant, xorshift), evaluated per index, so a permutation needs no storage.

Changing anything here changes every checkpoint: bump ``RNG_VERSION`` (stored in checkpoints
as the ``rng`` field) and update the golden values in ``tests/test_rng.py``.
"""

from __future__ import annotations

import hashlib

import torch

RNG_NAME = "idc-fmix32x2"
RNG_VERSION = 1

M32 = 0xFFFFFFFF
_FMIX_C1 = 0x85EBCA6B
_FMIX_C2 = 0xC2B2AE35
# Odd multipliers of the bit-permutation rounds (fixed; the keys come from the stream).
PERM_MULTIPLIERS = (0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D)
PERM_ROUNDS = 3
NORMAL_MEAN = 510.0
# sd of a sum of 4 independent uniform bytes: sqrt(4 * (256**2 - 1) / 12)
NORMAL_INV_SD = 1.0 / ((4 * (256**2 - 1) / 12) ** 0.5)


def stream_key(seed: int, stream: str) -> tuple[int, int]:
    """Two 32-bit keys for ``(seed, stream)``; a pure function of its arguments."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    h = hashlib.blake2b(f"idcompress/{RNG_NAME}/{seed}/{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(h[:4], "little"), int.from_bytes(h[4:], "little")


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``(x * c) mod 2**32`` for int64 ``x`` in [0, 2**32) without int64 overflow."""
    lo = x * (c & 0xFFFF)
    hi = ((x * (c >> 16)) & 0xFFFF) << 16
    return (lo + hi) & M32


def _fmix32(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, _FMIX_C1)
    x = x ^ (x >> 13)
    x = _mul32(x, _FMIX_C2)
    return x ^ (x >> 16)


def bits(key: tuple[int, int], index: torch.Tensor) -> torch.Tensor:
    """32-bit words (as int64 in [0, 2**32)) for non-negative int64 counters ``index``."""
    index = index.to(torch.int64)
    lo = index & M32
    hi = index >> 32
    x = _fmix32(lo ^ key[0])
    return _fmix32(x ^ key[1] ^ hi)


_CHUNK = 1 << 16  # cache-sized pieces: the hash is ~40 elementwise int64 ops


def _generate(key, start: int, count: int, device, dtype: torch.dtype, convert) -> torch.Tensor:
    out = torch.empty(count, dtype=dtype, device=device)
    for a in range(0, count, _CHUNK):
        b = min(count, a + _CHUNK)
        idx = torch.arange(start + a, start + b, dtype=torch.int64, device=device)
        out[a:b] = convert(bits(key, idx))
    return out


def arange_bits(key: tuple[int, int], start: int, count: int, device=None) -> torch.Tensor:
    """``bits`` for the counters ``start, …, start+count−1``."""
    return _generate(key, start, count, device, torch.int64, lambda w: w)


def to_uniform(w: torch.Tensor) -> torch.Tensor:
    """Words → float32 uniform in (0, 1) (24-bit resolution)."""
    return ((w >> 8).to(torch.float32) + 0.5) * (2.0**-24)


def to_normal(w: torch.Tensor) -> torch.Tensor:
    """Words → float32 approximately standard normal (Irwin–Hall of 4 bytes, exact arithmetic)."""
    s = (w & 0xFF) + ((w >> 8) & 0xFF) + ((w >> 16) & 0xFF) + (w >> 24)
    return (s.to(torch.float32) - NORMAL_MEAN) * NORMAL_INV_SD


def to_rademacher(w: torch.Tensor) -> torch.Tensor:
    """Words → float32 ±1 from the top bit."""
    return 1.0 - 2.0 * (w >> 31).to(torch.float32)


def uniform(seed: int, stream: str, count: int, start: int = 0, device=None) -> torch.Tensor:
    """``count`` float32 uniforms in (0, 1) from counters ``start…``."""
    return _generate(stream_key(seed, stream), start, count, device, torch.float32, to_uniform)


def normal(seed: int, stream: str, count: int, start: int = 0, device=None) -> torch.Tensor:
    """``count`` float32 approximate standard normals from counters ``start…``."""
    return _generate(stream_key(seed, stream), start, count, device, torch.float32, to_normal)


def rademacher(seed: int, stream: str, count: int, start: int = 0, device=None) -> torch.Tensor:
    """``count`` float32 ±1 from counters ``start…``."""
    return _generate(stream_key(seed, stream), start, count, device, torch.float32, to_rademacher)


def permute_bits(x: torch.Tensor, nbits: int, round_keys: torch.Tensor) -> torch.Tensor:
    """Keyed bijection of ``[0, 2**nbits)`` applied elementwise.

    ``x``: int64 indices, shape ``(..., n)``; ``round_keys``: int64 ``(..., PERM_ROUNDS)`` (one key
    per round, broadcast against ``x``'s leading dims). Requires ``nbits <= 31`` so the products
    stay below 2**63.
    """
    if nbits == 0:
        return torch.zeros_like(x)
    if nbits > 31:
        raise ValueError(f"permute_bits supports at most 31 bits, got {nbits}")
    mask = (1 << nbits) - 1
    shift = (nbits + 1) // 2
    for r in range(PERM_ROUNDS):
        x = (x + round_keys[..., r : r + 1]) & mask
        x = (x * PERM_MULTIPLIERS[r]) & mask
        x = x ^ (x >> shift)
    return x
