"""The recommendation table: the best architecture for every (device, latency budget).

Measured results win over predictions: for each (device, budget) the table takes
the architecture with the best observed accuracy among those whose observed
latency on that device meets the budget with a safety margin, because a second
measurement on the same device can come out slower than the first. Only where no
measured architecture fits does it fall back to the surrogates, searching for the
best predicted accuracy (no uncertainty bonus) under the predicted-latency budget.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from nas.errors import SearchError
from nas.search.annealing import SimulatedAnnealing
from nas.search.base import SearchStrategy
from nas.search.evaluator import Evaluator
from nas.search.objective import MeasuredArch, Objective, Observation, summarize_observations
from nas.space import Architecture, SearchSpace

__all__ = ["Recommendation", "recommend", "SOURCES", "DEFAULT_LATENCY_MARGIN"]

logger = logging.getLogger(__name__)

SOURCES = ("observed", "surrogate")

#: Default safety margin of the observed choice, a fraction of the measured latency:
#: 0.1 keeps a recommendation within its budget when the device measures it up to
#: 10% slower next time (the re-measurement spread of small subnets on shared CPUs).
DEFAULT_LATENCY_MARGIN = 0.1


@dataclass(frozen=True)
class Recommendation:
    """The architecture recommended for one (device, budget), with predicted and observed values.

    ``source`` is ``"observed"`` when measured results chose it (then the
    ``observed_*`` fields are set) and ``"surrogate"`` when the surrogates did (then
    they are None). Accuracies are fractions in [0, 1], latencies in ms.
    """

    device: str
    budget_ms: float
    arch: Architecture
    source: str
    predicted_accuracy: float
    predicted_latency_ms: float
    observed_accuracy: float | None = None
    observed_latency_ms: float | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise SearchError(f"recommendation source={self.source!r} is invalid; allowed values: {SOURCES}")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["arch"] = self.arch.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Recommendation":
        fields = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, Mapping) or set(data) != fields:
            raise SearchError(f"recommendation must be an object with exactly the keys {sorted(fields)}")
        values = dict(data)
        values["arch"] = Architecture.from_dict(data["arch"])
        return cls(**values)


ObjectiveFactory = Callable[[str, float], Objective]


def recommend(
    space: SearchSpace,
    devices: Mapping[str, Sequence[float]],
    observations: Sequence[Observation],
    objective_factory: ObjectiveFactory,
    *,
    strategy: SearchStrategy | None = None,
    latency_margin: float = DEFAULT_LATENCY_MARGIN,
) -> list[Recommendation]:
    """Return one recommendation per (device, budget), devices in mapping order, budgets ascending.

    ``devices`` maps a device name to its budgets in ms. ``objective_factory(device,
    budget_ms)`` returns that device's :class:`Objective` under the final surrogates;
    its uncertainty weight is replaced by 0 here, because a recommendation exploits
    rather than explores.

    Observed choice: observations are merged per (device, architecture) (weighted
    mean accuracy, median latency). Among merged results with
    ``latency * (1 + latency_margin) <= budget``, the highest accuracy wins. Ties go
    to the lower observed latency, then to the larger total weight, then to the
    architecture observed first. Where no result fits with the margin, the same rule
    runs without it (an observed fit beats a predicted one).

    Surrogate choice: ``strategy.ask(1, ...)`` under the budget. The default is a
    fresh seed-0 :class:`~nas.search.annealing.SimulatedAnnealing` that has received
    all ``observations`` through ``tell``, so its chains start from the best measured
    architectures. Its ties go to the lower predicted latency. Raises
    :class:`SearchError` if a budget is below the fastest predicted latency of the
    device.
    """
    if not isinstance(latency_margin, (int, float)) or not 0.0 <= latency_margin < 1.0:
        raise SearchError(f"latency_margin={latency_margin!r} is invalid; use a fraction in [0, 1), e.g. 0.1")
    merged = summarize_observations(observations)
    for measured in merged:
        space.validate(measured.arch)
    if strategy is None:
        strategy = SimulatedAnnealing(space, seed=0)
        strategy.tell(observations)

    table: list[Recommendation] = []
    for device, budgets in devices.items():
        on_device = [m for m in merged if m.device == device]
        for budget in sorted({float(b) for b in budgets}):
            objective = dataclasses.replace(objective_factory(device, budget), uncertainty_weight=0.0)
            if objective.device != device or objective.budget_ms != budget:
                raise SearchError(
                    f"objective_factory({device!r}, {budget:g}) returned an objective for "
                    f"{objective.device!r} at {objective.budget_ms:g} ms; return one for the requested pair"
                )
            table.append(_recommend_one(space, on_device, objective, strategy, float(latency_margin)))
    return table


def _recommend_one(
    space: SearchSpace, on_device: list[MeasuredArch], objective: Objective, strategy: SearchStrategy,
    latency_margin: float,
) -> Recommendation:
    fitting = [m for m in on_device if m.latency_ms * (1.0 + latency_margin) <= objective.budget_ms]
    if not fitting:
        fitting = [m for m in on_device if m.latency_ms <= objective.budget_ms]
        if fitting and latency_margin > 0:
            logger.warning(
                "no measured architecture fits %s with the %g%% latency margin; recommending one within the plain "
                "budget, which a slower re-measurement may exceed", objective.key, 100 * latency_margin,
            )
    fitting.sort(key=lambda m: (-m.accuracy, m.latency_ms, -m.weight))
    evaluator = Evaluator(objective)
    if fitting:
        best = fitting[0]
        mean, _ = evaluator.predict([best.arch])
        latency = evaluator.latency([best.arch])
        return Recommendation(
            objective.device, objective.budget_ms, best.arch, "observed",
            float(mean[0]), float(latency[0]), best.accuracy, best.latency_ms,
        )
    proposals = strategy.ask(1, objective)
    if not proposals:
        raise SearchError(
            f"no architecture found within {objective.budget_ms:g} ms on device {objective.device!r}; "
            f"raise the budget"
        )
    mean, _ = evaluator.predict(proposals)
    latency = evaluator.latency(proposals)
    logger.info(
        "no measured architecture fits %s; recommending the surrogate's choice %s", objective.key, proposals[0]
    )
    return Recommendation(
        objective.device, objective.budget_ms, proposals[0], "surrogate", float(mean[0]), float(latency[0])
    )
