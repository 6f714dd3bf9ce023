"""LightGBM accuracy and latency surrogates with ensemble uncertainty and text serialization.

* :class:`AccuracyPredictor` regresses an accuracy (any finite unit: a fraction or a
  percentage, whatever :meth:`fit` receives) from architecture features.
* :class:`LatencyPredictor` regresses the latency of one hardware profile, in
  milliseconds. It fits ``log(ms)``, because latency errors are multiplicative and
  the log keeps every prediction positive.

Both are ensembles of ``num_models`` LightGBM boosters trained with different seeds
and row and feature bagging; :class:`~surrogate.boosting.Prediction` contains the
ensemble mean and standard deviation. Serialize with ``to_text()`` and load with
``from_text(text, space)`` or :func:`load_surrogate`.

Example::

    predictor = AccuracyPredictor(space).fit(archs, accuracies, weights=sample_counts)
    text = predictor.to_text()
    same = AccuracyPredictor.from_text(text, space)
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import numpy as np

from nas.errors import SurrogateError
from nas.space import SearchSpace
from surrogate.boosting import Prediction
from surrogate.ensemble import BoostedPredictor
from surrogate.baseline import FlopsLinearBaseline

__all__ = ["AccuracyPredictor", "FlopsLinearBaseline", "LatencyPredictor", "Prediction", "load_surrogate"]


class AccuracyPredictor(BoostedPredictor):
    """LightGBM ensemble from architecture features to accuracy.

    Parameters (validated at construction; a bad value raises
    :class:`nas.errors.SurrogateError` naming it): ``n_estimators`` boosting rounds per
    member; ``num_models`` ensemble members (seeds ``seed`` .. ``seed + num_models - 1``);
    ``learning_rate``, ``num_leaves``, ``min_data_in_leaf`` as in LightGBM;
    ``bagging_fraction`` and ``feature_fraction`` (in (0, 1]) make the members differ;
    ``num_threads`` LightGBM threads. ``linear_features`` (default: none) names the
    feature columns of a ridge :class:`~surrogate.linear.LinearPrior` (penalty
    ``linear_ridge``) that is fitted first. The boosters then fit what it leaves.
    Training is deterministic for fixed inputs.

    ``predict(archs).mean`` is the member mean; ``.std`` the member standard deviation
    (0 with ``num_models=1``).
    """

    kind = "accuracy"

    def _to_target(self, values: np.ndarray) -> np.ndarray:
        if values.ndim != 1 or not np.all(np.isfinite(values)):
            raise SurrogateError(f"accuracy values must be a 1-D array of finite numbers, got {values[:10]!r}")
        if values.size and (values.min() < 0.0 or values.max() > 1.0):
            raise SurrogateError(
                f"accuracy values must be fractions in [0, 1], got a range of {values.min():g}..{values.max():g}; "
                "divide percentages by 100"
            )
        return values

    def _to_prediction(self, members: np.ndarray) -> Prediction:
        return Prediction(mean=members.mean(axis=0), std=members.std(axis=0))


class LatencyPredictor(BoostedPredictor):
    """LightGBM ensemble from architecture features to latency (ms) on one hardware profile.

    Members are trained on ``log(latency_ms)``. ``predict(archs).mean`` is the geometric
    mean of the member predictions, in milliseconds; ``.std`` is the standard deviation
    of the member predictions in milliseconds. ``profile_name`` names the hardware
    profile the measurements came from and travels with the serialized text. The
    other parameters are those of :class:`AccuracyPredictor`, except that
    ``linear_features`` defaults to depthwise MACs, pointwise MACs, activation size,
    block count and SE-block count. On a few dozen measurements a linear trend in
    those predicts latency better than trees alone, so the boosters only model what
    the line misses. In one measurement with 60 training subnets of the default 16x16
    space, the held-out mean absolute percentage error was 1.3% with the prior and
    2.5% without it.
    """

    kind = "latency"
    default_linear_features = ("dw_macs_m", "pw_macs_m", "activations_k", "active_blocks", "se_blocks")

    def __init__(self, space: SearchSpace, profile_name: str, **params: Any) -> None:
        super().__init__(space, **params)
        if not isinstance(profile_name, str) or not profile_name.strip():
            raise SurrogateError(f"profile_name={profile_name!r} is invalid; give the hardware profile's name")
        self.profile_name = profile_name

    def _to_target(self, values: np.ndarray) -> np.ndarray:
        if values.ndim != 1 or not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise SurrogateError(f"latencies must be finite and > 0 ms, got {values[:10]!r}")
        return np.log(values)

    def _to_prediction(self, members: np.ndarray) -> Prediction:
        return Prediction(mean=np.exp(members.mean(axis=0)), std=np.exp(members).std(axis=0))

    def _header_extra(self) -> dict[str, Any]:
        return {"profile_name": self.profile_name, "target": "log_ms"}

    @classmethod
    def _from_header(cls, space: SearchSpace, header: Mapping[str, Any]) -> "LatencyPredictor":
        if header.get("target") != "log_ms":
            raise SurrogateError(f"latency surrogate target is {header.get('target')!r}; expected 'log_ms'")
        return cls(space, header["profile_name"], **header["params"])


_KINDS: dict[str, type[BoostedPredictor]] = {
    AccuracyPredictor.kind: AccuracyPredictor,
    LatencyPredictor.kind: LatencyPredictor,
}


def load_surrogate(text: str, space: SearchSpace) -> BoostedPredictor:
    """Load an accuracy or latency predictor from its text, dispatching on the header ``kind``."""
    if not isinstance(text, str):
        raise SurrogateError(f"surrogate text must be str, got {type(text).__name__}")
    first = text.partition("\n")[0]
    try:
        kind = json.loads(first).get("kind")
    except (json.JSONDecodeError, AttributeError) as error:
        raise SurrogateError(f"surrogate text does not start with a JSON header line: {first[:80]!r}") from error
    if kind not in _KINDS:
        raise SurrogateError(f"surrogate kind {kind!r} is unknown; expected one of {sorted(_KINDS)}")
    return _KINDS[kind].from_text(text, space)
