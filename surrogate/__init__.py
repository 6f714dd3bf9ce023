"""Surrogate models of APFP-NAS: features, LightGBM predictors, corrections and metrics.

Nothing here imports Flower. Typical use::

    from surrogate import AccuracyPredictor, LatencyPredictor, correct_accuracy

    accuracy = AccuracyPredictor(space).fit(archs, accuracies)
    latency = LatencyPredictor(space, "cpu-1t-fp32").fit(archs, latencies_ms)
    private = correct_accuracy(accuracy, observed_archs, observed_acc, weights=sample_counts)
    text = private.to_text()            # JSON header line + LightGBM model texts
"""

from surrogate.boosting import Correction, Prediction
from surrogate.ensemble import BoostedPredictor
from surrogate.baseline import FlopsLinearBaseline
from surrogate.correction import correct_accuracy, correct_latency
from surrogate.features import FEATURE_SCHEMA_VERSION, arch_features, feature_names
from surrogate.metrics import (
    accuracy_quality_report,
    kendall_tau,
    latency_quality_report,
    mape,
    precision_at_k,
    regret_within_budget,
    spearman_rho,
    within_tolerance_share,
)
from surrogate.predictor import AccuracyPredictor, LatencyPredictor, load_surrogate

__all__ = [
    "FEATURE_SCHEMA_VERSION",
    "AccuracyPredictor",
    "BoostedPredictor",
    "Correction",
    "FlopsLinearBaseline",
    "LatencyPredictor",
    "Prediction",
    "accuracy_quality_report",
    "arch_features",
    "correct_accuracy",
    "correct_latency",
    "feature_names",
    "kendall_tau",
    "latency_quality_report",
    "load_surrogate",
    "mape",
    "precision_at_k",
    "regret_within_budget",
    "spearman_rho",
    "within_tolerance_share",
]
