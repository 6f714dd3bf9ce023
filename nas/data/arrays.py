"""Array helpers shared by the dataset loaders: layout, labels, normalization, splitting.

Loaders read raw images (uint8 or float, channel-last or grayscale) and labels in
whatever shape their source uses. These helpers turn them into the normalized
(N, C, H, W) float32 and (N,) int64 arrays of :class:`~nas.data.types.ArraySplit`.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from nas.errors import DatasetError
from nas.data.types import SPLITS, ArraySplit, DatasetSplits


def to_nchw(images: np.ndarray, source: str) -> np.ndarray:
    """Return ``images`` as float32 (N, C, H, W).

    Accepts (N, H, W) grayscale and channel-last (N, H, W, C) with C in {1, 3}, the
    MedMNIST and torchvision layouts. ``source`` names the data in error messages.
    """
    array = np.asarray(images)
    if array.ndim == 3:
        array = array[:, None, :, :]
    elif array.ndim == 4 and array.shape[-1] in (1, 3):
        array = array.transpose(0, 3, 1, 2)
    else:
        raise DatasetError(
            f"{source}: images have shape {array.shape}; expected (N, H, W) or (N, H, W, C) with C in (1, 3)"
        )
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise DatasetError(f"{source}: images have dtype {array.dtype}; expected a real numeric type")
    return np.ascontiguousarray(array, dtype=np.float32)


def to_labels(labels: np.ndarray, source: str, num_classes: int | None = None) -> np.ndarray:
    """Return single-label ``labels`` of shape (N,) or (N, 1) as int64 (N,).

    Raises :class:`DatasetError` for several labels per sample (multi-label data), for
    non-integer or negative values, and, when ``num_classes`` is given, for values
    ``>= num_classes``.
    """
    array = np.asarray(labels)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise DatasetError(
            f"{source}: labels have shape {array.shape}; expected (N,) or (N, 1) single-label class ids "
            "(multi-label data is not supported)"
        )
    if not np.issubdtype(array.dtype, np.number) or (
        array.size and not np.issubdtype(array.dtype, np.integer) and not np.all(np.mod(array, 1) == 0)
    ):
        raise DatasetError(f"{source}: labels of dtype {array.dtype} are not integer class ids")
    result = array.astype(np.int64)
    if result.size and result.min() < 0:
        raise DatasetError(f"{source}: label {int(result.min())} is out of range; class ids start at 0")
    if num_classes is not None and result.size and result.max() >= num_classes:
        raise DatasetError(
            f"{source}: label {int(result.max())} is out of range for {num_classes} classes "
            f"(valid ids: 0..{num_classes - 1})"
        )
    return result


def channel_stats(train_images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return per-channel mean and std of (N, C, H, W) images, shape (C,) float64.

    A channel with zero spread gets std 1, so normalizing it only shifts it.
    """
    mean = train_images.mean(axis=(0, 2, 3), dtype=np.float64)
    std = train_images.std(axis=(0, 2, 3), dtype=np.float64)
    std[std < 1e-12] = 1.0
    return mean, std


def build_splits(
    raw: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    num_classes: int,
    task: str,
    name: str,
) -> DatasetSplits:
    """Normalize float32 (N, C, H, W) images and int64 labels into a :class:`DatasetSplits`.

    ``raw`` maps "train", "val" and "test" to ``(images, labels)``. Every split is
    normalized with the per-channel mean and std of the train split.
    """
    mean, std = channel_stats(raw["train"][0])
    scale = (1.0 / std).astype(np.float32)[None, :, None, None]
    shift = mean.astype(np.float32)[None, :, None, None]
    splits = {}
    for split in SPLITS:
        images, labels = raw[split]
        splits[split] = ArraySplit((images - shift) * scale, labels)
    return DatasetSplits(
        num_classes=num_classes,
        in_channels=int(raw["train"][0].shape[1]),
        task=task,
        name=name,
        **splits,
    )


def stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int, source: str
) -> dict[str, np.ndarray]:
    """Split sample indices into train/val/test, class by class, deterministically for ``seed``.

    Each class contributes ``round(n_c * fraction)`` samples to val and to test (a
    class with one sample stays in train). Returns sorted int64 index arrays keyed by
    split; raises :class:`DatasetError` if train, or a split with a fraction above 0,
    would be empty.
    """
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {split: [] for split in SPLITS}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = int(round(len(members) * test_fraction))
        n_val = int(round(len(members) * val_fraction))
        if n_test + n_val >= len(members):
            n_test, n_val = min(n_test, len(members) - 1), 0
        parts["test"].append(members[:n_test])
        parts["val"].append(members[n_test : n_test + n_val])
        parts["train"].append(members[n_test + n_val :])
    result = {split: np.sort(np.concatenate(chunks)).astype(np.int64) for split, chunks in parts.items()}
    fractions = {"train": 1.0, "val": val_fraction, "test": test_fraction}
    for split, indices in result.items():
        if len(indices) == 0 and fractions[split] > 0:
            raise DatasetError(
                f"{source}: {len(labels)} samples are too few for a non-empty {split} split with "
                f"val_fraction={val_fraction} and test_fraction={test_fraction}; add samples or raise "
                "the fraction"
            )
    return result


def split_arrays(
    images: np.ndarray, labels: np.ndarray, indices: Mapping[str, np.ndarray]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Return ``{split: (images[idx], labels[idx])}`` for the index arrays of :func:`stratified_split`."""
    return {split: (images[idx], labels[idx]) for split, idx in indices.items()}
