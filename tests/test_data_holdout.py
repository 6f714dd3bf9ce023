"""Public/private holdout: disjoint, deterministic, stratified."""

import numpy as np
import pytest

from nas.data import load_dataset, split_public_private
from nas.errors import DatasetError


def _rows(split):
    return {row.tobytes() for row in split.x}


def test_holdout_parts_are_disjoint_and_cover_split():
    splits = load_dataset("digits", seed=0)
    public = split_public_private(splits, "public", seed=3)
    private = split_public_private(splits, "private", seed=3)
    for name in ("train", "val", "test"):
        whole, pub, priv = getattr(splits, name), getattr(public, name), getattr(private, name)
        assert len(pub) + len(priv) == len(whole)
        assert not (_rows(pub) & _rows(priv))
        assert abs(len(pub) - len(priv)) <= splits.num_classes


def test_holdout_keeps_label_distribution():
    splits = load_dataset("digits", seed=0)
    private = split_public_private(splits, "private", private_fraction=0.5, seed=1)
    whole = splits.train.class_counts(10) / len(splits.train)
    part = private.train.class_counts(10) / len(private.train)
    assert np.max(np.abs(whole - part)) < 0.02


def test_holdout_is_deterministic_for_seed():
    splits = load_dataset("digits", seed=0)
    first = split_public_private(splits, "private", seed=5)
    second = split_public_private(splits, "private", seed=5)
    other = split_public_private(splits, "private", seed=6)
    assert np.array_equal(first.train.x, second.train.x)
    assert not np.array_equal(first.train.x, other.train.x)


@pytest.mark.parametrize("role, fraction", [("shared", 0.5), ("public", 1.0), ("private", 0.0)])
def test_holdout_rejects_invalid_request(role, fraction):
    splits = load_dataset("digits", seed=0)
    with pytest.raises(DatasetError):
        split_public_private(splits, role, private_fraction=fraction)
