"""Corrections of a base surrogate from observed results (the transfer step).

A base surrogate is fitted where data is cheap (public data, or one device). Clients
then observe the true value of some architectures in their own setting (accuracy on
private data, latency on their device). :func:`correct_accuracy` and
:func:`correct_latency` turn those observations into a corrected copy of the base.

Method, in the predictor's target space (accuracy as is; latency in log ms):

1. Residuals ``r_i = y_i - base(x_i)`` of the ``n`` observations; weights (for
   example evaluation sample counts) are rescaled to mean 1. ``n_eff`` is Kish's
   effective sample size ``(sum w)**2 / sum(w**2)``, which equals ``n`` for equal
   weights.
2. Shrinkage ``lam = n_eff / (n_eff + prior_strength)``: the base acts as
   ``prior_strength`` pseudo-observations with zero residual.
3. Offset ``m``: the weighted mean of ``r`` (accuracy: private domain shift) or its
   weighted median (latency: a multiplicative per-device calibration factor
   ``exp(m)``, robust to timing outliers).
4. Once ``n >= min_residual_observations``, a residual LightGBM ensemble ``h`` (same
   features, ``base.num_models`` members) is fitted to ``r - m``. It captures shifts
   that depend on the architecture, which a constant offset cannot. It is kept only
   if it passes a ``residual_cv_folds``-fold cross-validation: its held-out weighted
   squared error must be lower than that of ``r - m`` alone. Noisy observations (a
   few dozen validation images per accuracy) otherwise teach it noise, which makes
   the ranking of architectures worse than the base's.
5. The corrected member ``i`` predicts ``base_i(x) + lam * (m + h_i(x))``.

So with no observations the prediction is exactly the base's. With few it moves only
part of the way, because ``lam`` is small and there is no residual model. With many,
``lam`` tends to 1 and the residual model makes it follow the observations. Corrections do not stack: the
residuals are always taken against the uncorrected base, so pass every observation
collected so far, not only the newest, when correcting an already corrected predictor.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence, TypeVar

import numpy as np

from nas.errors import SurrogateError
from nas.space import Architecture
from surrogate.boosting import Correction, lgb_params, train_boosters
from surrogate.ensemble import BoostedPredictor
from surrogate._validation import check_fraction, check_int, check_non_negative, check_weights
from surrogate.features import arch_features
from surrogate.predictor import AccuracyPredictor, LatencyPredictor

logger = logging.getLogger(__name__)

__all__ = ["correct_accuracy", "correct_latency", "weighted_median"]

P = TypeVar("P", bound=BoostedPredictor)

_RESIDUAL_SEED_OFFSET = 7919


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """Return the lower weighted median of ``values`` (the smallest value holding half the weight)."""
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    index = int(np.searchsorted(cumulative, 0.5 * cumulative[-1]))
    return float(values[order][min(index, values.size - 1)])


def _check_settings(prior_strength: Any, **integers: Any) -> None:
    check_non_negative("prior_strength", prior_strength)
    for name, value in integers.items():
        check_int(name, value, 2 if name == "residual_num_leaves" else 1)


def _correct(
    base: P,
    archs: Sequence[Architecture],
    targets: np.ndarray,
    weights: Any,
    *,
    robust: bool,
    prior_strength: float,
    min_residual_observations: int,
    residual_rounds: int,
    residual_learning_rate: float,
    residual_num_leaves: int,
    residual_min_data_in_leaf: int,
    residual_cv_folds: int,
) -> P:
    _check_settings(
        prior_strength, min_residual_observations=min_residual_observations, residual_rounds=residual_rounds,
        residual_num_leaves=residual_num_leaves, residual_min_data_in_leaf=residual_min_data_in_leaf,
    )
    folds_valid = isinstance(residual_cv_folds, int) and not isinstance(residual_cv_folds, bool)
    if not folds_valid or residual_cv_folds == 1 or residual_cv_folds < 0:
        raise SurrogateError(f"residual_cv_folds={residual_cv_folds!r} is invalid; use 0 (no check) or an integer >= 2")
    check_fraction("residual_learning_rate", residual_learning_rate)
    if not base.is_fitted:
        raise SurrogateError(f"cannot correct an unfitted {type(base).__name__}; fit it first")
    n = len(archs)
    if targets.shape != (n,):
        raise SurrogateError(f"got {n} architectures but {targets.shape} observed values")
    w = check_weights(weights, n)
    if n == 0:
        return base.with_correction(Correction(0, 0.0, float(prior_strength), 0.0, 0.0))

    total_weight = float(w.sum()) if w is not None else float(n)
    w = np.ones(n) if w is None else w / w.mean()
    n_eff = float(w.sum() ** 2 / np.sum(w**2))
    lam = n_eff / (n_eff + prior_strength)
    residuals = targets - base.member_outputs(archs, corrected=False).mean(axis=0)
    center = weighted_median(residuals, w) if robust else float(np.average(residuals, weights=w))

    boosters: tuple = ()
    if n >= min_residual_observations:
        params = lgb_params(
            learning_rate=residual_learning_rate, num_leaves=residual_num_leaves,
            min_data_in_leaf=residual_min_data_in_leaf, bagging_fraction=base.bagging_fraction,
            feature_fraction=base.feature_fraction, num_threads=base.num_threads,
            seed=base.seed + _RESIDUAL_SEED_OFFSET,
        )
        features = arch_features(base.space, archs)
        fit = dict(params=params, num_rounds=residual_rounds, names=base.feature_names)
        gain = _cross_validated_gain(features, residuals - center, w, residual_cv_folds, base.seed, fit)
        if gain is None or gain > 0:
            boosters = train_boosters(features, residuals - center, w, num_models=base.num_models, **fit)
        else:
            logger.debug("%s correction: residual model dropped, it does not lower the cross-validated error "
                         "(gain %.3g)", base.kind, gain)

    logger.debug("%s correction: n=%d n_eff=%.2f lam=%.3f offset=%.4g residual_models=%d",
                 base.kind, n, n_eff, lam, center, len(boosters))
    correction = Correction(
        num_observations=n, total_weight=total_weight, prior_strength=float(prior_strength),
        offset=lam * center, residual_scale=lam, residual_boosters=boosters,
    )
    return base.with_correction(correction)


def _cross_validated_gain(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, folds: int, seed: int, fit: dict[str, Any]
) -> float | None:
    """Return how much a one-member residual model lowers the held-out weighted squared error of ``y``.

    The reference predicts 0 (``y`` is already centred). A positive gain means the model
    helps. Returns None when ``folds`` is 0 (no check).
    """
    if folds == 0:
        return None
    order = np.random.default_rng(seed).permutation(len(y))
    without = with_model = 0.0
    for held_out in np.array_split(order, min(folds, len(y))):
        train = np.setdiff1d(order, held_out)
        (booster,) = train_boosters(x[train], y[train], w[train], num_models=1, **fit)
        errors = y[held_out] - booster.predict(x[held_out])
        without += float(np.sum(w[held_out] * y[held_out] ** 2))
        with_model += float(np.sum(w[held_out] * errors**2))
    return without - with_model


def correct_accuracy(
    base: AccuracyPredictor,
    archs: Sequence[Architecture],
    observed: Any,
    weights: Any = None,
    *,
    prior_strength: float = 4.0,
    min_residual_observations: int = 16,
    residual_rounds: int = 100,
    residual_learning_rate: float = 0.05,
    residual_num_leaves: int = 7,
    residual_min_data_in_leaf: int = 3,
    residual_cv_folds: int = 4,
) -> AccuracyPredictor:
    """Return a copy of ``base`` corrected by observed accuracies (see the module docstring).

    ``observed`` contains one accuracy per architecture in the unit ``base`` was fitted in;
    ``weights`` (optional, >= 0) weighs them, typically by evaluation sample count.
    ``prior_strength`` is the base's weight in pseudo-observations. The residual booster
    (``residual_rounds`` rounds at ``residual_learning_rate``, ``residual_num_leaves``
    leaves, ``residual_min_data_in_leaf`` rows per leaf) is fitted only from
    ``min_residual_observations`` observations on, and kept only if it lowers the
    ``residual_cv_folds``-fold cross-validated error (0 keeps it unchecked). The result records
    ``num_observations``; ``base`` is not modified.
    """
    if not isinstance(base, AccuracyPredictor):
        raise SurrogateError(f"correct_accuracy needs an AccuracyPredictor, got {type(base).__name__}")
    y = np.asarray(observed, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(y)):
        raise SurrogateError(f"observed accuracies must be finite, got {y[:10].tolist()}")
    return _correct(
        base, archs, y, weights, robust=False, prior_strength=prior_strength,
        min_residual_observations=min_residual_observations, residual_rounds=residual_rounds,
        residual_learning_rate=residual_learning_rate, residual_num_leaves=residual_num_leaves,
        residual_min_data_in_leaf=residual_min_data_in_leaf, residual_cv_folds=residual_cv_folds,
    )


def correct_latency(
    base: LatencyPredictor,
    archs: Sequence[Architecture],
    observed_ms: Any,
    weights: Any = None,
    *,
    profile_name: str | None = None,
    prior_strength: float = 0.5,
    min_residual_observations: int = 16,
    residual_rounds: int = 100,
    residual_learning_rate: float = 0.05,
    residual_num_leaves: int = 7,
    residual_min_data_in_leaf: int = 3,
    residual_cv_folds: int = 4,
) -> LatencyPredictor:
    """Return a copy of ``base`` calibrated to latencies observed on one device (in ms).

    The calibration is multiplicative: a shrunk weighted median of
    ``log(observed / predicted)``, plus a residual ensemble in log space once there are
    ``min_residual_observations`` observations (see the module docstring for every
    parameter). ``profile_name`` names the device the observations came from; it
    defaults to ``base.profile_name``. ``base`` is not modified.

    The default ``prior_strength`` is weak: a latency measurement varies by a few percent,
    while two devices can differ by an order of magnitude, so even one observation pins
    down most of the device's scale.
    """
    if not isinstance(base, LatencyPredictor):
        raise SurrogateError(f"correct_latency needs a LatencyPredictor, got {type(base).__name__}")
    y = np.asarray(observed_ms, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise SurrogateError(f"observed latencies must be finite and > 0 ms, got {y[:10].tolist()}")
    corrected = _correct(
        base, archs, np.log(y), weights, robust=True, prior_strength=prior_strength,
        min_residual_observations=min_residual_observations, residual_rounds=residual_rounds,
        residual_learning_rate=residual_learning_rate, residual_num_leaves=residual_num_leaves,
        residual_min_data_in_leaf=residual_min_data_in_leaf, residual_cv_folds=residual_cv_folds,
    )
    if profile_name is not None:
        if not isinstance(profile_name, str) or not profile_name.strip():
            raise SurrogateError(f"profile_name={profile_name!r} is invalid; give the device profile's name")
        corrected.profile_name = profile_name
    return corrected
