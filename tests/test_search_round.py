"""Round candidate selection and the recommendation table."""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest

from nas.complexity import count_macs
from nas.errors import SearchError
from nas.search import (
    DeviceTarget,
    Objective,
    Observation,
    Recommendation,
    create_strategy,
    recommend,
    select_round_candidates,
)
from nas.search.selection import diverse_subset
from nas.space import SearchSpace

SPACE = SearchSpace.for_task(in_channels=3, num_classes=10, resolution=28)
FAST = {"chains": 3, "steps": 15}


def latency_fn(scale: float):
    """Latency in ms of a device ``scale`` times slower than the reference one (affine in MACs)."""

    def predict(archs):
        return scale * np.array([0.2 + 0.05 * count_macs(SPACE, a) / 1e6 for a in archs])

    return predict


def accuracy_fn(archs):
    mean = np.array([0.4 + 0.5 * count_macs(SPACE, a) / count_macs(SPACE, SPACE.largest()) for a in archs])
    std = np.array([0.02 * (sum(SPACE.encode(a)) % 3) for a in archs])
    return mean, std


def budgets_for(scale: float, quantiles=(20, 50, 80)) -> list[float]:
    rng = np.random.default_rng(11)
    latencies = latency_fn(scale)([SPACE.sample(rng) for _ in range(200)])
    return [float(np.percentile(latencies, q)) for q in quantiles]


FAST_DEVICE = DeviceTarget("fast", budgets_for(1.0), latency_fn(1.0))
SLOW_DEVICE = DeviceTarget("slow", budgets_for(3.0, (30, 70)), latency_fn(3.0))
DEVICES = {"fast": FAST_DEVICE, "slow": SLOW_DEVICE}


def test_select_round_candidates_contract():
    strategy = create_strategy("annealing", SPACE, seed=0, **FAST)
    objective = Objective(accuracy_fn, latency_fn(1.0), FAST_DEVICE.budgets_ms[1], "fast")
    measured_before = {"fast": set(strategy.ask(4, objective))}
    clients = [("c0", "fast"), ("c1", "slow"), ("c2", "fast")]
    k = 3
    result = select_round_candidates(
        strategy, SPACE, DEVICES, clients, k, measured_before, predict_accuracy=accuracy_fn
    )
    assert list(result) == ["c0", "c1", "c2"]
    for client, device in clients:
        proposals = result[client]
        assert len(proposals) == k
        for proposal in proposals:
            assert proposal.device == device
            assert proposal.budget_ms in DEVICES[device].budgets_ms
            latency = float(DEVICES[device].predict_latency([proposal.arch])[0])
            assert proposal.predicted_latency_ms == pytest.approx(latency)
            assert latency <= proposal.budget_ms
            mean, std = accuracy_fn([proposal.arch])
            assert proposal.predicted_accuracy == pytest.approx(mean[0])
            assert proposal.predicted_std == pytest.approx(std[0])
            json.dumps(proposal.to_dict())
    fast_archs = [p.arch for c in ("c0", "c2") for p in result[c]]
    assert len(set(fast_archs)) == len(fast_archs)
    assert not set(fast_archs) & measured_before["fast"]


def test_select_round_spreads_budgets_round_robin():
    strategy = create_strategy("random", SPACE, seed=0, num_samples=20)
    clients = [("a", "fast"), ("b", "fast"), ("c", "slow")]
    result = select_round_candidates(strategy, SPACE, DEVICES, clients, 2, predict_accuracy=accuracy_fn)
    fast = FAST_DEVICE.budgets_ms
    assert [p.budget_ms for p in result["a"]] == [fast[0], fast[1]]
    assert [p.budget_ms for p in result["b"]] == [fast[2], fast[0]]
    assert [p.budget_ms for p in result["c"]] == list(SLOW_DEVICE.budgets_ms)


def min_hamming(archs) -> int:
    encodings = [SPACE.encode(a) for a in archs]
    return min(
        sum(x != y for x, y in zip(encodings[i], encodings[j])) for i in range(len(encodings)) for j in range(i)
    )


def test_select_round_is_diverse():
    device = DeviceTarget("fast", [FAST_DEVICE.budgets_ms[1]], latency_fn(1.0))
    objective = Objective(accuracy_fn, device.predict_latency, device.budgets_ms[0], "fast")
    pool = create_strategy("annealing", SPACE, seed=3, **FAST).ask(4 * 3, objective)
    strategy = create_strategy("annealing", SPACE, seed=3, **FAST)
    result = select_round_candidates(
        strategy, SPACE, {"fast": device}, [("a", "fast")], 4, predict_accuracy=accuracy_fn, min_distance=3
    )
    chosen = [p.arch for p in result["a"]]
    assert chosen == diverse_subset(SPACE, pool, 4, min_distance=3)
    assert min_hamming(chosen) >= min_hamming(pool[:4])
    assert min_hamming(chosen) >= 2


def test_diverse_subset_falls_back_to_rank_order():
    base = SPACE.smallest()
    near = SPACE.mutate(base, np.random.default_rng(0))
    far = SPACE.largest()
    assert diverse_subset(SPACE, [base, near, far], 2, min_distance=5) == [base, far]
    assert diverse_subset(SPACE, [base, near], 2, min_distance=5) == [base, near]


def test_select_round_rejects_bad_input():
    strategy = create_strategy("random", SPACE, seed=0)
    with pytest.raises(SearchError, match="client 'x' has unknown device 'tablet'.*'fast', 'slow'"):
        select_round_candidates(strategy, SPACE, DEVICES, [("x", "tablet")], 1, predict_accuracy=accuracy_fn)
    with pytest.raises(SearchError, match="listed twice"):
        select_round_candidates(
            strategy, SPACE, DEVICES, [("x", "fast"), ("x", "slow")], 1, predict_accuracy=accuracy_fn
        )
    other = SearchSpace.for_task(in_channels=1, num_classes=10, resolution=28)
    with pytest.raises(SearchError, match="strategy searches space"):
        select_round_candidates(strategy, other, DEVICES, [("x", "fast")], 1, predict_accuracy=accuracy_fn)
    with pytest.raises(SearchError, match="budgets_ms"):
        DeviceTarget("bad", [0.0], latency_fn(1.0))


def test_select_round_infeasible_budget_names_device():
    fastest = float(latency_fn(3.0)([SPACE.smallest()])[0])
    devices = {"slow": DeviceTarget("slow", [0.5 * fastest, 2 * fastest], latency_fn(3.0))}
    strategy = create_strategy("evolution", SPACE, seed=0, population_size=8, tournament_size=3, cycles=5)
    expected = f"latency budget {0.5 * fastest:g} ms on device 'slow' is below the fastest achievable {fastest:.4g} ms"
    with pytest.raises(SearchError, match=expected):
        select_round_candidates(strategy, SPACE, devices, [("a", "slow")], 2, predict_accuracy=accuracy_fn)


# ---------------------------------------------------------------- recommendation
def objective_factory(device: str, budget_ms: float) -> Objective:
    return Objective(accuracy_fn, DEVICES[device].predict_latency, budget_ms, device, uncertainty_weight=2.0)


def test_recommend_prefers_observed_then_surrogate():
    rng = np.random.default_rng(4)
    archs = list(dict.fromkeys(SPACE.sample(rng) for _ in range(12)))
    low, high = FAST_DEVICE.budgets_ms[0], FAST_DEVICE.budgets_ms[2]
    small, big = archs[0], archs[1]
    middle = (low + high) / 2
    observations = [
        Observation(small, "fast", 0.70, 0.9 * low, weight=50),
        Observation(small, "fast", 0.74, 1.2 * low, weight=150),  # merged: acc 0.73, median latency 1.05 * low
        Observation(big, "fast", 0.80, middle, weight=100),
        Observation(archs[2], "fast", 0.95, 2 * high, weight=100),  # too slow for every budget
        Observation(archs[3], "slow", 0.99, 0.1, weight=100),  # other device
    ]
    table = recommend(SPACE, {"fast": [high, low]}, observations, objective_factory, latency_margin=0.0)
    assert [(r.device, r.budget_ms) for r in table] == [("fast", low), ("fast", high)]

    surrogate_row, observed_row = table
    assert surrogate_row.source == "surrogate"  # the merged latency 1.05 * low misses the low budget
    assert surrogate_row.observed_accuracy is None
    assert surrogate_row.predicted_latency_ms <= low
    assert observed_row.source == "observed"
    assert observed_row.arch == big
    assert observed_row.observed_accuracy == 0.80
    assert observed_row.observed_latency_ms == middle
    assert observed_row.predicted_accuracy == pytest.approx(accuracy_fn([big])[0][0])
    assert observed_row.predicted_latency_ms == pytest.approx(latency_fn(1.0)([big])[0])
    for row in table:
        assert Recommendation.from_dict(json.loads(json.dumps(row.to_dict()))) == row


def test_recommend_merges_and_breaks_ties():
    rng = np.random.default_rng(8)
    a, b, c = list(dict.fromkeys(SPACE.sample(rng) for _ in range(6)))[:3]
    budget = FAST_DEVICE.budgets_ms[2]
    observations = [
        Observation(a, "fast", 0.5, 0.25, weight=1),
        Observation(a, "fast", 1.0, 0.25, weight=3),  # weighted mean 0.875, exact in binary
        Observation(b, "fast", 0.875, 0.125, weight=4),  # same accuracy, lower latency: wins the tie
        Observation(c, "fast", 0.75, 0.0625, weight=4),
    ]
    (row,) = recommend(SPACE, {"fast": [budget]}, observations, objective_factory, latency_margin=0.0)
    assert row.arch == b
    assert row.observed_accuracy == 0.875
    assert row.source == "observed"


def test_recommend_keeps_a_latency_margin_when_a_measured_fit_allows(caplog):
    rng = np.random.default_rng(9)
    edge, safe = list(dict.fromkeys(SPACE.sample(rng) for _ in range(6)))[:2]
    budget = FAST_DEVICE.budgets_ms[2]
    observations = [
        Observation(edge, "fast", 0.90, 0.95 * budget, weight=1),  # best, but within 5% of the budget
        Observation(safe, "fast", 0.85, 0.80 * budget, weight=1),
    ]
    (row,) = recommend(SPACE, {"fast": [budget]}, observations, objective_factory, latency_margin=0.1)
    assert (row.arch, row.source) == (safe, "observed")
    (row,) = recommend(SPACE, {"fast": [budget]}, observations, objective_factory, latency_margin=0.0)
    assert row.arch == edge
    # Without any fit inside the margin, a measured fit within the plain budget still beats the surrogates.
    with caplog.at_level(logging.WARNING, logger="nas.search.recommend"):
        (row,) = recommend(SPACE, {"fast": [budget]}, observations[:1], objective_factory, latency_margin=0.1)
    assert (row.arch, row.source) == (edge, "observed")
    assert "no measured architecture fits fast@" in caplog.text
    assert "with the 10% latency margin" in caplog.text
    with pytest.raises(SearchError, match=r"latency_margin=1\.5 is invalid"):
        recommend(SPACE, {"fast": [budget]}, observations, objective_factory, latency_margin=1.5)


def test_recommend_surrogate_ignores_uncertainty_bonus():
    budget = FAST_DEVICE.budgets_ms[1]
    with_bonus = objective_factory("fast", budget)
    without_bonus = dataclasses.replace(with_bonus, uncertainty_weight=0.0)
    best_mean = create_strategy("random", SPACE, seed=0, num_samples=40).ask(1, without_bonus)[0]
    best_with_bonus = create_strategy("random", SPACE, seed=0, num_samples=40).ask(1, with_bonus)[0]
    assert best_with_bonus != best_mean  # precondition: the bonus changes the winner

    strategy = create_strategy("random", SPACE, seed=0, num_samples=40)
    (row,) = recommend(SPACE, {"fast": [budget]}, [], objective_factory, strategy=strategy)
    assert row.source == "surrogate"
    assert row.arch == best_mean
    assert row.predicted_accuracy == pytest.approx(accuracy_fn([row.arch])[0][0])
    assert row.predicted_latency_ms <= budget


def test_recommend_infeasible_budget_raises():
    with pytest.raises(SearchError, match="on device 'fast' is below the fastest achievable"):
        recommend(SPACE, {"fast": [1e-3]}, [], objective_factory)
