"""The stage-1 run directory: everything federated search (stage 2) loads.

Layout (all paths relative to the run directory)::

    run.json                      format version, settings, budgets, sha256 of every file
    space.json                    the search space definition
    supernet.pt                   supernet state_dict (loaded with ``weights_only=True``)
    surrogates/accuracy.txt       accuracy surrogate (LightGBM text + JSON header)
    surrogates/latency-<p>.txt    one latency surrogate per hardware profile
    profiles/<p>.toml             the hardware profiles the budgets were resolved on
    samples/accuracy.json         measured (architecture, accuracy) pairs
    samples/latency-<p>.json      measured (architecture, latency) pairs per profile
    report.json                   stage-1 report (surrogate quality, best architectures)

Files are written to a temporary name and renamed, so a stopped run never leaves a
half-written file under its final name; ``run.json`` is written last and lists the
sha256 of every other file, so :meth:`RunDirectory.load` detects a partial or
corrupt directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from hw_profiles import HardwareProfile, load_profile
from nas.errors import CheckpointError
from nas.space import SearchSpace
from nas.supernet import ElasticSupernet
from surrogate import AccuracyPredictor, LatencyPredictor

log = logging.getLogger(__name__)

RUN_FORMAT_VERSION = 1


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_state_dict(path: Path, state: Mapping[str, torch.Tensor]) -> None:
    """Save a tensor dict atomically; it is read back with ``weights_only=True``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({k: v.detach().cpu() for k, v in state.items()}, tmp)
    os.replace(tmp, path)


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a tensor dict saved by :func:`save_state_dict`; never unpickles objects."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # torch raises several types for corrupt files
        raise CheckpointError(f"weights file {path} is corrupt or not a tensor dict: {error}") from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"weights file {path} does not hold a dict of tensors")
    return state


@dataclass
class RunDirectory:
    """A loaded (or freshly built) stage-1 run: space, supernet, surrogates, profiles, budgets."""

    path: Path
    space: SearchSpace
    supernet: ElasticSupernet
    accuracy_predictor: AccuracyPredictor
    latency_predictors: dict[str, LatencyPredictor]
    profiles: dict[str, HardwareProfile]
    budgets: dict[str, list[float]]
    public_dataset: str
    settings: dict[str, Any] = field(default_factory=dict)
    accuracy_samples: list[dict[str, Any]] = field(default_factory=list)
    latency_samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ saving
    def save(self) -> Path:
        """Write every file of the run directory, ``run.json`` last."""
        root = Path(self.path)
        root.mkdir(parents=True, exist_ok=True)
        files: dict[str, Path] = {}

        def put_text(relative: str, text: str) -> None:
            atomic_write_text(root / relative, text)
            files[relative] = root / relative

        put_text("space.json", json.dumps(self.space.to_dict(), indent=2, sort_keys=True))
        save_state_dict(root / "supernet.pt", self.supernet.state_dict())
        files["supernet.pt"] = root / "supernet.pt"
        put_text("surrogates/accuracy.txt", self.accuracy_predictor.to_text())
        for name, predictor in sorted(self.latency_predictors.items()):
            put_text(f"surrogates/latency-{name}.txt", predictor.to_text())
        for name, profile in sorted(self.profiles.items()):
            put_text(f"profiles/{name}.toml", profile.to_toml())
        put_text("samples/accuracy.json", json.dumps(self.accuracy_samples, indent=1))
        for name, samples in sorted(self.latency_samples.items()):
            put_text(f"samples/latency-{name}.json", json.dumps(samples, indent=1))
        put_text("report.json", json.dumps(self.report, indent=2, sort_keys=True, default=_json_default))

        manifest = {
            "format": RUN_FORMAT_VERSION,
            "public_dataset": self.public_dataset,
            "space_fingerprint": self.space.fingerprint(),
            "profiles": sorted(self.profiles),
            "budgets_ms": {k: list(map(float, v)) for k, v in sorted(self.budgets.items())},
            "settings": self.settings,
            "files": {name: sha256_of(path) for name, path in sorted(files.items())},
        }
        atomic_write_text(root / "run.json", json.dumps(manifest, indent=2, sort_keys=True, default=_json_default))
        log.info("Saved run directory %s", root)
        return root

    # ----------------------------------------------------------------- loading
    @classmethod
    def load(cls, path: str | Path) -> "RunDirectory":
        """Load and verify a run directory written by :meth:`save`.

        Raises :class:`CheckpointError` when ``run.json`` is missing, a listed file is
        missing or its sha256 differs, or the format version is unknown.
        """
        root = Path(path)
        manifest_path = root / "run.json"
        if not manifest_path.is_file():
            raise CheckpointError(
                f"{root} is not a stage-1 run directory (no run.json); "
                f"create one with `apfp-nas pretrain --output {root}`"
            )
        try:
            manifest = json.loads(manifest_path.read_text("utf-8"))
        except json.JSONDecodeError as error:
            raise CheckpointError(f"{manifest_path} is corrupt: {error}; rerun `apfp-nas pretrain`") from error
        if manifest.get("format") != RUN_FORMAT_VERSION:
            raise CheckpointError(
                f"{manifest_path} has format {manifest.get('format')!r}; this version reads "
                f"format {RUN_FORMAT_VERSION}; rerun `apfp-nas pretrain`"
            )
        for relative, digest in manifest["files"].items():
            file_path = root / relative
            if not file_path.is_file():
                raise CheckpointError(f"run directory file {file_path} is missing; rerun `apfp-nas pretrain`")
            if sha256_of(file_path) != digest:
                raise CheckpointError(
                    f"run directory file {file_path} does not match its sha256 in run.json "
                    f"(corrupt or edited); rerun `apfp-nas pretrain`"
                )

        space = SearchSpace.from_json((root / "space.json").read_text("utf-8"))
        if space.fingerprint() != manifest["space_fingerprint"]:
            raise CheckpointError(f"{root}/space.json does not match the space fingerprint in run.json")
        supernet = ElasticSupernet(space)
        state = load_state_dict(root / "supernet.pt")
        try:
            supernet.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise CheckpointError(f"{root}/supernet.pt does not fit the space in space.json: {error}") from error

        accuracy = AccuracyPredictor.from_text((root / "surrogates/accuracy.txt").read_text("utf-8"), space)
        names = list(manifest["profiles"])
        latency = {
            name: LatencyPredictor.from_text((root / f"surrogates/latency-{name}.txt").read_text("utf-8"), space)
            for name in names
        }
        profiles = {name: load_profile(root / f"profiles/{name}.toml") for name in names}
        latency_samples = {
            name: json.loads((root / f"samples/latency-{name}.json").read_text("utf-8")) for name in names
        }
        return cls(
            path=root,
            space=space,
            supernet=supernet,
            accuracy_predictor=accuracy,
            latency_predictors=latency,
            profiles=profiles,
            budgets={k: [float(x) for x in v] for k, v in manifest["budgets_ms"].items()},
            public_dataset=manifest["public_dataset"],
            settings=dict(manifest.get("settings", {})),
            accuracy_samples=json.loads((root / "samples/accuracy.json").read_text("utf-8")),
            latency_samples=latency_samples,
            report=json.loads((root / "report.json").read_text("utf-8")),
        )


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def add_device(
    run_dir: str | Path, profile: HardwareProfile, predictor: LatencyPredictor, samples: list[dict[str, Any]]
) -> RunDirectory:
    """Add a device measured with ``apfp-nas profile`` to a run directory and save it.

    ``samples`` are the device's latency measurements (each with ``median_ms``); the
    profile's quantile budgets are resolved on them. The predictor must have been
    fitted on this run's search space (checked by fingerprint).
    """
    from hw_profiles import resolve_budgets

    run = RunDirectory.load(run_dir)
    if predictor.space.fingerprint() != run.space.fingerprint():
        raise CheckpointError(
            f"the latency predictor of {profile.name!r} belongs to space {predictor.space.fingerprint()!r}, "
            f"not to the space {run.space.fingerprint()!r} of {run_dir}; profile again with --run-dir {run_dir}"
        )
    run.profiles[profile.name] = profile
    run.latency_predictors[profile.name] = predictor
    run.latency_samples[profile.name] = list(samples)
    run.budgets[profile.name] = resolve_budgets(profile, [float(s["median_ms"]) for s in samples])
    run.save()
    log.info("Added device %s to %s with budgets %s ms", profile.name, run.path, run.budgets[profile.name])
    return run
