"""Linear centred kernel alignment (Kornblith et al. 2019) between two representations."""

from __future__ import annotations

from typing import Any

import torch

from ._checks import as_points


def linear_cka(X: Any, Y: Any) -> float:
    """Linear CKA of ``X`` (N, h₁) and ``Y`` (N, h₂), rows = the same N inputs; in [0, 1].

    ``‖YcᵀXc‖²_F / (‖XcᵀXc‖_F ‖YcᵀYc‖_F)`` on column-centred float64 data, evaluated through the
    feature-space or the N × N Gram form, whichever is cheaper (they are equal). Invariant to
    orthogonal transforms and isotropic scaling of either side.
    """
    X = as_points(X, "linear_cka (X)", min_points=2)
    Y = as_points(Y, "linear_cka (Y)", min_points=2)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(
            f"linear_cka: X and Y must hold the same inputs (rows), got N={X.shape[0]} and "
            f"N={Y.shape[0]}"
        )
    x = torch.from_numpy(X - X.mean(axis=0))
    y = torch.from_numpy(Y - Y.mean(axis=0))
    n, hx, hy = X.shape[0], X.shape[1], Y.shape[1]
    if hx * hy + hx * hx + hy * hy <= n * (hx + hy):
        cross = torch.sum((x.T @ y) ** 2)
        xx = torch.linalg.matrix_norm(x.T @ x)
        yy = torch.linalg.matrix_norm(y.T @ y)
    else:
        K, L = x @ x.T, y @ y.T
        cross, xx, yy = torch.sum(K * L), torch.linalg.matrix_norm(K), torch.linalg.matrix_norm(L)
    for name, norm in (("X", xx), ("Y", yy)):
        if norm == 0:
            raise ValueError(
                f"linear_cka: {name} is constant across the N inputs; CKA is undefined"
            )
    return float(cross / (xx * yy))
