"""Scenario files, run-config building and process cleanup of the simulation runner."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulations.processes import descendants, stop_tree
from simulations.runner import REPO_ROOT, app_config_keys, build_run_config
from simulations.scenario import ScenarioError, builtin_scenarios, load_scenario, parse_value, with_overrides


def test_builtin_scenarios_fit_the_app() -> None:
    assert {"digits", "retinamnist"} <= set(builtin_scenarios())
    allowed = app_config_keys(REPO_ROOT)
    for name in ("digits", "retinamnist"):
        scenario = load_scenario(name)
        assert set(scenario.run_config) <= allowed
        profiles = scenario.run_config["device-profiles"].split(",")
        assert len(set(profiles)) >= 2
        assert scenario.federation["num-supernodes"] == 4
    assert load_scenario("retinamnist").run_config["dataset"] == "medmnist:retinamnist"


def test_overrides_parse_as_toml() -> None:
    assert parse_value("2") == 2
    assert parse_value("0.5") == 0.5
    assert parse_value("true") is True
    assert parse_value("cpu-1t-fp32") == "cpu-1t-fp32"
    assert parse_value('"x y"') == "x y"
    scenario = with_overrides(load_scenario("digits"), {"num-supernodes": "2", "num-rounds": "1", "seed": 4})
    assert scenario.federation["num-supernodes"] == 2
    assert scenario.run_config["num-rounds"] == 1
    assert scenario.run_config["seed"] == 4
    config = scenario.federation_config()
    assert config.startswith("num-supernodes=2 client-resources-num-cpus=")
    assert f"client-resources-num-cpus={os.cpu_count()}" in config
    with pytest.raises(ScenarioError, match="num-supernodes"):
        with_overrides(load_scenario("digits"), {"num-supernodes": "0"})


def test_bad_scenario_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[scenario]\nname = 'x'\n[clients]\nn = 2\n", "utf-8")
    with pytest.raises(ScenarioError, match="unknown tables"):
        load_scenario(bad)
    bad.write_text("[federation]\nnum-nodes = 2\n", "utf-8")
    with pytest.raises(ScenarioError, match="num-nodes"):
        load_scenario(bad)
    with pytest.raises(ScenarioError, match="built-in scenarios"):
        load_scenario("no-such-scenario")


def test_run_config_paths_and_unknown_keys(tmp_path: Path) -> None:
    allowed = app_config_keys(REPO_ROOT)
    config = build_run_config({"num-rounds": 2}, run_dir=tmp_path / "run", output_dir=tmp_path / "out",
                              data_root=tmp_path / "data", resume=True, allowed=allowed)
    assert config["run-dir"] == str(tmp_path / "run")
    assert config["resume"] is True
    assert config["data-root"] == str(tmp_path / "data")
    with pytest.raises(ScenarioError, match="colour"):
        build_run_config({"colour": "red"}, run_dir=tmp_path, output_dir=tmp_path, data_root=None, resume=False,
                         allowed=allowed)


def test_stop_tree_ends_children() -> None:
    code = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    deadline = time.monotonic() + 30
    while not descendants(parent.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    children = descendants(parent.pid)
    assert len(children) == 1
    stop_tree(parent, grace_s=5)
    assert parent.poll() is not None
    time.sleep(0.2)
    for pid in children:
        status = Path(f"/proc/{pid}/status")
        assert not status.exists() or "zombie" in status.read_text().lower()
