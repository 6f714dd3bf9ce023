"""Optuna's TPE or NSGA-II samplers over the same space, for comparison with the built-in strategies.

Optuna is an optional dependency (``pip install apfp-nas[bench]``) and is imported
only when this strategy's ``ask`` runs. Each ask runs a fresh in-memory study
seeded from the strategy's random generator and warm-started with the best
measured architectures on the device. So the strategy state stays small,
JSON-serializable and exactly reproducible.

Every block slot gets its own kernel and expand parameter, also where the sampled
depth leaves the slot inactive, so the parameter set is fixed (TPE models each
parameter independently). A trial over the latency budget is not scored by the
accuracy surrogate. Its score objective is ``-latency / budget`` instead, and it
reports a positive constraint violation to the sampler.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

from nas.errors import SearchError
from nas.search.base import SearchStrategy, register_strategy, require_int
from nas.search.evaluator import Evaluator
from nas.search.objective import best_measured
from nas.space import Architecture

__all__ = ["OptunaSearch", "OptunaParams"]

logger = logging.getLogger(__name__)

SAMPLERS = ("tpe", "nsga2")


@dataclass(frozen=True)
class OptunaParams:
    """Parameters of :class:`OptunaSearch`.

    Attributes:
        sampler: ``"tpe"`` (single objective: the surrogate score) or ``"nsga2"``
            (two objectives: maximize the score, minimize predicted latency).
        trials: Trials per ask; each feasible trial is one accuracy evaluation.
        startup_trials: Random trials before TPE starts modelling.
        population_size: NSGA-II population per generation.
        warm_start: Best measured architectures on the device enqueued as the first
            trials of every ask.
    """

    sampler: str = "tpe"
    trials: int = 200
    startup_trials: int = 20
    population_size: int = 30
    warm_start: int = 4

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise SearchError(f"sampler={self.sampler!r} is invalid; allowed values: {SAMPLERS}")
        require_int(self.trials, "trials", 1)
        require_int(self.startup_trials, "startup_trials", 1)
        require_int(self.population_size, "population_size", 2)
        require_int(self.warm_start, "warm_start", 0)


def _import_optuna() -> Any:
    try:
        import optuna
    except ImportError as error:
        raise ImportError(
            "the 'optuna' search strategy needs Optuna; install it with `pip install apfp-nas[bench]` "
            "or `pip install optuna`"
        ) from error
    return optuna


@register_strategy
class OptunaSearch(SearchStrategy):
    """Run an Optuna study on the surrogate score per ask (TPE or NSGA-II sampler)."""

    name = "optuna"
    params_type = OptunaParams

    @classmethod
    def params_for_evaluations(cls, evaluations: int) -> dict[str, Any]:
        """Return ``trials`` equal to ``evaluations``; trials over the budget are not scored."""
        require_int(evaluations, "evaluations", 1)
        return {"trials": evaluations, "startup_trials": max(1, min(20, evaluations // 5))}

    def _search(self, n: int, evaluator: Evaluator, exclude: frozenset[Architecture]) -> None:
        optuna = _import_optuna()
        p, objective = self.params, evaluator.objective
        seed = int(self.rng.integers(2**31 - 1))

        # Optuna 5 reads constraints set on the trial; older releases take a constraints_func.
        options: dict[str, Any] = {"seed": seed}
        if not hasattr(optuna.trial.Trial, "set_constraint"):
            options["constraints_func"] = lambda trial: (trial.user_attrs["violation_ms"],)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
            if p.sampler == "tpe":
                sampler = optuna.samplers.TPESampler(n_startup_trials=p.startup_trials, **options)
                directions = ["maximize"]
            else:
                sampler = optuna.samplers.NSGAIISampler(population_size=p.population_size, **options)
                directions = ["maximize", "minimize"]
            verbosity = optuna.logging.get_verbosity()
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            try:
                study = optuna.create_study(directions=directions, sampler=sampler)
                for arch in best_measured(self.observations, objective.device, p.warm_start):
                    study.enqueue_trial(self._params_of(arch))
                study.optimize(lambda trial: self._evaluate(trial, evaluator), n_trials=p.trials)
            finally:
                optuna.logging.set_verbosity(verbosity)

    def _evaluate(self, trial: Any, evaluator: Evaluator) -> float | tuple[float, float]:
        arch = self._suggest(trial)
        latency = float(evaluator.latency([arch])[0])
        budget = evaluator.objective.budget_ms
        if hasattr(trial, "set_constraint"):
            trial.set_constraint("latency_budget", latency - budget)
        else:
            trial.set_user_attr("violation_ms", latency - budget)
        score = float(evaluator.score([arch])[0]) if latency <= budget else -latency / budget
        return score if self.params.sampler == "tpe" else (score, latency)

    def _suggest(self, trial: Any) -> Architecture:
        space = self.space
        depths, kernels, expands = [], [], []
        for stage in range(space.num_stages):
            depth = trial.suggest_categorical(f"depth_{stage}", space.depth_choices)
            slot_kernels, slot_expands = [], []
            for i in range(space.max_depth):
                slot_kernels.append(trial.suggest_categorical(f"kernel_{stage}_{i}", space.kernel_choices))
                slot_expands.append(trial.suggest_categorical(f"expand_{stage}_{i}", space.expand_choices))
            depths.append(depth)
            kernels.append(tuple(slot_kernels[:depth]))
            expands.append(tuple(slot_expands[:depth]))
        return Architecture(tuple(depths), tuple(kernels), tuple(expands))

    def _params_of(self, arch: Architecture) -> dict[str, int]:
        """Return the trial parameters of ``arch``; inactive slots take the smallest choice."""
        params: dict[str, int] = {}
        for stage, depth in enumerate(arch.depths):
            params[f"depth_{stage}"] = depth
            for i in range(self.space.max_depth):
                active = i < depth
                params[f"kernel_{stage}_{i}"] = arch.kernels[stage][i] if active else self.space.kernel_choices[0]
                params[f"expand_{stage}_{i}"] = arch.expands[stage][i] if active else self.space.expand_choices[0]
        return params
