"""Simulated annealing over architectures, steered by measured results.

Several Markov chains run in lockstep, so each step queries the surrogates once
for all chains. A chain proposes a neighbour by mutating 1 to ``max_genes`` genes.
A neighbour over the latency budget is redrawn a few times and then shrunk until
it fits, so every state of every chain is feasible. A neighbour is accepted with
the Metropolis rule ``min(1, exp((score_new - score_old) / T))``, where the score is
the predicted accuracy plus the uncertainty bonus.

The temperature is set from the scores themselves, so one setting works whether
neighbours differ by 0.1 or by 10 accuracy points. At step ``t`` it is
``T = mean_loss / -ln(p_t)``: ``mean_loss`` is the mean score loss of the worsening
proposals seen so far in the ask, and ``p_t``, the acceptance probability of such
a typical worsening move, falls geometrically from ``initial_acceptance`` to
``final_acceptance`` over the steps.

Measured results steer the search in two ways. Part of the chains restart from
the architectures with the best measured accuracy on the objective's device. And
when the accuracy surrogate's recent error is large, the temperature of the next
asks is raised, so the chains move away from regions the surrogate mispredicted.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from nas.errors import SearchError
from nas.search.base import SearchStrategy, register_strategy, require_float, require_int
from nas.search.evaluator import Evaluator
from nas.search.feasibility import repair, sample_feasible
from nas.search.objective import Observation, best_measured
from nas.space import Architecture

__all__ = ["SimulatedAnnealing", "AnnealingParams"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnnealingParams:
    """Parameters of :class:`SimulatedAnnealing`. Errors are in accuracy units (fractions).

    Attributes:
        chains: Chains run in lockstep per ask.
        steps: Proposals per chain per ask. One ask scores at most
            ``max(init_samples, chains) + chains * steps`` distinct architectures.
        init_samples: Chain starts scored per ask. Measured and previous starts count
            toward it, and random feasible architectures fill the rest (at least one
            per chain without a start). The best random ones start the chains left.
        initial_acceptance: Probability of accepting a typical worsening move at the
            first step of the first ask for a (device, budget).
        final_acceptance: That probability at the last step of every ask; must be
            below ``initial_acceptance``.
        max_genes: A neighbour differs in a uniformly drawn number of genes between
            1 and this value (a gene is a stage depth, a block kernel or expand).
        restart_fraction: Share of the chains (rounded up) that restart from the best
            measured architectures on the objective's device, when any exist. The
            other chains continue from where the previous ask for the same
            (device, budget) ended, or start fresh.
        round_decay: Each later ask for the same (device, budget) starts with this
            factor times the previous initial acceptance (never below the final
            one), so later rounds refine instead of explore.
        reheat_error: Surrogate error threshold. When the weighted mean absolute
            difference between observed and predicted accuracy in the latest
            :meth:`tell` exceeds it, all temperatures are multiplied by
            ``error / reheat_error``, capped at ``max_reheat``.
        max_reheat: Upper bound of that multiplier.
        proposal_retries: Neighbours redrawn per step before an over-budget one is
            repaired by shrinking.
    """

    chains: int = 4
    steps: int = 50
    init_samples: int = 16
    initial_acceptance: float = 0.3
    final_acceptance: float = 0.001
    max_genes: int = 2
    restart_fraction: float = 0.5
    round_decay: float = 0.7
    reheat_error: float = 0.05
    max_reheat: float = 4.0
    proposal_retries: int = 4

    def __post_init__(self) -> None:
        require_int(self.chains, "chains", 1)
        require_int(self.steps, "steps", 0)
        require_int(self.init_samples, "init_samples", 0)
        require_float(self.initial_acceptance, "initial_acceptance", 0.0, 1.0, open_low=True)
        if not self.initial_acceptance < 1.0:
            raise SearchError(f"initial_acceptance={self.initial_acceptance!r} is invalid; use a value below 1")
        require_float(self.final_acceptance, "final_acceptance", 0.0, self.initial_acceptance, open_low=True)
        require_int(self.max_genes, "max_genes", 1)
        require_float(self.restart_fraction, "restart_fraction", 0.0, 1.0)
        require_float(self.round_decay, "round_decay", 0.0, 1.0, open_low=True)
        require_float(self.reheat_error, "reheat_error", 0.0, open_low=True)
        require_float(self.max_reheat, "max_reheat", 1.0)
        require_int(self.proposal_retries, "proposal_retries", 1)


@register_strategy
class SimulatedAnnealing(SearchStrategy):
    """Multi-chain simulated annealing on the surrogate score under the latency budget."""

    name = "annealing"
    params_type = AnnealingParams

    def __init__(self, space: Any, *, seed: int = 0, **params: Any) -> None:
        super().__init__(space, seed=seed, **params)
        self.chain_states: dict[str, list[Architecture]] = {}
        self.asks_per_target: dict[str, int] = {}
        self.recent_error: float | None = None
        self.heat = 1.0

    @classmethod
    def params_for_evaluations(cls, evaluations: int) -> dict[str, Any]:
        """Return chains, init_samples and steps that score at most ``evaluations`` architectures per ask.

        A fifth of the evaluations pick the chain starts, the rest are split over up
        to 4 chains (one chain per 50 evaluations).
        """
        require_int(evaluations, "evaluations", 2)
        chains = min(4, max(1, evaluations // 50))
        init_samples = max(chains, evaluations // 5)
        return {"chains": chains, "init_samples": init_samples, "steps": (evaluations - init_samples) // chains}

    def start_acceptance(self, target: str) -> float:
        """Return the first-step acceptance probability of a typical worsening move for ``target``.

        ``target`` is an :attr:`Objective.key`. The value includes the round decay
        and the reheat multiplier (a temperature times ``heat`` turns ``p`` into
        ``p ** (1 / heat)``).
        """
        p = self.params
        decayed = p.initial_acceptance * p.round_decay ** self.asks_per_target.get(target, 0)
        return max(p.final_acceptance, decayed) ** (1.0 / self.heat)

    def _on_tell(self, batch: list[Observation]) -> None:
        pairs = [
            (o.weight, abs(o.accuracy - o.predicted_accuracy)) for o in batch if o.predicted_accuracy is not None
        ]
        if not pairs:
            return
        weights, errors = np.array(pairs).T
        self.recent_error = float(np.dot(weights, errors) / weights.sum())
        self.heat = float(min(self.params.max_reheat, max(1.0, self.recent_error / self.params.reheat_error)))
        if self.heat > 1.0:
            logger.info(
                "surrogate mean absolute error %.4f exceeds %.4f; next annealing asks run %.2fx hotter",
                self.recent_error, self.params.reheat_error, self.heat,
            )

    def _search(self, n: int, evaluator: Evaluator, exclude: frozenset[Architecture]) -> None:
        p, target = self.params, evaluator.objective.key
        current = self._chain_starts(evaluator)
        scores = evaluator.score(current)
        log_start = math.log(self.start_acceptance(target))
        log_end = min(math.log(p.final_acceptance) / self.heat, log_start)
        losses: list[float] = []
        for step in range(p.steps):
            proposals = self._neighbours(current, evaluator)
            movable = [i for i, proposal in enumerate(proposals) if proposal is not None]
            new_scores = dict(zip(movable, evaluator.score([proposals[i] for i in movable])))
            losses += [scores[i] - new for i, new in new_scores.items() if new < scores[i]]
            log_acceptance = log_start + (log_end - log_start) * step / max(1, p.steps - 1)
            temperature = (sum(losses) / len(losses) if losses else 1.0) / -log_acceptance
            draws = self.rng.random(len(current))
            for i, new_score in new_scores.items():
                delta = new_score - scores[i]
                if delta >= 0 or draws[i] < math.exp(delta / temperature):
                    current[i], scores[i] = proposals[i], new_score
        self.chain_states[target] = current
        self.asks_per_target[target] = self.asks_per_target.get(target, 0) + 1

    def _chain_starts(self, evaluator: Evaluator) -> list[Architecture]:
        """Return one feasible start per chain: best measured, then previous chain ends, then best random."""
        p, objective = self.params, evaluator.objective
        restarts = math.ceil(p.chains * p.restart_fraction)
        candidates = best_measured(self.observations, objective.device, restarts)
        candidates += self.chain_states.get(objective.key, [])
        starts: dict[Architecture, None] = {}
        for arch in candidates:
            if len(starts) == p.chains:
                break
            fixed = repair(self.space, arch, evaluator, self.rng)
            if fixed is not None:
                starts.setdefault(fixed)
        missing = p.chains - len(starts)
        if missing:
            count = max(missing, p.init_samples - len(starts))
            fresh = sample_feasible(self.space, evaluator, self.rng, count, set(starts))
            scores = evaluator.score(fresh)
            ranked = sorted(range(len(fresh)), key=lambda i: (-scores[i], i))
            starts.update(dict.fromkeys(fresh[i] for i in ranked[:missing]))
        return list(starts)

    def _neighbours(self, current: list[Architecture], evaluator: Evaluator) -> list[Architecture | None]:
        """Return a feasible neighbour per chain, or None where repair leads back to the chain's state."""
        p = self.params
        proposals: list[Architecture | None] = [None] * len(current)
        pending = list(range(len(current)))
        last: dict[int, Architecture] = {}
        for _ in range(p.proposal_retries):
            for i in pending:
                genes = int(self.rng.integers(1, p.max_genes + 1))
                last[i] = self.space.mutate(current[i], self.rng, num_genes=genes)
            feasible = evaluator.feasible([last[i] for i in pending])
            for i, ok in zip(pending, feasible):
                if ok:
                    proposals[i] = last[i]
            pending = [i for i, ok in zip(pending, feasible) if not ok]
            if not pending:
                break
        for i in pending:
            fixed = repair(self.space, last[i], evaluator, self.rng)
            proposals[i] = fixed if fixed is not None and fixed != current[i] else None
        return proposals

    def _memory_state(self) -> dict[str, Any]:
        return {
            "chain_states": {key: [a.to_dict() for a in archs] for key, archs in self.chain_states.items()},
            "asks_per_target": dict(self.asks_per_target),
            "recent_error": self.recent_error,
            "heat": self.heat,
        }

    def _load_memory(self, memory: Mapping[str, Any]) -> None:
        self.chain_states = {
            key: [self.space.validate(Architecture.from_dict(a)) for a in archs]
            for key, archs in memory["chain_states"].items()
        }
        self.asks_per_target = {key: int(count) for key, count in memory["asks_per_target"].items()}
        self.recent_error = None if memory["recent_error"] is None else float(memory["recent_error"])
        self.heat = float(memory["heat"])
