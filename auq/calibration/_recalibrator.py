"""Shared base of the recalibrators: input checks, mirroring, output types, log-space logistic fits.

Not public: the estimators live in :mod:`auq.calibration.recalibration`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from auq._checks import (
    as_float_array,
    check_choice,
    check_labels,
    check_probabilities,
    check_same_shape,
    check_weights,
    is_tensor,
)

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
    """Log-odds of probabilities clipped to ``[EPS, 1 - EPS]`` (a rounded p of exactly 0 or 1)."""
    q = np.clip(p, EPS, 1.0 - EPS)
    return np.log(q) - np.log1p(-q)


def mirror_pairs(
    scores: np.ndarray, labels: np.ndarray, weights: np.ndarray, input: str = "prob"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair in both orders: scores ``s`` then their mirror (``1 - s`` for probabilities, ``-s``
    for logits), labels ``y`` then ``1 - y``, the weights repeated."""
    mirror = (1.0 - scores) if input == "prob" else -scores
    return np.concatenate([scores, mirror]), np.concatenate([labels, 1.0 - labels]), np.concatenate([weights, weights])


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
            s, y, w = mirror_pairs(s, y, w, self.input)
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
