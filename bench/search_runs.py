"""Searches at an equal budget of client evaluations: the APFP-NAS method and black-box baselines.

Both kinds spend their budget through :meth:`bench.clients.PrivateClients.evaluate`:
one client evaluation is one architecture fine-tuned and scored on one client's
private data, and the search receives that client's validation accuracy.

* :func:`run_method` is stage 2 without Flower. Each round, every client gets
  ``candidates_per_client`` candidates chosen by
  :func:`nas.search.selection.select_round_candidates` with surrogate-guided
  simulated annealing under its device's budgets. The measured results go to
  the strategy, and the surrogates are corrected on all observations so far
  (:func:`fl_server.rounds.refit_surrogates`). The recommendations come from
  :func:`nas.search.recommend`, as in the stage-2 report.
* :func:`run_blackbox` is what a user without APFP-NAS would run: regularized
  evolution, random search or Optuna NSGA-II whose objective is the client
  evaluation itself. Every new architecture they score costs one client
  evaluation, until the device's share of the budget is spent. Feasibility uses
  the stage-1 latency surrogate of the device, corrected with the latencies they
  measured. The recommendation per budget is the best observed validation accuracy
  among architectures whose measured latency meets the budget.

Every device gets ``rounds * clients_of_device * candidates_per_client``
evaluations in both kinds; the baselines split them evenly over the device's budgets.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.clients import PrivateClients
from fl_server.rounds import feasible_budgets, refit_surrogates
from nas.errors import SearchError
from nas.search import Objective, Observation, check_feasible, create_strategy, get_strategy, recommend
from nas.search.objective import summarize_observations
from nas.search.selection import DeviceTarget, select_round_candidates
from nas.space import Architecture
from surrogate import correct_latency

logger = logging.getLogger(__name__)

METHOD = "apfp-nas"
BASELINES = ("evolution", "random", "optuna-nsga2")
MAX_ASKS = 50


@dataclass
class SearchRun:
    """Result of one search: its observations and one recommendation per (device, budget)."""

    strategy: str
    seed: int
    observations: list[Observation] = field(default_factory=list)
    recommendations: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def evaluation_budget(clients: PrivateClients, rounds: int, candidates_per_client: int) -> dict[str, int]:
    """Return the client evaluations each device gets: rounds x its clients x candidates per client."""
    return {d: rounds * len(clients.clients_of(d)) * candidates_per_client for d in clients.device_names}


def _objective(accuracy: Any, latency: Any, device: str, budget_ms: float, weight: float) -> Objective:
    return Objective.from_predictors(accuracy, latency, budget_ms, device, weight)


def run_method(
    clients: PrivateClients, *, rounds: int, candidates_per_client: int, seed: int,
    strategy: str = "annealing", uncertainty_weight: float = 0.5,
) -> SearchRun:
    """Run stage 2 in process for ``rounds`` rounds (see the module docstring)."""
    started = time.perf_counter()
    run, space = clients.run, clients.space
    search = create_strategy(strategy, space, seed=seed)
    accuracy, latency = run.accuracy_predictor, dict(run.latency_predictors)
    roster = [(client, device) for client, device in enumerate(clients.devices)]
    observations: list[Observation] = []
    for round_number in range(1, rounds + 1):
        targets = {}
        for device in clients.device_names:
            _, fastest = check_feasible(space, _objective(accuracy, latency[device], device, 1e12, 0.0))
            budgets = feasible_budgets(run.budgets[device], fastest, device)
            targets[device] = DeviceTarget(device, tuple(budgets),
                                           lambda archs, p=latency[device]: p.predict(list(archs)).mean)
        measured = {d: {o.arch for o in observations if o.device == d} for d in clients.device_names}

        def predict_accuracy(archs: list[Architecture], model: Any = accuracy) -> tuple[np.ndarray, np.ndarray]:
            prediction = model.predict(list(archs))
            return prediction.mean, prediction.std

        proposals = select_round_candidates(
            search, space, targets, roster, candidates_per_client, measured,
            predict_accuracy=predict_accuracy, uncertainty_weight=uncertainty_weight,
        )
        new = []
        for client, device in roster:
            for proposal in proposals[client]:
                score = clients.evaluate(proposal.arch, client)
                new.append(Observation(
                    proposal.arch, device, score.val_accuracy, clients.latency_ms(proposal.arch, device),
                    proposal.predicted_accuracy, proposal.predicted_latency_ms, weight=float(score.num_val),
                ))
        observations.extend(new)
        accuracy, latency = refit_surrogates(run.accuracy_predictor, run.latency_predictors, observations)
        search.tell(new)
        logger.debug("method round %d: %d observations", round_number, len(new))

    result = SearchRun(METHOD, seed, observations)
    for device in clients.device_names:
        for budget in run.budgets[device]:
            try:
                (choice,) = recommend(space, {device: [budget]}, observations,
                                      lambda d, b: _objective(accuracy, latency[d], d, b, uncertainty_weight))
            except SearchError as error:
                logger.warning("method: no recommendation for %s at %.4g ms: %s", device, budget, error)
                result.recommendations.append({"device": device, "budget_ms": budget, "arch": None,
                                               "source": "infeasible"})
                continue
            result.recommendations.append({"device": device, "budget_ms": budget, "arch": choice.arch,
                                           "source": choice.source, "observed_accuracy": choice.observed_accuracy})
    result.seconds = time.perf_counter() - started
    return result


class _BudgetSpent(Exception):
    """The black-box objective would need a client evaluation beyond its budget."""


class _DropBudgetSpent(logging.Filter):
    """Drop Optuna's warnings about the trial that :class:`_BudgetSpent` ends on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return "_BudgetSpent" not in text and "failed with value None" not in text


logging.getLogger("optuna.study._optimize").addFilter(_DropBudgetSpent())


class BlackBoxAccuracy:
    """An objective's ``predict_accuracy`` that runs a client evaluation for every new architecture.

    Clients of the device take turns (``turns`` cycles over their ids). Once ``limit``
    architectures are evaluated, a request for a new one raises ``_BudgetSpent``.
    """

    def __init__(self, clients: PrivateClients, device: str, limit: int, turns: Any, known: dict) -> None:
        self.clients, self.device, self.limit, self.turns = clients, device, limit, turns
        self.known: dict[Architecture, Observation] = known
        self.used = 0

    def __call__(self, archs: list[Architecture]) -> tuple[np.ndarray, np.ndarray]:
        means = []
        for arch in archs:
            if arch not in self.known:
                if self.used >= self.limit:
                    raise _BudgetSpent
                client = next(self.turns)
                score = self.clients.evaluate(arch, client)
                latency = self.clients.latency_ms(arch, self.device)
                self.known[arch] = Observation(arch, self.device, score.val_accuracy, latency,
                                               weight=float(score.num_val))
                self.used += 1
            means.append(self.known[arch].accuracy)
        return np.array(means, dtype=np.float64), np.zeros(len(means))


def baseline_params(name: str, evaluations: int) -> tuple[str, dict[str, Any]]:
    """Return the registered strategy and its parameters for a baseline with ``evaluations`` evaluations."""
    if name == "optuna-nsga2":
        population = max(4, min(30, evaluations // 2))
        # Trials over the latency budget cost no evaluation, so allow more trials than evaluations.
        return "optuna", {"sampler": "nsga2", "trials": 4 * max(evaluations, 1), "population_size": population}
    if name == "evolution":
        return "evolution", get_strategy("evolution").params_for_evaluations(max(evaluations, 5))
    if name == "random":
        return "random", get_strategy("random").params_for_evaluations(max(evaluations, 1))
    raise SearchError(f"unknown baseline {name!r}; known baselines: {BASELINES}")


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_blackbox(clients: PrivateClients, name: str, *, budget: dict[str, int], seed: int) -> SearchRun:
    """Run baseline ``name`` per (device, budget) with ``budget[device]`` evaluations per device."""
    started = time.perf_counter()
    run, space = clients.run, clients.space
    result = SearchRun(name, seed)
    for device in clients.device_names:
        known: dict[Architecture, Observation] = {}
        turns = itertools.cycle(clients.clients_of(device))
        budgets = run.budgets[device]
        for budget_ms, limit in zip(budgets, _split(budget[device], len(budgets))):
            latency = run.latency_predictors[device]
            if known:
                measured = list(known.values())
                latency = correct_latency(latency, [o.arch for o in measured], [o.latency_ms for o in measured])
            black_box = BlackBoxAccuracy(clients, device, limit, turns, known)
            objective = Objective(black_box, lambda archs, p=latency: p.predict(list(archs)).mean,
                                  budget_ms, device, uncertainty_weight=0.0)
            _, fastest = check_feasible(space, Objective(black_box, objective.predict_latency, 1e12, device))
            if budget_ms < fastest:
                objective = Objective(black_box, objective.predict_latency, fastest * 1.05, device, 0.0)
            strategy_name, params = baseline_params(name, limit)
            strategy = create_strategy(strategy_name, space, seed=seed, **params)
            strategy.tell(list(known.values()))
            for _ in range(MAX_ASKS):
                if black_box.used >= limit:
                    break
                known_before = len(known)
                try:
                    strategy.ask(1, objective)
                except _BudgetSpent:
                    break
                strategy.tell(list(known.values())[known_before:])
        result.observations.extend(known.values())
        for budget_ms in budgets:
            result.recommendations.append(best_observed(list(known.values()), device, budget_ms))
    result.seconds = time.perf_counter() - started
    return result


def best_observed(observations: list[Observation], device: str, budget_ms: float) -> dict[str, Any]:
    """Return the recommendation rule of the baselines for one (device, budget).

    The best observed accuracy among architectures whose measured latency meets the
    budget (ties: lower latency), the rule :func:`nas.search.recommend` applies to
    measured results. When none meets it, the fastest measured architecture, with
    ``source`` "over-budget".
    """
    merged = [m for m in summarize_observations(observations) if m.device == device]
    fitting = sorted((m for m in merged if m.latency_ms <= budget_ms), key=lambda m: (-m.accuracy, m.latency_ms))
    if fitting:
        return {"device": device, "budget_ms": budget_ms, "arch": fitting[0].arch, "source": "observed",
                "observed_accuracy": fitting[0].accuracy}
    if not merged:
        return {"device": device, "budget_ms": budget_ms, "arch": None, "source": "none"}
    fastest = min(merged, key=lambda m: m.latency_ms)
    return {"device": device, "budget_ms": budget_ms, "arch": fastest.arch, "source": "over-budget",
            "observed_accuracy": fastest.accuracy}
