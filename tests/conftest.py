"""Shared fixtures: environment for Flower, the shared MedMNIST folder, a tiny stage-1 run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# OpenMP threads that busy-wait slow torch down several times when other processes
# share the cores; set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
MEDMNIST_DIR = SHARED_DIR / "data" / "medmnist"


@pytest.fixture(scope="session")
def medmnist_dir() -> Path:
    """Folder with the MedMNIST test files; skips the test when it is absent."""
    if not (MEDMNIST_DIR / "retinamnist.npz").is_file():
        pytest.skip(f"MedMNIST test files not found in {MEDMNIST_DIR} (the shared data folder is absent)")
    return MEDMNIST_DIR


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real but small stage-1 run on digits (two profiles), shared by the federation tests."""
    from fl_server.pretrain import PretrainConfig, pretrain

    path = tmp_path_factory.mktemp("stage1") / "run"
    config = PretrainConfig(
        epochs=2,
        num_accuracy_samples=24,
        num_latency_samples=20,
        profiles=("cpu-1t-fp32", "cpu-1t-fp32-noopt"),
        search_evaluations=100,
        progress=False,
    )
    pretrain(path, config)
    return path
