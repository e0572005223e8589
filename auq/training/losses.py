"""Uncertainty-aware preference losses (torch, differentiable, log-space).

One implementation per formula. Every loss takes per-pair quantities (rewards or sequence
log-probabilities), optional per-pair ``weights`` and soft ``targets``, and a ``reduction``:

* Soft targets. ``q = P(chosen preferred)`` (annotator vote fraction, ensemble probability) turns
  the logistic loss ``-logsigmoid(z)`` into the binary cross-entropy
  ``-q·logsigmoid(z) - (1-q)·logsigmoid(-z)``; ``q ≡ 1`` is the plain loss and a constant ``q`` is
  label smoothing (cDPO).
* Weights. Per-pair weights ``w >= 0`` multiply the per-pair loss. ``reduction="mean"`` divides by
  ``Σw`` (``normalize="weights"``, the default: a weighted average, so rescaling all weights changes
  nothing) or by the number of pairs ``n`` (``normalize="n"``: pairs with a small weight shrink the
  loss, as if they were partly dropped). A batch whose weights are all zero gives a loss of 0 (and
  zero gradients), never NaN. ``reduction="sum"`` gives ``Σ w·loss``, ``reduction="none"`` the
  per-pair ``w·loss``.

With ``weights ≡ 1`` and ``targets ≡ 1`` every variant here equals its plain counterpart, and the DPO
family equals TRL's ``DPOTrainer`` losses (``sigmoid``, ``robust``, ``ipo``; tested against the
installed TRL).

Bad input raises ``ValueError``/``TypeError`` naming the argument: NaN or negative weights, targets
outside [0, 1], log-probabilities of different shapes, ``beta <= 0``, ``coef < 0``.
"""

from __future__ import annotations

import logging
import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from auq._checks import (
    as_float_tensor,
    check_choice,
    check_float,
    check_labels,
    check_same_shape,
)
from auq._math import probit_scaled_logit

logger = logging.getLogger(__name__)

__all__ = [
    "bradley_terry_loss",
    "dpo_logits",
    "dpo_loss",
    "dpo_implicit_rewards",
    "ImplicitRewards",
    "robust_dpo_loss",
    "ipo_loss",
    "flip_rate_from_uncertainty",
    "uncertainty_weights",
    "penalized_reward",
    "PolicyLossOutput",
    "ppo_loss",
    "value_loss",
    "kl_penalty",
    "compute_gae",
    "whiten",
    "masked_mean",
]

_REDUCTIONS = ("mean", "sum", "none")
_NORMALIZE = ("weights", "n")


# --------------------------------------------------------------------------------------------
# validation helpers (private; candidates for auq._checks)
# --------------------------------------------------------------------------------------------


def _tensor(x: Any, name: str, *, like: torch.Tensor | None = None, ndim=None) -> torch.Tensor:
    t, _ = as_float_tensor(x, name, ndim=ndim, like=like)
    if like is not None and t.device != like.device:
        t = t.to(like.device)
    return t


def _check_weights_tensor(weights: Any, name: str, like: torch.Tensor) -> torch.Tensor:
    """Finite, non-negative weights broadcastable to ``like``; returned on ``like``'s device/dtype."""
    w = _tensor(weights, name, like=like)
    if bool((w < 0).any()):
        raise ValueError(f"{name} must be non-negative, got a value of {float(w.min())!r}")
    return w.to(like.dtype)


def _check_targets_tensor(targets: Any, name: str, like: torch.Tensor) -> torch.Tensor:
    q = _tensor(targets, name, like=like)
    check_labels(q.detach(), name)
    return q.to(like.dtype)


def _per_pair(x: torch.Tensor, name: str, n: int, ndim_like: int) -> torch.Tensor:
    """Check a per-pair tensor has length ``n`` and shape it to broadcast over members."""
    if x.ndim == 0:
        return x
    if x.shape[0] != n:
        raise ValueError(f"{name} must have one value per pair ({n}), got shape {tuple(x.shape)}")
    if x.ndim == 1 and ndim_like == 2:
        return x[:, None]
    return x


def _soft_logistic(z: torch.Tensor, q: torch.Tensor | None) -> torch.Tensor:
    """``-q·logsigmoid(z) - (1-q)·logsigmoid(-z)``; ``q=None`` is ``-logsigmoid(z)`` exactly."""
    if q is None:
        return -F.logsigmoid(z)
    return -q * F.logsigmoid(z) - (1.0 - q) * F.logsigmoid(-z)


def _reduce(
    losses: torch.Tensor,
    weights: torch.Tensor | None,
    reduction: str,
    normalize: str = "weights",
) -> torch.Tensor:
    """Weighted reduction over the first (pair) dimension; see the module docstring."""
    if weights is not None:
        losses = losses * weights
    if reduction == "none":
        return losses
    total = losses.sum(dim=0)
    if reduction == "mean":
        if weights is None or normalize == "n":
            total = total / losses.shape[0]
        else:
            denom = torch.broadcast_to(weights, losses.shape).sum(dim=0)
            # all-zero weights: numerator is 0 too, so the loss is 0 (with a graph), not NaN
            total = total / torch.where(denom > 0, denom, torch.ones_like(denom))
    return total.mean() if total.ndim > 0 else total


# --------------------------------------------------------------------------------------------
# reward models
# --------------------------------------------------------------------------------------------


def bradley_terry_loss(
    rewards_chosen: Any,
    rewards_rejected: Any,
    *,
    margin: Any = None,
    targets: Any = None,
    weights: Any = None,
    reduction: str = "mean",
    noise_var: Any = None,
) -> torch.Tensor:
    """Bradley–Terry (pairwise logistic) loss for reward models, one or several members.

    Per pair and member, with ``z = r_chosen - r_rejected - margin`` (TRL ``RewardTrainer``'s
    margin convention: the chosen reward must beat the rejected one *by* the margin),
    ``loss = -q·logsigmoid(z) - (1-q)·logsigmoid(-z)`` (``q ≡ 1`` without ``targets``).

    Gaussian Bradley-Terry (heteroscedastic heads): with ``noise_var = v`` each response's reward
    is Gaussian, the two variances add up to ``v = var_chosen + var_rejected``, and the pair's
    probability integrates the noise, ``P(chosen) ≈ σ(probit_scaled_logit(z, v))``
    ``= σ(z / sqrt(1 + π·v/8))``; the loss above is then taken at that logit. ``noise_var=None``
    (or zeros) is the plain loss exactly.

    Parameters
    ----------
    rewards_chosen, rewards_rejected : Tensor ``[B]`` or ``[B, K]``
        Rewards of the two sides; ``K`` ensemble members share the pairs.
    margin : Tensor ``[B]`` or float, optional
        Required reward gap per pair (e.g. from annotator strength ratings).
    targets : Tensor ``[B]`` (or ``[B, K]``), optional
        Soft labels ``q = P(chosen preferred)`` in [0, 1].
    weights : Tensor ``[B]`` or ``[B, K]``, optional
        Non-negative per-pair weights; ``[B, K]`` gives each member its own weights, e.g. bootstrap
        counts (a pair drawn twice for member k has weight 2, an out-of-bag pair 0).
    reduction : {"mean", "sum", "none"}
        ``"mean"``: weighted mean over pairs, normalised by ``Σw`` *per member* (each member's loss
        is its own weighted average), then averaged over members. ``"sum"``: ``Σ_b w·loss`` per
        member, averaged over members. ``"none"``: the ``w·loss`` tensor, same shape as the rewards.
    noise_var : Tensor ``[B]`` or ``[B, K]``, optional
        Non-negative, finite noise variance of each pair's margin (per member), e.g.
        ``var_chosen + var_rejected`` from ``model.forward_with_variance``. Differentiable.

    Returns
    -------
    Tensor
        Scalar loss (or per-pair losses for ``"none"``), differentiable in the rewards.

    Examples
    --------
    >>> rc = torch.tensor([[1.0, 2.0], [0.0, 0.5]]); rr = torch.zeros(2, 2)
    >>> float(bradley_terry_loss(rc, rr, weights=torch.tensor([[1.0, 0.0], [1.0, 2.0]]))) > 0
    True
    >>> v = torch.full((2, 2), 8.0 / math.pi)  # scales every logit by 1/sqrt(2)
    >>> l1 = bradley_terry_loss(rc, rr, noise_var=v, reduction="none")
    >>> l2 = bradley_terry_loss(rc / math.sqrt(2.0), rr, reduction="none")
    >>> bool(torch.allclose(l1, l2))
    True
    """
    reduction = check_choice(reduction, "reduction", _REDUCTIONS)
    rc, _ = as_float_tensor(rewards_chosen, "rewards_chosen", ndim=(1, 2))
    rr = _tensor(rewards_rejected, "rewards_rejected", like=rc, ndim=(1, 2))
    check_same_shape(rc, rr, "rewards_chosen", "rewards_rejected")
    n = rc.shape[0]
    z = rc - rr
    if margin is not None:
        if isinstance(margin, (int, float)):
            m = torch.as_tensor(float(check_float(margin, "margin")), dtype=rc.dtype, device=rc.device)
        else:
            m = _per_pair(_tensor(margin, "margin", like=rc, ndim=(0, 1, 2)), "margin", n, rc.ndim)
        z = z - m
    if noise_var is not None:
        v = _per_pair(_tensor(noise_var, "noise_var", like=rc, ndim=(1, 2)), "noise_var", n, rc.ndim)
        if v.ndim > rc.ndim or (v.ndim == 2 and v.shape[1] not in (1, rc.shape[1])):
            raise ValueError(
                f"noise_var must have shape [B] or [B, K] matching the rewards {tuple(rc.shape)}, "
                f"got {tuple(v.shape)}"
            )
        if bool((v < 0).any()):
            raise ValueError(f"noise_var must be non-negative, got a value of {float(v.min())!r}")
        z = probit_scaled_logit(z, v.to(z.dtype))
    q = None
    if targets is not None:
        q = _per_pair(_check_targets_tensor(targets, "targets", rc), "targets", n, rc.ndim)
        if q.ndim > rc.ndim or (q.ndim == 2 and q.shape[1] not in (1, rc.shape[1])):
            raise ValueError(
                f"targets must have shape [B] or [B, K] matching the rewards {tuple(rc.shape)}, "
                f"got {tuple(q.shape)}"
            )
    w = None
    if weights is not None:
        w = _per_pair(_check_weights_tensor(weights, "weights", rc), "weights", n, rc.ndim)
        if w.ndim != rc.ndim or (rc.ndim == 2 and w.shape[1] not in (1, rc.shape[1])):
            raise ValueError(
                f"weights must have shape [B] or [B, K] matching the rewards {tuple(rc.shape)}, "
                f"got {tuple(w.shape)}"
            )
    return _reduce(_soft_logistic(z, q), w, reduction)


# --------------------------------------------------------------------------------------------
# DPO family
# --------------------------------------------------------------------------------------------


def _logps(
    policy_chosen_logps: Any,
    policy_rejected_logps: Any,
    ref_chosen_logps: Any,
    ref_rejected_logps: Any,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    pc, _ = as_float_tensor(policy_chosen_logps, "policy_chosen_logps", ndim=1)
    out = [pc]
    for x, name in (
        (policy_rejected_logps, "policy_rejected_logps"),
        (ref_chosen_logps, "ref_chosen_logps"),
        (ref_rejected_logps, "ref_rejected_logps"),
    ):
        t = _tensor(x, name, like=pc, ndim=1)
        check_same_shape(pc, t, "policy_chosen_logps", name)
        out.append(t)
    return tuple(out)  # type: ignore[return-value]


def _check_beta(beta: Any, name: str = "beta") -> float:
    return check_float(beta, name, minimum=0.0, inclusive=(False, True))


def dpo_logits(
    policy_chosen_logps: Any,
    policy_rejected_logps: Any,
    ref_chosen_logps: Any,
    ref_rejected_logps: Any,
    beta: float = 0.1,
) -> torch.Tensor:
    """DPO logit ``z = β[(log π(c) - log π_ref(c)) - (log π(r) - log π_ref(r))]`` per pair.

    ``σ(z)`` is the policy's implied probability that the chosen response is preferred.

    Examples
    --------
    >>> float(dpo_logits(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]),
    ...                  torch.tensor([-2.0]), beta=0.5)[0])
    1.0
    """
    beta = _check_beta(beta)
    pc, pr, rc, rr = _logps(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    # same order of operations as TRL's DPOTrainer, so values agree bit for bit
    return beta * ((pc - rc) - (pr - rr))


class ImplicitRewards(NamedTuple):
    """DPO implicit rewards ``β·log(π/π_ref)`` of the chosen and rejected responses ``[B]``."""

    chosen: torch.Tensor
    rejected: torch.Tensor

    @property
    def margins(self) -> torch.Tensor:
        """``chosen - rejected`` (the DPO logit)."""
        return self.chosen - self.rejected

    @property
    def accuracy(self) -> torch.Tensor:
        """Fraction of pairs whose chosen reward is strictly larger (TRL's ``rewards/accuracies``)."""
        return (self.chosen > self.rejected).float().mean()


def dpo_implicit_rewards(
    policy_chosen_logps: Any,
    policy_rejected_logps: Any,
    ref_chosen_logps: Any,
    ref_rejected_logps: Any,
    beta: float = 0.1,
) -> ImplicitRewards:
    """Implicit rewards ``β(log π - log π_ref)`` for logging (detached), as TRL logs them.

    Examples
    --------
    >>> r = dpo_implicit_rewards(torch.tensor([-1.0]), torch.tensor([-3.0]),
    ...                          torch.tensor([-2.0]), torch.tensor([-2.0]), beta=1.0)
    >>> float(r.margins[0]), float(r.accuracy)
    (2.0, 1.0)
    """
    beta = _check_beta(beta)
    pc, pr, rc, rr = _logps(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return ImplicitRewards((beta * (pc - rc)).detach(), (beta * (pr - rr)).detach())


def _pair_options(z: torch.Tensor, weights: Any, targets: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    n = z.shape[0]
    w = q = None
    if weights is not None:
        w = _check_weights_tensor(weights, "weights", z)
        if w.shape != (n,):
            raise ValueError(f"weights must have shape ({n},) (one per pair), got {tuple(w.shape)}")
    if targets is not None:
        q = _check_targets_tensor(targets, "targets", z)
        if q.ndim != 0 and q.shape != (n,):
            raise ValueError(f"targets must be a scalar or have shape ({n},), got {tuple(q.shape)}")
    return w, q


def dpo_loss(
    policy_chosen_logps: Any,
    policy_rejected_logps: Any,
    ref_chosen_logps: Any,
    ref_rejected_logps: Any,
    beta: float = 0.1,
    weights: Any = None,
    targets: Any = None,
    reduction: str = "mean",
    normalize: str = "weights",
) -> torch.Tensor:
    """Sigmoid DPO loss with per-pair weights and soft targets.

    Per pair ``loss = -q·logsigmoid(z) - (1-q)·logsigmoid(-z)`` with ``z`` from :func:`dpo_logits`;
    without ``targets`` it is ``-logsigmoid(z)`` (Rafailov et al. 2023). A constant ``q = 1 - ε`` is
    conservative DPO / label smoothing. The weighted mean divides by ``Σw`` (``normalize="weights"``)
    or by the number of pairs (``normalize="n"``); see the module docstring.

    Parameters
    ----------
    policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps : Tensor ``[B]``
        Summed response log-probabilities under the policy and the reference.
    beta : float
        KL strength ``β > 0``.
    weights : Tensor ``[B]``, optional
        Non-negative per-pair weights (e.g. :func:`uncertainty_weights`).
    targets : Tensor ``[B]`` or float, optional
        Soft labels ``q = P(chosen preferred)`` in [0, 1].
    reduction : {"mean", "sum", "none"}
    normalize : {"weights", "n"}
        Denominator of the weighted mean.

    Examples
    --------
    >>> pc, pr = torch.tensor([-1.0, -2.0]), torch.tensor([-2.0, -1.0])
    >>> ref = torch.tensor([-1.5, -1.5])
    >>> round(float(dpo_loss(pc, pr, ref, ref, beta=1.0)), 4)
    0.8133
    """
    reduction = check_choice(reduction, "reduction", _REDUCTIONS)
    normalize = check_choice(normalize, "normalize", _NORMALIZE)
    z = dpo_logits(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    w, q = _pair_options(z, weights, targets)
    return _reduce(_soft_logistic(z, q), w, reduction, normalize)


def robust_dpo_loss(
    policy_chosen_logps: Any,
    policy_rejected_logps: Any,
    ref_chosen_logps: Any,
    ref_rejected_logps: Any,
    beta: float = 0.1,
    epsilon: Any = 0.1,
    weights: Any = None,
    reduction: str = "mean",
    normalize: str = "weights",
) -> torch.Tensor:
    """Robust DPO (Chowdhury et al. 2024, rDPO) with a global or per-pair label-flip rate ``ε``.

    Per pair ``[-(1-ε)·logsigmoid(z) + ε·logsigmoid(-z)] / (1 - 2ε)``: an unbiased estimate of the
    clean-label loss when each label is flipped with probability ``ε``. For a scalar ``epsilon`` it
    equals TRL's ``loss_type="robust"`` with ``label_smoothing=epsilon``. A per-pair ``epsilon``
    (e.g. :func:`flip_rate_from_uncertainty` of an ensemble's uncertainty) puts the correction where
    labels are doubtful. ``ε = 0`` is plain DPO.

    Parameters
    ----------
    epsilon : float or Tensor ``[B]``
        Flip rates in ``[0, 0.5)``.

    Examples
    --------
    >>> pc, pr = torch.tensor([-1.0, -2.0]), torch.tensor([-2.0, -1.0])
    >>> ref = torch.tensor([-1.5, -1.5])
    >>> bool(robust_dpo_loss(pc, pr, ref, ref, beta=1.0, epsilon=0.0) == dpo_loss(pc, pr, ref, ref, beta=1.0))
    True
    """
    reduction = check_choice(reduction, "reduction", _REDUCTIONS)
    normalize = check_choice(normalize, "normalize", _NORMALIZE)
    z = dpo_logits(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    w, _ = _pair_options(z, weights, None)
    if isinstance(epsilon, (int, float)):
        eps: Any = check_float(epsilon, "epsilon", minimum=0.0, maximum=0.5, inclusive=(True, False))
    else:
        eps = _tensor(epsilon, "epsilon", like=z, ndim=(0, 1)).to(z.dtype)
        if eps.ndim == 1 and eps.shape != z.shape:
            raise ValueError(f"epsilon must be a scalar or have shape {tuple(z.shape)}, got {tuple(eps.shape)}")
        lo, hi = float(eps.min()), float(eps.max())
        if lo < 0.0 or hi >= 0.5:
            raise ValueError(f"epsilon must lie in [0, 0.5), got a value of {lo if lo < 0 else hi!r}")
    clean = -(1 - eps) * F.logsigmoid(z)
    flipped = -eps * F.logsigmoid(-z)
    losses = (clean - flipped) / (1 - 2 * eps)
    return _reduce(losses, w, reduction, normalize)


def ipo_loss(
    policy_chosen_logps: Any,
    policy_rejected_logps: Any,
    ref_chosen_logps: Any,
    ref_rejected_logps: Any,
    tau: float = 0.1,
    chosen_lengths: Any = None,
    rejected_lengths: Any = None,
    weights: Any = None,
    targets: Any = None,
    reduction: str = "mean",
    normalize: str = "weights",
) -> torch.Tensor:
    """IPO loss (Azar et al. 2023, Eq. 17) with optional length normalisation and soft targets.

    ``h = (log π(c) - log π_ref(c))/len_c - (log π(r) - log π_ref(r))/len_r`` and per pair
    ``(h - (q - 1/2)/τ)^2``; with ``q = 1`` the target is ``1/(2τ)``. Without lengths ``len = 1``
    (sequence-level IPO, as in the paper). TRL's ``loss_type="ipo"`` (``beta = τ``) divides by the
    number of completion tokens: pass ``chosen_lengths``/``rejected_lengths`` to match it. A length
    of 0 (a response with no scored token, whose log-prob sum is 0) counts as 1; a negative length
    is a ValueError.

    Examples
    --------
    >>> z = torch.zeros(2)
    >>> float(ipo_loss(z, z, z, z, tau=0.5))  # (0 - 1)^2
    1.0
    """
    reduction = check_choice(reduction, "reduction", _REDUCTIONS)
    normalize = check_choice(normalize, "normalize", _NORMALIZE)
    tau = _check_beta(tau, "tau")
    pc, pr, rc, rr = _logps(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    chosen = pc - rc
    rejected = pr - rr
    if chosen_lengths is not None:
        chosen = chosen / _ipo_lengths(chosen_lengths, "chosen_lengths", pc)
    if rejected_lengths is not None:
        rejected = rejected / _ipo_lengths(rejected_lengths, "rejected_lengths", pc)
    h = chosen - rejected
    w, q = _pair_options(h, weights, targets)
    target = 1 / (2 * tau) if q is None else (q - 0.5) / tau
    return _reduce((h - target) ** 2, w, reduction, normalize)


def _ipo_lengths(lengths: Any, name: str, like: torch.Tensor) -> torch.Tensor:
    """Per-pair token counts for IPO's length normalisation: non-negative, 0 counted as 1."""
    n = _tensor(lengths, name, like=like, ndim=1)
    check_same_shape(like, n, "policy_chosen_logps", name)
    if bool((n < 0).any()):
        raise ValueError(f"{name} must be non-negative token counts, got a value of {float(n.min())!r}")
    return n.clamp(min=1.0)


def _inverse_binary_entropy(h: torch.Tensor, n_iter: int = 60) -> torch.Tensor:
    """``p in [0, 1/2]`` with ``H(p) = h`` (nats), by bisection; ``h`` clipped to ``[0, log 2]``."""
    h = h.clamp(0.0, math.log(2.0))
    lo = torch.zeros_like(h)
    hi = torch.full_like(h, 0.5)
    for _ in range(n_iter):
        mid = (lo + hi) / 2
        hm = -(torch.xlogy(mid, mid) + torch.xlogy(1 - mid, 1 - mid))
        below = hm < h
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    return torch.where(h > 0, (lo + hi) / 2, torch.zeros_like(h))


def flip_rate_from_uncertainty(u: Any, *, kind: str = "prob", max_rate: float = 0.45) -> Any:
    """Per-pair label-flip rate ``ε`` for :func:`robust_dpo_loss`, from a model's view of each pair.

    * ``kind="prob"``: ``u`` is an (ensemble) probability that the *chosen* response is preferred.
      ``ε = clip(1 - u, 0, max_rate)``: the model's probability that the recorded label is wrong,
      capped below 1/2 (where rDPO's correction diverges). This rate depends on the recorded
      label: do not feed it to :func:`robust_dpo_loss` per pair (rDPO then divides exactly the
      doubted pairs' loss by ``1 - 2ε`` and amplifies them; measured: accuracy below chance).
    * ``kind="entropy"``: ``u`` is the total predictive entropy of the pair in nats (e.g.
      ``Decomposition.total``), ignoring which side the model favours. ``ε = min(H⁻¹(u), max_rate)``
      where ``H⁻¹`` maps an entropy back to the minority probability ``p <= 1/2`` with ``H(p) = u``.

    numpy in, numpy out; torch in, torch out (no gradient needed: flip rates are data).

    Examples
    --------
    >>> import numpy as np
    >>> flip_rate_from_uncertainty(np.array([0.9, 0.3]))
    array([0.1 , 0.45])
    >>> flip_rate_from_uncertainty(np.array([np.log(2)]), kind="entropy", max_rate=0.49).round(3)
    array([0.49])
    """
    kind = check_choice(kind, "kind", ("prob", "entropy"))
    max_rate = check_float(max_rate, "max_rate", minimum=0.0, maximum=0.5, inclusive=(True, False))
    t, restore = as_float_tensor(u, "u")
    t = t.detach()
    if kind == "prob":
        check_labels(t, "u")
        eps = (1.0 - t).clamp(0.0, max_rate)
    else:
        if bool((t < 0).any()):
            raise ValueError(f"u must be a non-negative entropy for kind='entropy', got {float(t.min())!r}")
        eps = _inverse_binary_entropy(t.to(torch.float64)).clamp(max=max_rate).to(t.dtype)
    return restore(eps)


# --------------------------------------------------------------------------------------------
# uncertainty -> weights
# --------------------------------------------------------------------------------------------


def uncertainty_weights(
    u: Any,
    scheme: str = "exp",
    *,
    tau: float | None = None,
    u_max: float | None = None,
    threshold: float | None = None,
    normalize: str | None = "mean",
) -> Any:
    """Map per-pair uncertainties ``u`` (larger = less trustworthy) to non-negative weights.

    Schemes (before normalisation):

    * ``"exp"``: ``w = exp(-u/τ)``; ``tau`` defaults to the mean of ``u`` (1 when it is 0).
      Measured on the demo's 521 held-out hh-rlhf pairs (weights normalised to mean 1, 10%–90%
      range): ``epistemic`` 0.18–1.74, ``ood`` 0.45–1.84, ``margin_std`` 0.41–1.61; but
      ``total`` 0.99–1.01, a no-op (entropies all near 0.68 nats, skewed): use ``"rank"`` there.
    * ``"linear"``: ``w = max(0, 1 - u/u_max)``; ``u_max`` defaults to ``max(u)`` (the most
      uncertain pair gets 0).
    * ``"threshold"``: ``w = 1[u <= threshold]`` (``threshold`` required): hard filtering.
    * ``"rank"``: ``w = 1 - rank(u)/n`` with ranks 0..n-1 from the least uncertain (ties share their
      mean rank): in ``(0, 1]``, insensitive to the scale of ``u``.

    Normalisation: ``"mean"`` (default) rescales to mean 1, so a weighted DPO loss normalised by
    ``n`` keeps the plain loss's scale and the weighted mean by ``Σw`` is unchanged; ``"sum"`` to
    sum 1; ``None`` keeps the raw map. Weights computed on the whole dataset (once) are comparable
    across batches; computing them per batch makes them batch-relative.

    numpy in, numpy out; torch in, torch out (detach ``u`` unless you mean to differentiate).

    Examples
    --------
    >>> import numpy as np
    >>> uncertainty_weights(np.array([0.0, 1.0, 3.0]), "linear", normalize=None)
    array([1.        , 0.66666667, 0.        ])
    >>> uncertainty_weights(np.array([0.1, 0.5, 0.2, 0.9]), "rank", normalize=None)
    array([1.  , 0.5 , 0.75, 0.25])
    """
    scheme = check_choice(scheme, "scheme", ("exp", "linear", "threshold", "rank"))
    check_choice(normalize, "normalize", ("mean", "sum", None))
    t, restore = as_float_tensor(u, "u", ndim=1)
    if scheme == "exp":
        if tau is None:
            m = float(t.detach().mean())
            tau = m if m > 0 else 1.0
        tau = check_float(tau, "tau", minimum=0.0, inclusive=(False, True))
        # normalisation divides out a common factor, so shift by min(u) first: exp(-u/tau) of a
        # very negative u overflows to inf (NaN weights), of a large one underflows to all zeros
        shift = t.detach().min() if normalize is not None else 0.0
        w = torch.exp(-(t - shift) / tau)
    elif scheme == "linear":
        if u_max is None:
            m = float(t.detach().max())
            u_max = m if m > 0 else 1.0
        u_max = check_float(u_max, "u_max", minimum=0.0, inclusive=(False, True))
        w = (1.0 - t / u_max).clamp(min=0.0)
    elif scheme == "threshold":
        if threshold is None:
            raise TypeError("threshold is required for scheme='threshold'")
        threshold = check_float(threshold, "threshold")
        w = (t <= threshold).to(t.dtype)
    else:
        n = t.shape[0]
        order = torch.argsort(t.detach(), stable=True)
        ranks = torch.empty_like(t)
        ranks[order] = torch.arange(n, dtype=t.dtype, device=t.device)
        # ties share their mean rank
        uniq, inverse = torch.unique(t.detach(), return_inverse=True)
        mean_rank = torch.zeros(uniq.shape[0], dtype=t.dtype, device=t.device).index_add_(0, inverse, ranks)
        counts = torch.bincount(inverse, minlength=uniq.shape[0]).to(t.dtype)
        w = 1.0 - (mean_rank / counts)[inverse] / n
    if normalize is not None:
        s = w.sum()
        if not float(s.detach()) > 0:
            raise ValueError(
                f"all weights are zero under scheme={scheme!r}; nothing to normalise (check threshold/u_max)"
            )
        w = w / (s / w.shape[0] if normalize == "mean" else s)
    return restore(w)


# --------------------------------------------------------------------------------------------
# penalised rewards for RL
# --------------------------------------------------------------------------------------------


def penalized_reward(
    member_rewards: Any,
    method: str = "mean",
    coef: float = 1.0,
    center: bool = True,
    member_offsets: Any = None,
) -> Any:
    """Conservative reward from an ensemble's member rewards, for RL against a reward model.

    ``member_rewards`` is ``[n, K]`` (n responses, K members; 1-D is one member). BT rewards are
    identified only up to a constant per member, so members are centred first: with
    ``center=True`` each member's mean over the ``n`` responses of *this call* is subtracted (pass a
    reasonably large batch, or the members' means on a reference set as ``member_offsets`` ``[K]``,
    which is then subtracted instead; ``center=False`` uses the raw rewards). Then, per response:

    * ``"mean"``: ``mean_k r_k``
    * ``"lcb"``: ``mean - λ·std`` (lower confidence bound)
    * ``"wco"``: ``min_k r_k`` (worst-case optimisation, Coste et al. 2023)
    * ``"uwo"``: ``mean - λ·var`` (uncertainty-weighted optimisation, Coste et al. 2023)

    ``std``/``var`` are over members with ``ddof=0`` (one member: 0, never NaN); ``λ = coef >= 0``.
    numpy in, numpy out; torch in, torch out (differentiable).

    Examples
    --------
    >>> import numpy as np
    >>> r = np.array([[1.0, 3.0], [3.0, 1.0]])
    >>> penalized_reward(r, "lcb", coef=1.0)   # centred: [[-1, 1], [1, -1]], mean 0, std 1
    array([-1., -1.])
    """
    method = check_choice(method, "method", ("mean", "lcb", "wco", "uwo"))
    coef = check_float(coef, "coef", minimum=0.0)
    r, restore = as_float_tensor(member_rewards, "member_rewards", ndim=(1, 2))
    if r.ndim == 1:
        r = r[:, None]
    if member_offsets is not None:
        off = _tensor(member_offsets, "member_offsets", like=r, ndim=(0, 1)).to(r.dtype)
        if off.ndim == 1 and off.shape[0] != r.shape[1]:
            raise ValueError(
                f"member_offsets must have one value per member ({r.shape[1]}), got {off.shape[0]}"
            )
        r = r - off
    elif center:
        r = r - r.mean(dim=0, keepdim=True)
    mean = r.mean(dim=1)
    if method == "mean":
        out = mean
    elif method == "lcb":
        out = mean - coef * r.std(dim=1, correction=0)
    elif method == "wco":
        out = r.min(dim=1).values
    else:
        out = mean - coef * r.var(dim=1, correction=0)
    return restore(out)


# --------------------------------------------------------------------------------------------
# PPO (token level; conventions of TRL's former PPOTrainer / GRPOTrainer)
# --------------------------------------------------------------------------------------------


def _broadcast_mask(x: torch.Tensor, mask: Any) -> torch.Tensor:
    """``mask`` as ``x``'s dtype, broadcast to ``x``'s shape (a ValueError when it does not broadcast to it)."""
    mask = torch.as_tensor(mask, device=x.device)
    try:
        shape = torch.broadcast_shapes(mask.shape, x.shape)
    except RuntimeError:
        shape = None
    if shape != x.shape:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to the shape {tuple(x.shape)} of x"
        )
    return mask.to(x.dtype).expand(x.shape)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None = None, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over positions where ``mask`` is nonzero (all positions when ``mask`` is None).

    ``mask`` may have fewer dimensions than ``x`` (e.g. ``[T]`` for ``x`` of shape ``[B, T]``): it is
    broadcast to ``x``'s shape first, so every masked-in element of ``x`` counts once.

    Examples
    --------
    >>> float(masked_mean(torch.tensor([1.0, 2.0, 9.0]), torch.tensor([1, 1, 0])))
    1.5
    >>> float(masked_mean(torch.ones(2, 3), torch.tensor([1, 1, 0])))  # 4 ones over 4 positions
    1.0
    """
    if mask is None:
        return x.mean() if dim is None else x.mean(dim=dim)
    mask = _broadcast_mask(x, mask)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim=dim) / mask.sum(dim=dim).clamp(min=1.0)


def _masked_var(x: torch.Tensor, mask: torch.Tensor | None, unbiased: bool = True) -> torch.Tensor:
    if mask is not None:
        mask = _broadcast_mask(x, mask)
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = x.numel() if mask is None else float(mask.sum())
        if n > 1:
            var = var * n / (n - 1)
    return var


def whiten(x: torch.Tensor, mask: torch.Tensor | None = None, shift_mean: bool = True) -> torch.Tensor:
    """Whiten ``x`` over the masked positions: ``(x - mean)/sqrt(var + 1e-8)`` (TRL ``masked_whiten``).

    ``var`` is Bessel-corrected; ``shift_mean=False`` adds the mean back (scale only, as TRL does
    for rewards). Masked-out positions are whitened with the same statistics (mask them yourself).

    Examples
    --------
    >>> x = whiten(torch.tensor([1.0, 2.0, 3.0]))
    >>> [round(v, 3) for v in x.tolist()]
    [-1.0, 0.0, 1.0]
    """
    mean = masked_mean(x, mask)
    var = _masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out


class PolicyLossOutput(NamedTuple):
    """Clipped-surrogate PPO loss plus diagnostics (``clip_fraction``, ``approx_kl`` are detached)."""

    loss: torch.Tensor
    clip_fraction: torch.Tensor
    approx_kl: torch.Tensor


def _same_shapes(tensors: dict[str, Any]) -> list[torch.Tensor]:
    items = list(tensors.items())
    first_name, first = items[0]
    first_t, _ = as_float_tensor(first, first_name)
    out = [first_t]
    for name, x in items[1:]:
        t = _tensor(x, name, like=first_t)
        check_same_shape(first_t, t, first_name, name)
        out.append(t)
    return out


def ppo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor | None = None,
    clip_range: float = 0.2,
) -> PolicyLossOutput:
    """PPO clipped surrogate, token level, masked mean (Schulman et al. 2017; TRL's convention).

    ``ratio = exp(logprobs - old_logprobs)``; per token ``max(-A·ratio, -A·clip(ratio, 1-c, 1+c))``;
    averaged over tokens where ``mask`` is 1. ``approx_kl = mean(½(logprobs - old)^2)``.

    Examples
    --------
    >>> lp = torch.zeros(1, 3, requires_grad=True)
    >>> out = ppo_loss(lp, torch.zeros(1, 3), torch.ones(1, 3))
    >>> float(out.loss.detach())
    -1.0
    """
    clip_range = check_float(clip_range, "clip_range", minimum=0.0, inclusive=(False, True))
    names = {"logprobs": logprobs, "old_logprobs": old_logprobs, "advantages": advantages}
    if mask is not None:
        names["mask"] = mask
    ts = _same_shapes(names)
    lp, old, adv = ts[0], ts[1], ts[2]
    m = ts[3] if mask is not None else None
    log_ratio = lp - old
    ratio = torch.exp(log_ratio)
    pg1 = -adv * ratio
    pg2 = -adv * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.max(pg1, pg2), m)
    with torch.no_grad():
        clipfrac = masked_mean((pg2 > pg1).to(lp.dtype), m)
        approx_kl = masked_mean(0.5 * log_ratio**2, m)
    return PolicyLossOutput(loss, clipfrac, approx_kl)


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor | None = None,
    clip_range_value: float | None = 0.2,
) -> torch.Tensor:
    """Clipped value loss ``½·mean(max((v - R)^2, (v_clip - R)^2))`` with ``v_clip`` within ``±c`` of
    the old values (TRL's ``cliprange_value``); ``clip_range_value=None`` is the plain ``½·MSE``.

    Examples
    --------
    >>> float(value_loss(torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([0.0]), clip_range_value=None))
    2.0
    """
    names = {"values": values, "old_values": old_values, "returns": returns}
    if mask is not None:
        names["mask"] = mask
    ts = _same_shapes(names)
    v, old, ret = ts[0], ts[1], ts[2]
    m = ts[3] if mask is not None else None
    loss1 = (v - ret) ** 2
    if clip_range_value is None:
        return 0.5 * masked_mean(loss1, m)
    c = check_float(clip_range_value, "clip_range_value", minimum=0.0, inclusive=(False, True))
    v_clip = old + torch.clamp(v - old, -c, c)
    return 0.5 * masked_mean(torch.max(loss1, (v_clip - ret) ** 2), m)


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token KL estimate between the sampling policy and the reference (Schulman's k1/k2/k3).

    With ``d = logprobs - ref_logprobs`` for tokens sampled from the policy: ``k1 = d`` (unbiased,
    can be negative), ``k2 = d²/2``, ``k3 = exp(-d) - 1 + d`` (unbiased, >= 0; TRL GRPO's KL term).

    Examples
    --------
    >>> float(kl_penalty(torch.tensor(0.0), torch.tensor(0.0), "k3"))
    0.0
    """
    kind = check_choice(kind, "kind", ("k1", "k2", "k3"))
    lp, ref = _same_shapes({"logprobs": logprobs, "ref_logprobs": ref_logprobs})
    d = lp - ref
    if kind == "k1":
        return d
    if kind == "k2":
        return 0.5 * d**2
    return torch.exp(-d) - 1.0 + d


@torch.no_grad()
def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor | None = None,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the token axis (last dim), as TRL's PPO did.

    Rewards and values at masked positions are treated as 0, so the value after the last response
    token is 0 (episode end). Returns ``(advantages, returns)`` with ``returns = advantages + values``,
    zero where ``mask`` is 0. No gradient.

    Examples
    --------
    >>> adv, ret = compute_gae(torch.tensor([[0.0, 1.0]]), torch.zeros(1, 2), gamma=1.0, lam=1.0)
    >>> adv.tolist()
    [[1.0, 1.0]]
    """
    gamma = check_float(gamma, "gamma", minimum=0.0, maximum=1.0)
    lam = check_float(lam, "lam", minimum=0.0, maximum=1.0)
    names = {"rewards": rewards, "values": values}
    if mask is not None:
        names["mask"] = mask
    ts = _same_shapes(names)
    r, v = ts[0], ts[1]
    m = ts[2] if mask is not None else torch.ones_like(r)
    r = r * m
    v = v * m
    length = r.shape[-1]
    adv = torch.zeros_like(r)
    last = torch.zeros_like(r[..., 0])
    for t in reversed(range(length)):
        next_v = v[..., t + 1] if t < length - 1 else torch.zeros_like(last)
        delta = r[..., t] + gamma * next_v - v[..., t]
        last = delta + gamma * lam * last
        adv[..., t] = last
    adv = adv * m
    return adv, (adv + v) * m
