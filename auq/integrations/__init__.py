"""auq.integrations: adapters from :mod:`auq.training` to other libraries.

* :mod:`auq.integrations.trl` (extra ``pip install "auq[trl]"``):
  :func:`uncertainty_penalized_reward_func` (uncertainty-penalised ``reward_funcs`` for TRL's
  ``GRPOTrainer``); :class:`WeightedDPOTrainer` (TRL ``DPOTrainer`` with per-pair weights / soft
  targets) is deprecated in favour of :class:`auq.training.UncertaintyDPOTrainer`.

TRL is imported only when one of these names is first used, so ``import auq.integrations`` works
without it; using them without TRL raises an ``ImportError`` that says how to install it.

Examples
--------
>>> from auq.integrations import uncertainty_penalized_reward_func  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

_TRL_NAMES = (
    "WeightedDPOConfig",
    "WeightedDPOTrainer",
    "WeightedPreferenceCollator",
    "UncertaintyPenalizedReward",
    "uncertainty_penalized_reward_func",
)

__all__ = list(_TRL_NAMES)


def __getattr__(name: str) -> Any:
    if name in _TRL_NAMES:
        from auq.integrations import trl as _trl

        return getattr(_trl, name)
    raise AttributeError(f"module 'auq.integrations' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_TRL_NAMES])
