"""A compact online RL loop for causal LMs against an uncertain (ensemble) reward.

One step of :class:`OnlineTrainer`:

1. take ``batch_prompts`` prompts and sample ``k`` completions of each with ``transformers``
   ``generate`` (pure sampling at ``temperature``: top-k, top-p, repetition penalty and n-gram
   blocking are switched off, so the tokens come from the distribution whose log-probs are
   trained; seeded per step);
2. score them with ``reward_fn(prompts, completions) -> member rewards [n, K]`` (e.g.
   :func:`ensemble_reward_fn` around an auq reward ensemble);
3. turn member rewards into one conservative reward with
   :func:`auq.training.losses.penalized_reward` (``"mean"``, ``"lcb"``, ``"wco"``, ``"uwo"``); the
   members are centred by fixed offsets -- the reward model's training offsets when
   :func:`ensemble_reward_fn` wraps a model that has them (its rewards come out anchored), else
   the members' means on the first batch (samples of the starting policy), unless given -- so the
   objective does not drift with the batch;
4. KL to the reference per token (``k1 = log π - log π_ref`` or ``k3``), either subtracted from the
   reward (``kl_in_reward=True``, the classic RLHF shaping) or added to the loss
   (``kl_in_reward=False``, ``kl_coef · mean_t k3``, as GRPO does);
5. advantages: **RLOO** (default) -- each completion's reward minus the mean of the other ``k - 1``
   completions of its prompt (so they sum to zero per prompt) -- or **PPO** with a scalar value
   head on the policy's last hidden state and GAE over tokens;
6. clipped policy-gradient update (:func:`auq.training.rl.ppo_loss`, token-level masked mean)
   with AdamW; with ``epochs=1`` and no minibatching the ratio is 1 and RLOO is plain REINFORCE
   with a leave-one-out baseline.

Dropout is kept off (the policy stays in eval mode) so that sampling, old and new log-probs are
computed by the same function. :func:`best_of_n` is the training-free counterpart: sample ``n``
completions per prompt and keep the one with the best penalised proxy reward; its KL to the
sampling policy is ``log n - (n - 1)/n`` (Stiennon et al. 2020).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from auq._checks import as_float_tensor, check_choice, check_float, check_int
from auq._io import follow_umask, remove_stale_temps
from auq.training.losses import penalized_reward
from auq.training.rl import compute_gae, kl_penalty, masked_mean, ppo_loss, value_loss, whiten

logger = logging.getLogger(__name__)

__all__ = [
    "BestOfNResult",
    "OnlineConfig",
    "OnlineHistory",
    "OnlineTrainer",
    "Rollout",
    "best_of_n",
    "best_of_n_kl",
    "ensemble_reward_fn",
    "rloo_advantages",
]

RewardFn = Callable[[Sequence[str], Sequence[str]], Any]

_STATE_JSON = "trainer_state.json"
_STATE_TENSORS = "trainer_state.safetensors"


# --------------------------------------------------------------------------------------------
# config and results
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class OnlineConfig:
    """Settings of :class:`OnlineTrainer` (JSON-serialisable).

    Parameters
    ----------
    algorithm : {"rloo", "ppo"}
        Advantage estimator: leave-one-out baseline over the ``k`` samples of a prompt, or PPO
        (value head + GAE, advantages whitened).
    steps : int
        Number of steps :meth:`OnlineTrainer.train` runs by default.
    batch_prompts, k : int
        Prompts per step and completions sampled per prompt (RLOO needs ``k >= 2``).
    max_new_tokens, temperature : int, float
        Sampling settings (pure sampling: no top-k/top-p, so the log-probs are the sampler's).
    learning_rate, weight_decay, max_grad_norm : float
        AdamW and gradient clipping (``max_grad_norm=None``: none).
    penalty, penalty_coef : str, float
        Objective over ensemble members (see :func:`~auq.training.losses.penalized_reward`).
    kl_coef, kl_estimator, kl_in_reward : float, {"k1", "k3"}, bool
        KL regularisation to the reference policy, per token.
    epochs, minibatch_size, clip_range : int, int or None, float
        Optimisation passes over each batch, minibatch size (None: whole batch), PPO clip.
    normalize_advantages : bool
        Whiten RLOO advantages over the batch (PPO advantages are always whitened).
    vf_coef, gamma, lam, clip_range_value : float
        PPO value loss weight, discount, GAE lambda, value clip.
    seed : int
        Seeds the value head, the prompt order and each step's sampling (step ``s`` uses
        ``seed + s``), so a run resumed from a checkpoint continues exactly.
    save_every, output_dir : int or None, str or None
        Checkpoint every ``save_every`` steps to ``output_dir/step-<s>`` during :meth:`train`.
    progress : bool
        tqdm progress bar in :meth:`train`.
    """

    algorithm: str = "rloo"
    steps: int = 100
    batch_prompts: int = 8
    k: int = 4
    max_new_tokens: int = 16
    temperature: float = 1.0
    learning_rate: float = 1e-5
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    penalty: str = "mean"
    penalty_coef: float = 1.0
    kl_coef: float = 0.05
    kl_estimator: str = "k1"
    kl_in_reward: bool = True
    epochs: int = 1
    minibatch_size: int | None = None
    clip_range: float = 0.2
    normalize_advantages: bool = False
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    clip_range_value: float = 0.2
    seed: int = 0
    save_every: int | None = None
    output_dir: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        self.algorithm = check_choice(self.algorithm, "algorithm", ("rloo", "ppo"))
        self.penalty = check_choice(self.penalty, "penalty", ("mean", "lcb", "wco", "uwo"))
        self.kl_estimator = check_choice(self.kl_estimator, "kl_estimator", ("k1", "k3"))
        self.steps = check_int(self.steps, "steps", minimum=0)
        self.batch_prompts = check_int(self.batch_prompts, "batch_prompts", minimum=1)
        self.k = check_int(self.k, "k", minimum=2 if self.algorithm == "rloo" else 1)
        self.max_new_tokens = check_int(self.max_new_tokens, "max_new_tokens", minimum=1)
        self.temperature = check_float(self.temperature, "temperature", minimum=0.0, inclusive=(False, True))
        self.learning_rate = check_float(self.learning_rate, "learning_rate", minimum=0.0)
        self.weight_decay = check_float(self.weight_decay, "weight_decay", minimum=0.0)
        if self.max_grad_norm is not None:
            self.max_grad_norm = check_float(
                self.max_grad_norm, "max_grad_norm", minimum=0.0, inclusive=(False, True)
            )
        self.penalty_coef = check_float(self.penalty_coef, "penalty_coef", minimum=0.0)
        self.kl_coef = check_float(self.kl_coef, "kl_coef", minimum=0.0)
        self.epochs = check_int(self.epochs, "epochs", minimum=1)
        if self.minibatch_size is not None:
            self.minibatch_size = check_int(self.minibatch_size, "minibatch_size", minimum=1)
        self.clip_range = check_float(self.clip_range, "clip_range", minimum=0.0, inclusive=(False, True))
        self.vf_coef = check_float(self.vf_coef, "vf_coef", minimum=0.0)
        self.gamma = check_float(self.gamma, "gamma", minimum=0.0, maximum=1.0)
        self.lam = check_float(self.lam, "lam", minimum=0.0, maximum=1.0)
        self.clip_range_value = check_float(
            self.clip_range_value, "clip_range_value", minimum=0.0, inclusive=(False, True)
        )
        self.seed = check_int(self.seed, "seed", minimum=0)
        if self.save_every is not None:
            self.save_every = check_int(self.save_every, "save_every", minimum=1)
            if self.output_dir is None:
                raise ValueError("output_dir is required when save_every is set")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, eq=False)
class Rollout:
    """Sampled completions with their token log-probs (rows grouped by prompt: ``k`` in a row).

    Attributes
    ----------
    prompts, completions : list of str ``[n]``
        Prompt of each row (repeated ``k`` times) and the decoded completion.
    input_ids, attention_mask : LongTensor ``[n, P + T]``
        Left-padded prompt followed by the completion (padding after EOS masked out).
    response_mask : FloatTensor ``[n, T]``
        1 on completion tokens up to and including the first EOS.
    logprobs, ref_logprobs : FloatTensor ``[n, T]``
        Log-probs of the sampled tokens under the policy and the reference (at ``temperature``).
    kl : FloatTensor ``[n]``
        Sequence KL estimate ``sum_t k(log π - log π_ref)`` with the trainer's estimator.
    values : FloatTensor ``[n, T]`` or None
        PPO value estimates (None for RLOO).
    """

    prompts: list[str]
    completions: list[str]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    kl: torch.Tensor
    values: torch.Tensor | None = None

    @property
    def n_prompt_tokens(self) -> int:
        return int(self.input_ids.shape[1] - self.response_mask.shape[1])

    def __len__(self) -> int:
        return len(self.completions)


@dataclasses.dataclass(frozen=True)
class OnlineHistory:
    """Per-step statistics logged by :class:`OnlineTrainer` (one dict per step)."""

    records: tuple[dict[str, float], ...]

    def to_pandas(self) -> Any:
        """One row per step."""
        import pandas as pd

        return pd.DataFrame(list(self.records))


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


def rloo_advantages(rewards: Any, k: int) -> Any:
    """Leave-one-out advantages: ``A_i = R_i - mean_{j != i} R_j`` within each group of ``k``.

    ``rewards`` ``[n]`` holds ``n/k`` groups of ``k`` consecutive samples of one prompt; the
    advantages of a group sum to zero (``A_i = k/(k-1) (R_i - mean R)``). numpy in, numpy out.

    Examples
    --------
    >>> rloo_advantages(np.array([1.0, 2.0, 3.0, 0.0, 0.0, 6.0]), k=3).tolist()
    [-1.5, 0.0, 1.5, -3.0, -3.0, 6.0]
    """
    r, restore = as_float_tensor(rewards, "rewards", ndim=1)
    k = check_int(k, "k", minimum=2)
    if r.shape[0] % k:
        raise ValueError(f"rewards must hold groups of k={k} samples, got {r.shape[0]} values")
    g = r.reshape(-1, k)
    baseline = (g.sum(1, keepdim=True) - g) / (k - 1)
    return restore((g - baseline).reshape(-1))


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


def _check_prompts(prompts: Any, name: str = "prompts") -> list[str]:
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise TypeError(f"{name} must be a sequence of strings, got {type(prompts).__name__}")
    if len(prompts) == 0:
        raise ValueError(f"{name} is empty")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise TypeError(f"{name}[{i}] must be a string, got {type(p).__name__}")
    return list(prompts)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _tokenize_prompts(tokenizer: Any, prompts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompt ids (special tokens as the tokenizer adds them)."""
    rows = [list(tokenizer(p)["input_ids"]) for p in prompts]
    for i, row in enumerate(rows):
        if not row:
            raise ValueError(
                f"prompts[{i}] encodes to no tokens; give the tokenizer a bos token or use a non-empty prompt"
            )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        pad = 0
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), int(pad), dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, length - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[i, length - len(row):] = 1
    return ids.to(device), mask.to(device)


def _position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _response_mask(response_ids: torch.Tensor, eos_token_id: int | None) -> torch.Tensor:
    if eos_token_id is None:
        return torch.ones_like(response_ids, dtype=torch.float32)
    is_eos = (response_ids == eos_token_id).long()
    after = (is_eos.cumsum(-1) - is_eos) > 0  # strictly after the first EOS
    return (~after).float()


@torch.no_grad()
def _sample(
    policy: nn.Module,
    tokenizer: Any,
    prompts: list[str],
    k: int,
    max_new_tokens: int,
    temperature: float,
    seed: int,
) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Sample ``k`` completions per prompt; rows grouped by prompt. Returns repeated prompts,
    full ids, full attention mask, response mask and the prompt length."""
    device = _device(policy)
    p_ids, p_mask = _tokenize_prompts(tokenizer, prompts, device)
    p_ids = p_ids.repeat_interleave(k, 0)
    p_mask = p_mask.repeat_interleave(k, 0)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    was_training = policy.training
    policy.eval()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            out = policy.generate(
                input_ids=p_ids,
                attention_mask=p_mask,
                do_sample=True,
                max_new_tokens=max_new_tokens,
                min_new_tokens=0,
                temperature=temperature,
                top_k=0,
                top_p=1.0,
                repetition_penalty=1.0,
                no_repeat_ngram_size=0,
                pad_token_id=pad,
                eos_token_id=eos,
            )
    finally:
        policy.train(was_training)
    n_prompt = p_ids.shape[1]
    resp = out[:, n_prompt:]
    if resp.shape[1] < max_new_tokens:  # all rows stopped early: pad to a fixed width
        fill = torch.full((resp.shape[0], max_new_tokens - resp.shape[1]), int(pad if pad is not None else 0),
                          dtype=resp.dtype, device=resp.device)
        resp = torch.cat([resp, fill], 1)
    rmask = _response_mask(resp, eos)
    ids = torch.cat([p_ids, resp], 1)
    attn = torch.cat([p_mask, rmask.long()], 1)
    repeated = [p for p in prompts for _ in range(k)]
    return repeated, ids, attn, rmask, n_prompt


def _decode(tokenizer: Any, response_ids: torch.Tensor, response_mask: torch.Tensor) -> list[str]:
    out = []
    for row, m in zip(response_ids.tolist(), response_mask.tolist()):
        toks = [t for t, keep in zip(row, m) if keep]
        out.append(tokenizer.decode(toks, skip_special_tokens=True))
    return out


def _token_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    n_prompt: int,
    temperature: float,
    want_hidden: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs ``[n, T]`` of the response tokens (and the last hidden states that predict them)."""
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=_position_ids(attention_mask),
        output_hidden_states=want_hidden,
        use_cache=False,
    )
    logits = out.logits[:, n_prompt - 1 : -1].float() / temperature
    targets = input_ids[:, n_prompt:]
    lp = torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    hidden = out.hidden_states[-1][:, n_prompt - 1 : -1] if want_hidden else None
    return lp, hidden


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
    from auq.data import PreferenceCollator

    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tok is None:
        raise TypeError("tokenizer is required when the model has no tokenizer attribute")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    if hasattr(model, "make_collator"):  # the training length, capped at the backbone's positions
        collator = model.make_collator(max_length, tokenizer=tok)
    else:
        collator = PreferenceCollator(tok, max_length=max_length or 512)

    def reward_fn(prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        prompts = _check_prompts(prompts)
        completions = _check_prompts(completions, "completions")
        if len(prompts) != len(completions):
            raise ValueError(
                f"prompts and completions must have the same length, got {len(prompts)} and {len(completions)}"
            )
        dev = torch.device(device) if device is not None else _device(model)
        was_training = model.training
        model.eval()
        outs = []
        try:
            with torch.no_grad():
                for s in range(0, len(prompts), batch_size):
                    batch = collator(
                        [{"prompt": p, "chosen": c, "rejected": c}
                         for p, c in zip(prompts[s : s + batch_size], completions[s : s + batch_size])]
                    )
                    r = model(batch["input_ids_chosen"].to(dev), batch["attention_mask_chosen"].to(dev))
                    outs.append(r.float().cpu().to(torch.float64))
        finally:
            model.train(was_training)
        out = torch.cat(outs).numpy()
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


class OnlineTrainer:
    """Online RL (RLOO or PPO) of a causal LM against a penalised ensemble reward.

    Parameters
    ----------
    policy : transformers causal LM
        Trained in place (kept in eval mode: dropout off).
    ref_policy : transformers causal LM or None
        Frozen reference for the KL term; ``None`` uses a frozen copy of ``policy`` as it is now.
    tokenizer : transformers tokenizer
        Needs an ``eos_token`` (completions stop there) or runs ``max_new_tokens`` always.
    reward_fn : callable
        ``reward_fn(prompts, completions) -> [n, K]`` member rewards (numpy, torch or lists).
    prompts : sequence of str
        Training prompts, visited in a seeded random order, ``batch_prompts`` per step.
    config : OnlineConfig, optional
    member_offsets : array-like ``[K]``, optional
        Per-member centring of the rewards; default: none when ``reward_fn`` returns
        training-anchored rewards (``reward_fn.anchored``), else their means on the first batch.

    Examples
    --------
    >>> cfg = OnlineConfig(steps=50, penalty="lcb", penalty_coef=1.0, kl_coef=0.05)
    >>> trainer = OnlineTrainer(policy, None, tok, ensemble_reward_fn(ens), prompts, cfg)  # doctest: +SKIP
    >>> history = trainer.train()  # doctest: +SKIP
    >>> history.to_pandas()[["reward_mean", "kl"]].tail(1)  # doctest: +SKIP
    """

    def __init__(
        self,
        policy: nn.Module,
        ref_policy: nn.Module | None,
        tokenizer: Any,
        reward_fn: RewardFn,
        prompts: Sequence[str],
        config: OnlineConfig | None = None,
        member_offsets: Any = None,
    ) -> None:
        if not isinstance(policy, nn.Module) or not hasattr(policy, "generate"):
            raise TypeError(f"policy must be a transformers causal LM, got {type(policy).__name__}")
        if not callable(reward_fn):
            raise TypeError(f"reward_fn must be callable, got {type(reward_fn).__name__}")
        self.config = config if config is not None else OnlineConfig()
        if not isinstance(self.config, OnlineConfig):
            raise TypeError(f"config must be an OnlineConfig, got {type(self.config).__name__}")
        self.policy = policy
        self.ref_policy = ref_policy if ref_policy is not None else copy.deepcopy(policy)
        if not isinstance(self.ref_policy, nn.Module):
            raise TypeError(f"ref_policy must be a causal LM or None, got {type(ref_policy).__name__}")
        self.ref_policy.eval()
        self.ref_policy.requires_grad_(False)
        self.policy.eval()
        self.tokenizer = tokenizer
        self.reward_fn = reward_fn
        self.prompts = _check_prompts(prompts)
        self.member_offsets: torch.Tensor | None = (
            None if member_offsets is None else as_float_tensor(member_offsets, "member_offsets", ndim=1)[0]
            .to(torch.float64).cpu()
        )
        self.step_count = 0
        self.records: list[dict[str, float]] = []
        self.stop_reason: str | None = None
        self.value_head: nn.Linear | None = None
        params = [p for p in self.policy.parameters() if p.requires_grad]
        if self.config.algorithm == "ppo":
            hidden = getattr(self.policy.config, "hidden_size", None) or self.policy.config.n_embd
            gen = torch.Generator().manual_seed(self.config.seed)
            self.value_head = nn.Linear(hidden, 1)
            with torch.no_grad():
                self.value_head.weight.normal_(0.0, 1.0 / math.sqrt(hidden), generator=gen)
                self.value_head.bias.zero_()
            self.value_head.to(_device(self.policy))
            params += list(self.value_head.parameters())
        self.optimizer = torch.optim.AdamW(
            params, lr=self.config.learning_rate, weight_decay=self.config.weight_decay
        )

    # ------------------------------------------------------------------ rollouts
    def _forward(self, ids: torch.Tensor, attn: torch.Tensor, n_prompt: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        lp, hidden = _token_logprobs(
            self.policy, ids, attn, n_prompt, self.config.temperature, want_hidden=self.value_head is not None
        )
        values = self.value_head(hidden.float()).squeeze(-1) if self.value_head is not None else None
        return lp, values

    @torch.no_grad()
    def rollout(self, prompts: Sequence[str], k: int | None = None, seed: int | None = None) -> Rollout:
        """Sample ``k`` completions per prompt with the current policy and compute log-probs and KL.

        ``seed`` defaults to ``config.seed + step``; the global RNG state is left untouched.
        """
        prompts = _check_prompts(prompts)
        k = self.config.k if k is None else check_int(k, "k", minimum=1)
        seed = self.config.seed + self.step_count if seed is None else check_int(seed, "seed", minimum=0)
        rep, ids, attn, rmask, n_prompt = _sample(
            self.policy, self.tokenizer, prompts, k, self.config.max_new_tokens, self.config.temperature, seed
        )
        lp, values = self._forward(ids, attn, n_prompt)
        ref_lp, _ = _token_logprobs(self.ref_policy, ids, attn, n_prompt, self.config.temperature)
        kl = (kl_penalty(lp, ref_lp, self.config.kl_estimator) * rmask).sum(1)
        return Rollout(
            prompts=rep,
            completions=_decode(self.tokenizer, ids[:, n_prompt:], rmask),
            input_ids=ids,
            attention_mask=attn,
            response_mask=rmask,
            logprobs=lp * rmask,
            ref_logprobs=ref_lp * rmask,
            kl=kl,
            values=None if values is None else values * rmask,
        )

    def score(self, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
        """Member rewards ``[n, K]`` (float64, CPU) and the penalised reward ``[n]`` of a rollout.

        The first call fixes ``member_offsets`` unless given: zeros for a ``reward_fn`` with
        training-anchored rewards, else the members' means on that batch.
        """
        member = _member_rewards(self.reward_fn(rollout.prompts, rollout.completions), len(rollout))
        if self.member_offsets is None:
            self.member_offsets = _default_offsets(self.reward_fn, member)
            logger.info("member offsets fixed %s: %s", "at 0 (anchored rewards)" if getattr(self.reward_fn, "anchored", False)
                        else "from the first batch", self.member_offsets.tolist())
        if self.member_offsets.shape[0] != member.shape[1]:
            raise ValueError(
                f"member_offsets has {self.member_offsets.shape[0]} values, reward_fn gives {member.shape[1]} members"
            )
        pen = _penalize(member, self.config.penalty, self.config.penalty_coef, self.member_offsets)
        return member, pen

    def _batch_prompts(self, step: int) -> list[str]:
        n, b = len(self.prompts), self.config.batch_prompts
        out = []
        for j in range(step * b, (step + 1) * b):
            epoch, pos = divmod(j, n)
            order = np.random.default_rng([self.config.seed, epoch]).permutation(n)
            out.append(self.prompts[int(order[pos])])
        return out

    # ------------------------------------------------------------------ one step
    def step(self) -> dict[str, Any]:
        """Run one step (sample, score, penalise, update). Returns the logged stats plus the
        ``rollout``, ``member_rewards``, ``penalized`` and ``advantages`` of the batch."""
        cfg = self.config
        ro = self.rollout(self._batch_prompts(self.step_count))
        member, pen = self.score(ro)
        dev = ro.logprobs.device
        pen_t = pen.to(dev, torch.float32)
        mask = ro.response_mask
        tok_kl = kl_penalty(ro.logprobs, ro.ref_logprobs, cfg.kl_estimator) * mask
        if cfg.algorithm == "rloo":
            total = pen_t - (cfg.kl_coef * tok_kl.sum(1) if cfg.kl_in_reward else 0.0)
            adv = rloo_advantages(total, cfg.k)
            if cfg.normalize_advantages:
                adv = whiten(adv)
            adv_tok = adv[:, None].expand_as(mask).contiguous()
            returns = None
        else:
            rewards = -cfg.kl_coef * tok_kl if cfg.kl_in_reward else torch.zeros_like(tok_kl)
            last = (mask.sum(1).long() - 1).clamp(min=0)
            rewards = rewards.clone()
            rewards[torch.arange(len(ro), device=dev), last] += pen_t
            adv_tok, returns = compute_gae(rewards, ro.values, mask, cfg.gamma, cfg.lam)
            adv_tok = whiten(adv_tok, mask) * mask
            adv = masked_mean(adv_tok, mask, dim=1)
        losses = []
        n = len(ro)
        mb = cfg.minibatch_size or n
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step_count)
        for _ in range(cfg.epochs):
            order = torch.randperm(n, generator=gen) if mb < n else torch.arange(n)
            for s in range(0, n, mb):
                idx = order[s : s + mb].to(dev)
                lp, values = self._forward(ro.input_ids[idx], ro.attention_mask[idx], ro.n_prompt_tokens)
                m = mask[idx]
                loss = ppo_loss(lp * m, ro.logprobs[idx], adv_tok[idx], m, cfg.clip_range).loss
                if not cfg.kl_in_reward and cfg.kl_coef > 0:
                    loss = loss + cfg.kl_coef * masked_mean(kl_penalty(lp, ro.ref_logprobs[idx], "k3"), m)
                if values is not None:
                    loss = loss + cfg.vf_coef * value_loss(
                        values * m, ro.values[idx], returns[idx], m, cfg.clip_range_value
                    )
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(
                        [p for g in self.optimizer.param_groups for p in g["params"]], cfg.max_grad_norm
                    )
                self.optimizer.step()
                losses.append(float(loss.detach()))
        centred = member - self.member_offsets
        stats = {
            "step": float(self.step_count),
            "reward_mean": float(centred.mean()),
            "reward_std": float(centred.std(1, correction=0).mean()),
            "penalized_reward": float(pen.mean()),
            "kl": float(ro.kl.mean()),
            "response_length": float(mask.sum(1).mean()),
            "loss": float(np.mean(losses)),
        }
        self.records.append(stats)
        self.step_count += 1
        logger.debug("step %d: %s", self.step_count, stats)
        return {**stats, "rollout": ro, "member_rewards": member, "penalized": pen, "advantages": adv.detach()}

    def train(self, steps: int | None = None, callback: Callable[[OnlineTrainer, dict[str, Any]], None] | None = None) -> OnlineHistory:
        """Run ``steps`` steps (default ``config.steps``) with a tqdm bar; returns the history.

        ``callback(trainer, step_output)`` is called after every step (e.g. to evaluate a gold
        reward, or :func:`auq.monitor.online_monitor_callback`); a callback that calls
        :meth:`request_stop` ends training after that step. Checkpoints go to
        ``config.output_dir/step-<s>`` every ``config.save_every`` steps.
        """
        from tqdm.auto import tqdm

        steps = self.config.steps if steps is None else check_int(steps, "steps", minimum=0)
        self.stop_reason = None
        bar = tqdm(range(steps), desc=f"{self.config.algorithm} ({self.config.penalty})",
                   disable=not self.config.progress)
        for _ in bar:
            out = self.step()
            bar.set_postfix(reward=f"{out['reward_mean']:.3f}", pen=f"{out['penalized_reward']:.3f}",
                            kl=f"{out['kl']:.3f}")
            if self.step_count % 10 == 0 or self.step_count == 1:
                logger.info(
                    "step %d: reward %.4f ± %.4f, penalised %.4f, KL %.4f", self.step_count,
                    out["reward_mean"], out["reward_std"], out["penalized_reward"], out["kl"],
                )
            if callback is not None:
                callback(self, out)
            if self.config.save_every and self.step_count % self.config.save_every == 0:
                self.save_checkpoint(os.path.join(self.config.output_dir, f"step-{self.step_count}"))
            if self.stop_reason is not None:
                logger.warning("training stopped after step %d: %s", self.step_count, self.stop_reason)
                break
        return self.history

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask :meth:`train` to stop after the current step (call it from a callback).

        ``reason`` is logged and kept in ``stop_reason`` (None when training ran its course).
        """
        if not isinstance(reason, str) or not reason:
            raise TypeError(f"reason must be a non-empty str, got {reason!r}")
        self.stop_reason = reason

    @property
    def history(self) -> OnlineHistory:
        """Statistics of every step so far."""
        return OnlineHistory(tuple(dict(r) for r in self.records))

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, directory: str | os.PathLike) -> str:
        """Save policy (``save_pretrained``: safetensors + config), tokenizer, value head and AdamW
        state (safetensors) and the trainer state (JSON: step, config, history, offsets),
        atomically: written to a temporary sibling folder, then renamed into place."""
        from safetensors.torch import save_file

        directory = os.path.abspath(os.fspath(directory))
        parent = os.path.dirname(directory)
        os.makedirs(parent, exist_ok=True)
        remove_stale_temps(directory)
        tmp = f"{directory}.tmp-{os.getpid()}"
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
        try:
            self.policy.save_pretrained(tmp)
            if self.tokenizer is not None and hasattr(self.tokenizer, "save_pretrained"):
                self.tokenizer.save_pretrained(tmp)
            tensors: dict[str, torch.Tensor] = {}
            if self.value_head is not None:
                for key, v in self.value_head.state_dict().items():
                    tensors[f"value_head.{key}"] = v.detach().cpu().contiguous()
            opt = self.optimizer.state_dict()
            for pid, st in opt["state"].items():
                for key, v in st.items():
                    t = v if torch.is_tensor(v) else torch.tensor(v)
                    tensors[f"optimizer.{pid}.{key}"] = t.detach().cpu().contiguous()
            save_file(tensors, os.path.join(tmp, _STATE_TENSORS))
            state = {
                "step": self.step_count,
                "config": self.config.to_dict(),
                "records": self.records,
                "member_offsets": None if self.member_offsets is None else self.member_offsets.tolist(),
                "optimizer_param_groups": [{k: v for k, v in g.items()} for g in opt["param_groups"]],
            }
            with open(os.path.join(tmp, _STATE_JSON), "w") as f:
                json.dump(state, f, indent=2)
            follow_umask(tmp)  # transformers and safetensors create their files 0600
            old = None
            if os.path.exists(directory):
                old = f"{directory}.old-{os.getpid()}"
                os.replace(directory, old)
            os.replace(tmp, directory)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if os.path.exists(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
        logger.info("saved checkpoint to %s", directory)
        return directory

    def load_checkpoint(self, directory: str | os.PathLike) -> None:
        """Restore policy weights (through ``from_pretrained``), value head, AdamW state and
        trainer state from :meth:`save_checkpoint`'s folder, to continue training exactly."""
        from safetensors.torch import load_file

        directory = os.fspath(directory)
        path = os.path.join(directory, _STATE_JSON)
        if not os.path.isfile(path):
            raise ValueError(f"directory {directory!r} holds no {_STATE_JSON}: not an OnlineTrainer checkpoint")
        with open(path) as f:
            state = json.load(f)
        if state["config"]["algorithm"] != self.config.algorithm:
            raise ValueError(
                f"directory holds a {state['config']['algorithm']!r} checkpoint, trainer is {self.config.algorithm!r}"
            )
        loaded = type(self.policy).from_pretrained(directory)
        self.policy.load_state_dict(loaded.state_dict())
        tensors = load_file(os.path.join(directory, _STATE_TENSORS))
        if self.value_head is not None:
            self.value_head.load_state_dict(
                {k[len("value_head."):]: v for k, v in tensors.items() if k.startswith("value_head.")}
            )
        opt_state: dict[int, dict[str, torch.Tensor]] = {}
        for key, v in tensors.items():
            if key.startswith("optimizer."):
                _, pid, name = key.split(".", 2)
                opt_state.setdefault(int(pid), {})[name] = v
        self.optimizer.load_state_dict({"state": opt_state, "param_groups": state["optimizer_param_groups"]})
        self.step_count = int(state["step"])
        self.records = [dict(r) for r in state["records"]]
        offs = state["member_offsets"]
        self.member_offsets = None if offs is None else torch.tensor(offs, dtype=torch.float64)
        logger.info("loaded checkpoint %s (step %d)", directory, self.step_count)
