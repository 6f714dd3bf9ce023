"""Latency measurement on real exported conv nets with ONNX Runtime (no mocks)."""

from __future__ import annotations

import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from hw_profiles import (
    HardwareProfile,
    LatencyLockTimeout,
    LatencyMeasurement,
    builtin_profiles,
    default_lock_path,
    measure_latency,
    measurement_lock,
    profile_space,
    quantize_int8,
    resolve_budgets,
)

SHAPE = (3, 32, 32)


def export(model: nn.Module, shape: tuple[int, ...] = SHAPE) -> bytes:
    """Export ``model`` with the TorchScript exporter; the batch axis is dynamic."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (torch.zeros(1, *shape),),
            buffer,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
            dynamo=False,
        )
    return buffer.getvalue()


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    )


def large_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )


@pytest.fixture(scope="module")
def models() -> dict[str, bytes]:
    torch.set_num_threads(1)
    return {"small": export(small_net()), "large": export(large_net())}


@pytest.fixture(autouse=True)
def private_paths(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep this test's lock and int8 cache away from other runs on the machine."""
    folder = tmp_path_factory.mktemp("hw")
    monkeypatch.setenv("APFP_NAS_LATENCY_LOCK", str(folder / "latency.lock"))
    monkeypatch.setenv("APFP_NAS_INT8_CACHE", str(folder / "int8"))
    return folder


def quick(profile: HardwareProfile, **changes: object) -> HardwareProfile:
    return profile.replace(**({"warmup": 3, "repeats": 15, "max_attempts": 2} | changes))


def check_ordered(measurement: LatencyMeasurement) -> None:
    assert measurement.median_ms > 0
    assert measurement.p10_ms > 0
    assert measurement.p10_ms <= measurement.median_ms <= measurement.p90_ms
    assert measurement.mean_ms > 0
    assert measurement.cv >= 0
    assert 1 <= measurement.attempts
    assert measurement.started_at <= measurement.finished_at


@pytest.mark.parametrize("name", sorted(builtin_profiles()))
def test_larger_net_slower(models: dict[str, bytes], name: str) -> None:
    profile = quick(builtin_profiles()[name])
    small = measure_latency(models["small"], profile)
    large = measure_latency(models["large"], profile)

    for measurement in (small, large):
        check_ordered(measurement)
        assert measurement.profile == name
        assert measurement.repeats == 15
        assert measurement.attempts <= 2
        assert measurement.input_shape == (1, *SHAPE)
    assert large.median_ms > 3 * small.median_ms


def test_model_sources(models: dict[str, bytes], tmp_path: Path) -> None:
    profile = quick(builtin_profiles()["cpu-1t-fp32"])
    path = tmp_path / "small.onnx"
    path.write_bytes(models["small"])

    for source in (path, str(path), models["small"], onnx.load_from_string(models["small"])):
        check_ordered(measure_latency(source, profile))
    by_name = measure_latency(models["small"], "cpu-1t-fp32")
    assert by_name.repeats == builtin_profiles()["cpu-1t-fp32"].repeats

    with pytest.raises(FileNotFoundError, match="absent.onnx"):
        measure_latency(tmp_path / "absent.onnx", profile)
    with pytest.raises(TypeError, match="not supported"):
        measure_latency(12, profile)  # type: ignore[arg-type]


def test_batch_size_and_input_shape(models: dict[str, bytes]) -> None:
    profile = quick(builtin_profiles()["cpu-1t-fp32"])
    single = measure_latency(models["large"], profile)
    batched = measure_latency(models["large"], profile.replace(batch_size=4))
    assert batched.input_shape == (4, *SHAPE)
    assert batched.median_ms > 1.5 * single.median_ms

    override = measure_latency(models["large"], profile, input_shape=(2, *SHAPE))
    assert override.input_shape == (2, *SHAPE)
    with pytest.raises(ValueError, match="does not fit"):
        measure_latency(models["large"], profile, input_shape=(1, 3, 32))
    with pytest.raises(ValueError, match="does not fit"):
        measure_latency(models["large"], profile, input_shape=(1, 1, 32, 32))


def test_dynamic_spatial_axes_need_shape() -> None:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            small_net().eval(), (torch.zeros(1, *SHAPE),), buffer, input_names=["x"],
            dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"}}, dynamo=False,
        )
    profile = quick(builtin_profiles()["cpu-1t-fp32"])
    with pytest.raises(ValueError, match="dynamic axis 2"):
        measure_latency(buffer.getvalue(), profile)
    result = measure_latency(buffer.getvalue(), profile, input_shape=(1, 3, 20, 20))
    assert result.input_shape == (1, 3, 20, 20)


def test_unstable_result_flagged(models: dict[str, bytes], caplog: pytest.LogCaptureFixture) -> None:
    profile = quick(builtin_profiles()["cpu-1t-fp32"], max_cv=1e-9, max_attempts=3)
    with caplog.at_level(logging.INFO, logger="hw_profiles.latency"):
        result = measure_latency(models["large"], profile)
    assert result.cv > 1e-9
    assert result.attempts == 3
    assert result.stable is False
    warnings_logged = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings_logged) == 1
    assert "stable=False" in warnings_logged[0].getMessage()


def test_threads_needing_every_core_warn_once(models: dict[str, bytes], caplog: pytest.LogCaptureFixture) -> None:
    from hw_profiles import latency

    latency._warn_if_cores_are_short.cache_clear()
    threads = max(2, latency.usable_cores())
    crowded = quick(builtin_profiles()["cpu-1t-fp32"], name="crowded", intra_op_threads=threads, max_cv=10.0)
    alone = quick(builtin_profiles()["cpu-1t-fp32"], max_cv=10.0)
    with caplog.at_level(logging.WARNING, logger="hw_profiles.latency"):
        for profile in (crowded, crowded, alone):
            measure_latency(models["small"], profile)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 1
    assert f"profile 'crowded' runs {threads} threads" in messages[0]


def test_stable_result_single_attempt(models: dict[str, bytes]) -> None:
    profile = quick(builtin_profiles()["cpu-1t-fp32"], max_cv=10.0)
    result = measure_latency(models["large"], profile)
    assert result.stable is True
    assert result.attempts == 1


def test_int8_model_is_quantized(models: dict[str, bytes], private_paths: Path) -> None:
    quantized = quantize_int8(models["large"])
    op_types = {node.op_type for node in onnx.load_from_string(quantized).graph.node}
    assert "ConvInteger" in op_types
    assert "Conv" not in op_types
    assert quantize_int8(models["large"]) == quantized
    assert len(list((private_paths / "int8").glob("*.onnx"))) == 1

    batch = np.random.default_rng(1).standard_normal((2, *SHAPE)).astype(np.float32)
    fp32 = ort.InferenceSession(models["large"], providers=["CPUExecutionProvider"]).run(None, {"x": batch})[0]
    int8 = ort.InferenceSession(quantized, providers=["CPUExecutionProvider"]).run(None, {"x": batch})[0]
    assert np.abs(int8 - fp32).max() < 0.1 * np.abs(fp32).max() + 1e-3


def test_measurement_dict_round_trip(models: dict[str, bytes]) -> None:
    result = measure_latency(models["small"], quick(builtin_profiles()["cpu-1t-fp32"]))
    data = json.loads(json.dumps(result.to_dict()))
    assert LatencyMeasurement.from_dict(data) == result
    with pytest.raises(ValueError, match="unknown latency measurement keys"):
        LatencyMeasurement.from_dict(data | {"bogus": 1})


def test_lock_timeout(models: dict[str, bytes], tmp_path: Path) -> None:
    lock_file = tmp_path / "held.lock"
    profile = quick(builtin_profiles()["cpu-1t-fp32"])
    with measurement_lock(lock_file):
        with pytest.raises(LatencyLockTimeout) as caught:
            measure_latency(models["small"], profile, lock_path=lock_file, lock_timeout_s=0.2)
    assert str(lock_file) in str(caught.value)
    assert isinstance(caught.value, TimeoutError)
    check_ordered(measure_latency(models["small"], profile, lock_path=lock_file, lock_timeout_s=0.2))


def test_lock_path_from_env(private_paths: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_lock_path() == private_paths / "latency.lock"
    monkeypatch.delenv("APFP_NAS_LATENCY_LOCK")
    assert default_lock_path().name == "apfp-nas-latency.lock"


def test_real_subnets_ordered() -> None:
    space_module = pytest.importorskip("nas.space")
    subnet_module = pytest.importorskip("nas.subnet")
    export_module = pytest.importorskip("nas.export")
    space = space_module.SearchSpace.for_task(3, 10, 32)
    profile = quick(builtin_profiles()["cpu-1t-fp32"])

    def export_subnet(arch: object) -> bytes:
        subnet = subnet_module.Subnet(space, arch)
        return export_module.export_onnx(subnet, input_shape=(3, 32, 32))

    smallest = measure_latency(export_subnet(space.smallest()), profile)
    largest = measure_latency(export_subnet(space.largest()), profile)
    check_ordered(smallest)
    check_ordered(largest)
    assert largest.median_ms > 1.5 * smallest.median_ms

    rows = profile_space(space, profile, num_samples=3, export_fn=export_subnet, seed=0, progress=False)
    assert len(rows) == 3
    assert len({row["architecture"] for row in rows}) == 3
    for row in rows:
        assert row["median_ms"] > 0
        assert len(row["encoding"]) == space.encoding_length
    budgets = resolve_budgets(builtin_profiles()["cpu-1t-fp32"], [row["median_ms"] for row in rows])
    assert budgets == sorted(budgets)
    assert min(row["median_ms"] for row in rows) <= budgets[0] <= budgets[-1] <= max(
        row["median_ms"] for row in rows
    )
