"""Out-of-distribution scores of in-domain and shifted pairs, side by side."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from auq._checks import as_float_array
from auq.plots._inputs import check_mapping

from ._style import apply_tick_style, color, paper_style, place_legend

__all__ = ["ood_histogram"]


def ood_histogram(
    scores: Mapping[str, Any],
    *,
    auroc: float | None = None,
    bins: int = 30,
    xlabel: str = "ood (training-density percentile)",
    legend_loc: str | None = "outside",
    ax: Any = None,
) -> Any:
    """Histograms of an out-of-distribution score for several sets of pairs (densities, step style).

    Parameters
    ----------
    scores : mapping of name -> array-like [n]
        E.g. ``{"held-out (in domain)": preds.ood, "MT-Bench (shifted)": shifted.ood}``.
    auroc : float, optional
        Shown as the legend's title (compute it with :func:`auq.calibration.ood_auroc`).
    bins : int, default 30
        Bins over the common range of all scores.
    xlabel : str
        Label of the x axis.
    legend_loc : str or None, default "outside"
        As for the other auq plots.
    ax : matplotlib.axes.Axes, optional
        Axes to draw in; created when ``None``.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ax = ood_histogram({"in": rng.uniform(size=200), "out": rng.beta(5, 1, size=200)}, auroc=0.83)
    >>> ax.get_legend().get_title().get_text()
    'OOD AUROC 0.830'
    """
    check_mapping(scores, "scores")
    arrays = {str(k): as_float_array(v, f"scores[{k!r}]", ndim=1) for k, v in scores.items()}
    for k, a in arrays.items():
        if a.size == 0:
            raise ValueError(f"scores[{k!r}] is empty")
    lo = min(float(a.min()) for a in arrays.values())
    hi = max(float(a.max()) for a in arrays.values())
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, int(bins) + 1)
    if ax is None:
        import matplotlib.pyplot as plt

        with paper_style():
            _, ax = plt.subplots(figsize=(4.2, 2.8))
    for i, (name, a) in enumerate(arrays.items()):
        ax.hist(a, bins=edges, density=True, histtype="step", linewidth=1.6, color=color(i), label=f"{name} (n={a.size})")
        ax.hist(a, bins=edges, density=True, alpha=0.15, color=color(i))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    apply_tick_style(ax)
    if legend_loc is not None:
        place_legend(ax, legend_loc, title=None if auroc is None else f"OOD AUROC {auroc:.3f}")
    return ax
