"""Turning a profile's budgets into milliseconds for one run."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from nas.errors import ProfileError

from hw_profiles.profile import QUANTILE_PATTERN, HardwareProfile


def quantile_of(budget: str) -> int:
    """Return the percentile (1 to 99) of a quantile budget such as ``"p25"``."""
    match = QUANTILE_PATTERN.match(budget)
    if match is None:
        raise ProfileError(f"budget {budget!r} is not a quantile; use 'p1' to 'p99'")
    return int(match.group(1))


def resolve_budgets(profile: HardwareProfile, latencies_ms: Sequence[float]) -> list[float]:
    """Return the profile's budgets in milliseconds, sorted ascending without duplicates.

    Absolute budgets pass through unchanged. A quantile budget ``"pNN"`` becomes
    ``numpy.percentile(latencies_ms, NN)`` (linear interpolation), where
    ``latencies_ms`` are the latencies measured for a sample of the search space on
    this device. ``latencies_ms`` may be empty only when every budget is absolute.
    """
    quantiles = profile.quantile_budgets
    values = np.asarray(list(latencies_ms), dtype=np.float64)
    if quantiles:
        if values.size == 0:
            raise ProfileError(
                f"profile {profile.name!r} has quantile budgets {list(quantiles)} but no latencies were "
                "given; measure a sample of the search space on this device first"
            )
        if not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise ProfileError(
                f"latencies for profile {profile.name!r} must be finite and positive milliseconds; "
                f"got min={values.min()!r}, max={values.max()!r}"
            )
    resolved = [float(np.percentile(values, quantile_of(b))) for b in quantiles]
    resolved.extend(profile.absolute_budgets_ms)
    unique: list[float] = []
    for value in sorted(resolved):
        if not unique or not math.isclose(value, unique[-1], rel_tol=1e-12, abs_tol=0.0):
            unique.append(value)
    return unique
