"""Ranking and error metrics of surrogate predictions, and quality reports built from them.

Every function takes array-likes of equal length and raises
:class:`nas.errors.SurrogateError` naming the problem when they are not 1-D, finite
and of matching length. Ranking metrics return ``nan`` when one input is constant
(a rank correlation is undefined there).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy import stats

from nas.errors import SurrogateError

__all__ = [
    "kendall_tau",
    "spearman_rho",
    "precision_at_k",
    "regret_within_budget",
    "mape",
    "within_tolerance_share",
    "accuracy_quality_report",
    "latency_quality_report",
]


def _pair(first: Any, second: Any, minimum: int = 1) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(first, dtype=np.float64)
    b = np.asarray(second, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise SurrogateError(f"metric inputs must be 1-D of equal length, got shapes {a.shape} and {b.shape}")
    if a.size < minimum:
        raise SurrogateError(f"metric needs at least {minimum} values, got {a.size}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise SurrogateError("metric inputs must be finite; found NaN or infinity")
    return a, b


def _constant(*arrays: np.ndarray) -> bool:
    return any(np.all(x == x[0]) for x in arrays)


def kendall_tau(first: Any, second: Any) -> float:
    """Return Kendall's tau-b between two score vectors (1: same order, -1: reversed)."""
    a, b = _pair(first, second, minimum=2)
    if _constant(a, b):
        return math.nan
    return float(stats.kendalltau(a, b).statistic)


def spearman_rho(first: Any, second: Any) -> float:
    """Return Spearman's rank correlation between two score vectors."""
    a, b = _pair(first, second, minimum=2)
    if _constant(a, b):
        return math.nan
    return float(stats.spearmanr(a, b).statistic)


def _top(values: np.ndarray, k: int, largest: bool) -> set[int]:
    order = np.argsort(-values if largest else values, kind="stable")
    return set(order[:k].tolist())


def precision_at_k(true: Any, predicted: Any, k: int, *, largest: bool = True) -> float:
    """Return the share of the true top-``k`` that is also in the predicted top-``k``.

    ``largest=True`` ranks the highest values first (accuracy); use ``False`` for
    latency. Ties break by position (a stable sort).
    """
    a, b = _pair(true, predicted)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= a.size:
        raise SurrogateError(f"k={k!r} is invalid; use an int in [1, {a.size}]")
    return len(_top(a, k, largest) & _top(b, k, largest)) / k


def regret_within_budget(true_acc: Any, pred_acc: Any, latency_ms: Any, budget_ms: float) -> float:
    """Return the accuracy lost by picking the predicted best architecture under a budget.

    Among architectures with ``latency_ms <= budget_ms``, regret is the best true
    accuracy minus the true accuracy of the one with the highest predicted accuracy
    (0 when the surrogate picks the true best). ``latency_ms`` is whichever latency
    decides feasibility (measured, or predicted to judge the whole pipeline).
    Returns ``nan`` when no architecture meets the budget.
    """
    true, pred = _pair(true_acc, pred_acc)
    latency = np.asarray(latency_ms, dtype=np.float64)
    if latency.shape != true.shape or not np.all(np.isfinite(latency)):
        raise SurrogateError(f"latency_ms must be finite with shape {true.shape}, got {latency.shape}")
    if not isinstance(budget_ms, (int, float)) or not math.isfinite(budget_ms) or budget_ms <= 0:
        raise SurrogateError(f"budget_ms={budget_ms!r} is invalid; use a positive number of milliseconds")
    feasible = np.flatnonzero(latency <= budget_ms)
    if feasible.size == 0:
        return math.nan
    picked = feasible[int(np.argmax(pred[feasible]))]
    return float(true[feasible].max() - true[picked])


def mape(true: Any, pred: Any) -> float:
    """Return the mean absolute percentage error as a fraction (0.05 means 5%); ``true`` must be > 0."""
    a, b = _pair(true, pred)
    if np.any(a <= 0):
        raise SurrogateError("mape needs true values > 0")
    return float(np.mean(np.abs(b - a) / a))


def within_tolerance_share(true: Any, pred: Any, tolerance: float = 0.10) -> float:
    """Return the share of predictions within ``tolerance`` (relative, 0.10 = ±10%) of ``true``.

    The bound is inclusive, with a relative slack of 1e-9 so that a prediction exactly
    10% off is not excluded by floating-point rounding.
    """
    a, b = _pair(true, pred)
    if not isinstance(tolerance, (int, float)) or not 0 < tolerance:
        raise SurrogateError(f"tolerance={tolerance!r} is invalid; use a positive fraction such as 0.10")
    if np.any(a <= 0):
        raise SurrogateError("within_tolerance_share needs true values > 0")
    return float(np.mean(np.abs(b - a) <= tolerance * a * (1.0 + 1e-9)))


def accuracy_quality_report(
    true_acc: Any,
    pred_acc: Any,
    *,
    latency_ms: Any = None,
    budgets_ms: Sequence[float] = (),
    k: int = 10,
) -> dict[str, Any]:
    """Return rank quality of accuracy predictions: tau, rho, precision@k, regret per budget.

    ``k`` is clipped to the number of architectures. ``regret`` maps each budget (as a
    string of milliseconds) to :func:`regret_within_budget`; budgets need ``latency_ms``.
    """
    a, b = _pair(true_acc, pred_acc, minimum=2)
    report: dict[str, Any] = {
        "n": int(a.size),
        "kendall_tau": kendall_tau(a, b),
        "spearman_rho": spearman_rho(a, b),
        "k": min(k, a.size),
        "precision_at_k": precision_at_k(a, b, min(k, a.size)),
        "mean_abs_error": float(np.mean(np.abs(a - b))),
    }
    if budgets_ms and latency_ms is None:
        raise SurrogateError("budgets_ms needs latency_ms to decide which architectures fit")
    report["regret"] = {
        f"{float(budget):g}": regret_within_budget(a, b, latency_ms, float(budget)) for budget in budgets_ms
    }
    return report


def latency_quality_report(
    measured_ms: Any,
    predicted_ms: Any,
    *,
    baseline_ms: Any,
    tolerance: float = 0.10,
) -> dict[str, Any]:
    """Return MAPE, within-tolerance share and Kendall tau of the predictor AND the FLOPs baseline.

    ``baseline_ms`` contains :class:`surrogate.baseline.FlopsLinearBaseline` predictions for
    the same architectures; it is required so that every report shows both.
    """
    measured, predicted = _pair(measured_ms, predicted_ms, minimum=2)
    _, baseline = _pair(measured, baseline_ms, minimum=2)

    def scores(pred: np.ndarray) -> dict[str, float]:
        return {
            "mape": mape(measured, pred),
            "within_tolerance": within_tolerance_share(measured, pred, tolerance),
            "kendall_tau": kendall_tau(measured, pred),
        }

    return {"n": int(measured.size), "tolerance": tolerance,
            "predictor": scores(predicted), "flops_baseline": scores(baseline)}
