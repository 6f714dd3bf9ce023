"""Latency surrogate on real ONNX Runtime measurements of exported subnets.

Random subnets of the default 16x16 grey-scale space are exported to ONNX and timed
under the built-in ``cpu-1t-fp32`` profile (with fewer repeats than the profile
sets, to stay fast). Each model is timed in two passes and the smaller median is kept,
which rejects most slow-downs caused by other processes sharing the machine.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from hw_profiles import load_profile, measure_latency
from nas.export import export_onnx
from nas.space import SearchSpace
from nas.subnet import Subnet
from surrogate import (
    FlopsLinearBaseline,
    LatencyPredictor,
    correct_latency,
    latency_quality_report,
    mape,
)

logger = logging.getLogger(__name__)

PROFILE = "cpu-1t-fp32"


def measure(models: list[bytes], profile_name: str) -> np.ndarray:
    """Return each model's latency in ms: the smaller median of two timing passes."""
    profile = load_profile(profile_name).replace(warmup=3, repeats=15, max_attempts=1)
    passes = [[measure_latency(model, profile).median_ms for model in models] for _ in range(2)]
    return np.minimum(*np.asarray(passes))


def measure_subnets(count: int, seed: int) -> dict:
    """Export ``count`` distinct random subnets and time them under :data:`PROFILE` (ms)."""
    space = SearchSpace.for_task(1, 10, 16)
    rng = np.random.default_rng(seed)
    archs = []
    while len(archs) < count:
        arch = space.sample(rng)
        if arch not in archs:
            archs.append(arch)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        models = [export_onnx(Subnet(space, arch), input_shape=(1, 16, 16)) for arch in archs]
    finally:
        torch.set_num_threads(threads)
    return {"space": space, "archs": archs, "models": models, "latency": measure(models, PROFILE)}


def compare_on_held_out(measured: dict, num_train: int) -> dict:
    space, archs, latency = measured["space"], measured["archs"], measured["latency"]
    train, test = slice(0, num_train), slice(num_train, None)
    predictor = LatencyPredictor(space, PROFILE).fit(archs[train], latency[train])
    baseline = FlopsLinearBaseline(space).fit(archs[train], latency[train])
    report = latency_quality_report(
        latency[test], predictor.predict(archs[test]).mean, baseline_ms=baseline.predict(archs[test])
    )
    print(f"held-out latency quality on {PROFILE}: {report}")
    return report


@pytest.fixture(scope="module")
def measured() -> dict:
    return measure_subnets(64, seed=11)


def test_latency_beats_flops_baseline(measured):
    report = compare_on_held_out(measured, num_train=48)
    assert report["n"] == 16
    assert report["predictor"]["mape"] < report["flops_baseline"]["mape"]
    assert report["predictor"]["within_tolerance"] >= report["flops_baseline"]["within_tolerance"]


def test_measured_latency_round_trip(measured):
    space, archs, latency = measured["space"], measured["archs"], measured["latency"]
    predictor = LatencyPredictor(space, PROFILE, num_models=3).fit(archs[:48], latency[:48])
    corrected = correct_latency(predictor, archs[48:], latency[48:] * 1.3, profile_name="slower")
    for model in (predictor, corrected):
        loaded = LatencyPredictor.from_text(model.to_text(), space)
        assert loaded.profile_name == model.profile_name
        assert np.array_equal(loaded.predict(archs).mean, model.predict(archs).mean)
        assert np.array_equal(loaded.predict(archs).std, model.predict(archs).std)
    assert mape(latency[48:] * 1.3, corrected.predict(archs[48:]).mean) < mape(
        latency[48:] * 1.3, predictor.predict(archs[48:]).mean
    )


def test_correction_calibrates_other_profile(measured):
    """A 1-thread surrogate calibrated by 12 two-thread measurements predicts two-thread latency."""
    space, archs, latency = measured["space"], measured["archs"], measured["latency"]
    base = LatencyPredictor(space, PROFILE).fit(archs[:48], latency[:48])
    other = measure(measured["models"][36:], "cpu-2t-fp32")  # archs 36..63
    observed, held_out = other[:12], other[12:]
    corrected = correct_latency(base, archs[36:48], observed, profile_name="cpu-2t-fp32")
    before = mape(held_out, base.predict(archs[48:]).mean)
    after = mape(held_out, corrected.predict(archs[48:]).mean)
    print(f"held-out MAPE on cpu-2t-fp32: uncorrected {before:.4f}, corrected with 12 observations {after:.4f}")
    assert corrected.num_observations == 12
    assert corrected.profile_name == "cpu-2t-fp32"
    assert after < before


@pytest.mark.slow
def test_latency_beats_baseline_on_200():
    report = compare_on_held_out(measure_subnets(200, seed=12), num_train=150)
    assert report["predictor"]["mape"] < report["flops_baseline"]["mape"]
    assert report["predictor"]["kendall_tau"] > report["flops_baseline"]["kendall_tau"]
