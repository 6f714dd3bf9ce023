"""Bad files and settings: each one raises a clear error that names the value and the fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tomli_w

from fl_client.faults import FAILURE_MODES
from fl_client.local_work import Surrogates
from fl_client.node import resolve_profile
from fl_server.app import ServerSettings
from fl_server.checkpoint import save_checkpoint
from fl_server.run_dir import RunDirectory
from fl_server.strategy import FederatedNasStrategy
from hw_profiles import load_profile
from nas.data import load_dataset
from nas.errors import ApfpError, CheckpointError, DatasetError, ProfileError, SurrogateError
from nas.space import SearchSpace
from simulations.runner import REPO_ROOT, app_config_keys, simulate
from simulations.scenario import ScenarioError, load_scenario
from surrogate import AccuracyPredictor


def test_missing_dataset_file_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"retinamnist.npz' not found; pass download=True .* set root"):
        load_dataset("medmnist:retinamnist", root=tmp_path)
    with pytest.raises(DatasetError, match=r"nope.npz' does not exist; pass the path of an npz archive"):
        load_dataset(f"npz:{tmp_path / 'nope.npz'}")


def test_corrupt_dataset_file_named(tmp_path: Path) -> None:
    (tmp_path / "retinamnist.npz").write_bytes(b"not an archive")
    with pytest.raises(DatasetError, match=r"cannot load '.*retinamnist.npz'.*delete the file"):
        load_dataset("medmnist:retinamnist", root=tmp_path)
    np.savez(tmp_path / "bloodmnist.npz", train_images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DatasetError, match=r"lacks key 'train_labels.*expected \['train_images'"):
        load_dataset("medmnist:bloodmnist", root=tmp_path)


def test_checkpoint_from_other_space_rejected(tiny_run_dir: Path, tmp_path: Path) -> None:
    settings = ServerSettings(run_dir=tiny_run_dir, output_dir=tmp_path, resume=True)
    save_checkpoint(tmp_path / "checkpoint", 1, {"space": "0123456789abcdef", "seed": 0, "privacy": "metrics",
                                                 "search_strategy": "annealing"})
    strategy = FederatedNasStrategy(RunDirectory.load(tiny_run_dir), settings)
    with pytest.raises(CheckpointError, match=r"has space='0123456789abcdef'.*resume with the settings"):
        strategy.restore()


def test_surrogate_from_other_space_rejected(tiny_run_dir: Path) -> None:
    run = RunDirectory.load(tiny_run_dir)
    other = SearchSpace.for_task(3, 5, 28)
    with pytest.raises(SurrogateError, match="space_fingerprint mismatch"):
        AccuracyPredictor.from_text(run.accuracy_predictor.to_text(), other)
    texts = {"accuracy": run.accuracy_predictor.to_text(),
             "latency/cpu-1t-fp32": run.latency_predictors["cpu-1t-fp32"].to_text()}
    with pytest.raises(SurrogateError, match="load it with the search space"):
        Surrogates(texts, other, "cpu-1t-fp32")
    with pytest.raises(ApfpError, match=r"lacks surrogates \['latency/cpu-2t-fp32'\]"):
        Surrogates(texts, run.space, "cpu-2t-fp32")


def test_corrupt_run_directory_named(tiny_run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(tiny_run_dir, copy)
    surrogate = copy / "surrogates" / "accuracy.txt"
    surrogate.write_text(surrogate.read_text("utf-8")[:-20], "utf-8")
    with pytest.raises(CheckpointError, match=r"accuracy.txt does not match its sha256.*rerun `apfp-nas pretrain`"):
        RunDirectory.load(copy)
    with pytest.raises(CheckpointError, match="no run.json"):
        RunDirectory.load(tmp_path / "missing")


def test_unknown_profile_named() -> None:
    with pytest.raises(ProfileError, match=r"unknown hardware profile 'cpu-9t-fp32'; known names: \['cpu-1t-fp32'"):
        load_profile("cpu-9t-fp32")
    node = {"partition-id": 1, "num-partitions": 2}
    with pytest.raises(ProfileError, match="'gpu-x'"):
        resolve_profile(node, {"device-profiles": "cpu-1t-fp32,gpu-x"})
    with pytest.raises(ProfileError, match="set node config hw-profile"):
        resolve_profile(node, {})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("search-strategy", "simulated-anneal", r"search-strategy='simulated-anneal' is unknown; available: \["),
        ("report-aggregator", "weighted-medain", r"report-aggregator='weighted-medain' is unknown; built-in names"),
        ("weight-aggregator", "fedavg", r"weight-aggregator='fedavg' is unknown; built-in names: \['masked-fedavg'\]"),
        ("privacy", "everything", r"privacy='everything' is invalid; allowed values"),
        ("failure-modes", "raise,crash", r"failure-modes='raise,crash' is invalid; use a comma list"),
        ("num-rounds", 0, r"num-rounds=0 is invalid; use an integer >= 1"),
        ("recommend-margin", 1.0, r"recommend-margin=1.0 is invalid; use a fraction in \[0, 1\)"),
        ("recommend-margin", "abc", r"recommend-margin='abc' must be float, like its default 0.1"),
    ],
)
def test_unknown_setting_named(tmp_path: Path, key: str, value, message: str) -> None:
    with pytest.raises(ApfpError, match=message):
        ServerSettings.from_run_config({"run-dir": str(tmp_path), key: value})


def app_dir(tmp_path: Path) -> Path:
    """Return a Flower app folder with this repository's pyproject plus any run-config key it does not declare."""
    keys = {"failure-rate": 0.0, "failure-modes": ",".join(FAILURE_MODES), "min-train-nodes": 1,
            "dp-clipping-norm": 0.0, "dp-noise-multiplier": 0.0, "recommend-margin": 0.1}
    missing = {k: v for k, v in keys.items() if k not in app_config_keys(REPO_ROOT)}
    app = tmp_path / "app"
    app.mkdir()
    text = (REPO_ROOT / "pyproject.toml").read_text("utf-8")
    (app / "pyproject.toml").write_text(
        text.replace("[tool.flwr.app.config]\n", "[tool.flwr.app.config]\n" + tomli_w.dumps(missing), 1), "utf-8")
    return app


@pytest.fixture()
def fake_run_dir(tmp_path: Path) -> Path:
    """A folder that passes the runner's first check (it has run.json); nothing reads further."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}", "utf-8")
    return run


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[scenario\nname = 'x'\n", "is not valid TOML"),
        ("[federation]\nnum-supernodes = 'four'\n", r"num-supernodes='four' is invalid"),
        ("[run-config]\nnum-rounds = {a = 1}\n", "must be a string, number or boolean"),
        ("[clients]\nn = 2\n", "unknown tables"),
    ],
    ids=["toml", "federation-value", "table-value", "table-name"],
)
def test_invalid_scenario_file_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, "utf-8")
    with pytest.raises(ScenarioError, match=message):
        load_scenario(path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"failure-rate": 2.0}, r"scenario 'digits': run config failure-rate=2.0 is invalid"),
        ({"device-profiles": "cpu-1t-fp32,tpu-v9"}, r"scenario 'digits': unknown hardware profile 'tpu-v9'"),
        ({"search-strategy": "hill-climbing"}, r"search-strategy='hill-climbing' is unknown"),
        ({"dp-clipping-norm": 1.0}, r"protects the weight path only; set privacy='weights'"),
    ],
)
def test_runner_checks_run_config_first(fake_run_dir: Path, tmp_path: Path, overrides, message) -> None:
    output = tmp_path / "out"
    with pytest.raises(ScenarioError, match=message):
        simulate("digits", run_dir=fake_run_dir, output_dir=output, overrides=overrides, app_dir=app_dir(tmp_path))
    assert not (output / "superlink.log").exists(), "Flower was started before the run config was checked"
