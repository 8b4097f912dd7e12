"""Task metrics in plain numpy: accuracy, binary F1, Matthews correlation, Pearson, Spearman.

Conventions (those of scikit-learn where it defines one):

* ``f1`` is the F1 of class 1 (binary tasks); 0 when there is no true or predicted positive.
* ``mcc`` is the multiclass Matthews correlation (Gorodkin 2004); 0 when a marginal is
  constant (e.g. every prediction the same class), as scikit-learn returns.
* ``pearson``/``spearman`` are 0 when either vector is constant (where scipy returns NaN), so a
  collapsed regressor scores 0 rather than poisoning averages. Spearman uses average ranks for
  ties.

All functions take 1-D arrays of equal, non-zero length and return a Python float.
"""

from __future__ import annotations

import numpy as np

from .tasks import TaskSpec


def _pair(a, b, what: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a), np.asarray(b)
    if x.ndim != 1 or y.ndim != 1 or x.shape != y.shape:
        raise ValueError(
            f"{what}: inputs must be 1-D of equal length, got shapes {x.shape} and {y.shape}"
        )
    if x.size == 0:
        raise ValueError(f"{what}: inputs are empty")
    return x, y


def accuracy(predictions, labels) -> float:
    """Fraction of predictions equal to labels."""
    p, y = _pair(predictions, labels, "accuracy")
    return float(np.mean(p == y))


def f1_binary(predictions, labels) -> float:
    """F1 of the positive class 1 for binary 0/1 predictions and labels."""
    p, y = _pair(predictions, labels, "f1")
    extra = sorted((set(np.unique(p).tolist()) | set(np.unique(y).tolist())) - {0, 1})
    if extra:
        raise ValueError(f"f1: binary F1 needs 0/1 class ids, found {extra[:10]}")
    tp = float(np.sum((p == 1) & (y == 1)))
    denom = float(np.sum(p == 1) + np.sum(y == 1))
    return 0.0 if denom == 0 else 2.0 * tp / denom


def matthews_corrcoef(predictions, labels) -> float:
    """Matthews correlation of class-id vectors (any number of classes)."""
    p, y = _pair(predictions, labels, "mcc")
    classes, inv = np.unique(np.concatenate([y, p]), return_inverse=True)
    k = classes.size
    yi, pi = inv[: y.size], inv[y.size :]
    cm = np.zeros((k, k), dtype=np.float64)
    np.add.at(cm, (yi, pi), 1.0)
    t_k, p_k = cm.sum(axis=1), cm.sum(axis=0)
    c, s = np.trace(cm), cm.sum()
    cov_yp = c * s - t_k @ p_k
    cov_pp = s * s - p_k @ p_k
    cov_yy = s * s - t_k @ t_k
    if cov_pp == 0 or cov_yy == 0:
        return 0.0
    return float(cov_yp / np.sqrt(cov_pp * cov_yy))


def pearson(predictions, labels) -> float:
    """Pearson's r; 0 when either input is constant."""
    x, y = _pair(predictions, labels, "pearson")
    x = x.astype(np.float64) - np.mean(x, dtype=np.float64)
    y = y.astype(np.float64) - np.mean(y, dtype=np.float64)
    den = np.sqrt(np.dot(x, x) * np.dot(y, y))
    if den == 0 or not np.isfinite(den):
        return 0.0
    return float(np.clip(np.dot(x, y) / den, -1.0, 1.0))


def rank_average(x) -> np.ndarray:
    """1-based ranks of a 1-D array; tied values share the mean of their ranks."""
    values = np.asarray(x)
    _, inv, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts).astype(np.float64)
    return (ends - (counts - 1) / 2.0)[inv.reshape(-1)]


def spearman(predictions, labels) -> float:
    """Spearman's rho: Pearson's r of average ranks; 0 when either input is constant."""
    x, y = _pair(predictions, labels, "spearman")
    return pearson(rank_average(x), rank_average(y))


METRIC_FUNCTIONS = {
    "accuracy": accuracy,
    "f1": f1_binary,
    "mcc": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}


def predictions_to_output(spec: TaskSpec, predictions) -> np.ndarray:
    """Model outputs → class ids (classification) or scores (regression), shape ``(N,)``.

    Classification accepts logits ``(N, num_labels)`` (argmax) or integer class ids ``(N,)``.
    Regression accepts ``(N,)`` or ``(N, 1)``.
    """
    pred = np.asarray(predictions)
    if spec.is_regression:
        if pred.ndim == 2 and pred.shape[1] == 1:
            pred = pred[:, 0]
        if pred.ndim != 1:
            raise ValueError(
                f"task {spec.name}: regression predictions must have shape (N,) or (N, 1), "
                f"got {pred.shape}"
            )
        return pred.astype(np.float64)
    if pred.ndim == 2:
        if pred.shape[1] != spec.num_labels:
            raise ValueError(
                f"task {spec.name}: logits have {pred.shape[1]} columns, expected "
                f"num_labels={spec.num_labels}"
            )
        return np.argmax(pred, axis=1)
    if pred.ndim == 1:
        if not np.issubdtype(pred.dtype, np.integer):
            if not np.all(np.isfinite(pred)) or not np.all(pred == np.round(pred)):
                raise ValueError(
                    f"task {spec.name}: 1-D predictions must be class ids; pass logits as "
                    "(N, num_labels)"
                )
            pred = pred.astype(np.int64)
        return pred
    raise ValueError(f"task {spec.name}: predictions of shape {pred.shape} are not understood")


def compute_metrics(spec: TaskSpec, predictions, labels) -> dict[str, float]:
    """Score predictions against labels with every metric of ``spec``, in ``spec.metrics`` order.

    ``predictions``: logits ``(N, C)``, class ids ``(N,)``, or for regression ``(N,)``/``(N, 1)``;
    ``labels``: ``(N,)``.
    """
    out = predictions_to_output(spec, predictions)
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape != out.shape:
        raise ValueError(
            f"task {spec.name}: {out.shape[0]} predictions but labels have shape {y.shape}"
        )
    if not spec.is_regression:
        y = y.astype(np.int64)
    return {m: METRIC_FUNCTIONS[m](out, y) for m in spec.metrics}
