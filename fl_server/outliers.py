"""Outlier screening: keep implausible client reports out of the surrogate corrections.

In a search round every (device, architecture) is measured by one client only, because
the candidate selection never sends an architecture to two clients of one device. So
the weighted median across clients (:mod:`fl_server.report_aggregation`) cannot outvote
a lying client there, and the screen below judges each observation against all the
others. It works on residuals against the *base* (uncorrected) surrogates, so a flag
depends only on the observations, never on the order of rounds:

* accuracy: ``r = observed - base_accuracy(arch)``, pooled over all devices, because the
  client scores the PyTorch model and accuracy does not depend on the device;
* latency: ``r = log(observed_ms / base_latency_device(arch))``, pooled per device.

Two rules flag observations:

1. Extreme value: ``|r - median(r)| > EXTREME_Z * sigma`` with the robust scale
   ``sigma = 1.4826 * MAD(r)``, floored at :data:`SCALE_FLOOR` (accuracy: 2 points,
   latency: 5%). This catches a client that reports 10x latency on a device where other
   clients measure too.
2. Inconsistent client (accuracy only): each residual minus the median residual of its
   client gives ``e``. A client whose median ``|e|`` exceeds :data:`CLIENT_Z` times the
   median ``|e|`` over all clients is flagged with all its observations. This catches
   random accuracies, whose spread around their own median is far larger than the
   measurement noise of honest clients. A constant shift of all of a client's accuracies
   is not flagged, because a client with a different label mix shows the same pattern.

A rule applies only when its pool has at least :data:`MIN_POOL` observations from at
least :data:`MIN_CLIENTS` clients, since with fewer there is no majority to trust. Only
single-client observations (``num_clients == 1``) can be flagged by rule 2. Flagged
observations stay in the history and the checkpoint. They are only left out of the
corrections and the final recommendations.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from fl_server.report_aggregation import AggregatedReport

logger = logging.getLogger(__name__)

EXTREME_Z = 6.0
CLIENT_Z = 4.0
MIN_POOL = 6
MIN_CLIENTS = 3
MIN_CLIENT_OBSERVATIONS = 2
SCALE_FLOOR = {"accuracy": 0.02, "latency": 0.05}
_MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class Flag:
    """One observation left out of the corrections: its index, the rule and the reason."""

    index: int
    rule: str
    reason: str

    def to_dict(self, observation: AggregatedReport) -> dict[str, Any]:
        return {"device": observation.device, "arch": observation.arch.to_dict(),
                "partitions": list(observation.partitions), "rule": self.rule, "reason": self.reason}


def _robust_scale(values: np.ndarray, floor: float) -> tuple[float, float]:
    center = float(np.median(values))
    return center, max(_MAD_TO_SIGMA * float(np.median(np.abs(values - center))), floor)


def _owner(observation: AggregatedReport) -> int | None:
    return observation.partitions[0] if len(observation.partitions) == 1 else None


def _extreme(indices: list[int], residuals: np.ndarray, observations: Sequence[AggregatedReport],
             quantity: str, unit: str) -> list[Flag]:
    owners = {_owner(observations[i]) for i in indices} - {None}
    if len(indices) < MIN_POOL or len(owners) < MIN_CLIENTS:
        return []
    center, sigma = _robust_scale(residuals, SCALE_FLOOR[quantity])
    flags = []
    for i, r in zip(indices, residuals):
        if abs(r - center) > EXTREME_Z * sigma:
            flags.append(Flag(i, "extreme", f"{quantity} residual {r:+.3g}{unit} is {abs(r - center) / sigma:.1f} "
                                            f"robust sigmas from the median {center:+.3g}{unit}"))
    return flags


def _inconsistent_clients(residuals: np.ndarray, observations: Sequence[AggregatedReport]) -> list[Flag]:
    by_client: dict[int, list[int]] = {}
    for i, observation in enumerate(observations):
        owner = _owner(observation)
        if owner is not None:
            by_client.setdefault(owner, []).append(i)
    scored = {c: idx for c, idx in by_client.items() if len(idx) >= MIN_CLIENT_OBSERVATIONS}
    if len(scored) < MIN_CLIENTS or sum(len(idx) for idx in scored.values()) < MIN_POOL:
        return []
    spread = {c: np.abs(residuals[idx] - np.median(residuals[idx])) for c, idx in scored.items()}
    typical = max(float(np.median(np.concatenate(list(spread.values())))), SCALE_FLOOR["accuracy"] / 2)
    flags = []
    for client, deviations in sorted(spread.items()):
        score = float(np.median(deviations)) / typical
        if score > CLIENT_Z:
            reason = (f"accuracies of partition {client} scatter {score:.1f}x more around their own median than "
                      f"those of the other clients")
            flags.extend(Flag(i, "inconsistent-client", reason) for i in scored[client])
    return flags


def screen_observations(
    observations: Sequence[AggregatedReport], base_accuracy: Any, base_latency: Mapping[str, Any]
) -> list[Flag]:
    """Return the flags of the observations to leave out of the corrections (see the module docstring)."""
    if not observations:
        return []
    predicted = np.asarray(base_accuracy.predict([o.arch for o in observations]).mean, dtype=np.float64)
    accuracy = np.array([o.accuracy for o in observations], dtype=np.float64) - predicted
    everyone = list(range(len(observations)))
    flags = _extreme(everyone, accuracy, observations, "accuracy", "")
    flags += _inconsistent_clients(accuracy, observations)
    for device in sorted({o.device for o in observations}):
        mine = [i for i in everyone if observations[i].device == device]
        if device not in base_latency or len(mine) < MIN_POOL:
            continue
        guess = np.asarray(base_latency[device].predict([observations[i].arch for i in mine]).mean, np.float64)
        measured = np.array([observations[i].latency_ms for i in mine], dtype=np.float64)
        flags += _extreme(mine, np.log(measured / guess), observations, "latency", " (log ms)")
    unique: dict[int, Flag] = {}
    for flag in flags:
        unique.setdefault(flag.index, flag)
    return [unique[i] for i in sorted(unique)]


def split_flagged(
    observations: Sequence[AggregatedReport], flags: Sequence[Flag]
) -> tuple[list[AggregatedReport], list[dict[str, Any]]]:
    """Return the kept observations and a JSON-ready description of the flagged ones."""
    flagged = {flag.index for flag in flags}
    kept = [o for i, o in enumerate(observations) if i not in flagged]
    return kept, [flag.to_dict(observations[flag.index]) for flag in flags]
