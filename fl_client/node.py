"""What a client knows about itself: its hardware profile, its partition and its private data.

Node config keys read by the ClientApp (``flower-supernode --node-config``):

* ``hw-profile``: built-in profile name or path to a profile TOML file. In a
  simulation, where Flower sets only ``partition-id`` and ``num-partitions``, the
  profile comes from the run config instead: ``device-profiles`` is a comma list and
  partition ``i`` takes entry ``i mod len(list)``.
* ``partition-id`` and ``num-partitions``: the share of the private dataset on this
  node (default 0 of 1: the whole private dataset).
* ``dataset`` and ``data-root`` (optional): override the dataset and the folder the
  server's message names, for a device whose data lives elsewhere.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, Mapping

from hw_profiles import HardwareProfile, load_profile
from nas.data import ClientData, load_dataset, partition
from nas.data.holdout import split_public_private
from nas.errors import DatasetError, ProfileError
from fl_server.messages import DataSpec

logger = logging.getLogger(__name__)


def partition_of(node_config: Mapping[str, Any]) -> tuple[int, int]:
    """Return ``(partition-id, num-partitions)`` from the node config, default ``(0, 1)``."""
    pid, count = node_config.get("partition-id", 0), node_config.get("num-partitions", 1)
    if not isinstance(pid, int) or not isinstance(count, int) or count < 1 or not 0 <= pid < count:
        raise DatasetError(
            f"node config partition-id={pid!r}, num-partitions={count!r} is invalid; "
            "use integers with 0 <= partition-id < num-partitions"
        )
    return pid, count


def resolve_profile(node_config: Mapping[str, Any], run_config: Mapping[str, Any]) -> HardwareProfile:
    """Return this node's hardware profile (node config ``hw-profile``, else run config by partition)."""
    name = node_config.get("hw-profile")
    if name is None:
        pid, _ = partition_of(node_config)
        names = [n.strip() for n in str(run_config.get("device-profiles", "")).split(",") if n.strip()]
        if not names:
            raise ProfileError(
                "this node has no hardware profile: set node config hw-profile (deployment) or the run "
                "config device-profiles (simulation, a comma list indexed by partition id)"
            )
        name = names[pid % len(names)]
    return load_profile(str(name))


def data_spec_for_node(spec: DataSpec, node_config: Mapping[str, Any]) -> DataSpec:
    """Apply the node config overrides ``dataset`` and ``data-root`` to the server's data spec."""
    changes = {}
    if "dataset" in node_config:
        changes["dataset"] = str(node_config["dataset"])
    if "data-root" in node_config:
        changes["data_root"] = str(node_config["data-root"])
    return dataclasses.replace(spec, **changes) if changes else spec


@functools.lru_cache(maxsize=4)
def load_private_data(spec: DataSpec, resolution: int, partition_id: int, num_partitions: int) -> ClientData:
    """Return this node's share of the private part of ``spec.dataset``, resized to ``resolution`` pixels.

    Deterministic for the spec, so every node of a federation cuts the same dataset the
    same way and keeps only its own partition. Cached per process.
    """
    splits = load_dataset(spec.dataset, root=spec.data_root or None, seed=spec.split_seed)
    if spec.private_fraction > 0:
        splits = split_public_private(splits, "private", private_fraction=spec.private_fraction, seed=spec.split_seed)
    splits = splits.resized(resolution)
    clients = partition(splits, num_partitions, scheme=spec.scheme, alpha=spec.alpha, seed=spec.partition_seed)
    data = clients[partition_id]
    logger.info(
        "partition %d/%d of %s: %d/%d/%d train/val/test samples", partition_id, num_partitions, splits.name,
        len(data.train), len(data.val), len(data.test),
    )
    return data
