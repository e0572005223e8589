"""auq.monitor: a reward-hacking monitor for RL against an uncertainty-aware reward model.

Per batch of generated responses it tracks member disagreement (training-anchored), the
feature-density out-of-distribution rate, proxy reward drift against the training offsets and,
with a gold reward, the proxy-gold gap; it warns, and can stop training, when the policy leaves
the reward model's competence region. Thresholds come from the reward model's own training
responses (:class:`RewardHackingMonitor`).

Integrations: :class:`RewardHackingCallback` (TRL ``GRPOTrainer``/``RLOOTrainer``) and
:func:`online_monitor_callback` (:class:`auq.training.online.OnlineTrainer`).

Examples
--------
>>> import numpy as np
>>> from auq.monitor import RewardHackingMonitor
>>> mon = RewardHackingMonitor.from_training(np.random.default_rng(0).normal(size=(500, 4)))
>>> round(mon.disagreement.nominal, 3)
0.01
"""

from auq.monitor._core import MonitorStep, RateAlarm, RewardHackingMonitor, RewardHackingWarning
from auq.monitor._hooks import RewardHackingCallback, online_monitor_callback, response_features

__all__ = [
    "RewardHackingMonitor",
    "RateAlarm",
    "MonitorStep",
    "RewardHackingWarning",
    "RewardHackingCallback",
    "online_monitor_callback",
    "response_features",
]
