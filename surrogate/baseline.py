"""FLOPs-linear latency baseline: ``latency_ms = intercept + slope * MACs``.

Every latency quality report shows this baseline beside the LightGBM predictor, so
a reader can see what the learned model adds over counting multiply-accumulates.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from nas.complexity import count_macs
from nas.errors import SurrogateError
from nas.space import Architecture, SearchSpace
from surrogate._validation import check_weights

__all__ = ["FlopsLinearBaseline"]


class FlopsLinearBaseline:
    """Least-squares line from MACs (millions, one image) to latency (ms).

    After :meth:`fit`, ``intercept_ms`` and ``slope_ms_per_mmac`` hold the line.
    """

    def __init__(self, space: SearchSpace) -> None:
        if not isinstance(space, SearchSpace):
            raise SurrogateError(f"space must be a SearchSpace, got {type(space).__name__}")
        self.space = space
        self.intercept_ms: float | None = None
        self.slope_ms_per_mmac: float | None = None

    def _macs_m(self, archs: Sequence[Architecture]) -> np.ndarray:
        return np.array([count_macs(self.space, arch) / 1e6 for arch in archs], dtype=np.float64)

    def fit(self, archs: Sequence[Architecture], latencies_ms: Any, weights: Any = None) -> "FlopsLinearBaseline":
        """Fit the line by (optionally weighted) least squares; needs two distinct MAC counts."""
        macs = self._macs_m(archs)
        y = np.asarray(latencies_ms, dtype=np.float64)
        if y.shape != macs.shape:
            raise SurrogateError(f"got {macs.size} architectures but latencies of shape {y.shape}")
        if not np.all(np.isfinite(y)) or np.any(y <= 0):
            raise SurrogateError(f"latencies must be finite and > 0 ms, got {y[:10].tolist()}")
        if np.unique(macs).size < 2:
            raise SurrogateError("the FLOPs baseline needs architectures with at least 2 distinct MAC counts")
        w = check_weights(weights, y.size)
        root = np.sqrt(w) if w is not None else np.ones_like(y)
        design = np.stack([np.ones_like(macs), macs], axis=1) * root[:, None]
        coefficients, *_ = np.linalg.lstsq(design, y * root, rcond=None)
        self.intercept_ms, self.slope_ms_per_mmac = float(coefficients[0]), float(coefficients[1])
        return self

    def predict(self, archs: Sequence[Architecture]) -> np.ndarray:
        """Return predicted latencies in ms, shape ``(len(archs),)``."""
        if self.intercept_ms is None or self.slope_ms_per_mmac is None:
            raise SurrogateError("FlopsLinearBaseline is not fitted; call fit(archs, latencies_ms) first")
        return self.intercept_ms + self.slope_ms_per_mmac * self._macs_m(archs)
