"""The exhaustively evaluated pool: random subnets scored by every client and timed on every device.

The pool is the oracle of the search benchmark (its best architecture within each
budget) and the held-out set of the private accuracy-surrogate benchmark. Each
entry is evaluated on every client with :meth:`bench.clients.PrivateClients.evaluate`
and timed under every scenario device. Pools are saved under the cache folder,
keyed by the run directory, the client setup and the seed, and grow in place: a
larger pool reuses the entries of a smaller one because the draw order is fixed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.clients import ClientScore, PrivateClients
from bench.common import write_json
from fl_server.pretrain import sample_distinct
from nas.space import Architecture

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolEntry:
    """One pool architecture with every client's evaluation and its latency (ms) per device."""

    arch: Architecture
    scores: dict[int, ClientScore]
    latency_ms: dict[str, float]

    @property
    def true_accuracy(self) -> float:
        """Test accuracy pooled over all clients, weighted by test samples."""
        weights = np.array([s.num_test for s in self.scores.values()], dtype=np.float64)
        return float(np.dot(weights, [s.test_accuracy for s in self.scores.values()]) / weights.sum())

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch.to_dict(),
            "scores": {str(c): PrivateClients.score_to_dict(s) for c, s in self.scores.items()},
            "latency_ms": dict(self.latency_ms),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PoolEntry":
        return cls(Architecture.from_dict(data["arch"]),
                   {int(c): ClientScore(**s) for c, s in data["scores"].items()},
                   {d: float(v) for d, v in data["latency_ms"].items()})


def pool_cache_path(clients: PrivateClients, seed: int, cache_dir: Path) -> Path:
    """Return the cache file of the pool of ``clients`` drawn with ``seed``."""
    manifest = (Path(clients.run.path) / "run.json").read_bytes()
    setup = json.dumps(clients.describe(), sort_keys=True).encode()
    digest = hashlib.sha256(manifest + setup + str(seed).encode()).hexdigest()[:12]
    return Path(cache_dir) / f"pool-{digest}.json"


def build_pool(clients: PrivateClients, size: int, *, seed: int, cache_dir: Path) -> list[PoolEntry]:
    """Return ``size`` distinct pool entries (the smallest, the largest, then random draws).

    Entries found in the cache are loaded; missing ones are evaluated on every client,
    timed on every device and saved after each architecture, so an interrupted run
    keeps its work. Every entry is also put in the caches of ``clients``.
    """
    if size < 2:
        raise ValueError(f"pool size={size!r} is invalid; use at least 2 architectures")
    path = pool_cache_path(clients, seed, cache_dir)
    saved: dict[Architecture, PoolEntry] = {}
    if path.is_file():
        try:
            for item in json.loads(path.read_text("utf-8"))["entries"]:
                entry = PoolEntry.from_dict(item)
                saved[entry.arch] = entry
        except (KeyError, TypeError, ValueError) as error:
            logger.warning("pool cache %s is unreadable (%s); evaluating the pool again", path, error)
            saved = {}
    archs = sample_distinct(clients.space, size, np.random.default_rng(seed))
    entries = []
    for index, arch in enumerate(archs):
        entry = saved.get(arch)
        if entry is None or set(entry.scores) != set(range(len(clients.clients))):
            scores = {c: clients.evaluate(arch, c) for c in range(len(clients.clients))}
            latency = {d: clients.latency_ms(arch, d) for d in clients.device_names}
            entry = PoolEntry(arch, scores, latency)
            saved[arch] = entry
            write_json(path, {"entries": [e.to_dict() for e in saved.values()]})
            logger.info("pool %d/%d: true accuracy %.3f, latency %s", index + 1, len(archs), entry.true_accuracy,
                        {d: round(v, 3) for d, v in latency.items()})
        clients.remember(arch, entry.scores, entry.latency_ms)
        entries.append(entry)
    return entries


def oracle(entries: list[PoolEntry], device: str, budget_ms: float) -> PoolEntry | None:
    """Return the pool entry with the best true accuracy whose latency on ``device`` is within ``budget_ms``."""
    fitting = [e for e in entries if e.latency_ms[device] <= budget_ms]
    return max(fitting, key=lambda e: e.true_accuracy) if fitting else None
