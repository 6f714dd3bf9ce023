"""Datasets by name: ``prefix`` or ``prefix:argument`` resolves to a registered loader.

Built-in names: ``digits`` (scikit-learn, offline default), ``medmnist:<flag>``,
``npz:<path>``, ``imagefolder:<path>`` and ``cifar10``. Add your own with
:func:`register_dataset`; a loader is any callable
``loader(argument: str, options: LoadOptions) -> DatasetSplits``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from nas.errors import DatasetError
from nas.data.loaders import load_digits_dataset, load_medmnist_dataset, load_npz_dataset
from nas.data.types import DatasetSplits, LoadOptions
from nas.data.vision import load_cifar10_dataset, load_imagefolder_dataset

logger = logging.getLogger(__name__)

Loader = Callable[[str, LoadOptions], DatasetSplits]

#: The dataset a run uses when it names none; ships with scikit-learn, so it works offline.
DEFAULT_DATASET = "digits"


@dataclass(frozen=True)
class _Entry:
    loader: Loader
    usage: str


_REGISTRY: dict[str, _Entry] = {}


def register_dataset(prefix: str, loader: Loader, *, usage: str | None = None, overwrite: bool = False) -> None:
    """Make ``load_dataset(prefix)`` and ``load_dataset(f"{prefix}:<argument>")`` call ``loader``.

    ``prefix`` is case-insensitive, non-empty and has no colon. ``usage`` is the form
    shown in error messages (default: the prefix). Registering a taken prefix raises
    :class:`DatasetError` unless ``overwrite`` is True.
    """
    if not isinstance(prefix, str) or not prefix.strip() or ":" in prefix:
        raise DatasetError(f"dataset prefix {prefix!r} is invalid; use a non-empty name without ':'")
    if not callable(loader):
        raise DatasetError(f"loader for dataset {prefix!r} is not callable: {loader!r}")
    key = prefix.strip().lower()
    if key in _REGISTRY and not overwrite:
        raise DatasetError(f"dataset prefix {key!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[key] = _Entry(loader, usage or key)


def unregister_dataset(prefix: str) -> None:
    """Remove a registered prefix; raise :class:`DatasetError` if it is unknown."""
    key = prefix.strip().lower()
    if key not in _REGISTRY:
        raise DatasetError(f"dataset prefix {prefix!r} is not registered; known: {available_datasets()}")
    del _REGISTRY[key]


def available_datasets() -> list[str]:
    """Return the usage form of every registered dataset, sorted (e.g. ``"npz:<path>"``)."""
    return sorted(entry.usage for entry in _REGISTRY.values())


def parse_dataset_name(name: str) -> tuple[str, str]:
    """Split ``"prefix:argument"`` at the first colon; the argument may be empty."""
    if not isinstance(name, str) or not name.strip():
        raise DatasetError(f"dataset name {name!r} is invalid; known datasets: {available_datasets()}")
    prefix, _, argument = name.strip().partition(":")
    return prefix.strip().lower(), argument.strip()


def load_dataset(
    name: str = DEFAULT_DATASET,
    *,
    root: str | Path | None = None,
    download: bool = False,
    size: int = 28,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> DatasetSplits:
    """Load the dataset ``name`` and return its normalized train/val/test splits.

    ``root`` and ``download`` apply to downloadable datasets (MedMNIST, CIFAR-10): a
    missing file raises :class:`DatasetError` naming the expected path unless
    ``download`` is True. ``size`` (pixels) picks the MedMNIST file size and the
    image-folder resize; other loaders keep their native size. ``seed``,
    ``val_fraction`` and ``test_fraction`` split datasets that have no official splits
    (fractions of all samples). Unknown names raise :class:`DatasetError` listing the
    known ones.
    """
    options = LoadOptions(
        root=root, download=bool(download), size=size, seed=seed,
        val_fraction=val_fraction, test_fraction=test_fraction,
    )
    prefix, argument = parse_dataset_name(name)
    entry = _REGISTRY.get(prefix)
    if entry is None:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {available_datasets()}")
    splits = entry.loader(argument, options)
    if not isinstance(splits, DatasetSplits):
        raise DatasetError(
            f"loader of dataset {prefix!r} returned {type(splits).__name__}; it must return DatasetSplits"
        )
    logger.info(
        "dataset %s: %d/%d/%d train/val/test samples, %d classes, %d channels, %d px",
        splits.name, len(splits.train), len(splits.val), len(splits.test),
        splits.num_classes, splits.in_channels, splits.resolution,
    )
    return splits


register_dataset("digits", load_digits_dataset)
register_dataset("medmnist", load_medmnist_dataset, usage="medmnist:<flag>")
register_dataset("npz", load_npz_dataset, usage="npz:<path>")
register_dataset("imagefolder", load_imagefolder_dataset, usage="imagefolder:<path>")
register_dataset("cifar10", load_cifar10_dataset)
