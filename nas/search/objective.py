"""Search objective and measured observations.

:class:`Objective` bundles the surrogate predictions a strategy scores architectures
with (accuracy mean and standard deviation, latency in ms) and the constraint
(latency budget on one device). :class:`Observation` is one measured result fed back
to a strategy.

The predictors are plain callables, so this package never imports the surrogate
package. :meth:`Objective.from_predictors` adapts any object with a
``predict(archs)`` method (duck typing). :func:`summarize_observations` merges
repeated measurements of one architecture on one device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from nas.errors import SearchError
from nas.space import Architecture

AccuracyFn = Callable[[Sequence[Architecture]], "tuple[np.ndarray, np.ndarray]"]
LatencyFn = Callable[[Sequence[Architecture]], np.ndarray]

__all__ = ["Objective", "Observation", "MeasuredArch", "summarize_observations", "best_measured"]


def _prediction_parts(result: Any) -> tuple[Any, Any]:
    """Split a predictor result into ``(mean, std)``; ``std`` is None when the result has none."""
    mean = getattr(result, "mean", None)
    if mean is not None and not callable(mean):
        return mean, getattr(result, "std", None)
    if isinstance(result, tuple) and len(result) == 2:
        return result
    return result, None


@dataclass(frozen=True)
class Objective:
    """Surrogate predictions and latency constraint for one (device, budget).

    ``predict_accuracy(archs)`` returns ``(mean, std)`` arrays in accuracy units
    (fraction correct, 0 to 1); ``predict_latency(archs)`` returns latencies in ms on
    ``device``. A strategy maximizes ``mean + uncertainty_weight * std`` over the
    architectures whose predicted latency is at most ``budget_ms``.
    """

    predict_accuracy: AccuracyFn
    predict_latency: LatencyFn
    budget_ms: float
    device: str
    uncertainty_weight: float = 0.5

    def __post_init__(self) -> None:
        if not callable(self.predict_accuracy) or not callable(self.predict_latency):
            raise SearchError(
                "predict_accuracy and predict_latency must be callables taking a list of architectures"
            )
        budget = float(self.budget_ms)
        if not math.isfinite(budget) or budget <= 0:
            raise SearchError(f"budget_ms={self.budget_ms!r} is invalid; use a positive latency in ms")
        weight = float(self.uncertainty_weight)
        if not math.isfinite(weight) or weight < 0:
            raise SearchError(f"uncertainty_weight={self.uncertainty_weight!r} is invalid; use a number >= 0")
        if not isinstance(self.device, str) or not self.device:
            raise SearchError(f"device={self.device!r} is invalid; use the hardware profile name")
        object.__setattr__(self, "budget_ms", budget)
        object.__setattr__(self, "uncertainty_weight", weight)

    @classmethod
    def from_predictors(
        cls,
        accuracy_predictor: Any,
        latency_predictor: Any,
        budget_ms: float,
        device: str,
        uncertainty_weight: float = 0.5,
    ) -> "Objective":
        """Build an objective from objects with ``predict(archs)``.

        ``predict`` may return an object with ``.mean`` and ``.std`` attributes (the
        surrogate package's prediction type), a ``(mean, std)`` tuple, or a plain array
        (then the standard deviation is taken as 0).
        """
        named = (("accuracy_predictor", accuracy_predictor), ("latency_predictor", latency_predictor))
        for name, predictor in named:
            if not callable(getattr(predictor, "predict", None)):
                raise SearchError(f"{name} of type {type(predictor).__name__} has no predict(archs) method")

        def predict_accuracy(archs: Sequence[Architecture]) -> tuple[np.ndarray, np.ndarray]:
            mean, std = _prediction_parts(accuracy_predictor.predict(list(archs)))
            mean = np.asarray(mean, dtype=np.float64)
            std = np.zeros_like(mean) if std is None else np.asarray(std, dtype=np.float64)
            return mean, std

        def predict_latency(archs: Sequence[Architecture]) -> np.ndarray:
            mean, _ = _prediction_parts(latency_predictor.predict(list(archs)))
            return np.asarray(mean, dtype=np.float64)

        return cls(predict_accuracy, predict_latency, budget_ms, device, uncertainty_weight)

    @property
    def key(self) -> str:
        """Stable text id of the (device, budget) pair, used to key per-target search memory."""
        return f"{self.device}@{self.budget_ms!r}ms"


@dataclass(frozen=True)
class Observation:
    """One measured result: ``arch`` trained and evaluated on clients of ``device``.

    ``accuracy`` is a fraction in [0, 1] and ``latency_ms`` the measured latency in ms.
    The ``predicted_*`` fields contain the surrogate predictions for the same
    architecture made before the measurement (None if unknown). ``weight`` is the
    evidence behind the result, for example the number of validation samples.
    """

    arch: Architecture
    device: str
    accuracy: float
    latency_ms: float
    predicted_accuracy: float | None = None
    predicted_latency_ms: float | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.arch, Architecture):
            raise SearchError(f"observation arch must be an Architecture, got {type(self.arch).__name__}")
        if not isinstance(self.device, str) or not self.device:
            raise SearchError(f"observation device={self.device!r} is invalid; use the hardware profile name")
        accuracy = _finite(self.accuracy, "accuracy")
        if not 0.0 <= accuracy <= 1.0:
            raise SearchError(f"observation accuracy={accuracy!r} is out of range; use a fraction in [0, 1]")
        latency = _finite(self.latency_ms, "latency_ms")
        if latency <= 0:
            raise SearchError(f"observation latency_ms={latency!r} is invalid; use a positive latency in ms")
        weight = _finite(self.weight, "weight")
        if weight <= 0:
            raise SearchError(f"observation weight={weight!r} is invalid; use a positive number")
        object.__setattr__(self, "accuracy", accuracy)
        object.__setattr__(self, "latency_ms", latency)
        object.__setattr__(self, "weight", weight)
        for field in ("predicted_accuracy", "predicted_latency_ms"):
            value = getattr(self, field)
            if value is not None:
                object.__setattr__(self, field, _finite(value, field))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable dict that :meth:`from_dict` reads back exactly."""
        return {
            "arch": self.arch.to_dict(),
            "device": self.device,
            "accuracy": self.accuracy,
            "latency_ms": self.latency_ms,
            "predicted_accuracy": self.predicted_accuracy,
            "predicted_latency_ms": self.predicted_latency_ms,
            "weight": self.weight,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Observation":
        """Parse :meth:`to_dict` output; missing or unknown keys raise :class:`SearchError`."""
        required = {"arch", "device", "accuracy", "latency_ms"}
        allowed = required | {"predicted_accuracy", "predicted_latency_ms", "weight"}
        if not isinstance(data, Mapping):
            raise SearchError(f"observation must be a JSON object, got {type(data).__name__}")
        missing, unknown = required - set(data), set(data) - allowed
        if missing or unknown:
            raise SearchError(
                f"observation keys are invalid: missing {sorted(missing)}, unknown {sorted(unknown)}; "
                f"allowed keys: {sorted(allowed)}"
            )
        fields = dict(data)
        fields["arch"] = Architecture.from_dict(data["arch"])
        return cls(**fields)


def _finite(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise SearchError(f"observation {name}={value!r} is not a number") from error
    if not math.isfinite(number):
        raise SearchError(f"observation {name}={value!r} is not finite")
    return number


@dataclass(frozen=True)
class MeasuredArch:
    """All observations of one architecture on one device, merged.

    ``accuracy`` is the weight-averaged observed accuracy, ``latency_ms`` the median
    observed latency (robust to one slow measurement), ``weight`` the summed weight
    and ``count`` the number of observations merged.
    """

    arch: Architecture
    device: str
    accuracy: float
    latency_ms: float
    weight: float
    count: int


def summarize_observations(observations: Sequence[Observation]) -> list[MeasuredArch]:
    """Merge observations per (device, architecture), in order of first appearance."""
    groups: dict[tuple[str, Architecture], list[Observation]] = {}
    for observation in observations:
        groups.setdefault((observation.device, observation.arch), []).append(observation)
    merged = []
    for (device, arch), group in groups.items():
        weights = np.array([o.weight for o in group])
        accuracy = float(np.dot(weights, [o.accuracy for o in group]) / weights.sum())
        latency = float(np.median([o.latency_ms for o in group]))
        merged.append(MeasuredArch(arch, device, accuracy, latency, float(weights.sum()), len(group)))
    return merged


def best_measured(observations: Sequence[Observation], device: str, limit: int) -> list[Architecture]:
    """Return up to ``limit`` architectures measured on ``device``, highest observed accuracy first.

    Ties go to the lower observed latency, then to the earlier observation.
    """
    merged = [m for m in summarize_observations(observations) if m.device == device]
    merged.sort(key=lambda m: (-m.accuracy, m.latency_ms))
    return [m.arch for m in merged[:limit]]
