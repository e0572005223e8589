"""Seeded, vectorised bootstrap confidence intervals for any metric.

Resamples are drawn as index matrices ``idx[r, i]`` (uniform over items, with replacement) from a
``numpy.random.Generator`` seeded with ``seed``, in blocks of resamples. Resample r is the data
with frequency weights ``c_r = bincount(idx[r])`` (multinomial(n, 1/n) counts): the bootstrap *as
weights*. For the metrics of this package whose value with frequency weights equals their value on
the resampled data (equal-width binned ECE / pairwise ECE, Brier, NLL, preference accuracy), all
resamples of a block are evaluated in one vectorised pass: per-item bin indices and residuals are
computed once, then one ``np.bincount`` over ``(resample, bin)`` keys gives every resample's per-bin
sums. Any other callable (quantile bins, smooth or debiased ECE, user functions) is evaluated once
per resample on ``[a[idx[r]] for a in arrays]``; both paths see the same resamples, so they agree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from auq import _checks

from . import _binning, _inputs, metrics, scores

logger = logging.getLogger(__name__)

__all__ = ["ConfidenceInterval", "bootstrap_ci", "METHODS", "DEFAULT_METHOD"]

#: Maximum number of resampled items held at once (resamples per block x n).
_BLOCK_ITEMS = 1 << 22
#: Interval methods of :func:`bootstrap_ci`.
METHODS = ("percentile", "basic", "bca")
#: The default interval method.
DEFAULT_METHOD = "bca"
#: Above this many items the BCa acceleration uses a delete-a-group jackknife with this many groups.
_MAX_JACKKNIFE = 2000


@dataclass(frozen=True)
class ConfidenceInterval:
    """A point estimate with a bootstrap confidence interval.

    Attributes
    ----------
    estimate : float
        The metric on the full data.
    low, high : float
        Interval bounds.
    confidence : float
        Nominal coverage, e.g. 0.95.
    method : str
        ``"percentile"``, ``"basic"`` or ``"bca"``.
    n_resamples : int
    distribution : numpy.ndarray or None
        The metric on every resample (the bootstrap distribution), in the order drawn.
    """

    estimate: float
    low: float
    high: float
    confidence: float
    method: str = "percentile"
    n_resamples: int = 0
    distribution: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def contains_estimate(self) -> bool:
        """Whether ``low <= estimate <= high``."""
        return bool(self.low <= self.estimate <= self.high)

    def to_pandas(self):
        """Return a one-row :class:`pandas.DataFrame` (without the distribution)."""
        import pandas as pd

        return pd.DataFrame([{k: v for k, v in self.__dict__.items() if k != "distribution"}])


def _binned_batch(conf, correct, w, n_bins, norm):
    """Vectorised ECE over resamples for equal-width bins (conf/correct already transformed)."""
    k = _binning.bin_indices(conf, n_bins)
    resid = conf - correct
    ww = np.ones_like(conf) if w is None else w
    rw = resid * ww

    def batch(idx: np.ndarray) -> np.ndarray:
        r = idx.shape[0]
        keys = (k[idx] + n_bins * np.arange(r)[:, None]).ravel()
        sres = np.bincount(keys, weights=rw[idx].ravel(), minlength=r * n_bins).reshape(r, n_bins)
        swt = np.bincount(keys, weights=ww[idx].ravel(), minlength=r * n_bins).reshape(r, n_bins)
        total = swt.sum(axis=1)
        if norm == "l1":
            return np.abs(sres).sum(axis=1) / total
        safe = np.where(swt > 0, swt, 1.0)
        gap = sres / safe
        if norm == "l2":
            return np.sqrt((swt * gap * gap).sum(axis=1) / total)
        return np.abs(gap).max(axis=1)

    return batch


def _mean_batch(terms, w):
    ww = np.ones_like(terms) if w is None else w
    tw = terms * ww

    def batch(idx: np.ndarray) -> np.ndarray:
        return tw[idx].sum(axis=1) / ww[idx].sum(axis=1)

    return batch


def _vectorised(metric: Callable, arrays: tuple, kwargs: dict) -> Callable | None:
    """A function idx -> values for the package's weight-consistent metrics, else None."""
    w = kwargs.get("weights")
    if w is not None:
        w = np.asarray(w, dtype=np.float64)
    if metric in (metrics.expected_calibration_error, metrics.pairwise_calibration_error):
        n_bins = kwargs.get("n_bins", 15)
        if kwargs.get("strategy", "uniform") != "uniform":
            return None
        norm = kwargs.get("norm", "l1")
        if metric is metrics.expected_calibration_error:
            p, y, w = _inputs._prepare(arrays[0], arrays[1], w)
            return _binned_batch(p, y, w, n_bins, norm)
        p, q, w = _inputs._prepare_targets(arrays[0], arrays[1] if len(arrays) > 1 else None, w)
        conf, correct = _inputs._pairwise_confidence(p, q)
        return _binned_batch(conf, correct, w, n_bins, norm)
    if metric is scores.brier_score:
        p, y, w = _inputs._prepare(arrays[0], arrays[1], w)
        return _mean_batch((p - y) ** 2, w)
    if metric is scores.negative_log_likelihood:
        p, y, w = _inputs._prepare(arrays[0], arrays[1], w)
        return _mean_batch(scores._nll_terms(p, y, kwargs.get("eps", scores._EPS)), w)
    if metric is scores.preference_accuracy:
        p, q, w = _inputs._prepare_targets(arrays[0], arrays[1] if len(arrays) > 1 else None, w)
        return _mean_batch(scores._accuracy_terms(p, q), w)
    return None


def _jackknife(metric, arrays_np, kwargs, batch, w_np, n: int, seed: int) -> np.ndarray:
    """Leave-one-out values of the metric (delete-a-group when ``n > _MAX_JACKKNIFE``)."""
    if n <= _MAX_JACKKNIFE:
        groups = [np.array([i]) for i in range(n)]
    else:  # seeded random groups of (nearly) equal size
        perm = np.random.default_rng([seed, 1]).permutation(n)
        groups = np.array_split(perm, _MAX_JACKKNIFE)
    keeps = [np.setdiff1d(np.arange(n), g, assume_unique=True) for g in groups]
    out = np.empty(len(keeps))
    if batch is not None:
        by_len: dict[int, list[int]] = {}
        for j, k in enumerate(keeps):
            by_len.setdefault(len(k), []).append(j)
        for length, rows in by_len.items():
            step = max(1, _BLOCK_ITEMS // max(length, 1))
            for s0 in range(0, len(rows), step):
                part = rows[s0 : s0 + step]
                out[part] = batch(np.stack([keeps[j] for j in part]))
        return out
    for j, keep in enumerate(keeps):
        kw = dict(kwargs)
        if w_np is not None:
            kw["weights"] = w_np[keep]
        out[j] = metric(*[a[keep] for a in arrays_np], **kw)
    return out


def _bca_levels(values: np.ndarray, estimate: float, jack: np.ndarray, alpha: float) -> tuple[float, float]:
    """BCa quantile levels (Efron & Tibshirani 1993, 14.3): bias ``z0`` from the share of resamples
    below the estimate (ties count half), acceleration ``a`` from the jackknife."""
    from scipy.special import ndtr, ndtri

    share = (np.count_nonzero(values < estimate) + np.count_nonzero(values <= estimate)) / (2 * len(values))
    z0 = float(ndtri(share))
    u = jack.mean() - jack  # (n-1) factors cancel in a
    den = float(np.sum(u**2))
    a = float(np.sum(u**3) / (6.0 * den**1.5)) if den > 0 else 0.0
    levels = []
    for z in (float(ndtri(alpha)), float(ndtri(1 - alpha))):
        num = z0 + z
        levels.append(float(ndtr(z0 + num / (1 - a * num))))
    return levels[0], levels[1]


def bootstrap_ci(
    metric: Callable[..., float],
    *arrays: Any,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    method: str = DEFAULT_METHOD,
    vectorised: bool = True,
    **kwargs: Any,
) -> ConfidenceInterval:
    """Bootstrap confidence interval of ``metric(*arrays, **kwargs)``.

    Items (rows of every array, and ``weights=`` if given) are resampled together.

    Parameters
    ----------
    metric : callable
        Returns a float, e.g. :func:`~auq.calibration.expected_calibration_error`.
    *arrays : array-like
        Per-item arrays of equal length (e.g. ``probs, labels``).
    n_resamples : int, default 1000
    confidence : float, default 0.95
        In (0, 1).
    seed : int, default 0
        Seed of the ``numpy.random.Generator``; equal seeds give equal intervals.
    method : {"percentile", "basic", "bca"}, default "bca"
        ``"percentile"``: the ``α/2`` and ``1 − α/2`` quantiles of the resampled values.
        ``"basic"``: the reverse-percentile interval ``[2θ̂ − q_hi, 2θ̂ − q_lo]``.
        ``"bca"``: bias-corrected and accelerated (Efron 1987): quantile levels moved by the bias
        ``z0 = Φ⁻¹(share of resamples below θ̂)`` (ties count half) and the jackknife acceleration
        (leave-one-out; delete-a-group with 2000 random groups above 2000 items; vectorised like
        the resamples). Second-order accurate for smooth statistics (means, NLL, Brier).

        None of the three contains its estimate whenever fewer than ``α/2`` of the resamples fall
        on one side of it: all three contain θ̂ only if ``|z0| < z_{1−α/2}`` (for BCa up to the
        acceleration term). This happens to statistics biased upwards by finite-sample noise, such
        as the binned ECE of a nearly calibrated model on a few hundred items: the resamples are
        noisier than the data and lie mostly above θ̂, the percentile interval lies above θ̂, the
        basic interval (mirrored) below it, and BCa collapses to a sliver of the lowest resamples
        (measured on 200 draws of 100 calibrated pairs, 20 bins: the percentile interval excluded
        the estimate 28 times, BCa 23 times, basic 28 times). The interval then says that
        the estimate is dominated by its noise, not where the calibration error lies; check
        :attr:`ConfidenceInterval.contains_estimate`. The default is BCa: where the bias is
        moderate it moves the interval back over the estimate (e.g. 2.6% of the resamples below
        θ̂: the percentile interval lies above θ̂, BCa contains it), it is the most accurate of the
        three for smooth statistics, and where it is undefined it falls back to the percentile
        interval and says so in ``method``.
    vectorised : bool, default True
        Use the one-pass weighted evaluation where the metric supports it (same result).
    **kwargs
        Passed to ``metric``; ``weights`` is resampled with the items.

    Returns
    -------
    ConfidenceInterval
        With ``method`` (``"percentile"`` where BCa was asked for but is undefined because every
        resample lies on one side of the estimate) and the bootstrap ``distribution``.

    Examples
    --------
    >>> from auq.calibration import expected_calibration_error
    >>> rng = np.random.default_rng(0); p = rng.uniform(size=500); y = rng.uniform(size=500) < p**2
    >>> ci = bootstrap_ci(expected_calibration_error, p, y, n_resamples=200)
    >>> ci.method, bool(ci.low < ci.estimate < ci.high)
    ('bca', True)
    """
    if not callable(metric):
        raise TypeError(f"metric must be callable, got {type(metric).__name__}")
    if not arrays:
        raise ValueError("arrays is empty: pass at least one per-item array")
    n_resamples = _checks.check_int(n_resamples, "n_resamples", minimum=1)
    confidence = _checks.check_float(
        confidence, "confidence", minimum=0.0, maximum=1.0, inclusive=(False, False)
    )
    seed = _checks.check_int(seed, "seed", minimum=0)
    _checks.check_choice(method, "method", METHODS)
    arrays_np = [
        _checks.as_float_array(a, f"arrays[{i}]", finite=False) for i, a in enumerate(arrays)
    ]
    n = arrays_np[0].shape[0]
    for i, a in enumerate(arrays_np[1:], start=1):
        _checks.check_same_length(arrays_np[0], a, "arrays[0]", f"arrays[{i}]")
    weights = kwargs.get("weights")
    w_np = None if weights is None else _checks.check_weights(weights, "weights", n)
    for key, value in kwargs.items():
        # only positional arrays and weights= are resampled; a per-item keyword array (e.g.
        # targets=) would stay fixed while the items move, silently pairing the wrong rows
        if key != "weights" and not isinstance(value, str) and np.ndim(value) == 1 and len(value) == n:
            raise ValueError(
                f"{key} looks like a per-item array (length {n}) passed as a keyword; pass it "
                "positionally after the other arrays so that it is resampled with the items "
                "(only weights= is resampled as a keyword)"
            )

    estimate = float(metric(*arrays, **kwargs))
    batch = _vectorised(metric, tuple(arrays_np), kwargs) if vectorised else None

    rng = np.random.default_rng(seed)
    block = max(1, min(n_resamples, _BLOCK_ITEMS // max(n, 1)))
    values = np.empty(n_resamples)
    done = 0
    while done < n_resamples:
        r = min(block, n_resamples - done)
        idx = rng.integers(0, n, size=(r, n))
        if w_np is not None and not (w_np[idx].sum(axis=1) > 0).all():
            raise ValueError(
                "weights: a bootstrap resample drew only items of zero weight, where the metric "
                "is undefined; too few items have a positive weight for a bootstrap"
            )
        if batch is not None:
            values[done : done + r] = batch(idx)
        else:
            for j in range(r):
                kw = dict(kwargs)
                if w_np is not None:
                    kw["weights"] = w_np[idx[j]]
                values[done + j] = metric(*[a[idx[j]] for a in arrays_np], **kw)
        done += r
    alpha = 1.0 - confidence
    levels = (alpha / 2, 1 - alpha / 2)
    if method == "bca":
        jack = _jackknife(metric, arrays_np, kwargs, batch, w_np, n, seed)
        levels = _bca_levels(values, estimate, jack, alpha / 2)
        if not all(np.isfinite(levels)):
            logger.warning(
                "BCa interval undefined (every resample on one side of the estimate); "
                "using the percentile interval"
            )
            levels = (alpha / 2, 1 - alpha / 2)
            method = "percentile"
    q_lo, q_hi = np.quantile(values, levels)
    if method == "basic":
        q_lo, q_hi = 2 * estimate - q_hi, 2 * estimate - q_lo
    logger.debug("bootstrap of %s: %d resamples, vectorised=%s", metric, n_resamples, batch is not None)
    return ConfidenceInterval(
        estimate=estimate,
        low=float(q_lo),
        high=float(q_hi),
        confidence=confidence,
        method=method,
        n_resamples=n_resamples,
        distribution=values,
    )
