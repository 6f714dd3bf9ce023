"""Built-in array dataset loaders: scikit-learn digits, MedMNIST, and MedMNIST-layout npz files.

Every loader has the signature ``loader(argument, options) -> DatasetSplits``, where
``argument`` is the text after the colon of the dataset name ("" when there is
none) and ``options`` is a :class:`~nas.data.types.LoadOptions`.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from nas.errors import DatasetError
from nas.data.arrays import build_splits, split_arrays, stratified_split, to_labels, to_nchw
from nas.data.types import SPLITS, DatasetSplits, LoadOptions

logger = logging.getLogger(__name__)

#: Keys of a MedMNIST-layout npz archive.
NPZ_KEYS = tuple(f"{split}_{kind}" for split in SPLITS for kind in ("images", "labels"))

#: MedMNIST task names mapped to the task names of :class:`DatasetSplits`.
MEDMNIST_TASKS = {"multi-class": "multi-class", "binary-class": "binary", "ordinal-regression": "ordinal-regression"}


def _no_argument(prefix: str, argument: str) -> None:
    if argument:
        raise DatasetError(f"dataset {prefix!r} takes no argument, got {prefix}:{argument}; use {prefix!r}")


def load_digits_dataset(argument: str, options: LoadOptions) -> DatasetSplits:
    """Load scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes, 1 channel).

    Pixel values are 0..16 before normalization. The train/val/test split is stratified
    by class and fixed by ``options.seed``; ``options.size`` is ignored (images stay 8x8;
    use :meth:`DatasetSplits.resized`).
    """
    _no_argument("digits", argument)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = to_nchw(bunch.images, "digits")
    labels = to_labels(bunch.target, "digits", num_classes=10)
    indices = stratified_split(labels, options.val_fraction, options.test_fraction, options.seed, "digits")
    return build_splits(split_arrays(images, labels, indices), num_classes=10, task="multi-class", name="digits")


def _convert(
    arrays: dict[str, Any], source: str, num_classes: int | None
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]:
    """Turn MedMNIST-layout arrays into (N, C, H, W) images and (N,) labels per split.

    Returns the converted splits and the class count (``num_classes`` or max label + 1).
    """
    raw: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in SPLITS:
        images = to_nchw(arrays[f"{split}_images"], f"{source} {split}_images")
        labels = to_labels(arrays[f"{split}_labels"], f"{source} {split}_labels", num_classes)
        if len(images) != len(labels):
            raise DatasetError(
                f"{source}: {split}_images contains {len(images)} images but {split}_labels contains "
                f"{len(labels)} labels; each image needs exactly one label"
            )
        if len(images) == 0:
            raise DatasetError(f"{source}: the {split} split is empty; every split needs samples")
        raw[split] = (images, labels)
    shapes = {split: raw[split][0].shape[1:] for split in SPLITS}
    if len(set(shapes.values())) != 1:
        raise DatasetError(f"{source}: splits have different image shapes (C, H, W): {shapes}")
    if num_classes is None:
        num_classes = 1 + max(int(raw[split][1].max()) for split in SPLITS)
        if num_classes < 2:
            raise DatasetError(f"{source}: every label is 0; a classification dataset needs >= 2 classes")
    return raw, num_classes


def read_npz(path: Path, source: str) -> dict[str, np.ndarray]:
    """Read the six MedMNIST keys of the npz archive at ``path`` (no pickles)."""
    if not path.is_file():
        raise DatasetError(
            f"{source}: file {str(path)!r} does not exist; pass the path of an npz archive with keys {NPZ_KEYS}"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            files = list(getattr(archive, "files", []))
            missing = [key for key in NPZ_KEYS if key not in files]
            if missing:
                raise DatasetError(
                    f"{source}: {str(path)!r} lacks keys {missing} (found {sorted(files)}); a MedMNIST-layout "
                    f"npz needs {list(NPZ_KEYS)}"
                )
            return {key: archive[key] for key in NPZ_KEYS}
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        # NumPy suggests allow_pickle=True for a non-npz file; pickles are never loaded
        # here, so its message is replaced by the fix that applies.
        reason = "it is not an npz archive" if "allow_pickle" in str(error) else str(error)
        raise DatasetError(
            f"{source}: cannot read {str(path)!r} as an npz archive ({reason}); "
            "replace it with an uncorrupted MedMNIST-layout .npz file"
        ) from error


def load_npz_dataset(argument: str, options: LoadOptions) -> DatasetSplits:
    """Load an npz file in the MedMNIST layout: ``{train,val,test}_{images,labels}``.

    Images (N, H, W) give 1 channel, (N, H, W, 3) give 3. Labels (N,) or (N, 1) are class
    ids; ``num_classes`` is the largest label + 1 and the task is "multi-class". The
    file's own splits are used; the split options are ignored.
    """
    if not argument:
        raise DatasetError("dataset 'npz' needs a file path: use 'npz:/path/to/file.npz'")
    path = Path(argument).expanduser()
    source = f"npz:{argument}"
    raw, num_classes = _convert(read_npz(path, source), source, None)
    return build_splits(raw, num_classes=num_classes, task="multi-class", name=source)


def medmnist_file_name(flag: str, size: int) -> str:
    """Return the official file name of a MedMNIST flag: ``{flag}.npz`` at 28 px, else ``{flag}_{size}.npz``."""
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def _medmnist_info(flag: str) -> dict[str, Any]:
    import medmnist

    if not flag:
        raise DatasetError(f"dataset 'medmnist' needs a flag, e.g. 'medmnist:retinamnist'; flags: {sorted(medmnist.INFO)}")
    if flag not in medmnist.INFO:
        raise DatasetError(f"unknown MedMNIST flag {flag!r}; known flags: {sorted(medmnist.INFO)}")
    info = medmnist.INFO[flag]
    if info["python_class"].endswith("3D"):
        raise DatasetError(f"MedMNIST flag {flag!r} is a 3-D volume dataset; only 2-D image flags are supported")
    if info["task"] not in MEDMNIST_TASKS:
        kind = "a multi-label dataset" if "multi-label" in info["task"] else "a dataset"
        raise DatasetError(
            f"MedMNIST flag {flag!r} is {kind} with task {info['task']!r}, which is not supported "
            f"because APFP-NAS trains single-label classification only ({sorted(MEDMNIST_TASKS)}); "
            "choose another flag"
        )
    return info


def load_medmnist_dataset(argument: str, options: LoadOptions) -> DatasetSplits:
    """Load a 2-D MedMNIST dataset through the ``medmnist`` package (official splits).

    ``options.root`` is the folder that contains ``{flag}.npz`` (size 28) or
    ``{flag}_{size}.npz`` (default: the package's ``~/.medmnist``). ``options.size`` is
    one of the official sizes. With ``options.download`` a missing file is fetched from
    Zenodo. Binary and ordinal-regression flags train as classification. Multi-label
    flags (ChestMNIST) and 3-D flags raise :class:`DatasetError`.
    """
    import medmnist
    from medmnist.info import DEFAULT_ROOT

    flag = argument.lower()
    info = _medmnist_info(flag)
    dataset_class = getattr(medmnist, info["python_class"])
    if options.size not in dataset_class.available_sizes:
        raise DatasetError(
            f"size={options.size} is not available for MedMNIST flag {flag!r}; "
            f"available sizes: {dataset_class.available_sizes}"
        )
    root = options.root if options.root is not None else Path(DEFAULT_ROOT or Path.home() / ".medmnist")
    path = root / medmnist_file_name(flag, options.size)
    source = f"medmnist:{flag}"
    download = False
    if not path.is_file():
        if not options.download:
            raise DatasetError(
                f"{source}: file {str(path)!r} not found; pass download=True to fetch it, or set root to "
                f"the folder that contains {path.name}"
            )
        root.mkdir(parents=True, exist_ok=True)
        # Download only a missing file, because medmnist re-fetches a present file whose MD5 differs.
        download = True
    arrays: dict[str, Any] = {}
    try:
        for split in SPLITS:
            dataset = dataset_class(split=split, root=str(root), download=download, size=options.size)
            arrays[f"{split}_images"], arrays[f"{split}_labels"] = dataset.imgs, dataset.labels
            download = False
    except KeyError as error:
        raise DatasetError(f"{source}: {str(path)!r} lacks key {error}; expected {list(NPZ_KEYS)}") from error
    except (RuntimeError, OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DatasetError(
            f"{source}: cannot load {str(path)!r}: {' '.join(str(error).split())}; delete the file and pass download=True, or "
            f"download {info['url' if options.size == 28 else f'url_{options.size}']} into {str(root)!r}"
        ) from error
    num_classes = len(info["label"])
    raw, _ = _convert(arrays, source, num_classes)
    logger.debug("loaded %s from %s", source, path)
    return build_splits(raw, num_classes=num_classes, task=MEDMNIST_TASKS[info["task"]], name=source)
