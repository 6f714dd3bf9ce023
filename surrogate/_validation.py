"""Parameter and input checks shared by the surrogate modules; each error names the value."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from nas.errors import SurrogateError


def check_int(name: str, value: Any, minimum: int) -> int:
    """Return ``value`` as int if it is an integer >= ``minimum``, else raise naming it."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise SurrogateError(f"{name}={value!r} is invalid; use an int >= {minimum}")
    return int(value)


def check_fraction(name: str, value: Any) -> float:
    """Return ``value`` as float if it lies in (0, 1], else raise naming it."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0.0 < float(value) <= 1.0:
        raise SurrogateError(f"{name}={value!r} is invalid; use a float in (0, 1]")
    return float(value)


def check_non_negative(name: str, value: Any) -> float:
    """Return ``value`` as float if it is finite and >= 0, else raise naming it."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise SurrogateError(f"{name}={value!r} is invalid; use a finite float >= 0")
    return float(value)


def check_weights(weights: Any, n: int) -> np.ndarray | None:
    """Return ``weights`` as a float64 array of shape ``(n,)``, or None; raise on bad values."""
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise SurrogateError(f"weights must have shape ({n},), got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or (n > 0 and w.sum() <= 0):
        raise SurrogateError(f"weights must be finite, >= 0 and not all 0; got {w.tolist()[:10]}")
    return w
