"""Plain-data containers for image classification datasets.

An :class:`ArraySplit` is one split as two numpy arrays. A :class:`DatasetSplits`
groups the train, validation and test splits of one dataset with the facts a model
needs (classes, channels, task). Loaders return :class:`DatasetSplits`, and the
partitioner and the training code consume them. Nothing here reads files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from nas.errors import DatasetError

#: Task types that train as single-label classification (cross-entropy over classes).
TASKS = ("multi-class", "binary", "ordinal-regression")
SPLITS = ("train", "val", "test")

_RESIZE_BATCH = 2048  # Images per interpolate call, which bounds the peak memory of resizing.


@dataclass(frozen=True, eq=False)
class ArraySplit:
    """One split: images ``x`` float32 (N, C, H, W), normalized; labels ``y`` int64 (N,).

    The constructor converts dtypes and checks shapes. It raises :class:`DatasetError`
    when ``x`` is not 4-D, ``y`` is not 1-D or not integer, or their lengths differ.
    Equality is identity.
    """

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        x = np.ascontiguousarray(self.x, dtype=np.float32)
        y = np.asarray(self.y)
        if x.ndim != 4:
            raise DatasetError(f"split images have shape {x.shape}; expected 4-D (N, C, H, W)")
        if y.ndim != 1:
            raise DatasetError(f"split labels have shape {y.shape}; expected 1-D (N,)")
        if y.dtype.kind not in "biuf" or (y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0)):
            raise DatasetError(f"split labels of dtype {y.dtype} are not integer class ids")
        if len(x) != len(y):
            raise DatasetError(f"split has {len(x)} images but {len(y)} labels; they must match")
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y.astype(np.int64, copy=False))

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, indices: np.ndarray | Sequence[int]) -> "ArraySplit":
        """Return a new split holding the samples at ``indices`` (int indices or a bool mask)."""
        index = np.asarray(indices)
        if index.dtype != bool:
            index = index.astype(np.int64, copy=False)
        return ArraySplit(self.x[index], self.y[index])

    def class_counts(self, num_classes: int) -> np.ndarray:
        """Return the number of samples of each class 0..num_classes-1, int64 (num_classes,)."""
        if len(self) and (self.y.min() < 0 or self.y.max() >= num_classes):
            raise DatasetError(
                f"labels span {self.y.min()}..{self.y.max()}, outside 0..{num_classes - 1}"
            )
        return np.bincount(self.y, minlength=num_classes).astype(np.int64)


@dataclass(frozen=True, eq=False)
class DatasetSplits:
    """Train, validation and test splits of one dataset plus its shape and task.

    ``task`` is one of :data:`TASKS`, and all three train as classification over
    ``num_classes`` classes. Every split is non-empty, has ``in_channels`` channels and
    the same image size, and contains labels in ``0..num_classes-1``. The constructor
    raises :class:`DatasetError` otherwise.
    """

    train: ArraySplit
    val: ArraySplit
    test: ArraySplit
    num_classes: int
    in_channels: int
    task: str
    name: str

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise DatasetError(f"dataset {self.name!r} has task={self.task!r}; allowed values: {TASKS}")
        if not isinstance(self.num_classes, (int, np.integer)) or self.num_classes < 2:
            raise DatasetError(f"dataset {self.name!r} has num_classes={self.num_classes!r}; use an int >= 2")
        object.__setattr__(self, "num_classes", int(self.num_classes))
        object.__setattr__(self, "in_channels", int(self.in_channels))
        shape = self.train.x.shape[1:]
        for split_name in SPLITS:
            split = getattr(self, split_name)
            if not isinstance(split, ArraySplit):
                raise DatasetError(f"dataset {self.name!r} split {split_name!r} is not an ArraySplit")
            if len(split) == 0:
                raise DatasetError(f"dataset {self.name!r} has an empty {split_name} split")
            if split.x.shape[1] != self.in_channels or split.x.shape[1:] != shape:
                raise DatasetError(
                    f"dataset {self.name!r} {split_name} images have shape (C, H, W)={split.x.shape[1:]}; "
                    f"expected {shape} with C=in_channels={self.in_channels}"
                )
            low, high = int(split.y.min()), int(split.y.max())
            if low < 0 or high >= self.num_classes:
                raise DatasetError(
                    f"dataset {self.name!r} {split_name} labels span {low}..{high}, outside "
                    f"0..{self.num_classes - 1} for num_classes={self.num_classes}"
                )

    @property
    def resolution(self) -> int:
        """Image height of the train split, in pixels."""
        return int(self.train.x.shape[2])

    def splits(self) -> dict[str, ArraySplit]:
        """Return ``{"train": ..., "val": ..., "test": ...}``."""
        return {name: getattr(self, name) for name in SPLITS}

    def resized(self, resolution: int) -> "DatasetSplits":
        """Return a copy whose images are ``resolution`` x ``resolution`` pixels.

        Bilinear interpolation; antialiasing is on when an image shrinks. Returns ``self``
        when the images already have that size.
        """
        if not isinstance(resolution, (int, np.integer)) or resolution < 1:
            raise DatasetError(f"resolution={resolution!r} is invalid; use a positive int (pixels)")
        height, width = self.train.x.shape[2:]
        if height == width == resolution:
            return self
        resized = {name: ArraySplit(_resize(split.x, int(resolution)), split.y) for name, split in self.splits().items()}
        return DatasetSplits(
            num_classes=self.num_classes,
            in_channels=self.in_channels,
            task=self.task,
            name=self.name,
            **resized,
        )


def _resize(images: np.ndarray, resolution: int) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    shrinks = resolution < max(images.shape[2:])
    out = np.empty((images.shape[0], images.shape[1], resolution, resolution), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(images), _RESIZE_BATCH):
            batch = torch.from_numpy(images[start : start + _RESIZE_BATCH])
            result = F.interpolate(
                batch, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=shrinks
            )
            out[start : start + len(batch)] = result.numpy()
    return out


@dataclass(frozen=True)
class LoadOptions:
    """Settings every dataset loader receives (see :func:`nas.data.load_dataset`).

    ``root`` is the data folder of downloadable datasets (None: the loader's default).
    ``size`` is the image size in pixels for loaders that offer a choice. ``seed``,
    ``val_fraction`` and ``test_fraction`` drive the split of datasets that ship
    without official validation or test splits.
    """

    root: Path | None = None
    download: bool = False
    size: int = 28
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        if self.root is not None:
            object.__setattr__(self, "root", Path(self.root).expanduser())
        if not isinstance(self.size, (int, np.integer)) or isinstance(self.size, bool) or self.size < 1:
            raise DatasetError(f"size={self.size!r} is invalid; use a positive int (pixels)")
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool):
            raise DatasetError(f"seed={self.seed!r} is invalid; use an int")
        for field in ("val_fraction", "test_fraction"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
                raise DatasetError(f"{field}={value!r} is invalid; use a float in (0, 1)")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise DatasetError(
                f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction:g} leaves no "
                "training data; keep the sum below 1"
            )
