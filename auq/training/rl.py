"""Token-level RL utilities: masked means, whitening, the clipped PPO policy loss, the value loss,
KL estimators and generalised advantage estimation (conventions of TRL's PPO/GRPO trainers).

Used by :class:`auq.training.online.OnlineTrainer`; imported as ``auq.training.rl``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from auq._checks import (
    as_float_tensor,
    as_tensor_on,
    check_choice,
    check_float,
    check_same_shape,
    renamed_kwargs,
)

__all__ = [
    "PolicyLossOutput",
    "ppo_loss",
    "value_loss",
    "kl_penalty",
    "compute_gae",
    "whiten",
    "masked_mean",
]


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
        t = as_tensor_on(x, name, like=first_t)
        check_same_shape(first_t, t, first_name, name)
        out.append(t)
    return out


def _same_shapes_masked(tensors: dict[str, Any], mask: Any) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """:func:`_same_shapes` of ``tensors`` and of the optional ``mask`` (None stays None)."""
    ts = _same_shapes(tensors if mask is None else {**tensors, "mask": mask})
    return ts[: len(tensors)], (None if mask is None else ts[-1])


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
    (lp, old, adv), m = _same_shapes_masked(
        {"logprobs": logprobs, "old_logprobs": old_logprobs, "advantages": advantages}, mask
    )
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
    (v, old, ret), m = _same_shapes_masked({"values": values, "old_values": old_values, "returns": returns}, mask)
    loss1 = (v - ret) ** 2
    if clip_range_value is None:
        return 0.5 * masked_mean(loss1, m)
    c = check_float(clip_range_value, "clip_range_value", minimum=0.0, inclusive=(False, True))
    v_clip = old + torch.clamp(v - old, -c, c)
    return 0.5 * masked_mean(torch.max(loss1, (v_clip - ret) ** 2), m)


@renamed_kwargs(kind="estimator")
def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token KL estimate between the sampling policy and the reference (Schulman's k1/k2/k3).

    With ``d = logprobs - ref_logprobs`` for tokens sampled from the policy: ``k1 = d`` (unbiased,
    can be negative), ``k2 = d²/2``, ``k3 = exp(-d) - 1 + d`` (unbiased, >= 0; TRL GRPO's KL term),
    chosen by ``estimator`` (as ``OnlineConfig.kl_estimator``; ``kind=`` is its deprecated name,
    accepted with a ``FutureWarning`` for one release).

    Examples
    --------
    >>> float(kl_penalty(torch.tensor(0.0), torch.tensor(0.0), "k3"))
    0.0
    """
    estimator = check_choice(estimator, "estimator", ("k1", "k2", "k3"))
    lp, ref = _same_shapes({"logprobs": logprobs, "ref_logprobs": ref_logprobs})
    d = lp - ref
    if estimator == "k1":
        return d
    if estimator == "k2":
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
    (r, v), m = _same_shapes_masked({"rewards": rewards, "values": values}, mask)
    if m is None:
        m = torch.ones_like(r)
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
