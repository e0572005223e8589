"""One place for the look of auq figures: palette, fonts, figure sizes, saving.

The palette is Okabe & Ito's colour-blind-safe set (Okabe and Ito, 2008, "Color Universal
Design"), ordered so that the first colours stay distinct in greyscale too. Fonts and sizes are
chosen for a single-column figure of a two-column paper (3.5 in wide) read at 100 %.

Every auq plot function that creates its own figure draws inside :func:`paper_style`; when you
pass your own ``ax=`` the figure keeps your style. :func:`save_figure` writes vector PDF/SVG with
real (TrueType, ``pdf.fonttype = 42``) text that journals accept and editors can change.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib as mpl
from cycler import cycler

logger = logging.getLogger(__name__)

__all__ = [
    "OKABE_ITO",
    "PALETTE",
    "PAPER_RC",
    "paper_style",
    "color",
    "save_figure",
    "SINGLE_COLUMN",
    "DOUBLE_COLUMN",
]

#: The eight Okabe–Ito colours by name.
OKABE_ITO: dict[str, str] = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky blue": "#56B4E9",
    "bluish green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish purple": "#CC79A7",
}

#: Cycle order used for models / objectives / groups: high-contrast colours first, yellow
#: (weak on white) and black (kept for reference lines) last.
PALETTE: tuple[str, ...] = (
    OKABE_ITO["blue"],
    OKABE_ITO["vermillion"],
    OKABE_ITO["bluish green"],
    OKABE_ITO["orange"],
    OKABE_ITO["reddish purple"],
    OKABE_ITO["sky blue"],
    OKABE_ITO["yellow"],
    OKABE_ITO["black"],
)

#: Colour of reference lines (the diagonal, the oracle curve).
REFERENCE_COLOR = "#4D4D4D"

#: Figure widths in inches.
SINGLE_COLUMN = 3.5
DOUBLE_COLUMN = 7.0

#: Font sizes (points).
FONT_SIZE = 9.0
SMALL_FONT_SIZE = 8.0

#: rcParams for paper figures; use through :func:`paper_style` or ``mpl.rcParams.update``.
PAPER_RC: dict[str, Any] = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica", "Liberation Sans"],
    "font.size": FONT_SIZE,
    "axes.titlesize": FONT_SIZE + 1,
    "axes.labelsize": FONT_SIZE,
    "xtick.labelsize": SMALL_FONT_SIZE,
    "ytick.labelsize": SMALL_FONT_SIZE,
    "legend.fontsize": SMALL_FONT_SIZE,
    "legend.title_fontsize": SMALL_FONT_SIZE,
    "legend.frameon": True,
    "legend.framealpha": 0.9,
    "legend.edgecolor": "#CCCCCC",
    "legend.borderpad": 0.4,
    "legend.handlelength": 1.6,
    "figure.titlesize": FONT_SIZE + 1,
    "axes.prop_cycle": cycler(color=list(PALETTE)),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.8,
    "axes.grid": True,
    "grid.color": "#E5E5E5",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "lines.linewidth": 1.6,
    "lines.markersize": 4.0,
    "xtick.major.width": 0.8,
    "ytick.major.width": 0.8,
    "xtick.major.size": 3.0,
    "ytick.major.size": 3.0,
    "figure.dpi": 100,
    "savefig.dpi": 300,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.03,
    "figure.constrained_layout.use": False,
    # vector output with real text
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.fonttype": "none",
}

_SAVE_RC = {"pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none"}
_FORMATS = ("pdf", "svg", "png", "eps", "ps", "jpg", "jpeg", "tif", "tiff", "webp")


@contextmanager
def paper_style(**overrides: Any) -> Iterator[dict[str, Any]]:
    """Context manager applying :data:`PAPER_RC` (plus ``overrides``) to figures made inside it.

    Parameters
    ----------
    **overrides
        rcParams to change on top of the paper style; dots in names are written as ``__``
        (``font__size=10``) or pass a dict with ``**{"font.size": 10}``.

    Yields
    ------
    dict
        The rcParams in force.

    Examples
    --------
    >>> import matplotlib.pyplot as plt
    >>> with paper_style(**{"font.size": 10}):
    ...     fig, ax = plt.subplots()
    >>> plt.close(fig)
    """
    rc = dict(PAPER_RC)
    for key, value in overrides.items():
        rc[key.replace("__", ".")] = value
    with mpl.rc_context(rc):
        yield rc


@contextmanager
def axes_or_new(ax: Any, figsize: tuple[float, float]) -> Iterator[Any]:
    """``ax`` as given, or the axes of a new ``figsize`` figure drawn in the paper style.

    Examples
    --------
    >>> with axes_or_new(None, (3.0, 2.0)) as ax:
    ...     _ = ax.plot([0, 1], [0, 1])
    >>> ax.figure.get_size_inches().tolist()
    [3.0, 2.0]
    >>> import matplotlib.pyplot as plt; plt.close(ax.figure)
    """
    if ax is not None:
        yield ax
        return
    import matplotlib.pyplot as plt

    with paper_style():
        _, ax = plt.subplots(figsize=figsize)
        yield ax


def color(i: int) -> str:
    """Return the ``i``-th palette colour (cycling)."""
    return PALETTE[i % len(PALETTE)]


def apply_tick_style(ax: Any) -> None:
    """Fix tick-label sizes on ``ax`` now (ticks are otherwise created lazily at draw time,
    outside any style context)."""
    ax.tick_params(axis="both", which="major", labelsize=mpl.rcParams["xtick.labelsize"])


def save_figure(
    fig: Any,
    path: str | os.PathLike[str],
    formats: Sequence[str] | None = None,
    *,
    dpi: float | None = None,
    **savefig_kwargs: Any,
) -> list[Path]:
    """Save ``fig`` as publication files (vector PDF/SVG with real text, PNG).

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure (an Axes is accepted too; its figure is saved).
    path : str or path-like
        Output path with or without a suffix. ``"figs/reliability"`` with the default formats
        writes ``figs/reliability.pdf`` and ``figs/reliability.png``; ``"figs/reliability.svg"``
        without ``formats`` writes just the SVG. Parent folders are created.
    formats : sequence of str, optional
        File formats to write. Default: the suffix of ``path`` when it has a known one,
        otherwise ``("pdf", "png")``.
    dpi : float, optional
        Resolution of raster output (default 300).
    **savefig_kwargs
        Passed on to :meth:`matplotlib.figure.Figure.savefig`.

    Returns
    -------
    list of pathlib.Path
        The files written.

    Examples
    --------
    >>> import matplotlib.pyplot as plt, tempfile, os
    >>> fig, ax = plt.subplots()
    >>> _ = ax.plot([0, 1], [0, 1])
    >>> out = save_figure(fig, os.path.join(tempfile.mkdtemp(), "diag"))
    >>> [p.suffix for p in out]
    ['.pdf', '.png']
    >>> plt.close(fig)
    """
    if fig is None:
        raise TypeError("fig is required, got None")
    if not hasattr(fig, "savefig") and hasattr(fig, "figure"):
        fig = fig.figure
    if not hasattr(fig, "savefig"):
        raise TypeError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or path-like, got {type(path).__name__}")
    p = Path(path)
    if str(p) in ("", "."):
        raise ValueError("path is empty")
    suffix = p.suffix.lower().lstrip(".")
    has_format_suffix = suffix in _FORMATS
    if formats is None:
        formats = (suffix,) if has_format_suffix else ("pdf", "png")
    if isinstance(formats, str):
        formats = (formats,)
    formats = [str(f).lower().lstrip(".") for f in formats]
    if not formats:
        raise ValueError("formats is empty; name at least one format such as 'pdf'")
    for f in formats:
        if f not in _FORMATS:
            raise ValueError(f"formats must be drawn from {_FORMATS}; got {f!r}")
    stem = p.with_suffix("") if has_format_suffix else p
    stem.parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with mpl.rc_context(_SAVE_RC):
        for f in formats:
            out = stem.parent / f"{stem.name}.{f}"
            kwargs: dict[str, Any] = {"bbox_inches": "tight", "pad_inches": 0.03}
            if f == "pdf":
                kwargs["metadata"] = {"CreationDate": None, "Creator": "auq"}
            elif f == "svg":
                kwargs["metadata"] = {"Date": None}
            if f not in ("pdf", "svg", "eps", "ps"):
                kwargs["dpi"] = dpi if dpi is not None else 300
            kwargs.update(savefig_kwargs)
            fig.savefig(out, format=f, **kwargs)
            logger.info("saved figure to %s", out)
            written.append(out)
    return written


def place_legend(
    ax: Any,
    loc: str | None,
    *,
    handles: Sequence[Any] | None = None,
    ncol: int = 1,
    title: str | None = None,
) -> Any:
    """Draw the legend of ``ax``: ``"outside"`` (above the axes, frameless, covering no data),
    any matplotlib location, or ``None`` for no legend. Returns the Legend (or None)."""
    if loc is None:
        return None
    kwargs: dict[str, Any] = {"title": title}
    if handles is not None:
        kwargs["handles"] = list(handles)
    if loc == "outside":
        return ax.legend(
            loc="lower left",
            bbox_to_anchor=(0.0, 1.02),
            borderaxespad=0.0,
            frameon=False,
            ncol=ncol,
            alignment="left",
            columnspacing=1.2,
            **kwargs,
        )
    return ax.legend(loc=loc, ncol=ncol, **kwargs)
