"""Search strategies: valid in-budget proposals, registry, state round trip, infeasible budgets."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest

from nas.complexity import count_macs
from nas.errors import CheckpointError, SearchError
from nas.search import (
    Objective,
    Observation,
    SearchStrategy,
    available_strategies,
    check_feasible,
    create_strategy,
    get_strategy,
    register_strategy,
)
from nas.search import base as search_base
from nas.search.annealing import SimulatedAnnealing
from nas.search.evaluator import Evaluator
from nas.search.evolution import RegularizedEvolution
from nas.search.objective import best_measured
from nas.space import Architecture, SearchSpace

SPACE = SearchSpace.for_task(in_channels=3, num_classes=10, resolution=28)

# Small per-ask settings so every strategy runs in well under a second.
FAST_PARAMS = {
    "annealing": {"chains": 3, "steps": 20},
    "evolution": {"population_size": 12, "tournament_size": 4, "cycles": 30},
    "random": {"num_samples": 30},
    "optuna": {"trials": 30, "startup_trials": 10},
}
STRATEGIES = ["annealing", "evolution", "random", "optuna"]


def toy_latency(archs):
    """Smooth, deterministic latency in ms: an affine function of the MAC count."""
    return np.array([0.2 + 0.05 * count_macs(SPACE, a) / 1e6 for a in archs])


def toy_accuracy_value(arch: Architecture) -> float:
    """Deterministic accuracy with stage-dependent gene weights and a kernel-expand interaction."""
    total = 0.0
    for stage, depth in enumerate(arch.depths):
        total += (0.5 + 0.4 * stage) * SPACE.depth_choices.index(depth)
        for kernel, expand in zip(arch.kernels[stage], arch.expands[stage]):
            k = SPACE.kernel_choices.index(kernel)
            e = SPACE.expand_choices.index(expand)
            total += 0.3 * k + (0.4 - 0.1 * stage) * e - 0.05 * k * e
    return 0.3 + 0.6 * total / 40.0


def toy_accuracy(archs):
    mean = np.array([toy_accuracy_value(a) for a in archs])
    std = np.array([0.01 * (sum(SPACE.encode(a)) % 7) / 7 for a in archs])
    return mean, std


def sample_latencies(count: int = 300) -> np.ndarray:
    rng = np.random.default_rng(123)
    return toy_latency([SPACE.sample(rng) for _ in range(count)])


LATENCIES = sample_latencies()
BUDGETS = {"tight": float(np.percentile(LATENCIES, 5)), "median": float(np.median(LATENCIES))}


def make_objective(budget_ms: float, device: str = "cpu-test") -> Objective:
    return Objective(toy_accuracy, toy_latency, budget_ms, device)


def measure(archs, device: str = "cpu-test") -> list[Observation]:
    """Fake client results: accuracy shifted by an arch-dependent amount, latency 5% above prediction."""
    predicted, _ = toy_accuracy(archs)
    latency = toy_latency(archs)
    observations = []
    for arch, predicted_accuracy, predicted_latency in zip(archs, predicted, latency):
        accuracy = float(np.clip(predicted_accuracy - 0.02 * (sum(SPACE.encode(arch)) % 5), 0, 1))
        observations.append(
            Observation(
                arch, device, accuracy, float(1.05 * predicted_latency),
                float(predicted_accuracy), float(predicted_latency), weight=100.0,
            )
        )
    return observations


def feasible_samples(rng, objective, count):
    samples = (SPACE.sample(rng) for _ in range(200))
    return [a for a in samples if toy_latency([a])[0] <= objective.budget_ms][:count]


@pytest.fixture(params=STRATEGIES)
def strategy_name(request):
    if request.param == "optuna":
        pytest.importorskip("optuna")
    return request.param


# ------------------------------------------------------------------- registry
def test_registry_lists_builtin_strategies():
    assert {"annealing", "evolution", "random", "optuna"} <= set(available_strategies())
    assert get_strategy("annealing") is SimulatedAnnealing
    assert get_strategy("evolution") is RegularizedEvolution


def test_registry_unknown_name_lists_names():
    with pytest.raises(SearchError, match="unknown search strategy 'anneal'.*annealing.*evolution"):
        get_strategy("anneal")


def test_create_strategy_rejects_unknown_parameter():
    with pytest.raises(SearchError, match="unknown parameters \\['chain'\\].*'chains'"):
        create_strategy("annealing", SPACE, seed=0, chain=3)


def test_create_strategy_rejects_invalid_parameter_value():
    with pytest.raises(SearchError, match="steps=-1"):
        create_strategy("annealing", SPACE, steps=-1)
    with pytest.raises(SearchError, match="final_acceptance=0.5"):
        create_strategy("annealing", SPACE, initial_acceptance=0.3, final_acceptance=0.5)
    with pytest.raises(SearchError, match="tournament_size=40 exceeds population_size=10"):
        create_strategy("evolution", SPACE, population_size=10, tournament_size=40)


def test_register_user_strategy(monkeypatch):
    monkeypatch.setattr(search_base, "_REGISTRY", dict(search_base._REGISTRY))

    @register_strategy("smallest-first")
    class SmallestFirst(SearchStrategy):
        def _search(self, n, evaluator, exclude):
            evaluator.score([SPACE.smallest()])

    assert "smallest-first" in available_strategies()
    strategy = create_strategy("smallest-first", SPACE, seed=3)
    assert strategy.name == "smallest-first"
    assert strategy.ask(1, make_objective(BUDGETS["median"])) == [SPACE.smallest()]
    with pytest.raises(SearchError, match="already registered"):
        register_strategy("smallest-first")(type("Other", (SmallestFirst,), {}))


# ------------------------------------------------------------------ proposals
@pytest.mark.parametrize("budget", ["tight", "median"])
def test_proposals_valid_distinct_within_budget(strategy_name, budget):
    strategy = create_strategy(strategy_name, SPACE, seed=1, **FAST_PARAMS[strategy_name])
    objective = make_objective(BUDGETS[budget])
    excluded = set(strategy.ask(3, objective))
    proposals = strategy.ask(6, objective, exclude=excluded)
    assert len(proposals) == 6
    assert len(set(proposals)) == 6
    assert not excluded & set(proposals)
    for arch in proposals:
        SPACE.validate(arch)
    assert np.all(toy_latency(proposals) <= BUDGETS[budget])


def test_proposals_sorted_best_first(strategy_name):
    strategy = create_strategy(strategy_name, SPACE, seed=2, **FAST_PARAMS[strategy_name])
    objective = make_objective(BUDGETS["median"])
    proposals = strategy.ask(5, objective)
    mean, std = toy_accuracy(proposals)
    scores = mean + objective.uncertainty_weight * std
    assert np.all(np.diff(scores) <= 1e-12)


def test_budget_at_fastest_returns_only_feasible(strategy_name):
    objective = make_objective(float(toy_latency([SPACE.smallest()])[0]) * 1.001)
    strategy = create_strategy(strategy_name, SPACE, seed=0, **FAST_PARAMS[strategy_name])
    proposals = strategy.ask(3, objective)
    assert 1 <= len(proposals) <= 3
    assert SPACE.smallest() in proposals
    assert np.all(toy_latency(proposals) <= objective.budget_ms)


def test_infeasible_budget_raises_clear_error(strategy_name):
    fastest = float(toy_latency([SPACE.smallest()])[0])
    strategy = create_strategy(strategy_name, SPACE, seed=0, **FAST_PARAMS[strategy_name])
    with pytest.raises(SearchError) as info:
        strategy.ask(2, make_objective(0.5 * fastest, device="phone-x"))
    message = str(info.value)
    assert f"latency budget {0.5 * fastest:g} ms" in message
    assert "'phone-x'" in message
    assert f"fastest achievable {fastest:.4g} ms" in message


def test_check_feasible_finds_nonmonotone_fastest():
    """A latency model where the smallest architecture is not the fastest: the check searches."""
    special = Architecture((2, 2, 2, 2), ((5, 3),) + ((3, 3),) * 3, ((3, 3),) * 4)

    def latency(archs):
        return np.array([1.0 if a == special else 2.0 + 0.05 * count_macs(SPACE, a) / 1e6 for a in archs])

    objective = Objective(toy_accuracy, latency, 1.5, "odd-device")
    fastest, fastest_ms = check_feasible(SPACE, objective)
    assert fastest == special
    assert fastest_ms == 1.0
    with pytest.raises(SearchError, match=re.escape("fastest achievable 1 ms")):
        check_feasible(SPACE, Objective(toy_accuracy, latency, 0.9, "odd-device"))


# -------------------------------------------------------------- state round trip
def test_state_round_trip_continues_identically(strategy_name):
    params = FAST_PARAMS[strategy_name]
    objectives = [make_objective(BUDGETS["median"]), make_objective(BUDGETS["tight"], device="cpu-small")]

    def one_round(strategy):
        proposals = [strategy.ask(3, objective) for objective in objectives]
        strategy.tell(measure(proposals[0]) + measure(proposals[1], device="cpu-small"))
        return proposals

    first = create_strategy(strategy_name, SPACE, seed=7, **params)
    uninterrupted = [one_round(first) for _ in range(3)]

    second = create_strategy(strategy_name, SPACE, seed=7, **params)
    resumed = [one_round(second)]
    text = json.dumps(second.state_dict())
    restored = create_strategy(strategy_name, SPACE, seed=99, **params)
    restored.load_state_dict(json.loads(text))
    resumed += [one_round(restored) for _ in range(2)]

    assert resumed == uninterrupted
    assert json.dumps(restored.state_dict()) == json.dumps(first.state_dict())


def test_load_state_rejects_other_strategy_and_space():
    state = create_strategy("annealing", SPACE, seed=0).state_dict()
    with pytest.raises(CheckpointError, match="belongs to strategy 'annealing'"):
        create_strategy("evolution", SPACE).load_state_dict(state)
    other_space = SearchSpace.for_task(in_channels=1, num_classes=10, resolution=28)
    with pytest.raises(CheckpointError, match="belongs to space"):
        create_strategy("annealing", other_space).load_state_dict(state)
    corrupt = dict(state, rng={"bit_generator": "NoSuchGenerator"})
    with pytest.raises(CheckpointError, match="corrupt"):
        create_strategy("annealing", SPACE).load_state_dict(corrupt)
    corrupt_memory = dict(state, memory={"chain_states": {"x": [{"depths": [9]}]}})
    with pytest.raises(CheckpointError, match="corrupt"):
        create_strategy("annealing", SPACE).load_state_dict(corrupt_memory)


# ------------------------------------------------------------ steering by results
def test_annealing_restarts_from_best_measured():
    strategy = SimulatedAnnealing(SPACE, seed=0, chains=4, steps=5, restart_fraction=0.5)
    objective = make_objective(BUDGETS["median"])
    rng = np.random.default_rng(5)
    measured = feasible_samples(rng, objective, 6)
    observations = measure(measured)
    strategy.tell(observations)
    starts = strategy._chain_starts(Evaluator(objective))
    best_two = best_measured(observations, "cpu-test", 2)
    assert starts[:2] == best_two
    assert len(starts) == 4


def test_annealing_reheats_on_large_surrogate_error():
    strategy = SimulatedAnnealing(SPACE, seed=0, initial_acceptance=0.3, reheat_error=0.05, max_reheat=3.0)
    target = make_objective(BUDGETS["median"]).key
    assert strategy.start_acceptance(target) == pytest.approx(0.3)
    arch = SPACE.smallest()
    strategy.tell([Observation(arch, "cpu-test", 0.5, 1.0, predicted_accuracy=0.6)])
    assert strategy.heat == pytest.approx(2.0)
    assert strategy.start_acceptance(target) == pytest.approx(0.3 ** 0.5)
    strategy.tell([Observation(arch, "cpu-test", 0.5, 1.0, predicted_accuracy=0.9)])
    assert strategy.heat == pytest.approx(3.0)
    strategy.tell([Observation(arch, "cpu-test", 0.5, 1.0, predicted_accuracy=0.51)])
    assert strategy.heat == 1.0
    assert strategy.start_acceptance(target) == pytest.approx(0.3)


def test_annealing_reheat_changes_search():
    objective = make_objective(BUDGETS["median"])
    calm = SimulatedAnnealing(SPACE, seed=4, chains=2, steps=30)
    hot = SimulatedAnnealing(SPACE, seed=4, chains=2, steps=30)
    hot.tell([Observation(SPACE.smallest(), "other", 0.2, 1.0, predicted_accuracy=0.6)])
    assert hot.ask(3, objective) != calm.ask(3, objective)


def test_annealing_cools_across_asks():
    strategy = SimulatedAnnealing(SPACE, seed=0, chains=2, steps=3, round_decay=0.5)
    objective = make_objective(BUDGETS["median"])
    first = strategy.start_acceptance(objective.key)
    strategy.ask(1, objective)
    assert strategy.start_acceptance(objective.key) == pytest.approx(0.5 * first)


def test_evolution_population_takes_measured():
    strategy = RegularizedEvolution(
        SPACE, seed=0, population_size=8, tournament_size=2, cycles=4, observed_fraction=0.25
    )
    objective = make_objective(BUDGETS["median"])
    strategy.ask(2, objective)
    rng = np.random.default_rng(9)
    measured = feasible_samples(rng, objective, 4)
    strategy.tell(measure(measured))
    population = strategy._initial_population(Evaluator(objective))
    assert len(population) == 8
    assert set(best_measured(strategy.observations, "cpu-test", 2)) <= set(population)


# --------------------------------------------------------- objective, observation
class FakePrediction:
    def __init__(self, mean, std):
        self.mean, self.std = mean, std


class FakePredictor:
    def __init__(self, fn):
        self.fn = fn

    def predict(self, archs):
        return self.fn(archs)


def test_objective_from_predictors_duck_types():
    accuracy = FakePredictor(lambda archs: FakePrediction(*toy_accuracy(archs)))
    latency = FakePredictor(lambda archs: FakePrediction(toy_latency(archs), np.zeros(len(archs))))
    objective = Objective.from_predictors(accuracy, latency, 2.0, "cpu-test", uncertainty_weight=1.0)
    archs = [SPACE.smallest(), SPACE.largest()]
    np.testing.assert_allclose(objective.predict_accuracy(archs)[0], toy_accuracy(archs)[0])
    np.testing.assert_allclose(objective.predict_latency(archs), toy_latency(archs))
    plain = Objective.from_predictors(
        FakePredictor(lambda a: toy_accuracy(a)[0]), FakePredictor(toy_latency), 2.0, "d"
    )
    np.testing.assert_array_equal(plain.predict_accuracy(archs)[1], [0.0, 0.0])
    with pytest.raises(SearchError, match="has no predict"):
        Objective.from_predictors(object(), latency, 2.0, "cpu-test")


def test_objective_rejects_bad_values():
    with pytest.raises(SearchError, match="budget_ms=-1"):
        make_objective(-1.0)
    with pytest.raises(SearchError, match="uncertainty_weight=-0.5"):
        Objective(toy_accuracy, toy_latency, 1.0, "d", uncertainty_weight=-0.5)
    wrong_length = Objective(toy_accuracy, lambda archs: np.ones(len(archs) + 1), 1.0, "d")
    with pytest.raises(SearchError, match="predict_latency returned 3 values for 2 architectures"):
        Evaluator(wrong_length).latency([SPACE.smallest(), SPACE.largest()])
    nan_accuracy = Objective(lambda a: (np.full(len(a), np.nan), np.zeros(len(a))), toy_latency, 1.0, "d")
    with pytest.raises(SearchError, match="non-finite"):
        Evaluator(nan_accuracy).score([SPACE.smallest()])


def test_evaluator_counts_distinct_accuracy_evaluations():
    evaluator = Evaluator(make_objective(BUDGETS["median"]))
    archs = [SPACE.smallest(), SPACE.largest(), SPACE.smallest()]
    evaluator.score(archs)
    evaluator.score(archs[:1])
    assert evaluator.accuracy_evaluations == 2


def test_observation_round_trip_and_validation():
    observation = Observation(SPACE.largest(), "cpu-test", 0.8125, 3.5, 0.79, 3.1, weight=250.0)
    assert Observation.from_dict(json.loads(json.dumps(observation.to_dict()))) == observation
    with pytest.raises(SearchError, match="accuracy=1.5 is out of range"):
        Observation(SPACE.largest(), "cpu-test", 1.5, 3.5)
    with pytest.raises(SearchError, match="latency_ms=0.0 is invalid"):
        Observation(SPACE.largest(), "cpu-test", 0.5, 0.0)
    with pytest.raises(SearchError, match="missing \\['latency_ms'\\]"):
        Observation.from_dict({"arch": SPACE.largest().to_dict(), "device": "d", "accuracy": 0.5})


def test_tell_rejects_foreign_architecture():
    strategy = create_strategy("random", SPACE)
    foreign = Architecture((2,) * 5, ((3, 3),) * 5, ((3, 3),) * 5)
    with pytest.raises(ValueError, match="5 stages"):
        strategy.tell([Observation(foreign, "cpu-test", 0.5, 1.0)])


# ------------------------------------------------------------------- optuna
def test_optuna_nsga2_within_budget():
    pytest.importorskip("optuna")
    strategy = create_strategy("optuna", SPACE, seed=0, sampler="nsga2", trials=30, population_size=10)
    proposals = strategy.ask(4, make_objective(BUDGETS["median"]))
    assert len(set(proposals)) == 4
    assert np.all(toy_latency(proposals) <= BUDGETS["median"])


def test_optuna_missing_names_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    strategy = create_strategy("optuna", SPACE, seed=0, trials=5)
    with pytest.raises(ImportError, match=re.escape("pip install apfp-nas[bench]")):
        strategy.ask(1, make_objective(BUDGETS["median"]))


@pytest.mark.parametrize("evaluations", [30, 90])
def test_params_for_evaluations_bound_cost(strategy_name, evaluations):
    params = get_strategy(strategy_name).params_for_evaluations(evaluations)
    strategy = create_strategy(strategy_name, SPACE, seed=0, **params)
    for round_index in range(2):
        calls = []

        def counted_accuracy(archs):
            calls.append(len(archs))
            return toy_accuracy(archs)

        objective = Objective(counted_accuracy, toy_latency, BUDGETS["median"], "cpu-test")
        proposals = strategy.ask(2, objective)
        assert sum(calls) <= evaluations, (round_index, sum(calls))
        strategy.tell(measure(proposals))
