"""Architecture search under latency budgets: strategies, round selection, Pareto utilities.

Nothing here imports Flower or the surrogate package. Surrogates enter as plain
callables through :class:`Objective` (or any object with ``predict(archs)`` through
:meth:`Objective.from_predictors`).
"""

from nas.search.base import (
    NoParams,
    SearchStrategy,
    available_strategies,
    create_strategy,
    get_strategy,
    register_strategy,
)
from nas.search.evaluator import Evaluator
from nas.search.feasibility import check_feasible
from nas.search.objective import Objective, Observation

# Importing the strategy modules registers the built-in strategies.
from nas.search.annealing import AnnealingParams, SimulatedAnnealing
from nas.search.evolution import EvolutionParams, RegularizedEvolution
from nas.search.optuna_search import OptunaParams, OptunaSearch
from nas.search.pareto import hypervolume_2d, non_dominated_sort, pareto_front_mask
from nas.search.random_search import RandomSearch, RandomSearchParams
from nas.search.recommend import Recommendation, recommend
from nas.search.selection import CandidateProposal, DeviceTarget, select_round_candidates

__all__ = [
    "AnnealingParams",
    "CandidateProposal",
    "DeviceTarget",
    "Evaluator",
    "EvolutionParams",
    "NoParams",
    "Objective",
    "Observation",
    "OptunaParams",
    "OptunaSearch",
    "RandomSearch",
    "RandomSearchParams",
    "Recommendation",
    "RegularizedEvolution",
    "SearchStrategy",
    "SimulatedAnnealing",
    "available_strategies",
    "check_feasible",
    "create_strategy",
    "get_strategy",
    "hypervolume_2d",
    "non_dominated_sort",
    "pareto_front_mask",
    "recommend",
    "register_strategy",
    "select_round_candidates",
]
