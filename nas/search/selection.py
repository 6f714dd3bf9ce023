"""Choose the candidate architectures each client of a federation round trains and measures.

For every device in the round, the candidates of its clients are spread over the
device's latency budgets and searched per budget with the strategy under the
current surrogates. The picks are made diverse and de-duplicated. No architecture
goes to two clients of the same device in one round, and none that was already
measured on the device is proposed again.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Collection, Hashable, Mapping, Sequence

from nas.errors import SearchError
from nas.search.base import SearchStrategy, require_int
from nas.search.evaluator import Evaluator
from nas.search.objective import AccuracyFn, LatencyFn, Objective
from nas.space import Architecture, SearchSpace

__all__ = ["DeviceTarget", "CandidateProposal", "select_round_candidates", "diverse_subset"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceTarget:
    """A device of the federation: its name, latency budgets in ms, and latency predictor.

    ``budgets_ms`` is stored sorted ascending without duplicates.
    ``predict_latency(archs)`` returns predicted latencies in ms on this device.
    """

    name: str
    budgets_ms: tuple[float, ...]
    predict_latency: LatencyFn

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise SearchError(f"device name={self.name!r} is invalid; use the hardware profile name")
        budgets = [float(b) for b in self.budgets_ms]
        if not budgets or any(not math.isfinite(b) or b <= 0 for b in budgets):
            raise SearchError(
                f"device {self.name!r} budgets_ms={list(self.budgets_ms)!r} are invalid; "
                f"give positive latencies in ms"
            )
        if not callable(self.predict_latency):
            raise SearchError(f"device {self.name!r} predict_latency must be a callable taking architectures")
        object.__setattr__(self, "budgets_ms", tuple(sorted(set(budgets))))


@dataclass(frozen=True)
class CandidateProposal:
    """One architecture sent to one client, with the surrogate predictions that chose it.

    ``budget_ms`` is the budget it was searched under; ``predicted_latency_ms`` is at
    most that budget. Accuracies are fractions in [0, 1].
    """

    arch: Architecture
    device: str
    budget_ms: float
    predicted_accuracy: float
    predicted_std: float
    predicted_latency_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch.to_dict(),
            "device": self.device,
            "budget_ms": self.budget_ms,
            "predicted_accuracy": self.predicted_accuracy,
            "predicted_std": self.predicted_std,
            "predicted_latency_ms": self.predicted_latency_ms,
        }


def diverse_subset(
    space: SearchSpace, ranked: Sequence[Architecture], count: int, min_distance: int
) -> list[Architecture]:
    """Pick ``count`` architectures from the best-first list ``ranked``, preferring diverse ones.

    A first pass keeps an architecture only if its encoding differs from every kept
    one in at least ``min_distance`` positions (Hamming distance). If that keeps
    fewer than ``count``, the skipped ones fill the rest in rank order.
    """
    encodings = {arch: space.encode(arch) for arch in ranked}
    kept: list[Architecture] = []
    for arch in ranked:
        if len(kept) == count:
            return kept
        if all(sum(a != b for a, b in zip(encodings[arch], encodings[other])) >= min_distance for other in kept):
            kept.append(arch)
    kept += [arch for arch in ranked if arch not in kept][: count - len(kept)]
    return kept


def select_round_candidates(
    strategy: SearchStrategy,
    space: SearchSpace,
    devices: Mapping[str, DeviceTarget],
    clients: Sequence[tuple[Hashable, str]],
    k: int,
    measured: Mapping[str, Collection[Architecture]] | None = None,
    *,
    predict_accuracy: AccuracyFn,
    uncertainty_weight: float = 0.5,
    pool_factor: int = 3,
    min_distance: int = 2,
) -> dict[Hashable, list[CandidateProposal]]:
    """Return up to ``k`` candidates per client, keyed by client key, in the order of ``clients``.

    ``clients`` lists ``(client_key, device_name)`` pairs. A device's clients cycle
    through its budgets (round robin): candidate ``i`` of the ``j``-th client of the
    device is searched under budget ``(j * k + i) mod len(budgets)``. Per budget the
    strategy's ``ask`` requests ``pool_factor`` times the needed count, and
    :func:`diverse_subset` picks from that pool. Candidates are distinct across all
    clients of one device in the round and exclude ``measured[device]``. A client
    gets fewer than ``k`` only if the search runs out of feasible architectures.

    Raises :class:`SearchError` for an unknown device, a space that is not the
    strategy's, or a budget below the fastest architecture (naming the budget, the
    device and the fastest predicted latency).
    """
    require_int(k, "k", 1)
    require_int(pool_factor, "pool_factor", 1)
    require_int(min_distance, "min_distance", 0)
    if strategy.space.fingerprint() != space.fingerprint():
        raise SearchError(
            f"strategy searches space {strategy.space.fingerprint()!r}, not {space.fingerprint()!r}; "
            f"build the strategy on the run's space"
        )
    measured = {} if measured is None else measured
    by_device: dict[str, list[Hashable]] = {}
    seen: set[Hashable] = set()
    for client, device in clients:
        if device not in devices:
            raise SearchError(f"client {client!r} has unknown device {device!r}; known devices: {sorted(devices)}")
        if client in seen:
            raise SearchError(f"client {client!r} is listed twice; give each client once")
        seen.add(client)
        by_device.setdefault(device, []).append(client)

    result: dict[Hashable, list[CandidateProposal]] = {client: [] for client, _ in clients}
    for device_name, device_clients in by_device.items():
        target = devices[device_name]
        if target.name != device_name:
            raise SearchError(
                f"devices[{device_name!r}] contains a target named {target.name!r}; key each target by its name"
            )
        budgets = target.budgets_ms
        slots = {(j, i): budgets[(j * k + i) % len(budgets)] for j in range(len(device_clients)) for i in range(k)}
        taken: set[Architecture] = set(measured.get(device_name, ()))
        queues: dict[float, list[CandidateProposal]] = {}
        for budget in budgets:
            needed = sum(1 for b in slots.values() if b == budget)
            if needed == 0:
                continue
            objective = Objective(
                predict_accuracy, target.predict_latency, budget, device_name, uncertainty_weight
            )
            pool = strategy.ask(needed * pool_factor, objective, exclude=taken)
            picks = diverse_subset(space, pool, needed, min_distance)
            taken.update(picks)
            queues[budget] = _proposals(picks, objective)
            if len(picks) < needed:
                logger.warning(
                    "only %d of %d candidates found for device %r at budget %g ms",
                    len(picks), needed, device_name, budget,
                )
        for (j, _), budget in slots.items():
            if queues[budget]:
                result[device_clients[j]].append(queues[budget].pop(0))
    return result


def _proposals(archs: list[Architecture], objective: Objective) -> list[CandidateProposal]:
    if not archs:
        return []
    evaluator = Evaluator(objective)
    mean, std = evaluator.predict(archs)
    latency = evaluator.latency(archs)
    return [
        CandidateProposal(a, objective.device, objective.budget_ms, float(m), float(s), float(l))
        for a, m, s, l in zip(archs, mean, std, latency)
    ]
