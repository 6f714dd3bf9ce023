"""Datasets and federated partitioning for APFP-NAS.

Load a dataset by name with :func:`load_dataset` (``digits``, ``medmnist:<flag>``,
``npz:<path>``, ``imagefolder:<path>``, ``cifar10``, or a name added with
:func:`register_dataset`), then split it across clients with :func:`partition`.
"""

from nas.data.holdout import ROLES, split_public_private
from nas.data.partitioning import ClientData, format_partition_summary, partition, partition_summary
from nas.data.registry import (
    DEFAULT_DATASET,
    available_datasets,
    load_dataset,
    register_dataset,
    unregister_dataset,
)
from nas.data.types import TASKS, ArraySplit, DatasetSplits, LoadOptions

__all__ = [
    "DEFAULT_DATASET",
    "TASKS",
    "ArraySplit",
    "ClientData",
    "DatasetSplits",
    "LoadOptions",
    "available_datasets",
    "format_partition_summary",
    "load_dataset",
    "partition",
    "partition_summary",
    "split_public_private",
    "ROLES",
    "register_dataset",
    "unregister_dataset",
]
