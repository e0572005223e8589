r"""Selective preference prediction with a guaranteed error rate (Learn then Test).

A selective predictor answers a pair only when its uncertainty score is at most a threshold
``λ`` and abstains otherwise. :func:`selective_threshold` picks ``λ`` on a calibration set so that
the error rate among the answered pairs, ``R(λ) = P(wrong | score <= λ)``, is at most ``α`` with
probability at least ``1 - δ`` over the draw of the calibration set: Learn then Test
(Angelopoulos, Bates, Candès, Jordan and Lei, 2021) with fixed-sequence testing.

The procedure, exactly:

1. Candidate thresholds ``λ_1 < λ_2 < ...`` from most to least confident: the distinct calibration
   scores (default), or a grid you fix in advance (``thresholds=``).
2. For each ``λ_j`` the null hypothesis ``H_j: R(λ_j) > α`` gets a p-value from the
   ``n_j`` answered calibration pairs and their ``k_j`` errors. Given ``n_j`` the answered pairs are
   an i.i.d. sample of pairs with ``score <= λ_j``, so ``k_j ~ Binomial(n_j, R(λ_j))`` and

   .. math:: p_j = P\big(\mathrm{Binomial}(n_j, α) \le k_j\big)

   (``method="binomial"``, exact; scipy's binomial CDF) is a valid p-value. For soft errors in
   [0, 1] use ``method="hoeffding_bentkus"``: ``p_j = min(exp(-n_j h(min(\hat R_j, α), α)),
   e·P(Binomial(n_j, α) <= ceil(n_j \hat R_j)))`` with ``h(a, b) = a log(a/b) + (1-a) log((1-a)/(1-b))``
   (Bates et al. 2021), valid for any loss bounded in [0, 1].
3. Fixed-sequence testing: walk the sequence from the most confident threshold and reject ``H_j``
   while ``p_j <= δ``; stop at the first ``p_j > δ``. The chosen ``λ̂`` is the last rejected
   threshold. Since the walk stops at the first failure, the family-wise error rate is at most
   ``δ``: ``P(R(λ̂) > α) <= δ``.
4. Several starts (``starts = m``, default 3): one walk stops for good when the few most confident
   pairs happen to hold errors, which with a weak model is the common case. So ``m`` walks run at
   level ``δ/m`` each (Bonferroni), walk ``j`` starting at the first threshold that answers
   ``j·n/m`` calibration pairs, and every threshold that some walk rejects is certified; ``λ̂`` is
   the largest. The union bound keeps the family-wise error at ``δ``. ``starts=1`` is plain
   fixed-sequence testing.

The walks start no earlier than the first threshold that answers ``n_min`` calibration pairs,
where ``n_min`` is the smallest ``n`` with ``P(Binomial(n, α) <= 0) = (1-α)^n <= δ/m``, i.e.
``n_min = ceil(log(δ/m) / log(1 - α))``: with fewer answered pairs even zero errors cannot reject
``H_j``. A calibration set with fewer than ``n_min`` pairs cannot certify anything and raises a
``ValueError`` that says how many are needed. When no walk rejects its first threshold, nothing is
certified: ``λ̂ = -inf`` (answer nothing, coverage 0), ``certified`` is False and a warning is
logged.

What is exact and what is not. The p-values, the fixed-sequence walk and the Bonferroni split over
chains are the finite-sample Learn-then-Test construction, exact for candidate thresholds *and*
walk starts fixed before seeing the calibration data. Here the start positions (and, by default,
the candidates: every distinct calibration score) are chosen from the calibration *scores* (never
their labels), so at a chosen index the error count is a sum of binomials with different risks
rather than one ``Bin(n, R(λ))``: the guarantee is then approximate, as in the usual practice.
``thresholds=`` fixes the candidates; ``benchmarks/conformal_validity.py`` measures the violation
rate on real pairs for both (at most 10.0 ± 2.1% of 200 splits at δ = 0.1).

Measured (``benchmarks/conformal_validity.py``: all 1,734 bundled hh-rlhf pairs, MiniLM features,
a Laplace last layer, every pair scored by a 5-fold cross-fitted model, 200 random half/half
calibration/test splits, ``δ = 0.1``, ``total`` uncertainty as the score): the share of splits
whose test error among answered pairs exceeds ``α`` stayed at or below ``δ`` (+ Monte-Carlo error)
for every ``α`` in 0.2-0.45 and both ``starts=1`` and ``starts=3`` (at most 0.095 ± 0.021), while
the uncorrected plug-in threshold missed ``α`` in 52-67% of the splits for ``α <= 0.4``. The price
is coverage: this reward model is right on 56% of held-out pairs and on at most ~65% of its most
confident ones, so ``α <= 0.4`` is rarely certifiable (coverage <= 2%); at ``α = 0.45`` three starts
answer 41% of the test pairs (accuracy 0.600 against 0.563 for abstaining at random), one start 2%.
A grid of 200 thresholds on [0, log 2] fixed in advance (the exact setting) gives the same picture:
violation rates at most 0.100 ± 0.021, coverage 36% at ``α = 0.45`` with three starts.

Examples
--------
>>> res = selective_threshold([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [1, 1, 1, 1, 0, 0], alpha=0.5, delta=0.1, starts=1)
>>> res.threshold, res.n_answered, res.certified
(0.4, 4, True)
>>> res.decide([0.05, 0.45]).tolist()
[True, False]
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import binom

from auq._checks import as_float_array, check_choice, check_int, check_labels

from ._common import check_level, pair_correctness, pair_scores

logger = logging.getLogger(__name__)

__all__ = ["SelectiveResult", "selective_threshold", "ConformalSelector", "min_calibration_size", "ltt_p_values"]

_METHODS = ("binomial", "hoeffding_bentkus")


def min_calibration_size(alpha: float, delta: float) -> int:
    """Smallest ``n`` with ``(1 - α)^n <= δ``: fewer answered pairs can never certify error ``<= α``.

    ``(1 - α)^n`` is the binomial p-value of ``n`` answered pairs with zero errors, the smallest
    p-value ``n`` pairs can give; so ``n_min = ceil(log δ / log(1 - α))``.

    Examples
    --------
    >>> min_calibration_size(0.4, 0.1), min_calibration_size(0.2, 0.1), min_calibration_size(0.1, 0.05)
    (5, 11, 29)
    """
    alpha = check_level(alpha, "alpha")
    delta = check_level(delta, "delta")
    n = max(1, math.ceil(math.log(delta) / math.log1p(-alpha)))
    while (1.0 - alpha) ** n > delta:  # guard the floating-point ceil both ways
        n += 1
    while n > 1 and (1.0 - alpha) ** (n - 1) <= delta:
        n -= 1
    return n


def ltt_p_values(n_answered: Any, n_errors: Any, alpha: float, method: str = "binomial") -> np.ndarray:
    """p-values of ``H: R > α`` from ``n`` answered pairs with ``k`` errors (see the module docstring).

    ``n_errors`` may be fractional (a sum of soft errors) for ``method="hoeffding_bentkus"``.

    Examples
    --------
    >>> ltt_p_values([5, 10], [0, 2], 0.4).round(6)  # 0.6**5; P(Bin(10, 0.4) <= 2)
    array([0.07776, 0.16729])
    """
    alpha = check_level(alpha, "alpha")
    check_choice(method, "method", _METHODS)
    n = np.asarray(n_answered, dtype=np.float64)
    k = np.asarray(n_errors, dtype=np.float64)
    out = np.ones_like(n)
    ok = n > 0
    if method == "binomial":
        out[ok] = binom.cdf(np.round(k[ok]), n[ok], alpha)
        return out
    r = np.minimum(k[ok] / n[ok], alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.where(r > 0, r * np.log(r / alpha), 0.0) + np.where(
            r < 1, (1 - r) * np.log((1 - r) / (1 - alpha)), 0.0
        )
    hoeffding = np.exp(-n[ok] * h)
    bentkus = math.e * binom.cdf(np.ceil(k[ok] - 1e-9), n[ok], alpha)
    out[ok] = np.minimum(np.minimum(hoeffding, bentkus), 1.0)
    return out


@dataclass(frozen=True)
class SelectiveResult:
    """The certified abstention rule of :func:`selective_threshold`.

    Attributes
    ----------
    threshold : float
        ``λ̂``: answer a pair when its score is ``<= threshold``; ``-inf`` when nothing is certified.
    alpha, delta : float
        Target error rate and the allowed probability of missing it.
    certified : bool
        Whether any threshold passed (False: answer nothing).
    coverage : float
        Fraction of the calibration pairs answered at ``λ̂`` (the expected coverage on new pairs).
    risk : float
        Error rate among the answered calibration pairs (NaN when none is answered).
    n_calibration, n_answered, n_errors : int, int, float
    n_min : int
        Answered pairs needed before any threshold can pass (:func:`min_calibration_size`).
    decisions : numpy.ndarray of bool
        Per calibration pair: True = answer, False = abstain.
    thresholds, p_values : numpy.ndarray
        The candidate thresholds from the first one answering ``n_min`` pairs on, most confident
        first, and their p-values.
    rejected : numpy.ndarray of bool
        Which candidates the fixed-sequence walk(s) certified (a p-value below the level *and*
        reached by a walk; a later small p-value after a failure is not certified).
    starts : int
        Number of fixed-sequence chains (see :func:`selective_threshold`).
    method : str
    message : str
        One line saying what was certified, or why nothing was.
    """

    threshold: float
    alpha: float
    delta: float
    certified: bool
    coverage: float
    risk: float
    n_calibration: int
    n_answered: int
    n_errors: float
    n_min: int
    decisions: np.ndarray = field(repr=False)
    thresholds: np.ndarray = field(repr=False)
    p_values: np.ndarray = field(repr=False)
    rejected: np.ndarray = field(repr=False)
    starts: int = 3
    method: str = "binomial"
    message: str = ""

    def decide(self, scores: Any) -> np.ndarray:
        """True (answer) where ``score <= threshold``, False (abstain) elsewhere."""
        s = as_float_array(scores, "scores", ndim=1)
        return s <= self.threshold


def _errors(correct: Any, n: int, method: str) -> np.ndarray:
    c = as_float_array(correct, "correct", ndim=1)
    check_labels(c, "correct")
    if c.shape[0] != n:
        raise ValueError(f"scores and correct must have the same length, got {n} and {c.shape[0]}")
    if method == "binomial" and not np.all((c == 0) | (c == 1)):
        raise ValueError(
            "correct must be 0 or 1 for method='binomial' (an exact binomial test counts errors); "
            "use method='hoeffding_bentkus' for soft correctness"
        )
    return 1.0 - c


def selective_threshold(
    scores: Any,
    correct: Any,
    alpha: float,
    delta: float = 0.1,
    *,
    method: str = "binomial",
    thresholds: Any = None,
    starts: int = 3,
) -> SelectiveResult:
    """Abstention threshold with error ``<= alpha`` among answered pairs, w.p. ``>= 1 - delta``.

    Parameters
    ----------
    scores : array-like, shape [n]
        Any uncertainty score of the calibration pairs; lower = more confident (e.g.
        ``Decomposition.total``; pass ``-confidence`` for a confidence).
    correct : array-like, shape [n]
        1 where the model's preferred side is right, 0 where wrong (:func:`pair_correctness`);
        soft values need ``method="hoeffding_bentkus"``.
    alpha : float in (0, 1)
        Target error rate among the answered pairs.
    delta : float in (0, 1), default 0.1
        Allowed probability that the certified rule misses ``alpha``.
    method : {"binomial", "hoeffding_bentkus"}
        p-value of each threshold (see the module docstring).
    thresholds : array-like, optional
        Candidate thresholds fixed in advance (for the exact guarantee); default: every distinct
        calibration score.
    starts : int, default 3
        Number of fixed-sequence chains, each at level ``delta / starts`` (Bonferroni): chain
        ``j`` starts at the first threshold answering ``max(n_min, j·n/starts)`` calibration pairs
        (``j = 0 .. starts-1``), and the certified thresholds are the union of what the chains
        reject. One chain stops for good when the few most confident pairs happen to hold errors;
        several chains restart further on, at the price of a stricter level each.

    Returns
    -------
    SelectiveResult

    Examples
    --------
    >>> r = selective_threshold([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [1, 1, 1, 1, 0, 0], alpha=0.5, starts=1)
    >>> r.coverage, round(r.risk, 3), r.p_values.round(4).tolist(), r.rejected.tolist()
    (0.6666666666666666, 0.0, [0.0625, 0.1875, 0.3438], [True, False, False])
    """
    alpha = check_level(alpha, "alpha")
    delta = check_level(delta, "delta")
    check_choice(method, "method", _METHODS)
    starts = check_int(starts, "starts", minimum=1)
    s = as_float_array(scores, "scores", ndim=1)
    n = s.shape[0]
    err = _errors(correct, n, method)
    level = delta / starts  # each chain's level (Bonferroni over the chains)
    n_min = min_calibration_size(alpha, level)
    if n < n_min:
        per = "" if starts == 1 else f" (delta/starts = {level:g} per chain with starts={starts})"
        raise ValueError(
            f"the calibration set has {n} pairs, too few for alpha={alpha:g}, delta={delta:g}{per}: at least "
            f"{n_min} are needed (the smallest n with (1 - alpha)^n <= {level:g}, "
            f"n >= log({level:g}) / log(1 - alpha) = {math.log(level) / math.log1p(-alpha):.2f}), and more "
            "to answer anything once errors occur"
        )
    if thresholds is None:
        grid = np.unique(s)
    else:
        grid = np.unique(as_float_array(thresholds, "thresholds", ndim=1))
    order = np.argsort(s, kind="stable")
    s_sorted, cum_err = s[order], np.concatenate([[0.0], np.cumsum(err[order])])
    n_ans = np.searchsorted(s_sorted, grid, side="right")  # answered at each threshold
    k_ans = cum_err[n_ans]
    first = int(np.searchsorted(n_ans, n_min, side="left"))  # first threshold answering n_min pairs
    grid, n_ans, k_ans = grid[first:], n_ans[first:], k_ans[first:]
    p = ltt_p_values(n_ans, k_ans, alpha, method)
    rejected = np.zeros(p.shape[0], dtype=bool)
    # chain j starts at the first threshold answering >= max(n_min, j·n/starts) pairs
    heads = sorted({int(np.searchsorted(n_ans, max(n_min, math.ceil(j * n / starts)), side="left"))
                    for j in range(starts)})
    for h in heads:
        for i in range(h, p.shape[0]):
            if p[i] > level:
                break
            rejected[i] = True
    if not rejected.any():
        lam, m, k = -math.inf, 0, 0.0
        msg = (
            f"nothing certified at alpha={alpha:g}, delta={delta:g}: every fixed-sequence chain failed "
            f"at its first threshold (answering {', '.join(str(int(n_ans[h])) for h in heads if h < len(p))}"
            f" of {n} calibration pairs: p-value above {level:g}); the rule answers no pair"
        )
        logger.warning(msg)
    else:
        last = int(np.flatnonzero(rejected)[-1])
        lam, m, k = float(grid[last]), int(n_ans[last]), float(k_ans[last])
        msg = (
            f"certified: answer score <= {lam:.6g}: {m}/{n} calibration pairs "
            f"({m / n:.1%}) with {k:g} errors; error <= {alpha:g} with probability >= {1 - delta:g}"
        )
    return SelectiveResult(
        threshold=lam, alpha=alpha, delta=delta, certified=bool(rejected.any()), coverage=m / n,
        risk=k / m if m else math.nan, n_calibration=n, n_answered=m, n_errors=k, n_min=n_min,
        decisions=s <= lam, thresholds=grid, p_values=p, rejected=rejected, starts=starts,
        method=method, message=msg,
    )


class ConformalSelector:
    """scikit-learn style wrapper of :func:`selective_threshold`.

    Parameters
    ----------
    alpha : float in (0, 1)
    delta : float in (0, 1), default 0.1
    method : {"binomial", "hoeffding_bentkus"}
    thresholds : array-like, optional
        A grid fixed in advance (see :func:`selective_threshold`).
    starts : int, default 3
        Fixed-sequence chains (see :func:`selective_threshold`).

    Examples
    --------
    >>> sel = ConformalSelector(alpha=0.5, starts=1).fit([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [1, 1, 1, 1, 0, 0])
    >>> sel.predict([0.05, 0.45]).tolist(), sel.threshold_
    ([True, False], 0.4)
    >>> sel = ConformalSelector(alpha=0.3).fit_predictions(preds, score="total")  # doctest: +SKIP
    """

    def __init__(
        self, alpha: float, delta: float = 0.1, *, method: str = "binomial", thresholds: Any = None, starts: int = 3
    ):
        self.alpha = check_level(alpha, "alpha")
        self.delta = check_level(delta, "delta")
        self.method = check_choice(method, "method", _METHODS)
        self.thresholds = thresholds
        self.starts = check_int(starts, "starts", minimum=1)
        self.result_: SelectiveResult | None = None
        self.score_: str | None = None

    def fit(self, scores: Any, correct: Any) -> ConformalSelector:
        """Certify a threshold on calibration ``scores`` and ``correct``; returns ``self``."""
        self.score_ = None  # raw scores: which Predictions column they were is unknown
        self.result_ = selective_threshold(
            scores, correct, self.alpha, self.delta, method=self.method, thresholds=self.thresholds,
            starts=self.starts,
        )
        return self

    def fit_predictions(self, predictions: Any, score: str = "total") -> ConformalSelector:
        """:meth:`fit` on scored calibration pairs (:class:`~auq.models.Predictions`)."""
        s, prob, targets = pair_scores(predictions, score)
        self.fit(s, pair_correctness(prob, targets))
        self.score_ = score
        return self

    def _fitted(self) -> SelectiveResult:
        if self.result_ is None:
            raise RuntimeError("ConformalSelector is not fitted: call fit(scores, correct) first")
        return self.result_

    @property
    def threshold_(self) -> float:
        return self._fitted().threshold

    def predict(self, scores: Any) -> np.ndarray:
        """Per pair: True = answer, False = abstain."""
        return self._fitted().decide(scores)

    decide = predict

    def predict_predictions(self, predictions: Any) -> np.ndarray:
        """:meth:`predict` on scored pairs, with the score used in :meth:`fit_predictions`."""
        self._fitted()
        if self.score_ is None:
            raise RuntimeError(
                "predict_predictions: the selector was fitted on raw scores (fit), so which column "
                "to read is unknown; fit it with fit_predictions(predictions, score=...) or call predict(scores)"
            )
        s, _, _ = pair_scores(predictions, self.score_)
        return self.predict(s)
