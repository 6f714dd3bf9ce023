"""Features, LightGBM predictors and their text format (no mocks: real LightGBM fits)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nas.complexity import count_macs, count_params
from nas.errors import InvalidArchitectureError, SurrogateError
from nas.space import Architecture, SearchSpace
from surrogate import (
    FEATURE_SCHEMA_VERSION,
    AccuracyPredictor,
    FlopsLinearBaseline,
    LatencyPredictor,
    arch_features,
    correct_accuracy,
    correct_latency,
    feature_names,
    load_surrogate,
)


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return SearchSpace.for_task(1, 10, 16)


@pytest.fixture(scope="module")
def archs(space):
    rng = np.random.default_rng(0)
    return [space.sample(rng) for _ in range(120)]


def synthetic_accuracy(space, archs) -> np.ndarray:
    """A smooth, deterministic accuracy-like function of the architecture (bigger is better)."""
    f = dict(zip(feature_names(space), arch_features(space, archs).T))
    return 0.55 + 0.06 * np.log(f["macs_m"]) + 0.004 * f["active_blocks"] + 0.002 * f["mean_expand"]


def synthetic_latency(space, archs) -> np.ndarray:
    f = dict(zip(feature_names(space), arch_features(space, archs).T))
    return 0.05 + 0.02 * f["macs_m"] + 0.01 * f["active_blocks"] + 0.004 * f["se_blocks"]


def test_features_match_architecture(space, archs):
    names = feature_names(space)
    x = arch_features(space, archs[:5])
    assert x.dtype == np.float64
    assert x.shape == (5, len(names))
    assert len(set(names)) == len(names)
    assert FEATURE_SCHEMA_VERSION == 1
    arch = archs[0]
    row = dict(zip(names, x[0]))
    for stage, depth in enumerate(arch.depths):
        assert row[f"depth_s{stage}"] == depth
        for slot in range(space.max_depth):
            expected_kernel = arch.kernels[stage][slot] if slot < depth else 0
            expected_expand = arch.expands[stage][slot] if slot < depth else 0
            assert row[f"kernel_s{stage}_b{slot}"] == expected_kernel
            assert row[f"expand_s{stage}_b{slot}"] == expected_expand
    assert row["macs_m"] == pytest.approx(count_macs(space, arch) / 1e6)
    assert row["params_k"] == pytest.approx(count_params(space, arch) / 1e3)
    assert row["active_blocks"] == arch.num_blocks
    stage_macs = sum(row[f"macs_m_s{s}"] for s in range(space.num_stages))
    assert stage_macs == pytest.approx(row["dw_macs_m"] + row["pw_macs_m"])
    assert stage_macs < row["macs_m"]  # The stem and head lie outside the blocks.
    assert arch_features(space, []).shape == (0, len(names))


def test_features_reject_foreign_architecture(space):
    bad = Architecture((5, 2, 2, 2), ((3,) * 5, (3, 3), (3, 3), (3, 3)), ((3,) * 5, (3, 3), (3, 3), (3, 3)))
    with pytest.raises(InvalidArchitectureError, match=r"archs\[1\].*depth=5"):
        arch_features(space, [space.smallest(), bad])


def test_accuracy_text_round_trip(space, archs):
    y = synthetic_accuracy(space, archs)
    predictor = AccuracyPredictor(space, n_estimators=150, num_models=3).fit(archs[:90], y[:90])
    prediction = predictor.predict(archs[90:])
    assert prediction.mean.shape == prediction.std.shape == (30,)
    assert np.all(prediction.std >= 0)
    assert np.any(prediction.std > 0)
    assert np.corrcoef(prediction.mean, y[90:])[0, 1] > 0.9
    text = predictor.to_text()
    header = json.loads(text.partition("\n")[0])
    assert header["kind"] == "accuracy"
    assert header["schema_version"] == FEATURE_SCHEMA_VERSION
    assert header["space_fingerprint"] == space.fingerprint()
    assert header["feature_names"] == feature_names(space)
    loaded = AccuracyPredictor.from_text(text, space)
    again = loaded.predict(archs[90:])
    assert np.array_equal(again.mean, prediction.mean)
    assert np.array_equal(again.std, prediction.std)
    assert loaded.to_text() == text
    assert isinstance(load_surrogate(text, space), AccuracyPredictor)


def test_latency_text_keeps_profile(space, archs):
    y = synthetic_latency(space, archs)
    predictor = LatencyPredictor(space, "cpu-1t-fp32", n_estimators=100, num_models=2).fit(archs[:90], y[:90])
    prediction = predictor.predict(archs[90:])
    assert np.all(prediction.mean > 0)
    assert np.mean(np.abs(prediction.mean / y[90:] - 1)) < 0.05
    loaded = load_surrogate(predictor.to_text(), space)
    assert isinstance(loaded, LatencyPredictor)
    assert loaded.profile_name == "cpu-1t-fp32"
    assert loaded.linear_features == predictor.linear_features
    assert loaded.linear_features
    assert np.array_equal(loaded.predict(archs[90:]).mean, prediction.mean)


def test_corrected_predictors_round_trip(space, archs):
    y = synthetic_accuracy(space, archs)
    base = AccuracyPredictor(space, n_estimators=80, num_models=2).fit(archs[:60], y[:60])
    shifted = y[60:100] - 0.1 + 0.01 * np.arange(40) % 3
    # The index-based shift is not learnable, so keep the residual model without the cross-validation check.
    corrected = correct_accuracy(base, archs[60:100], shifted, weights=np.full(40, 200.0), residual_cv_folds=0)
    assert corrected.num_observations == 40
    assert corrected.correction.residual_boosters
    loaded = AccuracyPredictor.from_text(corrected.to_text(), space)
    assert loaded.num_observations == 40
    assert np.array_equal(loaded.predict(archs[100:]).mean, corrected.predict(archs[100:]).mean)
    assert np.array_equal(loaded.predict_base(archs[100:]).mean, base.predict(archs[100:]).mean)

    latency = LatencyPredictor(space, "cpu-1t-fp32", n_estimators=60, num_models=2)
    latency.fit(archs[:60], synthetic_latency(space, archs[:60]))
    device = correct_latency(latency, archs[60:80], 1.8 * synthetic_latency(space, archs[60:80]),
                             profile_name="cpu-2t-fp32")
    loaded = load_surrogate(device.to_text(), space)
    assert loaded.profile_name == "cpu-2t-fp32"
    assert loaded.num_observations == 20
    assert np.array_equal(loaded.predict(archs[100:]).mean, device.predict(archs[100:]).mean)


def test_load_rejects_foreign_surrogate(space, archs):
    y = synthetic_accuracy(space, archs)
    text = AccuracyPredictor(space, n_estimators=20, num_models=1).fit(archs[:40], y[:40]).to_text()
    other = SearchSpace.for_task(3, 10, 16)
    with pytest.raises(SurrogateError) as error:
        AccuracyPredictor.from_text(text, other)
    assert other.fingerprint() in str(error.value)
    assert space.fingerprint() in str(error.value)
    header, _, rest = text.partition("\n")
    data = json.loads(header)
    data["schema_version"] = FEATURE_SCHEMA_VERSION + 1
    with pytest.raises(SurrogateError, match=r"schema_version mismatch: expected 1, found 2"):
        AccuracyPredictor.from_text(json.dumps(data) + "\n" + rest, space)
    with pytest.raises(SurrogateError, match=r"kind mismatch: expected 'latency', found 'accuracy'"):
        LatencyPredictor.from_text(text, space)


def test_load_rejects_corrupt_text(space, archs):
    y = synthetic_accuracy(space, archs)
    text = AccuracyPredictor(space, n_estimators=20, num_models=2).fit(archs[:40], y[:40]).to_text()
    with pytest.raises(SurrogateError, match="SHA-256"):
        AccuracyPredictor.from_text(text.replace("leaf_value=", "leaf_value=1", 1), space)
    with pytest.raises(SurrogateError, match="lists 2 boosters but the text contains 1"):
        AccuracyPredictor.from_text(text[: text.rindex("#apfp-booster")], space)
    with pytest.raises(SurrogateError, match="JSON header"):
        AccuracyPredictor.from_text("tree\nversion=v4\n", space)
    with pytest.raises(SurrogateError, match="format"):
        load_surrogate('{"kind": "accuracy"}\n', space)


def test_unfitted_and_invalid_params(space, archs):
    predictor = AccuracyPredictor(space)
    with pytest.raises(SurrogateError, match="not fitted"):
        predictor.predict(archs[:3])
    with pytest.raises(SurrogateError, match="unfitted"):
        predictor.to_text()
    with pytest.raises(SurrogateError, match="not fitted"):
        FlopsLinearBaseline(space).predict(archs[:3])
    for kwargs, name in [
        ({"num_models": 0}, "num_models=0"),
        ({"learning_rate": 1.5}, "learning_rate=1.5"),
        ({"num_leaves": 1}, "num_leaves=1"),
        ({"n_estimators": 2.5}, "n_estimators=2.5"),
        ({"linear_features": ["flops"]}, "flops"),
        ({"linear_ridge": -1.0}, "linear_ridge=-1.0"),
    ]:
        with pytest.raises(SurrogateError, match=name):
            AccuracyPredictor(space, **kwargs)
    with pytest.raises(SurrogateError, match="profile_name"):
        LatencyPredictor(space, "")
    with pytest.raises(SurrogateError, match="latencies must be finite and > 0"):
        LatencyPredictor(space, "p").fit(archs[:3], [1.0, -2.0, 3.0])
    with pytest.raises(SurrogateError, match="weights must have shape"):
        AccuracyPredictor(space).fit(archs[:3], [0.1, 0.2, 0.3], weights=[1.0, 2.0])


def test_weights_change_the_fit(space, archs):
    y = synthetic_accuracy(space, archs[:60])
    y_noisy = y.copy()
    y_noisy[::2] += 0.3  # corrupted rows that the weights switch off
    weights = np.where(np.arange(60) % 2 == 0, 0.0, 1.0)
    weighted = AccuracyPredictor(space, n_estimators=100, num_models=1).fit(archs[:60], y_noisy, weights)
    unweighted = AccuracyPredictor(space, n_estimators=100, num_models=1).fit(archs[:60], y_noisy)
    truth = synthetic_accuracy(space, archs[60:])
    error_weighted = np.mean(np.abs(weighted.predict(archs[60:]).mean - truth))
    error_unweighted = np.mean(np.abs(unweighted.predict(archs[60:]).mean - truth))
    assert error_weighted < 0.5 * error_unweighted


def test_flops_baseline_recovers_line(space, archs):
    macs = np.array([count_macs(space, a) / 1e6 for a in archs])
    baseline = FlopsLinearBaseline(space).fit(archs, 0.3 + 0.05 * macs)
    assert baseline.intercept_ms == pytest.approx(0.3)
    assert baseline.slope_ms_per_mmac == pytest.approx(0.05)
    assert np.allclose(baseline.predict(archs[:5]), 0.3 + 0.05 * macs[:5])
    with pytest.raises(SurrogateError, match="2 distinct MAC counts"):
        FlopsLinearBaseline(space).fit([archs[0]] * 3, [1.0, 1.1, 0.9])
