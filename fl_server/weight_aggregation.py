"""Weight aggregation: merging the subnets that clients trained back into the supernet.

Used only in the ``weights`` privacy mode. A weight aggregator is any callable
``aggregator(supernet, updates) -> state_dict`` that returns the new supernet state
dict (``torch.Tensor`` values, the supernet's keys, shapes and dtypes) from the
current supernet and the round's :class:`WeightUpdate` objects. Select one in the
run config with ``weight-aggregator = "package.module:name"`` (a function, or a
class instantiated without arguments); the built-in ``masked-fedavg`` is the default.

Clients train different subnets, so their weights have different shapes and Flower's
key-by-key FedAvg does not apply. Masked FedAvg maps every subnet tensor to the
supernet slice it came from (:meth:`nas.supernet.ElasticSupernet.subnet_index`) and
averages each supernet entry only over the updates that contain it, weighted by
their training sample counts. Entries that no update contains keep their value.
Integer buffers (BatchNorm batch counters) take the largest value seen.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from nas.errors import ReportError
from nas.space import Architecture
from nas.supernet import ElasticSupernet
from fl_server.report_aggregation import resolve_plugin

logger = logging.getLogger(__name__)

Contribution = tuple[tuple[slice, ...], torch.Tensor, float]


@dataclass(frozen=True)
class WeightUpdate:
    """The trained state dict of one subnet from one client, with its training sample count."""

    arch: Architecture
    state: Mapping[str, np.ndarray]
    num_examples: float
    node_id: int = 0


WeightAggregator = Callable[[ElasticSupernet, Sequence[WeightUpdate]], dict[str, torch.Tensor]]


def masked_average(current: torch.Tensor, contributions: Sequence[Contribution]) -> torch.Tensor:
    """Return ``current`` with every entry replaced by the weighted mean of the contributions covering it.

    Each contribution is ``(index, value, weight)``: ``current[index]`` has ``value``'s
    shape. Floating tensors are averaged (weights > 0); integer tensors keep the
    maximum of ``current`` and the values. Uncovered entries are returned unchanged.
    """
    if not contributions:
        return current.clone()
    if not current.is_floating_point():
        result = current.clone()
        for index, value, _ in contributions:
            result[index] = torch.maximum(result[index], value.to(current.dtype))
        return result
    total = torch.zeros_like(current, dtype=torch.float64)
    weight_sum = torch.zeros_like(current, dtype=torch.float64)
    for index, value, weight in contributions:
        if not weight > 0:
            raise ReportError(f"contribution weight {weight!r} is invalid; use a positive sample count")
        total[index] += weight * value.to(torch.float64)
        weight_sum[index] += weight
    covered = weight_sum > 0
    result = current.clone()
    result[covered] = (total[covered] / weight_sum[covered]).to(current.dtype)
    return result


def masked_fedavg(supernet: ElasticSupernet, updates: Sequence[WeightUpdate]) -> dict[str, torch.Tensor]:
    """Default aggregator: masked, sample-weighted FedAvg of subnet updates into the supernet state."""
    state = supernet.state_dict()
    contributions: dict[str, list[Contribution]] = {}
    for update in updates:
        index = supernet.subnet_index(update.arch)
        missing = sorted(set(index) - set(update.state))
        if missing:
            raise ReportError(f"update from node {update.node_id} for {update.arch} lacks weights {missing[:3]}")
        for key, (super_key, slices) in index.items():
            value = torch.as_tensor(np.asarray(update.state[key]))
            target_shape = tuple(state[super_key][slices].shape)
            if tuple(value.shape) != target_shape:
                raise ReportError(
                    f"update from node {update.node_id}: weight {key!r} has shape {tuple(value.shape)}, "
                    f"expected {target_shape}"
                )
            contributions.setdefault(super_key, []).append((slices, value, float(update.num_examples)))
    merged = {}
    for key, tensor in state.items():
        merged[key] = masked_average(tensor.detach(), contributions.get(key, []))
    covered = sum(1 for key in contributions)
    logger.info("masked FedAvg merged %d updates into %d of %d supernet tensors", len(updates), covered, len(state))
    return merged


BUILTIN_WEIGHT_AGGREGATORS: dict[str, WeightAggregator] = {"masked-fedavg": masked_fedavg}


def resolve_weight_aggregator(spec: str | WeightAggregator | None) -> WeightAggregator:
    """Return the aggregator for a built-in name, an import path, a callable, or None (default)."""
    return resolve_plugin(spec, BUILTIN_WEIGHT_AGGREGATORS, masked_fedavg, "weight-aggregator")


def check_merged_state(supernet: ElasticSupernet, merged: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise :class:`ReportError` unless ``merged`` fits the supernet exactly and is finite."""
    state = supernet.state_dict()
    if not isinstance(merged, Mapping) or set(merged) != set(state):
        keys = set(merged) if isinstance(merged, Mapping) else set()
        raise ReportError(
            f"weight aggregator {source} returned keys that differ from the supernet's: missing "
            f"{sorted(set(state) - keys)[:3]}, unexpected {sorted(keys - set(state))[:3]}"
        )
    for key, tensor in state.items():
        value = merged[key]
        if not isinstance(value, torch.Tensor) or value.shape != tensor.shape or value.dtype != tensor.dtype:
            raise ReportError(f"weight aggregator {source} returned {key!r} with the wrong type, shape or dtype")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise ReportError(f"weight aggregator {source} returned non-finite values in {key!r}")
