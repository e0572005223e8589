"""Input preparation shared by the batch calibration metrics, the proper scores and the bootstrap.

Every public metric of :mod:`auq.calibration` validates its arrays through these helpers (which
call :mod:`auq._checks`), so a NaN, a shape mismatch or a label outside [0, 1] gets the same
message whichever metric received it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from auq import _checks

from . import _binning

STRATEGIES = ("uniform", "quantile")
NORMS = ("l1", "l2", "max")


def _prepare(
    probs: Any,
    labels: Any,
    weights: Any = None,
    *,
    probs_name: str = "probs",
    labels_name: str = "labels",
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    p = _checks.as_float_array(probs, probs_name, ndim=1, finite=False)
    y = _checks.as_float_array(labels, labels_name, ndim=1, finite=False)
    _checks.check_same_shape(p, y, probs_name, labels_name)
    _checks.check_probabilities(p, probs_name)
    _checks.check_labels(y, labels_name)
    w = _checks.check_weights(weights, "weights", p.shape[0])
    return p, y, w


def _prepare_targets(probs: Any, targets: Any, weights: Any):
    p = _checks.as_float_array(probs, "probs", ndim=1, finite=False)
    _checks.check_probabilities(p, "probs")
    if targets is None:
        q = None
    else:
        q = _checks.as_float_array(targets, "targets", ndim=1, finite=False)
        _checks.check_same_shape(p, q, "probs", "targets")
        _checks.check_labels(q, "targets")
    w = _checks.check_weights(weights, "weights", p.shape[0])
    return p, q, w


def _check_binning(n_bins: Any, strategy: Any) -> int:
    n_bins = _checks.check_int(n_bins, "n_bins", minimum=1)
    _checks.check_choice(strategy, "strategy", STRATEGIES)
    return n_bins


def _edges(p: np.ndarray, n_bins: int, strategy: str) -> np.ndarray | None:
    return None if strategy == "uniform" else _binning.quantile_edges(p, n_bins)


def _total_weight(n: int, w: np.ndarray | None) -> float:
    return float(n) if w is None else float(w.sum())


def _wmean(values: np.ndarray, w: np.ndarray | None) -> float:
    if w is None:
        return float(values.mean())
    return float(np.dot(values, w) / w.sum())


def _pairwise_confidence(p: np.ndarray, q: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Order-free confidence ``max(p, 1−p)`` and correctness (target q; ties count 0.5)."""
    conf = np.maximum(p, 1.0 - p)
    if q is None:
        correct = (p > 0.5).astype(np.float64)
    else:
        correct = np.where(p > 0.5, q, 1.0 - q)
    correct[p == 0.5] = 0.5
    return conf, correct
