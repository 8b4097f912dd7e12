"""Input checks shared by the geometry estimators: any (N, h) array → finite float64 numpy."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def as_points(X: Any, owner: str, min_points: int = 1) -> np.ndarray:
    """``X`` (torch tensor, numpy array or nested sequence) of shape (N, h) → float64 ``ndarray``.

    Raises ``ValueError`` naming ``owner`` when X is complex, not 2-D, holds NaN/inf, has no
    feature column, or has fewer than ``min_points`` rows.
    """
    # complex X is refused before the float64 cast, which would drop the imaginary parts
    complex_data = ValueError(f"{owner}: Complex data not supported, X must be real")
    not_numeric = ValueError(f"{owner}: X must be a numeric (N, h) array, got {type(X).__name__}")
    if isinstance(X, torch.Tensor):
        if X.is_complex():
            raise complex_data
        arr = X.detach().to("cpu", torch.float64).numpy()
    else:
        try:
            arr = np.asarray(X)
        except (TypeError, ValueError) as e:
            raise not_numeric from e
        if np.iscomplexobj(arr):
            raise complex_data
        try:
            arr = arr.astype(np.float64, copy=False)
        except (TypeError, ValueError) as e:
            raise not_numeric from e
    if arr.ndim != 2:
        raise ValueError(f"{owner}: X must be 2-D of shape (N, h), got shape {tuple(arr.shape)}")
    if arr.shape[1] < 1:
        raise ValueError(f"{owner}: X has no feature column (shape {tuple(arr.shape)})")
    if not np.isfinite(arr).all():
        n_bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise ValueError(f"{owner}: X holds NaN or inf values in {n_bad} of {arr.shape[0]} rows")
    require_points(arr.shape[0], min_points, owner)
    return arr


def require_points(n: int, needed: int, owner: str, what: str = "points") -> None:
    """``ValueError`` unless ``n >= needed``: says how many ``what`` are needed and were given."""
    if n < needed:
        raise ValueError(f"{owner} needs at least {needed} {what}, got {n}")


def unique_rows(X: np.ndarray) -> np.ndarray:
    """``X`` without exact duplicate rows (first occurrence kept, original order)."""
    # Fast path: identical rows have identical keys, so distinct keys prove there is no
    # duplicate; only on a key collision pay for the lexicographic sort of whole rows.
    keys = (X * np.linspace(1.0, 2.0, X.shape[1])).sum(axis=1)
    if np.unique(keys).size == len(keys):
        return X
    _, first = np.unique(X, axis=0, return_index=True)
    if len(first) == len(X):
        return X
    return X[np.sort(first)]
