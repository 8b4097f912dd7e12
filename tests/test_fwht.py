import pytest
import scipy.linalg
import torch

from idcompress.projection import fwht, hadamard


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fwht_equals_hadamard_matrix(dtype):
    g = torch.Generator().manual_seed(0)
    for k in range(13):  # n = 1 .. 4096
        n = 1 << k
        x = torch.randn(3, 2, n, generator=g, dtype=torch.float64).to(dtype)
        h = torch.tensor(scipy.linalg.hadamard(n), dtype=torch.float64)
        expected = (x.double() @ h.T).to(dtype)
        tol = 1e-5 if dtype == torch.float32 else 1e-12
        torch.testing.assert_close(fwht(x), expected, rtol=tol, atol=tol * n**0.5)


def test_fwht_involution_and_hadamard_helper():
    x = torch.randn(5, 256, dtype=torch.float64)
    torch.testing.assert_close(fwht(fwht(x)), 256 * x)
    torch.testing.assert_close(hadamard(8, torch.float64), torch.tensor(scipy.linalg.hadamard(8), dtype=torch.float64))


def test_fwht_rejects_non_power_of_two():
    with pytest.raises(ValueError, match="power-of-two"):
        fwht(torch.zeros(3, 12))


def test_fwht_uses_no_high_rank_tensor(monkeypatch):
    seen = []
    real = torch.Tensor.reshape

    def spy(self, *shape):
        out = real(self, *shape)
        seen.append(out.dim())
        return out

    monkeypatch.setattr(torch.Tensor, "reshape", spy)
    fwht(torch.randn(4, 1 << 16))
    assert max(seen) <= 4


def test_fwht_matches_legacy_and_splits_evenly():
    from idcompress.projection.fwht import _factor_bits, fwht_legacy

    assert _factor_bits(10, 5) == [5, 5] and _factor_bits(14, 5) == [5, 5, 4]
    assert _factor_bits(7, 5) == [4, 3] and _factor_bits(17, 5) == [5, 4, 4, 4]
    g = torch.Generator().manual_seed(1)
    for k in range(18):  # n = 1 .. 131072
        n = 1 << k
        x = torch.randn(max(1, 2**17 // n), n, generator=g)
        want = fwht_legacy(x.double())
        torch.testing.assert_close(fwht(x).double(), want, rtol=1e-5, atol=1e-5 * n**0.5)
        torch.testing.assert_close(fwht(x), fwht_legacy(x), rtol=1e-5, atol=1e-5 * n**0.5)
    # a non-contiguous input (a transposed view) gives the same transform
    x = torch.randn(64, 6, generator=g).t()
    torch.testing.assert_close(fwht(x), fwht(x.contiguous()))
