"""Annealing and evolution against random search, with a latency surrogate fit on real measurements.

The objective is a fixed, cheap function of the architecture (weighted gene choices
with interactions), so the comparison is deterministic per seed. The constraint is
a LightGBM latency surrogate fit on ONNX Runtime latencies of real exported subnets
measured on this machine, so the feasible region has the shape a real run has.
Every strategy gets the same number of accuracy evaluations per run.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from nas.search import Objective, create_strategy, get_strategy
from nas.space import Architecture, SearchSpace

torch = pytest.importorskip("torch")
surrogate = pytest.importorskip("surrogate")
hw_profiles = pytest.importorskip("hw_profiles")
nas_export = pytest.importorskip("nas.export")
nas_subnet = pytest.importorskip("nas.subnet")

logger = logging.getLogger(__name__)

SPACE = SearchSpace.for_task(in_channels=3, num_classes=10, resolution=64)
NUM_MEASUREMENTS = 40
EVALUATIONS = 150
SEEDS = tuple(range(7))
STRATEGIES = ("annealing", "evolution", "random")

DEPTH_WEIGHTS = (0.6, 0.9, 1.2, 1.0)
KERNEL_WEIGHTS = (0.5, 0.35, 0.25, 0.15)
EXPAND_WEIGHTS = (0.2, 0.4, 0.5, 0.6)


def true_accuracy(arch: Architecture) -> float:
    """Deterministic accuracy in (0.2, 0.9): stage-dependent gene weights, kernel-expand and depth interactions."""
    total = 0.0
    depth_index = [SPACE.depth_choices.index(d) for d in arch.depths]
    for stage, depth in enumerate(arch.depths):
        total += DEPTH_WEIGHTS[stage] * depth_index[stage]
        for position, (kernel, expand) in enumerate(zip(arch.kernels[stage], arch.expands[stage])):
            k = SPACE.kernel_choices.index(kernel)
            e = SPACE.expand_choices.index(expand)
            total += (KERNEL_WEIGHTS[stage] * k + EXPAND_WEIGHTS[stage] * e - 0.12 * k * e) / (1 + 0.3 * position)
    total += 0.15 * sum(depth_index[s] * depth_index[s + 1] for s in range(SPACE.num_stages - 1))
    return float(0.2 + 0.7 * np.tanh(total / 12))


class CountingAccuracy:
    """The accuracy callable of the objective; counts the architectures it scores."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, archs):
        self.count += len(archs)
        return np.array([true_accuracy(a) for a in archs]), np.zeros(len(archs))


@pytest.fixture(scope="module")
def latency_model():
    """A LatencyPredictor fit on real ONNX Runtime latencies of exported random subnets."""
    torch.set_num_threads(1)
    profile = hw_profiles.load_profile("cpu-1t-fp32").replace(warmup=3, repeats=15)

    def export(arch: Architecture) -> bytes:
        model = nas_subnet.Subnet(SPACE, arch)
        return nas_export.export_onnx(model, input_shape=(SPACE.in_channels, SPACE.resolution, SPACE.resolution))

    rows = hw_profiles.profile_space(SPACE, profile, NUM_MEASUREMENTS, export, seed=0, progress=False)
    archs = [Architecture.from_json(row["architecture"]) for row in rows]
    latencies = np.array([row["median_ms"] for row in rows])
    predictor = surrogate.LatencyPredictor(SPACE, profile.name, num_models=3).fit(archs, latencies)
    return predictor, latencies


@pytest.fixture(scope="module")
def benchmark(latency_model):
    predictor, latencies = latency_model
    budget = float(np.percentile(latencies, 30))
    best: dict[str, list[float]] = {name: [] for name in STRATEGIES}
    counts: dict[str, list[int]] = {name: [] for name in STRATEGIES}
    proposals = []
    for seed in SEEDS:
        for name in STRATEGIES:
            params = get_strategy(name).params_for_evaluations(EVALUATIONS)
            accuracy = CountingAccuracy()
            objective = Objective.from_predictors(
                _AccuracyAdapter(accuracy), predictor, budget, "cpu-1t-fp32", uncertainty_weight=0.0
            )
            (arch,) = create_strategy(name, SPACE, seed=seed, **params).ask(1, objective)
            best[name].append(true_accuracy(arch))
            counts[name].append(accuracy.count)
            proposals.append(arch)
    logger.info("best true objective per seed %s: %s", SEEDS, best)
    return {"best": best, "counts": counts, "budget": budget, "proposals": proposals, "predictor": predictor}


class _AccuracyAdapter:
    """Expose the counting callable through ``predict(archs)`` like the surrogate package's predictors."""

    def __init__(self, fn: CountingAccuracy) -> None:
        self.fn = fn

    def predict(self, archs):
        return self.fn(archs)


def test_latency_measurements_vary(latency_model):
    _, latencies = latency_model
    assert len(latencies) == NUM_MEASUREMENTS
    assert np.all(latencies > 0)
    assert latencies.max() > 1.2 * latencies.min()


def test_benchmark_proposals_within_budget(benchmark):
    predicted = benchmark["predictor"].predict(benchmark["proposals"]).mean
    assert np.all(predicted <= benchmark["budget"])
    for arch in benchmark["proposals"]:
        SPACE.validate(arch)


def test_benchmark_uses_equal_evaluations(benchmark):
    for name, counts in benchmark["counts"].items():
        assert max(counts) <= EVALUATIONS, name
    assert benchmark["counts"]["random"] == [EVALUATIONS] * len(SEEDS)


@pytest.mark.parametrize("name", ["annealing", "evolution"])
def test_strategy_beats_random_search(benchmark, name):
    best = benchmark["best"]
    assert np.median(best[name]) > np.median(best["random"]), best
