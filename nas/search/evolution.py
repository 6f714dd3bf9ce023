"""Regularized evolution (aging evolution) under the latency budget.

The population is a queue. Each cycle draws ``tournament_size`` members at random,
takes the best-scored one as parent, adds a mutated child (optionally a crossover
of the two best) as the newest member and removes the oldest member, whatever its
score. Removing by age instead of by score keeps the population from being
captured by one lucky early architecture.

The population of each (device, budget) persists across asks. Measured results
steer it: at each ask the best measured architectures on the device join as the
newest members.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Mapping

from nas.errors import SearchError
from nas.search.base import SearchStrategy, register_strategy, require_float, require_int
from nas.search.evaluator import Evaluator
from nas.search.feasibility import repair, sample_feasible
from nas.search.objective import best_measured
from nas.space import Architecture

__all__ = ["RegularizedEvolution", "EvolutionParams"]


@dataclass(frozen=True)
class EvolutionParams:
    """Parameters of :class:`RegularizedEvolution`.

    Attributes:
        population_size: Members kept per (device, budget). The first ask fills the
            population with random feasible architectures, so one ask scores at most
            ``population_size + cycles`` distinct architectures.
        tournament_size: Members drawn without replacement per cycle; larger values
            select more greedily. Must not exceed ``population_size``.
        cycles: Children produced per ask.
        max_genes: A child differs from its parent in a uniformly drawn number of
            genes between 1 and this value.
        crossover_rate: Probability that a child is the crossover of the tournament's
            two best members (then mutated) instead of a mutation of the best.
        observed_fraction: Share of the population (rounded down) that the best
            measured architectures on the device may take at each ask.
        proposal_retries: Children redrawn before an over-budget child is repaired by
            shrinking.
    """

    population_size: int = 32
    tournament_size: int = 8
    cycles: int = 100
    max_genes: int = 1
    crossover_rate: float = 0.0
    observed_fraction: float = 0.25
    proposal_retries: int = 4

    def __post_init__(self) -> None:
        require_int(self.population_size, "population_size", 2)
        require_int(self.tournament_size, "tournament_size", 2)
        if self.tournament_size > self.population_size:
            raise SearchError(
                f"tournament_size={self.tournament_size} exceeds population_size={self.population_size}; "
                f"use a tournament no larger than the population"
            )
        require_int(self.cycles, "cycles", 0)
        require_int(self.max_genes, "max_genes", 1)
        require_float(self.crossover_rate, "crossover_rate", 0.0, 1.0)
        require_float(self.observed_fraction, "observed_fraction", 0.0, 1.0)
        require_int(self.proposal_retries, "proposal_retries", 1)


@register_strategy
class RegularizedEvolution(SearchStrategy):
    """Aging evolution with tournament selection on the surrogate score."""

    name = "evolution"
    params_type = EvolutionParams

    def __init__(self, space: Any, *, seed: int = 0, **params: Any) -> None:
        super().__init__(space, seed=seed, **params)
        self.populations: dict[str, list[Architecture]] = {}

    @classmethod
    def params_for_evaluations(cls, evaluations: int) -> dict[str, Any]:
        """Return population, tournament and cycles that score at most ``evaluations`` architectures per ask.

        The population is a sixth of the evaluations (between 4 and 64), the
        tournament a fifth of the population, and every other evaluation is a child.
        """
        require_int(evaluations, "evaluations", 5)
        population = min(64, max(4, evaluations // 6))
        return {
            "population_size": population,
            "tournament_size": max(2, population // 5),
            "cycles": evaluations - population,
        }

    def _search(self, n: int, evaluator: Evaluator, exclude: frozenset[Architecture]) -> None:
        p = self.params
        population = deque(self._initial_population(evaluator))
        scores = deque(evaluator.score(list(population)).tolist())
        # A tight budget can leave fewer feasible architectures than a full tournament needs.
        tournament = min(p.tournament_size, len(population))
        for _ in range(p.cycles if tournament >= 2 else 0):
            drawn = self.rng.choice(len(population), size=tournament, replace=False)
            ranked = sorted(drawn.tolist(), key=lambda i: (-scores[i], i))
            if p.crossover_rate > 0 and self.rng.random() < p.crossover_rate:
                child = self.space.crossover(population[ranked[0]], population[ranked[1]], self.rng)
            else:
                child = population[ranked[0]]
            child = self._feasible_child(child, evaluator)
            if child is None:
                continue
            population.append(child)
            scores.append(float(evaluator.score([child])[0]))
            population.popleft()
            scores.popleft()
        self.populations[evaluator.objective.key] = list(population)

    def _initial_population(self, evaluator: Evaluator) -> list[Architecture]:
        """Return the stored population with the best measured architectures appended, topped up at random."""
        p, objective = self.params, evaluator.objective
        members = list(self.populations.get(objective.key, []))
        measured = best_measured(self.observations, objective.device, int(p.observed_fraction * p.population_size))
        members += [arch for arch in measured if arch not in members]
        feasible = []
        for arch in members[-p.population_size :]:
            fixed = repair(self.space, arch, evaluator, self.rng)
            if fixed is not None:
                feasible.append(fixed)
        missing = p.population_size - len(feasible)
        if missing:
            feasible += sample_feasible(self.space, evaluator, self.rng, missing, set(feasible))
        return feasible

    def _feasible_child(self, parent: Architecture, evaluator: Evaluator) -> Architecture | None:
        child = parent
        for _ in range(self.params.proposal_retries):
            genes = int(self.rng.integers(1, self.params.max_genes + 1))
            child = self.space.mutate(parent, self.rng, num_genes=genes)
            if evaluator.feasible([child])[0]:
                return child
        fixed = repair(self.space, child, evaluator, self.rng)
        return fixed if fixed != parent else None

    def _memory_state(self) -> dict[str, Any]:
        return {"populations": {key: [a.to_dict() for a in archs] for key, archs in self.populations.items()}}

    def _load_memory(self, memory: Mapping[str, Any]) -> None:
        self.populations = {
            key: [self.space.validate(Architecture.from_dict(a)) for a in archs]
            for key, archs in memory["populations"].items()
        }

