"""Synthetic preference pairs whose label noise varies from response to response (known truth).

The model of the data
---------------------
A response is a feature vector ``x ~ N(0, I_dim)``. Its true reward is ``r(x) = w·x`` and its
annotators judge it with a Gaussian noise of standard deviation ``s(x) = exp(noise_scale · a·x)``,
where ``w = e_0`` and ``a = e_1`` are orthogonal: how good a response is and how inconsistently
it is judged are unrelated. Each annotator of the pair ``(a, b)`` sees
``r(a) + ε_a - r(b) - ε_b`` and prefers ``a`` with the Bradley-Terry probability of ``β`` times
that, so marginally ::

    P(a preferred) = E σ(β (r_a - r_b + ε)),  ε ~ N(0, s_a² + s_b²)

(computed by 64-point Gauss-Hermite quadrature). ``n_votes`` annotators vote independently per
pair; ``n_votes=1`` gives hard labels. On the logit scale the true per-pair noise variance is
``noise_var = β² (s_a² + s_b²)``, the quantity heteroscedastic reward heads estimate
(``var(a) + var(b)``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.special import expit

from auq._checks import check_float, check_int

__all__ = ["HeteroscedasticPreferences", "make_heteroscedastic_preferences"]


@dataclasses.dataclass(frozen=True)
class HeteroscedasticPreferences:
    """Pairs from :func:`make_heteroscedastic_preferences` with their ground truth.

    Attributes
    ----------
    features_a, features_b : ndarray ``[n, dim]``
        The two responses' features (``a`` sits in the "chosen" slot; ``targets`` says how
        often it was preferred).
    targets : ndarray ``[n]``
        Vote share of ``a``: ``votes / n_votes`` (0 or 1 for hard labels).
    votes : ndarray of int ``[n]``
        Number of annotators (of ``n_votes``) who preferred ``a``.
    n_votes : int
        Annotators per pair.
    rewards_a, rewards_b : ndarray ``[n]``
        True rewards ``w·x`` on the logit scale (times ``β``).
    noise_var_a, noise_var_b : ndarray ``[n]``
        True per-response noise variances on the logit scale, ``β² s(x)²``.
    true_probs : ndarray ``[n]``
        ``P(a preferred)``, integrated over the noise.
    """

    features_a: np.ndarray
    features_b: np.ndarray
    targets: np.ndarray
    votes: np.ndarray
    n_votes: int
    rewards_a: np.ndarray
    rewards_b: np.ndarray
    noise_var_a: np.ndarray
    noise_var_b: np.ndarray
    true_probs: np.ndarray

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    @property
    def noise_var(self) -> np.ndarray:
        """True noise variance of each pair's margin, ``noise_var_a + noise_var_b`` ``[n]``."""
        return self.noise_var_a + self.noise_var_b

    @property
    def true_entropy(self) -> np.ndarray:
        """Entropy (nats) of the true label distribution of each pair (its aleatoric uncertainty)."""
        p = np.clip(self.true_probs, 1e-300, 1.0)
        q = np.clip(1.0 - self.true_probs, 1e-300, 1.0)
        return -(self.true_probs * np.log(p) + (1.0 - self.true_probs) * np.log(q))


def make_heteroscedastic_preferences(
    n_pairs: int,
    *,
    dim: int = 8,
    beta: float = 3.0,
    noise_scale: float = 0.75,
    n_votes: int = 1,
    seed: int = 0,
) -> HeteroscedasticPreferences:
    """Draw pairs whose label noise depends on the responses (see :mod:`auq.data.noisy_synthetic`).

    Parameters
    ----------
    n_pairs : int
        Number of pairs.
    dim : int, default 8
        Feature dimensions (>= 2: dimension 0 carries the reward, dimension 1 the noise).
    beta : float, default 3.0
        Bradley-Terry inverse temperature (> 0).
    noise_scale : float, default 0.75
        ``s(x) = exp(noise_scale · x_1)``; 0 gives the same noise for every response.
    n_votes : int, default 1
        Annotators per pair (1: hard labels).
    seed : int, default 0
        Seed of the draw.

    Returns
    -------
    HeteroscedasticPreferences

    Examples
    --------
    >>> d = make_heteroscedastic_preferences(1000, n_votes=5, seed=0)
    >>> d.features_a.shape, set(np.unique(d.votes)) <= set(range(6))
    ((1000, 8), True)
    >>> bool(np.all(d.noise_var > 0))
    True
    """
    n_pairs = check_int(n_pairs, "n_pairs", minimum=1)
    dim = check_int(dim, "dim", minimum=2)
    beta = check_float(beta, "beta", minimum=0.0, inclusive=(False, True))
    noise_scale = check_float(noise_scale, "noise_scale", minimum=0.0)
    n_votes = check_int(n_votes, "n_votes", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    rng = np.random.default_rng(seed)
    xa = rng.standard_normal((n_pairs, dim))
    xb = rng.standard_normal((n_pairs, dim))
    ra, rb = beta * xa[:, 0], beta * xb[:, 0]
    va = beta**2 * np.exp(2.0 * noise_scale * xa[:, 1])
    vb = beta**2 * np.exp(2.0 * noise_scale * xb[:, 1])
    nodes, w = np.polynomial.hermite_e.hermegauss(64)  # E f(Z), Z ~ N(0, 1)
    eps = np.sqrt(va + vb)[:, None] * nodes[None, :]
    probs = expit(ra[:, None] - rb[:, None] + eps) @ (w / w.sum())
    probs = np.clip(probs, 0.0, 1.0)
    votes = rng.binomial(n_votes, probs)
    return HeteroscedasticPreferences(
        features_a=xa,
        features_b=xb,
        targets=votes / n_votes,
        votes=votes,
        n_votes=n_votes,
        rewards_a=ra,
        rewards_b=rb,
        noise_var_a=va,
        noise_var_b=vb,
        true_probs=probs,
    )
