"""The common base of the accuracy and latency surrogates: fit, predict, correct, serialize.

A :class:`BoostedPredictor` fits ``num_models`` LightGBM regressors (see
:mod:`surrogate.boosting`) on :func:`surrogate.features.arch_features`, optionally
on top of a :class:`~surrogate.linear.LinearPrior`. Subclasses fix the target
(accuracy as is, latency in log milliseconds) through
:meth:`BoostedPredictor._to_target` and :meth:`BoostedPredictor._to_prediction`.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, ClassVar, Mapping, Sequence, TypeVar

import lightgbm as lgb
import numpy as np

from nas.errors import SurrogateError
from nas.space import Architecture, SearchSpace
from surrogate._validation import check_fraction, check_int, check_non_negative, check_weights
from surrogate.boosting import Correction, Prediction, train_boosters
from surrogate.boosting import lgb_params as make_lgb_params
from surrogate.features import FEATURE_SCHEMA_VERSION, arch_features, feature_names
from surrogate.linear import LinearPrior
from surrogate.serialization import dump_text, parse_text

logger = logging.getLogger(__name__)

__all__ = ["BoostedPredictor"]

P = TypeVar("P", bound="BoostedPredictor")


class BoostedPredictor:
    """Ensemble of LightGBM boosters from :func:`surrogate.features.arch_features` to a target."""

    kind: ClassVar[str] = ""
    default_linear_features: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        space: SearchSpace,
        *,
        n_estimators: int = 150,
        num_models: int = 5,
        learning_rate: float = 0.1,
        num_leaves: int = 15,
        min_data_in_leaf: int = 5,
        bagging_fraction: float = 0.8,
        feature_fraction: float = 0.8,
        num_threads: int = 1,
        seed: int = 0,
        linear_features: Sequence[str] | None = None,
        linear_ridge: float = 0.01,
    ) -> None:
        if not isinstance(space, SearchSpace):
            raise SurrogateError(f"space must be a SearchSpace, got {type(space).__name__}")
        self.space = space
        self.n_estimators = check_int("n_estimators", n_estimators, 1)
        self.num_models = check_int("num_models", num_models, 1)
        self.learning_rate = check_fraction("learning_rate", learning_rate)
        self.num_leaves = check_int("num_leaves", num_leaves, 2)
        self.min_data_in_leaf = check_int("min_data_in_leaf", min_data_in_leaf, 1)
        self.bagging_fraction = check_fraction("bagging_fraction", bagging_fraction)
        self.feature_fraction = check_fraction("feature_fraction", feature_fraction)
        self.num_threads = check_int("num_threads", num_threads, 1)
        self.seed = check_int("seed", seed, 0)
        if linear_features is None:
            linear_features = self.default_linear_features
        if isinstance(linear_features, str) or not all(isinstance(f, str) for f in linear_features):
            raise SurrogateError(f"linear_features={linear_features!r} is invalid; give a list of feature names")
        unknown = sorted(set(linear_features) - set(feature_names(space)))
        if unknown:
            raise SurrogateError(
                f"linear_features {unknown} are not feature names of this space; see surrogate.feature_names"
            )
        self.linear_features = tuple(linear_features)
        self.linear_ridge = check_non_negative("linear_ridge", linear_ridge)
        self.linear_prior: LinearPrior | None = None
        self.boosters: tuple[lgb.Booster, ...] = ()
        self.correction: Correction | None = None
        self.num_train_samples = 0

    # --------------------------------------------------------------- subclass hooks
    def _to_target(self, values: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _to_prediction(self, members: np.ndarray) -> Prediction:
        raise NotImplementedError

    def _header_extra(self) -> dict[str, Any]:
        return {}

    @classmethod
    def _from_header(cls: type[P], space: SearchSpace, header: Mapping[str, Any]) -> P:
        return cls(space, **header["params"])

    # ------------------------------------------------------------------- properties
    def get_params(self) -> dict[str, Any]:
        """Return the constructor keyword arguments (space excluded)."""
        names = ("n_estimators", "num_models", "learning_rate", "num_leaves", "min_data_in_leaf",
                 "bagging_fraction", "feature_fraction", "num_threads", "seed", "linear_ridge")
        return {name: getattr(self, name) for name in names} | {"linear_features": list(self.linear_features)}

    def lgb_params(self) -> dict[str, Any]:
        """Return the LightGBM parameters the base boosters are trained with."""
        return make_lgb_params(
            learning_rate=self.learning_rate, num_leaves=self.num_leaves,
            min_data_in_leaf=self.min_data_in_leaf, bagging_fraction=self.bagging_fraction,
            feature_fraction=self.feature_fraction, num_threads=self.num_threads, seed=self.seed,
        )

    @property
    def is_fitted(self) -> bool:
        return bool(self.boosters)

    @property
    def num_observations(self) -> int:
        """Number of observations the current correction used (0 when uncorrected)."""
        return self.correction.num_observations if self.correction is not None else 0

    @property
    def feature_names(self) -> list[str]:
        return feature_names(self.space)

    # ----------------------------------------------------------------- fit/predict
    def fit(self: P, archs: Sequence[Architecture], values: Any, weights: Any = None) -> P:
        """Fit the ensemble on ``archs`` and their observed ``values``; drops any correction.

        ``weights`` (for example evaluation sample counts) are non-negative per-row weights.
        Returns ``self``.
        """
        x = arch_features(self.space, archs)
        y = self._to_target(np.asarray(values, dtype=np.float64))
        if y.shape != (x.shape[0],):
            raise SurrogateError(f"got {x.shape[0]} architectures but values of shape {y.shape}")
        if x.shape[0] < 2:
            raise SurrogateError(f"fit needs at least 2 architectures, got {x.shape[0]}")
        w = check_weights(weights, x.shape[0])
        names = self.feature_names
        prior = None
        if self.linear_features:
            prior = LinearPrior.fit(x, y, w, names=names, features=self.linear_features, ridge=self.linear_ridge)
        self.boosters = train_boosters(
            x, y, w, params=self.lgb_params(), num_rounds=self.n_estimators, num_models=self.num_models,
            names=names, init_score=prior.predict(x, names) if prior is not None else None,
        )
        self.linear_prior = prior
        self.correction = None
        self.num_train_samples = int(x.shape[0])
        logger.debug("fitted %s on %d architectures", type(self).__name__, x.shape[0])
        return self

    def member_outputs(self, archs: Sequence[Architecture], *, corrected: bool = True) -> np.ndarray:
        """Return every member's output in target space, shape ``(num_models, len(archs))``."""
        if not self.is_fitted:
            raise SurrogateError(
                f"{type(self).__name__} is not fitted; call fit(archs, values) or load one with from_text"
            )
        x = arch_features(self.space, archs)
        if x.shape[0] == 0:
            return np.zeros((len(self.boosters), 0))
        members = np.stack([b.predict(x, num_threads=self.num_threads) for b in self.boosters])
        if self.linear_prior is not None:
            members = members + self.linear_prior.predict(x, self.feature_names)
        correction = self.correction if corrected else None
        if correction is not None and correction.num_observations > 0:
            members = members + correction.offset
            residuals = correction.residual_boosters
            if residuals:
                outputs = [b.predict(x, num_threads=self.num_threads) for b in residuals]
                for i in range(members.shape[0]):
                    members[i] += correction.residual_scale * outputs[i % len(outputs)]
        return members.astype(np.float64, copy=False)

    def predict(self, archs: Sequence[Architecture]) -> Prediction:
        """Return the (corrected, when a correction is set) prediction for ``archs``."""
        return self._to_prediction(self.member_outputs(archs))

    def predict_base(self, archs: Sequence[Architecture]) -> Prediction:
        """Return the prediction of the base ensemble alone, ignoring any correction."""
        return self._to_prediction(self.member_outputs(archs, corrected=False))

    def with_correction(self: P, correction: Correction | None) -> P:
        """Return a copy that shares the base boosters and carries ``correction``."""
        if not self.is_fitted:
            raise SurrogateError(f"cannot correct an unfitted {type(self).__name__}; fit it first")
        clone = copy.copy(self)
        clone.correction = correction
        return clone

    # ---------------------------------------------------------------- serialization
    def to_text(self) -> str:
        """Return the model text: JSON header line plus every booster's LightGBM model text."""
        if not self.is_fitted:
            raise SurrogateError(f"cannot serialize an unfitted {type(self).__name__}; fit it first")
        header = {
            "kind": self.kind,
            "schema_version": FEATURE_SCHEMA_VERSION,
            "feature_names": self.feature_names,
            "space_fingerprint": self.space.fingerprint(),
            "params": self.get_params(),
            "num_train_samples": self.num_train_samples,
            "linear_prior": self.linear_prior.to_header() if self.linear_prior is not None else None,
            "correction": self.correction.to_header() if self.correction is not None else None,
            **self._header_extra(),
        }
        boosters = [("base", b) for b in self.boosters]
        if self.correction is not None:
            boosters += [("residual", b) for b in self.correction.residual_boosters]
        return dump_text(header, boosters)

    @classmethod
    def from_text(cls: type[P], text: str, space: SearchSpace) -> P:
        """Load a predictor written by :meth:`to_text` for use with ``space``.

        Raises :class:`nas.errors.SurrogateError` naming the expected and found value when
        the kind, feature schema version, feature names or space fingerprint differ.
        """
        header, boosters = parse_text(text)
        expected = {
            "kind": cls.kind,
            "schema_version": FEATURE_SCHEMA_VERSION,
            "space_fingerprint": space.fingerprint(),
            "feature_names": feature_names(space),
        }
        for key, value in expected.items():
            if header.get(key) != value:
                raise SurrogateError(
                    f"surrogate {key} mismatch: expected {value!r}, found {header.get(key)!r}; "
                    "load it with the search space and APFP-NAS version that wrote it"
                )
        try:
            predictor = cls._from_header(space, header)
            predictor._restore(header, boosters)
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            if isinstance(error, SurrogateError):
                raise
            raise SurrogateError(f"surrogate header is incomplete or invalid: {error!r}") from error
        return predictor

    def _restore(self, header: Mapping[str, Any], boosters: Sequence[tuple[str, lgb.Booster]]) -> None:
        """Set the fitted state (boosters, linear prior, correction) from a parsed text."""
        self.boosters = tuple(b for role, b in boosters if role == "base")
        residuals = tuple(b for role, b in boosters if role == "residual")
        if len(self.boosters) != self.num_models:
            raise SurrogateError(
                f"surrogate params give num_models={self.num_models} but the text contains "
                f"{len(self.boosters)} base boosters"
            )
        self.num_train_samples = int(header.get("num_train_samples", 0))

        prior = header.get("linear_prior")
        if (prior is None) != (not self.linear_features):
            raise SurrogateError(
                f"surrogate params give linear_features={list(self.linear_features)} "
                f"but the header's linear_prior is {prior!r}"
            )
        if prior is not None:
            self.linear_prior = LinearPrior.from_header(prior)
            if self.linear_prior.features != self.linear_features:
                raise SurrogateError(
                    f"linear prior features {list(self.linear_prior.features)} differ from "
                    f"linear_features={list(self.linear_features)}"
                )

        state = header.get("correction")
        if state is None:
            if residuals:
                raise SurrogateError("surrogate text contains residual boosters but no correction header")
            return
        if state.get("num_residual_models") != len(residuals):
            raise SurrogateError(
                f"correction header lists {state.get('num_residual_models')!r} residual boosters, "
                f"but the text contains {len(residuals)}"
            )
        self.correction = Correction(
            num_observations=int(state["num_observations"]),
            total_weight=float(state["total_weight"]),
            prior_strength=float(state["prior_strength"]),
            offset=float(state["offset"]),
            residual_scale=float(state["residual_scale"]),
            residual_boosters=residuals,
        )
