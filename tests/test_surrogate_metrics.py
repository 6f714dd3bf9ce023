"""Ranking and error metrics against hand-computed cases and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from nas.errors import SurrogateError
from surrogate import (
    accuracy_quality_report,
    kendall_tau,
    latency_quality_report,
    mape,
    precision_at_k,
    regret_within_budget,
    spearman_rho,
    within_tolerance_share,
)


def test_rank_correlations_match_scipy():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # One discordant pair out of six: (6 - 2 * 1) / 6.
    assert kendall_tau([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(4 / 6)
    # Spearman: d = (0, 0, 1, -1), rho = 1 - 6 * 2 / (4 * 15).
    assert spearman_rho([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(0.8)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50)
    assert kendall_tau(a, b) == pytest.approx(stats.kendalltau(a, b).statistic)
    assert spearman_rho(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))


def test_precision_at_k():
    true = [0.9, 0.8, 0.7, 0.6, 0.5]
    assert precision_at_k(true, [5, 4, 3, 2, 1], 2) == 1.0
    assert precision_at_k(true, [1, 5, 4, 3, 2], 2) == 0.5  # predicted top-2: items 1 and 2
    assert precision_at_k(true, [1, 2, 3, 4, 5], 2) == 0.0
    # Latency: smaller is better.
    assert precision_at_k([1.0, 2.0, 3.0], [1.1, 3.5, 2.0], 1, largest=False) == 1.0
    with pytest.raises(SurrogateError, match="k=6"):
        precision_at_k(true, true, 6)


def test_regret_within_budget():
    true_acc = [0.70, 0.80, 0.90, 0.95]
    latency = [1.0, 2.0, 3.0, 9.0]
    predicted = [0.72, 0.91, 0.85, 0.99]
    # Budget 3 ms: feasible 0..2, best true 0.90, predicted best is item 1 (0.80).
    assert regret_within_budget(true_acc, predicted, latency, 3.0) == pytest.approx(0.10)
    assert regret_within_budget(true_acc, predicted, latency, 10.0) == pytest.approx(0.0)
    assert regret_within_budget(true_acc, predicted, latency, 1.5) == pytest.approx(0.0)
    assert math.isnan(regret_within_budget(true_acc, predicted, latency, 0.5))
    with pytest.raises(SurrogateError, match="budget_ms"):
        regret_within_budget(true_acc, predicted, latency, -1.0)


def test_mape_and_tolerance_share():
    true = [1.0, 2.0, 4.0, 10.0]
    pred = [1.1, 1.8, 4.0, 13.0]
    assert mape(true, pred) == pytest.approx((0.1 + 0.1 + 0.0 + 0.3) / 4)
    assert within_tolerance_share(true, pred) == pytest.approx(0.75)  # 13 is 30% off
    assert within_tolerance_share(true, pred, tolerance=0.05) == pytest.approx(0.25)
    with pytest.raises(SurrogateError, match="true values > 0"):
        mape([0.0, 1.0], [1.0, 1.0])
    with pytest.raises(SurrogateError, match="equal length"):
        mape([1.0, 2.0], [1.0])
    with pytest.raises(SurrogateError, match="finite"):
        within_tolerance_share([1.0, 2.0], [1.0, float("nan")])


def test_quality_reports_carry_every_metric():
    true_acc = np.array([0.70, 0.80, 0.90, 0.95])
    report = accuracy_quality_report(true_acc, true_acc + 0.01, latency_ms=[1, 2, 3, 9], budgets_ms=[3, 0.5], k=2)
    assert report["kendall_tau"] == pytest.approx(1.0)
    assert report["precision_at_k"] == 1.0
    assert report["regret"]["3"] == 0.0
    assert math.isnan(report["regret"]["0.5"])
    assert report["mean_abs_error"] == pytest.approx(0.01)
    with pytest.raises(SurrogateError, match="latency_ms"):
        accuracy_quality_report(true_acc, true_acc, budgets_ms=[3])
    latency = latency_quality_report([1.0, 2.0, 4.0], [1.05, 2.5, 4.0], baseline_ms=[1.5, 2.0, 3.0])
    assert latency["predictor"]["within_tolerance"] == pytest.approx(2 / 3)
    assert latency["flops_baseline"]["mape"] == pytest.approx((0.5 + 0.0 + 0.25) / 3)
