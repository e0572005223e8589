"""A compact online RL loop for causal LMs against an uncertain (ensemble) reward.

One step of :class:`OnlineTrainer`:

1. take ``per_device_train_batch_size`` prompts and sample ``k`` completions of each with ``transformers``
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
   with AdamW (the trainers' learning-rate schedule and warmup, advanced once per step); with
   ``num_ppo_epochs=1`` and no minibatching the ratio is 1 and RLOO is plain REINFORCE
   with a leave-one-out baseline.

Dropout is kept off (the policy stays in eval mode) so that sampling, old and new log-probs are
computed by the same function.

Under ``accelerate launch`` (DDP) each process takes its own ``per_device_train_batch_size``
prompts of a step's global batch and samples, scores and computes advantages for them alone (the
RLOO baseline stays inside a prompt's group of ``k``); the gradient is all-reduced, and the
batch-level quantities are made global with small all-reduces, so an update equals the one-process
update on the whole batch: token means divide by the global token count, whitening uses global
statistics, the first batch's member offsets are the global means, and the logged statistics are
means over processes. :func:`best_of_n` is the training-free counterpart: sample ``n``
completions per prompt and keep the one with the best penalised proxy reward; its KL to the
sampling policy is ``log n - (n - 1)/n`` (Stiennon et al. 2020).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from auq._checks import as_float_tensor, check_int
from auq.training._accelerate import (
    cpu_process_group,
    reduce_mean,
    refuse_sharding,
    respect_precision,
)
from auq.training._args import create_scheduler
from auq.training._checkpoint import (
    checkpoint_dir,
    load_checkpoint,
    load_checkpoint_state,
    load_tensors,
    resolve_checkpoint,
    rotate_checkpoints,
    save_checkpoint,
)
from auq.training._generation import (
    _check_prompts,
    _decode,
    _sample,
    _token_logprobs,
)
from auq.training._online_config import OnlineConfig
from auq.training._trackers import Trackers, tracker_kwargs
from auq.training.best_of_n import (  # noqa: F401  (re-exported: they lived here before)
    BestOfNResult,
    _default_offsets,
    _member_rewards,
    _penalize,
    best_of_n,
    best_of_n_kl,
    ensemble_reward_fn,
)
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



# --------------------------------------------------------------------------------------------
# config and results
# --------------------------------------------------------------------------------------------


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
        Training prompts, visited in a seeded random order, ``config.per_device_train_batch_size`` per step.
    config : OnlineConfig, optional
    member_offsets : array-like ``[K]``, optional
        Per-member centring of the rewards; default: none when ``reward_fn`` returns
        training-anchored rewards (``reward_fn.anchored``), else their means on the first batch.

    Examples
    --------
    >>> cfg = OnlineConfig(max_steps=50, penalty_method="lcb", penalty_coef=1.0, kl_coef=0.05)
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
        from accelerate import Accelerator

        # the policy trains in its own dtype (no autocast); trackers (report_to) log through this
        self.accelerator = Accelerator(cpu=cpu_process_group(), mixed_precision=None, step_scheduler_with_optimizer=False,
                                       **tracker_kwargs(self.config))
        respect_precision(self.accelerator, "no")
        refuse_sharding(self.accelerator, "OnlineTrainer", "generation reads the whole policy on every process")
        self.ref_policy.eval()
        self.ref_policy.requires_grad_(False)
        self.ref_policy.to(self.accelerator.device)
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
            params += list(self.value_head.parameters())
        optimizer = torch.optim.AdamW(params, lr=self.config.learning_rate, weight_decay=self.config.weight_decay)
        # ``policy`` / ``value_head`` stay the plain modules (generation, no-grad log-probs, saving);
        # the prepared ones (DDP-wrapped under several processes) run the gradient forwards
        if self.value_head is not None:
            self._train_policy, self._train_value_head, self.optimizer = self.accelerator.prepare(
                self.policy, self.value_head, optimizer)
        else:
            self._train_policy, self.optimizer = self.accelerator.prepare(self.policy, optimizer)
            self._train_value_head = None
        #: rollout steps of a full run: ``max_steps``, or ``num_train_epochs`` passes over the prompts
        global_batch = self.config.per_device_train_batch_size * self.accelerator.num_processes
        self.total_steps = self.config.total_steps(math.ceil(len(self.prompts) / global_batch))
        #: the learning-rate schedule, advanced once per rollout step
        self.scheduler = create_scheduler(self.optimizer, self.config, self.total_steps)
        self.trackers = Trackers(self.config, self.accelerator, "online")
        self._local_stats: dict[str, float] = {}  # this process's statistics of the last step

    # ------------------------------------------------------------------ rollouts
    def _forward(self, ids: torch.Tensor, attn: torch.Tensor, n_prompt: int, train: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        policy, head = (self._train_policy, self._train_value_head) if train else (self.policy, self.value_head)
        lp, hidden = _token_logprobs(
            policy, ids, attn, n_prompt, self.config.temperature, want_hidden=self.value_head is not None
        )
        values = head(hidden.float()).squeeze(-1) if head is not None else None
        return lp, values

    @torch.no_grad()
    def rollout(self, prompts: Sequence[str], k: int | None = None, seed: int | None = None) -> Rollout:
        """Sample ``k`` completions per prompt with the current policy and compute log-probs and KL.

        ``seed`` defaults to ``config.seed + step`` (plus ``process_index · 2**32`` under several
        processes, so each samples its own stream); the global RNG state is left untouched.
        """
        prompts = _check_prompts(prompts)
        k = self.config.k if k is None else check_int(k, "k", minimum=1)
        if seed is None:
            seed = self.config.seed + self.step_count + self.accelerator.process_index * (1 << 32)
        else:
            seed = check_int(seed, "seed", minimum=0)
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
            acc = self.accelerator  # every process's first batch: one set of offsets, one objective
            every = member if acc.num_processes == 1 else acc.gather(member.to(acc.device)).cpu()
            self.member_offsets = _default_offsets(self.reward_fn, every)
            logger.info("member offsets fixed %s: %s", "at 0 (anchored rewards)" if getattr(self.reward_fn, "anchored", False)
                        else "from the first batch", self.member_offsets.tolist())
        if self.member_offsets.shape[0] != member.shape[1]:
            raise ValueError(
                f"member_offsets has {self.member_offsets.shape[0]} values, reward_fn gives {member.shape[1]} members"
            )
        pen = _penalize(member, self.config.penalty_method, self.config.penalty_coef, self.member_offsets)
        return member, pen

    def _batch_prompts(self, step: int, rank: int | None = None) -> list[str]:
        """Process ``rank``'s (default: this one's) share of step ``step``'s global batch of prompts."""
        n, b = len(self.prompts), self.config.per_device_train_batch_size
        rank = self.accelerator.process_index if rank is None else rank
        start = (step * self.accelerator.num_processes + rank) * b
        out = []
        for j in range(start, start + b):
            epoch, pos = divmod(j, n)
            order = np.random.default_rng([self.config.seed, epoch]).permutation(n)
            out.append(self.prompts[int(order[pos])])
        return out

    # ------------------------------------------------------------------ one step
    def _whiten(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """:func:`~auq.training.rl.whiten` with statistics over every process's batch."""
        acc = self.accelerator
        if acc.num_processes == 1:
            return whiten(x, mask)
        m = torch.ones_like(x) if mask is None else torch.broadcast_to(mask, x.shape).to(x.dtype)
        s = acc.reduce(torch.stack([(x * m).sum(), m.sum()]).double(), reduction="sum")
        mean = s[0] / s[1]
        ss = acc.reduce(((x.double() - mean) ** 2 * m).sum(), reduction="sum")
        var = ss / (s[1] - 1)  # Bessel-corrected, as whiten
        return ((x.double() - mean) * torch.rsqrt(var + 1e-8)).to(x.dtype)

    def _token_share(self, m: torch.Tensor) -> float:
        """``T_local · P / T_global``: scales a token mean over this process's tokens so that, once
        DDP averages the gradients over P processes, the update is the mean over all tokens."""
        acc = self.accelerator
        if acc.num_processes == 1:
            return 1.0
        local = m.sum().double()
        return float(local * acc.num_processes / acc.reduce(local, reduction="sum"))

    def step(self, rollout: Rollout | None = None) -> dict[str, Any]:
        """Run one step (sample, score, penalise, update). Returns the logged stats plus the
        ``rollout``, ``member_rewards``, ``penalized`` and ``advantages`` of the batch.

        ``rollout`` (optional) is learnt from instead of sampling this step's prompts (e.g. samples
        replayed or drawn elsewhere); its rows must come in groups of ``k`` per prompt. Under
        several processes each passes its own share; the logged stats are means over processes.
        """
        cfg = self.config
        if rollout is None:
            ro = self.rollout(self._batch_prompts(self.step_count))
        elif not isinstance(rollout, Rollout):
            raise TypeError(f"rollout must be a Rollout, got {type(rollout).__name__}")
        elif len(rollout) % cfg.k or (cfg.algorithm == "ppo" and rollout.values is None):
            raise ValueError(f"rollout must hold groups of k={cfg.k} completions (and values for PPO); "
                             f"got {len(rollout)} rows")
        else:
            ro = rollout
        member, pen = self.score(ro)
        dev = ro.logprobs.device
        pen_t = pen.to(dev, torch.float32)
        mask = ro.response_mask
        tok_kl = kl_penalty(ro.logprobs, ro.ref_logprobs, cfg.kl_estimator) * mask
        if cfg.algorithm == "rloo":
            total = pen_t - (cfg.kl_coef * tok_kl.sum(1) if cfg.kl_in_reward else 0.0)
            adv = rloo_advantages(total, cfg.k)
            if cfg.normalize_advantages:
                adv = self._whiten(adv)
            adv_tok = adv[:, None].expand_as(mask).contiguous()
            returns = None
        else:
            rewards = -cfg.kl_coef * tok_kl if cfg.kl_in_reward else torch.zeros_like(tok_kl)
            last = (mask.sum(1).long() - 1).clamp(min=0)
            rewards = rewards.clone()
            rewards[torch.arange(len(ro), device=dev), last] += pen_t
            adv_tok, returns = compute_gae(rewards, ro.values, mask, cfg.gamma, cfg.lam)
            adv_tok = self._whiten(adv_tok, mask) * mask
            adv = masked_mean(adv_tok, mask, dim=1)
        losses = []
        lr = float(self.scheduler.get_last_lr()[0])
        n = len(ro)
        mb = cfg.minibatch_size or n
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step_count)
        for _ in range(cfg.num_ppo_epochs):
            order = torch.randperm(n, generator=gen) if mb < n else torch.arange(n)
            for s in range(0, n, mb):
                idx = order[s : s + mb].to(dev)
                lp, values = self._forward(ro.input_ids[idx], ro.attention_mask[idx], ro.n_prompt_tokens, train=True)
                m = mask[idx]
                loss = ppo_loss(lp * m, ro.logprobs[idx], adv_tok[idx], m, cfg.clip_range).loss
                if not cfg.kl_in_reward and cfg.kl_coef > 0:
                    loss = loss + cfg.kl_coef * masked_mean(kl_penalty(lp, ro.ref_logprobs[idx], "k3"), m)
                if values is not None:
                    loss = loss + cfg.vf_coef * value_loss(
                        values * m, ro.values[idx], returns[idx], m, cfg.clip_range_value
                    )
                share = self._token_share(m)
                if share != 1.0:
                    loss = loss * share
                self.optimizer.zero_grad(set_to_none=True)
                self.accelerator.backward(loss)
                if cfg.max_grad_norm:
                    self.accelerator.clip_grad_norm_(
                        [p for g in self.optimizer.param_groups for p in g["params"]], cfg.max_grad_norm
                    )
                self.optimizer.step()
                losses.append(float(loss.detach()))
        self.scheduler.step()
        centred = member - self.member_offsets
        self._local_stats = {
            "reward_mean": float(centred.mean()),
            "reward_std": float(centred.std(1, correction=0).mean()),
            "penalized_reward": float(pen.mean()),
            "kl": float(ro.kl.mean()),
            "response_length": float(mask.sum(1).mean()),
            "loss": float(np.mean(losses)),
        }
        stats = {"step": float(self.step_count), **reduce_mean(self._local_stats, self.accelerator),
                 "learning_rate": lr}
        self.records.append(stats)
        self.step_count += 1
        logger.debug("step %d: %s", self.step_count, stats)
        return {**stats, "rollout": ro, "member_rewards": member, "penalized": pen, "advantages": adv.detach()}

    def train(
        self,
        steps: int | None = None,
        callback: Callable[[OnlineTrainer, dict[str, Any]], None] | None = None,
        resume_from_checkpoint: str | os.PathLike | bool | None = None,
    ) -> OnlineHistory:
        """Run ``steps`` more steps (default: up to :attr:`total_steps`) with a tqdm bar; returns the history.

        ``callback(trainer, step_output)`` is called after every step (e.g. to evaluate a gold
        reward, or :func:`auq.monitor.online_monitor_callback`); a callback that calls
        :meth:`request_stop` ends training after that step (under several processes the callback
        runs on each, and a stop requested on one stops all). Checkpoints go to
        ``config.output_dir/checkpoint-<s>`` every ``config.save_steps`` steps;
        ``resume_from_checkpoint`` (a folder, or ``True`` for the newest in ``output_dir``)
        continues from one exactly (see :meth:`load_checkpoint`).
        """
        from tqdm.auto import tqdm

        if resume_from_checkpoint not in (None, False):
            self.load_checkpoint(resolve_checkpoint(resume_from_checkpoint, self.config.output_dir))
        if steps is None:
            steps = max(0, self.total_steps - self.step_count)
        steps = check_int(steps, "steps", minimum=0)
        self.stop_reason = None
        cfg = self.config
        acc = self.accelerator
        bar = tqdm(range(steps), desc=f"{cfg.algorithm} ({cfg.penalty_method})",
                   disable=cfg.disable_tqdm or not acc.is_main_process)
        self.trackers.start()
        for _ in bar:
            out = self.step()
            bar.set_postfix(reward=f"{out['reward_mean']:.3f}", pen=f"{out['penalized_reward']:.3f}",
                            kl=f"{out['kl']:.3f}")
            if acc.is_main_process and (self.step_count % cfg.logging_steps == 0 or self.step_count == 1):
                logger.info(
                    "step %d: reward %.4f ± %.4f, penalised %.4f, KL %.4f", self.step_count,
                    out["reward_mean"], out["reward_std"], out["penalized_reward"], out["kl"],
                )
            if callback is not None:
                callback(self, out)
            if self.step_count % cfg.logging_steps == 0:
                self.trackers.log(self.records[-1], self.step_count)
            if cfg.save_steps and self.step_count % cfg.save_steps == 0:
                self.save_checkpoint()
            if acc.num_processes > 1:  # a stop requested on any process stops all of them together
                flag = torch.tensor([float(self.stop_reason is not None)], device=acc.device)
                if float(acc.reduce(flag, reduction="max")) > 0 and self.stop_reason is None:
                    self.stop_reason = "stop requested on another process"
            if self.stop_reason is not None:
                logger.warning("training stopped after step %d: %s", self.step_count, self.stop_reason)
                break
        self.trackers.end()
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
    def save_checkpoint(self, directory: str | os.PathLike | None = None) -> str:
        """Write a resumable checkpoint (default ``<output_dir>/checkpoint-<step>``, the oldest beyond
        ``save_total_limit`` removed), atomically: policy and tokenizer under ``model/``, AdamW and
        schedule state, value head, RNG states and ``trainer_state.json`` (step, config, history,
        member offsets); see :mod:`auq.training._checkpoint`."""
        cfg, acc = self.config, self.accelerator
        seen = self.step_count * cfg.per_device_train_batch_size * acc.num_processes
        epoch, pos = divmod(seen, len(self.prompts))
        out = save_checkpoint(
            directory if directory is not None else checkpoint_dir(cfg.output_dir, self.step_count),
            model=self.policy, optimizer=self.optimizer, scheduler=self.scheduler, tokenizer=self.tokenizer,
            accelerator=acc,
            tensors={"value_head": self.value_head.state_dict()} if self.value_head is not None else None,
            state={
                "global_step": self.step_count, "epoch": epoch,
                "batches_in_epoch": math.ceil(pos / (cfg.per_device_train_batch_size * acc.num_processes)),
                "config": cfg.to_dict(), "log_history": self.records,
                "member_offsets": None if self.member_offsets is None else self.member_offsets.tolist(),
            },
        )  # fmt: skip
        if directory is None and acc.is_main_process:
            rotate_checkpoints(cfg.output_dir, cfg.save_total_limit)
        acc.wait_for_everyone()
        return out

    def load_checkpoint(self, directory: str | os.PathLike) -> None:
        """Restore policy weights, value head, AdamW and schedule state, RNG states and trainer state
        from :meth:`save_checkpoint`'s folder, to continue training exactly (the reference policy
        is not stored: build the trainer with the same one)."""
        directory = os.fspath(directory)
        state = load_checkpoint_state(directory)
        algorithm = state.get("config", {}).get("algorithm")
        if algorithm != self.config.algorithm:
            raise ValueError(
                f"directory holds a {algorithm!r} checkpoint, trainer is {self.config.algorithm!r}"
            )
        load_checkpoint(directory, model=self.policy, optimizer=self.optimizer, scheduler=self.scheduler,
                        accelerator=self.accelerator)
        if self.value_head is not None:
            self.value_head.load_state_dict(load_tensors(directory, "value_head"))
        self.step_count = int(state["global_step"])
        self.records = [dict(r) for r in state["log_history"]]
        offs = state["member_offsets"]
        self.member_offsets = None if offs is None else torch.tensor(offs, dtype=torch.float64)
        logger.info("loaded checkpoint %s (step %d)", directory, self.step_count)
