"""Batch selection with diversity: a batch of labels should not be ``k`` near-duplicates.

Top-``k`` by score tends to pick clusters: the pairs a model is unsure about are often alike, and
``k`` labels on near-identical pairs teach it about as much as one. :func:`select_batch` takes the
``candidate_factor·k`` best-scored pairs and keeps ``k`` of them spread out in feature space with
greedy k-center (:func:`k_center_greedy`, the 2-approximation of the minimax facility location
problem used by core-set active learning), starting from the best-scored candidate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from auq._checks import as_float_array, check_choice, check_float, check_int

__all__ = ["k_center_greedy", "select_batch"]


def k_center_greedy(features: Any, k: int, *, first: int = 0, centers: Any = None) -> np.ndarray:
    """Greedy k-center: each pick is the point farthest (Euclidean) from all points picked so far.

    Parameters
    ----------
    features : array-like, shape [n, H]
        One row per candidate.
    k : int
        How many to pick, ``1 <= k <= n``.
    first : int, default 0
        Index of the first pick when ``centers`` is not given.
    centers : array-like, shape [m, H], optional
        Points already chosen (e.g. the labelled pairs' features): the first pick is then the
        candidate farthest from them too, and ``first`` is not used.

    Returns
    -------
    numpy.ndarray
        ``k`` distinct int indices into ``features``, in the order picked (ties: the lowest index).

    Examples
    --------
    >>> x = [[0.0], [0.1], [10.0], [5.0], [0.2]]
    >>> k_center_greedy(x, 3).tolist()  # 0, then the farthest (10), then the middle (5)
    [0, 2, 3]
    """
    x = as_float_array(features, "features", ndim=2)
    n = x.shape[0]
    k = check_int(k, "k", minimum=1)
    if k > n:
        raise ValueError(f"k must be <= the number of candidates ({n}), got {k}")
    if centers is not None:
        c = as_float_array(centers, "centers", ndim=2)
        if c.shape[1] != x.shape[1]:
            raise ValueError(f"centers must have {x.shape[1]} columns like features, got shape {c.shape}")
        dist = np.full(n, np.inf)
        for row in c:  # one pass per center keeps memory at O(n)
            dist = np.minimum(dist, np.linalg.norm(x - row, axis=1))
        picks: list[int] = []
    else:
        first = check_int(first, "first", minimum=0, maximum=n - 1)
        picks = [first]
        dist = np.linalg.norm(x - x[first], axis=1)
    while len(picks) < k:
        dist[picks] = -np.inf  # never pick twice (duplicates have distance 0, not -inf)
        nxt = int(np.argmax(dist))
        picks.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(x - x[nxt], axis=1))
    return np.asarray(picks, dtype=np.int64)


def select_batch(
    scores: Any,
    batch_size: int,
    *,
    features: Any = None,
    diversity: str | None = "k_center",
    candidate_factor: float = 4.0,
) -> np.ndarray:
    """Indices of the ``batch_size`` pairs to label next, from acquisition scores.

    Parameters
    ----------
    scores : array-like, shape [n]
        Acquisition scores (higher = ask first), e.g. from
        :func:`auq.active.acquisition_scores`.
    batch_size : int
        How many pairs to pick, ``1 <= batch_size <= n``.
    features : array-like, shape [n, H], optional
        Where the pairs lie, for diversity (e.g. the feature difference ``f(a) - f(b)`` of each
        pair, what a linear Bradley-Terry head sees). Required with ``diversity="k_center"``.
    diversity : {"k_center", None}, default "k_center"
        ``None``: the top ``batch_size`` scores. ``"k_center"``: among the
        ``ceil(candidate_factor·batch_size)`` best-scored pairs (all pairs when fewer),
        :func:`k_center_greedy` from the best-scored one.
    candidate_factor : float, default 4.0
        Size of the shortlist relative to the batch, ``>= 1`` (1 = no diversity).

    Returns
    -------
    numpy.ndarray
        ``batch_size`` distinct int indices into ``scores``; without diversity in decreasing score
        order (ties: the lower index first).

    Examples
    --------
    >>> select_batch([0.1, 0.9, 0.5], 2, diversity=None).tolist()
    [1, 2]
    >>> s, f = [1.0, 0.99, 0.98, 0.0], [[0.0], [0.01], [3.0], [9.0]]
    >>> select_batch(s, 2, features=f, candidate_factor=1.5).tolist()  # not the near-duplicate 1
    [0, 2]
    """
    s = as_float_array(scores, "scores", ndim=1)
    n = s.shape[0]
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    if batch_size > n:
        raise ValueError(f"batch_size must be <= the number of unlabelled pairs ({n}), got {batch_size}")
    check_choice(diversity, "diversity", ("k_center", None))
    candidate_factor = check_float(candidate_factor, "candidate_factor", minimum=1.0)
    order = np.argsort(-s, kind="stable")
    if diversity is None:
        return order[:batch_size].astype(np.int64)
    if features is None:
        raise ValueError("features is required with diversity='k_center' (or pass diversity=None)")
    x = as_float_array(features, "features", ndim=2)
    if x.shape[0] != n:
        raise ValueError(f"features must have one row per score ({n}), got shape {x.shape}")
    n_cand = min(n, max(batch_size, int(np.ceil(candidate_factor * batch_size))))
    shortlist = order[:n_cand]
    picks = k_center_greedy(x[shortlist], batch_size, first=0)
    return shortlist[picks].astype(np.int64)
