"""Reliability diagrams with per-bin counts and ECE (with a bootstrap interval) in the legend."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import matplotlib
import matplotlib.colors
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

from auq._checks import (
    as_float_array,
    check_choice,
    check_float,
    check_int,
    check_labels,
    check_probabilities,
    check_same_length,
)
from auq.plots import _style
from auq.plots._inputs import (
    entry_names,
    input_items,
    is_table,
    nonempty_bins,
    table_arrays,
)

logger = logging.getLogger(__name__)

__all__ = ["reliability_diagram", "ece_from_table"]


@dataclass(frozen=True)
class _Entry:
    name: str | None
    table: dict[str, np.ndarray]
    ece: float
    ci: tuple[float, float] | None


def ece_from_table(table: Any) -> float:
    """ECE (L1) of a reliability table: the weight-averaged ``|observed - confidence|`` per bin.

    Parameters
    ----------
    table : ReliabilityTable-like
        Anything with fields ``bin_lower, bin_upper, count, mean_confidence,
        observed_frequency`` and optionally ``weight`` (used instead of ``count`` when present).

    Returns
    -------
    float
        Equal to :func:`auq.calibration.expected_calibration_error` on the data the table came
        from (same bins, ``norm="l1"``).

    Examples
    --------
    >>> t = {"bin_lower": [0.0, 0.5], "bin_upper": [0.5, 1.0], "count": [1, 3],
    ...      "mean_confidence": [0.2, 0.8], "observed_frequency": [0.0, 1.0]}
    >>> round(ece_from_table(t), 3)
    0.2
    """
    if callable(getattr(table, "ece", None)):  # auq.calibration.ReliabilityTable
        return float(table.ece())
    arrays = table_arrays(table, "table")
    keep = nonempty_bins(arrays)
    w = arrays["weight"][keep]
    if not w.sum() > 0:
        raise ValueError("table has no non-empty bin; ECE is undefined")
    gap = np.abs(arrays["observed_frequency"][keep] - arrays["mean_confidence"][keep])
    return float(np.sum(w * gap) / np.sum(w))


def _calibration() -> Any:
    import auq.calibration as cal  # plots draw from calibration results (layering: plots -> calibration)

    return cal


def _from_arrays(
    probs: Any,
    labels: Any,
    weights: Any,
    name: str,
    *,
    pairwise: bool,
    n_bins: int,
    strategy: str,
    ece_ci: bool,
    n_resamples: int,
    confidence: float,
    seed: int,
) -> tuple[Any, float, tuple[float, float] | None]:
    """Reliability table, ECE and optional bootstrap interval from raw probabilities."""
    p = as_float_array(probs, name, ndim=1)
    check_probabilities(p, name)
    label_name = "labels" if name == "probs_or_tables" else f"labels for {name}"
    if labels is None:
        if not pairwise:
            raise TypeError(
                f"{label_name} is required for probabilities (pairwise=False); pass the 0/1 or "
                "soft labels, or pairwise=True for preference probabilities P(chosen preferred)"
            )
        y = None
    else:
        y = as_float_array(labels, label_name, ndim=1)
        check_labels(y, label_name)
        check_same_length(y, p, label_name, name)
    w = None
    if weights is not None:
        w = as_float_array(weights, "weights", ndim=1)
        check_same_length(w, p, "weights", name)
    cal = _calibration()
    table_fn = cal.pairwise_reliability_table if pairwise else cal.reliability_table
    error_fn = cal.pairwise_calibration_error if pairwise else cal.expected_calibration_error
    table = table_fn(p, y, n_bins=n_bins, strategy=strategy, weights=w)
    ece = float(error_fn(p, y, n_bins=n_bins, strategy=strategy, weights=w))
    ci = None
    if ece_ci:
        # the metric itself (not a wrapper) so that bootstrap_ci can use its vectorised path
        arrays = [p] if y is None else [p, y]
        res = cal.bootstrap_ci(
            error_fn,
            *arrays,
            n_resamples=n_resamples,
            confidence=confidence,
            seed=seed,
            n_bins=n_bins,
            strategy=strategy,
            weights=w,
        )
        ci = (float(res.low), float(res.high))
    return table, ece, ci


def _entries(
    probs_or_tables: Any,
    labels: Any,
    names: Sequence[str] | None,
    weights: Any,
    *,
    ece_ci: bool,
    **kw: Any,
) -> list[_Entry]:
    """Normalise every accepted input form into a list of named tables with their ECE."""
    arg = "probs_or_tables"
    keys, items = input_items(probs_or_tables, labels, arg, "labels", is_table)
    if isinstance(labels, Mapping) and keys is None:
        raise TypeError("labels may be a mapping only when probs_or_tables is a mapping")
    entry_labels = entry_names(keys, len(items), names, "model")
    out = []
    for (err_name, obj, lab, _), name in zip(items, entry_labels):
        if is_table(obj):
            if ece_ci:
                raise ValueError(
                    f"ece_ci=True needs raw probabilities and labels to resample, but {err_name} "
                    "is a reliability table; pass the probabilities instead"
                )
            arrays = table_arrays(obj, err_name)
            if not nonempty_bins(arrays).any():
                raise ValueError(f"{err_name} has no non-empty bin to draw")
            out.append(_Entry(name, arrays, ece_from_table(obj), None))
        else:
            table, ece, ci = _from_arrays(obj, lab, weights, err_name, ece_ci=ece_ci, **kw)
            out.append(_Entry(name, table_arrays(table, err_name), ece, ci))
    return out


def _legend_label(entry: _Entry) -> str:
    ece = f"ECE {entry.ece:.3f}"
    if entry.ci is not None:
        ece += f" [{entry.ci[0]:.3f}, {entry.ci[1]:.3f}]"
    return ece if entry.name is None else f"{entry.name}: {ece}"


def reliability_diagram(
    probs_or_tables: Any,
    labels: Any = None,
    *,
    n_bins: int = 15,
    strategy: str = "uniform",
    pairwise: bool = False,
    names: Sequence[str] | None = None,
    weights: Any = None,
    kind: str | None = None,
    show_counts: bool = True,
    show_gap: bool | None = None,
    ece_ci: bool = False,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    count_scale: str = "linear",
    xlabel: str | None = None,
    ylabel: str | None = None,
    title: str | None = None,
    legend_loc: str | None = "outside",
    ax: Any = None,
) -> Any:
    """Reliability diagram: observed frequency against confidence per bin, with ECE.

    Bars (or a line) show each bin's observed frequency at its confidence; the gap to the
    diagonal is shaded; a histogram of the per-bin counts sits beneath on a shared x axis; the
    legend gives each model's ECE (with a bootstrap interval when ``ece_ci=True``). Several
    models or calibrators are overlaid when given as a mapping ``name -> probs`` or a list of
    tables (for example before/after temperature scaling).

    Parameters
    ----------
    probs_or_tables : array-like, ReliabilityTable, list of ReliabilityTable, or mapping
        Either predicted probabilities ``[n]`` (with ``labels``), a reliability table from
        :func:`auq.calibration.reliability_table` (or anything with its fields), a list of
        tables, or a mapping ``name -> probs | (probs, labels) | table``.
    labels : array-like or mapping, optional
        Labels in [0, 1] (soft allowed) for raw probabilities; a mapping ``name -> labels`` when
        the models were scored on different data. With ``pairwise=True`` they are the
        preference targets (default 1: chosen preferred).
    n_bins, strategy : int, {"uniform", "quantile"}
        Binning used for raw probabilities (ignored for tables).
    pairwise : bool, default False
        Treat raw probabilities as preference probabilities ``P(chosen preferred)`` and draw the
        order-free diagram (confidence ``max(p, 1 - p)``, through
        :func:`auq.calibration.pairwise_reliability_table` and
        :func:`auq.calibration.pairwise_calibration_error`); the x axis then spans [0.5, 1].
        Set it too when passing tables made by ``pairwise_reliability_table``. Its bins cover
        [0, 1] like the metric's, so an even ``n_bins`` puts a bin edge at 0.5.
    names : sequence of str, optional
        Legend names (default: the mapping keys, or "model 1", "model 2", ...).
    weights : array-like, optional
        Per-item weights for raw probabilities (one array shared by all models).
    kind : {"bar", "line"}, optional
        Bars spanning each bin, or a line through ``(mean confidence, observed frequency)``.
        Default: bars for one model, lines for several.
    show_counts : bool, default True
        Draw the per-bin count histogram beneath (then a :class:`~matplotlib.figure.Figure`
        is returned).
    show_gap : bool, optional
        Shade the gap between observed frequency and mean confidence in each bin. Default: on
        for one model, off for several (overlapping shades hide each other).
    ece_ci : bool, default False
        Add a bootstrap interval to each ECE (needs raw probabilities; uses
        :func:`auq.calibration.bootstrap_ci` with ``n_resamples``, ``confidence``, ``seed``).
    count_scale : {"linear", "log"}
        Scale of the count axis.
    xlabel, ylabel, title : str, optional
        Override the default axis labels / add a title.
    legend_loc : str or None, default "outside"
        ``"outside"`` puts the legend above the diagram, where it covers no data; any
        matplotlib location (``"upper left"``, ...) puts it inside; ``None`` draws none.
    ax : matplotlib.axes.Axes, optional
        Axes to draw in; created (with :func:`auq.plots.paper_style`) when ``None``. With
        ``show_counts=True`` the count axes is appended beneath it.

    Returns
    -------
    matplotlib.figure.Figure or matplotlib.axes.Axes
        The Figure when ``show_counts`` (``fig.axes[0]`` the diagram, ``fig.axes[1]`` the
        counts), otherwise the diagram's Axes.

    Examples
    --------
    >>> import numpy as np
    >>> from auq.calibration import reliability_table
    >>> rng = np.random.default_rng(0)
    >>> p = rng.uniform(size=500); y = (rng.uniform(size=500) < p).astype(float)
    >>> fig = reliability_diagram(reliability_table(p, y, n_bins=10))
    >>> fig.axes[0].get_ylabel()
    'observed frequency'
    """
    n_bins = check_int(n_bins, "n_bins", minimum=1)
    check_choice(strategy, "strategy", ("uniform", "quantile"))
    if kind is not None:
        check_choice(kind, "kind", ("bar", "line"))
    check_choice(count_scale, "count_scale", ("linear", "log"))
    n_resamples = check_int(n_resamples, "n_resamples", minimum=10)
    confidence = check_float(confidence, "confidence", minimum=0.0, maximum=1.0, inclusive=(False, False))
    if probs_or_tables is None:
        raise TypeError("probs_or_tables is required, got None")
    entries = _entries(
        probs_or_tables,
        labels,
        names,
        weights,
        ece_ci=ece_ci,
        pairwise=pairwise,
        n_bins=n_bins,
        strategy=strategy,
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
    )
    if kind is None:
        kind = "bar" if len(entries) == 1 else "line"
    if show_gap is None:
        show_gap = len(entries) == 1
    with _style.paper_style() if ax is None else nullcontext():
        fig, ax_main, ax_count = _make_axes(ax, show_counts)
        _draw(
            entries,
            ax_main,
            ax_count,
            kind=kind,
            show_gap=show_gap,
            count_scale=count_scale,
            diagonal_from=0.5 if pairwise else None,
        )
        lo = min(float(e.table["bin_lower"].min()) for e in entries)
        hi = max(float(e.table["bin_upper"].max()) for e in entries)
        is_pairwise = pairwise or lo >= 0.5
        if is_pairwise:  # order-free confidence max(p, 1 - p) lies in [0.5, 1]
            lo = 0.5
        ax_main.set_xlim(lo, hi)
        bottom = 0.0
        if is_pairwise:  # accuracy of the preferred side rarely falls far below 0.5
            freqs = np.concatenate(
                [e.table["observed_frequency"][nonempty_bins(e.table)] for e in entries]
            )
            bottom = max(0.0, min(lo, np.floor((float(freqs.min()) - 0.02) * 10) / 10))
        ax_main.set_ylim(bottom, 1.0)
        ax_main.set_ylabel(ylabel or ("accuracy" if is_pairwise else "observed frequency"))
        x_label = xlabel or (
            "confidence max(p, 1 \N{MINUS SIGN} p)" if is_pairwise else "predicted probability"
        )
        (ax_count if ax_count is not None else ax_main).set_xlabel(x_label)
        if title:
            ax_main.set_title(title)
        legend_title = (
            f"ECE [{confidence * 100:g}% bootstrap CI]"
            if any(e.ci is not None for e in entries)
            else None
        )
        _style.place_legend(ax_main, legend_loc, title=legend_title)
        for a in (ax_main, ax_count):
            if a is not None:
                _style.apply_tick_style(a)
    return fig if ax_count is not None else ax_main


def _make_axes(ax: Any, show_counts: bool) -> tuple[Any, Any, Any]:
    if ax is None:
        if show_counts:
            fig, (ax_main, ax_count) = plt.subplots(
                2,
                1,
                figsize=(_style.SINGLE_COLUMN, 4.2),
                sharex=True,
                gridspec_kw={"height_ratios": [3.2, 1.0], "hspace": 0.08},
            )
        else:
            fig, ax_main = plt.subplots(figsize=(_style.SINGLE_COLUMN, 3.3))
            ax_count = None
        return fig, ax_main, ax_count
    fig = ax.figure
    if not show_counts:
        return fig, ax, None
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    divider = make_axes_locatable(ax)
    ax_count = divider.append_axes("bottom", size="30%", pad=0.08, sharex=ax)
    return fig, ax, ax_count


def _draw(
    entries: list[_Entry],
    ax: Any,
    ax_count: Any,
    *,
    kind: str,
    show_gap: bool,
    count_scale: str,
    diagonal_from: float | None = None,
) -> None:
    lo = min(float(e.table["bin_lower"].min()) for e in entries)
    hi = max(float(e.table["bin_upper"].max()) for e in entries)
    if diagonal_from is not None:
        lo = max(lo, diagonal_from)
    ax.plot(
        [lo, hi],
        [lo, hi],
        linestyle="--",
        color=_style.REFERENCE_COLOR,
        linewidth=1.0,
        label="perfect calibration",
        gid="diagonal",
        zorder=5,
    )
    single = len(entries) == 1
    gap_color = _style.OKABE_ITO["vermillion"]
    shared_edges = all(
        len(e.table["bin_lower"]) == len(entries[0].table["bin_lower"])
        and np.allclose(e.table["bin_lower"], entries[0].table["bin_lower"])
        and np.allclose(e.table["bin_upper"], entries[0].table["bin_upper"])
        for e in entries
    )
    for i, e in enumerate(entries):
        c = _style.color(i)
        t = e.table
        keep = nonempty_bins(t)
        left = t["bin_lower"][keep]
        width = t["bin_upper"][keep] - left
        freq = t["observed_frequency"][keep]
        conf = t["mean_confidence"][keep]
        label = _legend_label(e)
        gap_label = "gap to diagonal" if i == 0 else None
        side_by_side = not single and shared_edges
        if kind == "bar":
            if side_by_side:
                # several models on the same bins: narrow bars side by side within each bin
                sub = width / len(entries)
                bar_left, bar_width = left + i * sub, sub
            else:
                bar_left, bar_width = left, width
            ax.bar(
                bar_left,
                freq,
                width=bar_width,
                align="edge",
                color=c if single or side_by_side else "none",
                alpha=0.9 if single else 1.0,
                edgecolor="white" if single or side_by_side else c,
                linewidth=0.6 if single or side_by_side else 1.5,
                label=label,
                gid=f"bars:{i}",
                zorder=2,
            )
            if show_gap:
                ax.bar(
                    bar_left,
                    conf - freq,
                    bottom=freq,
                    width=bar_width,
                    align="edge",
                    facecolor=matplotlib.colors.to_rgba(gap_color if single else c, 0.18),
                    edgecolor=gap_color if single else c,
                    hatch="////",
                    linewidth=0.8,
                    label=gap_label,
                    gid=f"gap:{i}",
                    zorder=3,
                )
        else:
            ax.plot(
                conf,
                freq,
                marker="o",
                markersize=3.5,
                color=c,
                label=label,
                gid=f"line:{i}",
                zorder=4,
            )
            if show_gap:
                ax.fill_between(
                    conf,
                    freq,
                    conf,
                    color=c,
                    alpha=0.2,
                    linewidth=0,
                    label=gap_label if single else None,
                    gid=f"gap:{i}",
                    zorder=2,
                )
        if ax_count is not None:
            counts = t["count"][keep]
            if single or not shared_edges:
                # one model: bars spanning the bins; several with different bins: outlines
                ax_count.bar(
                    left,
                    counts,
                    width=width,
                    align="edge",
                    color=c if single else "none",
                    alpha=0.9 if single else 1.0,
                    edgecolor="white" if single else c,
                    linewidth=0.6 if single else 1.3,
                    gid=f"counts:{i}",
                )
            else:
                # several models on the same bins: side by side within each bin
                sub = width / len(entries)
                ax_count.bar(
                    left + i * sub,
                    counts,
                    width=sub,
                    align="edge",
                    color=c,
                    linewidth=0,
                    gid=f"counts:{i}",
                )
    if ax_count is not None:
        ax_count.set_ylabel("count")
        ax_count.set_yscale(count_scale)
        ax_count.grid(axis="x", visible=False)
        if count_scale == "linear":
            ax_count.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(3, integer=True))
            ax_count.set_ylim(bottom=0)
        ax.tick_params(labelbottom=False)
