"""Scenario files: one federation on one machine, as plain TOML.

A scenario has three tables::

    [scenario]        name, description
    [federation]      num-supernodes, client-resources-num-cpus (0: all cores),
                      client-resources-num-gpus
    [run-config]      any key of [tool.flwr.app.config] in pyproject.toml

Built-in scenarios (``digits``, ``retinamnist``) are the TOML files beside this
module and can be named without a path. Overrides (``--set key=value``) take TOML
values; keys of ``[federation]`` go there, every other key to the run config.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from nas.errors import ApfpError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

SCENARIO_DIR = Path(__file__).resolve().parent
FEDERATION_DEFAULTS: dict[str, Any] = {
    "num-supernodes": 4, "client-resources-num-cpus": 0, "client-resources-num-gpus": 0.0,
}
TABLES = ("scenario", "federation", "run-config")


class ScenarioError(ApfpError, ValueError):
    """A scenario file or an override is invalid."""


@dataclass(frozen=True)
class Scenario:
    """A parsed scenario: federation size and resources, and run-config values."""

    name: str
    description: str
    path: Path
    federation: Mapping[str, Any]
    run_config: Mapping[str, Any]

    def federation_config(self) -> str:
        """Return the ``flwr run --federation-config`` value (0 CPUs resolved to all cores)."""
        cpus = int(self.federation["client-resources-num-cpus"]) or (os.cpu_count() or 1)
        values = {
            "num-supernodes": int(self.federation["num-supernodes"]),
            "client-resources-num-cpus": cpus,
            "client-resources-num-gpus": float(self.federation["client-resources-num-gpus"]),
            "init-args-num-cpus": max(cpus, os.cpu_count() or 1),
        }
        return " ".join(f"{k}={v}" for k, v in values.items())


def builtin_scenarios() -> list[str]:
    """Return the names of the scenario files shipped with APFP-NAS."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def scenario_path(name_or_path: str | Path) -> Path:
    """Return the file of a scenario given by path or by built-in name."""
    path = Path(name_or_path)
    if path.is_file():
        return path.resolve()
    builtin = SCENARIO_DIR / f"{name_or_path}.toml"
    if builtin.is_file():
        return builtin
    raise ScenarioError(f"scenario {str(name_or_path)!r} is neither a file nor a built-in scenario; "
                        f"built-in scenarios: {builtin_scenarios()}")


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Parse and check a scenario file; errors name the file and the bad key."""
    path = scenario_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ScenarioError(f"scenario file {path} is not valid TOML: {error}") from None
    unknown = sorted(set(data) - set(TABLES))
    if unknown:
        raise ScenarioError(f"scenario file {path} has unknown tables {unknown}; allowed tables: {list(TABLES)}")
    meta = data.get("scenario", {})
    federation = {**FEDERATION_DEFAULTS, **data.get("federation", {})}
    bad = sorted(set(federation) - set(FEDERATION_DEFAULTS))
    if bad:
        raise ScenarioError(f"scenario file {path}: unknown [federation] keys {bad}; allowed: "
                            f"{sorted(FEDERATION_DEFAULTS)}")
    scenario = Scenario(
        name=str(meta.get("name", path.stem)), description=str(meta.get("description", "")), path=path,
        federation=federation, run_config=dict(data.get("run-config", {})),
    )
    check(scenario)
    return scenario


def check(scenario: Scenario) -> None:
    """Raise :class:`ScenarioError` for a bad federation size or a non-scalar run-config value."""
    fed = scenario.federation
    for key in ("num-supernodes", "client-resources-num-cpus"):
        value = fed[key]
        minimum = 1 if key == "num-supernodes" else 0
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ScenarioError(f"scenario {scenario.name!r}: {key}={value!r} is invalid; use an integer >= {minimum}")
    for key, value in scenario.run_config.items():
        if not isinstance(value, (str, int, float, bool)):
            raise ScenarioError(f"scenario {scenario.name!r}: run-config {key}={value!r} must be a string, "
                                "number or boolean")


def parse_value(value: Any) -> Any:
    """Return an override value: strings are read as TOML values (``2``, ``0.5``, ``true``, ``"x"``), else kept."""
    if not isinstance(value, str):
        return value
    try:
        return tomllib.loads(f"value = {value}")["value"]
    except tomllib.TOMLDecodeError:
        return value


def with_overrides(scenario: Scenario, overrides: Mapping[str, Any] | None) -> Scenario:
    """Return ``scenario`` with ``overrides`` applied ([federation] keys there, others to the run config)."""
    if not overrides:
        return scenario
    federation, run_config = dict(scenario.federation), dict(scenario.run_config)
    for key, value in overrides.items():
        (federation if key in FEDERATION_DEFAULTS else run_config)[key] = parse_value(value)
    updated = dataclasses.replace(scenario, federation=federation, run_config=run_config)
    check(updated)
    return updated
