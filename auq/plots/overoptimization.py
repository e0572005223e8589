"""Reward over-optimisation: gold and proxy reward against KL from the reference policy."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.lines import Line2D

from auq._checks import as_float_array, check_same_length
from auq.plots import _style
from auq.plots._inputs import check_mapping, entry_names, get_field, has_fields

logger = logging.getLogger(__name__)

__all__ = ["overoptimization_plot"]


def _series(kl: Any, gold: Any, proxy: Any, prefix: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    k = as_float_array(kl, f"{prefix}kl", ndim=1)
    g = as_float_array(gold, f"{prefix}gold", ndim=1)
    check_same_length(g, k, f"{prefix}gold", f"{prefix}kl")
    p = None
    if proxy is not None:
        p = as_float_array(proxy, f"{prefix}proxy", ndim=1)
        check_same_length(p, k, f"{prefix}proxy", f"{prefix}kl")
    if (k < 0).any():
        raise ValueError(f"{prefix}kl must be non-negative (a KL divergence), got {float(k.min())!r}")
    order = np.argsort(k, kind="stable")
    return k[order], g[order], None if p is None else p[order]


def _unpack(value: Any, name: str) -> tuple[Any, Any, Any]:
    if has_fields(value, ("kl", "gold")):
        proxy = get_field(value, "proxy") if has_fields(value, ("proxy",)) else None
        return get_field(value, "kl"), get_field(value, "gold"), proxy
    if isinstance(value, (tuple, list)) and len(value) in (2, 3):
        return value[0], value[1], value[2] if len(value) == 3 else None
    raise TypeError(
        f"{name} must be a (kl, gold, proxy) tuple or a mapping with keys 'kl', 'gold', 'proxy', "
        f"got {type(value).__name__}"
    )


def overoptimization_plot(
    kl: Any,
    gold: Any = None,
    proxy: Any = None,
    *,
    labels: Sequence[str] | None = None,
    sqrt_kl: bool = False,
    mark_peak: bool = True,
    title: str | None = None,
    legend_loc: str | None = "outside",
    ax: Any = None,
) -> Any:
    """Gold and proxy reward against KL(π ‖ π_ref) for one or several training objectives.

    The classic over-optimisation picture (Gao et al., 2023): the proxy (learned) reward keeps
    rising with KL while the gold reward peaks and falls. Gold is drawn solid, proxy dashed, one
    colour per objective; the gold peak is marked.

    Parameters
    ----------
    kl : array-like, list of array-like, or mapping
        KL per checkpoint ``[n]`` (one objective), a list of such arrays or a 2-D array
        ``[n_objectives, n]`` (several, named by ``labels``), or a mapping
        ``objective -> (kl, gold, proxy)`` (or ``-> {"kl": ..., "gold": ..., "proxy": ...}``),
        in which case ``gold`` and ``proxy`` are not given.
    gold, proxy : array-like or list of array-like, optional
        Gold and proxy reward at each KL, shaped like ``kl``. ``proxy`` may be omitted.
    labels : sequence of str, optional
        Objective names for array input (default: mapping keys, or "objective 1", ...).
    sqrt_kl : bool, default False
        Use sqrt(KL) on the x axis (as in Gao et al.).
    mark_peak : bool, default True
        Mark the maximum of each gold curve.
    title : str, optional
        Axes title.
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
    >>> kl = np.linspace(0, 20, 11)
    >>> ax = overoptimization_plot({"PPO": (kl, np.sqrt(kl) - 0.1 * kl, np.sqrt(kl))})
    >>> len([l for l in ax.lines if l.get_linestyle() == "-"])
    1
    """
    if kl is None:
        raise TypeError("kl is required, got None")
    series: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
    keys: list[str] | None = None
    if isinstance(kl, Mapping) and not has_fields(kl, ("kl", "gold")):
        if gold is not None or proxy is not None:
            raise TypeError("gold and proxy must not be given when kl is a mapping of objectives")
        check_mapping(kl, "kl")
        keys = [str(k) for k in kl]
        for k, v in kl.items():
            series.append(_series(*_unpack(v, f"kl[{k!r}]"), prefix=f"kl[{k!r}]."))
    elif has_fields(kl, ("kl", "gold")):
        series.append(_series(*_unpack(kl, "kl"), prefix="kl."))
    else:
        if gold is None:
            raise TypeError("gold is required when kl is an array")
        several = isinstance(kl, (list, tuple)) and len(kl) > 0 and np.ndim(kl[0]) == 1
        several = several or np.ndim(kl) == 2
        if several:
            n = len(kl)
            if len(gold) != n:
                raise ValueError(f"gold must have one series per objective ({n}), got {len(gold)}")
            if proxy is not None and len(proxy) != n:
                raise ValueError(f"proxy must have one series per objective ({n}), got {len(proxy)}")
            for i in range(n):
                series.append(
                    _series(kl[i], gold[i], None if proxy is None else proxy[i], prefix=f"[{i}] ")
                )
        else:
            series.append(_series(kl, gold, proxy, prefix=""))
    names = entry_names(keys, len(series), labels, "objective")

    with _style.axes_or_new(ax, (_style.SINGLE_COLUMN, 2.8)) as ax:
        handles: list[Any] = []
        any_proxy = False
        for i, ((k, g, p), name) in enumerate(zip(series, names)):
            c = _style.color(i)
            xk = np.sqrt(k) if sqrt_kl else k
            ax.plot(xk, g, color=c, linestyle="-", label=f"{name or ''} gold".strip(),
                    gid=f"gold:{i}", zorder=3)
            if p is not None:
                any_proxy = True
                ax.plot(xk, p, color=c, linestyle="--", label=f"{name or ''} proxy".strip(),
                        gid=f"proxy:{i}", zorder=3)
            if mark_peak:
                j = int(np.argmax(g))
                ax.scatter([xk[j]], [g[j]], s=22, color=c, edgecolors="white", linewidths=0.8,
                           zorder=4, gid=f"peak:{i}")
            if name is not None:
                handles.append(Line2D([], [], color=c, linewidth=4, solid_capstyle="butt",
                                      label=name))
        style_handles = [Line2D([], [], color="black", linestyle="-", label="gold reward")]
        if any_proxy:
            style_handles.append(Line2D([], [], color="black", linestyle="--", label="proxy reward"))
        _style.place_legend(
            ax, legend_loc, handles=handles + style_handles, ncol=2 if handles else 1
        )
        ax.set_xlabel(
            r"$\sqrt{\mathrm{KL}(\pi\,\|\,\pi_{\mathrm{ref}})}$"
            if sqrt_kl
            else r"KL$(\pi\,\|\,\pi_{\mathrm{ref}})$ [nats]"
        )
        ax.set_ylabel("reward")
        ax.set_xlim(left=0.0)
        if title:
            ax.set_title(title)
        _style.apply_tick_style(ax)
    return ax
