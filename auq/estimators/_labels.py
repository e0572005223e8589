"""Label (annotator) uncertainty: the data's own aleatoric uncertainty."""

from __future__ import annotations

from typing import Any

import torch

from auq._checks import as_float_tensor
from auq._math import binary_entropy
from auq.estimators._common import check_unit, compute_dtype, to_unit

__all__ = ["label_uncertainty", "vote_fractions"]


def _fractions(votes: Any) -> tuple[torch.Tensor, Any, torch.dtype]:
    t, restore = as_float_tensor(votes, "votes", ndim=(1, 2))
    out_dtype = t.dtype
    t = t.to(compute_dtype(t))
    v = t.detach()
    if t.ndim == 2:
        if t.shape[1] != 2:
            raise ValueError(
                f"votes must be [n_pairs, 2] counts (chosen, rejected) or 1-D vote fractions, "
                f"got shape {tuple(t.shape)}"
            )
        if bool((v < 0).any()):
            raise ValueError(
                f"votes must be non-negative counts, got a value of {float(v.min())!r}"
            )
        n = t.sum(dim=1)
        zero = (n.detach() == 0).nonzero()
        if zero.numel():
            rows = zero[:5, 0].tolist()
            raise ValueError(
                f"votes has {zero.shape[0]} row(s) with no votes (e.g. rows {rows}); every pair "
                "needs at least one vote"
            )
        q = t[:, 0] / n
    else:
        lo, hi = float(v.min()), float(v.max())
        if lo < 0.0 or hi > 1.0:
            bad = lo if lo < 0.0 else hi
            raise ValueError(f"votes given as 1-D vote fractions must lie in [0, 1], got {bad!r}")
        q = t
    return q, restore, out_dtype


def vote_fractions(votes: Any) -> Any:
    """Fraction of annotators who preferred the chosen response, ``q = n_chosen / n_total``.

    Parameters
    ----------
    votes : array-like or torch.Tensor
        Either ``[n_pairs, 2]`` non-negative vote counts (chosen, rejected; ties such as ``[2, 2]``
        allowed, non-integer weighted votes too; every row needs at least one vote), or 1-D vote
        fractions in [0, 1], returned as they are (validated).

    Returns
    -------
    array, shape [n_pairs]
        NumPy float64 for NumPy/list input; a tensor on the input's device for tensor input.

    Examples
    --------
    >>> vote_fractions([[3, 1], [2, 2]]).tolist()
    [0.75, 0.5]
    """
    q, restore, out_dtype = _fractions(votes)
    return restore(q.to(out_dtype))


def label_uncertainty(votes: Any, *, unit: str = "nats") -> Any:
    """Entropy of the annotators' vote split, ``H(q)``: the data's own aleatoric uncertainty.

    Answers *how much do humans disagree about this pair?* A calibrated reward model's aleatoric
    term (:func:`decompose`) should track it; a pair with ``q = 0.5`` (e.g. votes ``[2, 2]``) has
    ``H = log 2`` nats (1 bit), a unanimous pair 0.

    Parameters
    ----------
    votes : array-like or torch.Tensor
        ``[n_pairs, 2]`` vote counts (chosen, rejected) or 1-D vote fractions in [0, 1]; see
        :func:`vote_fractions`.
    unit : {"nats", "bits"}, default "nats"

    Returns
    -------
    array, shape [n_pairs]
        ``H(q)``; NumPy float64 for NumPy/list input, a tensor for tensor input.

    Raises
    ------
    ValueError
        Negative counts, rows with no votes, fractions outside [0, 1], NaN/inf, empty input,
        a shape other than ``[n, 2]`` or ``[n]``, or an unknown ``unit``.

    Examples
    --------
    >>> label_uncertainty([[2, 2], [4, 0]], unit="bits").tolist()
    [1.0, 0.0]
    """
    unit = check_unit(unit)
    q, restore, out_dtype = _fractions(votes)
    h = to_unit(binary_entropy(q), unit)
    return restore(h.to(out_dtype))
