"""Profiles by name: the built-in TOML files, user registrations and the current device."""

from __future__ import annotations

import logging
import os
import threading
from importlib import resources
from pathlib import Path

from nas.errors import ProfileError

from hw_profiles.profile import HardwareProfile, read_profile_file

logger = logging.getLogger(__name__)

_BUILTIN: dict[str, HardwareProfile] | None = None
_REGISTERED: dict[str, HardwareProfile] = {}
_LOCK = threading.Lock()

DEFAULT_MAX_THREADS = 8
"""Upper bound on the threads :func:`default_device_profile` uses, whatever the core count."""


def _load_builtin() -> dict[str, HardwareProfile]:
    global _BUILTIN
    with _LOCK:
        if _BUILTIN is None:
            profiles: dict[str, HardwareProfile] = {}
            folder = resources.files("hw_profiles") / "builtin"
            for entry in sorted(folder.iterdir(), key=lambda item: item.name):
                if not entry.name.endswith(".toml"):
                    continue
                with resources.as_file(entry) as path:
                    profile = read_profile_file(path)
                if profile.name != entry.name.removesuffix(".toml"):
                    raise ProfileError(
                        f"built-in profile file {entry.name!r} declares name {profile.name!r}; "
                        "the name must equal the file name without '.toml'"
                    )
                profiles[profile.name] = profile
            _BUILTIN = profiles
        return _BUILTIN


def builtin_profiles() -> dict[str, HardwareProfile]:
    """Return the profiles shipped in ``hw_profiles/builtin/``, keyed by name (a fresh dict)."""
    return dict(_load_builtin())


def available_profiles() -> dict[str, HardwareProfile]:
    """Return built-in and registered profiles by name; a registration shadows a built-in."""
    return _load_builtin() | _REGISTERED


def register_profile(profile: HardwareProfile, *, overwrite: bool = False) -> HardwareProfile:
    """Make ``profile`` loadable by name in this process and return it.

    Registering a name that is already known (built-in or registered) raises
    ProfileError unless ``overwrite`` is true or the profile is identical.
    """
    if not isinstance(profile, HardwareProfile):
        raise ProfileError(f"register_profile expects a HardwareProfile, got {type(profile).__name__}")
    known = available_profiles().get(profile.name)
    if known is not None and known != profile and not overwrite:
        raise ProfileError(
            f"hardware profile {profile.name!r} is already registered with other settings; "
            "choose another name or pass overwrite=True"
        )
    _REGISTERED[profile.name] = profile
    return profile


def load_profile(path_or_name: str | Path | HardwareProfile) -> HardwareProfile:
    """Return the profile named ``path_or_name`` or read from that TOML file.

    A :class:`~pathlib.Path`, a string ending in ``.toml`` or a string containing a
    path separator is read as a file. Any other string is looked up among the
    built-in and registered names. A HardwareProfile is returned unchanged.
    """
    if isinstance(path_or_name, HardwareProfile):
        return path_or_name
    if isinstance(path_or_name, Path):
        return read_profile_file(path_or_name)
    if not isinstance(path_or_name, str) or not path_or_name:
        raise ProfileError(
            f"hardware profile {path_or_name!r} is invalid; pass a profile name or a .toml file path"
        )
    looks_like_path = path_or_name.endswith(".toml") or os.sep in path_or_name or "/" in path_or_name
    if looks_like_path:
        return read_profile_file(path_or_name)
    known = available_profiles()
    if path_or_name in known:
        return known[path_or_name]
    raise ProfileError(
        f"unknown hardware profile {path_or_name!r}; known names: {sorted(known)}, "
        "or pass the path of a .toml profile file"
    )


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_device_profile(
    name: str,
    *,
    precision: str = "fp32",
    max_threads: int = DEFAULT_MAX_THREADS,
    description: str | None = None,
) -> HardwareProfile:
    """Build a profile for the machine this runs on, as a starting point for its own file.

    Intra-op threads are the cores available to this process, capped at
    ``max_threads``. The session runs operators one at a time (one inter-op
    thread) with every graph optimization, at batch size 1. Budgets are the
    quartiles of the space's latency on the device.
    """
    threads = max(1, min(_usable_cores(), max_threads))
    text = description if description is not None else (
        f"This machine with ONNX Runtime on CPU, {threads} intra-op thread(s), {precision}"
    )
    return HardwareProfile(
        name=name,
        description=text,
        runtime="onnxruntime",
        intra_op_threads=threads,
        inter_op_threads=1,
        graph_optimization="all",
        precision=precision,
        batch_size=1,
        warmup=10,
        repeats=50,
        statistic="median",
        budgets=("p25", "p50", "p75"),
    )
