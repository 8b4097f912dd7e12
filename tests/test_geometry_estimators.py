"""The geometry estimators are scikit-learn estimators: ``clone``, ``get_params``/``set_params``
and scikit-learn's own estimator checks (those that apply to unsupervised estimators of a matrix)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.validation import check_is_fitted

from idcompress.geometry import MLE, AlphaReQ, ParticipationRatio, RankMe, TwoNN

# The checks fit matrices of 1 to 40 rows and 1 to 10 columns; α-ReQ's default ranks 10..100 and
# MLE's 20 neighbours need more, so the checked instances use the smallest workable settings.
CHECKED = [RankMe(), AlphaReQ(fit_range=(1, 2)), ParticipationRatio(), TwoNN(), MLE(n_neighbors=5)]

# Checks that assert scikit-learn's own wording of an input error; ours refuse the same inputs
# with a ValueError in our wording (tests/test_geometry.py pins those messages).
_OUR_WORDING = {
    "check_fit2d_1sample": "one point is refused as 'needs at least 2 points, got 1', not "
    "scikit-learn's '1 sample'",
    "check_estimators_empty_data_messages": "X of shape (12, 0) is refused as 'X has no feature "
    "column', not scikit-learn's '0 feature(s) ... while a minimum of 1 is required'",
    "check_dtype_object": "a non-numeric entry is refused with ValueError 'X must be a numeric "
    "(N, h) array', not numpy's TypeError",
    "check_estimator_sparse_array": "sparse X is refused as 'X must be a numeric (N, h) array, got "
    "csr_array' (the type, not the word 'sparse')",
    "check_estimator_sparse_matrix": "sparse X is refused as 'X must be a numeric (N, h) array, "
    "got csr_matrix' (the type, not the word 'sparse')",
    "check_estimator_sparse_tag": "sparse X is refused, but not in words that say 'sparse'",
}


def _expected_failed_checks(est) -> dict[str, str]:
    failed = dict(_OUR_WORDING)
    if isinstance(est, AlphaReQ):
        failed["check_fit2d_1feature"] = (
            "a one-column X is refused as 'needs at least 2 features, got 1' (a power law needs "
            "two ranks), not scikit-learn's '1 feature(s)'"
        )
    return failed


@parametrize_with_checks(CHECKED, expected_failed_checks=_expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _points(n: int = 200, h: int = 30, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, h)) @ np.diag(np.linspace(1, 3, h))


RESULT = {RankMe: "rank_", AlphaReQ: "alpha_", ParticipationRatio: "ratio_", TwoNN: "dimension_",
          MLE: "dimension_"}


@pytest.mark.parametrize("est", CHECKED + [AlphaReQ(), MLE()], ids=repr)
def test_clone_round_trip(est):
    X = _points()
    fitted = clone(est).fit(X)
    copy = clone(fitted)
    assert copy is not fitted and copy.get_params() == est.get_params()
    with pytest.raises(NotFittedError):
        check_is_fitted(copy)  # clone keeps the hyper-parameters, not the results
    name = RESULT[type(est)]
    assert getattr(copy.fit(X), name) == getattr(fitted, name)
    assert fitted.n_features_in_ == copy.n_features_in_ == 30


def test_get_params_returns_what_init_stored():
    fit_range = [5, 25]  # stored as given, not converted
    est = AlphaReQ(fit_range=fit_range, weighting="uniform")
    assert est.get_params() == {"fit_range": fit_range, "weighting": "uniform"}
    assert est.get_params()["fit_range"] is fit_range
    assert MLE().get_params() == {"n_neighbors": 20, "unbiased": False}
    assert RankMe().get_params() == {"form": "sigma", "eps": 1e-7}
    assert TwoNN().get_params() == {"discard_fraction": 0.1}
    assert ParticipationRatio().get_params() == {}
    # a list range fits as the tuple would, and reports the ranks used as a tuple
    X = _points()
    ref = AlphaReQ(fit_range=(5, 25)).fit(X).alpha_
    assert est.set_params(weighting="inverse_rank").fit(X).alpha_ == ref
    assert est.fit_range_ == (5, 25)


def test_set_params_changes_the_fit():
    X = _points()
    est = MLE()
    assert est.set_params(n_neighbors=10) is est and est.n_neighbors == 10
    assert est.fit(X).dimension_ == MLE(n_neighbors=10).fit(X).dimension_
    assert est.set_params(unbiased=True).fit(X).dimension_ == MLE(10, True).fit(X).dimension_
    eig = RankMe().set_params(form="eig").fit(X).rank_
    assert eig == RankMe(form="eig").fit(X).rank_ != RankMe().fit(X).rank_
    with pytest.raises(ValueError, match="Invalid parameter 'k'"):
        MLE().set_params(k=3)
    # bad values are stored by set_params and refused by fit
    est = TwoNN().set_params(discard_fraction=2.0)
    with pytest.raises(ValueError, match="discard_fraction"):
        est.fit(X)


def test_data_frame_columns_are_recorded_and_tensors_fit_alike():
    pd = pytest.importorskip("pandas")
    X = _points(h=4)
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    est = TwoNN().fit(frame)
    assert list(est.feature_names_in_) == ["a", "b", "c", "d"] and est.n_features_in_ == 4
    assert est.dimension_ == TwoNN().fit(torch.from_numpy(X)).dimension_
    assert not hasattr(TwoNN().fit(X), "feature_names_in_")
