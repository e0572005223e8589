"""Uncertainty-aware preference losses (torch, differentiable, log-space).

One implementation per formula. Every loss takes per-pair quantities (rewards or sequence
log-probabilities), optional per-pair ``weights`` and soft ``targets``, and a ``reduction``:

* Soft targets. ``q = P(chosen preferred)`` (annotator vote fraction, ensemble probability) turns
  the logistic loss ``-logsigmoid(z)`` into the binary cross-entropy
  ``-q·logsigmoid(z) - (1-q)·logsigmoid(-z)``; ``q ≡ 1`` is the plain loss and a constant ``q`` is
  label smoothing (cDPO).
* Weights. Per-pair weights ``w >= 0`` multiply the per-pair loss. ``reduction="mean"`` divides by
  ``Σw`` (``weight_normalization="weights"``, the default: a weighted average, so rescaling all weights changes
  nothing) or by the number of pairs ``n`` (``weight_normalization="n"``: pairs with a small weight shrink the
  loss, as if they were partly dropped). A batch whose weights are all zero gives a loss of 0 (and
  zero gradients), never NaN. ``reduction="sum"`` gives ``Σ w·loss``, ``reduction="none"`` the
  per-pair ``w·loss``. (``normalize=`` is the deprecated name of ``weight_normalization=``, accepted
  with a ``FutureWarning`` for one release.)

With ``weights ≡ 1`` and ``targets ≡ 1`` every variant here equals its plain counterpart, and the DPO
family equals TRL's ``DPOTrainer`` losses (``sigmoid``, ``robust``, ``ipo``; tested against the
installed TRL).

Bad input raises ``ValueError``/``TypeError`` naming the argument: NaN or negative weights, targets
outside [0, 1], log-probabilities of different shapes, ``beta <= 0``, ``coef < 0``.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from auq._checks import (
    as_float_tensor,
    as_tensor_on,
    check_choice,
    check_float,
    check_labels,
    check_same_shape,
    renamed_kwargs,
)
from auq._math import probit_scaled_logit
from auq.training.rl import (  # noqa: F401  (moved to auq.training.rl; still importable from here)
    PolicyLossOutput,
    compute_gae,
    kl_penalty,
    masked_mean,
    ppo_loss,
    value_loss,
    whiten,
)
from auq.training.weighting import (  # noqa: F401  (moved; still importable from here)
    flip_rate_from_uncertainty,
    penalized_reward,
    uncertainty_weights,
)

logger = logging.getLogger(__name__)

__all__ = [
    "bradley_terry_loss",
    "dpo_logits",
    "dpo_loss",
    "dpo_implicit_rewards",
    "ImplicitRewards",
    "robust_dpo_loss",
    "ipo_loss",
]

_REDUCTIONS = ("mean", "sum", "none")
_NORMALIZE = ("weights", "n")


# --------------------------------------------------------------------------------------------
# validation helpers (private; candidates for auq._checks)
# --------------------------------------------------------------------------------------------


def _check_weights_tensor(weights: Any, name: str, like: torch.Tensor) -> torch.Tensor:
    """Finite, non-negative weights broadcastable to ``like``; returned on ``like``'s device/dtype."""
    w = as_tensor_on(weights, name, like=like)
    if bool((w < 0).any()):
        raise ValueError(f"{name} must be non-negative, got a value of {float(w.min())!r}")
    return w.to(like.dtype)


def _check_targets_tensor(targets: Any, name: str, like: torch.Tensor) -> torch.Tensor:
    q = as_tensor_on(targets, name, like=like)
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
    weight_normalization: str = "weights",
) -> torch.Tensor:
    """Weighted reduction over the first (pair) dimension; see the module docstring."""
    if weights is not None:
        losses = losses * weights
    if reduction == "none":
        return losses
    total = losses.sum(dim=0)
    if reduction == "mean":
        if weights is None or weight_normalization == "n":
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
    >>> import math
    >>> v = torch.full((2, 2), 8.0 / math.pi)  # scales every logit by 1/sqrt(2)
    >>> l1 = bradley_terry_loss(rc, rr, noise_var=v, reduction="none")
    >>> l2 = bradley_terry_loss(rc / math.sqrt(2.0), rr, reduction="none")
    >>> bool(torch.allclose(l1, l2))
    True
    """
    reduction = check_choice(reduction, "reduction", _REDUCTIONS)
    rc, _ = as_float_tensor(rewards_chosen, "rewards_chosen", ndim=(1, 2))
    rr = as_tensor_on(rewards_rejected, "rewards_rejected", like=rc, ndim=(1, 2))
    check_same_shape(rc, rr, "rewards_chosen", "rewards_rejected")
    n = rc.shape[0]
    z = rc - rr
    if margin is not None:
        if isinstance(margin, (int, float)):
            m = torch.as_tensor(float(check_float(margin, "margin")), dtype=rc.dtype, device=rc.device)
        else:
            m = _per_pair(as_tensor_on(margin, "margin", like=rc, ndim=(0, 1, 2)), "margin", n, rc.ndim)
        z = z - m
    if noise_var is not None:
        v = _per_pair(as_tensor_on(noise_var, "noise_var", like=rc, ndim=(1, 2)), "noise_var", n, rc.ndim)
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
        t = as_tensor_on(x, name, like=pc, ndim=1)
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


@renamed_kwargs(normalize="weight_normalization")
def dpo_loss(
    policy_chosen_logps: Any,
    policy_rejected_logps: Any,
    ref_chosen_logps: Any,
    ref_rejected_logps: Any,
    beta: float = 0.1,
    weights: Any = None,
    targets: Any = None,
    reduction: str = "mean",
    weight_normalization: str = "weights",
) -> torch.Tensor:
    """Sigmoid DPO loss with per-pair weights and soft targets.

    Per pair ``loss = -q·logsigmoid(z) - (1-q)·logsigmoid(-z)`` with ``z`` from :func:`dpo_logits`;
    without ``targets`` it is ``-logsigmoid(z)`` (Rafailov et al. 2023). A constant ``q = 1 - ε`` is
    conservative DPO / label smoothing. The weighted mean divides by ``Σw`` (``weight_normalization="weights"``)
    or by the number of pairs (``weight_normalization="n"``); see the module docstring.

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
    weight_normalization : {"weights", "n"}
        Denominator of the weighted mean (deprecated alias: ``normalize``).

    Examples
    --------
    >>> pc, pr = torch.tensor([-1.0, -2.0]), torch.tensor([-2.0, -1.0])
    >>> ref = torch.tensor([-1.5, -1.5])
    >>> round(float(dpo_loss(pc, pr, ref, ref, beta=1.0)), 4)
    0.8133
    """
    reduction = check_choice(reduction, "reduction", _REDUCTIONS)
    weight_normalization = check_choice(weight_normalization, "weight_normalization", _NORMALIZE)
    z = dpo_logits(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    w, q = _pair_options(z, weights, targets)
    return _reduce(_soft_logistic(z, q), w, reduction, weight_normalization)


@renamed_kwargs(normalize="weight_normalization")
def robust_dpo_loss(
    policy_chosen_logps: Any,
    policy_rejected_logps: Any,
    ref_chosen_logps: Any,
    ref_rejected_logps: Any,
    beta: float = 0.1,
    epsilon: Any = 0.1,
    weights: Any = None,
    reduction: str = "mean",
    weight_normalization: str = "weights",
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
    weight_normalization = check_choice(weight_normalization, "weight_normalization", _NORMALIZE)
    z = dpo_logits(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    w, _ = _pair_options(z, weights, None)
    if isinstance(epsilon, (int, float)):
        eps: Any = check_float(epsilon, "epsilon", minimum=0.0, maximum=0.5, inclusive=(True, False))
    else:
        eps = as_tensor_on(epsilon, "epsilon", like=z, ndim=(0, 1)).to(z.dtype)
        if eps.ndim == 1 and eps.shape != z.shape:
            raise ValueError(f"epsilon must be a scalar or have shape {tuple(z.shape)}, got {tuple(eps.shape)}")
        lo, hi = float(eps.min()), float(eps.max())
        if lo < 0.0 or hi >= 0.5:
            raise ValueError(f"epsilon must lie in [0, 0.5), got a value of {lo if lo < 0 else hi!r}")
    clean = -(1 - eps) * F.logsigmoid(z)
    flipped = -eps * F.logsigmoid(-z)
    losses = (clean - flipped) / (1 - 2 * eps)
    return _reduce(losses, w, reduction, weight_normalization)


@renamed_kwargs(tau="beta", normalize="weight_normalization")
def ipo_loss(
    policy_chosen_logps: Any,
    policy_rejected_logps: Any,
    ref_chosen_logps: Any,
    ref_rejected_logps: Any,
    beta: float = 0.1,
    chosen_lengths: Any = None,
    rejected_lengths: Any = None,
    weights: Any = None,
    targets: Any = None,
    reduction: str = "mean",
    weight_normalization: str = "weights",
) -> torch.Tensor:
    """IPO loss (Azar et al. 2023, Eq. 17) with optional length normalisation and soft targets.

    ``h = (log π(c) - log π_ref(c))/len_c - (log π(r) - log π_ref(r))/len_r`` and per pair
    ``(h - (q - 1/2)/β)^2`` with ``β = beta`` (the paper's ``τ``); with ``q = 1`` the target is
    ``1/(2β)``. Without lengths ``len = 1`` (sequence-level IPO, as in the paper). TRL's
    ``loss_type="ipo"`` (same ``beta``) divides by the
    number of completion tokens: pass ``chosen_lengths``/``rejected_lengths`` to match it. A length
    of 0 (a response with no scored token, whose log-prob sum is 0) counts as 1; a negative length
    is a ValueError. ``tau=`` and ``normalize=`` are the deprecated names of ``beta=`` and
    ``weight_normalization=`` (accepted with a ``FutureWarning`` for one release).

    Examples
    --------
    >>> z = torch.zeros(2)
    >>> float(ipo_loss(z, z, z, z, beta=0.5))  # (0 - 1)^2
    1.0
    """
    reduction = check_choice(reduction, "reduction", _REDUCTIONS)
    weight_normalization = check_choice(weight_normalization, "weight_normalization", _NORMALIZE)
    beta = _check_beta(beta, "beta")
    pc, pr, rc, rr = _logps(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    chosen = pc - rc
    rejected = pr - rr
    if chosen_lengths is not None:
        chosen = chosen / _ipo_lengths(chosen_lengths, "chosen_lengths", pc)
    if rejected_lengths is not None:
        rejected = rejected / _ipo_lengths(rejected_lengths, "rejected_lengths", pc)
    h = chosen - rejected
    w, q = _pair_options(h, weights, targets)
    target = 1 / (2 * beta) if q is None else (q - 0.5) / beta
    return _reduce((h - target) ** 2, w, reduction, weight_normalization)


def _ipo_lengths(lengths: Any, name: str, like: torch.Tensor) -> torch.Tensor:
    """Per-pair token counts for IPO's length normalisation: non-negative, 0 counted as 1."""
    n = as_tensor_on(lengths, name, like=like, ndim=1)
    check_same_shape(like, n, "policy_chosen_logps", name)
    if bool((n < 0).any()):
        raise ValueError(f"{name} must be non-negative token counts, got a value of {float(n.min())!r}")
    return n.clamp(min=1.0)
