"""The latency measurement protocol: run an ONNX model under a profile and time it.

Protocol: build one ONNX Runtime CPU session with the profile's threads, graph
optimization level and sequential execution mode. int8 profiles first quantize
the model (see :mod:`hw_profiles.quantize`). Run ``warmup`` untimed inferences,
then time ``repeats`` inferences one by one with a monotonic clock, and report the
median and the spread (10th and 90th percentile, mean, robust coefficient of variation).
When the coefficient of variation exceeds ``profile.max_cv`` the timed runs are
repeated, up to ``profile.max_attempts`` attempts in all, and the attempt with
the lowest coefficient of variation is returned. If none is below the threshold,
the result carries ``stable=False`` and a warning is logged.

The whole protocol runs under :func:`hw_profiles.lock.measurement_lock`, so
measurements on one machine never overlap.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from hw_profiles.lock import DEFAULT_TIMEOUT_S, measurement_lock
from hw_profiles.profile import HardwareProfile
from hw_profiles.quantize import quantize_int8
from hw_profiles.registry import load_profile

logger = logging.getLogger(__name__)

ModelSource = str | Path | bytes | onnx.ModelProto

_GRAPH_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_MAD_TO_STD = 1.4826  # MAD times this estimates the standard deviation of a normal distribution.
_INPUT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


@dataclass(frozen=True)
class LatencyMeasurement:
    """Result of one measurement, all times in milliseconds per inference of one batch.

    ``cv`` is the robust coefficient of variation (see :func:`summarize_times`) of the
    returned attempt's ``repeats`` timed runs. ``attempts`` counts the timed
    attempts made. ``started_at`` and ``finished_at`` are Unix times in seconds
    when the measurement lock was acquired and released; ``lock_wait_s`` is the
    time spent waiting for it.
    """

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    cv: float
    repeats: int
    attempts: int
    stable: bool
    profile: str
    input_shape: tuple[int, ...] = ()
    started_at: float = 0.0
    finished_at: float = 0.0
    lock_wait_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as JSON-ready plain data (``input_shape`` as a list)."""
        data = dataclasses.asdict(self)
        data["input_shape"] = list(self.input_shape)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LatencyMeasurement":
        """Rebuild a measurement from :meth:`to_dict` output; unknown keys raise ValueError."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown latency measurement keys {sorted(unknown)}; allowed keys: {sorted(known)}")
        values = dict(data)
        values["input_shape"] = tuple(int(v) for v in values.get("input_shape", ()))
        return cls(**values)


def _model_bytes(model: ModelSource) -> bytes:
    if isinstance(model, bytes):
        return model
    if isinstance(model, onnx.ModelProto):
        return model.SerializeToString()
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model file {str(path)!r} not found; export the model first")
        return path.read_bytes()
    raise TypeError(
        f"model of type {type(model).__name__} is not supported; pass an ONNX file path, bytes or onnx.ModelProto"
    )


def usable_cores() -> int:
    """Return the number of CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@functools.lru_cache(maxsize=None)
def _warn_if_cores_are_short(name: str, threads: int, cores: int) -> None:
    """Log once per profile when its threads need every usable core, because then timings follow the load."""
    if threads > 1 and threads >= cores:
        logger.warning(
            "profile %r runs %d threads on a machine with %d usable cores, so any other process delays it and "
            "its latencies vary with the machine's load; measure it on an otherwise idle machine or with more cores",
            name, threads, cores,
        )


def _session_options(profile: HardwareProfile) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = profile.intra_op_threads
    options.inter_op_num_threads = profile.inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = _GRAPH_LEVELS[profile.graph_optimization]
    options.log_severity_level = 3
    return options


def _resolve_shape(
    name: str, declared: Sequence[int | str | None], profile: HardwareProfile, override: tuple[int, ...] | None
) -> tuple[int, ...]:
    if override is not None:
        if len(override) != len(declared) or any(
            isinstance(d, int) and d != o for d, o in zip(declared, override)
        ):
            raise ValueError(f"input_shape={override} does not fit model input {name!r} of shape {list(declared)}")
        if any(not isinstance(o, int) or o < 1 for o in override):
            raise ValueError(f"input_shape={override} is invalid; use positive integers")
        return tuple(override)
    shape = []
    for axis, dim in enumerate(declared):
        if isinstance(dim, int) and dim > 0:
            shape.append(dim)
        elif axis == 0:
            shape.append(profile.batch_size)
        else:
            raise ValueError(
                f"model input {name!r} has dynamic axis {axis} (shape {list(declared)}); pass input_shape"
            )
    if shape and isinstance(declared[0], int) and declared[0] != profile.batch_size:
        logger.warning(
            "model input %r has a fixed batch size %d; profile %r asks for %d, so the fixed size is timed",
            name, declared[0], profile.name, profile.batch_size,
        )
    return tuple(shape)


def _make_feeds(
    session: ort.InferenceSession, profile: HardwareProfile, input_shape: tuple[int, ...] | None
) -> tuple[dict[str, np.ndarray], tuple[int, ...]]:
    inputs = session.get_inputs()
    if input_shape is not None and len(inputs) != 1:
        raise ValueError(f"input_shape applies to single-input models; this model has {len(inputs)} inputs")
    rng = np.random.default_rng(0)
    feeds: dict[str, np.ndarray] = {}
    first_shape: tuple[int, ...] = ()
    for index, spec in enumerate(inputs):
        dtype = _INPUT_DTYPES.get(spec.type)
        if dtype is None:
            raise ValueError(f"model input {spec.name!r} has unsupported type {spec.type}")
        shape = _resolve_shape(spec.name, spec.shape, profile, input_shape)
        if np.issubdtype(dtype, np.floating):
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[spec.name] = np.zeros(shape, dtype=dtype)
        if index == 0:
            first_shape = shape
    return feeds, first_shape


def _time_runs(session: ort.InferenceSession, feeds: dict[str, np.ndarray], count: int) -> np.ndarray:
    times_ms = np.empty(count, dtype=np.float64)
    for index in range(count):
        start = time.perf_counter_ns()
        session.run(None, feeds)
        times_ms[index] = (time.perf_counter_ns() - start) / 1e6
    return times_ms


def summarize_times(times_ms: np.ndarray) -> dict[str, float]:
    """Return median, p10, p90 and mean (ms) and the robust coefficient of variation of timed runs.

    The coefficient of variation is ``1.4826 * MAD / median`` (MAD: median absolute
    deviation from the median). For normally distributed times it equals
    ``std / mean``, but a few runs delayed by the OS scheduler do not inflate it, so
    it judges the spread of the same runs that the median summarizes.
    """
    median = float(np.median(times_ms))
    mad = float(np.median(np.abs(times_ms - median)))
    return {
        "median_ms": median,
        "p10_ms": float(np.percentile(times_ms, 10)),
        "p90_ms": float(np.percentile(times_ms, 90)),
        "mean_ms": float(np.mean(times_ms)),
        "cv": _MAD_TO_STD * mad / median if median > 0 else 0.0,
    }


def measure_latency(
    model: ModelSource,
    profile: HardwareProfile | str | Path,
    *,
    input_shape: tuple[int, ...] | None = None,
    lock_path: Path | None = None,
    lock_timeout_s: float = DEFAULT_TIMEOUT_S,
) -> LatencyMeasurement:
    """Time ``model`` under ``profile`` with the protocol described in this module.

    ``model`` is an ONNX file path, serialized bytes or an ``onnx.ModelProto`` in fp32;
    int8 profiles quantize it. ``profile`` may also be a built-in name or a TOML path.
    ``input_shape`` overrides the shape of a single-input model; by default static
    dimensions are kept and a dynamic batch axis takes ``profile.batch_size``.
    ``lock_path`` overrides :func:`hw_profiles.lock.default_lock_path`; waiting more
    than ``lock_timeout_s`` seconds for it raises ``LatencyLockTimeout``.
    """
    profile = load_profile(profile)
    _warn_if_cores_are_short(profile.name, profile.intra_op_threads, usable_cores())
    payload = _model_bytes(model)
    with measurement_lock(lock_path, lock_timeout_s) as lock_wait_s:
        started_at = time.time()
        if profile.precision == "int8":
            payload = quantize_int8(payload)
        session = ort.InferenceSession(payload, _session_options(profile), providers=["CPUExecutionProvider"])
        feeds, shape = _make_feeds(session, profile, input_shape)
        for _ in range(profile.warmup):
            session.run(None, feeds)

        best: dict[str, float] | None = None
        attempts = 0
        while attempts < profile.max_attempts:
            attempts += 1
            stats = summarize_times(_time_runs(session, feeds, profile.repeats))
            if best is None or stats["cv"] < best["cv"]:
                best = stats
            if stats["cv"] <= profile.max_cv:
                break
            logger.debug(
                "latency attempt %d/%d on profile %r is unstable (cv=%.3f > max_cv=%.3f)",
                attempts, profile.max_attempts, profile.name, stats["cv"], profile.max_cv,
            )
        del session
        finished_at = time.time()

    assert best is not None
    stable = best["cv"] <= profile.max_cv
    if not stable:
        logger.warning(
            "latency on profile %r stayed unstable after %d attempts (best cv=%.3f > max_cv=%.3f); "
            "the result is flagged stable=False",
            profile.name, attempts, best["cv"], profile.max_cv,
        )
    return LatencyMeasurement(
        repeats=profile.repeats,
        attempts=attempts,
        stable=stable,
        profile=profile.name,
        input_shape=shape,
        started_at=started_at,
        finished_at=finished_at,
        lock_wait_s=lock_wait_s,
        **best,
    )
