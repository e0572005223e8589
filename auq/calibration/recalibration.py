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
from sklearn.base import BaseEstimator
from sklearn.isotonic import IsotonicRegression
from sklearn.utils.validation import check_is_fitted

from auq._checks import (
    as_float_array,
    check_choice,
    check_float,
    check_int,
    check_labels,
    check_probabilities,
    check_same_shape,
    check_weights,
    is_tensor,
)

from . import _binning

__all__ = [
    "EPS",
    "TemperatureScaling",
    "PlattScaling",
    "IsotonicCalibration",
    "HistogramBinning",
    "BetaCalibration",
]

logger = logging.getLogger(__name__)

#: Probabilities are clipped to ``[EPS, 1 - EPS]`` wherever a log or a logit of them is taken.
EPS = 1e-12

_INPUTS = ("logit", "prob")
# Temperature search range (log T in [-20, 20]: T from 2e-9 to 5e8).
_LOG_T_BOUNDS = (-20.0, 20.0)


# ---------------------------------------------------------------------------------------------
# Numerics shared by the parametric fits (float64, log-space)
# ---------------------------------------------------------------------------------------------


def _softplus(x: np.ndarray) -> np.ndarray:
    """``log(1 + e^x)`` without overflow (``= −logσ(−x)``)."""
    return np.logaddexp(0.0, x)


def _logistic_nll(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """Weighted mean NLL of labels ``y`` under logits ``x``: ``Σ w·(softplus(x) − y·x) / Σ w``."""
    return float(np.dot(w, _softplus(x) - y * x) / w.sum())


def _logit_from_prob(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, EPS, 1.0 - EPS)
    return np.log(q) - np.log1p(-q)


def _fit_logistic(
    X: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    *,
    fit_intercept: bool,
    max_iter: int,
    what: str,
) -> tuple[np.ndarray, float]:
    """Unpenalised weighted logistic regression by L-BFGS with the analytic gradient.

    Columns are standardised for conditioning (centred too when an intercept is fitted) and the
    coefficients mapped back. Returns ``(coef, intercept)``.
    """
    n, d = X.shape
    mean = X.mean(axis=0) if fit_intercept else np.zeros(d)
    scale = np.sqrt(((X - mean) ** 2).mean(axis=0))
    scale[~(scale > 0)] = 1.0
    Xs = (X - mean) / scale
    wn = w / w.sum()

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        coef = theta[:d]
        b = theta[d] if fit_intercept else 0.0
        x = Xs @ coef + b
        f = float(np.dot(wn, _softplus(x) - y * x))
        r = wn * (expit(x) - y)
        g = Xs.T @ r
        if fit_intercept:
            g = np.append(g, r.sum())
        return f, g

    theta0 = np.zeros(d + int(fit_intercept))
    res = minimize(
        fun,
        theta0,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "ftol": 1e-15, "gtol": 1e-10},
    )
    if not res.success:
        logger.warning("%s: optimiser stopped early (%s)", what, res.message)
    coef_s = res.x[:d]
    coef = coef_s / scale
    intercept = (float(res.x[d]) if fit_intercept else 0.0) - float(np.dot(coef, mean))
    return coef, intercept


# ---------------------------------------------------------------------------------------------
# Base class
# ---------------------------------------------------------------------------------------------


class _Recalibrator(BaseEstimator):
    """Shared validation, mirroring and output handling (not public)."""

    # subclasses set these
    input: str
    symmetrize: bool
    _needs_two_classes = True

    # -- input handling ------------------------------------------------------------------------
    def _check_input_option(self) -> str:
        return check_choice(self.input, "input", _INPUTS)

    def _scores(self, scores: Any, name: str = "scores") -> np.ndarray:
        mode = self._check_input_option()
        s = as_float_array(scores, name, ndim=1)
        if mode == "prob":
            check_probabilities(s, name)
        return s

    def _fit_data(
        self, scores: Any, labels: Any, sample_weight: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Validate the fit arguments; return float64 ``(scores, labels, weights)``, mirrored if asked."""
        s = self._scores(scores, "scores")
        y = as_float_array(labels, "labels", ndim=1)
        check_labels(y, "labels")
        check_same_shape(s, y, "scores", "labels")
        w = check_weights(sample_weight, "sample_weight", s.shape[0])
        w = np.ones_like(s) if w is None else w
        if not isinstance(self.symmetrize, (bool, np.bool_)):
            raise TypeError(f"symmetrize must be a bool, got {type(self.symmetrize).__name__}")
        if self.symmetrize:
            mirror = (1.0 - s) if self.input == "prob" else -s
            s = np.concatenate([s, mirror])
            y = np.concatenate([y, 1.0 - y])
            w = np.concatenate([w, w])
        elif self._needs_two_classes:
            pos = w > 0
            yy = y[pos]
            if np.all(yy == yy[0]) and yy[0] in (0.0, 1.0):
                raise ValueError(
                    f"labels are all {int(yy[0])}: {type(self).__name__} cannot learn a calibration "
                    "map from one class. For preference pairs (every label 1) pass "
                    "symmetrize=True, or randomise each pair's order (flip the score and the "
                    "label together)"
                )
        return s, y, w

    @staticmethod
    def _output(result: np.ndarray, like: Any) -> Any:
        if is_tensor(like):
            import torch

            dtype = like.dtype if like.is_floating_point() else torch.float32
            return torch.as_tensor(result, dtype=dtype, device=like.device)
        return result

    # -- public API ----------------------------------------------------------------------------
    def predict_proba(self, scores: Any) -> Any:
        """Calibrated probability of the positive class for each score.

        Parameters
        ----------
        scores : array-like or torch.Tensor, shape (n,)
            Logits/margins (``input="logit"``) or probabilities (``input="prob"``).

        Returns
        -------
        numpy.ndarray or torch.Tensor, shape (n,)
            Probabilities in [0, 1] (a tensor for tensor input).
        """
        check_is_fitted(self)
        s = self._scores(scores, "scores")
        return self._output(self._predict(s), scores)

    def transform(self, scores: Any) -> Any:
        """Alias of :meth:`predict_proba` (the recalibrator as a transformer)."""
        return self.predict_proba(scores)

    def _predict(self, s: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class _LogitRecalibrator(_Recalibrator):
    """A recalibrator whose output is ``σ(g(score))`` with a finite logit ``g``."""

    def _logits(self, s: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _predict(self, s: np.ndarray) -> np.ndarray:
        return expit(self._logits(s))

    def predict_logits(self, scores: Any) -> Any:
        """Calibrated logits (log-odds of the positive class), finite for finite scores.

        Returns
        -------
        numpy.ndarray or torch.Tensor, shape (n,)
        """
        check_is_fitted(self)
        s = self._scores(scores, "scores")
        return self._output(self._logits(s), scores)

    def _as_logit(self, s: np.ndarray) -> np.ndarray:
        return _logit_from_prob(s) if self.input == "prob" else s


# ---------------------------------------------------------------------------------------------
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
