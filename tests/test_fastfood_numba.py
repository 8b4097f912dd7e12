"""The numba Fastfood kernels: same RNG bits as rng.py, same P as the torch reference."""

import numpy as np
import pytest
import torch
from helpers import randn as _randn
from helpers import rel_error as _rel

pytest.importorskip("numba")

from idcompress.projection import fastfood_numba as ffn  # noqa: E402
from idcompress.projection import rng  # noqa: E402
from idcompress.projection.fastfood import FastfoodProjection  # noqa: E402

# (d, D): d not a power of two, D not a multiple of n, d = 1, K = 1, n = 1, n < 8, n > 8192
SHAPES = [
    (1000, 20_000),
    (100, 1000),
    (5, 40),
    (3, 50),
    (1024, 5 * 1024 + 7),
    (7, 7),
    (1, 1),
    (1, 37),
    (9000, 40_000),
]


def _pair(d, D, seed=3):
    return (
        FastfoodProjection(d, D, seed, backend="numba"),
        FastfoodProjection(d, D, seed, backend="torch"),
    )


def test_bits_match_rng_including_high_counters():
    gen = np.random.default_rng(0)
    idx = np.concatenate([
        np.arange(0, 2000),
        gen.integers(0, 2**62, 5000),
        np.arange(2**32 - 1000, 2**32 + 1000),
        [2**40, 2**63 - 1],
    ]).astype(np.uint64)
    for key in [rng.stream_key(0, "fastfood/G"), rng.stream_key(5, "x"), (0, 0), (2**32 - 1, 1)]:
        ref = rng.bits(key, torch.from_numpy(idx.astype(np.int64))).numpy()
        assert np.array_equal(ffn.bits(key, idx).astype(np.int64), ref)


@pytest.mark.parametrize("n,blocks", [(1024, [0, 1, 777]), (8, [5]), (1, [3]), (2**14, [2])])
def test_block_tables_match_rng(n, blocks):
    # a plan with K·n > 2**33 so that some G counters use the high word of the 64-bit counter
    K = 2**34 // n
    plan = ffn.FastfoodPlan(n, K * n, n, K, rng.stream_key(1, "fastfood/G"),
                            rng.stream_key(1, "fastfood/perm"), np.ones(n, np.float32))
    nbits = n.bit_length() - 1
    for k in blocks + [K - 1, 2**32 // n + 1]:
        g, p, sc = plan.block_tables(k)
        counters = torch.arange(k * n, (k + 1) * n, dtype=torch.int64)
        g_ref = rng.to_normal(rng.bits(plan.g_key, counters))
        keys = rng.bits(plan.perm_key, 3 * k + torch.arange(3))
        p_ref = rng.permute_bits(torch.arange(n), nbits, keys)
        assert np.array_equal(g, g_ref.numpy())
        assert np.array_equal(p.astype(np.int64), p_ref.numpy())
        expected = 1 / np.sqrt(n * K * np.sum(g_ref.double().numpy() ** 2))
        assert sc == pytest.approx(expected, rel=1e-6)


def test_block_tables_match_projection_cache():
    P = FastfoodProjection(100, 5000, 42, backend="torch")
    plan = FastfoodProjection(100, 5000, 42, backend="numba")._plan
    for k in range(P.K):
        g, p, sc = plan.block_tables(k)
        assert np.array_equal(p.astype(np.int32), P.perm[k].numpy())
        np.testing.assert_allclose(g * sc, P.gscale[k].numpy(), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("d,D", SHAPES)
def test_forward_and_adjoint_match_torch(d, D):
    fast, ref = _pair(d, D)
    assert fast.uses_numba() and not ref.uses_numba()
    x, y = _randn(d, 0), _randn(D, 1)
    px = ref.apply(x)
    assert torch.isfinite(px).all()  # guards the test itself (a zero G_k gives NaN in both)
    assert _rel(fast.apply(x), px) < 1e-5
    assert _rel(fast.adjoint(y), ref.adjoint(y)) < 1e-5


@pytest.mark.parametrize("d,D", [(1000, 20_000), (3, 50), (1024, 5 * 1024 + 7), (7, 7)])
def test_apply_add_with_segments(d, D):
    fast, ref = _pair(d, D)
    x, theta0 = _randn(d, 2), _randn(D, 3)
    px = ref.apply(x)
    # plain: θ₀ + P x
    assert _rel(fast.apply_add(x, theta0), theta0 + px) < 1e-6
    # segments: an empty one, one inside a block, ones across block boundaries
    off = torch.tensor(sorted([0, min(2, D), D // 3, D // 3, D // 2 + 1, D]))
    lam = torch.linspace(-2, 3, off.numel() - 1)
    want = theta0 + torch.repeat_interleave(lam, off.diff()) * px
    got = fast.apply_add(x, theta0, off, lam)
    assert _rel(got, want) < 1e-6
    assert _rel(ref.apply_add(x, theta0, off, lam), want) < 1e-6
    # in place into θ₀'s own buffer
    buf = theta0.clone()
    fast.apply_add(x, buf, off.numpy(), lam.numpy(), out=buf)
    torch.testing.assert_close(buf, got, rtol=0, atol=0)


def test_adjoint_identity():
    fast, _ = _pair(300, 70_001)
    x, y = _randn(300, 4).double(), _randn(70_001, 5).double()
    lhs = (fast.apply(x.float()).double() @ y).item()
    rhs = (x @ fast.adjoint(y.float()).double()).item()
    assert lhs == pytest.approx(rhs, rel=1e-5)


@pytest.mark.parametrize("d,D", [(1000, 20_000), (3, 50), (64, 64 * 9 + 5)])
def test_adjoint_said_matches_reference(d, D):
    fast, ref = _pair(d, D)
    x, y = _randn(d, 6), _randn(D, 7)
    off = torch.tensor([0, 1, D // 4, D // 4, D // 2, D - 1, D])
    lam = torch.tensor([0.5, -1.0, 7.0, 2.0, 0.0, 3.0])
    g, dots = fast.adjoint_said(y, x, off, lam)
    lam_full = torch.repeat_interleave(lam, off.diff())
    assert _rel(g, ref.adjoint(lam_full * y)) < 1e-5
    px = ref.apply(x).double()
    want = torch.stack([(y.double() * px)[a:b].sum() for a, b in zip(off[:-1], off[1:])])
    assert torch.allclose(dots.double(), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
    g2, dots2 = ref.adjoint_said(y, x, off, lam)
    assert _rel(g2, g) < 1e-5 and torch.allclose(dots2.double(), want, rtol=1e-4, atol=1e-4)


def test_autograd_through_numba_apply():
    fast, _ = _pair(13, 700)
    M = fast.materialize()
    x = torch.linspace(0.5, -0.5, 13, requires_grad=True)
    target = torch.linspace(-1, 1, 700)
    ((fast.apply(x) - target) ** 3).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    ((M @ x2 - target) ** 3).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-6)


def test_results_do_not_depend_on_thread_count():
    D = 2 * ffn._SERIAL_BELOW + 3  # large enough to run on several threads
    fast = FastfoodProjection(100, D, 3, backend="numba")
    x, y = _randn(100, 8), _randn(D, 9)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a, b = fast.apply(x), fast.adjoint(y)
        torch.set_num_threads(2)
        assert torch.equal(a, fast.apply(x)) and torch.equal(b, fast.adjoint(y))
    finally:
        torch.set_num_threads(before)


def test_backend_choice_and_state_bytes():
    auto = FastfoodProjection(1000, 100_000, 0)
    assert auto.uses_numba() and auto.perm is None and auto.gscale is None
    assert auto.state_bytes() == 1024 * 4  # B only: nothing per parameter
    ref = FastfoodProjection(1000, 100_000, 0, backend="torch")
    assert ref.state_bytes() >= 8 * 100_000
    with pytest.raises(ValueError, match="backend='gpu' is unknown"):
        FastfoodProjection(10, 100, 0, backend="gpu")
    with pytest.raises(ValueError, match="CPU only"):
        FastfoodProjection(10, 100, 0, backend="numba").to("cuda")


def test_bad_segments_are_rejected():
    fast, ref = _pair(10, 100)
    x, t0 = torch.ones(10), torch.zeros(100)
    for p in (fast, ref):
        with pytest.raises(ValueError, match="seg_offsets must have length"):
            p.apply_add(x, t0, [0, 100], [1.0, 2.0])
        with pytest.raises(ValueError, match="non-decreasing from 0 to D=100"):
            p.apply_add(x, t0, [0, 60, 50, 100], [1.0, 2.0, 3.0])
        with pytest.raises(ValueError, match="given together"):
            p.apply_add(x, t0, [0, 100], None)
    with pytest.raises(ValueError, match="theta0_flat must have shape"):
        fast.apply_add(x, torch.zeros(99))


def test_concurrent_calls_from_python_threads():
    from concurrent.futures import ThreadPoolExecutor

    fast, _ = _pair(200, 30_000)
    xs = [_randn(200, s) for s in range(6)]
    want = [fast.apply(x) for x in xs]
    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(fast.apply, xs))
    assert all(torch.equal(a, b) for a, b in zip(got, want))


@pytest.mark.parametrize("d,D", [(1000, 20_000), (64, 64 * 9 + 5)])
def test_gradient_pieces_read_in_place_equal_the_flat_vector(d, D):
    """The adjoints read per-tensor gradients in place (no concatenated copy); same numbers."""
    fast, ref = _pair(d, D)
    x, y = _randn(d, 8), _randn(D, 9)
    cut = [0, 1, 17, 17, D // 3, D // 2, D]  # one empty piece, pieces straddling blocks
    pieces = [y[a:b].clone() for a, b in zip(cut[:-1], cut[1:])]
    pieces[3] = pieces[3].reshape(-1, 1).expand(-1, 2)[:, 0].reshape(-1)  # a strided view
    pieces[4] = pieces[4].reshape(1, -1)  # shape does not matter, C order does
    assert torch.equal(fast.adjoint_pieces(pieces), fast.adjoint(y))
    assert _rel(ref.adjoint_pieces(pieces), fast.adjoint(y)) < 1e-5
    off = torch.tensor([0, D // 5, D])
    lam = torch.tensor([2.0, -0.5])
    g, dots = fast.adjoint_said(pieces, x, off, lam)
    g0, dots0 = fast.adjoint_said(y, x, off, lam)
    assert torch.equal(g, g0) and torch.equal(dots, dots0)
    # an int is a piece of zeros: the same as zeroing that part of y
    z = y.clone()
    z[cut[1]:cut[2]] = 0
    zp = [pieces[0], cut[2] - cut[1], *pieces[2:]]
    assert torch.equal(fast.adjoint_pieces(zp), fast.adjoint(z))
    assert _rel(ref.adjoint_pieces(zp), fast.adjoint(z)) < 1e-5
    with pytest.raises(ValueError, match="expected D="):
        fast.adjoint_pieces(pieces[:-1])
