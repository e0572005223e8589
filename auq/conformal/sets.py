r"""Prediction sets for preference pairs with marginal coverage ``>= 1 - α`` (split conformal).

For a pair the candidate labels are its two sides, "chosen" and "rejected". With ``p`` the model's
probability that the chosen response is preferred, the nonconformity of a label is one minus the
probability the model gives it: ``1 - p`` for "chosen", ``p`` for "rejected" (the LAC score,
Sadinle, Lei and Wasserman 2019). On ``n`` calibration pairs, scored at their *true* side
(``target >= 0.5`` means chosen, ties included; see :mod:`auq.conformal._common`), the quantile

.. math:: \hat q = s_{(k)},\qquad k = \lceil (n + 1)(1 - α) \rceil

(the ``k``-th smallest score, ``+inf`` when ``k > n``) gives the set
``C(x) = {label : score(x, label) <= q̂}``, which contains the true side of a new exchangeable pair
with probability ``>= 1 - α`` (and ``< 1 - α + 1/(n+1)`` without ties). The set is {chosen},
{rejected} or {both}; it would be empty where both sides score above ``q̂`` (possible only when
``q̂ < 0.5``), and :class:`PairSetPredictor` then keeps the model's preferred side
(``allow_empty=False``, the default): adding a label never lowers coverage. Every filled set
then holds at least one side, so its coverage cannot fall below the model's accuracy: for ``α``
above the error rate the sets are all singletons (the model's preferred side) and the coverage
stays at the accuracy, above ``1 - α``.

Equivalently, each label gets a conformal p-value
``π(x, y) = (1 + #{i : s_i >= score(x, y)}) / (n + 1)`` and ``C(x) = {y : π(x, y) > α}``;
:meth:`PairSetPredictor.p_values` returns them (they also give the training weights of
:mod:`auq.conformal.weights`).

Examples
--------
>>> sets = PairSetPredictor(alpha=0.25).fit([0.9, 0.8, 0.3, 0.6, 0.7], [1, 1, 1, 0, 1])
>>> sets.quantile_  # scores 0.1, 0.2, 0.7, 0.6, 0.3; k = ceil(6 * 0.75) = 5
0.7
>>> sets.predict([0.95, 0.5, 0.2]).labels()
['chosen', 'both', 'rejected']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._common import (
    check_level,
    check_prob,
    check_targets,
    conformal_quantile,
    pair_scores,
    true_side_is_chosen,
)

__all__ = ["PairSets", "PairSetPredictor", "pair_nonconformity", "CoverageCurve", "coverage_curve"]


def pair_nonconformity(prob: Any, targets: Any) -> np.ndarray:
    """``1 - p(true side)``: ``1 - prob`` where the true side is chosen (``target >= 0.5``), else ``prob``.

    Examples
    --------
    >>> pair_nonconformity([0.9, 0.6, 0.3], [1.0, 0.0, 0.5]).round(2).tolist()
    [0.1, 0.6, 0.7]
    """
    p = check_prob(prob)
    t = check_targets(targets, p.shape[0])
    return np.where(true_side_is_chosen(t), 1.0 - p, p)


@dataclass(frozen=True)
class PairSets:
    """Prediction sets of pairs: which sides each set holds.

    Attributes
    ----------
    contains_chosen, contains_rejected : numpy.ndarray of bool, shape [n]
    """

    contains_chosen: np.ndarray
    contains_rejected: np.ndarray

    def __len__(self) -> int:
        return int(self.contains_chosen.shape[0])

    @property
    def size(self) -> np.ndarray:
        """Number of labels in each set (0, 1 or 2)."""
        return self.contains_chosen.astype(np.int64) + self.contains_rejected.astype(np.int64)

    def labels(self) -> list[str]:
        """``"chosen"``, ``"rejected"``, ``"both"`` or ``"empty"`` per pair."""
        names = {(True, False): "chosen", (False, True): "rejected", (True, True): "both", (False, False): "empty"}
        return [names[(bool(c), bool(r))] for c, r in zip(self.contains_chosen, self.contains_rejected)]

    def covers(self, targets: Any) -> np.ndarray:
        """True where the set holds the true side (``target >= 0.5``: chosen)."""
        t = check_targets(targets, len(self), "targets", "the sets")
        return np.where(true_side_is_chosen(t), self.contains_chosen, self.contains_rejected)

    def coverage(self, targets: Any) -> float:
        """Fraction of pairs whose set holds the true side."""
        return float(self.covers(targets).mean())


class PairSetPredictor:
    """Split-conformal prediction sets {chosen}, {rejected}, {both} for preference pairs.

    Parameters
    ----------
    alpha : float in (0, 1)
        Miscoverage: sets hold the true side with probability ``>= 1 - alpha``.
    allow_empty : bool, default False
        Keep empty sets (the plain split-conformal rule) instead of filling them with the
        model's preferred side.

    Attributes
    ----------
    quantile_ : float
        ``q̂`` (``inf`` when the calibration set is smaller than ``1/alpha - 1``: every set is {both}).
    scores_ : numpy.ndarray
        The calibration nonconformity scores.

    Examples
    --------
    >>> PairSetPredictor(0.2).fit_predictions(cal_preds).predict_predictions(test_preds).size  # doctest: +SKIP
    """

    def __init__(self, alpha: float, *, allow_empty: bool = False):
        self.alpha = check_level(alpha, "alpha")
        if not isinstance(allow_empty, bool):
            raise TypeError(f"allow_empty must be a bool, got {type(allow_empty).__name__}")
        self.allow_empty = allow_empty
        self.quantile_: float | None = None
        self.scores_: np.ndarray | None = None

    def fit(self, prob: Any, targets: Any) -> PairSetPredictor:
        """Calibrate on ``prob`` (P(chosen preferred)) and ``targets`` of the calibration pairs."""
        self.scores_ = pair_nonconformity(prob, targets)
        self.quantile_ = conformal_quantile(self.scores_, self.alpha)
        return self

    def fit_predictions(self, predictions: Any) -> PairSetPredictor:
        """:meth:`fit` on scored calibration pairs (:class:`~auq.models.Predictions`)."""
        _, prob, targets = pair_scores(predictions)
        return self.fit(prob, targets)

    def _check_fitted(self) -> tuple[float, np.ndarray]:
        if self.quantile_ is None or self.scores_ is None:
            raise RuntimeError("PairSetPredictor is not fitted: call fit(prob, targets) first")
        return self.quantile_, self.scores_

    def predict(self, prob: Any) -> PairSets:
        """Sets for new pairs from their ``prob``."""
        q, _ = self._check_fitted()
        p = check_prob(prob)
        chosen, rejected = 1.0 - p <= q, p <= q
        if not self.allow_empty:
            empty = ~(chosen | rejected)
            chosen = chosen | (empty & (p >= 0.5))
            rejected = rejected | (empty & (p < 0.5))
        return PairSets(chosen, rejected)

    def predict_predictions(self, predictions: Any) -> PairSets:
        """:meth:`predict` on scored pairs (:class:`~auq.models.Predictions`)."""
        _, prob, _ = pair_scores(predictions)
        return self.predict(prob)

    def p_values(self, prob: Any) -> tuple[np.ndarray, np.ndarray]:
        """Conformal p-values ``(π(x, chosen), π(x, rejected))`` of each new pair's two sides.

        ``π(x, y) = (1 + #{i : s_i >= score(x, y)}) / (n + 1)``; ``{y : π > α}`` is the
        (possibly empty) split-conformal set.

        Examples
        --------
        >>> sp = PairSetPredictor(0.25).fit([0.9, 0.8, 0.3, 0.6, 0.7], [1, 1, 1, 0, 1])
        >>> [v.round(4).tolist() for v in sp.p_values([0.75])]  # scores 0.25 and 0.75
        [[0.6667], [0.1667]]
        """
        _, s = self._check_fitted()
        p = check_prob(prob)
        ref = np.sort(s)
        n = ref.shape[0]

        def pv(score: np.ndarray) -> np.ndarray:
            at_least = n - np.searchsorted(ref, score, side="left")  # #{s_i >= score}
            return (1.0 + at_least) / (n + 1.0)

        return pv(1.0 - p), pv(p)


@dataclass(frozen=True)
class CoverageCurve:
    """Empirical coverage of pair sets over a range of miscoverage levels.

    Attributes
    ----------
    alpha, coverage, mean_size : numpy.ndarray, shape [n_levels]
        The levels, the fraction of test pairs whose set holds the true side, the mean set size.
    n_calibration : int
    """

    alpha: np.ndarray
    coverage: np.ndarray
    mean_size: np.ndarray
    n_calibration: int


def coverage_curve(
    prob_cal: Any, targets_cal: Any, prob_test: Any, targets_test: Any, alphas: Any = None
) -> CoverageCurve:
    """Fit :class:`PairSetPredictor` at each level of ``alphas`` and measure it on the test pairs.

    ``alphas`` defaults to 0.05, 0.10, ..., 0.50.

    Examples
    --------
    >>> c = coverage_curve([0.9, 0.8, 0.3, 0.6, 0.7], [1, 1, 1, 0, 1], [0.95, 0.5], [1, 0], [0.25, 0.5])
    >>> c.coverage.tolist(), c.mean_size.tolist()
    ([1.0, 0.5], [1.5, 1.0])
    """
    from auq._checks import as_float_array

    levels = np.arange(1, 11) * 0.05 if alphas is None else as_float_array(alphas, "alphas", ndim=1)
    for a in levels:
        check_level(float(a), "alphas")
    p_test = check_prob(prob_test, "prob_test")
    t_test = check_targets(targets_test, p_test.shape[0], "targets_test", "prob_test")
    p_cal = check_prob(prob_cal, "prob_cal")
    t_cal = check_targets(targets_cal, p_cal.shape[0], "targets_cal", "prob_cal")
    cov, size = [], []
    for a in levels:
        sets = PairSetPredictor(float(a)).fit(p_cal, t_cal).predict(p_test)
        cov.append(sets.coverage(t_test))
        size.append(float(sets.size.mean()))
    return CoverageCurve(np.asarray(levels, dtype=np.float64), np.array(cov), np.array(size), int(p_cal.shape[0]))
