"""Shared binning for every binned calibration metric (one implementation).

Batch metrics (:func:`~auq.calibration.expected_calibration_error`, the reliability table, the Brier
decomposition, debiased ECE), the bootstrap and the streaming accumulators all assign predictions
to bins and accumulate per-bin sums through this module, so they cannot disagree.

Bin-edge convention
-------------------
Bins are half-open on the right, ``[edge_k, edge_{k+1})``, except the last, which is closed:
``[edge_{n-1}, edge_n]``. Hence

* a prediction lying exactly on an inner edge goes to the bin *above* it (``p = 0.2`` with 5
  uniform bins is in bin 1, ``[0.2, 0.4)``);
* ``p = 0.0`` is in the first bin and ``p = 1.0`` in the last bin (no extra bin for 1.0);
* for ``strategy="uniform"`` the edges are ``k / n_bins`` rounded to float64 (``np.arange(n + 1) /
  n``), so a decimal literal such as ``0.3`` typed by a user is exactly the edge ``3 / 10``.

This is ``np.searchsorted(edges[1:-1], p, side="right")`` and the convention of torchmetrics
(``torch.bucketize(..., right=True)``, except that torchmetrics gives ``p = 1.0`` a bin of its own)
and netcal. scikit-learn's ``calibration_curve`` (1.9) uses ``side="left"``, i.e. bins
``(e_k, e_{k+1}]``: a value exactly on an inner edge goes to the bin *below* there (and its uniform
edges come from ``np.linspace``, which may differ from ``k / n`` in the last ulp). The two agree
for every value not on an edge; the mapping is tested. Uniform bins are computed without a search:
``floor(p * n_bins)`` (clipped to ``n_bins - 1``) agrees with the rule above except on a few
floats within an ulp or two of an edge for some ``n_bins`` (``fl(fl(1/49) * 49) < 1``); those
intervals are precomputed once per ``n_bins`` (:func:`_floor_fixups`) and patched, so the result is
exactly the searchsorted rule at the cost of a multiply.

Weights are frequency weights throughout: a weight of ``c`` behaves like ``c`` copies of the item.
The work is done in cache-sized chunks so that no full-size temporary is allocated besides the
inputs (``np.bincount`` with weights gives the per-bin sums).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable

import numpy as np

__all__ = ["CHUNK", "STATS", "uniform_edges", "quantile_edges", "bin_indices", "bin_sums"]

#: Number of predictions processed per chunk (keeps the temporaries in the CPU cache).
CHUNK = 1 << 16

#: Per-bin statistics :func:`bin_sums` can accumulate (all weighted by the frequency weights, except
#: ``count``, the number of items): ``weight`` = Σw, ``conf`` = Σw·p, ``label`` = Σw·y,
#: ``resid`` = Σw·(p − y), ``conf2`` = Σw·p², ``label2`` = Σw·y², ``conf_label`` = Σw·p·y.
STATS = ("count", "weight", "conf", "label", "resid", "conf2", "label2", "conf_label")


def uniform_edges(n_bins: int) -> np.ndarray:
    """Return the ``n_bins + 1`` equal-width edges ``k / n_bins`` (float64, correctly rounded).

    Examples
    --------
    >>> uniform_edges(4)
    array([0.  , 0.25, 0.5 , 0.75, 1.  ])
    """
    return np.arange(n_bins + 1, dtype=np.float64) / n_bins


def quantile_edges(probs: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-mass edges: the ``k / n_bins`` percentiles of ``probs`` (linear interpolation).

    Computed exactly as scikit-learn's ``calibration_curve(strategy="quantile")`` computes its
    edges. Edges are taken from the predictions alone (weights do
    not move them). Ties can make edges coincide, which leaves empty bins.

    Examples
    --------
    >>> quantile_edges(np.array([0.1, 0.2, 0.3, 0.4, 0.5]), 2)
    array([0.1, 0.3, 0.5])
    """
    return np.percentile(probs, np.linspace(0.0, 1.0, n_bins + 1) * 100)


def _floor_bin(p: float, n_bins: int) -> int:
    return int(math.floor(p * n_bins))


@functools.lru_cache(maxsize=512)
def _floor_fixups(n_bins: int) -> tuple[tuple[float, float, int], ...]:
    """Intervals ``[lo, hi)`` of p where ``floor(fl(p*n))`` differs from the edge rule, with the bin.

    ``floor(fl(p * n))`` is monotone in p, so it is itself an edge rule with edges
    ``f_k = min{p : floor(fl(p * n)) >= k}``, each within a few ulps of ``e_k = fl(k / n)``. Where
    ``f_k != e_k`` the floats between them get the wrong bin; we list them here.
    """
    edges = uniform_edges(n_bins)
    fixes = []
    for k in range(1, n_bins):
        e = float(edges[k])
        f = e
        if _floor_bin(f, n_bins) >= k:
            while _floor_bin(float(np.nextafter(f, 0.0)), n_bins) >= k:
                f = float(np.nextafter(f, 0.0))
        else:
            while _floor_bin(f, n_bins) < k:
                f = float(np.nextafter(f, 1.0))
        if f < e:  # floor puts [f, e) into bin k; the rule says k - 1
            fixes.append((f, e, k - 1))
        elif f > e:  # floor puts [e, f) into bin k - 1; the rule says k
            fixes.append((e, f, k))
    return tuple(fixes)


def _uniform_index(p: np.ndarray, n_bins: int, buf: np.ndarray, out: np.ndarray) -> np.ndarray:
    np.multiply(p, n_bins, out=buf)
    np.minimum(buf, n_bins - 1, out=buf)  # p = 1.0 joins the last bin
    out[...] = buf  # truncation = floor for p >= 0
    for lo, hi, b in _floor_fixups(n_bins):
        mask = (p >= lo) & (p < hi)
        if mask.any():
            out[mask] = b
    return out


def bin_indices(probs: np.ndarray, n_bins: int, edges: np.ndarray | None = None) -> np.ndarray:
    """Bin index (``intp``, in ``[0, n_bins)``) of every prediction, by the module's edge rule.

    ``edges=None`` means uniform bins; otherwise ``edges`` (length ``n_bins + 1``) are used with
    ``searchsorted(edges[1:-1], p, side="right")``.

    Examples
    --------
    >>> bin_indices(np.array([0.0, 0.2, 0.39, 0.4, 1.0]), 5)
    array([0, 1, 1, 2, 4])
    """
    probs = np.asarray(probs, dtype=np.float64)
    if edges is not None:
        return np.searchsorted(edges[1:-1], probs, side="right").astype(np.intp, copy=False)
    out = np.empty(probs.shape, dtype=np.intp)
    buf = np.empty(probs.shape, dtype=np.float64)
    return _uniform_index(probs, n_bins, buf, out)


def bin_sums(
    probs: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray | None,
    n_bins: int,
    stats: Iterable[str],
    edges: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Accumulate per-bin statistics (see :data:`STATS`) in one chunked pass.

    Parameters
    ----------
    probs, labels : numpy.ndarray
        Validated 1-D float64 arrays of equal length (predictions in [0, 1], labels in [0, 1]).
    weights : numpy.ndarray or None
        Optional frequency weights.
    n_bins : int
        Number of bins.
    stats : iterable of str
        Which sums to return (names from :data:`STATS`).
    edges : numpy.ndarray, optional
        Explicit edges (e.g. from :func:`quantile_edges`); ``None`` means uniform bins.

    Returns
    -------
    dict
        ``{name: array of length n_bins}``; ``count`` is int64, the rest float64.

    Examples
    --------
    >>> s = bin_sums(np.array([0.1, 0.7, 0.9]), np.array([0.0, 1.0, 1.0]), None, 2, ["count", "resid"])
    >>> s["count"], s["resid"]
    (array([1, 2]), array([ 0.1, -0.4]))
    """
    stats = tuple(stats)
    for s in stats:
        if s not in STATS:  # internal misuse
            raise ValueError(f"stats must be among {STATS}, got {s!r}")
    out = {s: np.zeros(n_bins, dtype=np.int64 if s == "count" else np.float64) for s in stats}
    n = probs.shape[0]
    size = min(CHUNK, n)
    buf = np.empty(size, dtype=np.float64)
    idx = np.empty(size, dtype=np.intp)
    tmp = np.empty(size, dtype=np.float64)
    for start in range(0, n, CHUNK):
        p = probs[start : start + CHUNK]
        y = labels[start : start + CHUNK]
        w = None if weights is None else weights[start : start + CHUNK]
        m = p.shape[0]
        if m != buf.shape[0]:
            buf, idx, tmp = buf[:m], idx[:m], tmp[:m]
        if edges is None:
            k = _uniform_index(p, n_bins, buf, idx)
        else:
            k = np.searchsorted(edges[1:-1], p, side="right")
        _accumulate(out, k, p, y, w, n_bins, tmp)
    return out


def _accumulate(out, k, p, y, w, n_bins, tmp) -> None:
    def add(name: str, values: np.ndarray | None) -> None:
        if values is None:
            out[name] += np.bincount(k, minlength=n_bins)
        else:
            out[name] += np.bincount(k, weights=values, minlength=n_bins)

    def weighted(v: np.ndarray) -> np.ndarray:
        if w is None:
            return v
        np.multiply(v, w, out=tmp)
        return tmp

    # per-pair products binned as sums: name -> (ufunc, left, right), weighted by w when given
    products = {
        "resid": (np.subtract, p, y),
        "conf2": (np.multiply, p, p),
        "label2": (np.multiply, y, y),
        "conf_label": (np.multiply, p, y),
    }
    for name in out:
        if name == "count":
            add(name, None)
        elif name == "weight":
            add(name, w)  # the count when unweighted
        elif name == "conf":
            add(name, weighted(p))
        elif name == "label":
            add(name, weighted(y))
        elif name in products:
            op, a, b = products[name]
            op(a, b, out=tmp)
            if w is not None:
                tmp *= w
            add(name, tmp)
