"""Pure helpers of a search round: client sampling and seeds, surrogate corrections and their quality."""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping, Sequence, TypeVar

import numpy as np

from surrogate import correct_accuracy, correct_latency, kendall_tau, mape, within_tolerance_share
from fl_server.report_aggregation import AggregatedReport

logger = logging.getLogger(__name__)

T = TypeVar("T")

LATENCY_TOLERANCE = 0.10


def client_seed(seed: int, server_round: int, partition: int) -> int:
    """Return the training seed of one client in one round, from ``(seed, round, partition)`` only."""
    return int(np.random.SeedSequence([seed, server_round, partition]).generate_state(1)[0] % (2**31 - 1))


def sample_clients(ordered: Sequence[T], count: int, seed: int, server_round: int) -> list[T]:
    """Return ``count`` of the ``ordered`` clients (0: all), drawn from ``(seed, round)`` only, in their order."""
    size = min(count or len(ordered), len(ordered))
    rng = np.random.default_rng([seed, server_round])
    return [ordered[i] for i in sorted(rng.choice(len(ordered), size=size, replace=False))]


def refit_surrogates(
    base_accuracy: Any, base_latency: Mapping[str, Any], observations: Sequence[AggregatedReport]
) -> tuple[Any, dict[str, Any]]:
    """Return the accuracy and per-device latency surrogates corrected on all ``observations``.

    Each correction starts again from the base surrogate (corrections never stack), so
    the result depends only on the observations: a resumed run gets the same
    surrogates as an uninterrupted one. Accuracy observations are weighted by their
    sample weight; a device without observations keeps its base latency surrogate.
    """
    accuracy = base_accuracy
    if observations:
        accuracy = correct_accuracy(base_accuracy, [o.arch for o in observations],
                                    [o.accuracy for o in observations], [o.weight for o in observations])
    latency = {}
    for device, base in base_latency.items():
        mine = [o for o in observations if o.device == device]
        latency[device] = correct_latency(base, [o.arch for o in mine], [o.latency_ms for o in mine]) if mine else base
    return accuracy, latency


def feasible_budgets(budgets: Sequence[float], fastest_ms: float, device: str) -> list[float]:
    """Return the budgets (ms) at or above the fastest predicted latency, else one just above it.

    The fallback keeps a device whose every budget looks infeasible to its current
    latency surrogate in the round, so its measurements can correct that surrogate.
    """
    feasible = [b for b in budgets if b >= fastest_ms]
    if not feasible:
        logger.warning("no budget of %s is feasible under its latency surrogate (fastest %.4g ms); this round "
                       "searches at %.4g ms", device, fastest_ms, fastest_ms * 1.05)
        feasible = [fastest_ms * 1.05]
    return feasible


def surrogate_quality(
    reports: Sequence[AggregatedReport], accuracy: Any, latency: Mapping[str, Any]
) -> dict[str, Any]:
    """Score the surrogates on this round's observations.

    Accuracy: Kendall tau between observed and predicted accuracy (None with fewer than
    two distinct values) and the mean absolute error. Latency, per device: the share of
    predictions within ±10% of the measured latency and the mean absolute percentage
    error. ``n`` counts the observations scored.
    """
    if not reports:
        return {"accuracy": {"n": 0, "kendall_tau": None, "mae": None}, "latency": {}}
    archs = [r.arch for r in reports]
    observed = np.array([r.accuracy for r in reports])
    predicted = np.asarray(accuracy.predict(archs).mean, dtype=np.float64)
    tau = kendall_tau(observed, predicted) if len(reports) >= 2 else math.nan
    quality: dict[str, Any] = {
        "accuracy": {"n": len(reports), "kendall_tau": None if math.isnan(tau) else tau,
                     "mae": float(np.mean(np.abs(observed - predicted)))},
        "latency": {},
    }
    for device in sorted({r.device for r in reports}):
        mine = [r for r in reports if r.device == device]
        measured = np.array([r.latency_ms for r in mine])
        guess = np.asarray(latency[device].predict([r.arch for r in mine]).mean, dtype=np.float64)
        quality["latency"][device] = {
            "n": len(mine), "within_10pct": within_tolerance_share(measured, guess, LATENCY_TOLERANCE),
            "mape": mape(measured, guess),
        }
    return quality
