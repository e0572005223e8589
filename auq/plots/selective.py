"""Risk–coverage curves (selective prediction) with AURC in the legend."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from auq._checks import as_float_array, check_labels, check_same_length
from auq.plots import _style
from auq.plots._inputs import (
    check_mapping,
    entry_names,
    field_array,
    get_field,
    has_fields,
    is_curve,
    is_sequence_of,
)

logger = logging.getLogger(__name__)

__all__ = ["risk_coverage_plot"]


def _calibration() -> Any:
    import auq.calibration as cal

    return cal


def _curve_from_arrays(scores: Any, correct: Any, name: str, correct_name: str, **kw: Any) -> Any:
    s = as_float_array(scores, name, ndim=1)
    if correct is None:
        raise TypeError(f"{correct_name} is required when {name} holds scores, not a curve")
    c = as_float_array(correct, correct_name, ndim=1)
    check_labels(c, correct_name)
    check_same_length(c, s, correct_name, name)
    return _calibration().risk_coverage_curve(s, c, **kw), c


def _oracle_curve(correct: np.ndarray) -> Any:
    """The best possible ranking: every correct item more confident than every error.

    Drawn through the same :func:`auq.calibration.risk_coverage_curve`, with distinct scores
    (correct items first, ties broken by position) so the curve has one point per item.
    """
    n = len(correct)
    score = correct.astype(np.float64) * 2.0 + np.linspace(0.0, 1.0, n)
    return _calibration().risk_coverage_curve(score, correct)


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
    oracle: bool = False,
    percent: bool = False,
    title: str | None = None,
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
        ``**curve_kwargs``.
    correct : array-like or mapping, optional
        Per-item correctness (1 correct, 0 wrong; soft allowed) for raw scores, shared by all
        entries or a mapping ``name -> correct``.
    names : sequence of str, optional
        Legend names (default: mapping keys, or "model 1", ...).
    oracle : bool, default False
        Also draw the oracle curve (all errors ranked last) for the ``correct`` arrays given;
        needs raw scores.
    percent : bool, default False
        Show risk and coverage in percent.
    title : str, optional
        Axes title.
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
    if curves_or_scores is None:
        raise TypeError(f"{arg} is required, got None")
    keys: list[str] | None = None
    items: list[tuple[str, Any, Any, str]]
    if isinstance(curves_or_scores, Mapping) and not is_curve(curves_or_scores):
        check_mapping(curves_or_scores, arg)
        keys = [str(k) for k in curves_or_scores]
        items = []
        for k, v in curves_or_scores.items():
            corr = correct[k] if isinstance(correct, Mapping) else correct
            corr_name = f"correct[{k!r}]" if isinstance(correct, Mapping) else "correct"
            if isinstance(v, tuple) and len(v) == 2 and not is_curve(v):
                v, corr = v
                corr_name = f"{arg}[{k!r}][1]"
            items.append((f"{arg}[{k!r}]", v, corr, corr_name))
    elif is_curve(curves_or_scores):
        items = [(arg, curves_or_scores, None, "correct")]
    elif is_sequence_of(curves_or_scores, is_curve):
        items = [(f"{arg}[{i}]", c, None, "correct") for i, c in enumerate(curves_or_scores)]
    else:
        items = [(arg, curves_or_scores, correct, "correct")]
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
            curve, c = _curve_from_arrays(obj, corr, err_name, corr_name, **curve_kwargs)
            corrects.append(c)
        cov = field_array(curve, "coverage", err_name)
        risk = field_array(curve, "risk", err_name)
        check_same_length(risk, cov, f"{err_name}.risk", f"{err_name}.coverage")
        drawn.append((label, cov, risk, _aurc(curve, err_name)))

    scale = 100.0 if percent else 1.0
    with _style.paper_style() if ax is None else nullcontext():
        if ax is None:
            _, ax = plt.subplots(figsize=(_style.SINGLE_COLUMN, 2.8))
        for i, (label, cov, risk, aurc) in enumerate(drawn):
            text = label
            if aurc is not None:
                text = f"AURC {aurc:.3f}" if label is None else f"{label} (AURC {aurc:.3f})"
            ax.plot(
                cov * scale,
                risk * scale,
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
                oc = _oracle_curve(c)
                o_aurc = _aurc(oc, "oracle")
                o_label = "oracle" if len(unique) == 1 else f"oracle {j + 1}"
                if o_aurc is not None:
                    o_label += f" (AURC {o_aurc:.3f})"
                ax.plot(
                    field_array(oc, "coverage", "oracle") * scale,
                    field_array(oc, "risk", "oracle") * scale,
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
        ax.set_ylim(bottom=0.0)
        if title:
            ax.set_title(title)
        if any(line.get_label() and not line.get_label().startswith("_") for line in ax.lines):
            ax.legend(loc="upper left")
        _style.apply_tick_style(ax)
    return ax
