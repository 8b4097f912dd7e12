"""Task metrics against scikit-learn / scipy on known, random and degenerate vectors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from idcompress.data import compute_metrics, custom_task, get_task
from idcompress.data.metrics import (
    accuracy,
    f1_binary,
    matthews_corrcoef,
    pearson,
    rank_average,
    spearman,
)


def test_known_values():
    y = np.array([1, 1, 0, 0, 1, 0])
    p = np.array([1, 0, 0, 1, 1, 0])
    # tp=2 fp=1 fn=1 tn=2: acc 4/6, F1 = 4/6, MCC = (4-1)/sqrt(3*3*3*3) = 1/3
    assert accuracy(p, y) == pytest.approx(4 / 6)
    assert f1_binary(p, y) == pytest.approx(2 / 3)
    assert matthews_corrcoef(p, y) == pytest.approx(1 / 3)
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    y = rng.integers(0, 2, n)
    p = np.where(rng.random(n) < 0.7, y, 1 - y)
    assert accuracy(p, y) == pytest.approx(skm.accuracy_score(y, p))
    assert f1_binary(p, y) == pytest.approx(skm.f1_score(y, p))
    assert matthews_corrcoef(p, y) == pytest.approx(skm.matthews_corrcoef(y, p))
    # multiclass MCC
    y3 = rng.integers(0, 3, n)
    p3 = np.where(rng.random(n) < 0.6, y3, rng.integers(0, 3, n))
    assert matthews_corrcoef(p3, y3) == pytest.approx(skm.matthews_corrcoef(y3, p3))


@pytest.mark.parametrize("seed", range(5))
def test_correlations_match_scipy(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(3, 400))
    x = rng.normal(size=n)
    y = 0.5 * x + rng.normal(size=n)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
    # heavy ties: STS-B-like labels on a 0.2 grid, predictions rounded
    yt = np.round(rng.uniform(0, 5, n) * 5) / 5
    xt = np.round(yt + rng.normal(scale=1.0, size=n))
    assert spearman(xt, yt) == pytest.approx(stats.spearmanr(xt, yt)[0], abs=1e-12)


def test_rank_average_matches_scipy():
    x = np.array([3.0, 1.0, 3.0, 2.0, 3.0, 1.0])
    np.testing.assert_allclose(rank_average(x), stats.rankdata(x))


def test_degenerate_inputs():
    y = np.array([0, 1, 1, 0, 1])
    const = np.ones(5, dtype=int)
    # constant predictions → 0 as sklearn, not NaN
    assert matthews_corrcoef(const, y) == skm.matthews_corrcoef(y, const) == 0.0
    assert matthews_corrcoef(np.zeros(5, int), np.zeros(5, int)) == 0.0
    # no positives anywhere → F1 0 (sklearn's zero_division default value)
    z = np.zeros(4, int)
    assert f1_binary(z, z) == skm.f1_score(z, z, zero_division=0) == 0.0
    assert pearson(np.ones(4), [1, 2, 3, 4]) == 0.0
    assert spearman([1, 2, 3, 4], np.full(4, 2.5)) == 0.0
    with pytest.raises(ValueError, match="empty"):
        accuracy([], [])
    with pytest.raises(ValueError, match="equal length"):
        pearson([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="0/1"):
        f1_binary([0, 2], [0, 1])


def test_compute_metrics_from_logits_and_ids():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 50)
    logits = rng.normal(size=(50, 2))
    ids = logits.argmax(1)
    mrpc = get_task("mrpc")
    got = compute_metrics(mrpc, logits, y)
    assert list(got) == ["f1", "accuracy"]
    assert got["f1"] == pytest.approx(skm.f1_score(y, ids))
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, ids))
    assert compute_metrics(mrpc, ids, y) == got
    assert compute_metrics(get_task("cola"), logits, y)["mcc"] == pytest.approx(
        skm.matthews_corrcoef(y, ids))
    y3 = rng.integers(0, 3, 50)
    logits3 = rng.normal(size=(50, 3))
    assert compute_metrics(get_task("mnli"), logits3, y3)["accuracy"] == pytest.approx(
        np.mean(logits3.argmax(1) == y3))
    with pytest.raises(ValueError, match="num_labels=2"):
        compute_metrics(mrpc, logits3, y3)
    with pytest.raises(ValueError, match="class ids"):
        compute_metrics(mrpc, rng.normal(size=50), y)


def test_compute_metrics_regression():
    rng = np.random.default_rng(3)
    y = rng.uniform(0, 5, 40)
    pred = y + rng.normal(size=40)
    stsb = get_task("glue/stsb")
    got = compute_metrics(stsb, pred[:, None], y)
    assert got == compute_metrics(stsb, pred, y)
    assert got["pearson"] == pytest.approx(stats.pearsonr(pred, y)[0])
    assert got["spearman"] == pytest.approx(stats.spearmanr(pred, y)[0])
    with pytest.raises(ValueError, match=r"\(N,\) or \(N, 1\)"):
        compute_metrics(stsb, rng.normal(size=(40, 2)), y)
    with pytest.raises(ValueError, match="labels have shape"):
        compute_metrics(stsb, pred, y[:-1])
    reg = custom_task("text", regression=True)
    assert compute_metrics(reg, pred, y)["pearson"] == got["pearson"]
