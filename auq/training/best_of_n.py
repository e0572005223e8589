"""Best-of-n sampling against an ensemble's (uncertainty-penalised) reward, and the reward
functions it and :class:`auq.training.OnlineTrainer` use: texts in, member rewards out."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from auq._checks import as_float_tensor, check_choice, check_float, check_int
from auq.training._generation import _check_prompts, _decode, _device, _sample
from auq.training.weighting import penalized_reward

logger = logging.getLogger(__name__)

__all__ = ["BestOfNResult", "best_of_n", "best_of_n_kl", "ensemble_reward_fn"]

RewardFn = Callable[[Sequence[str], Sequence[str]], Any]


@dataclasses.dataclass(frozen=True, eq=False)
class BestOfNResult:
    """Outcome of :func:`best_of_n`.

    Attributes
    ----------
    prompts, completions : list of str ``[m]``
        Each prompt and its chosen completion.
    proxy_rewards : ndarray ``[m]``
        Penalised objective of the chosen completion.
    member_rewards : ndarray ``[m, K]``
        Member rewards of the chosen completion (before centring).
    index : ndarray ``[m]``
        Position of the chosen completion among the ``n`` candidates.
    candidates : list of list of str ``[m][n]``
    candidate_member_rewards : ndarray ``[m, n, K]``
    candidate_objective : ndarray ``[m, n]``
        Everything sampled and scored, so smaller ``n`` can be evaluated from the same pool.
    n : int
    kl : float
        Analytic KL of best-of-n to the sampling policy, ``log n - (n - 1)/n``.
    """

    prompts: list[str]
    completions: list[str]
    proxy_rewards: np.ndarray
    member_rewards: np.ndarray
    index: np.ndarray
    candidates: list[list[str]]
    candidate_member_rewards: np.ndarray
    candidate_objective: np.ndarray
    n: int
    kl: float

    def to_pandas(self) -> Any:
        """One row per prompt: prompt, completion, proxy reward, member mean and std."""
        import pandas as pd

        return pd.DataFrame(
            {
                "prompt": self.prompts,
                "completion": self.completions,
                "proxy_reward": self.proxy_rewards,
                "member_mean": self.member_rewards.mean(1),
                "member_std": self.member_rewards.std(1),
                "index": self.index,
            }
        )


# --------------------------------------------------------------------------------------------
# small pieces
# --------------------------------------------------------------------------------------------


def best_of_n_kl(n: int) -> float:
    """KL of best-of-n sampling to the base policy: ``log n - (n - 1)/n`` (nats).

    Examples
    --------
    >>> best_of_n_kl(1), round(best_of_n_kl(4), 4)
    (0.0, 0.6363)
    """
    n = check_int(n, "n", minimum=1)
    return math.log(n) - (n - 1) / n


def _member_rewards(out: Any, n: int) -> torch.Tensor:
    r, _ = as_float_tensor(out, "reward_fn output", ndim=(1, 2))
    r = r.detach().to("cpu", torch.float64)
    if r.ndim == 1:
        r = r[:, None]
    if r.shape[0] != n:
        raise ValueError(f"reward_fn output must have one row per completion ({n}), got {r.shape[0]}")
    if not bool(torch.isfinite(r).all()):
        raise ValueError("reward_fn output holds NaN or inf")
    return r


def _penalize(member: torch.Tensor, method: str, coef: float, offsets: torch.Tensor) -> torch.Tensor:
    return penalized_reward(member, method=method, coef=coef, member_offsets=offsets)


# --------------------------------------------------------------------------------------------
# reward adapter
# --------------------------------------------------------------------------------------------


def ensemble_reward_fn(
    model: nn.Module,
    tokenizer: Any = None,
    *,
    batch_size: int = 32,
    max_length: int | None = None,
    device: str | torch.device | None = None,
) -> Callable[[Sequence[str], Sequence[str]], np.ndarray]:
    """A ``reward_fn(prompts, completions) -> [n, K]`` from an auq reward model.

    Each text is ``prompt + completion`` tokenised by :class:`auq.data.PreferenceCollator` (the
    same text building as reward-model training: prompt cut from the left, chat templates), scored
    in eval mode without gradients; the model's training flag is restored. When the model has
    training reward offsets (``model.anchored``), the rewards are anchored on them
    (``model.anchor``) and the function's ``anchored`` attribute is True, which tells
    :class:`OnlineTrainer` and :func:`best_of_n` not to re-centre them.

    Parameters
    ----------
    model : auq reward model
        ``forward(input_ids, attention_mask) -> [B, n_members]``.
    tokenizer : transformers tokenizer, optional
        Default: ``model.tokenizer``.
    batch_size, max_length : int
        ``max_length`` defaults to the length the model was trained with and is capped at the
        backbone's ``model.max_positions``.
    device : str or torch.device, optional
        Default: the model's current device.

    Returns
    -------
    callable
        ``fn(prompts, completions) -> ndarray [n, n_members]`` (float64).

    Examples
    --------
    >>> fn = ensemble_reward_fn(ensemble)  # doctest: +SKIP
    >>> fn(["Human: hi. Assistant:"], [" Hello!"]).shape  # doctest: +SKIP
    (1, 8)
    """
    from auq.models._completions import completion_collator, score_completions

    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tok is None:
        raise TypeError("tokenizer is required when the model has no tokenizer attribute")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    collator = completion_collator(model, tok, max_length)

    def reward_fn(prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        prompts = _check_prompts(prompts)
        completions = _check_prompts(completions, "completions")
        dev = torch.device(device) if device is not None else _device(model)
        out, _ = score_completions(model, collator, prompts, completions, batch_size=batch_size, device=dev)
        return model.anchor(out) if reward_fn.anchored else out

    reward_fn.anchored = bool(getattr(model, "anchored", False))  # type: ignore[attr-defined]
    return reward_fn


def _default_offsets(reward_fn: Any, member: torch.Tensor) -> torch.Tensor:
    """Zeros for a reward function whose rewards are already training-anchored, else the batch means."""
    if getattr(reward_fn, "anchored", False):
        return torch.zeros(member.shape[1], dtype=member.dtype)
    return member.mean(0)


# --------------------------------------------------------------------------------------------
# best of n
# --------------------------------------------------------------------------------------------


def best_of_n(
    policy: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    reward_fn: RewardFn,
    n: int,
    method: str = "mean",
    coef: float = 1.0,
    *,
    max_new_tokens: int = 16,
    temperature: float = 1.0,
    seed: int = 0,
    member_offsets: Any = None,
    batch_size: int = 512,
) -> BestOfNResult:
    """Best-of-n sampling against a penalised proxy objective.

    For every prompt, sample ``n`` completions from ``policy``, score them with ``reward_fn`` (member
    rewards ``[m·n, K]``), compute the penalised objective (``method``/``coef`` as in
    :func:`~auq.training.losses.penalized_reward`) and keep the argmax. Members are centred by
    ``member_offsets`` ``[K]`` when given, else not at all when ``reward_fn`` returns
    training-anchored rewards (``reward_fn.anchored``, see :func:`ensemble_reward_fn`), else by
    their mean over all ``m·n`` candidates (the policy's own samples). The KL of the resulting policy to ``policy`` is ``log n - (n-1)/n``.

    Examples
    --------
    >>> res = best_of_n(policy, tok, ["<bos>"] * 8, reward_fn, n=16, method="lcb", coef=1.0)  # doctest: +SKIP
    >>> res.kl  # doctest: +SKIP
    1.83...
    """
    prompts = _check_prompts(prompts)
    n = check_int(n, "n", minimum=1)
    method = check_choice(method, "method", ("mean", "lcb", "wco", "uwo"))
    coef = check_float(coef, "coef", minimum=0.0)
    max_new_tokens = check_int(max_new_tokens, "max_new_tokens", minimum=1)
    temperature = check_float(temperature, "temperature", minimum=0.0, inclusive=(False, True))
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    per_chunk = max(1, batch_size // n)
    completions: list[str] = []
    for c, s in enumerate(range(0, len(prompts), per_chunk)):
        chunk = prompts[s : s + per_chunk]
        _, ids, _, rmask, n_prompt = _sample(policy, tokenizer, chunk, n, max_new_tokens, temperature, seed + c)
        completions += _decode(tokenizer, ids[:, n_prompt:], rmask)
    repeated = [p for p in prompts for _ in range(n)]
    member = _member_rewards(reward_fn(repeated, completions), len(completions))
    offsets = _default_offsets(reward_fn, member) if member_offsets is None else member_offsets
    objective = _penalize(member, method, coef, offsets).reshape(len(prompts), n)
    idx = objective.argmax(1)
    m_all = member.reshape(len(prompts), n, -1).numpy()
    rows = np.arange(len(prompts))
    cands = [completions[i * n : (i + 1) * n] for i in range(len(prompts))]
    return BestOfNResult(
        prompts=prompts,
        completions=[cands[i][int(j)] for i, j in enumerate(idx)],
        proxy_rewards=objective.numpy()[rows, idx.numpy()],
        member_rewards=m_all[rows, idx.numpy()],
        index=idx.numpy(),
        candidates=cands,
        candidate_member_rewards=m_all,
        candidate_objective=objective.numpy(),
        n=n,
        kl=best_of_n_kl(n),
    )


# --------------------------------------------------------------------------------------------
# the online trainer
# --------------------------------------------------------------------------------------------
