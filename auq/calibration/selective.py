r"""Selective prediction: risk–coverage curves, AURC / E-AURC and AUROC of uncertainty scores.

A selective predictor answers only where its uncertainty is low. Sorting the items by uncertainty
(most confident first) and accepting the most confident fraction ``c`` of them (the *coverage*)
gives a *selective risk* ``R(c)``: the mean error among the accepted items. The risk–coverage curve
plots ``R`` against ``c``; a good uncertainty score keeps ``R`` low at low coverage.

Conventions (all computed in float64):

* ``uncertainty``: higher means *less* confident. Pass ``-confidence`` (or ``1 - confidence``) for a
  confidence score, e.g. ``1 - max(p, 1 - p)`` or the total uncertainty of a decomposition.
* ``correct``: 1 for a right prediction, 0 for a wrong one; soft values in [0, 1] (e.g. the vote
  fraction that agrees with the prediction) are expected correctness. The error of an item is
  ``1 - correct``.
* ``weights``: optional non-negative per-item weights; coverage is then the accepted weight
  fraction and the risk a weighted mean.

Ties. Items with equal uncertainty cannot be told apart by the score, so they are accepted
together: the curve has one point per distinct uncertainty value, and within a tied group the
accepted error grows linearly with coverage (the group enters "in proportion"). With equal weights
this is the expectation over uniformly random tie-breaking, and nothing depends on the order in
which tied items are listed.

AURC (area under the risk–coverage curve, Geifman et al. 2019). With ``E(c)`` the accepted error
mass (as a fraction of the total weight) when coverage ``c`` is accepted, piecewise linear in
``c`` as above,

.. math::

    \mathrm{AURC} = \int_0^1 R(c)\,dc = \int_0^1 \frac{E(c)}{c}\,dc,

evaluated exactly segment by segment: on a segment ``[C_0, C_1]`` where the error rate of the
entering items is ``e`` and ``E(C_0) = E_0``,
``∫ E/c dc = (E_0 - e·C_0)·ln(C_1/C_0) + e·(C_1 - C_0)`` (and ``e·C_1`` on the first segment).
Some code bases use the discrete mean ``(1/n) Σ_k R(k/n)`` instead; for ``n`` untied, unweighted
items the two differ by at most ``ln(n)/n``. The exact integral is what makes the oracle below
reproduce Geifman et al.'s closed form.

E-AURC ("excess" AURC): ``AURC - AURC*`` where ``AURC*`` is the AURC of the same errors in the
best possible order (ascending error, i.e. every right prediction first). It removes the part of
AURC that is due to the base error rate and is >= 0, with equality for a perfect ordering. For hard
labels with error rate ``r``, ``AURC* = r + (1 - r)·ln(1 - r)`` exactly (Geifman et al. 2019).

AUROC. :func:`error_detection_auroc` and :func:`ood_auroc` share one implementation: the
Mann–Whitney statistic with ties counted one half (midranks), with tie groups from
:func:`scipy.stats.rankdata` and weighted counts, so that soft labels and weights fit in:
``AUROC = Σ_{i,j} w⁺_i w⁻_j ([s_i > s_j] + ½[s_i = s_j]) / (Σ w⁺ Σ w⁻)``. With hard labels and no
weights it equals :func:`sklearn.metrics.roc_auc_score`.

Examples
--------
>>> rc = risk_coverage_curve([0.1, 0.4, 0.2, 0.9, 0.5], [1, 0, 1, 1, 0])
>>> rc.coverage
array([0.2, 0.4, 0.6, 0.8, 1. ])
>>> rc.risk.round(4)
array([0.    , 0.    , 0.3333, 0.5   , 0.4   ])
>>> round(rc.aurc, 6)
0.211999
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

from auq._checks import as_float_array, check_labels, check_same_shape, check_weights

__all__ = [
    "RiskCoverage",
    "risk_coverage_curve",
    "aurc",
    "eaurc",
    "error_detection_auroc",
    "ood_auroc",
]


@dataclass(frozen=True)
class RiskCoverage:
    """A risk–coverage curve: one point per distinct uncertainty threshold.

    Attributes
    ----------
    coverage : numpy.ndarray
        Fraction (of the total weight) accepted when every item with ``uncertainty <= threshold``
        is accepted; increasing, ends at 1.
    risk : numpy.ndarray
        Mean error (``1 - correct``) among the accepted items.
    threshold : numpy.ndarray
        The distinct uncertainty values, ascending.
    aurc : float
        Area under the curve (see the module docstring for the exact definition).
    """

    coverage: np.ndarray
    risk: np.ndarray
    threshold: np.ndarray
    aurc: float

    def to_pandas(self) -> Any:
        """The curve as a DataFrame (columns ``coverage``, ``risk``, ``threshold``; AURC in ``attrs``)."""
        import pandas as pd

        df = pd.DataFrame(
            {"coverage": self.coverage, "risk": self.risk, "threshold": self.threshold}
        )
        df.attrs["aurc"] = self.aurc
        return df


def _validate(
    uncertainty: Any, correct: Any, weights: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    u = as_float_array(uncertainty, "uncertainty", ndim=1)
    c = as_float_array(correct, "correct", ndim=1)
    check_same_shape(u, c, "uncertainty", "correct")
    check_labels(c, "correct")
    w = check_weights(weights, "weights", u.shape[0])
    return u, c, (np.ones_like(u) if w is None else w)


def _curve(u: np.ndarray, err: np.ndarray, w: np.ndarray) -> RiskCoverage:
    """Grouped risk–coverage curve and its exact area (inputs validated, float64)."""
    thresholds, inv = np.unique(u, return_inverse=True)
    wg = np.bincount(inv, weights=w, minlength=thresholds.size)
    eg = np.bincount(inv, weights=w * err, minlength=thresholds.size)
    keep = wg > 0  # a group of zero weight adds no coverage and no point
    thresholds, wg, eg = thresholds[keep], wg[keep], eg[keep]
    total = wg.sum()
    cov = np.cumsum(wg) / total
    cov[-1] = 1.0
    cum_err = np.cumsum(eg) / total
    risk = cum_err / cov
    # exact integral of E(c)/c, E linear on each segment with slope = the group's error rate
    rate = eg / wg
    c0 = np.concatenate([[0.0], cov[:-1]])
    e0 = np.concatenate([[0.0], cum_err[:-1]])
    dc = cov - c0
    with np.errstate(divide="ignore", invalid="ignore"):
        log_term = np.where(c0 > 0, np.log1p(dc / np.where(c0 > 0, c0, 1.0)), 0.0)
    area = float(np.sum((e0 - rate * c0) * log_term + rate * dc))
    return RiskCoverage(coverage=cov, risk=risk, threshold=thresholds, aurc=area)


def risk_coverage_curve(uncertainty: Any, correct: Any, weights: Any = None) -> RiskCoverage:
    """Selective risk at every coverage, accepting the least uncertain items first.

    Parameters
    ----------
    uncertainty : array-like, shape (n,)
        Higher = less confident (negate a confidence score).
    correct : array-like, shape (n,)
        Correctness in [0, 1] (soft allowed); the error is ``1 - correct``.
    weights : array-like, shape (n,), optional
        Non-negative per-item weights.

    Returns
    -------
    RiskCoverage
        ``coverage``, ``risk``, ``threshold`` (one entry per distinct uncertainty value) and
        ``aurc``.

    Examples
    --------
    >>> rc = risk_coverage_curve([0.3, 0.1, 0.3], [0, 1, 1])
    >>> rc.coverage.round(3), rc.risk.round(3)
    (array([0.333, 1.   ]), array([0.   , 0.333]))
    """
    u, c, w = _validate(uncertainty, correct, weights)
    return _curve(u, 1.0 - c, w)


def aurc(uncertainty: Any, correct: Any, weights: Any = None) -> float:
    r"""Area under the risk–coverage curve, ``∫₀¹ R(c) dc`` (exact; see the module docstring).

    Lower is better; it mixes the quality of the ranking with the overall error rate (use
    :func:`eaurc` to separate them).

    Examples
    --------
    >>> round(aurc([0.1, 0.2, 0.3, 0.4], [1, 1, 0, 0]), 6)  # perfect order, r = 0.5
    0.153426
    """
    return risk_coverage_curve(uncertainty, correct, weights).aurc


def eaurc(uncertainty: Any, correct: Any, weights: Any = None) -> float:
    r"""Excess AURC: ``AURC − AURC*``, ``AURC*`` the AURC of the optimal order (Geifman et al. 2019).

    The optimal order accepts items by ascending error (it minimises the accepted error at every
    coverage at once); for hard labels with error rate ``r``,
    ``AURC* = r + (1 − r)·ln(1 − r)``. E-AURC is >= 0 and 0 for a perfect ranking.

    Examples
    --------
    >>> eaurc([0.1, 0.2, 0.3, 0.4], [1, 1, 0, 0])
    0.0
    """
    u, c, w = _validate(uncertainty, correct, weights)
    err = 1.0 - c
    return _curve(u, err, w).aurc - _curve(err, err, w).aurc


def _auroc(scores: np.ndarray, pos_w: np.ndarray, neg_w: np.ndarray, what: str) -> float:
    """Weighted Mann–Whitney AUROC (ties count ½): P(score of a positive > score of a negative)."""
    groups = rankdata(scores, method="dense").astype(np.int64) - 1
    k = int(groups.max()) + 1
    pos = np.bincount(groups, weights=pos_w, minlength=k)
    neg = np.bincount(groups, weights=neg_w, minlength=k)
    p_tot, n_tot = pos.sum(), neg.sum()
    if not (p_tot > 0 and n_tot > 0):
        raise ValueError(what)
    neg_below = np.cumsum(neg) - neg
    return float(np.dot(pos, neg_below + 0.5 * neg) / (p_tot * n_tot))


def error_detection_auroc(uncertainty: Any, correct: Any, weights: Any = None) -> float:
    """AUROC of ``uncertainty`` for telling wrong predictions from right ones.

    The probability that a wrong prediction has a higher uncertainty than a right one (ties count
    one half): 1 = the uncertainty separates errors perfectly, 0.5 = no better than chance. With a
    soft ``correct`` each item counts as wrong with weight ``1 − correct`` and right with weight
    ``correct``. For hard labels it equals ``sklearn.metrics.roc_auc_score(1 - correct, uncertainty)``.

    Parameters
    ----------
    uncertainty : array-like, shape (n,)
    correct : array-like, shape (n,)
        In [0, 1]; needs at least some wrong and some right mass.
    weights : array-like, shape (n,), optional

    Returns
    -------
    float

    Examples
    --------
    >>> error_detection_auroc([0.9, 0.1, 0.5, 0.2], [0, 1, 0, 1])
    1.0
    """
    u, c, w = _validate(uncertainty, correct, weights)
    return _auroc(
        u,
        w * (1.0 - c),
        w * c,
        "correct must contain both right and wrong predictions (with positive weight) for the "
        "error-detection AUROC to be defined",
    )


def ood_auroc(scores_in: Any, scores_out: Any) -> float:
    """AUROC for separating out-of-distribution items by a higher score.

    The probability that an out-of-distribution item scores higher than an in-distribution one
    (ties count one half); equals ``roc_auc_score([0]*n_in + [1]*n_out, [*scores_in, *scores_out])``.

    Parameters
    ----------
    scores_in : array-like, shape (n_in,)
        Scores (e.g. uncertainties) of in-distribution items.
    scores_out : array-like, shape (n_out,)
        Scores of out-of-distribution items.

    Returns
    -------
    float

    Examples
    --------
    >>> ood_auroc([0.1, 0.2, 0.3], [0.25, 0.9])
    0.8333333333333334
    """
    s_in = as_float_array(scores_in, "scores_in", ndim=1)
    s_out = as_float_array(scores_out, "scores_out", ndim=1)
    scores = np.concatenate([s_in, s_out])
    is_out = np.concatenate([np.zeros(s_in.size), np.ones(s_out.size)])
    return _auroc(scores, is_out, 1.0 - is_out, "scores_in and scores_out must both be non-empty")
