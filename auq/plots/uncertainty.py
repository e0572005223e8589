"""Uncertainty decomposition (aleatoric vs epistemic, in vs out of distribution) and member rewards."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import matplotlib.pyplot as plt
import matplotlib.ticker as ticker
import numpy as np
from matplotlib.patches import Patch

from auq._checks import as_float_array, check_choice, check_int
from auq.plots import _style
from auq.plots._inputs import check_mapping, entry_names, field_array, get_field, has_fields

logger = logging.getLogger(__name__)

__all__ = ["uncertainty_decomposition_plot", "member_reward_plot"]

_ENTROPY_FIELDS = ("total", "aleatoric", "epistemic")
_FIELD_LABELS = {
    "total": "total",
    "aleatoric": "aleatoric",
    "epistemic": "epistemic (MI)",
    "margin_std": "margin std over members",
    "margin_mean": "mean margin",
    "prob": "P(chosen preferred)",
}


def _group_handles(group_names: Sequence[Any]) -> list[Any]:
    """Legend patches of the groups, in the groups' colours."""
    return [
        Patch(facecolor=_style.color(g), alpha=0.6, edgecolor=_style.color(g), label=str(n))
        for g, n in enumerate(group_names)
    ]


def _axis_label(field: str, unit: str) -> str:
    label = _FIELD_LABELS.get(field, field)
    if field in _ENTROPY_FIELDS:
        label += f" [{unit}]"
    return label


def _unit(decomposition: Any) -> str:
    if has_fields(decomposition, ("unit",)):
        unit = get_field(decomposition, "unit")
        if isinstance(unit, str):
            return unit
    return "nats"


def _log_ticks(axis: Any, lo: float, hi: float) -> None:
    """Readable ticks on a log axis: no labelled minor ticks; 1-2-5 ticks over short ranges."""
    axis.set_minor_formatter(ticker.NullFormatter())
    if np.log10(hi / lo) < 2.0:
        axis.set_major_locator(ticker.LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))


def _density(ax: Any, values: list[np.ndarray], names: list[str | None], *, kind: str,
             bins: int, log: bool) -> None:
    pooled = np.concatenate(values)
    lo, hi = float(pooled.min()), float(pooled.max())
    if log:
        lo = max(lo, float(pooled[pooled > 0].min()) if (pooled > 0).any() else 1e-12)
    if hi <= lo:
        hi = lo + 1.0 if lo == 0 else lo * (1 + 1e-3) + 1e-12
    edges = np.geomspace(lo, hi, bins + 1) if log else np.linspace(lo, hi, bins + 1)
    for i, (v, name) in enumerate(zip(values, names)):
        c = _style.color(i)
        if log:
            v = v[v > 0]
        if kind == "kde" and len(v) > 1 and np.std(v) > 0:
            from scipy.stats import gaussian_kde

            if log:
                lv = np.log10(v)
                kde = gaussian_kde(lv)
                grid = np.linspace(np.log10(lo), np.log10(hi), 256)
                dens = kde(grid)
                x = 10**grid
            else:
                kde = gaussian_kde(v)
                x = np.linspace(lo, hi, 256)
                dens = kde(x)
            ax.fill_between(x, dens, color=c, alpha=0.2, linewidth=0)
            ax.plot(x, dens, color=c, label=name, gid=f"density:{i}")
        else:
            if log:  # equal-width bins in log10 x: density per decade, area 1 in log10 x
                hist_kw = {"weights": np.full(len(v), bins / (len(v) * np.log10(hi / lo)))}
            else:
                hist_kw = {"density": True}
            ax.hist(v, bins=edges, histtype="stepfilled", color=c, alpha=0.2,
                    linewidth=0, gid=f"hist-fill:{i}", **hist_kw)
            ax.hist(v, bins=edges, histtype="step", color=c, linewidth=1.3,
                    label=name, gid=f"hist:{i}", **hist_kw)
    if log:
        ax.set_xscale("log")
        _log_ticks(ax.xaxis, lo, hi)
    ax.set_ylabel("density per decade" if log else "density")
    ax.set_ylim(bottom=0)


def uncertainty_decomposition_plot(
    decompositions: Any,
    *,
    names: Sequence[str] | None = None,
    x: str = "aleatoric",
    y: str = "epistemic",
    kind: str = "hist",
    bins: int = 30,
    log: bool = False,
    max_points: int = 4000,
    seed: int = 0,
    ax: Sequence[Any] | None = None,
) -> Any:
    """Aleatoric vs epistemic uncertainty per pair, and their distributions per group.

    Three panels: a scatter of ``x`` (default aleatoric) against ``y`` (default epistemic), one
    point per pair and one colour per group; the distribution of ``y``; the distribution of
    ``x``. Groups are typically in- and out-of-distribution pairs.

    Parameters
    ----------
    decompositions : Decomposition or mapping of name -> Decomposition
        Results of :func:`auq.estimators.decompose` (anything with the fields named by ``x``
        and ``y``; a DataFrame from ``to_pandas()`` works), e.g.
        ``{"in-distribution": d_in, "out-of-distribution": d_out}``.
    names : sequence of str, optional
        Group names (default: the mapping keys).
    x, y : str
        Fields to plot: any of ``"aleatoric"``, ``"epistemic"``, ``"total"``,
        ``"margin_std"``, ``"margin_mean"``, ``"prob"``. Use ``y="margin_std"`` for the variance
        view.
    kind : {"hist", "kde"}
        Histograms (density, shared bin edges) or Gaussian kernel density estimates.
    bins : int
        Number of histogram bins.
    log : bool, default False
        Log-scale the distribution of ``y`` (useful: epistemic terms are heavy-tailed near 0).
    max_points : int
        At most this many points per group in the scatter (a seeded random subset);
        the distributions always use every pair.
    seed : int
        Seed of that subset.
    ax : sequence of three Axes, optional
        Axes for the scatter, the ``y`` and the ``x`` distribution; created when ``None``.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np
    >>> from auq.estimators import decompose
    >>> rng = np.random.default_rng(0)
    >>> d_in = decompose(rng.normal(2, 0.3, size=(200, 5)))
    >>> d_out = decompose(rng.normal(0.5, 1.5, size=(200, 5)))
    >>> fig = uncertainty_decomposition_plot({"in-distribution": d_in, "out-of-distribution": d_out})
    >>> len(fig.axes)
    3
    """
    check_choice(kind, "kind", ("hist", "kde"))
    bins = check_int(bins, "bins", minimum=1)
    max_points = check_int(max_points, "max_points", minimum=1)
    arg = "decompositions"
    if decompositions is None:
        raise TypeError(f"{arg} is required, got None")
    if isinstance(decompositions, Mapping) and not has_fields(decompositions, (x, y)):
        check_mapping(decompositions, arg)
        keys: list[str] | None = [str(k) for k in decompositions]
        objs = list(decompositions.values())
        err_names = [f"{arg}[{k!r}]" for k in decompositions]
    elif isinstance(decompositions, (list, tuple)) and decompositions and all(
        has_fields(d, (x, y)) for d in decompositions
    ):
        keys, objs = None, list(decompositions)
        err_names = [f"{arg}[{i}]" for i in range(len(objs))]
    else:
        keys, objs, err_names = None, [decompositions], [arg]
    group_names = entry_names(keys, len(objs), names, "group")
    xs, ys = [], []
    for obj, err in zip(objs, err_names):
        if not has_fields(obj, (x, y)):
            raise TypeError(
                f"{err} must be a Decomposition (or have fields {x!r} and {y!r}), "
                f"got {type(obj).__name__}"
            )
        xv = field_array(obj, x, err)
        yv = field_array(obj, y, err)
        if len(xv) != len(yv):
            raise ValueError(
                f"{err}.{x} and {err}.{y} must have the same length, got {len(xv)} and {len(yv)}"
            )
        xs.append(xv)
        ys.append(yv)
    unit = _unit(objs[0])

    with _style.paper_style() if ax is None else nullcontext():
        if ax is None:
            fig, axes = plt.subplots(
                1, 3, figsize=(_style.DOUBLE_COLUMN, 2.5),
                gridspec_kw={"wspace": 0.38},
            )
        else:
            axes = list(ax)
            if len(axes) != 3:
                raise ValueError(f"ax must hold three Axes (scatter, {y}, {x}), got {len(axes)}")
            fig = axes[0].figure
        ax_sc, ax_y, ax_x = axes
        rng = np.random.default_rng(seed)
        order = np.argsort([-len(v) for v in xs], kind="stable")  # big groups underneath
        for i in order:
            xv, yv = xs[i], ys[i]
            if len(xv) > max_points:
                idx = rng.choice(len(xv), size=max_points, replace=False)
                xv, yv = xv[idx], yv[idx]
            ax_sc.scatter(
                xv, yv, s=5, color=_style.color(i), alpha=0.45, linewidths=0,
                rasterized=len(xv) > 500, label=group_names[i], gid=f"scatter:{i}",
            )
        ax_sc.set_xlabel(_axis_label(x, unit))
        ax_sc.set_ylabel(_axis_label(y, unit))
        _density(ax_y, ys, group_names, kind=kind, bins=bins, log=log)
        ax_y.set_xlabel(_axis_label(y, unit))
        _density(ax_x, xs, group_names, kind=kind, bins=bins, log=False)
        ax_x.set_xlabel(_axis_label(x, unit))
        for a in axes:
            _style.apply_tick_style(a)
        if any(n is not None for n in group_names):
            handles = _group_handles(group_names)
            top = max(a.get_position().y1 for a in axes)
            fig.legend(
                handles=handles, loc="lower center", bbox_to_anchor=(0.5, top + 0.03),
                ncol=len(handles), frameon=False,
            )
    return fig


def member_reward_plot(
    rewards: Any,
    *,
    center: bool = True,
    kind: str = "violin",
    member_names: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    ylabel: str | None = None,
    legend_loc: str | None = "outside",
    ax: Any = None,
) -> Any:
    """Distribution of each ensemble member's rewards (violins or boxes, one per member).

    Parameters
    ----------
    rewards : array-like [n, K] or mapping of name -> [n, K]
        Member rewards, one column per member (e.g. ``Predictions.rewards_chosen``); a mapping
        (e.g. ``{"chosen": rc, "rejected": rr}``) draws the groups side by side per member.
    center : bool, default True
        Subtract each member's mean (over all responses of all groups): Bradley–Terry rewards
        are identified only up to a constant per member, so raw levels are not comparable.
    kind : {"violin", "box"}
    member_names : sequence of str, optional
        Tick labels of the members (default 1..K).
    names : sequence of str, optional
        Group names (default: mapping keys).
    ylabel : str, optional
        Override the y axis label.
    legend_loc : str or None, default "outside"
        ``"outside"`` puts the legend above the axes, where it covers no data; any matplotlib
        location (``"upper left"``, ``"best"``, ...) puts it inside; ``None`` draws none.
    ax : matplotlib.axes.Axes, optional
        Axes to draw in; created when ``None``.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import numpy as np
    >>> ax = member_reward_plot(np.random.default_rng(0).normal(size=(100, 4)))
    >>> [t.get_text() for t in ax.get_xticklabels()]
    ['1', '2', '3', '4']
    """
    check_choice(kind, "kind", ("violin", "box"))
    if rewards is None:
        raise TypeError("rewards is required, got None")
    if isinstance(rewards, Mapping):
        check_mapping(rewards, "rewards")
        keys: list[str] | None = [str(k) for k in rewards]
        arrays = [as_float_array(v, f"rewards[{k!r}]", ndim=(1, 2)) for k, v in rewards.items()]
    else:
        keys = None
        arrays = [as_float_array(rewards, "rewards", ndim=(1, 2))]
    arrays = [a[:, None] if a.ndim == 1 else a for a in arrays]
    n_members = arrays[0].shape[1]
    for k, a in zip(keys or ["rewards"], arrays):
        if a.shape[1] != n_members:
            raise ValueError(
                f"rewards[{k!r}] has {a.shape[1]} members but the first group has {n_members}"
            )
    if center:
        means = np.concatenate(arrays, axis=0).mean(axis=0, keepdims=True)
        arrays = [a - means for a in arrays]
    group_names = entry_names(keys, len(arrays), names, "group")
    if member_names is None:
        member_names = [str(k + 1) for k in range(n_members)]
    elif len(member_names) != n_members:
        raise ValueError(
            f"member_names must have one name per member ({n_members}), got {len(member_names)}"
        )
    n_groups = len(arrays)
    slot = 0.8 / n_groups
    width = slot * 0.9
    figsize = (min(_style.DOUBLE_COLUMN, max(_style.SINGLE_COLUMN, 0.45 * n_members * n_groups + 1.2)), 2.8)
    with _style.axes_or_new(ax, figsize) as ax:
        centers = np.arange(1, n_members + 1, dtype=float)
        for g, a in enumerate(arrays):
            c = _style.color(g)
            pos = centers - 0.4 + slot * (g + 0.5)
            data = [a[:, k] for k in range(n_members)]
            if kind == "violin":
                parts = ax.violinplot(
                    data, positions=pos, widths=width, showmeans=False, showmedians=True,
                    showextrema=False,
                )
                for body in parts["bodies"]:
                    body.set_facecolor(c)
                    body.set_edgecolor(c)
                    body.set_alpha(0.45)
                    body.set_gid(f"violin:{g}")
                parts["cmedians"].set_color("black")
                parts["cmedians"].set_linewidth(1.2)
            else:
                bp = ax.boxplot(
                    data, positions=pos, widths=width, patch_artist=True, showfliers=True,
                    flierprops={"marker": ".", "markersize": 2, "markerfacecolor": c,
                                "markeredgecolor": c, "alpha": 0.5},
                    medianprops={"color": "black", "linewidth": 1.2},
                    manage_ticks=False,
                )
                for box in bp["boxes"]:
                    box.set_facecolor(c)
                    box.set_alpha(0.6)
                    box.set_edgecolor(c)
                    box.set_gid(f"box:{g}")
        if center:
            ax.axhline(0.0, color=_style.REFERENCE_COLOR, linewidth=0.8, linestyle="--", zorder=0)
        ax.set_xticks(centers)
        ax.set_xticklabels([str(m) for m in member_names])
        ax.set_xlim(0.4, n_members + 0.6)
        ax.set_xlabel("ensemble member")
        ax.set_ylabel(ylabel or ("reward (centred per member)" if center else "reward"))
        ax.grid(axis="x", visible=False)
        if any(n is not None for n in group_names) and n_groups > 1:
            handles = _group_handles(group_names)
            _style.place_legend(ax, legend_loc, handles=handles, ncol=n_groups)
        _style.apply_tick_style(ax)
    return ax
