"""Report aggregation: from validated per-client candidate reports to one observation per (device, arch).

A report aggregator is any callable ``aggregator(results) -> list[AggregatedReport]``
taking the round's accepted :class:`~fl_server.validation.ClientResult` objects
(ordered by partition, then candidate id). Select one in the run config with
``report-aggregator = "package.module:name"``; ``name`` may be a function or a class
that is instantiated without arguments. Built-in names: ``weighted-median``
(default) and ``weighted-mean``.

Default rule (:func:`weighted_median`): clients that measured the same architecture
on the same device are merged. Accuracy and loss take the weighted median over
clients, weighted by each client's evaluation sample count. So one client with an
unusual data split or a corrupted model cannot drag the estimate far. Latency takes
the plain median over clients, because latency does not depend on how many samples
a client has. The weight of the merged observation is the summed sample count.

The median protects only where several clients measured the same architecture on the
same device, as in the final evaluation. Search rounds send every architecture to one
client per device, so :mod:`fl_server.outliers` screens those observations against
each other before they correct the surrogates.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from nas.errors import ApfpError, ReportError
from nas.search import Observation
from nas.space import Architecture
from fl_server.validation import ClientResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AggregatedReport:
    """One (device, architecture) result of a round: accuracy fraction, latency in ms, sample weight.

    ``partitions`` lists the partition ids of the clients merged into it (empty when an
    aggregator does not record them).
    """

    device: str
    arch: Architecture
    accuracy: float
    loss: float
    latency_ms: float
    pred_accuracy: float
    pred_latency_ms: float
    weight: float
    num_clients: int
    partitions: tuple[int, ...] = ()

    def to_observation(self) -> Observation:
        """Return the search-strategy view of this result."""
        return Observation(
            arch=self.arch, device=self.device, accuracy=self.accuracy, latency_ms=self.latency_ms,
            predicted_accuracy=self.pred_accuracy, predicted_latency_ms=self.pred_latency_ms, weight=self.weight,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device, "arch": self.arch.to_dict(), "accuracy": self.accuracy, "loss": self.loss,
            "latency_ms": self.latency_ms, "pred_accuracy": self.pred_accuracy,
            "pred_latency_ms": self.pred_latency_ms, "weight": self.weight, "num_clients": self.num_clients,
            "partitions": list(self.partitions),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AggregatedReport":
        return cls(**{**data, "arch": Architecture.from_dict(data["arch"]),
                      "partitions": tuple(data.get("partitions", ()))})


ReportAggregator = Callable[[Sequence[ClientResult]], list[AggregatedReport]]


def median_of(values: Sequence[float], weights: Sequence[float] | None = None) -> float:
    """Return the weighted median: the value where the cumulative weight reaches half the total.

    When the cumulative weight of the lower values is exactly half, the midpoint of the
    two middle values is returned, so equal weights give the ordinary median.
    """
    x = np.asarray(values, dtype=np.float64)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64)
    if x.size == 0 or x.shape != w.shape or np.any(w < 0) or w.sum() <= 0:
        raise ReportError(f"median_of needs matching non-empty values and weights >= 0, got {x.size} and {w.size}")
    order = np.argsort(x, kind="stable")
    x, w = x[order], w[order]
    cumulative = np.cumsum(w)
    half = 0.5 * cumulative[-1]
    index = int(np.searchsorted(cumulative, half))
    if np.isclose(cumulative[index], half) and index + 1 < x.size:
        return float(0.5 * (x[index] + x[index + 1]))
    return float(x[index])


def group_results(results: Sequence[ClientResult]) -> list[list[ClientResult]]:
    """Group results by (device, architecture), in order of first appearance."""
    groups: dict[tuple[str, Architecture], list[ClientResult]] = {}
    for result in results:
        groups.setdefault((result.device, result.arch), []).append(result)
    return list(groups.values())


def _merge(group: list[ClientResult], robust: bool) -> AggregatedReport:
    weights = np.array([r.report.num_eval for r in group], dtype=np.float64)

    def centre(name: str, weighted: bool = True) -> float:
        values = [getattr(r.report, name) for r in group]
        if robust:
            return median_of(values, weights if weighted else None)
        return float(np.average(values, weights=weights if weighted else None))

    first = group[0]
    return AggregatedReport(
        device=first.device, arch=first.arch, accuracy=centre("accuracy"), loss=centre("loss"),
        latency_ms=centre("latency_ms", weighted=False),
        pred_accuracy=float(np.mean([r.report.pred_accuracy for r in group])),
        pred_latency_ms=float(np.mean([r.report.pred_latency_ms for r in group])),
        weight=float(weights.sum()), num_clients=len(group),
        partitions=tuple(sorted({r.partition for r in group})),
    )


def weighted_median(results: Sequence[ClientResult]) -> list[AggregatedReport]:
    """Default aggregator: weighted medians per (device, arch); see the module docstring."""
    return [_merge(group, robust=True) for group in group_results(results)]


def weighted_mean(results: Sequence[ClientResult]) -> list[AggregatedReport]:
    """Sample-weighted means per (device, arch) (plain mean for latency); not robust to outliers."""
    return [_merge(group, robust=False) for group in group_results(results)]


BUILTIN_REPORT_AGGREGATORS: dict[str, ReportAggregator] = {
    "weighted-median": weighted_median,
    "weighted-mean": weighted_mean,
}


def load_object(spec: str, what: str) -> Any:
    """Import ``"package.module:attribute"`` and return the attribute; errors name ``spec``."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ReportError(f"{what} {spec!r} is invalid; use 'package.module:name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ReportError(f"{what} {spec!r}: module {module_name!r} cannot be imported ({error})") from None
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ReportError(f"{what} {spec!r}: {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    return target


def resolve_plugin(spec: Any, builtins: Mapping[str, Any], default: Any, kind: str) -> Any:
    """Return the callable named by ``spec``: None or "" (``default``), a callable, a name in
    ``builtins``, or a ``package.module:name`` import path (a class is instantiated).

    ``kind`` is the run-config key, used in log lines and errors.
    """
    if spec is None or spec == "":
        return default
    if callable(spec):
        return spec
    if spec in builtins:
        return builtins[spec]
    if ":" not in spec:
        raise ReportError(f"unknown {kind} {spec!r}; built-in names: {sorted(builtins)}, "
                          "or give 'package.module:name'")
    target = load_object(spec, kind)
    if isinstance(target, type):
        target = target()
    if not callable(target):
        raise ReportError(f"{kind} {spec!r} is not callable; give a function or a class with __call__")
    logger.info("%s: %s", kind, spec)
    return target


def resolve_report_aggregator(spec: str | ReportAggregator | None) -> ReportAggregator:
    """Return the aggregator for a built-in name, an import path, a callable, or None (default)."""
    return resolve_plugin(spec, BUILTIN_REPORT_AGGREGATORS, weighted_median, "report-aggregator")


def check_aggregated(reports: Any, space: Any, devices: Any) -> list[AggregatedReport]:
    """Return ``reports`` if an aggregator's output is a list of valid :class:`AggregatedReport`.

    Each report must hold an architecture of ``space``, a device in ``devices``, an
    accuracy in [0, 1], a latency > 0 ms and a weight > 0; otherwise
    :class:`ReportError` names the offending entry, so a faulty custom aggregator
    cannot feed the surrogates bad values.
    """
    if not isinstance(reports, list):
        raise ReportError(f"report aggregator returned {type(reports).__name__}; it must return a list")
    for position, report in enumerate(reports):
        if not isinstance(report, AggregatedReport):
            raise ReportError(f"report aggregator entry {position} is a {type(report).__name__}, not AggregatedReport")
        if report.device not in devices:
            raise ReportError(f"report aggregator entry {position} names unknown device {report.device!r}")
        try:
            space.validate(report.arch)
            report.to_observation()
        except ApfpError as error:
            raise ReportError(f"report aggregator entry {position} is invalid: {error}") from None
    return reports
