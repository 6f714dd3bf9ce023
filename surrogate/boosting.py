"""LightGBM building blocks of the surrogates: deterministic parameters, member training, outputs.

A surrogate is an ensemble of ``num_models`` boosters trained on the same rows with
different seeds and row and feature bagging, so the spread of their outputs
estimates the uncertainty (:class:`Prediction`). A :class:`Correction` adds an
offset and a scaled residual ensemble to every member, in the predictor's target
space; :mod:`surrogate.correction` builds it from observations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import lightgbm as lgb
import numpy as np

__all__ = ["Prediction", "Correction", "lgb_params", "train_boosters"]


@dataclass(frozen=True)
class Prediction:
    """Predictions for a batch of architectures: ensemble ``mean`` and spread ``std``.

    Both are float64 arrays of shape ``(n,)`` in the unit of the predictor
    (accuracy: the unit of the fitted values; latency: milliseconds).
    """

    mean: np.ndarray
    std: np.ndarray

    def __len__(self) -> int:
        return int(self.mean.shape[0])


@dataclass(frozen=True)
class Correction:
    """Correction state, in the predictor's target space.

    Member ``i`` predicts ``base_i(x) + offset + residual_scale * residual_i(x)``, where
    ``residual_i`` is ``residual_boosters[i % len(residual_boosters)]`` (absent when
    empty). ``num_observations`` and ``total_weight`` record what it was fitted on.
    """

    num_observations: int
    total_weight: float
    prior_strength: float
    offset: float
    residual_scale: float
    residual_boosters: tuple[lgb.Booster, ...] = ()

    def to_header(self) -> dict[str, Any]:
        return {
            "num_observations": self.num_observations,
            "total_weight": self.total_weight,
            "prior_strength": self.prior_strength,
            "offset": self.offset,
            "residual_scale": self.residual_scale,
            "num_residual_models": len(self.residual_boosters),
        }


def lgb_params(
    *,
    learning_rate: float,
    num_leaves: int,
    min_data_in_leaf: int,
    bagging_fraction: float,
    feature_fraction: float,
    num_threads: int,
    seed: int,
) -> dict[str, Any]:
    """Return deterministic LightGBM regression parameters (quiet, few threads)."""
    return {
        "objective": "regression",
        "learning_rate": learning_rate,
        "num_leaves": num_leaves,
        "min_data_in_leaf": min_data_in_leaf,
        "min_data_in_bin": 1,
        "bagging_fraction": bagging_fraction,
        "bagging_freq": 1 if bagging_fraction < 1.0 else 0,
        "feature_fraction": feature_fraction,
        "num_threads": num_threads,
        "deterministic": True,
        "force_row_wise": True,
        "verbose": -1,
        "seed": seed,
    }


def train_boosters(
    x: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray | None,
    *,
    params: Mapping[str, Any],
    num_rounds: int,
    num_models: int,
    names: Sequence[str],
    init_score: np.ndarray | None = None,
) -> tuple[lgb.Booster, ...]:
    """Train ``num_models`` boosters on ``(x, y, weights)``; member ``i`` uses seed ``params['seed'] + i``.

    With ``init_score`` the boosters learn ``y - init_score`` (their output excludes it).
    """
    boosters = []
    for member in range(num_models):
        member_params = dict(params, seed=int(params["seed"]) + member)
        data = lgb.Dataset(
            x, label=y, weight=weights, init_score=init_score, feature_name=list(names), params=member_params
        )
        boosters.append(lgb.train(member_params, data, num_boost_round=num_rounds))
    return tuple(boosters)
