"""A server killed with SIGKILL after a completed round resumes to the recommendations of an uninterrupted run.

The killed run is started like :func:`simulations.runner.simulate` starts one, but the
test watches the checkpoint and, once round 1 is in it, sends SIGKILL to the SuperLink,
the ServerApp and every other process of the run. The resumed run and an uninterrupted
run then use the same seed.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from fl_server.checkpoint import load_checkpoint
from simulations.processes import CONNECTION, FlowerProcesses, descendants, executable
from simulations.runner import REPO_ROOT, app_config_keys, build_run_config, simulate
from simulations.scenario import load_scenario, with_overrides

CHECKPOINT_WAIT_S = 600.0
# Budgets far above every latency of the space, and random search, which does not rank by
# latency: only the seeded part of a run (sampling, candidates, fine-tuning) decides the result.
SETTINGS = {
    "num-supernodes": 2, "min-clients": 2, "num-rounds": 3, "candidates-per-client": 2, "max-steps": 3,
    "bn-batches": 2, "device-profiles": "cpu-1t-fp32,cpu-1t-fp32-noopt", "search-strategy": "random",
    "budgets": json.dumps({"cpu-1t-fp32": [1000.0], "cpu-1t-fp32-noopt": [1000.0]}),
}


def kill_after_round(run_dir: Path, output: Path, completed_round: int) -> int:
    """Start the run, SIGKILL all of it once ``completed_round`` is checkpointed; return the checkpointed round."""
    scenario = with_overrides(load_scenario("digits"), SETTINGS)
    config = build_run_config(scenario.run_config, run_dir=run_dir, output_dir=output, data_root=None,
                              resume=False, allowed=app_config_keys(REPO_ROOT))
    output.mkdir(parents=True, exist_ok=True)
    config_file = output / "run-config.toml"
    config_file.write_text(tomli_w.dumps(config), "utf-8")
    with FlowerProcesses(output, simulation=True) as flower:
        stream = flower.spawn([executable("flwr"), "run", str(REPO_ROOT), CONNECTION, "--run-config",
                               str(config_file), "--federation-config", scenario.federation_config(), "--stream"],
                              "flwr-run.log")
        deadline = time.monotonic() + CHECKPOINT_WAIT_S
        while time.monotonic() < deadline:
            manifest = output / "checkpoint" / "manifest.json"
            if manifest.is_file() and json.loads(manifest.read_text("utf-8"))["completed_round"] >= completed_round:
                break
            assert stream.poll() is None, "the run ended before the checkpoint the test waits for"
            time.sleep(0.2)
        else:
            pytest.fail(f"no checkpoint of round {completed_round} within {CHECKPOINT_WAIT_S:g} s")
        victims = {flower.superlink.pid, stream.pid} | descendants(flower.superlink.pid) | descendants(stream.pid)
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    checkpoint = load_checkpoint(output / "checkpoint")
    return checkpoint.completed_round


def assert_same_recommendations(first: dict[str, Any], second: dict[str, Any]) -> None:
    """Same architecture per (device, budget), except among architectures whose observed accuracies tie.

    Measured latency breaks such ties, and it is never identical in two runs.
    """
    observed: dict[str, list[dict[str, Any]]] = {}
    for entry in first["rounds"]:
        for o in entry["observations"]:
            observed.setdefault(o["device"], []).append(o)
    for a, b in zip(first["recommendations"], second["recommendations"], strict=True):
        assert (a["device"], a["budget_ms"], a["source"]) == (b["device"], b["budget_ms"], b["source"])
        assert a["observed_accuracy"] == b["observed_accuracy"]
        if a["arch"] != b["arch"]:
            tied = [o["arch"] for o in observed[a["device"]] if o["accuracy"] == a["observed_accuracy"]]
            assert a["arch"] in tied and b["arch"] in tied, f"the resumed run recommends another arch for {a['device']}"


@pytest.mark.slow  # about 3 minutes on 2 cores: three federated runs of up to 3 rounds
def test_killed_server_resumes_same_result(tiny_run_dir: Path, tmp_path: Path) -> None:
    straight = simulate("digits", run_dir=tiny_run_dir, output_dir=tmp_path / "straight", overrides=SETTINGS)
    uninterrupted = json.loads((straight.parent / "history.json").read_text("utf-8"))

    killed = tmp_path / "killed"
    checkpointed = kill_after_round(tiny_run_dir, killed, completed_round=1)
    assert 1 <= checkpointed < SETTINGS["num-rounds"], "the kill must leave rounds to resume"
    assert not (killed / "report.json").exists()
    resumed_report = simulate("digits", run_dir=tiny_run_dir, output_dir=killed, overrides=SETTINGS, resume=True)
    resumed = json.loads((resumed_report.parent / "history.json").read_text("utf-8"))

    assert resumed["status"] == "completed"
    assert [r["round"] for r in resumed["rounds"]] == [1, 2, 3]
    for first, second in zip(uninterrupted["rounds"], resumed["rounds"], strict=True):
        assert [[c["arch"] for c in client["candidates"]] for client in first["clients"]] == [
            [c["arch"] for c in client["candidates"]] for client in second["clients"]]
        assert [(o["arch"], o["accuracy"]) for o in first["observations"]] == [
            (o["arch"], o["accuracy"]) for o in second["observations"]]
    assert_same_recommendations(uninterrupted, resumed)
    assert "resumed from the checkpoint of round" in (killed / "flwr-run.log").read_text("utf-8")
