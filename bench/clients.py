"""The private clients of a scenario without Flower, and the one client-evaluation protocol.

:class:`PrivateClients` cuts the private part of the run's dataset into the
scenario's client partitions and assigns each client its device profile, exactly
as the ClientApp does (:func:`fl_client.node.load_private_data` and
``device-profiles`` indexed by partition id). :meth:`PrivateClients.evaluate` is
the client evaluation every search strategy and the oracle pool go through, so
"true accuracy" is measured identically for all of them:

1. extract the subnet from the stage-1 supernet;
2. fine-tune it on the client's private train split with the scenario's settings
   (``finetune-epochs``, ``max-steps``, ``batch-size``, ``lr``);
3. recalibrate BatchNorm on ``bn-batches`` batches of that split;
4. score it on the client's validation split (the accuracy a search receives) and
   on its test split.

The fine-tuning seed is derived from the architecture and the client id only, so
repeating an evaluation gives the same numbers and every result is cached.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from bench.common import REPO_ROOT
from bench.stage1 import device_profiles
from fl_server.run_dir import RunDirectory
from hw_profiles import measure_latency
from nas.data import ClientData, DatasetSplits, load_dataset, partition, split_public_private
from nas.errors import ApfpError
from nas.evaluate import evaluate
from nas.export import export_onnx
from nas.finetune import finetune, recalibrate_bn
from nas.space import Architecture
from simulations.scenario import Scenario

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClientScore:
    """One client evaluation: accuracies are fractions, counts are samples, ``seconds`` is wall time."""

    val_accuracy: float
    num_val: int
    test_accuracy: float
    num_test: int
    seconds: float


def app_run_config(scenario: Scenario) -> dict[str, Any]:
    """Return the run config a simulation of ``scenario`` gets: the app defaults, then the scenario's values."""
    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    config = dict(data["tool"]["flwr"]["app"]["config"])
    config.update(scenario.run_config)
    return config


def evaluation_seed(space_encoding: list[int], client: int) -> int:
    """Return the fine-tuning seed of one (architecture, client) pair."""
    digest = hashlib.sha256(f"{space_encoding}|{client}".encode()).digest()
    return int.from_bytes(digest[:4], "little") % (2**31 - 1)


def private_splits(run: RunDirectory, data_root: str | None = None) -> DatasetSplits:
    """Return the private part of the run's dataset at the run's resolution, as stage 2 cuts it."""
    settings = run.settings
    root = data_root or settings.get("data_root") or None
    seed = int(settings.get("seed", 0))
    splits = load_dataset(str(settings["dataset"]), root=root, seed=seed)
    fraction = float(settings.get("private_fraction", 0.0))
    if fraction > 0:
        splits = split_public_private(splits, "private", private_fraction=fraction, seed=seed)
    return splits.resized(run.space.resolution)


class PrivateClients:
    """The scenario's clients: private data, devices, client evaluations and measured latencies."""

    def __init__(self, run: RunDirectory, scenario: Scenario, data_root: str | None = None) -> None:
        self.run, self.space, self.scenario = run, run.space, scenario
        config = app_run_config(scenario)
        self.config = config
        num_clients = int(scenario.federation["num-supernodes"])
        profiles = device_profiles(scenario)
        missing = sorted(set(profiles) - set(run.latency_predictors))
        if missing:
            raise ApfpError(f"scenario devices {missing} have no latency surrogate in the run directory "
                            f"{run.path} (it has {sorted(run.latency_predictors)}); pretrain with those profiles")
        self.devices = [profiles[i % len(profiles)] for i in range(num_clients)]
        self.clients = self._load(config, num_clients, data_root)
        self.finetune_epochs = int(config["finetune-epochs"])
        self.max_steps = int(config["max-steps"]) or None
        self.batch_size = int(config["batch-size"])
        self.lr = float(config["lr"])
        self.bn_batches = int(config["bn-batches"])
        self._scores: dict[tuple[Architecture, int], ClientScore] = {}
        self._latency: dict[tuple[Architecture, str], float] = {}
        self.evaluations_run = 0
        self.evaluation_seconds = 0.0

    def _load(self, config: Mapping[str, Any], num_clients: int, data_root: str | None) -> list[ClientData]:
        splits = private_splits(self.run, data_root)
        return partition(splits, num_clients, scheme=str(config["partition"]), alpha=float(config["alpha"]),
                         seed=int(config["partition-seed"]))

    # ------------------------------------------------------------- description
    def describe(self) -> dict[str, Any]:
        """Return the client sizes, devices and evaluation settings, for the result file."""
        return {
            "scenario": self.scenario.name,
            "clients": [
                {"client": i, "device": self.devices[i], "train": len(c.train), "val": len(c.val), "test": len(c.test)}
                for i, c in enumerate(self.clients)
            ],
            "finetune_epochs": self.finetune_epochs, "max_steps": self.max_steps, "batch_size": self.batch_size,
            "lr": self.lr, "bn_batches": self.bn_batches,
            "partition": self.config["partition"], "alpha": self.config["alpha"],
        }

    def clients_of(self, device: str) -> list[int]:
        """Return the ids of the clients whose device is ``device``, ascending."""
        return [i for i, d in enumerate(self.devices) if d == device]

    @property
    def device_names(self) -> list[str]:
        return list(dict.fromkeys(self.devices))

    # -------------------------------------------------------------- evaluation
    def evaluate(self, arch: Architecture, client: int) -> ClientScore:
        """Return the client evaluation of ``arch`` on ``client`` (cached; see the module docstring)."""
        key = (arch, client)
        if key not in self._scores:
            self._scores[key] = self._evaluate(arch, client)
        return self._scores[key]

    def _evaluate(self, arch: Architecture, client: int) -> ClientScore:
        data = self.clients[client]
        seed = evaluation_seed(self.space.encode(arch), client)
        started = time.perf_counter()
        model = self.run.supernet.extract_subnet(arch)
        finetune(model, data.train, epochs=self.finetune_epochs, batch_size=self.batch_size, lr=self.lr,
                 seed=seed, max_steps=self.max_steps)
        recalibrate_bn(model, data.train, num_batches=self.bn_batches, batch_size=self.batch_size, seed=seed)
        val = evaluate(model, data.val, task=data.task)
        test = evaluate(model, data.test, task=data.task)
        seconds = time.perf_counter() - started
        self.evaluations_run += 1
        self.evaluation_seconds += seconds
        return ClientScore(val.accuracy, val.num_samples, test.accuracy, test.num_samples, seconds)

    def true_accuracy(self, arch: Architecture) -> float:
        """Return the test accuracy of ``arch`` pooled over every client (each fine-tunes its own copy).

        Accuracy does not depend on the device, so all clients count. The result is
        weighted by test samples, as the final evaluation of stage 2 pools its clients.
        """
        scores = [self.evaluate(arch, client) for client in range(len(self.clients))]
        weights = np.array([s.num_test for s in scores], dtype=np.float64)
        return float(np.dot(weights, [s.test_accuracy for s in scores]) / weights.sum())

    # ---------------------------------------------------------------- latency
    def latency_ms(self, arch: Architecture, device: str, *, fresh: bool = False) -> float:
        """Return the median latency in ms of ``arch`` measured under ``device``'s profile.

        The first call measures every scenario device at once (one ONNX export) and
        caches the results; ``fresh`` exports and measures again without the cache.
        """
        if fresh:
            return self._measure(arch, [device])[device]
        if (arch, device) not in self._latency:
            devices = [d for d in self.device_names if (arch, d) not in self._latency]
            devices += [] if device in devices else [device]
            for name, value in self._measure(arch, devices).items():
                self._latency[(arch, name)] = value
        return self._latency[(arch, device)]

    def _measure(self, arch: Architecture, devices: list[str]) -> dict[str, float]:
        model = self.run.supernet.extract_subnet(arch)
        shape = (self.space.in_channels, self.space.resolution, self.space.resolution)
        onnx_bytes = export_onnx(model, input_shape=shape)
        return {d: measure_latency(onnx_bytes, self.run.profiles.get(d) or d).median_ms for d in devices}

    # ------------------------------------------------------------------ cache
    def remember(self, arch: Architecture, scores: Mapping[int, ClientScore], latency: Mapping[str, float]) -> None:
        """Add evaluations and latencies loaded from a saved pool to the caches."""
        for client, score in scores.items():
            self._scores.setdefault((arch, int(client)), score)
        for device, value in latency.items():
            self._latency.setdefault((arch, device), float(value))

    def cached_scores(self, arch: Architecture) -> dict[int, ClientScore]:
        return {client: score for (a, client), score in self._scores.items() if a == arch}

    @staticmethod
    def score_to_dict(score: ClientScore) -> dict[str, Any]:
        return asdict(score)
