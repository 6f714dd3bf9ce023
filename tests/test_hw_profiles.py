"""Hardware profile files: round trip, validation errors, registry and budget resolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hw_profiles import (
    HardwareProfile,
    builtin_profiles,
    default_device_profile,
    load_profile,
    register_profile,
    resolve_budgets,
)
from nas.errors import ApfpError, ProfileError

VALID_TOML = """\
name = "my-board"
description = "A test board"
runtime = "onnxruntime"
intra_op_threads = 2
inter_op_threads = 1
graph_optimization = "extended"
precision = "int8"
batch_size = 4
warmup = 3
repeats = 7
statistic = "median"
max_cv = 0.2
max_attempts = 2
tolerance = 0.05
budgets = ["p25", 12.5, "p75", 3]
"""


def write(tmp_path: Path, text: str, name: str = "board.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def replace_line(key: str, new_line: str | None) -> str:
    lines = []
    for line in VALID_TOML.splitlines():
        if line.split("=")[0].strip() == key:
            if new_line is not None:
                lines.append(new_line)
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def test_file_round_trip(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, VALID_TOML))

    assert profile.name == "my-board"
    assert profile.precision == "int8"
    assert profile.graph_optimization == "extended"
    assert profile.budgets == ("p25", 12.5, "p75", 3.0)
    assert isinstance(profile.budgets[3], float)

    saved = profile.save(tmp_path / "nested" / "copy.toml")
    again = load_profile(saved)
    assert again == profile
    assert again.to_toml() == profile.to_toml()


def test_builtin_round_trip(tmp_path: Path) -> None:
    for name, profile in builtin_profiles().items():
        copy = load_profile(profile.save(tmp_path / f"{name}.toml"))
        assert copy == profile


def test_builtins_are_distinct_settings() -> None:
    profiles = builtin_profiles()
    for name in ("cpu-1t-fp32", "cpu-2t-fp32", "cpu-1t-int8"):
        assert name in profiles
    settings = {
        (p.intra_op_threads, p.inter_op_threads, p.graph_optimization, p.precision, p.batch_size)
        for p in profiles.values()
    }
    assert len(settings) == len(profiles)
    for profile in profiles.values():
        assert profile.quantile_budgets == ("p25", "p50", "p75")
        assert profile.absolute_budgets_ms == ()


@pytest.mark.parametrize(
    ("key", "line", "allowed"),
    [
        ("runtime", 'runtime = "tflite"', "'onnxruntime'"),
        ("intra_op_threads", "intra_op_threads = 0", "from 1 to 256"),
        ("inter_op_threads", 'inter_op_threads = "two"', "from 1 to 256"),
        ("graph_optimization", 'graph_optimization = "max"', "'disable', 'basic', 'extended', 'all'"),
        ("precision", 'precision = "fp16"', "'fp32', 'int8'"),
        ("batch_size", "batch_size = 0", "from 1 to 4096"),
        ("warmup", "warmup = -1", "from 0 to"),
        ("repeats", "repeats = 2", "from 3 to"),
        ("statistic", 'statistic = "mean"', "'median'"),
        ("max_cv", "max_cv = 0", "greater than 0"),
        ("max_attempts", "max_attempts = 0", "from 1 to 100"),
        ("tolerance", "tolerance = 1.5", "from 0 to 1"),
        ("budgets", 'budgets = ["p0"]', "'p1' to 'p99'"),
        ("budgets", 'budgets = ["p100"]', "'p1' to 'p99'"),
        ("budgets", "budgets = [-2.0]", "positive milliseconds"),
        ("budgets", "budgets = []", "non-empty"),
        ("name", 'name = "has space"', "letters, digits"),
        ("repeats", "repeats = true", "from 3 to"),
    ],
)
def test_out_of_range_value(tmp_path: Path, key: str, line: str, allowed: str) -> None:
    path = write(tmp_path, replace_line(key, line))
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    message = str(caught.value)
    assert str(path) in message
    assert repr(key) in message
    assert allowed in message


def test_unknown_key(tmp_path: Path) -> None:
    path = write(tmp_path, VALID_TOML + "threads = 4\n")
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    message = str(caught.value)
    assert str(path) in message
    assert "'threads'" in message
    assert "intra_op_threads" in message


@pytest.mark.parametrize("key", ["name", "runtime", "precision", "repeats", "budgets"])
def test_missing_key(tmp_path: Path, key: str) -> None:
    path = write(tmp_path, replace_line(key, None))
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"{key!r} is missing" in message


def test_optional_keys_take_defaults(tmp_path: Path) -> None:
    text = VALID_TOML
    for key in ("description", "max_cv", "max_attempts", "tolerance"):
        text = "\n".join(line for line in text.splitlines() if not line.startswith(key)) + "\n"
    profile = load_profile(write(tmp_path, text))
    assert profile.description == ""
    assert profile.max_cv == 0.15
    assert profile.max_attempts == 3
    assert profile.tolerance == 0.10


def test_several_problems_in_one_error(tmp_path: Path) -> None:
    text = replace_line("precision", 'precision = "fp64"').replace("repeats = 7", "repeats = 1")
    with pytest.raises(ProfileError) as caught:
        load_profile(write(tmp_path, text))
    message = str(caught.value)
    assert "'precision'" in message
    assert "'repeats'" in message


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    broken = write(tmp_path, "name = [unclosed\n")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(broken)
    with pytest.raises(ProfileError, match="not found"):
        load_profile(tmp_path / "absent.toml")


def test_unknown_name_lists_builtins() -> None:
    with pytest.raises(ProfileError) as caught:
        load_profile("gpu-9000")
    message = str(caught.value)
    assert "'gpu-9000'" in message
    for name in builtin_profiles():
        assert name in message
    assert isinstance(caught.value, ApfpError)
    assert isinstance(caught.value, ValueError)


def test_constructor_validates() -> None:
    base = builtin_profiles()["cpu-1t-fp32"]
    with pytest.raises(ProfileError, match="'intra_op_threads'"):
        base.replace(intra_op_threads=0)
    with pytest.raises(ProfileError, match="'budgets'"):
        base.replace(budgets=("median",))


def test_register_profile() -> None:
    profile = builtin_profiles()["cpu-1t-fp32"].replace(name="test-registered-board", repeats=5)
    register_profile(profile)
    assert load_profile("test-registered-board") is profile
    register_profile(profile)
    with pytest.raises(ProfileError, match="already registered"):
        register_profile(profile.replace(repeats=9))
    with pytest.raises(ProfileError, match="already registered"):
        register_profile(builtin_profiles()["cpu-2t-fp32"].replace(intra_op_threads=1))
    register_profile(profile.replace(repeats=9), overwrite=True)
    assert load_profile("test-registered-board").repeats == 9


def test_default_device_profile(tmp_path: Path) -> None:
    profile = default_device_profile("this-host")
    assert 1 <= profile.intra_op_threads <= 8
    assert profile.precision == "fp32"
    assert load_profile(profile.save(tmp_path / "host.toml")) == profile


def test_resolve_budgets() -> None:
    profile = builtin_profiles()["cpu-1t-fp32"].replace(budgets=("p75", 2.0, "p25", "p50", 2.0))
    latencies = [1.0, 2.0, 3.0, 4.0, 5.0]
    resolved = resolve_budgets(profile, latencies)
    assert resolved == [2.0, 3.0, 4.0]

    latencies = np.random.default_rng(0).lognormal(0.0, 1.0, size=200)
    resolved = resolve_budgets(profile.replace(budgets=("p10", "p90", 1000.0)), latencies)
    assert resolved[0] == pytest.approx(np.percentile(latencies, 10))
    assert resolved[1] == pytest.approx(np.percentile(latencies, 90))
    assert resolved[2] == 1000.0


def test_resolve_budgets_needs_latencies() -> None:
    profile = builtin_profiles()["cpu-1t-fp32"]
    with pytest.raises(ProfileError, match="no latencies"):
        resolve_budgets(profile, [])
    with pytest.raises(ProfileError, match="finite and positive"):
        resolve_budgets(profile, [1.0, float("nan")])
    absolute = profile.replace(budgets=(5.0, 1.0))
    assert resolve_budgets(absolute, []) == [1.0, 5.0]


def test_meets_budget_tolerance() -> None:
    profile = builtin_profiles()["cpu-1t-fp32"].replace(tolerance=0.1)
    assert profile.meets_budget(10.9, 10.0)
    assert not profile.meets_budget(11.1, 10.0)
