"""Per-response reward statistics over members (the variance view of single responses)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from auq._checks import as_float_tensor
from auq.estimators._common import as_tensor_pair, compute_dtype, population_std, to_numpy_column

__all__ = ["RewardStats", "PairRewardStats", "response_reward_stats", "pair_reward_stats"]


@dataclass(frozen=True, eq=False)
class RewardStats:
    """Mean and spread of the members' rewards for each response.

    Attributes
    ----------
    mean : array, shape [n_responses]
        Mean over members of the (centred) rewards.
    std : array, shape [n_responses]
        Population standard deviation (``ddof=0``) over members of the (centred) rewards: the
        members' disagreement about this response, the signal for out-of-domain responses and
        the penalty in ``mean - λ·std`` rewards for RL.
    """

    mean: Any
    std: Any

    _ARRAY_FIELDS: ClassVar[tuple[str, ...]] = ("mean", "std")

    def __len__(self) -> int:
        return int(self.mean.shape[0])

    def __iter__(self):
        return iter((self.mean, self.std))

    def to_pandas(self):
        """One row per response with columns ``mean`` and ``std``."""
        import pandas as pd

        return pd.DataFrame({n: to_numpy_column(getattr(self, n)) for n in self._ARRAY_FIELDS})


@dataclass(frozen=True, eq=False)
class PairRewardStats:
    """Per-pair mean and spread of the members' rewards of the chosen and the rejected response.

    Each member's rewards are centred over the union of chosen and rejected responses, so the
    chosen and rejected columns are on one scale and comparable. Unpacks as
    ``mean_chosen, std_chosen, mean_rejected, std_rejected``.

    Attributes
    ----------
    mean_chosen, std_chosen, mean_rejected, std_rejected : array, shape [n_pairs]
        Mean and population std (``ddof=0``) over members of the centred rewards.
    """

    mean_chosen: Any
    std_chosen: Any
    mean_rejected: Any
    std_rejected: Any

    _ARRAY_FIELDS: ClassVar[tuple[str, ...]] = (
        "mean_chosen",
        "std_chosen",
        "mean_rejected",
        "std_rejected",
    )

    def __len__(self) -> int:
        return int(self.mean_chosen.shape[0])

    def __iter__(self):
        return iter(tuple(getattr(self, n) for n in self._ARRAY_FIELDS))

    def to_pandas(self, prefix: str = "reward_"):
        """One row per pair; columns ``reward_mean_chosen``, ``reward_std_chosen``, ... .

        ``prefix`` is prepended to each field name (the default matches the per-pair columns of
        scored predictions).
        """
        import pandas as pd

        return pd.DataFrame(
            {prefix + n: to_numpy_column(getattr(self, n)) for n in self._ARRAY_FIELDS}
        )


def _stats(r: torch.Tensor, center: bool, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean/std over members (dim 1) of ``r`` [n, K], each member centred over dim 0 first."""
    if center:
        if r.shape[0] < 2:
            raise ValueError(
                f"{name} must hold at least 2 responses (rows) to centre each member's rewards, "
                f"got shape {tuple(r.shape)}; pass center=False for a single response"
            )
        r = r - r.mean(dim=0, keepdim=True)
    if r.shape[1] == 1:
        return r[:, 0], torch.zeros_like(r[:, 0])
    return r.mean(dim=1), population_std(r, dim=1)


def _as_members(t: torch.Tensor) -> tuple[torch.Tensor, torch.dtype]:
    out_dtype = t.dtype
    t = t.to(compute_dtype(t))
    return (t.unsqueeze(1) if t.ndim == 1 else t), out_dtype


def response_reward_stats(rewards: Any, *, center: bool = True) -> RewardStats:
    """Per-response mean and standard deviation of the members' rewards.

    Answers *do the members agree about how good this response is?* A large std flags responses
    the ensemble has not learnt to judge -- the useful signal for out-of-domain responses, and the
    penalty of ``mean - λ·std`` rewards in RL. (The entropy terms of :func:`decompose` answer a
    different question, about the preference between two responses, and shrink as margins grow.)

    Why centre: a Bradley--Terry reward model is identified only up to an additive constant per
    member (``σ(r_c - r_r)`` does not change when ``c_k`` is added to all of member ``k``'s
    rewards), so raw rewards of different members are not comparable: two members that agree on
    every comparison but differ in offset would show a large, meaningless std. With
    ``center=True`` each member's column is shifted to mean 0 over the ``n_responses`` responses
    before the mean and std across members are taken; the result is then invariant to per-member
    offsets. Centre over a set of responses that is the same for every member (e.g. a whole
    evaluation set); the mean is then relative to that set's average response.

    Parameters
    ----------
    rewards : array-like or torch.Tensor, shape [n_responses, n_members] or [n_responses]
        Member rewards (1-D = one member).
    center : bool, default True
        Centre each member over the responses first (needs at least 2 responses).

    Returns
    -------
    RewardStats
        ``mean`` and ``std`` (population, ``ddof=0``), each ``[n_responses]``; NumPy float64 for
        NumPy/list input, tensors on the input's device and dtype (differentiable) for tensors.

    Examples
    --------
    >>> s = response_reward_stats([[1.0, 11.0], [3.0, 13.0]])  # member 2 = member 1 + 10
    >>> s.mean.tolist(), s.std.tolist()
    ([-1.0, 1.0], [0.0, 0.0])
    """
    if not isinstance(center, bool):
        raise TypeError(f"center must be a bool, got {type(center).__name__}")
    t, restore = as_float_tensor(rewards, "rewards", ndim=(1, 2))
    r, out_dtype = _as_members(t)
    mean, std = _stats(r, center, "rewards")
    return RewardStats(mean=restore(mean.to(out_dtype)), std=restore(std.to(out_dtype)))


def pair_reward_stats(
    rewards_chosen: Any, rewards_rejected: Any, *, center: bool = True
) -> PairRewardStats:
    """Per-pair reward mean and std over members for the chosen and the rejected response.

    Like :func:`response_reward_stats`, applied to both sides of each pair at once: each member's
    rewards are centred over the union of all chosen and all rejected responses (``2 * n_pairs``
    values), so the chosen and rejected statistics are on one scale and can be compared or
    combined (e.g. the larger of the two stds as a per-pair out-of-domain score). Margins are
    unaffected by the centring.

    Parameters
    ----------
    rewards_chosen, rewards_rejected : array-like or torch.Tensor, shape [n_pairs, n_members]
        Member rewards of the chosen and the rejected responses (1-D = one member).
    center : bool, default True
        Centre each member over the union of both sides first.

    Returns
    -------
    PairRewardStats
        ``mean_chosen, std_chosen, mean_rejected, std_rejected`` (also unpackable in that order).

    Examples
    --------
    >>> s = pair_reward_stats([[2.0, 12.0]], [[0.0, 10.0]])
    >>> s.mean_chosen.tolist(), s.std_chosen.tolist(), s.mean_rejected.tolist()
    ([1.0], [0.0], [-1.0])
    """
    if not isinstance(center, bool):
        raise TypeError(f"center must be a bool, got {type(center).__name__}")
    chosen, rejected, restore = as_tensor_pair(
        rewards_chosen, rewards_rejected, "rewards_chosen", "rewards_rejected", ndim=(1, 2)
    )
    c, out_dtype = _as_members(chosen)
    r, _ = _as_members(rejected)
    n = c.shape[0]
    mean, std = _stats(torch.cat([c, r], dim=0), center, "rewards_chosen and rewards_rejected")

    def out(x: torch.Tensor) -> Any:
        return restore(x.to(out_dtype))

    return PairRewardStats(
        mean_chosen=out(mean[:n]),
        std_chosen=out(std[:n]),
        mean_rejected=out(mean[n:]),
        std_rejected=out(std[n:]),
    )
