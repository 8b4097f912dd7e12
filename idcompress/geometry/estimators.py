"""Estimators of representation geometry for points ``X`` of shape (N, h), scikit-learn estimators.

They follow scikit-learn's estimator contract: ``__init__`` stores the hyper-parameters unchanged
(``get_params``/``set_params``/``clone`` come from ``BaseEstimator``); ``fit(X)`` validates them and
X, returns ``self`` and stores results in trailing-underscore attributes (``n_features_in_``, and
``feature_names_in_`` for a data frame, as scikit-learn sets them). X may be a torch tensor, a
numpy array or a data frame; everything is computed in float64 (eigen- and singular-value solves
included). Choices made here (also in docs/design.md):

- **RankMe** (Garrido et al. 2023): ``exp(H(p))`` with ``p_k = s_k / Σ s + ε``, ``ε = 1e-7``, over
  the singular values of the column-centred X. ``form="sigma"`` (default, reported as ``rankme``)
  uses ``s = σ``; ``form="eig"`` uses ``s = σ²`` (covariance eigenvalues, reported as
  ``rankme_eig``). Both lie in [1, min(N, h)].
- **α-ReQ** (Agrawal et al. 2022): weighted least squares of ``log λ_i = −α log i + c`` over the
  covariance eigenvalues ``λ_1 ≥ λ_2 ≥ …`` (ranks are 1-based) for ranks ``i`` in ``fit_range``,
  inclusive, default 10..100, clipped to the ranks whose eigenvalue is non-zero (numerical rank);
  weights ``1/i`` by default.
- **Participation ratio**: ``(Σλ)² / Σλ²`` over the covariance eigenvalues.
- **TwoNN** (Facco et al. 2017): exact duplicate points are dropped first; ``μ = r₂/r₁`` per
  point; the largest ``discard_fraction`` (10%) of the sorted ratios are discarded; the dimension
  is the slope of the line through the origin fitted to ``(log μ_(i), −log(1 − i/N))``, with N
  the number of distinct points (the same convention as scikit-dimension's ``TwoNN``).
- **MLE** (Levina & Bickel 2004) with the MacKay–Ghahramani (2005) averaging: per point
  ``m̂(x) = (k−1) / Σ_{j<k} log(T_k/T_j)``; the global estimate is the inverse of the mean of
  ``1/m̂``. Duplicate points are dropped first (a zero distance makes ``log(T_k/T_1)`` infinite).
  ``unbiased=True`` uses ``k−2`` in the numerator.

The covariance eigenvalues come from ``covariance_eigenvalues`` (a float64 eigensolve of the
smaller Gram matrix). Each estimator's math is also a function of precomputed inputs
(``*_from_eigenvalues``, ``twonn_dimension``/``mle_dimension`` of neighbour distances), so a
report computes one eigensolve and one neighbour search per representation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import validate_data

from ._checks import as_points, require_points, unique_rows
from ._threads import torch_threads
from .neighbors import knn_distances

RANKME_EPS = 1e-7


def covariance_eigenvalues(X: np.ndarray) -> np.ndarray:
    """Eigenvalues λ (descending, length min(N, h)) of the covariance of float64 ``X`` (N, h).

    ``λ = σ²/(N−1)`` for the singular values σ of the column-centred X, computed by a float64
    eigensolve of the smaller Gram matrix (XcᵀXc or XcXcᵀ): one matrix product and a small
    symmetric eigensolve, much faster than an SVD of X on few cores. Values below
    ``max(N, h)·eps·λ_max`` are rounding noise of the Gram matrix and are set to 0, so σ is
    resolved down to about 1e-7·σ_max (smaller σ weigh less than RankMe's ε anyway).
    """
    n, h = X.shape
    xc = torch.from_numpy(X - X.mean(axis=0))
    gram = xc.T @ xc if h <= n else xc @ xc.T
    with torch_threads(1):
        lam = torch.linalg.eigvalsh(gram).numpy()[::-1] / max(n - 1, 1)
    if lam[0] <= 0:
        return np.zeros_like(lam)
    return np.where(lam > lam[0] * max(n, h) * np.finfo(np.float64).eps, lam, 0.0)


def _fit_points(est: BaseEstimator, X: Any, owner: str, min_points: int = 1) -> np.ndarray:
    """``X`` as float64 points (``as_points``, whose errors name ``owner``); then records
    ``n_features_in_`` (and ``feature_names_in_`` for a data frame) on ``est``."""
    points = as_points(X, owner, min_points)
    validate_data(est, X, skip_check_array=True)  # X itself was checked above
    return points


class RankMe(BaseEstimator):
    """Effective rank ``exp(entropy)`` of the normalised singular-value spectrum.

    Parameters: ``form`` ∈ {"sigma", "eig"} (σ or σ², see module doc); ``eps`` added to each p_k.
    Attributes after ``fit``: ``rank_`` (float), ``n_features_in_``.
    """

    def __init__(self, form: str = "sigma", eps: float = RANKME_EPS) -> None:
        self.form = form
        self.eps = eps

    def fit(self, X: Any, y: Any = None) -> RankMe:
        """Fits ``X`` (N, h); ``y`` is ignored."""
        check_rankme_params(self.form, self.eps)
        X = _fit_points(self, X, "RankMe", min_points=2)
        self.rank_ = rankme_from_eigenvalues(covariance_eigenvalues(X), self.form, self.eps)
        return self


def rankme_from_eigenvalues(lam: np.ndarray, form: str = "sigma", eps: float = RANKME_EPS) -> float:
    """RankMe from covariance eigenvalues ``lam`` (σ ∝ √λ); see ``RankMe``."""
    check_rankme_params(form, eps)
    s = np.sqrt(lam) if form == "sigma" else np.asarray(lam)
    total = s.sum()
    if total == 0:
        raise ValueError("RankMe: X is constant (all singular values of the centred X are 0)")
    p = s / total + eps
    p = p[p > 0]  # 0·log 0 = 0 (only reachable with eps = 0)
    return float(np.exp(-np.sum(p * np.log(p))))


def check_rankme_params(form: str, eps: float) -> None:
    """``ValueError`` unless ``form`` and ``eps`` are valid ``RankMe`` hyper-parameters."""
    if form not in ("sigma", "eig"):
        raise ValueError(f"RankMe: form must be 'sigma' or 'eig', got form={form!r}")
    if not eps >= 0:
        raise ValueError(f"RankMe: eps must be >= 0, got eps={eps!r}")


class AlphaReQ(BaseEstimator):
    """Power-law decay ``α`` of the covariance spectrum: ``log λ_i ≈ −α log i + c``.

    Parameters: ``fit_range`` = (first, last) 1-based ranks, inclusive; ``weighting`` ∈
    {"inverse_rank" (weights 1/i), "uniform"}.
    Attributes after ``fit``: ``alpha_``, ``intercept_`` (c, natural log), ``fit_range_`` (the
    ranks actually used after clipping), ``n_features_in_``.
    """

    def __init__(
        self, fit_range: tuple[int, int] = (10, 100), weighting: str = "inverse_rank"
    ) -> None:
        self.fit_range = fit_range
        self.weighting = weighting

    def fit(self, X: Any, y: Any = None) -> AlphaReQ:
        """Fits ``X`` (N, h); ``y`` is ignored."""
        fit_range = check_alpha_req_params(self.fit_range, self.weighting)
        X = _fit_points(self, X, f"AlphaReQ with fit_range={fit_range}")
        require_alpha_shape(X.shape, fit_range)
        lam = covariance_eigenvalues(X)
        self.alpha_, self.intercept_, self.fit_range_ = alpha_req_from_eigenvalues(
            lam, fit_range, self.weighting
        )
        return self


def require_alpha_shape(shape: tuple[int, int], fit_range: tuple[int, int]) -> None:
    """``ValueError`` unless an (N, h) X can have rank ``first + 1`` (two ranks to fit)."""
    lo = fit_range[0]
    owner = f"AlphaReQ with fit_range={tuple(fit_range)}"
    # A centred X of N points has at most N − 1 non-zero eigenvalues.
    require_points(shape[0], lo + 2, owner)
    require_points(shape[1], lo + 1, owner, "features")


def alpha_req_from_eigenvalues(
    lam: np.ndarray, fit_range: tuple[int, int] = (10, 100), weighting: str = "inverse_rank"
) -> tuple[float, float, tuple[int, int]]:
    """``(α, c, (first, last))`` fitted to descending covariance eigenvalues ``lam``; the range
    is clipped to the non-zero eigenvalues. See ``AlphaReQ``."""
    lo, hi = check_alpha_req_params(fit_range, weighting)
    rank = int(np.count_nonzero(lam))
    if rank < lo + 1:
        raise ValueError(
            f"AlphaReQ with fit_range={(lo, hi)}: X has only {rank} non-zero covariance "
            f"eigenvalues, at least {lo + 1} are needed"
        )
    hi = min(hi, rank)
    ranks = np.arange(lo, hi + 1, dtype=np.float64)
    w = 1.0 / ranks if weighting == "inverse_rank" else np.ones_like(ranks)
    slope, intercept = _weighted_line(np.log(ranks), np.log(lam[lo - 1 : hi]), w)
    return -slope, intercept, (lo, hi)


def check_alpha_req_params(fit_range: tuple[int, int], weighting: str) -> tuple[int, int]:
    """``fit_range`` as a tuple of two ints; ``ValueError`` unless both are valid ``AlphaReQ``
    hyper-parameters."""
    lo, hi = fit_range
    if not (int(lo) == lo and int(hi) == hi and 1 <= lo < hi):
        raise ValueError(
            f"AlphaReQ: fit_range must be two integer ranks 1 <= first < last, got {fit_range!r}"
        )
    if weighting not in ("inverse_rank", "uniform"):
        raise ValueError(
            f"AlphaReQ: weighting must be 'inverse_rank' or 'uniform', got {weighting!r}"
        )
    return int(lo), int(hi)


def _weighted_line(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Slope and intercept minimising ``Σ w (y − a x − b)²``."""
    xm = np.sum(w * x) / np.sum(w)
    ym = np.sum(w * y) / np.sum(w)
    slope = np.sum(w * (x - xm) * (y - ym)) / np.sum(w * (x - xm) ** 2)
    return float(slope), float(ym - slope * xm)


class ParticipationRatio(BaseEstimator):
    """``(Σλ)² / Σλ²`` of the covariance eigenvalues λ; lies in [1, rank].

    Attributes after ``fit``: ``ratio_``, ``n_features_in_``.
    """

    def fit(self, X: Any, y: Any = None) -> ParticipationRatio:
        """Fits ``X`` (N, h); ``y`` is ignored."""
        X = _fit_points(self, X, "ParticipationRatio", min_points=2)
        self.ratio_ = participation_ratio_from_eigenvalues(covariance_eigenvalues(X))
        return self


def participation_ratio_from_eigenvalues(lam: np.ndarray) -> float:
    """``(Σλ)² / Σλ²`` of covariance eigenvalues ``lam``."""
    frob2 = float(np.sum(np.square(lam)))
    if frob2 == 0:
        raise ValueError("ParticipationRatio: X is constant (all covariance eigenvalues are 0)")
    return float(np.sum(lam)) ** 2 / frob2


class TwoNN(BaseEstimator):
    """Two-nearest-neighbour intrinsic dimension (Facco et al. 2017); see the module doc.

    Parameters: ``discard_fraction`` of the largest ratios r₂/r₁ left out of the fit.
    Attributes after ``fit``: ``dimension_``, ``n_points_`` (distinct points used),
    ``n_features_in_``.
    """

    def __init__(self, discard_fraction: float = 0.1) -> None:
        self.discard_fraction = discard_fraction

    def fit(self, X: Any, y: Any = None) -> TwoNN:
        """Fits ``X`` (N, h); ``y`` is ignored."""
        check_twonn_params(self.discard_fraction)
        X = unique_rows(_fit_points(self, X, "TwoNN"))
        _require_twonn_points(X.shape[0], self.discard_fraction)
        self.dimension_ = twonn_dimension(knn_distances(X, 2), self.discard_fraction)
        self.n_points_ = X.shape[0]
        return self


def twonn_dimension(nn_distances: np.ndarray, discard_fraction: float = 0.1) -> float:
    """TwoNN estimate from ``nn_distances`` (N, ≥2): each distinct point's ascending distances to
    its nearest neighbours (only the first two columns are used)."""
    check_twonn_params(discard_fraction)
    n = nn_distances.shape[0]
    _require_twonn_points(n, discard_fraction)
    if nn_distances.shape[1] < 2:
        raise ValueError(f"TwoNN: nn_distances needs 2 columns, got {nn_distances.shape[1]}")
    mu = np.sort(nn_distances[:, 1] / nn_distances[:, 0])
    n_keep = _twonn_kept(n, discard_fraction)
    x = np.log(mu[:n_keep])
    y_cdf = -np.log1p(-np.arange(1, n_keep + 1) / n)
    sxx = np.sum(x * x)
    if sxx == 0:
        raise ValueError("TwoNN: every point has r2 == r1 (a lattice?); the slope is undefined")
    return float(np.sum(x * y_cdf) / sxx)


def check_twonn_params(discard_fraction: float) -> None:
    """``ValueError`` unless ``discard_fraction`` is a valid ``TwoNN`` hyper-parameter."""
    if not 0 <= discard_fraction < 1:
        raise ValueError(f"TwoNN: discard_fraction must be in [0, 1), got {discard_fraction!r}")


def _twonn_kept(n: int, discard_fraction: float) -> int:
    """Ratios kept by TwoNN; F(μ_(n)) = 1 would give −log 0, so the last one never enters."""
    return min(int(n * (1 - discard_fraction)), n - 1)


def _require_twonn_points(n: int, discard_fraction: float) -> None:
    needed = 3
    while _twonn_kept(needed, discard_fraction) < 2:
        needed += 1
    require_points(n, needed, f"TwoNN with discard_fraction={discard_fraction}", "distinct points")


class MLE(BaseEstimator):
    """Levina–Bickel maximum-likelihood intrinsic dimension, MacKay–Ghahramani averaging.

    Parameters: ``n_neighbors`` (k ≥ 2, ≥ 3 when ``unbiased``), ``unbiased`` (k−2 instead of k−1).
    Attributes after ``fit``: ``dimension_``, ``n_points_`` (distinct points used),
    ``n_features_in_``.
    """

    def __init__(self, n_neighbors: int = 20, unbiased: bool = False) -> None:
        self.n_neighbors = n_neighbors
        self.unbiased = unbiased

    def fit(self, X: Any, y: Any = None) -> MLE:
        """Fits ``X`` (N, h); ``y`` is ignored."""
        k = check_mle_params(self.n_neighbors, self.unbiased)
        X = unique_rows(_fit_points(self, X, "MLE"))
        require_points(X.shape[0], k + 1, f"MLE with n_neighbors={k}", "distinct points")
        self.dimension_ = mle_dimension(knn_distances(X, k), k, bool(self.unbiased))
        self.n_points_ = X.shape[0]
        return self


def mle_dimension(nn_distances: np.ndarray, n_neighbors: int = 20, unbiased: bool = False) -> float:
    """MLE estimate from ``nn_distances`` (N, ≥k): each distinct point's ascending distances to
    its nearest neighbours (only the first ``n_neighbors`` = k columns are used)."""
    k = check_mle_params(n_neighbors, unbiased)
    require_points(nn_distances.shape[0], k + 1, f"MLE with n_neighbors={k}", "distinct points")
    if nn_distances.shape[1] < k:
        raise ValueError(
            f"MLE with n_neighbors={k}: nn_distances has only {nn_distances.shape[1]} columns"
        )
    T = nn_distances[:, :k]
    # Σ_{j<k} log(T_k / T_j) per point = (k − 1) / (per-point estimate); averaging these sums
    # and inverting is the MacKay–Ghahramani average of the inverse per-point estimates.
    log_sum = np.sum(np.log(T[:, -1:] / T[:, :-1]), axis=1)
    mean_log_sum = float(np.mean(log_sum))
    if mean_log_sum == 0:
        raise ValueError("MLE: all k neighbours of every point are equidistant; undefined")
    return float((k - 2 if unbiased else k - 1) / mean_log_sum)


def check_mle_params(n_neighbors: int, unbiased: bool) -> int:
    """``n_neighbors`` as an int; ``ValueError`` unless it is a valid ``MLE`` hyper-parameter
    for ``unbiased``."""
    min_k = 3 if unbiased else 2
    if int(n_neighbors) != n_neighbors or n_neighbors < min_k:
        raise ValueError(
            f"MLE: n_neighbors must be an integer >= {min_k} (unbiased={unbiased}), "
            f"got {n_neighbors!r}"
        )
    return int(n_neighbors)
