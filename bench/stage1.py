"""Stage-1 run directories for the benchmarks, built once per setting and cached.

The benchmarks that compare searches or surrogates need a trained supernet, the
surrogates and the latency budgets of the scenario's devices. They build them with
the real stage 1 (:func:`fl_server.pretrain.pretrain`) and keep the run directory
under ``<cache-dir>/stage1-<dataset>-<hash of the settings>``, so a second
benchmark with the same settings loads it instead of training again.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import SHARED_MEDMNIST_DIR, Stopwatch
from fl_server.pretrain import PretrainConfig, pretrain
from fl_server.run_dir import RunDirectory
from nas.errors import ApfpError, CheckpointError
from simulations.scenario import Scenario, load_scenario, with_overrides

logger = logging.getLogger(__name__)

#: Stage-1 settings of ``--quick`` runs; the full runs use the PretrainConfig defaults.
QUICK_PRETRAIN = {"epochs": 2, "num_accuracy_samples": 30, "num_latency_samples": 20, "search_evaluations": 60}


@dataclass(frozen=True)
class BenchDataset:
    """A dataset the benchmarks run on: its loader name, built-in scenario and data folder need."""

    key: str
    dataset: str
    scenario: str
    needs_data_root: bool


DATASETS = {
    "digits": BenchDataset("digits", "digits", "digits", False),
    "retinamnist": BenchDataset("retinamnist", "medmnist:retinamnist", "retinamnist", True),
}


def add_stage1_arguments(parser: argparse.ArgumentParser, *, datasets: bool = True) -> None:
    """Add ``--datasets``, ``--run-dir``, ``--data-root`` and ``--set`` (scenario overrides)."""
    if datasets:
        parser.add_argument("--datasets", default=None,
                            help=f"comma list of {sorted(DATASETS)} (default: all; quick: digits)")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="existing stage-1 run directory to use instead of a cached one (one dataset only)")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="folder with retinamnist.npz (default: the shared MedMNIST folder beside the checkout)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a scenario setting, as `apfp-nas simulate --set` does (repeatable)")


def selected_datasets(args: argparse.Namespace) -> list[BenchDataset]:
    """Return the datasets named by ``--datasets`` (default: all; quick: digits), checked."""
    text = args.datasets or ("digits" if args.quick else ",".join(DATASETS))
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in DATASETS]
    if unknown or not names:
        raise ApfpError(f"--datasets {text!r} is invalid; choose from {sorted(DATASETS)}")
    if args.run_dir is not None and len(names) != 1:
        raise ApfpError(f"--run-dir serves one dataset, but --datasets names {names}; name the run's dataset")
    return [DATASETS[n] for n in names]


def data_root_for(choice: BenchDataset, data_root: Path | None) -> Path | None:
    """Return the data folder of ``choice``; raise FileNotFoundError naming it when it is missing."""
    if not choice.needs_data_root:
        return None
    root = Path(data_root) if data_root is not None else SHARED_MEDMNIST_DIR
    if not (root / "retinamnist.npz").is_file():
        raise FileNotFoundError(
            f"{root / 'retinamnist.npz'} not found; pass --data-root with the folder that holds it, "
            f"or leave retinamnist out with --datasets digits"
        )
    return root


def parse_overrides(items: list[str]) -> dict[str, str]:
    """Parse ``--set KEY=VALUE`` items into a dict of scenario overrides (values are TOML text)."""
    parsed = {}
    for item in items:
        if "=" not in item:
            raise ApfpError(f"--set {item!r} is invalid; use KEY=VALUE, for example --set max-steps=5")
        key, value = item.split("=", 1)
        parsed[key.strip()] = value.strip()
    return parsed


def scenario_for(choice: BenchDataset, overrides: list[str] | dict[str, str]) -> Scenario:
    """Return the dataset's built-in scenario with ``--set KEY=VALUE`` overrides applied."""
    parsed = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    return with_overrides(load_scenario(choice.scenario), parsed)


def device_profiles(scenario: Scenario) -> list[str]:
    """Return the scenario's device profile names (``device-profiles``), in client order."""
    text = str(scenario.run_config.get("device-profiles", ""))
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ApfpError(f"scenario {scenario.name!r} has no device-profiles; set it with --set device-profiles=...")
    return names


def stage1_config(choice: BenchDataset, scenario: Scenario, data_root: Path | None, quick: bool) -> PretrainConfig:
    """Return the stage-1 settings of a benchmark: defaults (or quick ones) on the scenario's devices."""
    extra = QUICK_PRETRAIN if quick else {}
    return PretrainConfig(dataset=choice.dataset, data_root=str(data_root) if data_root else None,
                          profiles=tuple(device_profiles(scenario)), progress=False, **extra)


def cached_stage1(config: PretrainConfig, cache_dir: Path) -> tuple[RunDirectory, dict[str, Any]]:
    """Return the run directory of ``config`` from the cache, building it with stage 1 when absent.

    The second value records where it is, whether it was built now, and the stage-1
    wall and CPU seconds when it was.
    """
    settings = dataclasses.asdict(config)
    settings.pop("progress")
    settings.pop("data_root")  # the folder does not change the data
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"stage1-{config.dataset.replace(':', '-')}-{digest}"
    if (path / "run.json").is_file():
        try:
            run = RunDirectory.load(path)
            logger.info("using cached stage-1 run %s", path)
            return run, {"path": str(path), "built": False, "config": settings}
        except CheckpointError as error:
            logger.warning("cached stage-1 run %s is unusable (%s); building it again", path, error)
    logger.info("building stage-1 run %s for %s (this trains a supernet)", path, config.dataset)
    watch = Stopwatch().start()
    run = pretrain(path, config)
    return run, {"path": str(path), "built": True, "config": settings, **watch.elapsed()}


def load_stage1(
    choice: BenchDataset, scenario: Scenario, args: argparse.Namespace
) -> tuple[RunDirectory, dict[str, Any]]:
    """Return the run directory for ``choice``: ``--run-dir`` when given, else the cached one."""
    if args.run_dir is not None:
        run = RunDirectory.load(args.run_dir)
        if run.settings.get("dataset") != choice.dataset:
            raise ApfpError(f"--run-dir {args.run_dir} was pretrained on {run.settings.get('dataset')!r}, "
                            f"not on {choice.dataset!r}; pass --datasets with its dataset")
        return run, {"path": str(args.run_dir), "built": False, "given": True}
    root = data_root_for(choice, args.data_root)
    return cached_stage1(stage1_config(choice, scenario, root, args.quick), args.cache_dir)
