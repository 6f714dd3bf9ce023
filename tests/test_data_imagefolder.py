"""The image-folder loader, on PNG files written from real scikit-learn digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from nas.data import load_dataset
from nas.errors import DatasetError

PER_CLASS = 15
CLASSES = (0, 1, 2)


def _write_digits(root: Path, mode: str = "L", first_mode: str | None = None) -> dict[int, np.ndarray]:
    """Write PER_CLASS digits of each class in CLASSES as PNG files; return the pixels per class."""
    digits = load_digits()
    written: dict[int, np.ndarray] = {}
    for digit in CLASSES:
        folder = root / f"digit{digit}"
        folder.mkdir(parents=True)
        images = digits.images[digits.target == digit][:PER_CLASS]
        pixels = np.round(images * (255.0 / 16.0)).astype(np.uint8)
        for i, image in enumerate(pixels):
            picture = Image.fromarray(image)
            use = first_mode if (first_mode and digit == CLASSES[0] and i == 0) else mode
            picture.convert(use).save(folder / f"{i:03d}.png")
        written[digit] = pixels.astype(np.float64)
    return written


def _standardize(images: np.ndarray) -> np.ndarray:
    flat = images.reshape(len(images), -1).astype(np.float64)
    flat = flat - flat.mean(axis=1, keepdims=True)
    return flat / np.linalg.norm(flat, axis=1, keepdims=True)


def test_imagefolder_pixels_and_labels(tmp_path: Path) -> None:
    written = _write_digits(tmp_path)
    splits = load_dataset(f"imagefolder:{tmp_path}", size=8, seed=3)
    assert (splits.num_classes, splits.in_channels) == (3, 1)
    assert (splits.resolution, splits.task) == (8, "multi-class")
    assert sum(len(s) for s in splits.splits().values()) == PER_CLASS * len(CLASSES)
    assert min(len(splits.val), len(splits.test)) >= len(CLASSES)
    sources = _standardize(np.concatenate([written[d] for d in CLASSES]))
    source_labels = np.repeat(np.arange(len(CLASSES)), PER_CLASS)
    for split in splits.splits().values():
        similarity = _standardize(split.x[:, 0]) @ sources.T
        best = similarity.argmax(axis=1)
        assert similarity.max(axis=1).min() > 0.999
        np.testing.assert_array_equal(source_labels[best], split.y)


def test_imagefolder_resize_and_seed(tmp_path: Path) -> None:
    _write_digits(tmp_path)
    first = load_dataset(f"imagefolder:{tmp_path}", size=16, seed=0)
    again = load_dataset(f"imagefolder:{tmp_path}", size=16, seed=0)
    other = load_dataset(f"imagefolder:{tmp_path}", size=16, seed=1)
    assert first.train.x.shape[1:] == (1, 16, 16)
    np.testing.assert_array_equal(first.test.x, again.test.x)
    assert not np.array_equal(first.test.x, other.test.x)


def test_imagefolder_channels_follow_first_image(tmp_path: Path) -> None:
    rgb_root, mixed_root = tmp_path / "rgb", tmp_path / "mixed"
    _write_digits(rgb_root, mode="RGB")
    rgb = load_dataset(f"imagefolder:{rgb_root}", size=8)
    assert rgb.in_channels == 3
    np.testing.assert_allclose(rgb.train.x[:, 0], rgb.train.x[:, 2], atol=1e-5)
    _write_digits(mixed_root, mode="RGB", first_mode="L")
    assert load_dataset(f"imagefolder:{mixed_root}", size=8).in_channels == 1


def test_imagefolder_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'absent'}")
    with pytest.raises(DatasetError, match="sub-folder"):
        load_dataset(f"imagefolder:{tmp_path}")  # The folder has no class folders yet.
    _write_digits(tmp_path / "data")
    (tmp_path / "data" / "digit9").mkdir()
    with pytest.raises(DatasetError, match=r"digit9.*no image files"):
        load_dataset(f"imagefolder:{tmp_path / 'data'}")
    (tmp_path / "data" / "digit9").rmdir()
    (tmp_path / "data" / "digit1" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"cannot read image .*broken\.png"):
        load_dataset(f"imagefolder:{tmp_path / 'data'}")
    single = tmp_path / "single" / "only"
    single.mkdir(parents=True)
    Image.new("L", (8, 8)).save(single / "a.png")
    with pytest.raises(DatasetError, match=">= 2 class folders"):
        load_dataset(f"imagefolder:{tmp_path / 'single'}")
    tiny = tmp_path / "tiny"
    for name in ("a", "b"):
        (tiny / name).mkdir(parents=True)
        Image.new("L", (8, 8)).save(tiny / name / "x.png")
    with pytest.raises(DatasetError, match="too few"):
        load_dataset(f"imagefolder:{tiny}")
