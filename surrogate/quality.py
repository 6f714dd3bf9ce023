"""Fit stage-1 surrogates and measure their held-out quality beside baselines.

Each surrogate is first fitted on a random 80% of the measured samples and scored
on the other 20% (the figures that go into the report); the surrogate that is
saved is then refitted on all samples.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from nas.space import Architecture, SearchSpace
from surrogate.baseline import FlopsLinearBaseline
from surrogate.metrics import kendall_tau, mape, spearman_rho, within_tolerance_share
from surrogate.predictor import AccuracyPredictor, LatencyPredictor

HELD_OUT_FRACTION = 0.2


def _split(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(count)
    held_out = max(2, int(round(count * HELD_OUT_FRACTION)))
    return order[held_out:], order[:held_out]


def fit_accuracy_surrogate(
    space: SearchSpace, archs: Sequence[Architecture], accuracy: np.ndarray, *, seed: int = 0
) -> tuple[AccuracyPredictor, dict[str, Any]]:
    """Return the accuracy surrogate fitted on all samples and its held-out quality."""
    train, test = _split(len(archs), seed)
    probe = AccuracyPredictor(space, seed=seed).fit([archs[i] for i in train], accuracy[train])
    predicted = probe.predict([archs[i] for i in test]).mean
    quality = {
        "num_samples": len(archs),
        "held_out": len(test),
        "kendall_tau": kendall_tau(accuracy[test], predicted),
        "spearman_rho": spearman_rho(accuracy[test], predicted),
        "mean_abs_error": float(np.mean(np.abs(accuracy[test] - predicted))),
        "accuracy_range": [float(accuracy.min()), float(accuracy.max())],
        "held_out_measured": [float(v) for v in accuracy[test]],
        "held_out_predicted": [float(v) for v in predicted],
    }
    return AccuracyPredictor(space, seed=seed).fit(list(archs), accuracy), quality


def fit_latency_surrogate(
    space: SearchSpace, archs: Sequence[Architecture], latency_ms: np.ndarray, profile: str, *, seed: int = 0
) -> tuple[LatencyPredictor, dict[str, Any]]:
    """Return one profile's latency surrogate fitted on all samples and its held-out quality.

    The quality dict reports the LightGBM predictor beside the FLOPs-linear baseline.
    """
    train, test = _split(len(archs), seed)
    train_archs = [archs[i] for i in train]
    test_archs = [archs[i] for i in test]
    probe = LatencyPredictor(space, profile, seed=seed).fit(train_archs, latency_ms[train])
    predicted = probe.predict(test_archs).mean
    baseline = FlopsLinearBaseline(space).fit(train_archs, latency_ms[train]).predict(test_archs)
    quality = {
        "num_samples": len(archs),
        "held_out": len(test),
        "mape": mape(latency_ms[test], predicted),
        "within_10pct": within_tolerance_share(latency_ms[test], predicted, 0.10),
        "kendall_tau": kendall_tau(latency_ms[test], predicted),
        "baseline_flops_linear": {
            "mape": mape(latency_ms[test], baseline),
            "within_10pct": within_tolerance_share(latency_ms[test], baseline, 0.10),
        },
        "latency_range_ms": [float(latency_ms.min()), float(latency_ms.max())],
        "held_out_measured_ms": [float(v) for v in latency_ms[test]],
        "held_out_predicted_ms": [float(v) for v in predicted],
    }
    return LatencyPredictor(space, profile, seed=seed).fit(list(archs), latency_ms), quality
