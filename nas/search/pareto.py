"""Pareto utilities for accuracy (maximized) against latency (minimized).

Point ``j`` dominates point ``i`` when ``acc[j] >= acc[i]`` and ``lat[j] <= lat[i]``
with at least one strict inequality. Identical points do not dominate each other,
so both stay on the same front.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from nas.errors import SearchError

__all__ = ["pareto_front_mask", "non_dominated_sort", "hypervolume_2d"]


Values = Sequence[float] | np.ndarray


def _validate(acc: Values, lat: Values) -> tuple[np.ndarray, np.ndarray]:
    accuracy = np.asarray(acc, dtype=np.float64).reshape(-1)
    latency = np.asarray(lat, dtype=np.float64).reshape(-1)
    if accuracy.shape != latency.shape:
        raise SearchError(f"acc has {accuracy.size} values but lat has {latency.size}; give one of each per point")
    if not (np.all(np.isfinite(accuracy)) and np.all(np.isfinite(latency))):
        raise SearchError("acc and lat must be finite; drop points with NaN or infinite values first")
    return accuracy, latency


def _front_mask(accuracy: np.ndarray, latency: np.ndarray) -> np.ndarray:
    """Return the non-dominated mask, in O(n log n): sweep by latency, track the best accuracy so far."""
    mask = np.zeros(accuracy.size, dtype=bool)
    order = np.lexsort((-accuracy, latency))
    best_faster = -np.inf  # best accuracy among points with strictly lower latency
    start = 0
    while start < order.size:
        stop = start
        while stop < order.size and latency[order[stop]] == latency[order[start]]:
            stop += 1
        group = order[start:stop]
        group_best = accuracy[group[0]]  # sorted by accuracy descending within equal latency
        for index in group:
            mask[index] = accuracy[index] == group_best and accuracy[index] > best_faster
        best_faster = max(best_faster, group_best)
        start = stop
    return mask


def pareto_front_mask(acc: Values, lat: Values) -> np.ndarray:
    """Return a boolean mask of the points no other point dominates."""
    accuracy, latency = _validate(acc, lat)
    return _front_mask(accuracy, latency)


def non_dominated_sort(acc: Values, lat: Values) -> list[np.ndarray]:
    """Return the Pareto fronts as arrays of point indices, first front first.

    Front 0 is the non-dominated set; front ``r`` is the non-dominated set of the
    points left after removing fronts ``0..r-1``. Within a front, indices are sorted
    by latency ascending (then accuracy descending, then index).
    """
    accuracy, latency = _validate(acc, lat)
    remaining = np.arange(accuracy.size)
    fronts = []
    while remaining.size:
        mask = _front_mask(accuracy[remaining], latency[remaining])
        front = remaining[mask]
        fronts.append(front[np.lexsort((front, -accuracy[front], latency[front]))])
        remaining = remaining[~mask]
    return fronts


def hypervolume_2d(
    acc: Values,
    lat: Values,
    reference: tuple[float, float] | None = None,
) -> float:
    """Return the area (accuracy x ms) dominated by the points and bounded by ``reference``.

    ``reference = (acc_ref, lat_ref)`` is the worst corner: the region counted is
    ``acc_ref <= a <= acc_i`` and ``lat_i <= l <= lat_ref`` for some point ``i``.
    Points with ``acc <= acc_ref`` or ``lat >= lat_ref`` add nothing. The default
    reference is ``(0.0, 1.1 * max(lat))``. Pass a fixed reference to compare runs,
    because the default depends on the points.
    """
    accuracy, latency = _validate(acc, lat)
    if accuracy.size == 0:
        return 0.0
    acc_ref, lat_ref = (0.0, 1.1 * float(latency.max())) if reference is None else map(float, reference)
    if not (np.isfinite(acc_ref) and np.isfinite(lat_ref)):
        raise SearchError(f"reference={reference!r} is invalid; give finite (acc_ref, lat_ref)")
    inside = (accuracy > acc_ref) & (latency < lat_ref)
    accuracy, latency = accuracy[inside], latency[inside]
    if accuracy.size == 0:
        return 0.0
    front = np.flatnonzero(_front_mask(accuracy, latency))
    front = front[np.argsort(latency[front], kind="stable")]
    # Along the front latency rises and accuracy rises, so between consecutive
    # latencies the best reachable accuracy is that of the faster point.
    edges = np.append(latency[front], lat_ref)
    return float(np.sum(np.diff(edges) * (accuracy[front] - acc_ref)))
