"""Stage 2 through Flower's real simulation runtime, measured: wall and CPU seconds, peak memory.

:func:`measured_simulation` calls :func:`simulations.runner.simulate` (a private
SuperLink with its simulation runtime, ``flwr run``, Ray) inside a
:class:`bench.procs.TreeSampler`, then reads the ``history.json`` the ServerApp
wrote. Its CPU total is this process's CPU time plus the larger of two lower
bounds on the CPU time of the Flower processes: the sampled per-process times and
``getrusage(RUSAGE_CHILDREN)``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from bench.common import Stopwatch
from bench.procs import TreeSampler
from simulations.runner import simulate

logger = logging.getLogger(__name__)


def measured_simulation(
    scenario: str,
    *,
    run_dir: Path,
    output_dir: Path,
    overrides: Mapping[str, Any] | None = None,
    data_root: Path | None = None,
    memory: bool = True,
    interval_s: float = 0.5,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run one stage-2 simulation from scratch; return its history and the measured usage.

    ``output_dir`` is emptied first, so no checkpoint of an earlier run is resumed.
    The usage dict contains ``wall_s``, ``cpu_self_s``, ``cpu_children_s`` (rusage),
    the sampler's summary and ``cpu_total_s``.
    """
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    output_dir = Path(output_dir)
    if output_dir.exists():
        shutil.rmtree(output_dir)
    logger.info("simulating %s with overrides %s into %s", scenario, dict(overrides or {}), output_dir)
    with TreeSampler(interval_s, memory=memory) as sampler:
        watch = Stopwatch().start()
        report = simulate(scenario, run_dir=run_dir, output_dir=output_dir, data_root=data_root,
                          overrides={k: str(v) if not isinstance(v, str) else v for k, v in (overrides or {}).items()})
        usage = watch.elapsed()
    usage.update(sampler.summary())
    usage["cpu_total_s"] = usage["cpu_self_s"] + max(usage["descendants_cpu_s"], usage["cpu_children_s"])
    history = json.loads((output_dir / "history.json").read_text("utf-8"))
    usage["report"] = str(report)
    return history, usage


def round_rows(history: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Return per-round wall time, client work, server work and bytes from a stage-2 history.

    Seconds: ``wall`` is the round (configure, wait for replies, aggregate) plus its
    checkpoint. ``client_work`` is the clients' own fine-tuning, evaluation and
    latency measurement, summed over clients, because they run one at a time when
    each simulated client takes every core. ``server`` is configure, aggregate and
    checkpoint. ``runtime`` is the rest of the wait: Flower, Ray, serialization,
    client-side message decoding and data loading.
    """
    rows = []
    for entry in history.get("rounds", []):
        timings, clients = entry["timings_s"], entry.get("client_time_s", {})
        wall = float(timings["total"]) + float(timings.get("checkpoint", 0.0))
        work = float(clients.get("train", 0.0)) + float(clients.get("measure", 0.0))
        server = float(timings["configure"]) + float(timings["aggregate"]) + float(timings.get("checkpoint", 0.0))
        runtime = float(timings["wait"]) - work
        rows.append({
            "round": entry["round"], "clients": len(entry.get("clients", [])), "wall_s": wall,
            "client_work_s": work, "server_s": server, "runtime_s": runtime,
            "outside_client_work_share": 1.0 - work / wall if wall > 0 else None,
            "runtime_share": runtime / wall if wall > 0 else None,
            "bytes_sent": entry.get("bytes_sent"), "bytes_received": entry.get("bytes_received"),
        })
    return rows


def budget_rows(history: dict[str, Any]) -> dict[str, Any]:
    """Return the share of recommendations whose measured latency meets the budget, strict and with tolerance."""
    rows = [r for r in history.get("recommendations", []) if r.get("measured_latency_ms") is not None]
    strict = [r["measured_latency_ms"] <= r["budget_ms"] for r in rows]
    tolerant = [bool(r.get("meets_budget")) for r in rows]
    return {
        "recommendations": len(history.get("recommendations", [])), "measured": len(rows),
        "met_share": float(np.mean(strict)) if rows else None,
        "met_share_with_tolerance": float(np.mean(tolerant)) if rows else None,
        "rows": [{k: r.get(k) for k in ("device", "budget_ms", "measured_latency_ms", "tolerance", "meets_budget",
                                         "measured_accuracy", "source")} for r in history.get("recommendations", [])],
    }
