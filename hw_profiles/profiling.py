"""Profiling a device: measure the latency of a random sample of a search space."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from nas.progress import progress as show_progress
from hw_profiles.latency import ModelSource, measure_latency
from hw_profiles.profile import HardwareProfile

if TYPE_CHECKING:
    from nas.space import Architecture, SearchSpace

logger = logging.getLogger(__name__)


def profile_space(
    space: "SearchSpace",
    profile: HardwareProfile,
    num_samples: int,
    export_fn: Callable[["Architecture"], ModelSource],
    seed: int,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Measure ``num_samples`` distinct random architectures of ``space`` under ``profile``.

    Architectures are drawn with ``space.sample`` from ``numpy.random.default_rng(seed)``
    and de-duplicated; ``export_fn`` turns each into an fp32 ONNX model (path, bytes or
    ModelProto). Each returned row contains ``"architecture"`` (JSON text), ``"encoding"``
    (list of int) and every field of :class:`~hw_profiles.latency.LatencyMeasurement`.
    The medians (``row["median_ms"]``) are the latencies that
    :func:`hw_profiles.budgets.resolve_budgets` takes.
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples={num_samples!r} is invalid; use a positive int")
    if num_samples > space.size():
        raise ValueError(f"num_samples={num_samples} exceeds the {space.size()} architectures in the space")
    rng = np.random.default_rng(seed)
    architectures: list[Architecture] = []
    seen: set[Architecture] = set()
    max_draws = 100 * num_samples
    draws = 0
    while len(architectures) < num_samples and draws < max_draws:
        draws += 1
        arch = space.sample(rng)
        if arch not in seen:
            seen.add(arch)
            architectures.append(arch)
    if len(architectures) < num_samples:
        logger.warning("found only %d distinct architectures in %d draws", len(architectures), draws)

    rows: list[dict[str, Any]] = []
    for arch in show_progress(architectures, desc=f"latency on {profile.name}", enabled=progress):
        measurement = measure_latency(export_fn(arch), profile)
        rows.append({"architecture": arch.to_json(), "encoding": space.encode(arch), **measurement.to_dict()})
    return rows
