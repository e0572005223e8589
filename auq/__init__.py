"""auq: alignment uncertainty quantification.

Uncertainty-aware reward models, uncertainty estimators, calibration, and uncertainty-aware
preference optimisation, all speaking one currency: member rewards ``[n_pairs, n_members]``
for the chosen and the rejected side of each preference pair.

Subpackages: :mod:`auq.estimators`, :mod:`auq.calibration`, :mod:`auq.data`, :mod:`auq.models`,
:mod:`auq.training`, :mod:`auq.conformal`, :mod:`auq.active`, :mod:`auq.monitor`, :mod:`auq.plots`,
:mod:`auq.integrations`. The most used names are re-exported here and imported on first use, so ``import auq`` stays cheap.

Examples
--------
>>> import auq
>>> d = auq.decompose([[2.0, -2.0], [3.0, 3.0]])
>>> round(float(d.epistemic[0]), 4)
0.3278
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # estimators
    "decompose": "auq.estimators",
    "Decomposition": "auq.estimators",
    "response_reward_stats": "auq.estimators",
    "pair_reward_stats": "auq.estimators",
    "label_uncertainty": "auq.estimators",
    # calibration
    "expected_calibration_error": "auq.calibration",
    "pairwise_calibration_error": "auq.calibration",
    "reliability_table": "auq.calibration",
    "brier_decomposition": "auq.calibration",
    "bootstrap_ci": "auq.calibration",
    "TemperatureScaling": "auq.calibration",
    "risk_coverage_curve": "auq.calibration",
    # data
    "PreferenceDataset": "auq.data",
    "load_preferences": "auq.data",
    "load_hh_rlhf": "auq.data",
    "make_synthetic_preferences": "auq.data",
    # models
    "RewardModel": "auq.models",
    "RewardEnsemble": "auq.models",
    "MCDropoutRewardModel": "auq.models",
    "LaplaceRewardModel": "auq.models",
    "load_reward_model": "auq.models",
    "SequenceClassifierRewardModel": "auq.models",
    "WrappedLaplaceRewardModel": "auq.models",
    "export_sequence_classifier": "auq.models",
    "score": "auq.models",
    "Predictions": "auq.models",
    # training
    "RewardModelTrainer": "auq.training",
    "RewardTrainerConfig": "auq.training",
    "UncertaintyDPOTrainer": "auq.training",
    "UncertaintyDPOConfig": "auq.training",
    "dpo_loss": "auq.training",
    "bradley_terry_loss": "auq.training",
    "penalized_reward": "auq.training",
    "uncertainty_weights": "auq.training",
    # conformal
    "ConformalSelector": "auq.conformal",
    "PairSetPredictor": "auq.conformal",
    "selective_threshold": "auq.conformal",
    # active learning, RL monitoring
    "acquisition_scores": "auq.active",
    "run_active_learning": "auq.active",
    "RewardHackingMonitor": "auq.monitor",
    # report
    "write_report": "auq.report",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'auq' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
