"""auq.training: reward-model, DPO and online trainers, and the uncertainty-aware losses.

* :mod:`auq.training.reward_trainer` -- :class:`RewardModelTrainer`, the Accelerate-based
  reward-model trainer, its :class:`RewardTrainerConfig` and :data:`HEADS_RECIPE`;
* :mod:`auq.training.dpo_trainer` -- uncertainty-aware DPO (:class:`UncertaintyDPOTrainer`,
  :func:`attach_uncertainty`);
* :mod:`auq.training.online` -- an RLOO / PPO loop against penalised rewards;
* :mod:`auq.training.best_of_n` -- best-of-n sampling and the ensemble reward functions;
* :mod:`auq.training.losses` -- differentiable losses (Bradley-Terry, the DPO family, penalised
  rewards, uncertainty weights);
* :mod:`auq.training.rl` -- token-level RL utilities (``ppo_loss``, ``value_loss``,
  ``kl_penalty``, ``compute_gae``, ``whiten``, ``masked_mean``).

``__all__`` lists the user-facing names. The building blocks (``sequence_logps``,
``CausalLMPreferenceCollator``, ``dpo_logits``, the PPO pieces, ``whiten``, ``masked_mean``,
``Rollout``, ``rloo_advantages``, ``bootstrap_counts``) are documented in their modules and,
for compatibility, still importable from here.
"""

# Imported names missing from __all__ are building blocks documented in their modules; they stay
# importable from here for compatibility (hence the noqa).
from . import losses, rl  # noqa: F401
from ._spread import HEADS_RECIPE, DatasetSubset
from .best_of_n import BestOfNResult, best_of_n, best_of_n_kl, ensemble_reward_fn
from .dpo_trainer import (  # noqa: F401
    CausalLMPreferenceCollator,
    UncertaintyDPOConfig,
    UncertaintyDPOTrainer,
    attach_uncertainty,
    sequence_logps,
)
from .losses import (  # noqa: F401
    ImplicitRewards,
    bradley_terry_loss,
    dpo_implicit_rewards,
    dpo_logits,
    dpo_loss,
    flip_rate_from_uncertainty,
    ipo_loss,
    penalized_reward,
    robust_dpo_loss,
    uncertainty_weights,
)
from .online import (  # noqa: F401
    OnlineConfig,
    OnlineHistory,
    OnlineTrainer,
    Rollout,
    rloo_advantages,
)
from .reward_trainer import (  # noqa: F401
    RewardModelTrainer,
    RewardTrainerConfig,
    TrainResult,
    bootstrap_counts,
    load_checkpoint_state,
)
from .rl import (  # noqa: F401
    PolicyLossOutput,
    compute_gae,
    kl_penalty,
    masked_mean,
    ppo_loss,
    value_loss,
    whiten,
)

__all__ = [
    # reward models
    "RewardModelTrainer",
    "RewardTrainerConfig",
    "TrainResult",
    "HEADS_RECIPE",
    "DatasetSubset",
    "load_checkpoint_state",
    # DPO
    "UncertaintyDPOConfig",
    "UncertaintyDPOTrainer",
    "attach_uncertainty",
    # online RL and best-of-n
    "OnlineConfig",
    "OnlineTrainer",
    "OnlineHistory",
    "best_of_n",
    "best_of_n_kl",
    "BestOfNResult",
    "ensemble_reward_fn",
    # losses
    "bradley_terry_loss",
    "dpo_loss",
    "robust_dpo_loss",
    "ipo_loss",
    "dpo_implicit_rewards",
    "ImplicitRewards",
    "uncertainty_weights",
    "flip_rate_from_uncertainty",
    "penalized_reward",
]

