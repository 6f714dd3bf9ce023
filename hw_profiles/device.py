"""``apfp-nas profile``: measure this device and fit its latency predictor.

Run on the device itself (a laptop, a board, a phone with Python). It writes a
profile for the device (or uses a built-in one), samples architectures of a search
space, exports and times each under the profile, saves the measurements, fits the
LightGBM latency predictor and reports its held-out quality beside the
FLOPs-linear baseline. With ``--add-to-run-dir`` the command line also adds the
device to a stage-1 run directory, so that a federation can use it.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hw_profiles.profiling import profile_space
from hw_profiles.registry import default_device_profile, load_profile
from nas.export import export_onnx
from nas.space import Architecture, SearchSpace
from nas.subnet import Subnet

log = logging.getLogger(__name__)


def _space_for(run_dir: str | Path | None) -> SearchSpace:
    if run_dir is None:
        return SearchSpace.for_task(in_channels=1, num_classes=10, resolution=16)
    path = Path(run_dir) / "space.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; pass the run directory written by `apfp-nas pretrain`")
    return SearchSpace.from_json(path.read_text("utf-8"))


def _write_measurements(rows: Sequence[dict[str, Any]], path: Path, file_format: str) -> None:
    if file_format == "json":
        path.write_text(json.dumps(list(rows), indent=1), "utf-8")
        return
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()})


def _parse_budget(value: str | float) -> str | float:
    """Return a budget as float milliseconds, or keep a quantile such as "p25" as text."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def profile_device(
    *,
    profile: str | None,
    name: str,
    budgets: Sequence[str | float],
    run_dir: str | Path | None,
    num_samples: int,
    output_dir: str | Path,
    file_format: str = "json",
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure ``num_samples`` architectures on this device and fit its latency predictor.

    ``profile`` names a built-in profile or a TOML file; None writes a new profile
    called ``name`` for this device with the given ``budgets`` (ms or "pNN"). Returns
    the paths written and the held-out quality dict (MAPE, share within ±10%, and the
    same for the FLOPs-linear baseline).
    """
    from surrogate.quality import fit_latency_surrogate

    if file_format not in ("json", "csv"):
        raise ValueError(f"file_format={file_format!r} is invalid; use 'json' or 'csv'")
    if num_samples < 10:
        raise ValueError(f"num_samples={num_samples} is too small; use >= 10 so the predictor has held-out data")
    space = _space_for(run_dir)
    if profile:
        device_profile = load_profile(profile)
    else:
        device_profile = dataclasses.replace(default_device_profile(name), budgets=tuple(_parse_budget(b) for b in budgets))
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    profile_path = output / f"{device_profile.name}.toml"
    device_profile.save(profile_path)

    input_shape = (space.in_channels, space.resolution, space.resolution)

    def export(arch: Architecture) -> bytes:
        return export_onnx(Subnet(space, arch), input_shape=input_shape)

    rows = profile_space(space, device_profile, num_samples, export, seed, progress=progress)
    measurements_path = output / f"measurements-{device_profile.name}.{file_format}"
    _write_measurements(rows, measurements_path, file_format)

    archs = [Architecture.from_json(row["architecture"]) for row in rows]
    latency = np.array([row["median_ms"] for row in rows], dtype=float)
    predictor, quality = fit_latency_surrogate(space, archs, latency, device_profile.name, seed=seed)
    predictor_path = output / f"latency-{device_profile.name}.txt"
    predictor_path.write_text(predictor.to_text(), "utf-8")
    (output / f"quality-{device_profile.name}.json").write_text(json.dumps(quality, indent=2), "utf-8")
    log.info("Profiled %s: %d architectures, held-out MAPE %.3f", device_profile.name, len(rows), quality["mape"])
    return {
        "profile_path": str(profile_path),
        "measurements_path": str(measurements_path),
        "predictor_path": str(predictor_path),
        "num_samples": len(rows),
        "quality": quality,
        "rows": rows,
    }
