"""Corrections from observations: identity at zero, shrinkage when few, transfer when many."""

from __future__ import annotations

import numpy as np
import pytest

from nas.errors import SurrogateError
from nas.space import SearchSpace
from surrogate import (
    AccuracyPredictor,
    LatencyPredictor,
    arch_features,
    correct_accuracy,
    correct_latency,
    feature_names,
    kendall_tau,
)


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return SearchSpace.for_task(1, 10, 16)


@pytest.fixture(scope="module")
def data(space):
    """Base accuracy f(arch) and a structured private-domain shift g(arch) on 420 archs."""
    rng = np.random.default_rng(7)
    archs = [space.sample(rng) for _ in range(420)]
    f = dict(zip(feature_names(space), arch_features(space, archs).T))
    y_base = 0.55 + 0.06 * np.log(f["macs_m"]) + 0.004 * f["active_blocks"]
    # The private domain rewards small kernels in stage 2 and penalizes depth.
    small_kernels = sum((f[f"kernel_s2_b{b}"] == 3).astype(float) for b in range(space.max_depth))
    shift = -0.08 + 0.015 * small_kernels - 0.006 * f["active_blocks"]
    return archs, y_base, y_base + shift


@pytest.fixture(scope="module")
def base(space, data):
    archs, y_base, _ = data
    return AccuracyPredictor(space, n_estimators=200, num_models=3).fit(archs[:300], y_base[:300])


def test_zero_observations_change_nothing(space, data, base):
    archs = data[0]
    corrected = correct_accuracy(base, [], [])
    assert corrected.num_observations == 0
    before, after = base.predict(archs[300:]), corrected.predict(archs[300:])
    assert np.array_equal(before.mean, after.mean)
    assert np.array_equal(before.std, after.std)
    reloaded = AccuracyPredictor.from_text(corrected.to_text(), space)
    assert np.array_equal(reloaded.predict(archs[300:]).mean, before.mean)

    latency = LatencyPredictor(space, "cpu-1t-fp32", n_estimators=50, num_models=2)
    latency.fit(archs[:100], 0.2 + 0.05 * data[1][:100])
    same = correct_latency(latency, [], np.zeros(0))
    assert np.array_equal(same.predict(archs[300:]).mean, latency.predict(archs[300:]).mean)


def test_correction_raises_tau_under_shift(data, base):
    archs, _, y_true = data
    observed, held_out = slice(300, 348), slice(348, 420)
    corrected = correct_accuracy(base, archs[observed], y_true[observed], weights=np.full(48, 500.0))
    assert corrected.num_observations == 48
    tau_before = kendall_tau(y_true[held_out], base.predict(archs[held_out]).mean)
    tau_after = kendall_tau(y_true[held_out], corrected.predict(archs[held_out]).mean)
    print(f"held-out Kendall tau vs shifted truth: base {tau_before:.3f} -> corrected {tau_after:.3f}")
    assert tau_after > tau_before + 0.05
    error_before = np.mean(np.abs(base.predict(archs[held_out]).mean - y_true[held_out]))
    error_after = np.mean(np.abs(corrected.predict(archs[held_out]).mean - y_true[held_out]))
    assert error_after < 0.5 * error_before
    assert np.array_equal(base.predict(archs[held_out]).mean, corrected.predict_base(archs[held_out]).mean)


def test_few_observations_stay_near_base(data, base):
    archs, _, y_true = data
    few = correct_accuracy(base, archs[300:303], y_true[300:303], prior_strength=4.0)
    assert few.correction.residual_boosters == ()  # below min_residual_observations
    shift = few.predict(archs[348:]).mean - base.predict(archs[348:]).mean
    residual = np.mean(y_true[300:303] - base.predict(archs[300:303]).mean)
    assert np.allclose(shift, shift[0])  # a constant offset only
    assert shift[0] == pytest.approx(residual * 3 / (3 + 4.0))
    assert abs(shift[0]) < abs(residual)


def test_many_observations_follow_data(data, base):
    archs, _, y_true = data
    held_out = slice(348, 420)
    errors = {}
    for count in (8, 48):
        corrected = correct_accuracy(base, archs[300 - count + 48 : 348], y_true[300 - count + 48 : 348])
        errors[count] = np.mean(np.abs(corrected.predict(archs[held_out]).mean - y_true[held_out]))
    assert errors[48] < errors[8]


def test_residual_model_kept_only_when_it_generalizes(data, base):
    archs, _, y_true = data
    observed, held_out = slice(300, 348), slice(348, 420)
    structured = correct_accuracy(base, archs[observed], y_true[observed])
    assert len(structured.correction.residual_boosters) == base.num_models

    # Pure noise around the base: a residual model would only memorize it.
    noise = np.random.default_rng(3).normal(0.0, 0.05, 48)
    noisy = base.predict(archs[observed]).mean + noise
    checked = correct_accuracy(base, archs[observed], noisy)
    unchecked = correct_accuracy(base, archs[observed], noisy, residual_cv_folds=0)
    assert checked.correction.residual_boosters == ()
    assert len(unchecked.correction.residual_boosters) == base.num_models
    tau_base = kendall_tau(base.predict(archs[held_out]).mean, checked.predict(archs[held_out]).mean)
    assert tau_base == pytest.approx(1.0)  # a constant offset keeps the base's ranking
    with pytest.raises(SurrogateError, match="residual_cv_folds=1 is invalid"):
        correct_accuracy(base, archs[observed], noisy, residual_cv_folds=1)


def test_latency_calibration_finds_device_factor(space, data):
    archs = data[0]
    f = dict(zip(feature_names(space), arch_features(space, archs).T))
    host_ms = 0.05 + 0.02 * f["macs_m"] + 0.01 * f["active_blocks"]
    base = LatencyPredictor(space, "host", n_estimators=100, num_models=2).fit(archs[:200], host_ms[:200])
    device_ms = 2.0 * host_ms * (1.0 + 0.02 * f["se_blocks"])  # slower device, SE blocks cost more
    held_out = slice(300, 420)

    def mape_on(predictor):
        return np.mean(np.abs(predictor.predict(archs[held_out]).mean / device_ms[held_out] - 1))

    few = correct_latency(base, archs[200:204], device_ms[200:204], profile_name="device", prior_strength=2.0)
    many = correct_latency(base, archs[200:300], device_ms[200:300], profile_name="device")

    # Few observations: one factor for every architecture, the lower median of the four
    # log ratios shrunk by 4 / (4 + prior_strength).
    log_ratios = np.sort(np.log(device_ms[200:204] / base.predict(archs[200:204]).mean))
    factor = few.predict(archs[held_out]).mean / base.predict(archs[held_out]).mean
    assert np.allclose(factor, np.exp(log_ratios[1] * 4 / 6))
    assert 1.3 < factor[0] < 1.8

    assert mape_on(base) > 0.4
    assert mape_on(few) < mape_on(base)
    assert mape_on(many) < mape_on(few)
    assert mape_on(many) < 0.05


def test_correction_input_errors(space, data, base):
    archs = data[0]
    with pytest.raises(SurrogateError, match="prior_strength=-1"):
        correct_accuracy(base, archs[:2], [0.5, 0.6], prior_strength=-1)
    with pytest.raises(SurrogateError, match="2 architectures but"):
        correct_accuracy(base, archs[:2], [0.5])
    with pytest.raises(SurrogateError, match="needs a LatencyPredictor"):
        correct_latency(base, archs[:2], [1.0, 2.0])
    with pytest.raises(SurrogateError, match="unfitted"):
        correct_accuracy(AccuracyPredictor(space), archs[:2], [0.5, 0.6])
