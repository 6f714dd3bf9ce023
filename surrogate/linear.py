"""Linear prior of a boosted surrogate: a ridge fit on a few named features.

Gradient-boosted trees are piecewise constant, so on a few dozen training points
they interpolate a smooth trend such as "latency grows with MACs and block count"
worse than a straight line does. A :class:`LinearPrior` captures that trend first;
the boosters are then trained on what it leaves (LightGBM ``init_score``) and the
prediction is ``prior(x) + booster(x)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from nas.errors import SurrogateError

__all__ = ["LinearPrior"]


@dataclass(frozen=True)
class LinearPrior:
    """``intercept + sum(coefficients[j] * x[features[j]])`` over named feature columns."""

    features: tuple[str, ...]
    intercept: float
    coefficients: tuple[float, ...]

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        weights: np.ndarray | None,
        *,
        names: Sequence[str],
        features: Sequence[str],
        ridge: float,
    ) -> "LinearPrior":
        """Fit by weighted ridge regression on standardized columns (intercept not penalized).

        ``ridge`` is the L2 penalty relative to the total weight, so its effect does not
        depend on how many rows there are or how the weights are scaled.
        """
        columns = _columns(names, features)
        w = np.ones(y.size) if weights is None else weights / weights.mean()
        a = x[:, columns]
        mean = np.average(a, axis=0, weights=w) if columns else np.zeros(0)
        scale = np.sqrt(np.average((a - mean) ** 2, axis=0, weights=w)) if columns else np.zeros(0)
        scale = np.where(scale > 0, scale, 1.0)
        z = (a - mean) / scale
        y_mean = float(np.average(y, weights=w))
        gram = (z * w[:, None]).T @ z + ridge * w.sum() * np.eye(len(columns))
        beta = np.linalg.solve(gram, (z * w[:, None]).T @ (y - y_mean)) if columns else np.zeros(0)
        coefficients = beta / scale
        intercept = y_mean - float(coefficients @ mean)
        return cls(tuple(features), intercept, tuple(float(c) for c in coefficients))

    def predict(self, x: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """Return the prior for feature rows ``x`` whose columns are ``names``."""
        columns = _columns(names, self.features)
        return self.intercept + x[:, columns] @ np.asarray(self.coefficients, dtype=np.float64)

    def to_header(self) -> dict[str, Any]:
        return {"features": list(self.features), "intercept": self.intercept,
                "coefficients": list(self.coefficients)}

    @classmethod
    def from_header(cls, data: Mapping[str, Any]) -> "LinearPrior":
        try:
            prior = cls(tuple(str(f) for f in data["features"]), float(data["intercept"]),
                        tuple(float(c) for c in data["coefficients"]))
        except (KeyError, TypeError, ValueError) as error:
            raise SurrogateError(f"linear prior in the surrogate header is invalid: {error!r}") from error
        if len(prior.features) != len(prior.coefficients):
            raise SurrogateError(
                f"linear prior has {len(prior.features)} features but {len(prior.coefficients)} coefficients"
            )
        return prior


def _columns(names: Sequence[str], features: Sequence[str]) -> list[int]:
    index = {name: i for i, name in enumerate(names)}
    missing = [f for f in features if f not in index]
    if missing:
        raise SurrogateError(f"linear prior features {missing} are not feature names; known: {list(names)}")
    return [index[f] for f in features]
