"""The Triton Fastfood kernels on the CPU, under ``TRITON_INTERPRET=1`` (set here, before triton is
imported): the generator bit for bit against ``rng`` and the numba kernels, and the range
operations against the numba and torch references. Skipped when triton is not installed
(``pip install -e ".[gpu]"``)."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from helpers import randn as _randn  # noqa: E402
from helpers import rel_error as _rel  # noqa: E402

triton = pytest.importorskip("triton", reason="triton not installed (pip install -e '.[gpu]')")
numba = pytest.importorskip("numba")

from idcompress.projection import fastfood_triton as ft  # noqa: E402
from idcompress.projection import rng  # noqa: E402
from idcompress.projection.fastfood import FastfoodProjection  # noqa: E402

if not ft.interpreting():  # pragma: no cover - triton imported earlier without the interpreter
    pytest.skip("TRITON_INTERPRET was not set before triton was imported", allow_module_level=True)

# (d, D): n = 128 with a partial last block, n = 8, K·n = D + 7; slow (the interpreter runs
# programs one after another, ~1 ms each): K = 1, n = 1 with K = 37, n = 512 with K = 10
_slow = pytest.mark.slow
SHAPES = [(100, 1000), (5, 40), (1024, 3 * 1024 + 7), pytest.param(7, 7, marks=_slow),
          pytest.param(1, 37, marks=_slow), pytest.param(300, 5000, marks=_slow)]


def _ranges(n: int, D: int) -> list[tuple[int, int]]:
    """Whole D, ranges that start and end mid-block, one element, the last (partial) block,
    block-aligned, inside one block."""
    cand = [
        (0, D), (D // 2, D // 2 + 1),
        (min(D - 1, n // 2 + 1), min(D, 2 * n + n // 3 + 1)),
        ((D - 1) // n * n, D),
        (min(n, D - 1), min(D, 2 * n)),
        (min(D - 1, n + 1), min(D, n + max(2, n // 2))),
        (3 % D, D - 2 if D > 4 else D),
    ]
    return sorted({(a, b) for a, b in cand if 0 <= a < b <= D})


def _pair(d, D, seed=0):
    ref = FastfoodProjection(d, D, seed=seed, backend="numba")
    tri = FastfoodProjection(d, D, seed=seed, backend="triton")
    assert tri.active_backend() == "triton" and ref.active_backend() == "numba"
    return ref, tri


def test_bits_bit_identical_to_rng():
    for seed, stream in [(0, "fastfood/G"), (7, "fastfood/perm"), (123, "init/x")]:
        key = rng.stream_key(seed, stream)
        idx = torch.cat([torch.arange(0, 3000), torch.tensor([2**31 - 1, 2**31, 2**32 - 1, 2**32,
                                                              2**32 + 5, 2**40 + 7, 2**62 + 3])])
        assert torch.equal(ft.bits(key, idx), rng.bits(key, idx))


@pytest.mark.parametrize("d, D", SHAPES + [(9000, 20_000), pytest.param(20_000, 70_000, marks=_slow)])
def test_block_tables_bit_identical_to_numba_and_torch(d, D):
    ref, tri = _pair(d, D, seed=3)
    tor = FastfoodProjection(d, D, seed=3, backend="torch")
    ks = sorted({0, ref.K // 2, ref.K - 1})
    for k in ks:
        perm, g, sc = ft.block_tables(tri._tplan, k, k + 1, "cpu")
        g_n, p_n, s_n = ref._plan.block_tables(k)
        assert torch.equal(perm[0].long(), torch.from_numpy(p_n.astype("int64")))
        assert torch.equal(g[0], torch.from_numpy(g_n))
        assert sc[0].item() == s_n
        p_t, gs_t = tor._tables(k, k + 1, "cpu")
        assert torch.equal(perm.long(), p_t)
        g_t = rng.to_normal(rng.bits(tor._g_key, k * tor.n + torch.arange(tor.n)))
        assert torch.equal(g[0], g_t)  # the unscaled normals, bit for bit
        assert _rel(g * sc[:, None], gs_t) < 1e-6  # the scale: float64 here, float32 there


@pytest.mark.parametrize("d, D", SHAPES)
def test_range_apply_and_adjoint_match_numba_and_torch(d, D):
    ref, tri = _pair(d, D, seed=1)
    tor = FastfoodProjection(d, D, seed=1, backend="torch")
    x = _randn(d, 0)
    u = ref.prepare(x)
    assert torch.equal(tri.prepare(x), u)
    px = ref.apply(x)
    rms = px.double().norm().item() / D**0.5
    for i, (a, b) in enumerate(_ranges(ref.n, D)):
        t0, g = _randn(b - a, 10 + i), _randn(b - a, 50 + i)
        for scale in ((1.0, -0.37)[i % 2],):
            want = ref.range_apply(u, a, b, t0, scale)
            got = tri.range_apply(u, a, b, t0, scale)
            assert _rel(got, want) < 1e-5
            assert _rel(got - t0, want - t0) < 1e-5, (a, b)  # the projection part alone
            assert _rel(tri.range_apply(u, a, b, None, scale), tor.range_apply(u, a, b, None, scale)) < 1e-5
            out = t0.clone()
            assert tri.range_apply(u, a, b, out, scale, out=out) is out
            assert _rel(out, want) < 1e-5
            gu_n, dot_n = ref.range_adjoint(g, a, b, scale, u)
            gu_t, dot_t = tor.range_adjoint(g, a, b, scale, u)
            gu, dot = tri.range_adjoint(g, a, b, scale, u)
            assert gu.dtype == torch.float32 and gu.shape == (ref.n,)
            assert _rel(gu, gu_n) < 1e-5 and _rel(gu, gu_t) < 1e-5
            want_dot = (g.double() * px[a:b].double()).sum().item()
            tol = 1e-5 * g.double().norm().item() * (px[a:b].double().norm().item() ** 2 + (b - a) * rms**2) ** 0.5
            assert abs(dot - dot_n) <= tol and abs(dot - want_dot) <= tol
            gu0, none = tri.range_adjoint(g, a, b, scale)
            assert none is None and torch.equal(gu0, gu)
        assert _rel(tri.prepare_adjoint(gu), ref.prepare_adjoint(gu_n)) < 1e-5


@pytest.mark.parametrize("d, D", [(100, 1000), pytest.param(1, 37, marks=_slow),
                                  pytest.param(300, 5000, marks=_slow)])
def test_whole_d_operations_and_gradient_match_numba(d, D):
    ref, tri = _pair(d, D, seed=2)
    x = _randn(d, 1).requires_grad_()
    y = _randn(D, 2)
    px = tri.apply(x)
    assert _rel(px, ref.apply(x.detach())) < 1e-5
    (px * y).sum().backward()
    assert _rel(x.grad, ref.adjoint(y)) < 1e-5
    assert _rel(tri.adjoint(y), ref.adjoint(y)) < 1e-5
    t0 = _randn(D, 3)
    off, lam = [0, D // 3, D], [0.5, -2.0]
    assert _rel(tri.apply_add(x.detach(), t0, off, lam), ref.apply_add(x.detach(), t0, off, lam)) < 1e-5
    g_t, dots_t = tri.adjoint_said(y, x.detach(), off, lam)
    g_n, dots_n = ref.adjoint_said(y, x.detach(), off, lam)
    assert _rel(g_t, g_n) < 1e-5 and _rel(dots_t, dots_n) < 1e-5
    assert tri.state_bytes() == ref.state_bytes()  # B only: no tables


def test_any_theta0_dtype_math_in_float32():
    d, D = 50, 300
    ref, tri = _pair(d, D)
    u = ref.prepare(_randn(d, 0))
    a, b = 70, 250
    t0 = _randn(b - a, 1)
    want = ref.range_apply(u, a, b, t0, 0.5)
    for dtype in (torch.bfloat16, torch.float16, torch.float64):
        out = torch.empty(b - a, dtype=dtype)
        ft.range_forward(tri._tplan, u, a, b, t0.to(dtype), 0.5, out)
        exact = t0.to(dtype).float() + (want - t0)  # θ₀ as stored, plus the float32 projection
        tol = {torch.bfloat16: 1e-2, torch.float16: 2e-3, torch.float64: 1e-6}[dtype]
        assert _rel(out, exact.to(dtype)) < tol, dtype


def test_backend_selection():
    P = FastfoodProjection(10, 100)
    assert P.active_backend() == "numba"  # auto on the CPU: numba, even under the interpreter
    assert FastfoodProjection(10, 100, backend="torch").active_backend() == "torch"
    T = FastfoodProjection(10, 100, backend="triton")
    assert T.active_backend() == "triton" and T.perm is None


@pytest.mark.parametrize("kind", ["said", pytest.param("fastfood", marks=_slow)])
def test_gradients_through_a_wrapped_tiny_model_match_numba(kind, monkeypatch):
    """A tiny BERT wrapped with the Triton backend: the same loss and gradients (θ_d, SAID's λ)
    as with the numba reference."""
    import copy

    from transformers import BertConfig, BertForSequenceClassification

    from idcompress import IntrinsicConfig, get_intrinsic_model
    from idcompress.tuners import model as tuner_model

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=16, num_labels=2)
    base = BertForSequenceClassification(cfg)
    ids = torch.randint(0, 60, (3, 8), generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 1])
    real = tuner_model.make_projection
    out = {}
    for backend in ("numba", "triton"):
        def make(kind_, d, D, seed=0, backend=backend, **kw):
            if kind_ == "fastfood":
                kw["backend"] = backend
            return real(kind_, d, D, seed, **kw)

        monkeypatch.setattr(tuner_model, "make_projection", make)
        m = get_intrinsic_model(copy.deepcopy(base), IntrinsicConfig(d=100, projection=kind))
        m.eval()
        proj = next(mod.projection for mod in m.modules() if hasattr(type(mod), "projection"))
        assert proj.active_backend() == backend
        with torch.no_grad():
            m.theta_d.copy_(torch.linspace(-0.05, 0.05, m.theta_d.numel()))
        loss = m(input_ids=ids, labels=labels).loss
        loss.backward()
        lam = getattr(m, "said_lambda", None)
        out[backend] = (loss.item(), m.theta_d.grad.clone(),
                        None if lam is None else lam.grad.clone())
    (ln, gn, lgn), (lt, gt, lgt) = out["numba"], out["triton"]
    assert abs(ln - lt) <= 1e-6 * abs(ln)
    assert _rel(gt, gn) < 1e-5
    if kind == "said":
        assert _rel(lgt, lgn) < 1e-5


_AOT = r"""
import sys, re
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from idcompress.projection import fastfood_triton as ft
assert not ft.interpreting()
tgt = GPUTarget("cuda", 90, 32)
keys = {"gk0": "i64", "gk1": "i64", "pk0": "i64", "pk1": "i64", "n_blocks": "i64"}
rng_ = {"start": "i64", "stop": "i64", "kb0": "i64", "scale": "fp32", **keys,
        "N": "constexpr", "NBITS": "constexpr"}
for n in map(int, sys.argv[1:]):
    nb, opts = n.bit_length() - 1, {"num_warps": ft._num_warps(n), "enable_fp_fusion": False}
    for fn, sig, const in [
        (ft._range_forward_kernel, {"u_ptr": "*fp32", "theta0_ptr": "*bf16", "out_ptr": "*fp32",
                                    **rng_, "ADD": "constexpr"}, {"ADD": True}),
        (ft._range_adjoint_kernel, {"g_ptr": "*fp32", "u_ptr": "*fp32", "gu_ptr": "*fp64",
                                    "dot_ptr": "*fp64", **rng_, "DOT": "constexpr"}, {"DOT": True}),
    ]:
        k = triton.compile(ASTSource(fn=fn, signature=sig, constexprs={"N": n, "NBITS": nb, **const}),
                           target=tgt, options=opts)
        ptx = k.asm["ptx"]
        assert "fma.rn.f32" not in ptx and "sqrt.approx" not in ptx, (fn, n)
        assert "sqrt.rn.f64" in ptx and "div.rn.f64" in ptx, (fn, n)
        if fn is ft._range_adjoint_kernel:
            assert re.search(r"atom\.global[\w.]*\.add\.f64", ptx), n
        print("compiled", fn.__name__, n, "cubin" in k.asm)
"""


@pytest.mark.parametrize("ns", [[1024], pytest.param([1, 8, 32768], marks=_slow)])
def test_kernels_compile_for_sm90_without_a_gpu(ns):
    """What the interpreter does not check: the kernels go through Triton's GPU compiler (sm_90
    PTX and cubin, ptxas ships with the wheel) with exact float64 sqrt/division, no float32 FMA
    and float64 atomics."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    run = subprocess.run([sys.executable, "-c", _AOT, *map(str, ns)], env=env, cwd=root,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("compiled") == 2 * len(ns)


def test_triton_backend_builds_no_tables_before_moving():
    """backend="triton" on the CPU without the interpreter would fall back to the torch path;
    it builds no tables there (they would be dropped on the move to CUDA anyway)."""
    P = FastfoodProjection(10, 100, backend="triton")
    assert P.perm is None and P.gscale is None and P.state_bytes() == P.B.numel() * 4
