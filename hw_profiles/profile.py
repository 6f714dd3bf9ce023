"""Hardware profiles: how to run and time a model on one device, and that device's budgets.

A profile is a flat TOML file whose keys are the fields of :class:`HardwareProfile`.
Budgets are absolute milliseconds (numbers) or quantiles of the search space's
latency on the device (strings ``"p1"`` to ``"p99"``), which
:func:`hw_profiles.budgets.resolve_budgets` turns into milliseconds when a run
starts. Every profile, from a file or built in code, is validated once, and all
problems are reported together in one :class:`~nas.errors.ProfileError`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import tomli_w

from nas.errors import ProfileError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

RUNTIMES = ("onnxruntime",)
GRAPH_OPTIMIZATIONS = ("disable", "basic", "extended", "all")
PRECISIONS = ("fp32", "int8")
STATISTICS = ("median",)
QUANTILE_PATTERN = re.compile(r"^p([1-9][0-9]?)$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_THREADS = 256


@dataclass(frozen=True)
class HardwareProfile:
    """Settings that fix how a model is run and timed on one device.

    Thread counts apply to the ONNX Runtime CPU session. ``budgets`` contains absolute
    latency budgets in milliseconds (floats) and quantile budgets such as ``"p25"``.
    A measurement is unstable when its robust coefficient of variation exceeds
    ``max_cv``, and is then repeated, up to ``max_attempts`` attempts in all. ``tolerance`` is the relative
    slack used by :meth:`meets_budget`: a latency meets budget ``b`` when it is at
    most ``b * (1 + tolerance)``.
    """

    name: str
    description: str
    runtime: str
    intra_op_threads: int
    inter_op_threads: int
    graph_optimization: str
    precision: str
    batch_size: int
    warmup: int
    repeats: int
    statistic: str
    budgets: tuple[str | float, ...]
    max_cv: float = 0.15
    max_attempts: int = 3
    tolerance: float = 0.10

    def __post_init__(self) -> None:
        budgets = self.budgets
        if isinstance(budgets, (list, tuple)):
            budgets = tuple(float(b) if _is_number(b) else b for b in budgets)
            object.__setattr__(self, "budgets", budgets)
        problems = _check_values(dataclasses.asdict(self) | {"budgets": budgets})
        if problems:
            raise ProfileError(_format_problems(f"HardwareProfile(name={self.name!r})", problems))

    @property
    def quantile_budgets(self) -> tuple[str, ...]:
        """Quantile budgets (``"pNN"`` strings) in file order."""
        return tuple(b for b in self.budgets if isinstance(b, str))

    @property
    def absolute_budgets_ms(self) -> tuple[float, ...]:
        """Absolute budgets in milliseconds, in file order."""
        return tuple(float(b) for b in self.budgets if not isinstance(b, str))

    def meets_budget(self, latency_ms: float, budget_ms: float) -> bool:
        """Return whether ``latency_ms`` is within ``budget_ms`` allowing the relative ``tolerance``."""
        return latency_ms <= budget_ms * (1.0 + self.tolerance)

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as plain data (budgets as a list)."""
        data = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        data["budgets"] = list(self.budgets)
        return data

    def to_toml(self) -> str:
        """Return the profile as TOML text that :func:`load_profile` reads back unchanged."""
        data = self.to_dict()
        ordered = {key: data[key] for key in FILE_KEY_ORDER}
        return tomli_w.dumps(ordered)

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_toml` to ``path`` (parent folders are created) and return the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.to_toml(), encoding="utf-8")
        return target

    def replace(self, **changes: Any) -> "HardwareProfile":
        """Return a validated copy with ``changes`` applied (for example fewer repeats in tests)."""
        return dataclasses.replace(self, **changes)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_range(low: int, high: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: _is_int(v) and low <= v <= high), f"an integer from {low} to {high}"


def _choice(values: tuple[str, ...]) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in values), "one of " + ", ".join(repr(v) for v in values)


def _budget_ok(value: Any) -> bool:
    if isinstance(value, str):
        return QUANTILE_PATTERN.match(value) is not None
    return _is_number(value) and math.isfinite(value) and value > 0


def _budgets_ok(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(_budget_ok(b) for b in value)


# Key -> (check, description of the allowed values). The order is the file key order.
FIELD_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (
        lambda v: isinstance(v, str) and NAME_PATTERN.match(v) is not None,
        "1 to 64 characters from letters, digits, '.', '_' and '-', starting with a letter or digit",
    ),
    "description": (lambda v: isinstance(v, str), "a string"),
    "runtime": _choice(RUNTIMES),
    "intra_op_threads": _int_range(1, MAX_THREADS),
    "inter_op_threads": _int_range(1, MAX_THREADS),
    "graph_optimization": _choice(GRAPH_OPTIMIZATIONS),
    "precision": _choice(PRECISIONS),
    "batch_size": _int_range(1, 4096),
    "warmup": _int_range(0, 100_000),
    "repeats": _int_range(3, 1_000_000),
    "statistic": _choice(STATISTICS),
    "max_cv": (
        lambda v: _is_number(v) and 0 < v <= 10,
        "a number greater than 0 and at most 10",
    ),
    "max_attempts": _int_range(1, 100),
    "tolerance": (lambda v: _is_number(v) and 0 <= v <= 1, "a number from 0 to 1"),
    "budgets": (
        _budgets_ok,
        "a non-empty list of positive milliseconds (numbers) or quantiles 'p1' to 'p99'",
    ),
}
FILE_KEY_ORDER = tuple(FIELD_RULES)
# Keys a file may omit, with the values they then take.
FILE_DEFAULTS: dict[str, Any] = {"description": ""} | {
    field.name: field.default
    for field in dataclasses.fields(HardwareProfile)
    if field.default is not dataclasses.MISSING
}
REQUIRED_KEYS = tuple(key for key in FILE_KEY_ORDER if key not in FILE_DEFAULTS)


def _check_values(data: Mapping[str, Any]) -> list[str]:
    problems = []
    for key, (check, allowed) in FIELD_RULES.items():
        if key in data and not check(data[key]):
            problems.append(f"key {key!r} has invalid value {data[key]!r}; allowed: {allowed}")
    return problems


def _format_problems(source: str, problems: list[str]) -> str:
    lines = "\n".join(f"  - {problem}" for problem in problems)
    return f"invalid hardware profile {source}:\n{lines}"


def profile_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> HardwareProfile:
    """Build a validated profile from file data; raise one ProfileError listing every problem.

    ``source`` names the origin (usually the file path) in the error message. Unknown
    keys, missing required keys and out-of-range values are all reported.
    """
    if not isinstance(data, Mapping):
        raise ProfileError(f"invalid hardware profile {source}: expected a table, got {type(data).__name__}")
    problems = []
    unknown = sorted(set(data) - set(FIELD_RULES))
    if unknown:
        problems.append(f"unknown keys {unknown}; allowed keys: {list(FILE_KEY_ORDER)}")
    missing = [key for key in REQUIRED_KEYS if key not in data]
    for key in missing:
        problems.append(f"key {key!r} is missing; expected {FIELD_RULES[key][1]}")
    problems.extend(_check_values(data))
    if problems:
        raise ProfileError(_format_problems(source, problems))
    return HardwareProfile(**(FILE_DEFAULTS | dict(data)))


def read_profile_file(path: str | Path) -> HardwareProfile:
    """Read and validate one profile TOML file; every failure is a ProfileError naming the file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise ProfileError(
            f"hardware profile file {str(file)!r} not found; pass an existing .toml path or a built-in name"
        ) from error
    except (OSError, UnicodeDecodeError) as error:
        raise ProfileError(f"hardware profile file {str(file)!r} cannot be read: {error}") from error
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ProfileError(f"hardware profile file {str(file)!r} is not valid TOML: {error}") from error
    return profile_from_dict(data, source=repr(str(file)))
