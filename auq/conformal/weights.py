"""Per-pair training weights from conformal p-values and set sizes.

A reward model (not trained on the calibration pairs) scores the calibration pairs once; a
:class:`~auq.conformal.PairSetPredictor` fitted on them then turns the reward model's view of any
other pair (e.g. the DPO training pairs) into a weight:

The ``method`` chooses the weight:

* ``"p_value"``: ``w = π(x, labelled side)``, the conformal p-value of the side the data set says
  is preferred (``target >= 0.5``: chosen). A label the reward model finds atypical among the
  calibration labels (a small p-value: it confidently prefers the other side) is down-weighted;
  ``w`` lies in ``[1/(n+1), 1]``, and is uniform over the pairs whose label the model agrees with
  as much as a calibration label typically does.
* ``"in_set"``: ``w = 1[π(x, labelled side) > α]``, i.e. whether the labelled side is in the
  ``1 - α`` prediction set: a hard filter of suspected label noise.
* ``"set_size"``: ``w = 1/|C(x)|``: 1 where the set is a singleton, 1/2 where it is {both} (the
  reward model cannot tell the sides apart at level ``α``). This one ignores the label.

``normalize="mean"`` (default) rescales to mean 1 as :func:`auq.training.uncertainty_weights`
does, so a weighted DPO loss with ``weight_normalization="n"`` keeps the plain loss's scale and the
``Σw``-normalised mean is unchanged by the rescaling. The weights go to
``auq.training.dpo_loss(..., weights=w)`` (and ``robust_dpo_loss``, ``ipo_loss``), or into a
:class:`~auq.data.PreferenceDataset`'s ``weights`` column for the DPO trainer.

These are heuristics built from conformal quantities; the coverage guarantee belongs to the sets,
not to a model trained with the weights.

Examples
--------
>>> sets = PairSetPredictor(alpha=0.25).fit([0.9, 0.8, 0.3, 0.6, 0.7], [1, 1, 1, 0, 1])
>>> conformal_weights(sets, [0.75, 0.75], [1.0, 0.0], method="p_value", normalize=None).round(4)
array([0.6667, 0.1667])
>>> conformal_weights(sets, [0.95, 0.5], [1.0, 1.0], method="set_size", normalize=None)
array([1. , 0.5])
"""

from __future__ import annotations

from typing import Any

import numpy as np

from auq._checks import check_choice, renamed_kwargs

from ._common import check_level, check_prob, check_targets, true_side_is_chosen
from .sets import PairSetPredictor

__all__ = ["conformal_weights"]

_METHODS = ("p_value", "in_set", "set_size")


@renamed_kwargs(scheme="method")
def conformal_weights(
    sets: PairSetPredictor,
    prob: Any,
    targets: Any = None,
    *,
    method: str = "p_value",
    alpha: float | None = None,
    normalize: str | None = "mean",
) -> np.ndarray:
    """Per-pair weights from a fitted :class:`PairSetPredictor` (see the module docstring).

    Parameters
    ----------
    sets : PairSetPredictor
        Fitted on calibration pairs the reward model was not trained on.
    prob : array-like, shape [n]
        The reward model's P(chosen preferred) for the pairs to weight.
    targets : array-like, shape [n], optional
        Their labels (default 1.0: chosen preferred, as in hh-rlhf); not used by ``"set_size"``.
    method : {"p_value", "in_set", "set_size"}
        How a pair's conformal p-values become its weight (see the module docstring); the
        deprecated name ``scheme=`` is accepted with a ``FutureWarning`` for one release.
    alpha : float in (0, 1), optional
        Level of ``"in_set"`` and ``"set_size"``; default ``sets.alpha``.
    normalize : {"mean", None}
        Rescale to mean 1, or keep the raw weights.

    Returns
    -------
    numpy.ndarray, float64, shape [n]

    Raises
    ------
    ValueError
        When every weight is zero (``"in_set"`` with every label outside its set) and
        ``normalize="mean"``.
    """
    if not isinstance(sets, PairSetPredictor):
        raise TypeError(f"sets must be a fitted PairSetPredictor, got {type(sets).__name__}")
    check_choice(method, "method", _METHODS)
    check_choice(normalize, "normalize", ("mean", None))
    level = sets.alpha if alpha is None else check_level(alpha, "alpha")
    p = check_prob(prob)
    t = np.ones_like(p) if targets is None else check_targets(targets, p.shape[0])
    pi_chosen, pi_rejected = sets.p_values(p)
    if method == "set_size":
        size = (pi_chosen > level).astype(np.float64) + (pi_rejected > level)
        w = 1.0 / np.maximum(size, 1.0)  # an empty set counts as the model's preferred side alone
    else:
        pi_label = np.where(true_side_is_chosen(t), pi_chosen, pi_rejected)
        w = pi_label if method == "p_value" else (pi_label > level).astype(np.float64)
    if normalize == "mean":
        total = w.sum()
        if not total > 0:
            raise ValueError(
                f"all weights are zero under method={method!r} (no labelled side is in its "
                f"{1 - level:g} set); nothing to normalise"
            )
        w = w * (w.shape[0] / total)
    return w
