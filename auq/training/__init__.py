"""auq.training: losses (Bradley-Terry, DPO variants, penalised rewards, PPO) and the reward-model trainer.

The loss functions live in :mod:`auq.training.losses` and are re-exported here; the Accelerate-based
reward-model trainer lives in :mod:`auq.training.reward_trainer`.
"""

from . import losses
from .losses import *  # noqa: F403  (the losses module defines __all__)
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
    "losses",
    *losses.__all__,
]
