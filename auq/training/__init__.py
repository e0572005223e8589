"""auq.training: losses (Bradley-Terry, DPO variants, penalised rewards, PPO) and the reward-model trainer.

The loss functions live in :mod:`auq.training.losses` and are re-exported here; the Accelerate-based
reward-model trainer lives in :mod:`auq.training.reward_trainer`.
"""

from auq.training.dpo_trainer import (
    CausalLMPreferenceCollator,
    UncertaintyDPOConfig,
    UncertaintyDPOTrainer,
    attach_uncertainty,
    sequence_logps,
)
from auq.training.losses import (
    ImplicitRewards,
    PolicyLossOutput,
    bradley_terry_loss,
    compute_gae,
    dpo_implicit_rewards,
    dpo_logits,
    dpo_loss,
    flip_rate_from_uncertainty,
    ipo_loss,
    kl_penalty,
    masked_mean,
    penalized_reward,
    ppo_loss,
    robust_dpo_loss,
    uncertainty_weights,
    value_loss,
    whiten,
)

from . import losses
from .reward_trainer import (
    RewardModelTrainer,
    RewardTrainerConfig,
    TrainResult,
    bootstrap_counts,
    load_checkpoint_state,
)

__all__ = [
    "CausalLMPreferenceCollator",
    "UncertaintyDPOConfig",
    "UncertaintyDPOTrainer",
    "attach_uncertainty",
    "sequence_logps",
    "ImplicitRewards",
    "PolicyLossOutput",
    "bradley_terry_loss",
    "compute_gae",
    "dpo_implicit_rewards",
    "dpo_logits",
    "dpo_loss",
    "flip_rate_from_uncertainty",
    "ipo_loss",
    "kl_penalty",
    "masked_mean",
    "penalized_reward",
    "ppo_loss",
    "robust_dpo_loss",
    "uncertainty_weights",
    "value_loss",
    "whiten",
    "RewardModelTrainer",
    "RewardTrainerConfig",
    "TrainResult",
    "bootstrap_counts",
    "load_checkpoint_state",
    "losses",
]
