"""Shared numerically stable formulas (one implementation each, torch-based).

NumPy callers convert through :func:`auq._checks.as_float_tensor` and get NumPy back; the formulas
themselves are written once, in torch, so that losses can differentiate through them.
"""

from __future__ import annotations

import math

import torch

LN2 = math.log(2.0)


def log_sigmoid_pair(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logσ(z), logσ(-z))`` from one ``exp`` and one ``log1p``, both to full relative precision.

    With ``e = exp(-|z|)`` and ``l = log1p(e)``: for ``z >= 0``, ``logσ(z) = -l`` and
    ``logσ(-z) = -z - l``; for ``z < 0`` the mirror image. No cancellation, no overflow.

    Examples
    --------
    >>> lp, ln = log_sigmoid_pair(torch.tensor([0.0, 1e4]))
    >>> [round(float(v), 4) for v in lp], [round(float(v), 4) for v in ln]
    ([-0.6931, -0.0], [-0.6931, -10000.0])
    """
    e = torch.exp(-z.abs())
    log1p_e = torch.log1p(e)
    nonneg = z >= 0
    lp = torch.where(nonneg, -log1p_e, z - log1p_e)
    ln = torch.where(nonneg, -z - log1p_e, -log1p_e)
    return lp, ln


def xlogx(x: torch.Tensor) -> torch.Tensor:
    """``x·log x`` with ``0·log 0 = 0`` and a finite gradient at 0 (for entropies of means)."""
    positive = x > 0
    safe = torch.where(positive, x, torch.ones_like(x))
    return torch.where(positive, safe * torch.log(safe), torch.zeros_like(x))


def binary_entropy_from_logits(z: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of a Bernoulli with logit ``z``, computed in log-space.

    ``H(σ(z)) = -σ(z)·logσ(z) - σ(-z)·logσ(-z)``; finite and exact for any finite ``z``
    (at ``|z| = 1e4`` it is 0, not NaN).

    Examples
    --------
    >>> float(binary_entropy_from_logits(torch.tensor(0.0, dtype=torch.float64)))  # log 2
    0.6931471805599453
    """
    lp, ln = log_sigmoid_pair(z)
    return -(torch.exp(lp) * lp + torch.exp(ln) * ln)


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of a Bernoulli with probability ``p`` in [0, 1]; ``H(0) = H(1) = 0``.

    Examples
    --------
    >>> float(binary_entropy(torch.tensor(0.5, dtype=torch.float64)))
    0.6931471805599453
    """
    return -(torch.xlogy(p, p) + torch.xlogy(1.0 - p, 1.0 - p))


def probit_scaled_logit(margin: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """``m / sqrt(1 + π·v/8)``: the logit of ``E[σ(m + ε)]`` for ``ε ~ N(0, v)`` (probit approximation).

    The one formula for a preference probability that integrates a Gaussian uncertainty about the
    margin: the Bayesian last layer's posterior margin variance, or the learned aleatoric noise of
    heteroscedastic heads (Gaussian Bradley-Terry). ``v = 0`` gives ``m`` back. Differentiable.

    Examples
    --------
    >>> z = probit_scaled_logit(torch.tensor([2.0, 2.0]), torch.tensor([0.0, 8.0 / math.pi]))
    >>> [round(float(v), 4) for v in z]
    [2.0, 1.4142]
    """
    if bool((variance < 0).any()):
        raise ValueError("variance must be non-negative")
    return margin / torch.sqrt(1.0 + (math.pi / 8.0) * variance)
