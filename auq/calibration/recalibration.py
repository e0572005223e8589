"""Post-hoc recalibration maps in scikit-learn style.

Five recalibrators learn a monotone map from a model's scores to calibrated probabilities of the
positive class on a held-out calibration set:

=========================  ====================================================  ================
class                      map                                                   default input
=========================  ====================================================  ================
:class:`TemperatureScaling`  ``σ(z / T)``, ``T > 0``                               logits/margins
:class:`PlattScaling`        ``σ(a·z + b)``                                        logits/margins
:class:`IsotonicCalibration` any non-decreasing step function (PAVA)               probabilities
:class:`HistogramBinning`    per-bin mean label                                    probabilities
:class:`BetaCalibration`     ``σ(a·ln p − b·ln(1 − p) + c)``, ``a, b ≥ 0``         probabilities
=========================  ====================================================  ================

Every class takes ``input="logit"`` (scores are margins/logits ``z``, e.g. ``r_chosen − r_rejected``)
or ``input="prob"`` (scores are probabilities ``p`` in [0, 1]). Where a formula needs ``ln p`` or
``logit p`` from a probability, ``p`` is clipped to ``[EPS, 1 − EPS]`` with ``EPS = 1e-12``; from a
logit the logs are computed in log-space (``ln p = logσ(z)``, ``ln(1 − p) = logσ(−z)``), exact and
finite for ``|z|`` up to 1e4 and beyond.

API (scikit-learn conventions): hyper-parameters are constructor arguments stored verbatim (so
``get_params``, ``set_params`` and :func:`sklearn.base.clone` work), ``fit(scores, labels,
sample_weight=None)`` returns ``self``, fitted attributes end with an underscore, and
``predict_proba`` before ``fit`` raises :class:`sklearn.exceptions.NotFittedError`.
Unlike a scikit-learn classifier, ``predict_proba(scores)`` returns a 1-D array ``[n]`` of
P(positive) (the auq convention), not an ``[n, 2]`` matrix; ``transform`` is the same map.
Computation is in float64. NumPy arrays, lists and pandas Series give NumPy arrays back; a torch
tensor gives a torch tensor back (same device, the input's floating dtype, not differentiable).

Preference data and ``symmetrize``
----------------------------------
Preference pairs come as (chosen, rejected), so every label is 1 and a binary calibrator fitted
on them learns "always say 1". A preference model must satisfy ``P(b ≻ a) = 1 − P(a ≻ b)``, i.e.
its calibration map must be antisymmetric: ``f(−z) = 1 − f(z)`` (``f(1 − p) = 1 − f(p)``). Two
equivalent remedies: randomise each pair's order with a fixed-seed coin (flip ``z`` and ``y``
together), or pass ``symmetrize=True``, which fits on the data plus every pair's mirror
``(−z, 1 − y)`` (``(1 − p, 1 − y)`` for probabilities), with the sample weights duplicated. What it
does to each family:

* **Temperature**: nothing. The NLL term of the mirror, ``ℓ(−z/T, 1 − y)``, equals ``ℓ(z/T, y)``,
  so the objective (and the fitted ``T``) is the same with or without mirroring, and fitting on
  all-ones labels *is* fitting on order-randomised pairs. The option exists for a uniform API.
  ``T → 0`` happens only when every margin has the sign of its label (a perfectly separated fit
  set), mirrored or not; ``T`` is then stopped at its lower bound with a logged warning.
* **Platt**: the mirrored objective is symmetric in ``b`` and convex, so ``b = 0`` is optimal;
  ``intercept_`` is fixed at exactly 0 and only the slope is fitted (temperature scaling whose
  slope may be negative).
* **Beta**: the mirrored objective is invariant under ``(a, b, c) → (b, a, −c)``, so the optimum
  has ``a = b`` and ``c = 0``: ``σ(a·(ln p − ln(1 − p))) = σ(a·logit p)``, temperature scaling on
  ``logit p``. It is fitted in that form.
* **Isotonic** and **histogram binning**: fitted on the mirrored data; the fitted map is then
  antisymmetric (isotonic: the PAVA solution is unique; histogram, uniform bins: bins pair up).

Without ``symmetrize``, Platt, isotonic, histogram and beta calibration refuse hard labels that
are all 0 or all 1 (no map can be learned from one class) with an error that points here.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> z = rng.normal(0.0, 3.0, 20_000)
>>> y = (rng.random(20_000) < 1 / (1 + np.exp(-z / 3))).astype(float)
>>> ts = TemperatureScaling().fit(z, y)
>>> round(ts.temperature_, 1)
3.0
>>> ts.predict_proba([0.0, 3.0]).round(3)
array([0.5  , 0.731])
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_expit

from auq._checks import (
    check_float,
    check_int,
)

from ._nonparametric import HistogramBinning, IsotonicCalibration
from ._recalibrator import (
    _LOG_T_BOUNDS,
    EPS,
    _fit_logistic,
    _logit_from_prob,
    _LogitRecalibrator,
    _softplus,
)

__all__ = [
    "EPS",
    "TemperatureScaling",
    "PlattScaling",
    "IsotonicCalibration",
    "HistogramBinning",
    "BetaCalibration",
]

logger = logging.getLogger(__name__)


# Temperature scaling
# ---------------------------------------------------------------------------------------------


class TemperatureScaling(_LogitRecalibrator):
    r"""Temperature scaling: ``p = σ(z / T)`` with one temperature ``T > 0`` (Guo et al. 2017).

    ``T`` minimises the (weighted) mean negative log-likelihood
    ``(1/Σw) Σ w_i [softplus(z_i/T) − y_i z_i/T]`` over ``log T`` with L-BFGS-B and the analytic
    gradient, in float64. As a function of ``β = 1/T`` the objective is convex, so the optimum is
    unique. The limits of its derivative are checked first: if every margin has the sign of its
    (hard) label the likelihood keeps growing as ``T → 0`` and if the scores are not positively
    related to the labels it grows as ``T → ∞``; ``T`` is then set to the end of its search range
    ``log T ∈ [-20, 20]`` with a logged warning. Otherwise the search starts at ``init`` and never
    ends above the NLL there (checked after the search). ``T > 1`` softens over-confident
    scores, ``T < 1`` sharpens.

    Parameters
    ----------
    init : float, default 1.0
        Starting temperature (> 0).
    max_iter : int, default 200
        Maximum L-BFGS iterations.
    symmetrize : bool, default True
        Fit on the data plus each pair's mirror ``(−z, 1 − y)``. For temperature scaling this
        provably leaves ``T`` unchanged (the mirror's NLL term equals the original's), so labels
        that are all 1 (preference pairs in (chosen, rejected) order) are fine either way; see the
        module docstring.
    input : {"logit", "prob"}, default "logit"
        Scores are logits/margins, or probabilities (turned into logits after clipping to
        ``[EPS, 1 − EPS]``).

    Attributes
    ----------
    temperature_ : float
        The fitted temperature.
    n_iter_ : int
        Optimiser iterations used.

    Examples
    --------
    >>> ts = TemperatureScaling().fit([2.0, -1.0, 3.0, -2.0, 1.0], [1, 0, 0, 0, 1])
    >>> round(ts.temperature_, 3)
    3.003
    >>> float(ts.predict_proba([0.0])[0])
    0.5
    """

    _needs_two_classes = False

    def __init__(
        self,
        init: float = 1.0,
        max_iter: int = 200,
        symmetrize: bool = True,
        input: str = "logit",
    ) -> None:
        self.init = init
        self.max_iter = max_iter
        self.symmetrize = symmetrize
        self.input = input

    def fit(self, scores: Any, labels: Any, sample_weight: Any = None) -> TemperatureScaling:
        """Fit the temperature on a calibration set.

        Parameters
        ----------
        scores : array-like, shape (n,)
            Logits/margins (or probabilities with ``input="prob"``).
        labels : array-like, shape (n,)
            Targets in [0, 1] (soft labels allowed).
        sample_weight : array-like, shape (n,), optional
            Non-negative weights.

        Returns
        -------
        TemperatureScaling
            ``self``.
        """
        init = check_float(self.init, "init", minimum=0.0, inclusive=(False, True))
        max_iter = check_int(self.max_iter, "max_iter", minimum=1)
        s, y, w = self._fit_data(scores, labels, sample_weight)
        z = self._as_logit(s)
        wn = w / w.sum()

        def fun(u: np.ndarray) -> tuple[float, np.ndarray]:
            beta = math.exp(-float(u[0]))
            x = beta * z
            f = float(np.dot(wn, _softplus(x) - y * x))
            dbeta = float(np.dot(wn, (expit(x) - y) * z))
            return f, np.array([-beta * dbeta])

        u0 = min(max(math.log(init), _LOG_T_BOUNDS[0]), _LOG_T_BOUNDS[1])
        # f is convex in beta = 1/T with derivative g(beta) = mean w (sigma(beta z) - y) z, strictly
        # increasing when some z != 0. Its limits decide whether the optimum is interior:
        # g(0+) >= 0 -> optimum at beta <= 0 (T -> inf); g(inf) <= 0 -> beta -> inf (T -> 0).
        informative = bool(np.any((z != 0) & (wn > 0)))
        g_zero = float(np.dot(wn, (0.5 - y) * z))
        g_inf = float(np.dot(wn, (np.sign(z) * 0.5 + 0.5 - y) * z))
        n_iter = 0
        if not informative:
            u = u0
        elif g_inf <= 0:
            u = _LOG_T_BOUNDS[0]
            logger.warning(
                "TemperatureScaling: every margin has the sign of its label (a separable fit "
                "set): the maximum-likelihood T is 0; T is set to its lower bound %.3g",
                math.exp(u),
            )
        elif g_zero >= 0:
            u = _LOG_T_BOUNDS[1]
            logger.warning(
                "TemperatureScaling: the scores are not positively related to the labels, the "
                "maximum-likelihood T is infinite; T is set to its upper bound %.3g (predictions "
                "~0.5). PlattScaling allows a negative slope",
                math.exp(u),
            )
        else:
            res = minimize(
                fun,
                np.array([u0]),
                jac=True,
                method="L-BFGS-B",
                bounds=[_LOG_T_BOUNDS],
                options={"maxiter": max_iter, "ftol": 1e-15, "gtol": 1e-12},
            )
            u = float(res.x[0])
            n_iter = int(res.nit)
            if fun(np.array([u]))[0] > fun(np.array([u0]))[0]:  # never worse than the start
                u = u0
        self.temperature_ = math.exp(u)
        self.n_iter_ = n_iter
        return self

    def _logits(self, s: np.ndarray) -> np.ndarray:
        return self._as_logit(s) / self.temperature_


# ---------------------------------------------------------------------------------------------
# Platt scaling
# ---------------------------------------------------------------------------------------------


class PlattScaling(_LogitRecalibrator):
    r"""Platt scaling: ``p = σ(a·z + b)`` fitted by maximum likelihood (Platt 1999).

    ``(a, b)`` minimise the weighted mean NLL (unpenalised logistic regression on the score, L-BFGS
    with the analytic gradient, float64). Unlike Platt's original recipe the hard targets are not
    smoothed to ``(N₊+1)/(N₊+2)``; pass soft labels if you want that. On perfectly separable data
    the likelihood has no maximum and ``a`` grows until the optimiser stops (a warning is logged).

    Parameters
    ----------
    max_iter : int, default 1000
        Maximum L-BFGS iterations.
    symmetrize : bool, default False
        Fit on the data plus mirrors ``(−z, 1 − y)``. The mirrored objective is convex and
        symmetric in ``b``, so ``b = 0`` is optimal: ``intercept_`` is fixed at exactly 0 and only
        ``a`` is fitted (use this for preference margins whose labels are all 1).
    input : {"logit", "prob"}, default "logit"
        Scores are logits/margins, or probabilities (turned into logits after clipping).

    Attributes
    ----------
    coef_ : float
        Slope ``a`` (``1/T`` in temperature terms; may be negative).
    intercept_ : float
        Offset ``b``.

    Examples
    --------
    >>> ps = PlattScaling().fit([-2.0, -1.0, 0.5, 1.0, 2.0, -0.5], [0, 1, 0, 1, 1, 0])
    >>> bool(ps.coef_ > 0)
    True
    """

    def __init__(
        self, max_iter: int = 1000, symmetrize: bool = False, input: str = "logit"
    ) -> None:
        self.max_iter = max_iter
        self.symmetrize = symmetrize
        self.input = input

    def fit(self, scores: Any, labels: Any, sample_weight: Any = None) -> PlattScaling:
        """Fit ``a`` and ``b`` (see :meth:`TemperatureScaling.fit` for the arguments).

        Returns
        -------
        PlattScaling
            ``self``.
        """
        max_iter = check_int(self.max_iter, "max_iter", minimum=1)
        s, y, w = self._fit_data(scores, labels, sample_weight)
        z = self._as_logit(s)
        coef, intercept = _fit_logistic(
            z[:, None],
            y,
            w,
            fit_intercept=not self.symmetrize,
            max_iter=max_iter,
            what="PlattScaling",
        )
        self.coef_ = float(coef[0])
        self.intercept_ = float(intercept)
        return self

    def _logits(self, s: np.ndarray) -> np.ndarray:
        return self.coef_ * self._as_logit(s) + self.intercept_


# ---------------------------------------------------------------------------------------------
# Beta calibration
# ---------------------------------------------------------------------------------------------


class BetaCalibration(_LogitRecalibrator):
    r"""Beta calibration (Kull, Silva Filho & Flach 2017), the three-parameter version.

    ``p' = σ(a·ln p − b·ln(1 − p) + c)``: logistic regression on the features
    ``[ln p, −ln(1 − p)]`` with coefficients ``a, b`` and intercept ``c``. The family contains the
    identity (``a = b = 1, c = 0``) and, with ``a = b``, temperature scaling on ``logit p``.
    The constraint ``a, b ≥ 0`` (a monotone map) is handled as in the paper: fit without it; if
    ``a < 0`` refit on ``−ln(1 − p)`` alone (``a = 0``); else if ``b < 0`` refit on ``ln p`` alone
    (``b = 0``). Should the remaining coefficient still be negative it is set to 0 too and only
    ``c`` is fitted (the base rate).

    With ``input="prob"`` the probabilities are clipped to ``[EPS, 1 − EPS]`` before the logs; with
    ``input="logit"`` ``ln p = logσ(z)`` and ``−ln(1 − p) = −logσ(−z)`` are computed in log-space.

    Parameters
    ----------
    max_iter : int, default 1000
        Maximum L-BFGS iterations per logistic fit.
    symmetrize : bool, default False
        Fit on the data plus mirrors; the optimum then has ``a = b`` and ``c = 0``, so the map is
        fitted directly as ``σ(a·logit p)`` (``a`` clipped at 0).
    input : {"prob", "logit"}, default "prob"

    Attributes
    ----------
    a_, b_, c_ : float
        The fitted parameters (``coef_ = [a_, b_]``, ``intercept_ = c_`` as well).

    Examples
    --------
    >>> bc = BetaCalibration().fit([0.1, 0.4, 0.35, 0.8, 0.9, 0.6], [0, 0, 1, 1, 1, 0])
    >>> bool(bc.a_ >= 0 and bc.b_ >= 0)
    True
    """

    def __init__(self, max_iter: int = 1000, symmetrize: bool = False, input: str = "prob") -> None:
        self.max_iter = max_iter
        self.symmetrize = symmetrize
        self.input = input

    def _features(self, s: np.ndarray) -> np.ndarray:
        if self.input == "prob":
            q = np.clip(s, EPS, 1.0 - EPS)
            return np.column_stack([np.log(q), -np.log1p(-q)])
        return np.column_stack([log_expit(s), -log_expit(-s)])

    def fit(self, scores: Any, labels: Any, sample_weight: Any = None) -> BetaCalibration:
        """Fit ``a, b, c`` (see :meth:`TemperatureScaling.fit` for the arguments).

        Returns
        -------
        BetaCalibration
            ``self``.
        """
        max_iter = check_int(self.max_iter, "max_iter", minimum=1)
        s, y, w = self._fit_data(scores, labels, sample_weight)
        X = self._features(s)
        what = "BetaCalibration"
        if self.symmetrize:
            # x1 + x2 = ln p - ln(1-p) = logit p; one slope, no intercept.
            coef, _ = _fit_logistic(
                X.sum(axis=1, keepdims=True),
                y,
                w,
                fit_intercept=False,
                max_iter=max_iter,
                what=what,
            )
            a = max(float(coef[0]), 0.0)
            a, b, c = a, a, 0.0
        else:
            coef, c = _fit_logistic(X, y, w, fit_intercept=True, max_iter=max_iter, what=what)
            a, b = float(coef[0]), float(coef[1])
            if a < 0 or b < 0:
                keep = 1 if a < 0 else 0  # the paper drops a first
                coef1, c = _fit_logistic(
                    X[:, [keep]], y, w, fit_intercept=True, max_iter=max_iter, what=what
                )
                v = float(coef1[0])
                if v < 0:
                    v = 0.0
                    yw = float(np.dot(w, y) / w.sum())
                    c = float(_logit_from_prob(np.array([yw]))[0])
                a, b = (0.0, v) if keep == 1 else (v, 0.0)
        self.a_, self.b_, self.c_ = float(a), float(b), float(c)
        self.coef_ = np.array([self.a_, self.b_])
        self.intercept_ = self.c_
        return self

    def _logits(self, s: np.ndarray) -> np.ndarray:
        X = self._features(s)
        return self.a_ * X[:, 0] + self.b_ * X[:, 1] + self.c_


# ---------------------------------------------------------------------------------------------
