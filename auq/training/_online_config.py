"""Settings of :class:`~auq.training.OnlineTrainer` (:class:`OnlineConfig`)."""

from __future__ import annotations

import dataclasses

from .._checks import check_choice, check_float, check_int
from ._args import PROGRESS_RENAME, TrainingArgumentsBase, renamed_fields

__all__ = ["OnlineConfig"]


@renamed_fields({
    "steps": ("max_steps", None),
    "batch_prompts": ("per_device_train_batch_size", None),
    "epochs": ("num_ppo_epochs", None),
    "save_every": ("save_steps", None),
    "progress": PROGRESS_RENAME,
    "penalty": ("penalty_method", None),
})  # fmt: skip
@dataclasses.dataclass
class OnlineConfig(TrainingArgumentsBase):
    """Settings of :class:`OnlineTrainer` (JSON-serialisable).

    The settings every trainer shares are those of
    :class:`~auq.training._args.TrainingArgumentsBase`, read for one rollout step: ``max_steps``
    (default 100) rollout steps, or ``num_train_epochs`` passes over the prompts when
    ``max_steps=-1``; ``per_device_train_batch_size`` prompts per step; the learning-rate schedule
    advances once per rollout step (default ``"constant"``: no decay); ``save_steps`` writes
    ``output_dir/checkpoint-<step>``. ``gradient_accumulation_steps`` must be 1 and ``bf16``/
    ``fp16`` off (the policy trains in its own dtype; load it in bfloat16 for that).

    Old names kept for one release (a ``FutureWarning``): ``steps`` → ``max_steps``,
    ``batch_prompts`` → ``per_device_train_batch_size``, ``epochs`` → ``num_ppo_epochs`` (passes
    over each rollout batch, TRL's name; not ``num_train_epochs``), ``save_every`` →
    ``save_steps``, ``progress`` → ``disable_tqdm`` (negated), ``penalty`` → ``penalty_method``.

    Parameters
    ----------
    algorithm : {"rloo", "ppo"}
        Advantage estimator: leave-one-out baseline over the ``k`` samples of a prompt, or PPO
        (value head + GAE, advantages whitened).
    k : int
        Completions sampled per prompt (RLOO needs ``k >= 2``).
    max_new_tokens, temperature : int, float
        Sampling settings (pure sampling: no top-k/top-p, so the log-probs are the sampler's).
    penalty_method, penalty_coef : str, float
        Objective over ensemble members (see :func:`~auq.training.losses.penalized_reward`).
    kl_coef, kl_estimator, kl_in_reward : float, {"k1", "k3"}, bool
        KL regularisation to the reference policy, per token.
    num_ppo_epochs, minibatch_size, clip_range : int, int or None, float
        Optimisation passes over each batch, minibatch size (None: whole batch), PPO clip.
    normalize_advantages : bool
        Whiten RLOO advantages over the batch (PPO advantages are always whitened).
    vf_coef, gamma, lam, clip_range_value : float
        PPO value loss weight, discount, GAE lambda, value clip.
    seed : int
        Seeds the value head, the prompt order and each step's sampling (step ``s`` uses
        ``seed + s``), so a run resumed from a checkpoint continues exactly.

    Examples
    --------
    >>> cfg = OnlineConfig(max_steps=50, penalty_method="lcb", penalty_coef=1.0)
    >>> cfg.per_device_train_batch_size, cfg.num_ppo_epochs
    (8, 1)
    """

    output_dir: str = "auq-online"
    max_steps: int = 100
    learning_rate: float = 1e-5
    lr_scheduler_type: str = "constant"
    seed: int = 0
    algorithm: str = "rloo"
    k: int = 4
    max_new_tokens: int = 16
    temperature: float = 1.0
    penalty_method: str = "mean"
    penalty_coef: float = 1.0
    kl_coef: float = 0.05
    kl_estimator: str = "k1"
    kl_in_reward: bool = True
    num_ppo_epochs: int = 1
    minibatch_size: int | None = None
    clip_range: float = 0.2
    normalize_advantages: bool = False
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    clip_range_value: float = 0.2

    def __post_init__(self) -> None:
        if self.output_dir is None:  # the old default
            self.output_dir = "auq-online"
        super().__post_init__()
        if self.gradient_accumulation_steps != 1:
            raise ValueError(
                "gradient_accumulation_steps: OnlineTrainer takes one optimizer step per minibatch; "
                f"it must be 1 (use minibatch_size), got {self.gradient_accumulation_steps}"
            )
        if self.bf16 is True or self.fp16:
            raise ValueError("bf16/fp16: OnlineTrainer trains in the policy's own dtype; "
                             "load the policy in bfloat16 instead")
        self.algorithm = check_choice(self.algorithm, "algorithm", ("rloo", "ppo"))
        self.penalty_method = check_choice(self.penalty_method, "penalty_method", ("mean", "lcb", "wco", "uwo"))
        self.kl_estimator = check_choice(self.kl_estimator, "kl_estimator", ("k1", "k3"))
        self.k = check_int(self.k, "k", minimum=2 if self.algorithm == "rloo" else 1)
        self.max_new_tokens = check_int(self.max_new_tokens, "max_new_tokens", minimum=1)
        self.temperature = check_float(self.temperature, "temperature", minimum=0.0, inclusive=(False, True))
        self.penalty_coef = check_float(self.penalty_coef, "penalty_coef", minimum=0.0)
        self.kl_coef = check_float(self.kl_coef, "kl_coef", minimum=0.0)
        self.num_ppo_epochs = check_int(self.num_ppo_epochs, "num_ppo_epochs", minimum=1)
        if self.minibatch_size is not None:
            self.minibatch_size = check_int(self.minibatch_size, "minibatch_size", minimum=1)
        self.clip_range = check_float(self.clip_range, "clip_range", minimum=0.0, inclusive=(False, True))
        self.vf_coef = check_float(self.vf_coef, "vf_coef", minimum=0.0)
        self.gamma = check_float(self.gamma, "gamma", minimum=0.0, maximum=1.0)
        self.lam = check_float(self.lam, "lam", minimum=0.0, maximum=1.0)
        self.clip_range_value = check_float(
            self.clip_range_value, "clip_range_value", minimum=0.0, inclusive=(False, True)
        )
