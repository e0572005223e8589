"""Figures of :mod:`auq.conformal`: set coverage against α, and the certified selective rule."""

from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from auq._checks import as_float_array, check_labels, check_same_length
from auq.plots import _style
from auq.plots._inputs import field_array, get_field, has_fields
from auq.plots.selective import risk_coverage_plot

logger = logging.getLogger(__name__)

__all__ = ["conformal_coverage_plot", "guaranteed_risk_coverage_plot"]


def _title_and_legend(ax: Any, title: str | None, legend_loc: str | None) -> None:
    """An outside legend sits where a title would go: the title then heads the legend instead."""
    if title and legend_loc == "outside":
        leg = _style.place_legend(ax, legend_loc, title=title)
        leg.get_title().set_fontsize(plt.rcParams["axes.titlesize"])
        return
    if title:
        ax.set_title(title)
    _style.place_legend(ax, legend_loc)


def conformal_coverage_plot(
    curve_or_alpha: Any,
    coverage: Any = None,
    *,
    n_calibration: int | None = None,
    band: tuple[float, float] = (5.0, 95.0),
    title: str | None = None,
    legend_loc: str | None = "outside",
    ax: Any = None,
) -> Any:
    """Empirical coverage of conformal sets against the miscoverage level ``α``, with ``1 - α``.

    Parameters
    ----------
    curve_or_alpha : CoverageCurve or array-like
        A :class:`auq.conformal.CoverageCurve` (``alpha``, ``coverage``, ``n_calibration``), or
        the levels ``α`` with ``coverage`` given separately.
    coverage : array-like, shape [n_levels] or [n_splits, n_levels], optional
        Coverage per level; with several splits (rows) the mean is drawn with a percentile band.
    n_calibration : int, optional
        Calibration size; draws the upper bound ``1 - α + 1/(n+1)`` of split conformal (taken
        from the curve when it has one).
    band : (float, float), default (5, 95)
        Percentiles of the band over splits.
    title, legend_loc, ax
        As in :func:`auq.plots.risk_coverage_plot`.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> ax = conformal_coverage_plot([0.1, 0.2, 0.3], [0.91, 0.81, 0.72], n_calibration=100)
    >>> ax.get_xlabel()
    'miscoverage level α'
    """
    if has_fields(curve_or_alpha, ("alpha", "coverage")):
        alpha = field_array(curve_or_alpha, "alpha", "curve")
        cov = as_float_array(get_field(curve_or_alpha, "coverage"), "curve.coverage", ndim=(1, 2))
        if n_calibration is None:
            n_calibration = getattr(curve_or_alpha, "n_calibration", None)
    else:
        alpha = as_float_array(curve_or_alpha, "alpha", ndim=1)
        if coverage is None:
            raise TypeError("coverage is required when curve_or_alpha holds the levels")
        cov = as_float_array(coverage, "coverage", ndim=(1, 2))
    cov = cov.reshape(1, -1) if cov.ndim == 1 else cov
    if cov.shape[1] != alpha.shape[0]:
        raise ValueError(f"coverage must have {alpha.shape[0]} columns (one per level), got shape {cov.shape}")
    order = np.argsort(alpha)
    alpha, cov = alpha[order], cov[:, order]
    with _style.axes_or_new(ax, (_style.SINGLE_COLUMN, 2.8)) as ax:
        ax.plot(alpha, 1.0 - alpha, color=_style.REFERENCE_COLOR, linestyle="--", linewidth=1.2,
                label="target 1 − α", gid="target")
        if n_calibration:
            ax.plot(alpha, np.minimum(1.0, 1.0 - alpha + 1.0 / (n_calibration + 1)),
                    color=_style.REFERENCE_COLOR, linestyle=":", linewidth=1.0,
                    label=f"1 − α + 1/(n+1), n = {n_calibration}", gid="upper")
        mean = cov.mean(0)
        label = "empirical coverage" + (f" (mean of {cov.shape[0]} splits)" if cov.shape[0] > 1 else "")
        ax.plot(alpha, mean, color=_style.color(0), marker="o", label=label, gid="coverage", zorder=3)
        if cov.shape[0] > 1:
            lo, hi = np.percentile(cov, band, axis=0)
            ax.fill_between(alpha, lo, hi, color=_style.color(0), alpha=0.2, linewidth=0,
                            label=f"{band[0]:g}–{band[1]:g}th percentile", gid="band")
        ax.set_xlabel("miscoverage level α")
        ax.set_ylabel("coverage")
        pad = 0.02
        ax.set_xlim(float(alpha.min()) - pad, float(alpha.max()) + pad)
        _title_and_legend(ax, title, legend_loc)
        _style.apply_tick_style(ax)
    return ax


def guaranteed_risk_coverage_plot(
    scores: Any,
    correct: Any,
    result: Any,
    *,
    title: str | None = None,
    legend_loc: str | None = "outside",
    ax: Any = None,
) -> Any:
    """Risk–coverage curve of ``scores`` with the certified operating point of ``result`` marked.

    Parameters
    ----------
    scores, correct : array-like, shape [n]
        Uncertainty (lower = more confident) and correctness of the pairs to draw (test pairs, or
        the calibration pairs themselves).
    result : SelectiveResult
        From :func:`auq.conformal.selective_threshold` (``threshold``, ``alpha``, ``delta``,
        ``certified``). The point drawn is the coverage and error of *these* pairs at its threshold.
    title, legend_loc, ax
        As in :func:`auq.plots.risk_coverage_plot`.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> from auq.conformal import selective_threshold
    >>> s, c = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [1, 1, 1, 1, 0, 0]
    >>> ax = guaranteed_risk_coverage_plot(s, c, selective_threshold(s, c, alpha=0.5, starts=1))
    >>> ax.get_xlabel()
    'coverage'
    """
    s = as_float_array(scores, "scores", ndim=1)
    c = as_float_array(correct, "correct", ndim=1)
    check_labels(c, "correct")
    check_same_length(c, s, "correct", "scores")
    for f in ("threshold", "alpha", "delta", "certified"):
        if not hasattr(result, f):
            raise TypeError(f"result must be a SelectiveResult (from selective_threshold); it has no {f!r}")
    with _style.paper_style() if ax is None else nullcontext():
        ax = risk_coverage_plot(s, c, names=["model"], legend_loc=None, ax=ax)
        ax.axhline(result.alpha, color=_style.REFERENCE_COLOR, linestyle="--", linewidth=1.1,
                   label=f"target error α = {result.alpha:g}", gid="alpha")
        answered = s <= result.threshold
        if result.certified and answered.any():
            cov = float(answered.mean())
            risk = float(1.0 - c[answered].mean())
            ax.axvline(cov, color=_style.color(1), linestyle=":", linewidth=1.0, gid="coverage-line")
            ax.plot([cov], [risk], marker="*", markersize=11, color=_style.color(1), linestyle="none",
                    label=f"certified (1 − δ = {1 - result.delta:g}): coverage {cov:.2f}, error {risk:.2f}",
                    gid="operating-point", zorder=5)
        else:
            ax.text(0.5, 0.95, f"nothing certified at α = {result.alpha:g}, δ = {result.delta:g}",
                    transform=ax.transAxes, ha="center", va="top", gid="none-certified")
        lo, hi = ax.get_ylim()
        ax.set_ylim(min(lo, 0.0), max(hi, result.alpha * 1.1))
        _title_and_legend(ax, title, legend_loc)
        _style.apply_tick_style(ax)
    return ax
