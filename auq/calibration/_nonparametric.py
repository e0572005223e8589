"""Non-parametric recalibrators: isotonic regression and histogram binning (see :mod:`.recalibration`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression

from auq._checks import (
    check_choice,
    check_int,
)

from . import _binning
from ._recalibrator import _Recalibrator

logger = logging.getLogger(__name__)

__all__ = ["IsotonicCalibration", "HistogramBinning"]


# Isotonic regression
# ---------------------------------------------------------------------------------------------


class IsotonicCalibration(_Recalibrator):
    """Isotonic calibration: the non-decreasing step map that minimises squared error (PAVA).

    Built on :class:`sklearn.isotonic.IsotonicRegression` with ``y_min=0``, ``y_max=1`` and
    ``out_of_bounds="clip"`` (scores beyond the fitted range get the end values); between fitted
    thresholds the map is linearly interpolated, as in scikit-learn. Soft labels and sample
    weights are passed through. With ``input="logit"`` the regression is on the margins
    themselves (the fit is invariant to the monotone map ``σ``, only the interpolation differs).

    Parameters
    ----------
    symmetrize : bool, default False
        Fit on the data plus mirrors; the fitted map is then antisymmetric.
    input : {"prob", "logit"}, default "prob"

    Attributes
    ----------
    isotonic_ : sklearn.isotonic.IsotonicRegression
    X_thresholds_, y_thresholds_ : numpy.ndarray
        The knots of the fitted map.

    Examples
    --------
    >>> iso = IsotonicCalibration().fit([0.1, 0.3, 0.6, 0.9], [0, 1, 0, 1])
    >>> iso.predict_proba([0.1, 0.45, 0.9])
    array([0. , 0.5, 1. ])
    """

    def __init__(self, symmetrize: bool = False, input: str = "prob") -> None:
        self.symmetrize = symmetrize
        self.input = input

    def fit(self, scores: Any, labels: Any, sample_weight: Any = None) -> IsotonicCalibration:
        """Fit the isotonic map (see :meth:`TemperatureScaling.fit` for the arguments).

        Returns
        -------
        IsotonicCalibration
            ``self``.
        """
        s, y, w = self._fit_data(scores, labels, sample_weight)
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        iso.fit(s, y, sample_weight=w)
        self.isotonic_ = iso
        self.X_thresholds_ = iso.X_thresholds_
        self.y_thresholds_ = iso.y_thresholds_
        return self

    def _predict(self, s: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(self.isotonic_.predict(s), dtype=np.float64), 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Histogram binning
# ---------------------------------------------------------------------------------------------


class HistogramBinning(_Recalibrator):
    """Histogram binning (Zadrozny & Elkan 2001): each bin predicts its mean label.

    Probabilities (``σ(z)`` for ``input="logit"``) are binned on [0, 1]; bin ``i`` is
    ``[e_i, e_{i+1})`` and the last bin also holds 1.0 (a probability on an inner edge belongs to
    the bin above it). ``strategy="uniform"``: equal-width edges; ``"quantile"``: equal-mass edges
    from the fit set's quantiles, with the outer edges set to 0 and 1 and repeated edges merged
    (so fewer bins than ``n_bins`` when many scores coincide). A bin's value is the weighted mean
    label of its fit items; a bin with no fit items (zero total weight) falls back to the bin's
    midpoint ``(e_i + e_{i+1}) / 2``, i.e. it is left as calibrated as a coarse guess can be.

    Parameters
    ----------
    n_bins : int, default 15
    strategy : {"uniform", "quantile"}, default "uniform"
    symmetrize : bool, default False
        Fit on the data plus mirrors ``(1 − p, 1 − y)``; with uniform bins the map is antisymmetric.
    input : {"prob", "logit"}, default "prob"

    Attributes
    ----------
    bin_edges_ : numpy.ndarray, shape (n_bins_ + 1,)
    bin_values_ : numpy.ndarray, shape (n_bins_,)
        Calibrated probability of each bin.
    bin_counts_ : numpy.ndarray, shape (n_bins_,)
        Total fit weight in each bin (the item count without weights).

    Examples
    --------
    >>> hb = HistogramBinning(n_bins=2).fit([0.1, 0.2, 0.7, 0.9], [0, 1, 1, 1])
    >>> hb.predict_proba([0.3, 0.8])
    array([0.5, 1. ])
    """

    def __init__(
        self,
        n_bins: int = 15,
        strategy: str = "uniform",
        symmetrize: bool = False,
        input: str = "prob",
    ) -> None:
        self.n_bins = n_bins
        self.strategy = strategy
        self.symmetrize = symmetrize
        self.input = input

    def _as_prob(self, s: np.ndarray) -> np.ndarray:
        return expit(s) if self.input == "logit" else s

    def fit(self, scores: Any, labels: Any, sample_weight: Any = None) -> HistogramBinning:
        """Fit the bin values (see :meth:`TemperatureScaling.fit` for the arguments).

        Returns
        -------
        HistogramBinning
            ``self``.
        """
        n_bins = check_int(self.n_bins, "n_bins", minimum=1)
        strategy = check_choice(self.strategy, "strategy", ("uniform", "quantile"))
        s, y, w = self._fit_data(scores, labels, sample_weight)
        p = self._as_prob(s)
        if strategy == "uniform":
            # k / n_bins, the edges of every binned metric (np.linspace differs in the last ulp:
            # linspace(0, 1, 11)[3] > 0.3, which put p = 0.3 into the bin below)
            edges = _binning.uniform_edges(n_bins)
        else:
            edges = np.quantile(p, np.linspace(0.0, 1.0, n_bins + 1))
            edges[0], edges[-1] = 0.0, 1.0
            edges = np.unique(edges)
            if edges.size < n_bins + 1:
                logger.info(
                    "HistogramBinning: %d repeated quantile edges merged; %d bins",
                    n_bins + 1 - edges.size,
                    edges.size - 1,
                )
        idx = self._bin_index(p, edges)
        k = edges.size - 1
        counts = np.bincount(idx, weights=w, minlength=k)
        sums = np.bincount(idx, weights=w * y, minlength=k)
        mid = 0.5 * (edges[:-1] + edges[1:])
        with np.errstate(invalid="ignore", divide="ignore"):
            values = np.where(counts > 0, sums / np.where(counts > 0, counts, 1.0), mid)
        self.bin_edges_ = edges
        self.bin_values_ = np.clip(values, 0.0, 1.0)
        self.bin_counts_ = counts
        return self

    @staticmethod
    def _bin_index(p: np.ndarray, edges: np.ndarray) -> np.ndarray:
        return np.searchsorted(edges[1:-1], p, side="right")

    def _predict(self, s: np.ndarray) -> np.ndarray:
        p = self._as_prob(s)
        return self.bin_values_[self._bin_index(p, self.bin_edges_)]
