"""Proper scores of probabilistic predictions: Brier score and its decomposition, NLL, accuracy.

Same conventions as :mod:`auq.calibration.metrics`: array-likes in, float64 inside, optional
frequency weights, hard or soft labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from auq import _checks

from . import _binning
from ._inputs import (
    _check_binning,
    _edges,
    _pairwise_confidence,
    _prepare,
    _prepare_targets,
    _wmean,
)

__all__ = [
    "BrierDecomposition",
    "brier_score",
    "brier_decomposition",
    "negative_log_likelihood",
    "negative_log_likelihood_from_logits",
    "preference_accuracy",
]


def brier_score(probs: Any, labels: Any, weights: Any = None) -> float:
    """Brier score ``Σ w (p − y)² / Σ w`` (scikit-learn's ``brier_score_loss`` for 0/1 labels).

    Examples
    --------
    >>> brier_score([0.9, 0.2], [1, 0])
    0.025
    """
    p, y, w = _prepare(probs, labels, weights)
    d = p - y
    d *= d
    return _wmean(d, w)


@dataclass(frozen=True)
class BrierDecomposition:
    """Murphy decomposition of the Brier score over bins.

    With bins b, bin weight share ``π_b = W_b / W``, mean forecast ``f̄_b``, mean outcome ``ō_b``
    and overall mean outcome ``ō``:

    * ``reliability = Σ π_b (f̄_b − ō_b)²`` (lower is better),
    * ``resolution = Σ π_b (ō_b − ō)²`` (higher is better),
    * ``uncertainty = Σ w (y − ō)² / W`` (``ō(1 − ō)`` for 0/1 labels),
    * ``within_bin_variance = Σ w (p − f̄_b)² / W − 2 Σ w (p − f̄_b)(y − ō_b) / W``: the
      within-bin variance of the forecasts minus twice their within-bin covariance with the outcomes
      (Stephenson et al. 2008).

    ``reliability − resolution + uncertainty`` is the Brier score of the *bin-averaged* forecasts
    ``f̄_b``, not of the raw forecasts; the binning error is ``within_bin_variance``, so that
    ``brier = reliability − resolution + uncertainty + within_bin_variance`` holds exactly (up to
    floating-point rounding). It shrinks to 0 as bins get narrower.

    Despite its (kept) name, ``within_bin_variance`` is not a variance and can be negative: it is
    ``forecast_variance − 2 · forecast_outcome_covariance``, and the covariance term is positive
    whenever forecasts that are higher within a bin also win more often there. Its honest name is
    :attr:`binning_term`; its two parts are kept as fields:

    * ``forecast_variance = Σ w (p − f̄_b)² / W`` (≥ 0),
    * ``forecast_outcome_covariance = Σ w (p − f̄_b)(y − ō_b) / W`` (either sign).
    """

    brier: float
    reliability: float
    resolution: float
    uncertainty: float
    within_bin_variance: float
    n_bins: int
    forecast_variance: float = float("nan")
    forecast_outcome_covariance: float = float("nan")

    @property
    def binning_term(self) -> float:
        """``brier − (reliability − resolution + uncertainty)``: the Brier score of the raw
        forecasts minus that of the bin-averaged ones (= ``within_bin_variance``; either sign)."""
        return self.within_bin_variance

    def to_pandas(self):
        """Return a one-row :class:`pandas.DataFrame`."""
        import pandas as pd

        return pd.DataFrame([self.__dict__])


_BRIER_STATS = ("weight", "conf", "label", "conf2", "label2", "conf_label")


def _brier_from_sums(s: dict[str, np.ndarray], n_bins: int) -> BrierDecomposition:
    wb = s["weight"]
    total = float(wb.sum())
    ne = wb > 0
    wb = wb[ne]
    sc, sy, sc2, sy2, scy = (s[k][ne] for k in ("conf", "label", "conf2", "label2", "conf_label"))
    fbar = sc / wb
    obar_b = sy / wb
    obar = float(sy.sum()) / total
    brier = float((sc2 - 2.0 * scy + sy2).sum()) / total
    rel = float(np.dot(wb, (fbar - obar_b) ** 2)) / total
    res = float(np.dot(wb, (obar_b - obar) ** 2)) / total
    unc = float(sy2.sum()) / total - obar * obar
    var_f = (sc2 - sc * fbar).sum()  # Σ w (p − f̄_b)²
    cov = (scy - sc * obar_b).sum()  # Σ w (p − f̄_b)(y − ō_b)
    wbv = float(var_f - 2.0 * cov) / total
    return BrierDecomposition(
        brier, rel, res, unc, wbv, n_bins, float(var_f) / total, float(cov) / total
    )


def brier_decomposition(
    probs: Any,
    labels: Any,
    n_bins: int = 15,
    strategy: str = "uniform",
    weights: Any = None,
) -> BrierDecomposition:
    """Brier score with its reliability–resolution–uncertainty (Murphy) decomposition.

    See :class:`BrierDecomposition` for the formulas and why ``within_bin_variance`` is needed
    for the parts to add up to the raw Brier score. Bins as in :func:`expected_calibration_error`.

    Examples
    --------
    >>> d = brier_decomposition([0.1, 0.1, 0.9, 0.9], [0, 0, 1, 0], n_bins=2)
    >>> round(d.reliability, 4), round(d.resolution, 4), round(d.uncertainty, 4)
    (0.085, 0.0625, 0.1875)
    """
    n_bins = _check_binning(n_bins, strategy)
    p, y, w = _prepare(probs, labels, weights)
    s = _binning.bin_sums(p, y, w, n_bins, _BRIER_STATS, _edges(p, n_bins, strategy))
    return _brier_from_sums(s, n_bins)


_EPS = float(np.finfo(np.float64).eps)


def _nll_terms(p: np.ndarray, y: np.ndarray, eps: float) -> np.ndarray:
    lp = np.log(np.clip(p, eps, 1.0 - eps))
    lq = np.log(np.clip(1.0 - p, eps, 1.0 - eps))
    return -(y * lp + (1.0 - y) * lq)


def negative_log_likelihood(probs: Any, labels: Any, weights: Any = None, eps: float = _EPS) -> float:
    """Mean binary cross-entropy ``−[y log p + (1 − y) log(1 − p)]`` (nats).

    Matches scikit-learn's ``log_loss``: ``p`` and ``1 − p`` are each clipped to
    ``[eps, 1 − eps]`` with ``eps`` the float64 machine epsilon. Prefer
    :func:`negative_log_likelihood_from_logits` when logits are at hand (no clipping needed).

    Examples
    --------
    >>> round(negative_log_likelihood([0.9, 0.2], [1, 0]), 6)
    0.164252
    """
    p, y, w = _prepare(probs, labels, weights)
    eps = _checks.check_float(eps, "eps", minimum=0.0, maximum=0.5)
    return _wmean(_nll_terms(p, y, eps), w)


def negative_log_likelihood_from_logits(logits: Any, labels: Any, weights: Any = None) -> float:
    """Mean binary cross-entropy from logits, in log-space: ``−[y logσ(z) + (1 − y) logσ(−z)]``.

    Exact and finite for any finite logit (±1e4 included).

    Examples
    --------
    >>> negative_log_likelihood_from_logits([1e4, -1e4], [1, 0])
    0.0
    """
    import torch
    import torch.nn.functional as F

    z = _checks.as_float_array(logits, "logits", ndim=1)
    y = _checks.as_float_array(labels, "labels", ndim=1, finite=False)
    _checks.check_same_shape(z, y, "logits", "labels")
    _checks.check_labels(y, "labels")
    w = _checks.check_weights(weights, "weights", z.shape[0])
    zt = torch.from_numpy(np.ascontiguousarray(z))
    yt = torch.from_numpy(np.ascontiguousarray(y))
    terms = -(yt * F.logsigmoid(zt) + (1.0 - yt) * F.logsigmoid(-zt))
    return _wmean(terms.numpy(), w)


def _accuracy_terms(p: np.ndarray, q: np.ndarray | None) -> np.ndarray:
    return _pairwise_confidence(p, q)[1]


def preference_accuracy(probs: Any, targets: Any = None, weights: Any = None) -> float:
    """Share of pairs whose predicted winner is preferred; ties ``p = 0.5`` count 0.5.

    With soft targets ``q`` a pair contributes ``q`` when ``p > 0.5`` and ``1 − q`` when ``p < 0.5``
    (the expected accuracy against a random annotator).

    Examples
    --------
    >>> preference_accuracy([0.9, 0.5, 0.3])
    0.5
    """
    p, q, w = _prepare_targets(probs, targets, weights)
    return _wmean(_accuracy_terms(p, q), w)
