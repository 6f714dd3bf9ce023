"""Hardware profiles and the latency measurement protocol.

A :class:`HardwareProfile` describes how to run and time a model on one device (ONNX
Runtime settings, precision, timing protocol) and lists the device's latency
budgets. :func:`measure_latency` times an ONNX model under a profile, one
measurement at a time per machine. The built-in profiles are distinct execution
settings of a CPU host, so that simulated devices on one machine have really
measured, different latencies.
"""

from hw_profiles.budgets import quantile_of, resolve_budgets
from hw_profiles.latency import LatencyMeasurement, measure_latency
from hw_profiles.lock import LOCK_ENV_VAR, LatencyLockTimeout, default_lock_path, measurement_lock
from hw_profiles.profile import (
    GRAPH_OPTIMIZATIONS,
    PRECISIONS,
    RUNTIMES,
    STATISTICS,
    HardwareProfile,
    profile_from_dict,
    read_profile_file,
)
from hw_profiles.profiling import profile_space
from hw_profiles.quantize import quantize_int8
from hw_profiles.registry import (
    available_profiles,
    builtin_profiles,
    default_device_profile,
    load_profile,
    register_profile,
)

__all__ = [
    "GRAPH_OPTIMIZATIONS",
    "LOCK_ENV_VAR",
    "PRECISIONS",
    "RUNTIMES",
    "STATISTICS",
    "HardwareProfile",
    "LatencyLockTimeout",
    "LatencyMeasurement",
    "available_profiles",
    "builtin_profiles",
    "default_device_profile",
    "default_lock_path",
    "load_profile",
    "measure_latency",
    "measurement_lock",
    "profile_from_dict",
    "profile_space",
    "quantile_of",
    "read_profile_file",
    "register_profile",
    "resolve_budgets",
    "quantize_int8",
]
