"""Dataset loaders, containers and the dataset registry, on real local data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nas.data import (
    ArraySplit,
    DatasetSplits,
    available_datasets,
    load_dataset,
    register_dataset,
    unregister_dataset,
)
from nas.errors import DatasetError

MEDMNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "medmnist"
RETINA = MEDMNIST_DIR / "retinamnist.npz"
BREAST_DIR = MEDMNIST_DIR / "unofficial"
needs_medmnist = pytest.mark.skipif(
    not RETINA.is_file() or not (BREAST_DIR / "breastmnist.npz").is_file(),
    reason=f"shared MedMNIST files not found under {MEDMNIST_DIR}",
)


@pytest.fixture(scope="module")
def digits() -> DatasetSplits:
    return load_dataset("digits")


def _check_normalized(splits: DatasetSplits) -> None:
    for split in splits.splits().values():
        assert split.x.dtype == np.float32
        assert split.y.dtype == np.int64
        assert split.x.ndim == 4
        assert split.x.shape[1] == splits.in_channels
    mean = splits.train.x.mean(axis=(0, 2, 3))
    std = splits.train.x.std(axis=(0, 2, 3))
    np.testing.assert_allclose(mean, 0.0, atol=1e-4)
    np.testing.assert_allclose(std, 1.0, atol=1e-3)


# ------------------------------------------------------------------ digits
def test_digits_stratified_normalized_split(digits: DatasetSplits) -> None:
    from sklearn.datasets import load_digits

    assert (digits.name, digits.task, digits.num_classes, digits.in_channels) == ("digits", "multi-class", 10, 1)
    assert digits.resolution == 8
    sizes = [len(s) for s in digits.splits().values()]
    assert sum(sizes) == 1797
    assert abs(len(digits.val) - 180) <= 10
    assert abs(len(digits.test) - 360) <= 10
    _check_normalized(digits)
    # val and test use the train statistics: raw pixel values 0 and 16 map to the same numbers.
    for split in (digits.val, digits.test):
        assert split.x.min() == digits.train.x.min()
        assert split.x.max() == digits.train.x.max()
    full = np.bincount(load_digits().target, minlength=10) / 1797
    for split in digits.splits().values():
        share = split.class_counts(10) / len(split)
        np.testing.assert_allclose(share, full, atol=0.02)


def test_digits_split_follows_seed(digits: DatasetSplits) -> None:
    again = load_dataset("digits", seed=0)
    other = load_dataset("digits", seed=1)
    np.testing.assert_array_equal(again.test.x, digits.test.x)
    np.testing.assert_array_equal(again.test.y, digits.test.y)
    assert not np.array_equal(other.test.x, digits.test.x)


def test_digits_rejects_bad_options() -> None:
    with pytest.raises(DatasetError, match="val_fraction"):
        load_dataset("digits", val_fraction=0.0)
    with pytest.raises(DatasetError, match="leaves no training data"):
        load_dataset("digits", val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(DatasetError, match="takes no argument"):
        load_dataset("digits:extra")


# --------------------------------------------------------------- containers
def test_resized_keeps_content(digits: DatasetSplits) -> None:
    assert digits.resized(8) is digits
    up = digits.resized(16)
    assert up.train.x.shape == (len(digits.train), 1, 16, 16)
    assert up.resolution == 16
    np.testing.assert_array_equal(up.train.y, digits.train.y)
    # Upsampling then antialiased downsampling returns close to the original images.
    back = up.resized(8)
    corr = np.corrcoef(back.train.x.ravel(), digits.train.x.ravel())[0, 1]
    assert corr > 0.95
    with pytest.raises(DatasetError, match="resolution"):
        digits.resized(0)


def test_resized_antialiases_when_shrinking() -> None:
    # Stripes 0,1,1,0 repeat every 4 columns. Plain bilinear 4x shrinking samples only
    # the two middle columns (value 1), while an antialiased resize averages to about 0.5.
    columns = (np.arange(32) % 4 == 1) | (np.arange(32) % 4 == 2)
    images = np.broadcast_to(columns.astype(np.float32), (4, 1, 32, 32))
    split = ArraySplit(images, np.array([0, 1, 0, 1]))
    splits = DatasetSplits(split, split, split, 2, 1, "binary", "stripes")
    small = splits.resized(8)
    assert small.test.x.shape == (4, 1, 8, 8)
    np.testing.assert_allclose(small.test.x, 0.5, atol=0.1)


def test_array_split_checks_and_subsets() -> None:
    split = ArraySplit(np.zeros((4, 1, 2, 2)), np.array([0, 1, 1, 2]))
    assert split.x.dtype == np.float32
    assert split.y.dtype == np.int64
    assert len(split) == 4
    np.testing.assert_array_equal(split.class_counts(3), [1, 2, 1])
    np.testing.assert_array_equal(split.subset([3, 0]).y, [2, 0])
    with pytest.raises(DatasetError, match="3 labels"):
        ArraySplit(np.zeros((4, 1, 2, 2)), np.zeros(3))
    with pytest.raises(DatasetError, match="4-D"):
        ArraySplit(np.zeros((4, 2, 2)), np.zeros(4))
    with pytest.raises(DatasetError, match="outside"):
        split.class_counts(2)


def test_dataset_splits_rejects_inconsistent_parts(digits: DatasetSplits) -> None:
    with pytest.raises(DatasetError, match="task"):
        DatasetSplits(digits.train, digits.val, digits.test, 10, 1, "multi-label", "x")
    with pytest.raises(DatasetError, match="labels span"):
        DatasetSplits(digits.train, digits.val, digits.test, 5, 1, "multi-class", "x")
    with pytest.raises(DatasetError, match="in_channels"):
        DatasetSplits(digits.train, digits.val, digits.test, 10, 3, "multi-class", "x")


# ---------------------------------------------------------------- medmnist
@needs_medmnist
def test_medmnist_retina_official_splits() -> None:
    splits = load_dataset("medmnist:retinamnist", root=MEDMNIST_DIR)
    assert (splits.task, splits.num_classes, splits.in_channels, splits.resolution) == (
        "ordinal-regression", 5, 3, 28,
    )
    assert [len(s) for s in splits.splits().values()] == [1080, 120, 400]
    np.testing.assert_array_equal(splits.train.class_counts(5), [486, 128, 206, 194, 66])
    np.testing.assert_array_equal(splits.test.class_counts(5), [174, 46, 92, 68, 20])
    _check_normalized(splits)


@needs_medmnist
def test_medmnist_loads_flat_labels() -> None:
    splits = load_dataset("medmnist:BreastMNIST", root=BREAST_DIR)
    assert (splits.task, splits.num_classes, splits.in_channels) == ("binary", 2, 1)
    np.testing.assert_array_equal(splits.train.class_counts(2), [147, 399])
    np.testing.assert_array_equal(splits.val.class_counts(2), [21, 57])


def test_medmnist_missing_file_message(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as info:
        load_dataset("medmnist:retinamnist", root=tmp_path, size=64)
    message = str(info.value)
    assert str(tmp_path / "retinamnist_64.npz") in message
    assert "download=True" in message
    with pytest.raises(DatasetError, match=r"breastmnist\.npz"):
        load_dataset("medmnist:breastmnist", root=tmp_path)


def test_medmnist_rejects_unsupported_requests(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="'chestmnist'.*multi-label"):
        load_dataset("medmnist:chestmnist", root=tmp_path)
    with pytest.raises(DatasetError, match="unknown MedMNIST flag 'nosuchmnist'"):
        load_dataset("medmnist:nosuchmnist")
    with pytest.raises(DatasetError, match="needs a flag"):
        load_dataset("medmnist")
    with pytest.raises(DatasetError, match="size=30"):
        load_dataset("medmnist:retinamnist", root=tmp_path, size=30)


@needs_medmnist
def test_medmnist_label_out_of_range(tmp_path: Path) -> None:
    with np.load(RETINA) as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays["val_labels"] = arrays["val_labels"].copy()
    arrays["val_labels"][3] = 7
    np.savez(tmp_path / "retinamnist.npz", **arrays)
    with pytest.raises(DatasetError, match="label 7 is out of range for 5 classes"):
        load_dataset("medmnist:retinamnist", root=tmp_path)


# --------------------------------------------------------------------- npz
@needs_medmnist
def test_npz_infers_channels_classes() -> None:
    retina = load_dataset(f"npz:{RETINA}")
    assert (retina.task, retina.num_classes, retina.in_channels) == ("multi-class", 5, 3)
    assert retina.name == f"npz:{RETINA}"
    breast = load_dataset(f"npz:{BREAST_DIR / 'breastmnist.npz'}")
    assert (breast.num_classes, breast.in_channels, len(breast.test)) == (2, 1, 156)


def _small_npz(path: Path, **overrides: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 12), ("val", 4), ("test", 4)):
        arrays[f"{split}_images"] = rng.integers(0, 255, size=(n, 6, 6), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.arange(n, dtype=np.uint8)[:, None] % 3
    arrays.update(overrides)
    np.savez(path, **arrays)
    return path


def test_npz_bad_inputs(tmp_path: Path) -> None:
    good = load_dataset(f"npz:{_small_npz(tmp_path / 'good.npz')}")
    assert (good.num_classes, good.in_channels, len(good.train)) == (3, 1, 12)
    missing = tmp_path / "absent.npz"
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(f"npz:{missing}")
    np.savez(tmp_path / "keys.npz", x=np.zeros(3), y=np.zeros(3))
    with pytest.raises(DatasetError, match=r"lacks keys .*train_images"):
        load_dataset(f"npz:{tmp_path / 'keys.npz'}")
    short = _small_npz(tmp_path / "short.npz", val_labels=np.zeros(3, dtype=np.uint8))
    with pytest.raises(DatasetError, match="val_images contains 4 images but val_labels contains 3"):
        load_dataset(f"npz:{short}")
    negative = _small_npz(tmp_path / "neg.npz", test_labels=np.array([0, 1, -1, 2]))
    with pytest.raises(DatasetError, match="label -1 is out of range"):
        load_dataset(f"npz:{negative}")
    multi = _small_npz(tmp_path / "multi.npz", train_labels=np.zeros((12, 4), dtype=np.uint8))
    with pytest.raises(DatasetError, match="multi-label"):
        load_dataset(f"npz:{multi}")
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(DatasetError, match="cannot read"):
        load_dataset(f"npz:{tmp_path / 'text.npz'}")


# ----------------------------------------------------------------- cifar10
def test_cifar10_missing_folder_message(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as info:
        load_dataset("cifar10", root=tmp_path)
    assert str(tmp_path / "cifar-10-batches-py") in str(info.value)
    assert "download=True" in str(info.value)


# ---------------------------------------------------------------- registry
def test_registry_builtins_and_unknown_names() -> None:
    names = available_datasets()
    for expected in ("digits", "medmnist:<flag>", "npz:<path>", "imagefolder:<path>", "cifar10"):
        assert expected in names
    with pytest.raises(DatasetError, match=r"unknown dataset 'mnistish'.*digits"):
        load_dataset("mnistish")


def test_registry_user_loaders(digits: DatasetSplits) -> None:
    calls = []

    def toy(argument, options):
        calls.append((argument, options.seed))
        return digits

    register_dataset("toy", toy, usage="toy:<tag>")
    try:
        assert "toy:<tag>" in available_datasets()
        assert load_dataset("toy:abc", seed=5) is digits
        assert calls == [("abc", 5)]
        with pytest.raises(DatasetError, match="already registered"):
            register_dataset("toy", toy)
        register_dataset("toy", lambda argument, options: "not splits", overwrite=True)
        with pytest.raises(DatasetError, match="must return DatasetSplits"):
            load_dataset("toy")
    finally:
        unregister_dataset("toy")
    assert "toy:<tag>" not in available_datasets()
    with pytest.raises(DatasetError, match="invalid"):
        register_dataset("a:b", toy)
