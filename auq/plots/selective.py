"""Risk–coverage curves (selective prediction) with AURC in the legend."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from auq._checks import as_float_array, check_choice, check_labels, check_same_length
from auq.plots import _style
from auq.plots._inputs import (
    entry_names,
    field_array,
    get_field,
    has_fields,
    input_items,
    is_curve,
)

logger = logging.getLogger(__name__)

__all__ = ["risk_coverage_plot"]


def _risk_coverage_curve() -> Any:
    try:
        from auq.calibration import risk_coverage_curve
    except ImportError:  # not yet re-exported at the package level
        from auq.calibration.selective import risk_coverage_curve
    return risk_coverage_curve


def _curve_from_arrays(
    scores: Any, correct: Any, name: str, correct_name: str, *, score: str, **kw: Any
) -> tuple[Any, np.ndarray]:
    s = as_float_array(scores, name, ndim=1)
    if correct is None:
        raise TypeError(f"{correct_name} is required when {name} holds scores, not a curve")
    c = as_float_array(correct, correct_name, ndim=1)
    check_labels(c, correct_name)
    check_same_length(c, s, correct_name, name)
    uncertainty = -s if score == "confidence" else s
    return _risk_coverage_curve()(uncertainty, c, **kw), c


def _oracle_curve(correct: np.ndarray, **kw: Any) -> Any:
    """The best possible order (every right prediction first): uncertainty = the error itself."""
    return _risk_coverage_curve()(1.0 - correct, correct, **kw)


def _dense(coverage: np.ndarray, risk: np.ndarray, step: float = 0.004) -> tuple[np.ndarray, np.ndarray]:
    """Points to draw a grouped risk–coverage curve exactly.

    Between two points the accepted error ``E = risk * coverage`` grows linearly (a group of
    tied scores enters in proportion, see :mod:`auq.calibration.selective`), so the risk
    ``E / c`` is a curve, not a straight line, across long segments; on the first segment it is
    constant, so the curve starts at coverage 0.
    """
    cov = np.concatenate([[0.0], coverage])
    err = np.concatenate([[0.0], risk * coverage])
    xs, ys = [np.array([0.0])], [np.array([risk[0]])]
    for c0, c1, e0, e1 in zip(cov[:-1], cov[1:], err[:-1], err[1:]):
        if c0 == 0.0:
            xs.append(np.array([c1]))
            ys.append(np.array([e1 / c1]) if c1 > 0 else np.array([risk[0]]))
            continue
        k = max(1, int(np.ceil((c1 - c0) / step)))
        c = np.linspace(c0, c1, k + 1)[1:]
        xs.append(c)
        ys.append((e0 + (e1 - e0) * (c - c0) / (c1 - c0)) / c)
    return np.concatenate(xs), np.concatenate(ys)


def _aurc(curve: Any, name: str) -> float | None:
    if has_fields(curve, ("aurc",)):
        value = get_field(curve, "aurc")
        if value is not None:
            value = float(value)
            if not np.isfinite(value):
                raise ValueError(f"{name}.aurc must be finite, got {value}")
            return value
    return None


def risk_coverage_plot(
    curves_or_scores: Any,
    correct: Any = None,
    *,
    names: Sequence[str] | None = None,
    score: str = "uncertainty",
    oracle: bool = False,
    percent: bool = False,
    ylim: tuple[float, float] | None = None,
    title: str | None = None,
    legend_loc: str | None = "outside",
    ax: Any = None,
    **curve_kwargs: Any,
) -> Any:
    """Risk–coverage curves: error rate among the retained items as coverage grows, with AURC.

    Items are retained from the most to the least confident; a good uncertainty score keeps
    the risk low at low coverage. Each curve's area (AURC, lower is better) is in the legend.

    Parameters
    ----------
    curves_or_scores : RiskCoverage, list of RiskCoverage, mapping, or array-like
        A curve from :func:`auq.calibration.risk_coverage_curve` (anything with ``coverage``,
        ``risk`` and optionally ``aurc``), a list of curves, a mapping
        ``name -> curve | scores | (scores, correct)``, or raw scores ``[n]`` with ``correct``.
        Raw scores go through :func:`auq.calibration.risk_coverage_curve` with
        ``**curve_kwargs`` (e.g. ``weights=``).
    correct : array-like or mapping, optional
        Per-item correctness (1 correct, 0 wrong; soft allowed) for raw scores, shared by all
        entries or a mapping ``name -> correct``.
    names : sequence of str, optional
        Legend names (default: mapping keys, or "model 1", ...).
    score : {"uncertainty", "confidence"}
        What raw scores are: uncertainties (higher = less sure, e.g. ``Decomposition.total``;
        the convention of :func:`auq.calibration.risk_coverage_curve`) or confidences
        (higher = surer, e.g. ``max(p, 1 - p)``).
    oracle : bool, default False
        Also draw the oracle curve (all errors ranked last) for the ``correct`` arrays given;
        needs raw scores.
    percent : bool, default False
        Show risk and coverage in percent (AURC stays a fraction).
    ylim : (float, float), optional
        Risk axis limits. Default: fitted to the curves from 5 % coverage on (the risk over the
        first few items is noise and may leave the top).
    title : str, optional
        Axes title.
    legend_loc : str or None, default "outside"
        ``"outside"`` puts the legend above the axes, where it covers no data; any matplotlib
        location (``"upper left"``, ``"best"``, ...) puts it inside; ``None`` draws none.
    ax : matplotlib.axes.Axes, optional
        Axes to draw in; created with :func:`auq.plots.paper_style` when ``None``.
    **curve_kwargs
        Passed to :func:`auq.calibration.risk_coverage_curve` for raw scores.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> curve = {"coverage": [0.25, 0.5, 0.75, 1.0], "risk": [0.0, 0.0, 0.33, 0.5], "aurc": 0.21}
    >>> ax = risk_coverage_plot(curve)
    >>> ax.get_xlabel()
    'coverage'
    """
    arg = "curves_or_scores"
    check_choice(score, "score", ("uncertainty", "confidence"))
    if curves_or_scores is None:
        raise TypeError(f"{arg} is required, got None")
    keys, items = input_items(curves_or_scores, correct, arg, "correct", is_curve)
    labels = entry_names(keys, len(items), names, "model")

    drawn: list[tuple[str | None, np.ndarray, np.ndarray, float | None]] = []
    corrects: list[np.ndarray] = []
    for (err_name, obj, corr, corr_name), label in zip(items, labels):
        if is_curve(obj):
            curve = obj
            if oracle:
                raise ValueError(
                    f"oracle=True needs the per-item correctness, but {err_name} is a curve; "
                    "pass raw scores with correct="
                )
        else:
            curve, c = _curve_from_arrays(
                obj, corr, err_name, corr_name, score=score, **curve_kwargs
            )
            corrects.append(c)
        cov = field_array(curve, "coverage", err_name)
        risk = field_array(curve, "risk", err_name)
        check_same_length(risk, cov, f"{err_name}.risk", f"{err_name}.coverage")
        drawn.append((label, cov, risk, _aurc(curve, err_name)))

    scale = 100.0 if percent else 1.0
    with _style.axes_or_new(ax, (_style.SINGLE_COLUMN, 2.8)) as ax:
        for i, (label, cov, risk, aurc) in enumerate(drawn):
            text = label
            if aurc is not None:
                text = f"AURC {aurc:.3f}" if label is None else f"{label} (AURC {aurc:.3f})"
            x, y = _dense(cov, risk)
            ax.plot(
                x * scale,
                y * scale,
                color=_style.color(i),
                label=text,
                gid=f"curve:{i}",
                zorder=3,
            )
        if oracle:
            unique: list[np.ndarray] = []
            for c in corrects:
                if not any(len(u) == len(c) and np.array_equal(u, c) for u in unique):
                    unique.append(c)
            for j, c in enumerate(unique):
                oc = _oracle_curve(c, **curve_kwargs)
                o_aurc = _aurc(oc, "oracle")
                ox, oy = _dense(
                    field_array(oc, "coverage", "oracle"), field_array(oc, "risk", "oracle")
                )
                o_label = "oracle" if len(unique) == 1 else f"oracle {j + 1}"
                if o_aurc is not None:
                    o_label += f" (AURC {o_aurc:.3f})"
                ax.plot(
                    ox * scale,
                    oy * scale,
                    color=_style.REFERENCE_COLOR,
                    linestyle=":",
                    linewidth=1.3,
                    label=o_label,
                    gid=f"oracle:{j}",
                    zorder=2,
                )
        unit = " (%)" if percent else ""
        ax.set_xlabel(f"coverage{unit}")
        ax.set_ylabel(f"selective risk (error rate){unit}")
        ax.set_xlim(0.0, 1.0 * scale)
        if ylim is None:
            # the risk at the first few items is noise (one error = 100 %); scale the axis to
            # the curves from 5 % coverage on and let earlier spikes leave the top
            tops = []
            for line in ax.lines:
                x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
                tops.append(float(np.max(y[x >= 0.05 * scale])) if (x >= 0.05 * scale).any()
                            else float(np.max(y)))
            top = max(max(tops), 1e-12)
            ylim = (-0.02 * top, 1.08 * top)  # the oracle's zero risk stays visible
        ax.set_ylim(*ylim)
        if title:
            ax.set_title(title)
        if any(line.get_label() and not line.get_label().startswith("_") for line in ax.lines):
            _style.place_legend(ax, legend_loc)
        _style.apply_tick_style(ax)
    return ax
