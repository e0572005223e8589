"""auq.training: losses (Bradley-Terry, DPO variants, penalised rewards, PPO) and trainers.

* :mod:`auq.training.losses` -- differentiable loss functions (re-exported here);
* :mod:`auq.training.reward_trainer` -- :class:`RewardModelTrainer`, the Accelerate-based
  reward-model trainer, and its :class:`RewardTrainerConfig`;
* :mod:`auq.training.dpo_trainer` -- uncertainty-aware DPO.
"""

from . import losses
from .dpo_trainer import (
    CausalLMPreferenceCollator,
    UncertaintyDPOConfig,
    UncertaintyDPOTrainer,
    attach_uncertainty,
    sequence_logps,
)
from .losses import *  # noqa: F403  (every name in losses.__all__)
from .reward_trainer import (
    RewardModelTrainer,
    RewardTrainerConfig,
    TrainResult,
    bootstrap_counts,
    load_checkpoint_state,
)

__all__ = [
    "RewardModelTrainer",
    "RewardTrainerConfig",
    "TrainResult",
    "bootstrap_counts",
    "load_checkpoint_state",
    "CausalLMPreferenceCollator",
    "UncertaintyDPOConfig",
    "UncertaintyDPOTrainer",
    "attach_uncertainty",
    "sequence_logps",
    "losses",
    *losses.__all__,
]
