"""Every geometry metric of one representation ``X`` (N, h), as a plain dict of floats."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ._checks import as_points, unique_rows
from .estimators import (
    alpha_req_from_eigenvalues,
    check_alpha_req_params,
    check_mle_params,
    check_twonn_params,
    covariance_eigenvalues,
    mle_dimension,
    participation_ratio_from_eigenvalues,
    rankme_from_eigenvalues,
    require_alpha_shape,
    twonn_dimension,
)
from .neighbors import knn_distances

# Report order; ``rankme`` is the σ form, ``rankme_eig`` the σ² form (docs/design.md, "Metrics of representation geometry").
METRICS = ("rankme", "rankme_eig", "alpha_req", "participation_ratio", "twonn", "mle")


@dataclass(frozen=True)
class GeometrySettings:
    """Hyper-parameters of the metrics in a report (recorded in ``geometry.json``)."""

    alpha_fit_range: tuple[int, int] = (10, 100)
    alpha_weighting: str = "inverse_rank"
    twonn_discard_fraction: float = 0.1
    mle_neighbors: int = 20

    def __post_init__(self) -> None:
        # The estimators' own checks, here so that bad settings fail once, not once per layer.
        check_alpha_req_params(self.alpha_fit_range, self.alpha_weighting)
        check_twonn_params(self.twonn_discard_fraction)
        check_mle_params(self.mle_neighbors, unbiased=False)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["alpha_fit_range"] = list(self.alpha_fit_range)
        return d


def layer_metrics(
    X: Any, settings: GeometrySettings | None = None
) -> tuple[dict[str, float | None], dict[str, str]]:
    """All ``METRICS`` of ``X``; a metric whose estimator refuses X (too few points, a constant
    X, ...) is ``None`` and its message is in the second dict, keyed by metric name."""
    # Bad input (NaN, not 2-D, a single point) is an error, not a None.
    X = as_points(X, "layer_metrics", min_points=2)
    s = settings or GeometrySettings()
    values: dict[str, float | None] = {}
    errors: dict[str, str] = {}

    def record(name: str, compute: Callable[[], float]) -> None:
        try:
            values[name] = float(compute())
        except ValueError as e:
            values[name] = None
            errors[name] = str(e)

    lam = covariance_eigenvalues(X)  # one eigensolve serves the four spectral metrics

    def alpha() -> float:
        require_alpha_shape(X.shape, s.alpha_fit_range)
        return alpha_req_from_eigenvalues(lam, s.alpha_fit_range, s.alpha_weighting)[0]

    record("rankme", lambda: rankme_from_eigenvalues(lam, "sigma"))
    record("rankme_eig", lambda: rankme_from_eigenvalues(lam, "eig"))
    record("alpha_req", alpha)
    record("participation_ratio", lambda: participation_ratio_from_eigenvalues(lam))
    # One exact neighbour search serves both TwoNN (2 columns) and MLE (k columns); with too
    # few points the estimators raise their own "needs at least ... points" error.
    distinct = unique_rows(X)
    n = distinct.shape[0]
    k = min(max(2, s.mle_neighbors), n - 1)
    nn = knn_distances(distinct, k) if k >= 2 else np.zeros((n, 0))
    record("twonn", lambda: twonn_dimension(nn, s.twonn_discard_fraction))
    record("mle", lambda: mle_dimension(nn, s.mle_neighbors))
    return values, errors
