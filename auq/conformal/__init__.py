"""auq.conformal: distribution-free guarantees for preference predictions.

==========================================  ==========================================================
:func:`selective_threshold`                 abstention threshold with error <= α among answered
                                            pairs w.p. >= 1 - δ (Learn then Test, exact binomial)
:class:`ConformalSelector`                  the same, ``fit`` / ``predict`` style
:class:`PairSetPredictor`                   prediction sets {chosen}/{rejected}/{both}, coverage >= 1 - α
:class:`RewardIntervals`                    intervals for response rewards from member mean and spread
:func:`conformal_weights`                   per-pair DPO weights from conformal p-values / set sizes
:func:`coverage_curve`                      empirical set coverage over a range of α (for plots)
==========================================  ==========================================================

Pairs come as plain arrays (``prob`` = P(chosen preferred), ``targets`` in [0, 1], any uncertainty
score) or as :class:`~auq.models.Predictions` (``fit_predictions`` / :func:`pair_scores`). The true
side of a pair is "chosen" when ``target >= 0.5`` (ties count as chosen).
"""

from ._common import conformal_quantile, pair_correctness, pair_scores
from .intervals import RewardIntervals, member_mean_std
from .selective import (
    ConformalSelector,
    SelectiveResult,
    ltt_p_values,
    min_calibration_size,
    selective_threshold,
)
from .sets import CoverageCurve, PairSetPredictor, PairSets, coverage_curve, pair_nonconformity
from .weights import conformal_weights

__all__ = [
    "ConformalSelector",
    "CoverageCurve",
    "PairSetPredictor",
    "PairSets",
    "RewardIntervals",
    "SelectiveResult",
    "conformal_quantile",
    "conformal_weights",
    "coverage_curve",
    "ltt_p_values",
    "member_mean_std",
    "min_calibration_size",
    "pair_correctness",
    "pair_nonconformity",
    "pair_scores",
    "selective_threshold",
]
