"""auq.calibration: calibration metrics, bootstrap intervals, streaming accumulators,
recalibrators (scikit-learn style) and selective prediction.

Metrics (:mod:`.metrics`: calibration errors and reliability tables; :mod:`.scores`: Brier,
NLL, accuracy), bootstrap (:mod:`.bootstrap`) and streaming (:mod:`.streaming`) share
one binning implementation (:mod:`._binning`, which documents the bin-edge convention).
"""

from .bootstrap import ConfidenceInterval, bootstrap_ci
from .metrics import (
    ReliabilityTable,
    debiased_calibration_error,
    expected_calibration_error,
    pairwise_calibration_error,
    pairwise_correctness,
    pairwise_reliability_table,
    reliability_table,
    smooth_calibration_error,
)
from .recalibration import (
    BetaCalibration,
    HistogramBinning,
    IsotonicCalibration,
    PlattScaling,
    TemperatureScaling,
)
from .scores import (
    BrierDecomposition,
    brier_decomposition,
    brier_score,
    negative_log_likelihood,
    negative_log_likelihood_from_logits,
    preference_accuracy,
)
from .selective import (
    RiskCoverage,
    aurc,
    eaurc,
    error_detection_auroc,
    ood_auroc,
    risk_coverage_curve,
)
from .streaming import StreamingBrier, StreamingECE, StreamingNLL

__all__ = [
    "BetaCalibration",
    "HistogramBinning",
    "IsotonicCalibration",
    "PlattScaling",
    "TemperatureScaling",
    "RiskCoverage",
    "aurc",
    "eaurc",
    "error_detection_auroc",
    "ood_auroc",
    "risk_coverage_curve",
    "BrierDecomposition",
    "ConfidenceInterval",
    "ReliabilityTable",
    "StreamingBrier",
    "StreamingECE",
    "StreamingNLL",
    "bootstrap_ci",
    "brier_decomposition",
    "brier_score",
    "debiased_calibration_error",
    "expected_calibration_error",
    "negative_log_likelihood",
    "negative_log_likelihood_from_logits",
    "pairwise_calibration_error",
    "pairwise_correctness",
    "pairwise_reliability_table",
    "preference_accuracy",
    "reliability_table",
    "smooth_calibration_error",
]

