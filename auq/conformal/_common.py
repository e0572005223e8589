"""Shared pieces of :mod:`auq.conformal`: argument checks, the split-conformal quantile and
reading pairs from :class:`~auq.models.Predictions` or plain arrays.

Conventions for pairs (used by every module of the package):

* ``prob`` is the model's probability that the *chosen* response is preferred.
* ``targets`` are labels ``P(chosen preferred)`` in [0, 1], soft allowed (e.g. annotator vote
  shares). The *true side* of a pair is "chosen" when ``target >= 0.5`` and "rejected" otherwise;
  a tie (``target == 0.5``, no majority) therefore counts as "chosen", the side the data set
  lists first. Hard hh-rlhf labels are all 1.0, so every true side is "chosen" there.
* The model *predicts* chosen when ``prob >= 0.5`` (a tie goes to chosen, by the same rule), so a
  pair is correct when the predicted and the true side agree.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from auq._checks import as_float_array, check_float, check_labels, check_probabilities

__all__ = ["conformal_quantile", "pair_correctness", "pair_scores"]

_SCORES = ("total", "aleatoric", "epistemic", "margin_std", "confidence")


def check_level(value: Any, name: str) -> float:
    """``alpha``/``delta``: a real number strictly between 0 and 1."""
    return check_float(value, name, minimum=0.0, maximum=1.0, inclusive=(False, False))


def check_prob(prob: Any, name: str = "prob") -> np.ndarray:
    p = as_float_array(prob, name, ndim=1)
    check_probabilities(p, name)
    return p


def check_targets(targets: Any, n: int, name: str = "targets", other: str = "prob") -> np.ndarray:
    t = as_float_array(targets, name, ndim=1)
    check_labels(t, name)
    if t.shape[0] != n:
        raise ValueError(f"{name} and {other} must have the same length, got {t.shape[0]} and {n}")
    return t


def true_side_is_chosen(targets: np.ndarray) -> np.ndarray:
    """``target >= 0.5``: the chosen response is the true side (ties count as chosen)."""
    return targets >= 0.5


def conformal_quantile(scores: Any, alpha: float) -> float:
    """The split-conformal quantile: the ``k``-th smallest of ``n`` scores, ``k = ceil((n+1)(1-α))``.

    With ``k > n`` (too few scores for the level) it is ``+inf``: every candidate is kept. A new
    score exchangeable with the ``n`` is then ``<=`` the quantile with probability ``>= 1 - α``
    (Vovk et al. 2005; Lei et al. 2018).

    Examples
    --------
    >>> conformal_quantile([0.1, 0.4, 0.2, 0.9, 0.3], 0.2)  # k = ceil(6 * 0.8) = 5
    0.9
    >>> conformal_quantile([0.1, 0.4, 0.2, 0.9, 0.3], 0.4)  # k = ceil(6 * 0.6) = 4
    0.4
    >>> conformal_quantile([0.1, 0.4], 0.2)  # k = 3 > n
    inf
    """
    s = as_float_array(scores, "scores", ndim=1)
    alpha = check_level(alpha, "alpha")
    n = s.shape[0]
    # (n+1)(1-α) in floating point can land a hair above an integer: round to 12 digits first
    k = math.ceil(round((n + 1) * (1.0 - alpha), 12))
    if k > n:
        return math.inf
    return float(np.partition(s, k - 1)[k - 1])


def pair_correctness(prob: Any, targets: Any) -> np.ndarray:
    """1.0 where the predicted side (``prob >= 0.5``) is the true side (``target >= 0.5``), else 0.0.

    Examples
    --------
    >>> pair_correctness([0.8, 0.3, 0.5], [1.0, 1.0, 0.2])
    array([1., 0., 0.])
    """
    p = check_prob(prob)
    t = check_targets(targets, p.shape[0])
    return ((p >= 0.5) == true_side_is_chosen(t)).astype(np.float64)


def pair_scores(predictions: Any, score: str = "total") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(scores, prob, targets)`` of scored pairs (:class:`~auq.models.Predictions`).

    Parameters
    ----------
    predictions : Predictions
        Anything with ``decompose()`` (giving ``prob``, ``total``, ``aleatoric``, ``epistemic``),
        ``reward_stats()`` and ``targets``.
    score : {"total", "aleatoric", "epistemic", "margin_std", "confidence"}
        The uncertainty to threshold (lower = more confident). ``"confidence"`` is
        ``1 - max(p, 1 - p)``, which orders pairs like ``"total"`` (the entropy of the mean
        probability is a decreasing function of ``|p - 0.5|``).

    Returns
    -------
    scores, prob, targets : numpy.ndarray, float64, shape [n_pairs]

    Examples
    --------
    >>> s, p, t = pair_scores(preds, "epistemic")  # doctest: +SKIP
    """
    if not callable(getattr(predictions, "decompose", None)) or not hasattr(predictions, "targets"):
        raise TypeError(
            f"predictions must be an auq Predictions (with decompose() and targets), got {type(predictions).__name__}"
        )
    if score not in _SCORES:
        raise ValueError(f"score must be one of {', '.join(map(repr, _SCORES))}; got {score!r}")
    dec = predictions.decompose()
    prob = np.asarray(dec.prob, dtype=np.float64)
    if score == "confidence":
        s = 1.0 - np.maximum(prob, 1.0 - prob)
    elif score == "margin_std":
        s = np.asarray(dec.margin_std, dtype=np.float64)
    else:
        s = np.asarray(getattr(dec, score), dtype=np.float64)
    return s, prob, np.asarray(predictions.targets, dtype=np.float64)
