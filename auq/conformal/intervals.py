r"""Conformal intervals for per-response rewards from an ensemble's member rewards.

Preference data never reveal a response's reward, so these intervals need a *reference reward*
on a calibration set: a gold reward model (the over-optimisation harness, synthetic data with a
known reward), a larger judge, or human scores. Given the members' mean ``μ`` and spread ``σ``
for each calibration response and its reference ``y``, the nonconformity is normalised by the
members' disagreement (Lei et al. 2018, "locally weighted" split conformal):

.. math:: s_i = |y_i - μ_i| / \max(σ_i, σ_{floor}),\qquad \hat q = s_{(\lceil (n+1)(1-α) \rceil)},

and a new response gets ``[μ - q̂·σ, μ + q̂·σ]`` (``σ`` floored the same way), which holds its
reference reward with probability ``>= 1 - α`` whatever the members' quality.

Why normalised scores and not conformalised quantile regression (CQR, Romano et al. 2019). CQR
conformalises two quantile regressors trained with the pinball loss; an auq ensemble has no such
heads, and the empirical quantiles of its ``K`` members (5 for heads ensembles) are crude: the
5%/95% quantiles of 5 values are their minimum and maximum. The normalised score uses the members
for what they give, a centre and a spread, costs one scalar fit, and keeps intervals narrower
where the members agree. Its width is only as adaptive as ``σ`` is informative: with members
that disagree at random the intervals are valid but no better than a constant width.

Scale. Bradley-Terry rewards are identified only up to a constant per member (and the reference
reward has its own scale); calibrate on anchored rewards (``Predictions.anchored``) and a reference
on the scale you want the intervals in, or standardise both first. ``σ`` is the member standard
deviation with ``ddof=1`` (``ddof=0`` for one member, where ``σ = 0`` and the floor sets a constant
width).

Examples
--------
>>> members = [[1.0, 1.2], [0.0, 0.4], [2.0, 2.2], [1.0, 1.4], [0.5, 0.5]]
>>> ri = RewardIntervals(alpha=0.34, std_floor=0.1).fit(members, [1.2, 0.5, 2.5, 1.0, 0.6])
>>> round(ri.quantile_, 4)  # scores 0.7071, 1.0607, 2.8284, 0.7071, 1.0; k = ceil(6 * 0.66) = 4
1.0607
>>> lo, hi = ri.predict([[0.0, 0.2]])
>>> round(float(lo[0]), 4), round(float(hi[0]), 4)
(-0.05, 0.25)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from auq._checks import as_float_array, check_float

from ._common import check_level, conformal_quantile

__all__ = ["RewardIntervals", "member_mean_std"]


def member_mean_std(rewards: Any, name: str = "rewards") -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (``ddof=1``; 0 for one member) over members of ``[n, K]`` rewards."""
    r = as_float_array(rewards, name, ndim=(1, 2))
    r = r.reshape(-1, 1) if r.ndim == 1 else r
    std = r.std(axis=1, ddof=1) if r.shape[1] > 1 else np.zeros(r.shape[0])
    return r.mean(axis=1), std


class RewardIntervals:
    """Split-conformal intervals ``μ ± q̂·σ`` for response rewards (see the module docstring).

    Parameters
    ----------
    alpha : float in (0, 1)
        Miscoverage: an interval holds the reference reward with probability ``>= 1 - alpha``.
    std_floor : float, default 1e-6
        Lower bound on ``σ`` (members that agree exactly would otherwise give zero-width
        intervals and infinite scores). Fixed in advance, not fitted, so validity is kept.

    Attributes
    ----------
    quantile_ : float
        ``q̂`` in units of ``σ`` (``inf`` with too few calibration responses for ``alpha``).
    """

    def __init__(self, alpha: float, *, std_floor: float = 1e-6):
        self.alpha = check_level(alpha, "alpha")
        self.std_floor = check_float(std_floor, "std_floor", minimum=0.0, inclusive=(False, True))
        self.quantile_: float | None = None

    def _mean_scale(self, rewards: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
        mu, sd = member_mean_std(rewards, name)
        return mu, np.maximum(sd, self.std_floor)

    def fit(self, rewards: Any, targets: Any) -> RewardIntervals:
        """Calibrate on member rewards ``[n, K]`` of calibration responses and their reference rewards ``[n]``."""
        mu, sd = self._mean_scale(rewards, "rewards")
        y = as_float_array(targets, "targets", ndim=1)
        if y.shape[0] != mu.shape[0]:
            raise ValueError(f"rewards and targets must have the same length, got {mu.shape[0]} and {y.shape[0]}")
        self.quantile_ = conformal_quantile(np.abs(y - mu) / sd, self.alpha)
        return self

    def predict(self, rewards: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(lower, upper)`` for new responses' member rewards ``[m, K]``."""
        if self.quantile_ is None:
            raise RuntimeError("RewardIntervals is not fitted: call fit(rewards, targets) first")
        mu, sd = self._mean_scale(rewards, "rewards")
        half = self.quantile_ * sd
        return mu - half, mu + half
