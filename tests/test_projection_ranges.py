"""Range operations of the projections (core v2): prepare / range_apply / range_adjoint /
prepare_adjoint, against today's whole-D operations."""

import numpy as np
import pytest
import torch
from helpers import randn as _randn
from helpers import rel_error as _rel

from idcompress.projection import dense as dense_mod
from idcompress.projection import make_projection
from idcompress.projection.fastfood import FastfoodProjection

numba = pytest.importorskip("numba")
from idcompress.projection import fastfood_numba as ffn  # noqa: E402

# (d, D): n = 1024 with a partial last block, n = 128, n = 8, K·n = D + 7, K = 1, n = 1, n = 16384
SHAPES = [
    (1000, 20_000),
    (100, 1000),
    (5, 40),
    (1024, 5 * 1024 + 7),
    (7, 7),
    (1, 37),
    (9000, 40_000),
]


def _ranges(n: int, D: int) -> list[tuple[int, int]]:
    """Ranges that start and end mid-block, one element, whole D, the last (partial) block,
    block-aligned ones, one inside a block."""
    cand = [
        (0, D), (0, 1), (D - 1, D), (D // 2, D // 2 + 1),
        (min(D - 1, n // 2 + 1), min(D, 3 * n + n // 3 + 1)),
        ((D - 1) // n * n, D),  # the last block
        (max(0, D - n - 3), D),
        (min(n, D - 1), min(D, 2 * n)),  # block-aligned
        (min(D - 1, n + 1), min(D, n + max(2, n // 2))),  # inside one block
        (3 % D, D - 2 if D > 4 else D),
    ]
    return sorted({(a, b) for a, b in cand if 0 <= a < b <= D})


def _padded(g: torch.Tensor, a: int, D: int) -> torch.Tensor:
    y = torch.zeros(D)
    y[a : a + g.numel()] = g
    return y


def _dot_close(dot: float, g: torch.Tensor, px: torch.Tensor, rms: float, tol: float = 1e-6) -> bool:
    """``dot`` against ``Σ g·px`` in float64, relative to ``‖g‖·√(‖px‖² + L·rms²)``.

    ``rms``: the RMS entry of the whole ``P x``. A float32 entry of ``P x`` carries an absolute
    error proportional to the typical entry, not to itself, so a range of a few small entries
    (or a dot that cancels to ~0) has no meaningful relative error of its own.
    """
    want = (g.double() * px.double()).sum().item()
    scale = g.double().norm().item() * (px.double().norm().item() ** 2 + px.numel() * rms**2) ** 0.5
    return abs(dot - want) <= tol * max(scale, 1e-30)


def _rms(px: torch.Tensor) -> float:
    return px.double().norm().item() / px.numel() ** 0.5


def _partition(D: int, seed: int) -> list[int]:
    """Offsets ``0 = o_0 < … < o_m = D``: BERT-like sizes (big, tiny, tiny, …), cycled."""
    sizes = [37, 1, 3, 1, 150, 4, 2, 2, 611, 5]
    off, i = [0], seed
    while off[-1] < D:
        off.append(min(D, off[-1] + sizes[i % len(sizes)] * max(1, D // 2000)))
        i += 1
    return off


# ---- Fastfood, numba backend: bit-identical forward ---------------------------------------
@pytest.mark.parametrize("d,D", SHAPES)
def test_prepare_is_plan_u_bit_for_bit(d, D):
    fast = FastfoodProjection(d, D, 3, backend="numba")
    ref = FastfoodProjection(d, D, 3, backend="torch")
    x = _randn(d, 0)
    u = fast.prepare(x)
    assert u.dtype == torch.float32 and u.shape == (fast.n,) and not u.requires_grad
    assert np.array_equal(u.numpy(), fast._plan._u(x.numpy()))
    assert torch.equal(ref.prepare(x), u)  # the torch path does the same operations
    assert torch.equal(fast.prepare(x.double()), u)


@pytest.mark.parametrize("d,D", SHAPES)
def test_range_apply_bit_identical_to_apply_add(d, D):
    fast = FastfoodProjection(d, D, 3, backend="numba")
    x, theta0 = _randn(d, 1), _randn(D, 2)
    u = fast.prepare(x)
    px = fast.apply(x)
    for a, b in _ranges(fast.n, D):
        lam = 0.37 + 0.01 * a
        off = [0, a, b, D]
        whole = fast.apply_add(x, theta0, off, [1.5, lam, -0.25])
        got = fast.range_apply(u, a, b, theta0[a:b], lam)
        assert torch.equal(got, whole[a:b]), (a, b)
        # no θ₀, scale 1: the plain forward
        assert torch.equal(fast.range_apply(u, a, b), px[a:b]), (a, b)
        # no θ₀, a scale: scale · (P x)
        assert torch.equal(fast.range_apply(u, a, b, None, lam),
                           torch.from_numpy(np.float32(lam) * px[a:b].numpy()))
        # into out, and in place into θ₀'s own buffer
        t0 = theta0[a:b].clone()
        out = torch.full((b - a,), float("nan"))
        assert fast.range_apply(u, a, b, t0, lam, out=out) is out
        assert torch.equal(out, whole[a:b])
        assert fast.range_apply(u, a, b, t0, lam, out=t0) is t0
        assert torch.equal(t0, whole[a:b])


@pytest.mark.parametrize("d,D", [(1000, 20_000), (64, 64 * 9 + 5), (9000, 40_000)])
def test_range_apply_over_a_partition_is_apply_add(d, D):
    fast = FastfoodProjection(d, D, 5, backend="numba")
    x, theta0 = _randn(d, 3), _randn(D, 4)
    off = _partition(D, 0)
    lam = torch.linspace(-2, 3, len(off) - 1)
    u = fast.prepare(x)
    got = torch.cat([fast.range_apply(u, a, b, theta0[a:b], float(s))
                     for a, b, s in zip(off[:-1], off[1:], lam)])
    assert torch.equal(got, fast.apply_add(x, theta0, off, lam))


# ---- Fastfood adjoint --------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("d,D", SHAPES)
def test_range_adjoint_matches_whole_adjoint(d, D, backend):
    p = FastfoodProjection(d, D, 3, backend=backend)
    x, y = _randn(d, 5), _randn(D, 6)
    u = p.prepare(x)
    px = p.apply(x)
    for a, b in _ranges(p.n, D):
        g = y[a:b].contiguous()
        scale = -0.75
        gu, dot = p.range_adjoint(g, a, b, scale, u)
        assert gu.dtype == torch.float32 and gu.shape == (p.n,)
        want = p.adjoint(_padded(scale * g, a, D))
        assert _rel(p.prepare_adjoint(gu), want) < 1e-6, (a, b)
        assert _dot_close(dot, g, px[a:b], _rms(px)), (a, b)
        gu2, none = p.range_adjoint(g, a, b, scale)
        assert none is None and torch.equal(gu2, gu)


@pytest.mark.parametrize("d,D", [(1000, 20_000), (3, 50), (64, 64 * 9 + 5), (9000, 40_000)])
def test_partition_sum_equals_adjoint_pieces_and_said(d, D):
    fast = FastfoodProjection(d, D, 7, backend="numba")
    x, y = _randn(d, 7), _randn(D, 8)
    off = _partition(D, 3)
    lam = torch.linspace(-1.5, 2.5, len(off) - 1)
    u = fast.prepare(x)
    pieces = [y[a:b] for a, b in zip(off[:-1], off[1:])]
    total = torch.zeros(fast.n, dtype=torch.float64)
    total_did = torch.zeros(fast.n, dtype=torch.float64)
    dots = []
    for a, b, g, s in zip(off[:-1], off[1:], pieces, lam):
        gu, dot = fast.range_adjoint(g.contiguous(), a, b, float(s), u)
        total += gu.double()
        dots.append(dot)
        total_did += fast.range_adjoint(g.contiguous(), a, b)[0].double()
    g_said, dots_said = fast.adjoint_said(pieces, x, off, lam)
    assert _rel(fast.prepare_adjoint(total), g_said) < 1e-6
    assert _rel(fast.prepare_adjoint(total.float()), g_said) < 1e-6
    assert _rel(fast.prepare_adjoint(total_did), fast.adjoint_pieces(pieces)) < 1e-6
    # the λ gradients: per range, against the float64 reference (adjoint_said's are float32)
    px = fast.apply(x)
    for (a, b), dot in zip(zip(off[:-1], off[1:]), dots):
        assert _dot_close(dot, y[a:b], px[a:b], _rms(px)), (a, b)
    torch.testing.assert_close(torch.tensor(dots, dtype=torch.float32), dots_said,
                               rtol=1e-5, atol=1e-6 * float(dots_said.abs().max()))


# ---- torch backend against numba ---------------------------------------------------------------
@pytest.mark.parametrize("cached", [True, False])
@pytest.mark.parametrize("d,D", [(1000, 20_000), (5, 40), (1024, 5 * 1024 + 7), (9000, 40_000)])
def test_torch_backend_matches_numba(d, D, cached):
    fast = FastfoodProjection(d, D, 11, backend="numba")
    ref = FastfoodProjection(d, D, 11, backend="torch", cache_max_bytes=2**30 if cached else 0)
    assert (ref.perm is not None) == cached
    x, y, theta0 = _randn(d, 9), _randn(D, 10), _randn(D, 11)
    uf, ur = fast.prepare(x), ref.prepare(x)
    for a, b in _ranges(fast.n, D):
        assert _rel(ref.range_apply(ur, a, b, theta0[a:b], 1.25),
                    fast.range_apply(uf, a, b, theta0[a:b], 1.25)) < 1e-5
        assert _rel(ref.range_apply(ur, a, b), fast.range_apply(uf, a, b)) < 1e-5
        g = y[a:b].contiguous()
        gr, dr = ref.range_adjoint(g, a, b, 0.5, ur)
        gf, df = fast.range_adjoint(g, a, b, 0.5, uf)
        assert _rel(gr, gf) < 1e-5
        scale = g.double().norm().item() * fast.apply(x)[a:b].double().norm().item()
        assert abs(dr - df) <= 1e-5 * scale
        t0 = theta0[a:b].clone()
        ref.range_apply(ur, a, b, t0, 1.25, out=t0)
        assert torch.equal(t0, ref.range_apply(ur, a, b, theta0[a:b], 1.25))
    gu = _randn(fast.n, 12)
    assert _rel(ref.prepare_adjoint(gu), fast.prepare_adjoint(gu)) < 1e-12


def test_numba_results_do_not_depend_on_thread_count():
    D = 2 * ffn._SERIAL_BELOW + 3  # large enough to run on several threads
    fast = FastfoodProjection(100, D, 3, backend="numba")
    a, b = 5, D - 7
    assert ffn._range_blocks(fast._plan, a, b)[1] > 1
    x, y, theta0 = _randn(100, 13), _randn(b - a, 14), _randn(b - a, 15)
    u = fast.prepare(x)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        f1 = fast.range_apply(u, a, b, theta0, 0.5)
        g1, d1 = fast.range_adjoint(y, a, b, 0.5, u)
        torch.set_num_threads(2)
        f2 = fast.range_apply(u, a, b, theta0, 0.5)
        g2, d2 = fast.range_adjoint(y, a, b, 0.5, u)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(f1, f2) and torch.equal(g1, g2) and d1 == d2


@pytest.mark.parametrize("d,D,a,b", [(100, 5000, 7, 4000), (1000, 20_000, 1, 19_999),
                                     (9000, 40_000, 100, 39_000)])
def test_serial_twins_give_the_same_bits(d, D, a, b):
    """Small ranges run the serial twin kernels: same chunks, same reduction order."""
    fast = FastfoodProjection(d, D, 2, backend="numba")
    plan = fast._plan
    u = fast.prepare(_randn(d, 23)).numpy()
    t0, g = _randn(b - a, 24).numpy(), _randn(b - a, 25).numpy()
    nb, nc = ffn._range_blocks(plan, a, b)
    assert nc >= 1
    args = (np.float32(0.3), a, b, *plan._args(), nc)
    o1, o2 = np.empty(b - a, np.float32), np.empty(b - a, np.float32)
    with ffn._launch(ffn._SERIAL_BELOW):  # the parallel kernel, on every thread
        ffn.range_forward_kernel(u, o1, t0, True, *args)
        z1, d1 = ffn.range_adjoint_kernel(g, u, True, *args)
    ffn._range_forward_serial(u, o2, t0, True, *args)
    z2, d2 = ffn._range_adjoint_serial(g, u, True, *args)
    assert np.array_equal(o1, o2) and np.array_equal(z1, z2) and d1 == d2


# ---- dense and sparse --------------------------------------------------------------------------
@pytest.mark.parametrize("kind,opts", [
    ("dense", {}),
    ("dense", {"cache_max_entries": 0}),  # rows generated per call
    ("sparse", {}),
])
@pytest.mark.parametrize("d,D", [(37, 3001), (1, 5), (200, 20_000)])
def test_dense_and_sparse_ranges(kind, opts, d, D, monkeypatch):
    if opts.get("cache_max_entries") == 0:
        if D > 5000:
            pytest.skip("regenerating the rows per call is slow; the small shapes cover it")
        monkeypatch.setattr(dense_mod, "_CHUNK_ENTRIES", 7 * d)  # several row chunks
    p = make_projection(kind, d, D, seed=4, **opts)
    x, y, theta0 = _randn(d, 16), _randn(D, 17), _randn(D, 18)
    u = p.prepare(x)
    assert torch.equal(u, x) and u.data_ptr() != x.data_ptr()
    px = p._forward(x)
    exact_adjoint = _exact_adjoint(p)
    for a, b in _ranges(8, D):
        got = p.range_apply(u, a, b)
        if kind == "sparse":
            # bit-identical to today's forward (the same float32 products, same per-row order)
            assert torch.equal(got, px[a:b]), (a, b)
        else:
            # MKL's gemv sums a row in an order that depends on where the row sits in the
            # matrix it is given (and its alignment): float32 round-off, not bit for bit
            err = (got.double() - px[a:b].double()).norm().item()
            floor = px[a:b].double().norm().item() ** 2 + (b - a) * _rms(px) ** 2
            assert err <= 1e-6 * floor**0.5, (a, b)
        want = theta0[a:b] + 0.5 * got
        assert torch.equal(p.range_apply(u, a, b, theta0[a:b], 0.5), want)
        t0 = theta0[a:b].clone()
        assert p.range_apply(u, a, b, t0, 0.5, out=t0) is t0 and torch.equal(t0, want)
        g = y[a:b].contiguous()
        gu, dot = p.range_adjoint(g, a, b, -2.0, u)
        assert gu.shape == (d,) and gu.dtype == torch.float32
        assert _rel(p.prepare_adjoint(gu), exact_adjoint(_padded(-2.0 * g, a, D))) < 1e-6
        assert _dot_close(dot, g, got, 0.0, tol=1e-12)  # the dot of exactly these values
        assert p.range_adjoint(g, a, b)[1] is None
    # a partition sums to the whole adjoint
    off = _partition(D, 1)
    total = sum(p.range_adjoint(y[a:b].contiguous(), a, b)[0].double()
                for a, b in zip(off[:-1], off[1:]))
    assert _rel(p.prepare_adjoint(total), exact_adjoint(y)) < 1e-6
    assert _rel(p.prepare_adjoint(total), p.adjoint(y)) < 5e-6  # today's float32 sums


def _exact_adjoint(p):
    """``Pᵀ y`` in float64. Sparse: today's ``adjoint`` (sums of √D terms, exact enough);
    dense: the float64 product, since today's float32 ``adjoint`` sums D terms and is itself
    ~2e-6 off at D = 20 000."""
    if p.kind == "sparse":
        return p.adjoint
    M = (p.matrix if p.matrix is not None else p._rows(0, p.D)).double()
    return lambda y: M.T @ y.double()


def test_sparse_row_view_is_built_once_and_counted():
    p = make_projection("sparse", 50, 4000, seed=2)
    before = p.state_bytes()
    u = p.prepare(_randn(50, 19))
    p.range_apply(u, 10, 20)
    rows = p.csr_rows
    assert torch.all(rows[1:] >= rows[:-1])
    p.range_adjoint(_randn(30, 20), 100, 130)
    assert p.csr_rows is rows  # kept
    assert p.state_bytes() == before + 8 * 50 * p.k


# ---- bad arguments -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind,opts", [("fastfood", {"backend": "numba"}),
                                       ("fastfood", {"backend": "torch"}),
                                       ("dense", {}), ("sparse", {})])
def test_bad_arguments(kind, opts):
    p = make_projection(kind, 10, 100, seed=0, **opts)
    u = p.prepare(torch.ones(10))
    g = torch.ones(5)
    for start, stop, match in [(-1, 5, "start=-1"), (100, 101, "start=100"), (5, 5, "stop=5"),
                               (6, 5, "stop=5"), (0, 101, "stop=101"),
                               (1.0, 5, "start must be an int"), (0, True, "stop must be an int")]:
        with pytest.raises(ValueError, match=match):
            p.range_apply(u, start, stop)
        with pytest.raises(ValueError, match=match):
            p.range_adjoint(g, start, stop)
    assert p.range_apply(u, np.int64(0), np.int64(5)).shape == (5,)
    with pytest.raises(ValueError, match=rf"u must have shape \({p.u_size},\)"):
        p.range_apply(torch.ones(p.u_size + 1), 0, 5)
    with pytest.raises(ValueError, match="u must be float32"):
        p.range_apply(u.double(), 0, 5)
    with pytest.raises(ValueError, match="u must be a tensor"):
        p.range_apply(u.numpy(), 0, 5)
    with pytest.raises(ValueError, match=r"theta0 must have shape \(5,\)"):
        p.range_apply(u, 0, 5, torch.zeros(6))
    with pytest.raises(ValueError, match="theta0 must be float32"):
        p.range_apply(u, 0, 5, torch.zeros(5, dtype=torch.float16))
    with pytest.raises(ValueError, match="theta0 must be contiguous"):
        p.range_apply(u, 0, 5, torch.zeros(10)[::2])
    with pytest.raises(ValueError, match=r"out must have shape \(5,\)"):
        p.range_apply(u, 0, 5, out=torch.zeros(5, 1))
    with pytest.raises(ValueError, match="scale must be a real number"):
        p.range_apply(u, 0, 5, scale="2")
    with pytest.raises(ValueError, match=r"g must have shape \(5,\)"):
        p.range_adjoint(torch.ones(6), 0, 5)
    with pytest.raises(ValueError, match="g must be float32"):
        p.range_adjoint(torch.ones(5, dtype=torch.float64), 0, 5)
    with pytest.raises(ValueError, match=r"u must have shape"):
        p.range_adjoint(g, 0, 5, 1.0, torch.ones(p.u_size + 2))
    with pytest.raises(ValueError, match=r"x must have shape \(10,\)"):
        p.prepare(torch.ones(11))
    with pytest.raises(ValueError, match="x must be a floating-point tensor"):
        p.prepare(torch.ones(10, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"gu must have shape"):
        p.prepare_adjoint(torch.ones(p.u_size + 1))
    # a one-element tensor scale is accepted (as a float)
    assert torch.equal(p.range_apply(u, 0, 5, scale=torch.tensor(2.0)),
                       p.range_apply(u, 0, 5, scale=2.0))


def test_no_autograd_and_no_state_change():
    p = FastfoodProjection(30, 1000, 1, backend="numba")
    x = _randn(30, 21).requires_grad_(True)
    u = p.prepare(x)
    assert not u.requires_grad
    y = p.range_apply(u, 3, 900)
    gu, _ = p.range_adjoint(_randn(897, 22), 3, 900, 1.0, u)
    assert not y.requires_grad and not gu.requires_grad
    assert not p.prepare_adjoint(gu).requires_grad
