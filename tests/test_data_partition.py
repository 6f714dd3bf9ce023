"""Partitioning a real dataset (scikit-learn digits) across federated clients."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from nas.data import (
    ClientData,
    DatasetSplits,
    format_partition_summary,
    load_dataset,
    partition,
    partition_summary,
)
from nas.errors import DatasetError

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def digits() -> DatasetSplits:
    return load_dataset("digits")


def _samples(split) -> Counter:
    return Counter(x.tobytes() + bytes([int(y)]) for x, y in zip(split.x, split.y))


def _distribution(counts: np.ndarray) -> np.ndarray:
    return counts / counts.sum()


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_partition_assigns_samples_once(digits: DatasetSplits, scheme: str) -> None:
    clients = partition(digits, 7, scheme=scheme, alpha=0.3, seed=4)
    assert [c.client_id for c in clients] == list(range(7))
    for name in SPLITS:
        merged = Counter()
        for client in clients:
            merged.update(_samples(getattr(client, name)))
        assert merged == _samples(getattr(digits, name))
    client = clients[0]
    assert isinstance(client, ClientData)
    assert (client.num_classes, client.in_channels, client.task) == (10, 1, "multi-class")


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_partition_deterministic_for_seed(digits: DatasetSplits, scheme: str) -> None:
    first = partition(digits, 5, scheme=scheme, seed=11)
    again = partition(digits, 5, scheme=scheme, seed=11)
    other = partition(digits, 5, scheme=scheme, seed=12)
    for a, b in zip(first, again):
        for name in SPLITS:
            np.testing.assert_array_equal(getattr(a, name).x, getattr(b, name).x)
            np.testing.assert_array_equal(getattr(a, name).y, getattr(b, name).y)
    assert any(not np.array_equal(a.train.y, b.train.y) for a, b in zip(first, other))


def test_iid_clients_are_balanced(digits: DatasetSplits) -> None:
    clients = partition(digits, 6, seed=0)
    global_share = _distribution(digits.train.class_counts(10))
    for name in SPLITS:
        sizes = [len(getattr(c, name)) for c in clients]
        assert max(sizes) - min(sizes) <= 1
    for client in clients:
        share = _distribution(client.train.class_counts(10))
        assert 0.5 * np.abs(share - global_share).sum() < 0.05


def test_dirichlet_skew_follows_alpha(digits: DatasetSplits) -> None:
    global_share = _distribution(digits.train.class_counts(10))

    def mean_distance(clients: list[ClientData]) -> float:
        return float(np.mean([
            0.5 * np.abs(_distribution(c.train.class_counts(10)) - global_share).sum() for c in clients
        ]))

    skewed = partition(digits, 5, scheme="dirichlet", alpha=0.1, seed=2)
    mild = partition(digits, 5, scheme="dirichlet", alpha=1000.0, seed=2)
    assert mean_distance(skewed) > 0.4
    assert mean_distance(mild) < 0.1
    for client in skewed:
        train = _distribution(client.train.class_counts(10))
        test = _distribution(client.test.class_counts(10))
        assert 0.5 * np.abs(train - test).sum() < 0.5 * np.abs(train - global_share).sum()


def test_every_client_gets_every_split(digits: DatasetSplits) -> None:
    clients = partition(digits, len(digits.val), scheme="dirichlet", alpha=0.05, seed=0)
    for client in clients:
        assert min(len(client.train), len(client.val), len(client.test)) >= 1


def test_partition_rejects_bad_settings(digits: DatasetSplits) -> None:
    too_many = len(digits.val) + 1
    with pytest.raises(DatasetError, match=rf"val split has only {len(digits.val)} samples.*client"):
        partition(digits, too_many)
    with pytest.raises(DatasetError, match="num_clients=0"):
        partition(digits, 0)
    with pytest.raises(DatasetError, match="scheme='pathological'"):
        partition(digits, 3, scheme="pathological")
    with pytest.raises(DatasetError, match="alpha"):
        partition(digits, 3, scheme="dirichlet", alpha=0.0)


def test_summary_counts_and_table(digits: DatasetSplits) -> None:
    clients = partition(digits, 4, scheme="dirichlet", alpha=0.5, seed=1)
    summary = partition_summary(clients)
    assert [row["client_id"] for row in summary] == [0, 1, 2, 3]
    for name in SPLITS:
        assert sum(row[name] for row in summary) == len(getattr(digits, name))
        totals = np.sum([row["class_counts"][name] for row in summary], axis=0)
        np.testing.assert_array_equal(totals, getattr(digits, name).class_counts(10))
    table = format_partition_summary(clients)
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["client", "train", "val", "test"]
    assert len(lines) == 1 + 4 + 1
    assert lines[-1].split()[1] == str(len(digits.train))
    assert format_partition_summary(summary) == table
