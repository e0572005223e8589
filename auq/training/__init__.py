"""auq.training: losses (Bradley-Terry, DPO variants, penalised rewards, PPO) and trainers.

* :mod:`auq.training.losses` -- differentiable loss functions (re-exported here);
* :mod:`auq.training.reward_trainer` -- :class:`RewardModelTrainer`, the Accelerate-based
  reward-model trainer, and its :class:`RewardTrainerConfig`;
* :mod:`auq.training.dpo_trainer` -- uncertainty-aware DPO;
* :mod:`auq.training.online` -- an RLOO / PPO loop and best-of-n against penalised rewards.
"""

from . import losses
from ._spread import HEADS_RECIPE, DatasetSubset
from .dpo_trainer import (
    CausalLMPreferenceCollator,
    UncertaintyDPOConfig,
    UncertaintyDPOTrainer,
    attach_uncertainty,
    sequence_logps,
)
from .losses import *  # noqa: F403  (every name in losses.__all__)
from .online import (
    BestOfNResult,
    OnlineConfig,
    OnlineHistory,
    OnlineTrainer,
    Rollout,
    best_of_n,
    best_of_n_kl,
    ensemble_reward_fn,
    rloo_advantages,
)
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
    "HEADS_RECIPE",
    "DatasetSubset",
    "CausalLMPreferenceCollator",
    "UncertaintyDPOConfig",
    "UncertaintyDPOTrainer",
    "attach_uncertainty",
    "sequence_logps",
    "OnlineConfig",
    "OnlineTrainer",
    "OnlineHistory",
    "Rollout",
    "BestOfNResult",
    "best_of_n",
    "best_of_n_kl",
    "ensemble_reward_fn",
    "rloo_advantages",
    "losses",
    *losses.__all__,
]
