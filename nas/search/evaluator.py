"""Per-call cache of an objective's predictions, with checks on what the predictors return.

A strategy that revisits an architecture within one ask does not query the
surrogates twice, and a predictor that returns the wrong number of values,
non-finite values or negative latencies raises :class:`SearchError` naming it.
"""

from __future__ import annotations

import math
from typing import Any, Collection, Sequence

import numpy as np

from nas.errors import SearchError
from nas.search.objective import Objective
from nas.space import Architecture

__all__ = ["Evaluator"]


def _as_vector(values: Any, count: int, what: str) -> np.ndarray:
    """Return ``values`` as a finite float64 vector of length ``count`` or raise naming ``what``."""
    try:
        array = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as error:
        raise SearchError(f"{what} returned values that are not numbers: {error}") from error
    if array.shape != (count,):
        raise SearchError(
            f"{what} returned {array.size} values for {count} architectures; return one per architecture"
        )
    if not np.all(np.isfinite(array)):
        raise SearchError(f"{what} returned non-finite values {array[~np.isfinite(array)][:5].tolist()}")
    return array


class Evaluator:
    """Per-call cache of an objective's predictions.

    Latency is cheap to predict and is queried for every proposal. Accuracy is
    queried only for architectures within the budget; :attr:`accuracy_evaluations`
    counts the distinct architectures scored, the search cost that benchmarks compare.
    """

    def __init__(self, objective: Objective) -> None:
        self.objective = objective
        self._latency: dict[Architecture, float] = {}
        self._mean: dict[Architecture, float] = {}
        self._std: dict[Architecture, float] = {}

    @property
    def accuracy_evaluations(self) -> int:
        return len(self._mean)

    def latency(self, archs: Sequence[Architecture]) -> np.ndarray:
        """Return the predicted latency in ms of every architecture (cached)."""
        missing = list(dict.fromkeys(a for a in archs if a not in self._latency))
        if missing:
            values = _as_vector(self.objective.predict_latency(missing), len(missing), "predict_latency")
            if np.any(values < 0):
                negative = values[values < 0][:5].tolist()
                raise SearchError(f"predict_latency returned negative latencies {negative} ms")
            self._latency.update(zip(missing, values.tolist()))
        return np.array([self._latency[a] for a in archs], dtype=np.float64)

    def feasible(self, archs: Sequence[Architecture]) -> np.ndarray:
        """Return a boolean mask: predicted latency <= budget."""
        return self.latency(archs) <= self.objective.budget_ms

    def predict(self, archs: Sequence[Architecture]) -> tuple[np.ndarray, np.ndarray]:
        """Return the predicted accuracy ``(mean, std)`` of every architecture (cached)."""
        missing = list(dict.fromkeys(a for a in archs if a not in self._mean))
        if missing:
            mean, std = self.objective.predict_accuracy(missing)
            mean = _as_vector(mean, len(missing), "predict_accuracy mean")
            std = _as_vector(std, len(missing), "predict_accuracy std")
            if np.any(std < 0):
                negative = std[std < 0][:5].tolist()
                raise SearchError(f"predict_accuracy returned negative standard deviations {negative}")
            self._mean.update(zip(missing, mean.tolist()))
            self._std.update(zip(missing, std.tolist()))
        return (
            np.array([self._mean[a] for a in archs], dtype=np.float64),
            np.array([self._std[a] for a in archs], dtype=np.float64),
        )

    def score(self, archs: Sequence[Architecture]) -> np.ndarray:
        """Return ``mean + uncertainty_weight * std`` of every architecture (cached)."""
        mean, std = self.predict(archs)
        return mean + self.objective.uncertainty_weight * std

    def best(self, n: int, exclude: Collection[Architecture] = ()) -> list[Architecture]:
        """Return up to ``n`` scored, feasible architectures not in ``exclude``, best first.

        Ties in score go to the lower predicted latency, then to the architecture
        scored first, so the order is deterministic.
        """
        order = []
        for position, arch in enumerate(self._mean):
            if arch in exclude or self._latency.get(arch, math.inf) > self.objective.budget_ms:
                continue
            score = self._mean[arch] + self.objective.uncertainty_weight * self._std[arch]
            order.append((-score, self._latency[arch], position, arch))
        order.sort(key=lambda item: item[:3])
        return [item[3] for item in order[:n]]
