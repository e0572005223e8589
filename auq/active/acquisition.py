"""Acquisition functions: which unlabelled preference pairs are worth a label?

Every function scores ``n`` unlabelled pairs (higher = ask first) from what a model says about
them, in one of the two forms auq models give:

* **member rewards** ``rewards_a``, ``rewards_b`` ``[n_pairs, K]`` (one column per ensemble member,
  MC-dropout pass or posterior draw, like :attr:`auq.models.Predictions.rewards_chosen` and
  ``rewards_rejected``), giving member margins ``m[i, k] = r_k(a_i) - r_k(b_i)``;
* a **Gaussian margin** ``N(margin_mean, margin_var)`` per pair, the exact predictive of the Bayesian
  last layer (:meth:`auq.models.LaplaceRewardModel.predict_pairs`).

The two sides of an unlabelled pair carry no order: every score here is unchanged when the two
sides are swapped (a test checks it), so acquisition cannot peek at which side a data set calls
"chosen".

========================  ========================================================================
``acquisition=``          score of pair ``i``
========================  ========================================================================
``"random"``              i.i.d. uniform draws from ``numpy.random.default_rng(seed)`` (the baseline)
``"bald"``                mutual information between the label and the member,
                          ``H(mean_k σ(m_k)) - mean_k H(σ(m_k))`` (:func:`auq.estimators.decompose`)
``"margin_variance"``     variance of the margin: ``var_k(m_k)`` (population, ``ddof=0``) from
                          members, or ``margin_var`` from a Gaussian
``"ucb"``                 ``κ·sd(m) - |mean(m)|``: how far the interval ``mean ± κ·sd`` reaches
                          past 0 on the side opposite to the mean; ``>= 0`` exactly when the
                          interval contains a tie (the model cannot rule out either winner)
``"thompson"``            double Thompson sampling: per pair, two distinct members ``a ≠ b`` are
                          drawn uniformly (``default_rng(seed)``); score
                          ``1[sign(m_a) ≠ sign(m_b)] + |σ(m_a) - σ(m_b)|`` in ``[0, 2)``: pairs on
                          which the two sampled reward functions pick different winners come
                          first, the larger probability gap first within each group
``"information_gain"``    expected information gain about the head's weights of the Bayesian last
                          layer, ``0.5·log(1 + s·v)`` with ``s = σ(μ)σ(-μ)``, ``μ, v`` the
                          Gaussian margin's mean and variance (see :func:`information_gain`)
========================  ========================================================================

``bald`` and ``thompson`` need member rewards, ``information_gain`` a Gaussian margin;
``margin_variance`` and ``ucb`` take either (the exact Gaussian when both are given).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from auq._checks import as_float_array, check_choice, check_float, check_int
from auq._math import log_sigmoid_pair
from auq.estimators import decompose

__all__ = ["ACQUISITIONS", "acquisition_scores", "information_gain"]

#: the names ``acquisition=`` accepts
ACQUISITIONS = ("random", "bald", "margin_variance", "ucb", "thompson", "information_gain")
_NEEDS_MEMBERS = ("bald", "thompson")
_NEEDS_GAUSSIAN = ("information_gain",)


def _member_margins(rewards_a: Any, rewards_b: Any) -> np.ndarray:
    a = as_float_array(rewards_a, "rewards_a", ndim=(1, 2))
    b = as_float_array(rewards_b, "rewards_b", ndim=(1, 2))
    if a.shape != b.shape:
        raise ValueError(f"rewards_a and rewards_b must have the same shape, got {a.shape} and {b.shape}")
    m = a - b
    return m[:, None] if m.ndim == 1 else m


def _gaussian(margin_mean: Any, margin_var: Any) -> tuple[np.ndarray, np.ndarray]:
    mu = as_float_array(margin_mean, "margin_mean", ndim=1)
    var = as_float_array(margin_var, "margin_var", ndim=1)
    if mu.shape != var.shape:
        raise ValueError(f"margin_mean and margin_var must have the same shape, got {mu.shape} and {var.shape}")
    if (var < 0).any():
        raise ValueError(f"margin_var must be non-negative, got a value of {float(var.min())!r}")
    return mu, var


def information_gain(margin_mean: Any, margin_var: Any) -> np.ndarray:
    """Expected information gain (nats) about a Gaussian last layer from one pair's label.

    With a Gaussian posterior ``w ~ N(w*, Σ)`` over a linear reward head and a pair whose feature
    difference is ``d`` (``μ = w*·d``, ``v = dᵀΣd``), the Bradley-Terry likelihood of its label,
    linearised at ``μ`` as the Laplace approximation does, has curvature ``s = σ(μ)σ(-μ)`` along
    ``d``. The labelled posterior's precision is then ``Σ⁻¹ + s·ddᵀ`` and, by the matrix
    determinant lemma, the entropy of ``w`` falls by

    ``0.5·log det(Σ) - 0.5·log det((Σ⁻¹ + s·ddᵀ)⁻¹) = 0.5·log(1 + s·v)``

    whatever the label turns out to be. Large for pairs the posterior is unsure about (large
    ``v``) whose label is informative (``μ`` near 0, ``s`` near 1/4); ``s`` is computed in
    log-space, so huge ``|μ|`` gives 0, not NaN.

    Parameters
    ----------
    margin_mean, margin_var : array-like, shape [n_pairs]
        Posterior mean and variance of each pair's margin (``margin_mean`` and ``margin_var`` of
        :meth:`auq.models.LaplaceRewardModel.predict_pairs`).

    Returns
    -------
    numpy.ndarray
        float64 ``[n_pairs]``, in nats.

    Examples
    --------
    >>> information_gain([0.0, 0.0, 50.0], [4.0, 0.0, 4.0]).round(4).tolist()  # 0.5·log(1 + 4/4)
    [0.3466, 0.0, 0.0]
    """
    mu, var = _gaussian(margin_mean, margin_var)
    lp, ln = log_sigmoid_pair(torch.from_numpy(mu))
    s = torch.exp(lp + ln).numpy()
    return 0.5 * np.log1p(s * var)


def acquisition_scores(
    acquisition: str,
    rewards_a: Any = None,
    rewards_b: Any = None,
    *,
    margin_mean: Any = None,
    margin_var: Any = None,
    kappa: float = 1.0,
    seed: int = 0,
) -> np.ndarray:
    """Score unlabelled pairs for labelling; higher means ask first (see the module table).

    Parameters
    ----------
    acquisition : {"random", "bald", "margin_variance", "ucb", "thompson", "information_gain"}
    rewards_a, rewards_b : array-like, shape [n_pairs, K] or [n_pairs], optional
        Member rewards of the two sides of each pair (their order does not matter). An
        :class:`auq.models.Predictions` as ``rewards_a`` (and no ``rewards_b``) gives its
        ``rewards_chosen`` and ``rewards_rejected``.
    margin_mean, margin_var : array-like, shape [n_pairs], optional
        A Gaussian predictive of each pair's margin ``a - b`` (e.g. from
        :meth:`auq.models.LaplaceRewardModel.predict_pairs`).
    kappa : float, default 1.0
        Width, in standard deviations, of the ``"ucb"`` interval.
    seed : int, default 0
        Seed of ``"random"`` and of the member draws of ``"thompson"``.

    Returns
    -------
    numpy.ndarray
        float64 scores ``[n_pairs]``.

    Raises
    ------
    ValueError
        An unknown ``acquisition`` (the message lists the choices), NaN/inf or empty input, shapes
        that differ, a negative ``margin_var``, ``"thompson"`` with one member, or an acquisition
        given the wrong kind of input (e.g. ``"information_gain"`` without ``margin_var``).

    Examples
    --------
    >>> ra, rb = [[2.0, -2.0], [3.0, 3.0]], [[0.0, 0.0], [0.0, 0.0]]
    >>> acquisition_scores("bald", ra, rb).round(4).tolist()
    [0.3278, 0.0]
    >>> acquisition_scores("ucb", ra, rb).tolist()  # sd - |mean|
    [2.0, -3.0]
    >>> acquisition_scores("information_gain", margin_mean=[0.0], margin_var=[4.0]).round(4).tolist()
    [0.3466]
    """
    check_choice(acquisition, "acquisition", ACQUISITIONS)
    if rewards_b is None and hasattr(rewards_a, "rewards_chosen") and hasattr(rewards_a, "rewards_rejected"):
        rewards_a, rewards_b = rewards_a.rewards_chosen, rewards_a.rewards_rejected  # auq.models.Predictions
    kappa = check_float(kappa, "kappa", minimum=0.0)
    seed = check_int(seed, "seed", minimum=0)
    have_members = rewards_a is not None or rewards_b is not None
    have_gaussian = margin_mean is not None or margin_var is not None
    if have_members and (rewards_a is None or rewards_b is None):
        raise ValueError("rewards_a and rewards_b must be given together")
    if have_gaussian and (margin_mean is None or margin_var is None):
        raise ValueError("margin_mean and margin_var must be given together")
    m = _member_margins(rewards_a, rewards_b) if have_members else None
    g = _gaussian(margin_mean, margin_var) if have_gaussian else None
    if m is not None and g is not None and m.shape[0] != g[0].shape[0]:
        raise ValueError(f"the member rewards have {m.shape[0]} pairs, margin_mean has {g[0].shape[0]}")
    if m is None and g is None:
        raise ValueError("give member rewards (rewards_a, rewards_b) or a Gaussian margin (margin_mean, margin_var)")
    if acquisition in _NEEDS_MEMBERS and m is None:
        raise ValueError(f"acquisition={acquisition!r} needs member rewards: pass rewards_a and rewards_b")
    if acquisition in _NEEDS_GAUSSIAN and g is None:
        raise ValueError(f"acquisition={acquisition!r} needs a Gaussian margin: pass margin_mean and margin_var")
    n = m.shape[0] if m is not None else g[0].shape[0]

    if acquisition == "random":
        return np.random.default_rng(seed).random(n)
    if acquisition == "bald":
        return np.asarray(decompose(m).epistemic, dtype=np.float64)
    if acquisition == "information_gain":
        return information_gain(*g)
    if acquisition == "thompson":
        return _double_thompson(m, seed)
    # margin_variance and ucb: the exact Gaussian when given, else the members' moments
    if g is not None:
        mean, var = g
    else:
        d = decompose(m)
        mean, var = np.asarray(d.margin_mean), np.asarray(d.margin_std) ** 2
    if acquisition == "margin_variance":
        return np.array(var, dtype=np.float64)
    return kappa * np.sqrt(var) - np.abs(mean)  # "ucb"


def _double_thompson(m: np.ndarray, seed: int) -> np.ndarray:
    """``1[sign(m_a) ≠ sign(m_b)] + |σ(m_a) - σ(m_b)|`` for two distinct members drawn per pair."""
    n, k = m.shape
    if k < 2:
        raise ValueError("acquisition='thompson' needs at least 2 members (reward columns), got 1")
    rng = np.random.default_rng(seed)
    a = rng.integers(0, k, size=n)
    b = (a + rng.integers(1, k, size=n)) % k  # uniform over the k - 1 other members
    rows = np.arange(n)
    ma, mb = m[rows, a], m[rows, b]
    disagree = (np.sign(ma) != np.sign(mb)).astype(np.float64)
    pa, pb = (torch.sigmoid(torch.from_numpy(x)).numpy() for x in (ma, mb))
    return disagree + np.abs(pa - pb)
