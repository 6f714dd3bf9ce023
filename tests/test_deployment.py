"""Loopback deployment: a real SuperLink and two SuperNodes on 127.0.0.1 run a federated search.

This is the deployment path of docs/deployment.md on one machine: insecure HTTP,
``--node-config`` with the keys the ClientApp reads, ``flwr run`` against the
SuperLink connection. Every process is stopped by PID when the test ends.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import tomli_w

from simulations.processes import CONNECTION, FlowerProcesses, executable
from simulations.runner import REPO_ROOT, app_config_keys, build_run_config


@pytest.mark.slow  # about 2 minutes on 2 cores: every message starts a fresh ClientApp process
def test_loopback_deployment_completes_round(tiny_run_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "federated"
    settings = {"num-rounds": 1, "min-clients": 2, "candidates-per-client": 1, "max-steps": 3, "bn-batches": 2,
                "round-timeout": 600.0}
    config = build_run_config(settings, run_dir=tiny_run_dir, output_dir=output, data_root=None, resume=False,
                              allowed=app_config_keys(REPO_ROOT))
    config_file = tmp_path / "run-config.toml"
    config_file.write_text(tomli_w.dumps(config), "utf-8")
    with FlowerProcesses(tmp_path / "logs", simulation=False) as flower:
        for pid, profile in enumerate(("cpu-1t-fp32", "cpu-1t-fp32-noopt")):
            node_config = f'partition-id={pid} num-partitions=2 hw-profile="{profile}"'
            flower.start_supernode(node_config, f"supernode-{pid}.log")
        command = [executable("flwr"), "run", str(REPO_ROOT), CONNECTION, "--run-config", str(config_file), "--stream"]
        started = [flower.spawn(command, "flwr-run.log")]
        flower.watch(started, timeout_s=None)
        log = (tmp_path / "logs" / "flwr-run.log").read_text("utf-8")
        run_id = int(re.search(r"Successfully started run (\d+)", log).group(1))
        assert flower.run_status(run_id) == "finished:completed"
        pids = [p.pid for p in flower.processes]
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    history = json.loads((output / "history.json").read_text("utf-8"))
    assert history["status"] == "completed"
    assert sorted(c["device"] for c in history["clients"]) == ["cpu-1t-fp32", "cpu-1t-fp32-noopt"]
    assert sorted(c["partition"] for c in history["clients"]) == [0, 1]
    assert history["rounds"][0]["accepted"] == 2
    assert history["rounds"][0]["rejected"] == 0
    assert all(r["measured_latency_ms"] for r in history["recommendations"] if r["source"] != "infeasible")
