"""Shared numerically stable formulas (one implementation each, torch-based).

NumPy callers convert through :func:`auq._checks.as_float_tensor` and get NumPy back; the formulas
themselves are written once, in torch, so that losses can differentiate through them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LN2 = math.log(2.0)


def binary_entropy_from_logits(z: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of a Bernoulli with logit ``z``, computed in log-space.

    ``H(σ(z)) = -σ(z)·logσ(z) - σ(-z)·logσ(-z)``; finite and exact for any finite ``z``
    (at ``|z| = 1e4`` it is 0, not NaN).

    Examples
    --------
    >>> float(binary_entropy_from_logits(torch.tensor(0.0)))  # log 2
    0.6931471805599453
    """
    return -(torch.sigmoid(z) * F.logsigmoid(z) + torch.sigmoid(-z) * F.logsigmoid(-z))


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of a Bernoulli with probability ``p`` in [0, 1]; ``H(0) = H(1) = 0``.

    Examples
    --------
    >>> float(binary_entropy(torch.tensor(0.5, dtype=torch.float64)))
    0.6931471805599453
    """
    return -(torch.xlogy(p, p) + torch.xlogy(1.0 - p, 1.0 - p))
