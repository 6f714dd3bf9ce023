"""Built-in loaders backed by torchvision: a user's image folders, and CIFAR-10.

Same loader signature as :mod:`nas.data.loaders`: ``loader(argument, options)``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from nas.errors import DatasetError
from nas.data.arrays import build_splits, split_arrays, stratified_split, to_labels, to_nchw
from nas.data.types import DatasetSplits, LoadOptions

logger = logging.getLogger(__name__)

_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")

#: Default data folder of downloadable torchvision datasets when ``root`` is None.
DEFAULT_ROOT = Path("~/.cache/apfp-nas").expanduser()


def load_imagefolder_dataset(argument: str, options: LoadOptions) -> DatasetSplits:
    """Load images from ``<argument>/<class name>/<image file>`` (torchvision ``ImageFolder``).

    Class ids follow the sorted folder names. Every image is converted to the mode of
    the first image (grayscale "L" or "RGB"), resized to ``options.size`` pixels square
    (bilinear) and split train/val/test by class, fixed by ``options.seed``. An empty
    class folder, fewer than two classes or an unreadable image raise
    :class:`DatasetError`.
    """
    from torchvision.datasets import ImageFolder

    if not argument:
        raise DatasetError("dataset 'imagefolder' needs a folder: use 'imagefolder:/path/to/folder'")
    root = Path(argument).expanduser()
    source = f"imagefolder:{argument}"
    if not root.is_dir():
        raise DatasetError(f"{source}: folder {str(root)!r} does not exist; create one sub-folder of images per class")
    try:
        folder = ImageFolder(str(root), allow_empty=True)
    except (FileNotFoundError, ValueError) as error:
        raise DatasetError(
            f"{source}: {error}; the folder must contain one sub-folder of images per class"
        ) from error
    counts = np.bincount(np.asarray(folder.targets, dtype=np.int64), minlength=len(folder.classes))
    empty = [str(root / folder.classes[i]) for i in np.flatnonzero(counts == 0)]
    if empty:
        raise DatasetError(
            f"{source}: class folder(s) {empty} contain no image files; add images or remove the folder"
        )
    if len(folder.classes) < 2:
        raise DatasetError(f"{source}: found only class {folder.classes}; a classifier needs >= 2 class folders")
    images = _read_images([path for path, _ in folder.samples], options.size, source)
    labels = to_labels(np.asarray(folder.targets), source, num_classes=len(folder.classes))
    indices = stratified_split(labels, options.val_fraction, options.test_fraction, options.seed, source)
    logger.debug("loaded %d images of %d classes from %s", len(labels), len(folder.classes), root)
    return build_splits(
        split_arrays(images, labels, indices), num_classes=len(folder.classes), task="multi-class", name=source
    )


def _read_images(paths: list[str], size: int, source: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    mode = None
    pixels = []
    for path in paths:
        try:
            with Image.open(path) as image:
                if mode is None:
                    mode = "L" if image.mode in _GRAY_MODES else "RGB"
                converted = image.convert(mode)
                if converted.size != (size, size):
                    converted = converted.resize((size, size), Image.Resampling.BILINEAR)
                pixels.append(np.asarray(converted, dtype=np.uint8))
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise DatasetError(f"{source}: cannot read image {path!r}: {error}; fix or remove the file") from error
    return to_nchw(np.stack(pixels), source)


def load_cifar10_dataset(argument: str, options: LoadOptions) -> DatasetSplits:
    """Load CIFAR-10 through torchvision: 32x32 RGB, 10 classes.

    ``options.root`` is the folder that contains ``cifar-10-batches-py`` (default
    ``~/.cache/apfp-nas``), and ``options.download`` fetches it when missing. The
    official test set is the test split. A stratified ``options.val_fraction`` of the
    training set, fixed by ``options.seed``, becomes the val split.
    ``options.size`` is ignored (use :meth:`DatasetSplits.resized`).
    """
    if argument:
        raise DatasetError(f"dataset 'cifar10' takes no argument, got 'cifar10:{argument}'; use 'cifar10'")
    from torchvision.datasets import CIFAR10

    # NOTE: the tests cover only the missing-folder error, because CIFAR-10 cannot be fetched offline.
    root = options.root if options.root is not None else DEFAULT_ROOT
    folder = root / CIFAR10.base_folder
    if not folder.is_dir():
        if not options.download:
            raise DatasetError(
                f"cifar10: folder {str(folder)!r} not found; pass download=True to fetch it, or set root "
                f"to the folder that contains {CIFAR10.base_folder}"
            )
        root.mkdir(parents=True, exist_ok=True)
    try:
        train = CIFAR10(str(root), train=True, download=options.download)
        test = CIFAR10(str(root), train=False, download=False)
    except (RuntimeError, OSError, ValueError) as error:
        raise DatasetError(
            f"cifar10: cannot load {str(folder)!r}: {error}; delete the folder and pass download=True"
        ) from error
    train_images, test_images = to_nchw(train.data, "cifar10"), to_nchw(test.data, "cifar10")
    train_labels = to_labels(np.asarray(train.targets), "cifar10", num_classes=10)
    test_labels = to_labels(np.asarray(test.targets), "cifar10", num_classes=10)
    indices = stratified_split(train_labels, options.val_fraction, 0.0, options.seed, "cifar10")
    raw = split_arrays(train_images, train_labels, {"train": indices["train"], "val": indices["val"]})
    raw["test"] = (test_images, test_labels)
    return build_splits(raw, num_classes=10, task="multi-class", name="cifar10")
