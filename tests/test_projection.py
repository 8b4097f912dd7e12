"""Projections: linearity, adjoint, near-isometry, gradients, state, bad input."""

import pytest
import torch

from idcompress.projection import make_projection

KINDS = ["dense", "sparse", "fastfood"]


@pytest.mark.parametrize("kind", KINDS)
def test_linear_and_adjoint_identity(kind):
    g = torch.Generator().manual_seed(1)
    p = make_projection(kind, 37, 3001, seed=5)
    x1, x2 = torch.randn(37, generator=g), torch.randn(37, generator=g)
    torch.testing.assert_close(p.apply(2.0 * x1 - 3.0 * x2), 2.0 * p.apply(x1) - 3.0 * p.apply(x2), rtol=1e-5, atol=1e-5)
    for _ in range(3):
        x, y = torch.randn(37, generator=g, dtype=torch.float64), torch.randn(3001, generator=g, dtype=torch.float64)
        lhs = torch.dot(p.apply(x.float()).double(), y)
        rhs = torch.dot(x, p.adjoint(y.float()).double())
        assert abs(lhs - rhs) <= 1e-5 * max(1.0, abs(lhs.item())) * 10


@pytest.mark.parametrize("kind,d", [("dense", 200), ("sparse", 1000), ("fastfood", 1000)])
def test_near_isometry_on_1e5(kind, d):
    D = 100_000
    opts = {"cache_max_entries": 2**25} if kind == "dense" else {}
    p = make_projection(kind, d, D, seed=0, **opts)
    cols = torch.stack([p.apply(torch.nn.functional.one_hot(torch.tensor(j), d).float()) for j in range(0, d, max(1, d // 60))], 1)
    norms = cols.norm(dim=0)
    assert abs(norms.mean().item() - 1) < 0.05
    gram = (cols / norms).T @ (cols / norms)
    off = gram - torch.diag(torch.diag(gram))
    assert off.abs().max().item() < 0.05  # nearly orthogonal
    g = torch.Generator().manual_seed(2)
    for _ in range(5):
        x = torch.randn(d, generator=g)
        assert abs(p.apply(x).norm().item() / x.norm().item() - 1) < 0.10


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_matches_materialised_matrix(kind):
    p = make_projection(kind, 13, 700, seed=3)
    M = p.materialize()
    assert M.shape == (700, 13)
    target = torch.linspace(-1, 1, 700)
    x = torch.linspace(0.5, -0.5, 13, requires_grad=True)
    ((p.apply(x) - target) ** 3).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    ((M @ x2 - target) ** 3).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-6)


def test_fastfood_state_and_shape():
    p = make_projection("fastfood", 1000, 100_000, seed=0)
    assert (p.n, p.K) == (1024, 98)
    assert p.apply(torch.ones(1000)).shape == (100_000,)
    assert p.state_bytes() > 0


def test_different_seeds_differ_same_seed_equal():
    for kind in KINDS:
        a = make_projection(kind, 10, 500, seed=0).apply(torch.ones(10))
        b = make_projection(kind, 10, 500, seed=0).apply(torch.ones(10))
        c = make_projection(kind, 10, 500, seed=1).apply(torch.ones(10))
        assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(
    "kind,d,D,match",
    [
        ("fastfood", 0, 10, "d must be a positive integer, got d=0"),
        ("fastfood", -3, 10, "d=-3"),
        ("sparse", 11, 10, "d=11 is larger than D=10"),
        ("hadamard", 2, 10, "projection='hadamard' is unknown"),
        ("dense", 100_000, 22_000_000, "use projection='fastfood'"),
    ],
)
def test_bad_input(kind, d, D, match):
    with pytest.raises(ValueError, match=match):
        make_projection(kind, d, D, seed=0)


def test_dense_refusal_happens_before_allocation(monkeypatch):
    import idcompress.projection.rng as rng

    def boom(*a, **k):
        raise AssertionError("generated numbers for a refused projection")

    monkeypatch.setattr(rng, "_generate", boom)
    with pytest.raises(ValueError, match="above the limit"):
        make_projection("dense", 10_000, 10**6, seed=0)


@pytest.mark.parametrize("kind", KINDS)
def test_projection_stays_float32_under_autocast(kind):
    p = make_projection(kind, 40, 3000, seed=0)
    x = torch.linspace(-1, 1, 40)
    ref = p.apply(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = p.apply(x)
        back = p.adjoint(ref)
    assert y.dtype == torch.float32 and back.dtype == torch.float32
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(back, p.adjoint(ref))


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_fastfood_blocks_with_zero_gaussians_are_zero_not_nan(backend):
    pytest.importorskip("numba") if backend == "numba" else None
    for d, D in ((1, 10_000), (2, 200_000)):
        p = make_projection("fastfood", d, D, seed=0, backend=backend)
        y = p.apply(torch.ones(d))
        assert torch.isfinite(y).all()
        assert torch.isfinite(p.adjoint(torch.ones(D))).all()
