"""Pareto utilities checked against brute force on small random sets (with ties)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from nas.errors import SearchError
from nas.search.pareto import hypervolume_2d, non_dominated_sort, pareto_front_mask


def dominates(acc, lat, j, i) -> bool:
    return acc[j] >= acc[i] and lat[j] <= lat[i] and (acc[j] > acc[i] or lat[j] < lat[i])


def brute_front(acc, lat, indices) -> set[int]:
    return {i for i in indices if not any(dominates(acc, lat, j, i) for j in indices if j != i)}


def brute_hypervolume(acc, lat, reference) -> float:
    """Exact area of the union of rectangles [lat_i, lat_ref] x [acc_ref, acc_i] on the compressed grid."""
    acc_ref, lat_ref = reference
    xs = np.unique(np.concatenate([np.clip(lat, None, lat_ref), [lat_ref]]))
    ys = np.unique(np.concatenate([np.clip(acc, acc_ref, None), [acc_ref]]))
    area = 0.0
    for (x0, x1), (y0, y1) in itertools.product(zip(xs[:-1], xs[1:]), zip(ys[:-1], ys[1:])):
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        if any(lat[i] <= cx and acc[i] >= cy for i in range(len(acc))):
            area += (x1 - x0) * (y1 - y0)
    return area


def random_sets(count: int = 40):
    rng = np.random.default_rng(2024)
    for trial in range(count):
        size = int(rng.integers(1, 16))
        if trial % 2:
            # Small integer grids force ties and duplicate points.
            yield rng.integers(0, 4, size).astype(float) / 4, rng.integers(1, 5, size).astype(float)
        else:
            yield rng.random(size), rng.random(size) * 10


def test_front_mask_matches_brute_force():
    for acc, lat in random_sets():
        mask = pareto_front_mask(acc, lat)
        assert set(np.flatnonzero(mask)) == brute_front(acc, lat, range(len(acc)))


def test_non_dominated_sort_matches_brute_force_peeling():
    for acc, lat in random_sets():
        fronts = non_dominated_sort(acc, lat)
        remaining = set(range(len(acc)))
        for front in fronts:
            expected = brute_front(acc, lat, sorted(remaining))
            assert set(front.tolist()) == expected
            assert list(front) == sorted(front, key=lambda i: (lat[i], -acc[i], i))
            remaining -= expected
        assert not remaining
        assert sum(len(f) for f in fronts) == len(acc)


def test_hypervolume_matches_brute_force():
    for acc, lat in random_sets():
        reference = (float(np.min(acc)) - 0.1, float(np.max(lat)) + 0.5)
        assert hypervolume_2d(acc, lat, reference) == pytest.approx(brute_hypervolume(acc, lat, reference))


def test_hypervolume_reference_clips_points():
    acc = np.array([0.9, 0.5, 0.2])
    lat = np.array([5.0, 1.0, 0.5])
    # Reference (0.3, 4.0): the 5 ms point and the 0.2-accuracy point add nothing.
    assert hypervolume_2d(acc, lat, (0.3, 4.0)) == pytest.approx((4.0 - 1.0) * (0.5 - 0.3))
    assert hypervolume_2d(acc, lat, (0.95, 10.0)) == 0.0


def test_hypervolume_default_reference():
    acc, lat = np.array([0.5]), np.array([2.0])
    assert hypervolume_2d(acc, lat) == pytest.approx(0.5 * (2.2 - 2.0))
    assert hypervolume_2d([], []) == 0.0


def test_identical_points_share_front():
    fronts = non_dominated_sort([0.7, 0.7, 0.6], [1.0, 1.0, 1.0])
    assert [f.tolist() for f in fronts] == [[0, 1], [2]]


def test_pareto_rejects_bad_input():
    with pytest.raises(SearchError, match="acc has 2 values but lat has 3"):
        pareto_front_mask([0.1, 0.2], [1.0, 2.0, 3.0])
    with pytest.raises(SearchError, match="finite"):
        non_dominated_sort([0.1, np.nan], [1.0, 2.0])
    with pytest.raises(SearchError, match="reference"):
        hypervolume_2d([0.5], [1.0], (np.inf, 2.0))
